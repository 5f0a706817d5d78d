"""Invariants, checked with hypothesis on random machines (``tests/machines.py``).

* ``simulate()`` and the per-page oracle (``tests/oracle.py``, written from the kernel source)
  agree on every block of random machines, under both semantics: result, errno, reason, step,
  culprit, kernel log, hazards and page counts; and on blocks whose migration runs out of
  targets anywhere in ``migrate_pages()``'s list. ``FINDINGS`` are the minimal profiles of the
  places where the pipeline once differed from the kernel (issue 11), with the kernel's verdict;
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


#: folio kinds of the block under test: (profile kind, pages, refcount); refcount 2 on an LRU
#: folio is an extra reference (migration fails after unmapping), "pinned" a long-term pin
#: (unmapping fails)
SOURCE_RUNS = {"anon": ("anon", 1, None), "anon+ref": ("anon", 1, 2), "pinned": ("pinned", 1, None),
               "file": ("file", 1, None), "thp": ("thp", 512, None), "thp+ref": ("thp", 512, 2),
               "hugetlb": ("hugetlb", 512, None), "hugetlb+ref": ("hugetlb", 512, 2)}


@st.composite
def short_of_targets(draw):
    """Block 1 full of folios of every migration fate, blocks 0 and 2 (ZONE_MOVABLE) with few
    free pages and free pool folios, on one or two nodes: migrate_pages() runs out of targets
    at any point of its list, batches, splits and retries."""
    nodes = [draw(st.integers(0, 1)) for _ in range(3)]
    text = f"[machine]\nnodes = {max(nodes) + 1}\n"
    text += ram("0", "128MiB", node=nodes[0]) + ram("128MiB", "128MiB", draw(st.sampled_from(["Normal", "Movable"])),
                                                    nodes[1]) + ram("256MiB", "128MiB", "Movable", nodes[2])
    cursor, demand = 0x8000 + draw(st.integers(0, 700)), 0
    for _ in range(draw(st.integers(1, 12))):
        kind, size, ref = SOURCE_RUNS[draw(st.sampled_from(sorted(SOURCE_RUNS)))]
        count = size if size > 1 else draw(st.integers(1, 700))
        cursor = -(-cursor // size) * size
        if cursor + count > 0x10000:
            break
        text += pages(cursor, kind, count) + (f"refcount = {ref}\n" if ref else "")
        cursor, demand = cursor + count, demand + count
    for base in (0, 0x10000):  # target blocks: free pool folios, then anon but for a few free pages
        pool = draw(st.integers(0, 2))
        if pool:
            text += pages(base, "hugetlb_free", 512 * pool)
        free = draw(st.integers(0, demand + 600))
        if 32768 - 512 * pool - free > 0:
            text += pages(base + 512 * pool, "anon", 32768 - 512 * pool - free)
    if draw(st.booleans()):
        free = draw(st.integers(0, 4))
        resv = draw(st.integers(0, min(free, 1)))  # resv_huge_pages <= free_huge_pages
        text += f"[environment]\nhugetlb_2m = {{ free = {free}, resv = {resv} }}\n"
    return text


@COMPARE
@given(short_of_targets())
def test_migrate_pages_matches_the_oracle_when_targets_run_short(text):
    machine = machine_from(text, spare=False)
    assert_agree(machine, "refcount", blocks=[1])


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
        assert first == alone, (semantics, differences(pipeline_fields(first), pipeline_fields(alone)))


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


# --- where the pipeline differed from the kernel (issue 11) -----------------------------------------
# Each case: a minimal profile, the block, and what the kernel does there: (result, culprit pfn,
# first log texts) under refcount semantics.


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
    # A THP in block 1, 100 free target pages in block 0: the kernel splits the THP and migrates
    # 100 of its pages in split-list order (tail pages first, the head last), so SCAN loops on
    # the head; the pipeline failed the whole THP.
    "thp-split-on-enomem": (
        ram("0", "256MiB") + pages(0, "anon", 32668) + pages(0x8000, "thp", 512),
        1, (Outcome.HANGS, 0x8000, ["migrating pfn 8065 failed ret:1", "migration failure"])),
    # The only free pages outside block 0 are in a pageblock someone else isolated.
    "isolated-free-pages": (
        ram("0", "256MiB") + pages(0, "anon", 100) + pages(0x8000, "anon", 32256)
        + '[environment]\nisolated = ["0xfe00000-0xfffffff"]\n',
        0, (Outcome.HANGS, 0x0, ["migrating pfn 63 failed ret:-12", "migration failure"])),
}


def test_every_deviation_has_a_finding():
    assert set(DEVIATIONS) <= set(FINDINGS)


@pytest.mark.parametrize("name", sorted(FINDINGS))
def test_the_kernel_literal_oracle_shows_the_finding(name):
    text, block, (result, culprit, log) = FINDINGS[name]
    kernel = Oracle(machine_from(text, spare=False), "refcount").offline(block)
    assert (kernel.result, kernel.culprit[0] if kernel.culprit else None) == (result, culprit)
    assert [e.text for e in kernel.log][:len(log)] == log


@pytest.mark.parametrize("name", sorted(FINDINGS))
def test_the_pipeline_follows_the_kernel(name):
    text, block, (result, culprit, log) = FINDINGS[name]
    machine = machine_from(text, spare=False)
    assert_agree(machine, "refcount", frozenset(), [block])
    verdict = simulate(machine, "refcount", [block]).blocks[0]
    assert (verdict.result, verdict.culprit.pfn if verdict.culprit else None) == (result, culprit)
    assert [e.text for e in verdict.kernel_log][:len(log)] == log


def test_a_block_spanning_two_nodes_counts_towards_both():
    # Block 1 is half node 0, half node 1: offlining block 2 does not empty node 1
    # (offline_pages(): nr_pages >= pgdat->node_present_pages is false), so no
    # NODE_REMOVING_LAST_MEMORY is sent and the veto never runs.
    machine = machine_from("[machine]\nnodes = 2\n" + ram("0", "192MiB") + ram("192MiB", "192MiB", node=1)
                           + '[environment]\nnode_notifier_veto = "EBUSY"\n', spare=False)
    assert simulate(machine, "refcount", [2]).blocks[0].result is Outcome.OFFLINED
    assert_agree(machine, "refcount")


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
