"""Invariants, checked with hypothesis on random machines.

* the vectorised pipeline reaches the same verdict (result, errno, reason, step, culprit) as
  the page-at-a-time reference transcription of the kernel loops, in both semantics;
* page accounting adds up to the block size;
* a block of only free pages always offlines;
* adding an unmovable page never turns a failure into success.
"""

from __future__ import annotations

import copy

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memplan.engine.shortcut import BlockColumns, chunk_verdicts
from memplan.engine.simulation import Simulator, simulate
from memplan.kernel.offline import offline_block
from memplan.kernel.semantics import SEMANTICS, get_semantics
from memplan.profile.reader import build_machine
from oracle import reference_offline

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BLOCK = 8
BASE = BLOCK * 32768
ORDER0 = ["anon", "file", "movable", "balloon_movable", "hwpoison", "pinned", "slab", "pagetable", "kernel",
          "reserved", "balloon", "offline_refcount_driver", "offline_orphan"]
COMPOUND = ["thp", "hugetlb", "hugetlb_free", "hugetlb_unmigratable"]


@st.composite
def page_runs(draw):
    runs = []
    used = np.zeros(32768, dtype=bool)
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            kind = draw(st.sampled_from(COMPOUND))
            start = draw(st.integers(0, 63)) * 512
            count = 512
        else:
            kind = draw(st.sampled_from(ORDER0))
            start = draw(st.integers(0, 32767))
            count = draw(st.integers(1, 64))
        count = min(count, 32768 - start)
        if used[start:start + count].any():
            continue
        used[start:start + count] = True
        run = {"pfn": BASE + start, "count": count, "kind": kind}
        if kind in ("anon", "file", "balloon", "offline_refcount_driver") and draw(st.integers(0, 4)) == 0:
            run["refcount"] = draw(st.integers(0, 3))
        runs.append(run)
    return runs


@st.composite
def ram_machines(draw):
    doc = {
        "format": 1,
        "ram": [{"start": 0, "size": "1GiB", "zone": "Normal"},
                {"start": "1GiB", "size": "128MiB", "zone": draw(st.sampled_from(["Normal", "Movable", "DMA32"]))}],
        "pages": draw(page_runs()),
    }
    if draw(st.booleans()):
        fractions = draw(st.fixed_dictionaries({}, optional={
            "anon": st.floats(0, 0.4), "file": st.floats(0, 0.3), "slab": st.floats(0, 0.0005),
            "thp": st.floats(0, 0.1), "pinned": st.floats(0, 0.0002), "kernel": st.floats(0, 0.0002)}))
        doc["fill"] = [{"blocks": str(BLOCK), "seed": draw(st.integers(0, 1000)), **fractions}]
    env = {}
    if draw(st.integers(0, 3)) == 0:
        free = draw(st.integers(0, 4))  # resv_huge_pages never exceeds free_huge_pages
        env["hugetlb_2m"] = {"free": free, "resv": draw(st.integers(0, min(2, free)))}
    if draw(st.integers(0, 8)) == 0:
        env["signal_pending"] = True
    if env:
        doc["environment"] = env
    return doc


@st.composite
def sbm_machines(draw):
    plugged = draw(st.lists(st.booleans(), min_size=64, max_size=64))
    if not any(plugged):
        plugged[0] = True
    indexes = [str(i) for i, p in enumerate(plugged) if p]
    doc = {
        "format": 1,
        "ram": [{"start": 0, "size": "1GiB", "zone": "Normal"}],
        "virtio_mem": [{"id": "vmem0", "addr": "1GiB", "region_size": "128MiB", "block_size": "2MiB",
                        "plugged": indexes, "online": draw(st.sampled_from(["movable", "kernel"])),
                        "driver": draw(st.sampled_from(["loaded", "loaded", "unloaded", "removing"]))}],
        "pages": [],
        "environment": {"foreign_ref_dropped": draw(st.sampled_from(["never", "during-offline", "after-offline"]))},
    }
    unplugged = [i for i, p in enumerate(plugged) if not p]
    if unplugged and draw(st.booleans()):
        sb = draw(st.sampled_from(unplugged))
        doc["pages"].append({"pfn": BASE + sb * 512 + draw(st.integers(0, 511)), "kind": "fake_offline",
                             "refcount": draw(st.integers(0, 3))})
    plugged_sbs = [i for i, p in enumerate(plugged) if p]
    for _ in range(draw(st.integers(0, 3))):
        sb = draw(st.sampled_from(plugged_sbs))
        pfn = BASE + sb * 512 + draw(st.integers(0, 500))
        if any(p["pfn"] <= pfn + 8 and pfn <= p["pfn"] + p.get("count", 1) for p in doc["pages"]):
            continue
        doc["pages"].append({"pfn": pfn, "count": 8, "kind": draw(st.sampled_from(ORDER0[:9] + ["balloon"]))})
    return doc


def verdict_of(doc, semantics):
    machine = build_machine(copy.deepcopy(doc), "<hypothesis>")
    return machine, simulate(machine, semantics, [BLOCK]).blocks[0]


def check_against_reference(doc):
    for name in SEMANTICS:
        machine, verdict = verdict_of(doc, name)
        sim = Simulator(machine, get_semantics(name))
        ctx = sim.context(int(machine.blocks.rows([BLOCK])[0]))
        batch = machine.pages.materialize(np.array([BLOCK]))
        ref = reference_offline(sim.setup, ctx, batch.kinds[0], None if batch.refcount is None else batch.refcount[0])
        got = (verdict.result, verdict.errno, verdict.reason, verdict.step,
               verdict.culprit.pfn if verdict.culprit else None)
        assert got == (ref.result, ref.errno, ref.reason, ref.step, ref.culprit_pfn), name
        p = verdict.pages
        assert (p.free + p.migrated + p.skipped_offline + p.dissolved + p.hwpoison + p.vmemmap + p.holes
                + p.blocking == p.total)
        assert min(p.free, p.migrated, p.skipped_offline, p.dissolved, p.hwpoison, p.blocking) >= 0


@SETTINGS
@given(ram_machines())
def test_pipeline_matches_reference_on_boot_memory(doc):
    check_against_reference(doc)


@SETTINGS
@given(sbm_machines())
def test_pipeline_matches_reference_on_virtio_mem(doc):
    check_against_reference(doc)


@SETTINGS
@given(ram_machines())
def test_fast_path_agrees_with_full_pipeline(doc):
    machine = build_machine(copy.deepcopy(doc), "<hypothesis>")
    for name in SEMANTICS:
        sim = Simulator(machine, get_semantics(name))
        ctx = sim.context(int(machine.blocks.rows([BLOCK])[0]))
        batch = machine.pages.materialize(np.array([BLOCK]))
        has_ref = np.array([batch.refcount is not None])
        fast = chunk_verdicts(sim.setup, BlockColumns.from_contexts([ctx]), batch.kinds, has_ref)[0]
        if fast is not None:
            assert fast == offline_block(sim.setup, ctx, batch.kinds[0], None)


@SETTINGS
@given(st.sampled_from(["Normal", "Movable", "DMA32"]), st.sampled_from(list(SEMANTICS)))
def test_a_block_of_only_free_pages_always_offlines(zone, semantics):
    doc = {"format": 1, "ram": [{"start": 0, "size": "1GiB", "zone": "Normal"},
                                {"start": "1GiB", "size": "128MiB", "zone": zone}]}
    _, verdict = verdict_of(doc, semantics)
    assert verdict.result.value == "offlined"
    assert verdict.pages.free == verdict.pages.total


@SETTINGS
@given(ram_machines(), st.integers(0, 32767), st.sampled_from(["slab", "kernel", "pagetable", "reserved", "pinned",
                                                                "balloon", "hugetlb_unmigratable"]))
def test_adding_an_unmovable_page_never_turns_failure_into_success(doc, offset, kind):
    for name in SEMANTICS:
        _, before = verdict_of(doc, name)
        if before.result.value == "offlined":
            continue
        pfn = BASE + offset
        if kind == "hugetlb_unmigratable":
            pfn -= pfn % 512
        count = 512 if kind == "hugetlb_unmigratable" else 1
        if any(p["pfn"] < pfn + count and pfn < p["pfn"] + p["count"] for p in doc["pages"]):
            continue
        more = copy.deepcopy(doc)
        more["pages"].append({"pfn": pfn, "count": count, "kind": kind})
        _, after = verdict_of(more, name)
        assert after.result.value != "offlined"
