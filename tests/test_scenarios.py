"""Golden scenarios: spec §5.2, one small profile per row, both semantics.

Each case asserts result, errno, the kernel's exact reason string, the step and the kernel
log texts (level, text) under ``refcount`` (mainline) and ``skippable`` (the posted patch).
Unless a row says otherwise the block under test is block 8 (1 GiB) and blocks 0-7 are free
ZONE_NORMAL memory that migrated pages can go to.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

import numpy as np
import pytest

from conftest import machine_from
from memplan.core.model import PageKind
from memplan.core.results import Cause
from memplan.engine.simulation import Simulator, simulate
from memplan.kernel.offline import offline_block
from memplan.kernel.semantics import RefcountSemantics, get_semantics
from oracle import Oracle, differences, oracle_fields, pipeline_fields

DUMP_UNMOVABLE = ("dump_page", "unmovable page")


def debug(reason: str, block: int = 8) -> Tuple[str, str]:
    start = block << 27
    return ("pr_debug", f"memory offlining [mem {start:#010x}-{start + (1 << 27) - 1:#010x}] failed due to {reason}")


OK = ("offlined", None, None, None, [])


def expect(result: str, errno: Optional[str], reason: Optional[str], step: Optional[str],
           log: Optional[List[Tuple[str, str]]] = None, block: int = 8):
    entries = list(log or [])
    if reason:
        entries.append(debug(reason, block))
    return (result, errno, reason, step, entries)


ISOLATE_FAIL = expect("fails", "EBUSY", "failure to isolate range", "isolate", [DUMP_UNMOVABLE])
SCAN_BUSY = expect("fails", "EBUSY", "unmovable page", "scan")

TARGET = """
[[ram]]
start = "1GiB"
size = "128MiB"
zone = "{zone}"
"""

SBM = """
[[virtio_mem]]
id = "vmem0"
addr = "4GiB"
region_size = "1GiB"
block_size = "2MiB"
plugged = ["0-15"]
online = "{online}"
driver = "{driver}"
"""
# plugged 0-15: block 32 has sub-blocks 0-15 plugged (32 MiB), 16-63 fake-offline.
SBM_FAKE_PFN = 0x100000 + 16 * 512


def target(zone: str = "Normal", pages: str = "", env: str = "") -> str:
    return TARGET.format(zone=zone) + pages + env


def sbm(online: str = "kernel", driver: str = "loaded", pages: str = "", env: str = "") -> str:
    return SBM.format(online=online, driver=driver) + pages + env


def page(pfn: int, kind: str, count: int = 1, refcount: Optional[int] = None) -> str:
    text = f'\n[[pages]]\npfn = "{pfn:#x}"\ncount = {count}\nkind = "{kind}"\n'
    if refcount is not None:
        text += f"refcount = {refcount}\n"
    return text


MID = 0x40000 + 0x4000  # a pfn in the middle of block 8

CASES = [
    # row, id, profile, block, refcount semantics, skippable semantics
    (1, "normal-free", target("Normal"), 8, OK, OK),
    (2, "movable-lru-thp", target("Movable", page(MID, "anon", 100) + page(MID + 512, "file", 50)
                                  + page(0x40000 + 0x1000, "thp", 512)), 8, OK, OK),
    (3, "normal-slab", target("Normal", page(MID, "slab")), 8, ISOLATE_FAIL, ISOLATE_FAIL),
    (3, "normal-pagetable", target("Normal", page(MID, "pagetable")), 8, ISOLATE_FAIL, ISOLATE_FAIL),
    (4, "movable-stray-kernel", target("Movable", page(MID, "kernel")), 8,
     expect("hangs", "EINTR", "signal backoff", "test_isolated"),
     expect("hangs", "EINTR", "signal backoff", "test_isolated")),
    (5, "movable-reserved", target("Movable", page(MID, "reserved")), 8, ISOLATE_FAIL, ISOLATE_FAIL),
    (6, "normal-long-term-pin", target("Normal", page(MID, "pinned")), 8,
     expect("hangs", "EINTR", "signal backoff", "scan",
            [("pr_warn", f"migrating pfn {MID:x} failed ret:1"), ("dump_page", "migration failure")]),
     expect("hangs", "EINTR", "signal backoff", "scan",
            [("pr_warn", f"migrating pfn {MID:x} failed ret:1"), ("dump_page", "migration failure")])),
    (7, "movable-transient-pin-released", target("Movable", page(MID, "anon", 16)), 8, OK, OK),
    (8, "boot-block-with-hole", target("Normal") + """
[[ram]]
start = "0x48000000"
size = "0x7e00000"
zone = "Normal"
""", 9, expect("fails", "EINVAL", "memory holes", "holes", block=9),
     expect("fails", "EINVAL", "memory holes", "holes", block=9)),
    (9, "block-spanning-two-zones", """
[[ram]]
start = "1GiB"
size = "64MiB"
zone = "DMA32"
[[ram]]
start = "0x44000000"
size = "64MiB"
zone = "Normal"
""", 8, expect("fails", "EINVAL", None, "zone"), expect("fails", "EINVAL", None, "zone")),
    (10, "free-hugetlb-headroom", target("Normal", page(MID, "hugetlb_free", 1024),
                                         '\n[environment]\nhugetlb_2m = { free = 2, resv = 0 }\n'), 8, OK, OK),
    (10, "free-hugetlb-short-headroom", target("Normal", page(MID, "hugetlb_free", 1024),
                                               '\n[environment]\nhugetlb_2m = { free = 2, resv = 1 }\n'), 8,
     expect("fails", "EBUSY", "failure to dissolve huge pages", "dissolve"),
     expect("fails", "EBUSY", "failure to dissolve huge pages", "dissolve")),
    (11, "free-hugetlb-all-reserved", target("Normal", page(MID, "hugetlb_free", 512),
                                             '\n[environment]\nhugetlb_2m = { free = 1, resv = 1 }\n'), 8,
     expect("fails", "EBUSY", "failure to dissolve huge pages", "dissolve"),
     expect("fails", "EBUSY", "failure to dissolve huge pages", "dissolve")),
    (12, "hugetlb-in-use-pool-target", target("Normal", page(MID, "hugetlb", 512) + page(0x1000, "hugetlb_free", 512),
                                              '\n[environment]\nhugetlb_2m = { free = 1, resv = 0 }\n'), 8, OK, OK),
    (12, "hugetlb-in-use-fresh-target", target("Normal", page(MID, "hugetlb", 512)), 8, OK, OK),
    (13, "gigantic-no-pool-page", """
[[ram]]
start = "1GiB"
size = "1GiB"
zone = "Normal"
[[pages]]
pfn = "0x40000"
count = 262144
kind = "gigantic"
""", 8, expect("hangs", "EINTR", "signal backoff", "scan",
               [("pr_warn", "migrating pfn 40000 failed ret:-12"), ("dump_page", "migration failure")]),
     expect("hangs", "EINTR", "signal backoff", "scan",
            [("pr_warn", "migrating pfn 40000 failed ret:-12"), ("dump_page", "migration failure")])),
    (14, "hugetlb-not-migratable", target("Normal", page(MID, "hugetlb_unmigratable", 512)), 8,
     expect("fails", "EBUSY", "failure to dissolve huge pages", "dissolve"),
     expect("fails", "EBUSY", "failure to dissolve huge pages", "dissolve")),
    (15, "hwpoison", target("Normal", page(MID, "hwpoison", 3)), 8, OK, OK),
    (16, "memmap-on-memory", """
[[ram]]
start = "1GiB"
size = "128MiB"
zone = "Movable"
memmap_on_memory = true
""" + page(MID, "anon", 10), 8, OK, OK),
    (17, "cma-pageblock", """
[[ram]]
start = "1GiB"
size = "128MiB"
zone = "Normal"
cma = ["0x40200000-0x403fffff"]
""", 8, ISOLATE_FAIL, ISOLATE_FAIL),
    (18, "sbm-kernel-partial", sbm("kernel"), 32, OK, OK),
    (19, "sbm-movable-partial", sbm("movable"), 32, OK, OK),
    (20, "fake-offline-page-referenced", sbm("kernel", pages=page(SBM_FAKE_PFN + 5, "fake_offline", refcount=2)), 32,
     expect("fails", "EBUSY", "unmovable page", "scan",
            [("warn", "WARN_ON(!page_ref_dec_and_test(page))"), ("dump_page", "fake-offline page referenced")],
            block=32),
     expect("offlined", None, None, None, [("warn_once", "WARN_ON_ONCE(page_count(page) != 1)")], block=32)),
    (21, "foreign-ref-dropped-during-offline", sbm("kernel", pages=page(SBM_FAKE_PFN + 5, "fake_offline", refcount=2),
                                                   env='\n[environment]\nforeign_ref_dropped = "during-offline"\n'), 32,
     expect("offlined", None, None, None,
            [("warn", "WARN_ON(!page_ref_dec_and_test(page))"), ("dump_page", "fake-offline page referenced")],
            block=32),
     OK),
    (22, "foreign-ref-dropped-after-offline", sbm("kernel", pages=page(SBM_FAKE_PFN + 5, "fake_offline", refcount=2),
                                                  env='\n[environment]\nforeign_ref_dropped = "after-offline"\n'), 32,
     expect("fails", "EBUSY", "unmovable page", "scan",
            [("warn", "WARN_ON(!page_ref_dec_and_test(page))"), ("dump_page", "fake-offline page referenced")],
            block=32),
     expect("offlined", None, None, None, [("warn_once", "WARN_ON_ONCE(page_count(page) != 1)")], block=32)),
    (23, "sbm-fully-plugged", sbm("movable").replace('["0-15"]', '["0-63"]') + page(0x100000 + 7, "anon", 9), 32,
     OK, OK),
    (24, "bbm-added-block", """
[[virtio_mem]]
id = "vmem0"
addr = "4GiB"
region_size = "1GiB"
block_size = "128MiB"
plugged_size = "256MiB"
online = "kernel"
""" + page(0x108000 + 3, "slab"), 33,
     expect("fails", "EBUSY", "failure to isolate range", "isolate", [DUMP_UNMOVABLE], block=33),
     expect("fails", "EBUSY", "failure to isolate range", "isolate", [DUMP_UNMOVABLE], block=33)),
    (25, "bbm-fake-offline-big-block", """
[[virtio_mem]]
id = "vmem0"
addr = "4GiB"
region_size = "1GiB"
block_size = "128MiB"
plugged_size = "256MiB"
online = "movable"
fake_offline_big_blocks = "1"
""", 33, OK, OK),
    (26, "virtio-mem-driver-removing", sbm("movable", driver="removing"), 32,
     expect("fails", "EBUSY", "notifier failure", "notifier", block=32),
     expect("fails", "EBUSY", "notifier failure", "notifier", block=32)),
    (27, "virtio-mem-unloaded-normal", sbm("kernel", driver="unloaded"), 32,
     expect("fails", "EBUSY", "unmovable page", "scan", block=32),
     expect("fails", "EBUSY", "failure to isolate range", "isolate", [DUMP_UNMOVABLE], block=32)),
    (28, "virtio-mem-unloaded-movable", sbm("movable", driver="unloaded"), 32,
     expect("fails", "EBUSY", "unmovable page", "scan", block=32),
     expect("fails", "EBUSY", "unmovable page", "scan", block=32)),
    (29, "balloon-with-migration", target("Normal", page(MID, "balloon_movable", 64)), 8, OK, OK),
    (30, "balloon-without-migration-normal", target("Normal", page(MID, "balloon", 64)), 8, SCAN_BUSY, ISOLATE_FAIL),
    (31, "hv-xen-balloon-normal", target("DMA32", page(MID, "balloon", 512)), 8, SCAN_BUSY, ISOLATE_FAIL),
    (32, "hv-hot-add-gap-movable", target("Movable", page(MID, "balloon", 512)), 8, SCAN_BUSY, SCAN_BUSY),
    (33, "hv-hot-add-gap-normal", target("Normal", page(MID, "balloon", 512)), 8, SCAN_BUSY, ISOLATE_FAIL),
    (34, "refcount-protocol-driver-movable", target("Movable", page(MID, "offline_refcount_driver", 8)), 8,
     OK, SCAN_BUSY),
    (35, "refcount-protocol-driver-normal", target("Normal", page(MID, "offline_refcount_driver", 8)), 8,
     OK, ISOLATE_FAIL),
    (36, "pageoffline-refcount-0-orphan", target("Normal", page(MID, "offline_orphan", 4)), 8, OK, SCAN_BUSY),
    (37, "signal-pending", sbm("movable", env='\n[environment]\nsignal_pending = true\n'), 32,
     expect("fails", "EINTR", "signal backoff", "scan", block=32),
     expect("fails", "EINTR", "signal backoff", "scan", block=32)),
    (38, "concurrent-isolation", target("Normal", env='\n[environment]\nisolated = ["0x42000000-0x421fffff"]\n'), 8,
     expect("fails", "EBUSY", "failure to isolate range", "isolate"),
     expect("fails", "EBUSY", "failure to isolate range", "isolate")),
    (39, "block-already-offline", """
[[ram]]
start = "1GiB"
size = "128MiB"
zone = "Movable"
state = "offline"
""", 8, expect("fails", "EINVAL", None, "state"), expect("fails", "EINVAL", None, "state")),
    (40, "zsmalloc", target("Normal", page(MID, "movable", 32)), 8, OK, OK),
    (41, "node-last-memory-veto", """
[machine]
nodes = 2
[[ram]]
start = "1GiB"
size = "128MiB"
zone = "Normal"
node = 1
[environment]
node_notifier_veto = "EBUSY"
""", 8, expect("fails", "EBUSY", "node notifier failure", "notifier"),
     expect("fails", "EBUSY", "node notifier failure", "notifier")),
    (42, "other-notifier-veto", target("Normal", env='\n[environment]\nnotifier_veto = "EPERM"\n'), 8,
     expect("fails", "EPERM", "notifier failure", "notifier"),
     expect("fails", "EPERM", "notifier failure", "notifier")),
]


#: The ``Cause`` of every row (refcount, skippable): ``None`` exactly where the block offlines.
CAUSES = {
    "normal-slab": ("unmovable_page", "unmovable_page"),
    "normal-pagetable": ("unmovable_page", "unmovable_page"),
    "movable-stray-kernel": ("page_not_isolated", "page_not_isolated"),
    "movable-reserved": ("unmovable_page", "unmovable_page"),
    "normal-long-term-pin": ("extra_references", "extra_references"),
    "boot-block-with-hole": ("memory_holes", "memory_holes"),
    "block-spanning-two-zones": ("zone_null", "zone_null"),
    "free-hugetlb-short-headroom": ("hugetlb_no_headroom", "hugetlb_no_headroom"),
    "free-hugetlb-all-reserved": ("hugetlb_no_headroom", "hugetlb_no_headroom"),
    "gigantic-no-pool-page": ("gigantic_no_pool_folio", "gigantic_no_pool_folio"),
    "hugetlb-not-migratable": ("hugetlb_in_use", "hugetlb_in_use"),
    "cma-pageblock": ("cma_pageblock", "cma_pageblock"),
    "fake-offline-page-referenced": ("page_offline_busy", None),
    "foreign-ref-dropped-after-offline": ("page_offline_busy", None),
    "bbm-added-block": ("unmovable_page", "unmovable_page"),
    "virtio-mem-driver-removing": ("virtio_mem_removing", "virtio_mem_removing"),
    "virtio-mem-unloaded-normal": ("page_offline_busy", "unmovable_page"),
    "virtio-mem-unloaded-movable": ("page_offline_busy", "page_offline_busy"),
    "balloon-without-migration-normal": ("page_offline_busy", "unmovable_page"),
    "hv-xen-balloon-normal": ("page_offline_busy", "unmovable_page"),
    "hv-hot-add-gap-movable": ("page_offline_busy", "page_offline_busy"),
    "hv-hot-add-gap-normal": ("page_offline_busy", "unmovable_page"),
    "refcount-protocol-driver-movable": (None, "page_offline_busy"),
    "refcount-protocol-driver-normal": (None, "unmovable_page"),
    "pageoffline-refcount-0-orphan": (None, "page_offline_busy"),
    "signal-pending": ("signal_pending", "signal_pending"),
    "concurrent-isolation": ("pageblock_isolated", "pageblock_isolated"),
    "block-already-offline": ("not_online", "not_online"),
    "node-last-memory-veto": ("node_notifier_veto", "node_notifier_veto"),
    "other-notifier-veto": ("memory_notifier_veto", "memory_notifier_veto"),
}


def observed(verdict):
    return (verdict.result.value, verdict.errno.value if verdict.errno else None,
            verdict.reason.value if verdict.reason else None, verdict.step.value if verdict.step else None,
            [(e.level.value, e.text) for e in verdict.kernel_log])


@pytest.mark.parametrize("row,name,profile,block,refcount,skippable", CASES,
                         ids=[f"row{c[0]}-{c[1]}" for c in CASES])
@pytest.mark.parametrize("semantics", ["refcount", "skippable"])
def test_spec_row(row, name, profile, block, refcount, skippable, semantics):
    machine = machine_from(profile)
    verdict = simulate(machine, semantics, [block]).blocks[0]
    assert observed(verdict) == (refcount if semantics == "refcount" else skippable)
    # The per-page oracle, written from the kernel source, agrees on everything.
    got, want = pipeline_fields(verdict), oracle_fields(Oracle(machine, semantics).offline(block))
    assert got == want, differences(got, want)


@pytest.mark.parametrize("row,name,profile,block,refcount,skippable", CASES,
                         ids=[f"row{c[0]}-{c[1]}" for c in CASES])
@pytest.mark.parametrize("semantics", ["refcount", "skippable"])
def test_spec_row_cause(row, name, profile, block, refcount, skippable, semantics):
    verdict = simulate(machine_from(profile), semantics, [block]).blocks[0]
    expected = CAUSES.get(name, (None, None))[0 if semantics == "refcount" else 1]
    assert (verdict.cause.value if verdict.cause else None) == expected
    if verdict.cause is not None:
        # The cause fixes the outcome, the step, the reason and (but for vetoes) the errno.
        assert (verdict.result, verdict.step, verdict.reason) == (
            verdict.cause.result, verdict.cause.step.verdict_step, verdict.cause.reason)
        assert verdict.cause.errno in (None, verdict.errno)


def test_every_cause_names_a_row():
    assert set(CAUSES) <= {c[1] for c in CASES}


def test_every_expressible_row_is_covered():
    rows = {c[0] for c in CASES}
    assert rows == set(range(1, 43))  # every row of the spec's table


def _one(profile: str, block: int, semantics: str = "refcount"):
    return simulate(machine_from(profile), semantics, [block]).blocks[0]


def test_isolation_reports_last_pageblock_before_middle_ones():
    # start_isolate_page_range(): first pageblock, last pageblock, then the middle ones.
    v = _one(target("Normal", page(MID, "slab") + page(0x40000 + 32767, "kernel")), 8)
    assert v.culprit.pfn == 0x40000 + 32767 and v.culprit.kind.label == "kernel"
    assert v.kernel_log[0].pfn == 0x40000 + 32767


def test_cma_culprit_is_first_page_of_the_pageblock():
    v = _one("""
[[ram]]
start = "1GiB"
size = "128MiB"
zone = "Normal"
cma = ["0x40200000-0x403fffff"]
""", 8)
    assert v.culprit.pfn == 0x40200
    assert [(e.level.value, e.pfn) for e in v.kernel_log][0] == ("dump_page", 0x40200)


def test_pinned_page_before_balloon_page_hangs_but_after_it_fails():
    # SCAN returns the first FOUND or BUSY page in pfn order (refcount semantics, ZONE_MOVABLE).
    before = _one(target("Movable", page(MID, "pinned") + page(MID + 100, "balloon")), 8)
    after = _one(target("Movable", page(MID + 100, "pinned") + page(MID, "balloon")), 8)
    assert (before.result.value, before.step.value) == ("hangs", "scan")
    assert (after.result.value, after.reason.value) == ("fails", "unmovable page")
    assert (before.cause, after.cause) == (Cause.EXTRA_REFERENCES, Cause.PAGE_OFFLINE_BUSY)


def test_migration_into_full_memory_hangs_with_enomem():
    full = """
[[ram]]
start = "1GiB"
size = "128MiB"
zone = "Movable"
[[fill]]
blocks = "0-7"
seed = 1
anon = 1.0
""" + page(MID, "anon", 4)
    v = _one(full, 8)
    assert (v.result.value, v.step.value) == ("hangs", "scan")
    # The source list runs from the highest pfn down: the first folio fails, -ENOMEM ends
    # migrate_pages() and do_migrate_range() names every folio left, in list order.
    assert [e.text for e in v.kernel_log[::2][:4]] == [f"migrating pfn {MID + i:x} failed ret:-12"
                                                       for i in (3, 2, 1, 0)]
    assert v.culprit.pfn == MID
    assert v.cause is Cause.NO_MIGRATION_TARGET


@pytest.mark.parametrize("refcount,cause", [(0, Cause.FOLIO_REFCOUNT_ZERO), (3, Cause.EXTRA_REFERENCES)])
def test_migration_loop_causes_name_the_folio_scan_keeps_finding(refcount, cause):
    # do_migrate_range(): folio_try_get() fails on refcount 0; migrate_pages() fails on extra
    # references (folio_migrate_mapping()'s refcount check) -- every round, so the write hangs.
    v = _one(target("Movable", page(MID, "anon", 2, refcount=refcount)), 8)
    assert (v.result.value, v.step.value, v.cause, v.culprit.pfn) == ("hangs", "scan", cause, MID)


def test_misaligned_range_fails_with_a_warning():
    # offline_pages(): WARN_ON_ONCE(!pageblock_aligned(start_pfn) ...) when memmap_on_memory's
    # vmemmap pages are not a whole number of pageblocks.
    machine = machine_from(target("Movable"))
    sim = Simulator(machine, get_semantics("refcount"))
    ctx = dataclasses.replace(sim.context(int(machine.blocks.rows([8])[0])), vmemmap=100)
    kinds = np.zeros(machine.geometry.pages_per_block, dtype=np.uint8)
    kinds[:100] = int(PageKind.VMEMMAP)
    v, _ = offline_block(sim.setup, ctx, kinds, None)
    assert (v.result.value, v.errno.value, v.reason, v.step.value, v.cause) == (
        "fails", "EINVAL", None, "alignment", Cause.MISALIGNED)
    assert [e.level.value for e in v.kernel_log] == ["warn_once"]


class _CountingSemantics(RefcountSemantics):
    """A hypothetical kernel whose TEST_ISOLATED accepts every PageOffline page and whose SCAN
    skips them, so referenced ones reach __offline_isolated_pages()'s BUG_ON(page_count(page))."""

    name = "counting"

    def scan_busy(self, refcount, skippable):
        return np.zeros_like(np.asarray(refcount), dtype=bool)

    def test_passes(self, refcount, skippable):
        return np.ones_like(np.asarray(refcount), dtype=bool)


def test_commit_bug_is_a_cause_of_its_own():
    machine = machine_from(target("Movable", page(MID, "balloon", 2)))
    sim = Simulator(machine, _CountingSemantics())
    batch = machine.pages.materialize(np.array([8]))
    v, _ = offline_block(sim.setup, sim.context(int(machine.blocks.rows([8])[0])), batch.kinds[0], None)
    assert (v.result.value, v.errno, v.reason, v.step.value, v.cause) == ("fails", None, None, "commit",
                                                                         Cause.COMMIT_BUG)
    assert v.culprit.pfn == MID and [e.text for e in v.kernel_log] == ["BUG_ON(page_count(page))"]


def test_migration_targets_come_from_other_nodes_first():
    # Node 1 is full: a block on node 0 cannot migrate there even though node 0 has room.
    two_nodes = """
[machine]
nodes = 2
[[ram]]
start = "1GiB"
size = "1GiB"
zone = "Normal"
node = 1
[[fill]]
blocks = "8-15"
seed = 3
anon = 1.0
""" + page(0x100, "anon", 4)
    v = _one(two_nodes, 0)
    assert (v.result.value, v.step.value) == ("hangs", "scan")


def test_dissolve_short_headroom_keeps_first_and_names_second():
    v = _one(target("Normal", page(MID, "hugetlb_free", 1024),
                    '\n[environment]\nhugetlb_2m = { free = 2, resv = 1 }\n'), 8)
    assert v.culprit.pfn == MID + 512
    assert v.pages.dissolved == 512


def test_hugetlb_pool_defaults_to_the_free_pages_of_the_profile():
    v = _one(target("Normal", page(MID, "hugetlb_free", 1024)), 8)
    assert v.result.value == "offlined" and v.pages.dissolved == 1024


def test_node_notifier_does_not_exist_before_6_17():
    profile = """
[machine]
nodes = 2
kernel = "6.1.0-56-amd64"
[[ram]]
start = "1GiB"
size = "128MiB"
zone = "Normal"
node = 1
[environment]
node_notifier_veto = "EBUSY"
"""
    assert _one(profile, 8).result.value == "offlined"


def test_hazards_follow_the_seed_discussion():
    referenced = page(SBM_FAKE_PFN + 5, "fake_offline", refcount=2)
    during = sbm("kernel", pages=referenced, env='\n[environment]\nforeign_ref_dropped = "during-offline"\n')
    after = sbm("kernel", pages=referenced, env='\n[environment]\nforeign_ref_dropped = "after-offline"\n')
    assert "freed_to_buddy" in {h.kind.value for h in _one(during, 32, "refcount").hazards}
    assert not {h.kind.value for h in _one(during, 32, "skippable").hazards}
    assert "stale_memmap_reference" in {h.kind.value for h in _one(after, 32, "skippable").hazards}
    orphan = target("Normal", page(MID, "offline_orphan", 4))
    assert "unsafe_reonline" in {h.kind.value for h in _one(orphan, 8, "refcount").hazards}


def test_page_counts_of_a_partial_sbm_block():
    v = _one(sbm("movable", pages=page(0x100000 + 10, "anon", 90)), 32)
    assert v.pages.skipped_offline == 48 * 512
    assert v.pages.migrated == 90
    assert v.pages.free == 16 * 512 - 90
    assert v.device_state == "MOVABLE_PARTIAL"


@pytest.mark.parametrize("extra,pages,step", [
    ("signal_pending = true\n", "", "scan"),
    ('notifier_veto = "EBUSY"\n', "", "notifier"),
    ("", page(0x100000 + 3, "pinned"), "scan"),  # hangs until a signal, then cancels
])
def test_cancel_after_a_freed_fake_offline_page_raises_a_free_pages_refcount(extra, pages, step):
    # Row 21 when the attempt does not complete: MEM_CANCEL_OFFLINE's page_ref_inc() hits the
    # page put_page() already freed to the buddy (refcount semantics only).
    env = '\n[environment]\nforeign_ref_dropped = "during-offline"\n' + extra
    profile = sbm("movable", pages=page(SBM_FAKE_PFN + 5, "fake_offline", refcount=2) + pages, env=env)
    refcount = _one(profile, 32, "refcount")
    assert refcount.step.value == step and refcount.result.value != "offlined"
    kinds = [h.kind.value for h in refcount.hazards]
    assert kinds.count("freed_to_buddy") == 1 and kinds.count("refcount_on_free_page") == 1
    assert next(h for h in refcount.hazards if h.kind.value == "refcount_on_free_page").pfn == SBM_FAKE_PFN + 5
    assert "refcount_on_free_page" not in {h.kind.value for h in _one(profile, 32, "skippable").hazards}


def test_no_cancel_hazard_when_the_freed_page_lets_offlining_succeed_or_before_the_notifier():
    referenced = page(SBM_FAKE_PFN + 5, "fake_offline", refcount=2)
    during = '\n[environment]\nforeign_ref_dropped = "during-offline"\n'
    ok = _one(sbm("movable", pages=referenced, env=during), 32)
    assert ok.result.value == "offlined" and "refcount_on_free_page" not in {h.kind.value for h in ok.hazards}
    # Isolation fails before MEM_GOING_OFFLINE: virtio-mem never dropped its reference.
    isolated = _one(sbm("kernel", pages=referenced + page(0x100000 + 3, "slab"), env=during), 32)
    assert isolated.step.value == "isolate" and not isolated.hazards


def test_predicate_inputs_are_what_the_pipeline_sees():
    from memplan.kernel.offline import predicate_inputs
    machine = machine_from(sbm("kernel", pages=page(SBM_FAKE_PFN + 5, "fake_offline", refcount=2),
                               env='\n[environment]\nforeign_ref_dropped = "during-offline"\n'))
    batch = machine.pages.materialize(np.array([32]))
    row = int(machine.blocks.rows([32])[0])
    for name, dropped, skippable in (("refcount", 48 * 512, 0), ("skippable", 0, 48 * 512)):
        sim = Simulator(machine, get_semantics(name))
        inputs = predicate_inputs(sim.setup, sim.context(row), batch.kinds[0], batch.refcount[0])
        assert int(inputs.dropped.sum()) == dropped and int(inputs.before.skippable.sum()) == skippable
        index = SBM_FAKE_PFN + 5 - inputs.before.pfn
        assert inputs.before.refcount[index] == 2
        # refcount: virtio-mem's reference, then the foreign one, are gone -> freed to the buddy.
        assert bool(inputs.freed[index]) is (name == "refcount")
        assert inputs.after.refcount[index] == (0 if name == "refcount" else 1)
