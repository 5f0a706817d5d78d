"""Invariants, checked with hypothesis on random machines (``tests/machines.py``).

* ``simulate()`` and the per-page oracle (``tests/oracle.py``, written from the kernel source)
  agree on every block of random machines, under both semantics: result, errno, reason, step,
  culprit, kernel log, hazards and page counts. The oracle reproduces the pipeline's known
  deviations from the kernel (``oracle.DEVIATIONS``); each one is pinned below by a minimal
  profile on which the kernel-literal oracle differs, and a strict xfail until the pipeline
  follows the kernel;
* ``plan``'s first offline attempt is judged on the unchanged machine: it equals ``simulate``;
* a block of only free pages always offlines; adding an unmovable page never turns a failure
  into success.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import machine_from
from machines import machines
from memplan.core.machine import Machine
from memplan.core.results import HazardKind, Outcome
from memplan.engine.simulation import simulate
from memplan.kernel.semantics import SEMANTICS
from memplan.plans.plan import plan
from memplan.profile.reader import build_machine
from oracle import DEVIATIONS, PIPELINE, Oracle, differences, oracle_fields, pipeline_fields

#: about 0.3 s per machine (every block, both semantics, through the per-page oracle)
COMPARE = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CHEAP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_agree(machine: Machine, semantics: str, deviations=PIPELINE, blocks=None) -> None:
    oracle = Oracle(machine, semantics, deviations)
    for verdict in simulate(machine, semantics, blocks or [int(b) for b in machine.blocks.ids]).blocks:
        got, want = pipeline_fields(verdict), oracle_fields(oracle.offline(verdict.block))
        assert got == want, f"{semantics}, block {verdict.block}: {differences(got, want)}"
        assert verdict.pages.blocking >= 0, verdict.pages  # no page is classified twice


@COMPARE
@given(machines())
def test_pipeline_matches_the_oracle(doc):
    machine = build_machine(copy.deepcopy(doc), "<hypothesis>")
    for semantics in SEMANTICS:
        assert_agree(machine, semantics)


@CHEAP
@given(machines(), st.data())
def test_plans_first_attempt_is_simulate(doc, data):
    machine = build_machine(copy.deepcopy(doc), "<hypothesis>")
    table = machine.blocks
    online = [int(b) for b in table.ids[table.online]]
    if not online:
        return
    block = data.draw(st.sampled_from(online), label="block")
    for semantics in SEMANTICS:
        result, _ = plan(machine, machine.geometry.memory_block_size, semantics, blocks=[block])
        first = result.attempts[0]
        alone = simulate(machine, semantics, [block]).blocks[0]
        assert first.block == block
        assert pipeline_fields(first)[:7] == pipeline_fields(alone)[:7], semantics


@CHEAP
@given(st.sampled_from(["Normal", "Movable", "DMA32"]), st.sampled_from(list(SEMANTICS)))
def test_a_block_of_only_free_pages_always_offlines(zone, semantics):
    doc = {"format": 1, "ram": [{"start": 0, "size": "1GiB", "zone": "Normal"},
                                {"start": "1GiB", "size": "128MiB", "zone": zone}]}
    verdict = simulate(build_machine(doc, "<hypothesis>"), semantics, [8]).blocks[0]
    assert verdict.result is Outcome.OFFLINED
    assert verdict.pages.free == verdict.pages.total


@CHEAP
@given(machines(), st.data(), st.sampled_from(["slab", "kernel", "pagetable", "reserved", "pinned", "balloon"]))
def test_adding_an_unmovable_page_never_turns_failure_into_success(doc, data, kind):
    machine = build_machine(copy.deepcopy(doc), "<hypothesis>")
    semantics = data.draw(st.sampled_from(list(SEMANTICS)), label="semantics")
    failing = [v for v in simulate(machine, semantics).blocks if v.result is not Outcome.OFFLINED]
    if not failing:
        return
    block = data.draw(st.sampled_from([v.block for v in failing]), label="block")
    kinds = machine.pages.materialize(np.array([block])).kinds[0]
    free = np.flatnonzero(kinds == 0)
    if not len(free):
        return
    pfn = block * len(kinds) + int(data.draw(st.sampled_from(free.tolist()), label="free page"))
    more = copy.deepcopy(doc)
    more["pages"].append({"pfn": hex(pfn), "kind": kind})
    after = simulate(build_machine(more, "<hypothesis>"), semantics, [block]).blocks[0]
    assert after.result is not Outcome.OFFLINED


# --- where the pipeline differs from the kernel ---------------------------------------------------
# Each case: a minimal profile, the block, and what the kernel does there (from the kernel text
# named in oracle.DEVIATIONS): (result, culprit pfn, first log texts) under refcount semantics.


def ram(start: str, size: str, zone: str = "Normal", node: int = 0) -> str:
    return f'[[ram]]\nstart = "{start}"\nsize = "{size}"\nzone = "{zone}"\nnode = {node}\n'


def pages(pfn: int, kind: str, count: int = 1) -> str:
    return f'[[pages]]\npfn = "{pfn:#x}"\ncount = {count}\nkind = "{kind}"\n'


FINDINGS = {
    # 200 anon pages around an unmovable balloon page; 100 free target pages elsewhere. The kernel
    # migrates the 100 highest anon pages and loops on pfn 0x8000; the pipeline migrates the 100
    # lowest, then SCAN meets the balloon page: -EBUSY "unmovable page".
    "source-list-order": (
        ram("0", "256MiB") + pages(0, "anon", 32668) + pages(0x8000, "anon", 50) + pages(0x8032, "balloon")
        + pages(0x8033, "anon", 150),
        1, (Outcome.HANGS, 0x8000, ["failed to isolate pfn 8032", "isolation failed",
                                    "migrating pfn 8064 failed ret:-12"])),
    # A THP and an in-use 2 MiB hugetlb folio in ZONE_NORMAL; free memory only in ZONE_MOVABLE.
    "large-folio-target-zones": (
        ram("0", "128MiB") + ram("128MiB", "128MiB", "Movable") + pages(0, "thp", 512) + pages(0x200, "hugetlb", 512)
        + "[environment]\nhugetlb_2m = { free = 0 }\n",
        0, (Outcome.OFFLINED, None, [])),
    # The only free 2 MiB pool folio sits on the source node; node 1 is full.
    "hugetlb-pool-nodes": (
        "[machine]\nnodes = 2\n" + ram("0", "256MiB") + ram("256MiB", "128MiB", node=1) + pages(0, "hugetlb", 512)
        + pages(0x8000, "hugetlb_free", 512) + '[[fill]]\nblocks = "2"\nanon = 1.0\n',
        0, (Outcome.HANGS, 0x0, ["migrating pfn 0 failed ret:-12", "migration failure"])),
    # Block 1 holds the second eighth of an in-use 1 GiB folio that finds no target.
    "folio-head-pfn": (
        ram("0", "1152MiB") + pages(0, "gigantic", 262144) + "[environment]\nhugetlb_1g = { free = 0 }\n",
        1, (Outcome.HANGS, 0x8000, ["migrating pfn 0 failed ret:-12", "migration failure"])),
    # A THP in block 1, 100 free target pages in block 0: the kernel splits the THP, migrates 100
    # of its pages and loops on the first page left; the pipeline fails the whole THP.
    "thp-split-on-enomem": (
        ram("0", "256MiB") + pages(0, "anon", 32668) + pages(0x8000, "thp", 512),
        1, (Outcome.HANGS, 0x8064, ["migrating pfn 8064 failed ret:1", "migration failure"])),
    # The only free pages outside block 0 are in a pageblock someone else isolated.
    "isolated-free-pages": (
        ram("0", "256MiB") + pages(0, "anon", 100) + pages(0x8000, "anon", 32256)
        + '[environment]\nisolated = ["0xfe00000-0xfffffff"]\n',
        0, (Outcome.HANGS, 0x0, ["migrating pfn 63 failed ret:-12", "migration failure"])),
}


def test_every_deviation_has_a_finding():
    assert set(FINDINGS) == set(DEVIATIONS)


@pytest.mark.parametrize("name", sorted(FINDINGS))
def test_the_kernel_literal_oracle_shows_the_finding(name):
    text, block, (result, culprit, log) = FINDINGS[name]
    machine = machine_from(text, spare=False)
    kernel = Oracle(machine, "refcount").offline(block)
    assert (kernel.result, kernel.culprit[0] if kernel.culprit else None) == (result, culprit)
    assert [e.text for e in kernel.log][:len(log)] == log
    # With the deviation the oracle gives exactly the pipeline's verdict.
    assert_agree(machine, "refcount", frozenset({name}), [block])
    assert oracle_fields(kernel) != oracle_fields(Oracle(machine, "refcount", frozenset({name})).offline(block))


@pytest.mark.parametrize("name", sorted(FINDINGS))
@pytest.mark.xfail(strict=True, reason="the pipeline differs from the kernel here (oracle.DEVIATIONS)")
def test_the_pipeline_follows_the_kernel(name):
    text, block, _ = FINDINGS[name]
    assert_agree(machine_from(text, spare=False), "refcount", frozenset(), [block])


@pytest.mark.xfail(strict=True, reason="pgdat->node_present_pages includes the node's part of a block that "
                   "spans two nodes; the pipeline leaves such blocks out of every node")
def test_a_block_spanning_two_nodes_counts_towards_both():
    # Block 1 is half node 0, half node 1: offlining block 2 does not empty node 1
    # (offline_pages(): nr_pages >= pgdat->node_present_pages is false), so no
    # NODE_REMOVING_LAST_MEMORY is sent and the veto never runs.
    machine = machine_from("[machine]\nnodes = 2\n" + ram("0", "192MiB") + ram("192MiB", "192MiB", node=1)
                           + '[environment]\nnode_notifier_veto = "EBUSY"\n', spare=False)
    assert simulate(machine, "refcount", [2]).blocks[0].result is Outcome.OFFLINED


def test_hazards_reach_the_comparison():
    # A fake-offline page with a foreign reference dropped while offlining: the oracle and the
    # pipeline both see the WARN, the page freed to the buddy and the refcount taken on cancel.
    machine = machine_from("""
[[virtio_mem]]
id = "vmem0"
addr = "4GiB"
region_size = "128MiB"
block_size = "2MiB"
plugged = ["0-15"]
online = "movable"
[[pages]]
pfn = "0x102000"
kind = "fake_offline"
refcount = 2
[environment]
foreign_ref_dropped = "during-offline"
notifier_veto = "EBUSY"
""")
    kernel = Oracle(machine, "refcount").offline(32)
    assert [h[0] for h in kernel.hazards] == [HazardKind.WARN, HazardKind.FREED_TO_BUDDY,
                                             HazardKind.REFCOUNT_ON_FREE_PAGE]
    assert_agree(machine, "refcount")
