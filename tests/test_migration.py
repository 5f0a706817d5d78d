"""migrate_pages() as the kernel runs it (mm/migrate.c @ c17ee635): list order, batches, retries.

Each case is a minimal profile whose verdict only the kernel's order of work explains; the
per-page oracle (``tests/oracle.py``) and the pipeline must both give it.
"""

from __future__ import annotations

import numpy as np

from conftest import machine_from
from memplan.core.model import Zone
from memplan.core.results import Cause, Outcome
from memplan.engine.simulation import simulate
from memplan.kernel.migrate_pages import Capacity, Pools, SourceFolios, migrate_pages, piece_order, target_zones
from memplan.profile.reader import build_machine
from oracle import Oracle
from test_properties import assert_agree, pages, ram

#: block 1 is the block under test; block 0 holds the targets
BASE = 0x8000


def targets(free: int) -> str:
    """Block 0 full of anonymous pages but for ``free`` free pages at its end."""
    return ram("0", "256MiB") + pages(0, "anon", 32768 - free)


def offline(text: str, block: int = 1):
    machine = machine_from(text, spare=False)
    assert_agree(machine, "refcount", blocks=[block])
    return simulate(machine, "refcount", [block]).blocks[0]


def warnings(verdict) -> list:
    return [e.text for e in verdict.kernel_log if e.level.value == "pr_warn"]


def test_a_stuck_folio_holds_its_target_while_its_batch_is_unmapped():
    # The list runs from the highest pfn down: the page with an extra reference is unmapped
    # first and holds the only free page until its batch is undone, so the page below it finds
    # none (-ENOMEM ends migrate_pages()); had it given the page back, that page would migrate.
    v = offline(targets(1) + pages(BASE, "anon") + pages(BASE + 1, "anon") + "refcount = 2\n")
    assert (v.result, v.culprit.pfn, v.pages.migrated) == (Outcome.HANGS, BASE, 0)
    assert warnings(v) == [f"migrating pfn {BASE + 1:x} failed ret:-12", f"migrating pfn {BASE:x} failed ret:-12"]


def test_a_pinned_page_retries_unmapping_after_its_batch_took_the_targets():
    # try_to_migrate() cannot unmap a long-term pinned page: its target is freed at once and the
    # page below it takes the only free page. The second unmap pass finds none: -ENOMEM (the
    # page that got a target still migrates).
    v = offline(targets(1) + pages(BASE, "anon") + pages(BASE + 1, "pinned"))
    assert (v.result, v.culprit.pfn, v.cause, v.pages.migrated) == (Outcome.HANGS, BASE + 1, Cause.EXTRA_REFERENCES, 1)
    assert warnings(v) == [f"migrating pfn {BASE + 1:x} failed ret:-12"]


def test_failed_folios_are_reported_batch_by_batch_hugetlb_before_the_last_batch():
    # 600 order-0 pages make two batches (512 pages, then 88); the stuck hugetlb folio goes to
    # the failed list when the last batch (short of 512 pages) is cut: between the batches.
    stuck = pages(BASE + 10, "anon") + "refcount = 2\n" + pages(BASE + 590, "anon") + "refcount = 2\n"
    v = offline(ram("0", "256MiB") + pages(BASE, "anon", 10) + pages(BASE + 11, "anon", 579)
                + pages(BASE + 591, "anon", 9) + stuck + pages(BASE + 1024, "hugetlb", 512) + "refcount = 2\n")
    assert warnings(v) == [f"migrating pfn {BASE + 590:x} failed ret:3", f"migrating pfn {BASE + 1024:x} failed ret:3",
                           f"migrating pfn {BASE + 10:x} failed ret:3"]


def test_a_stuck_hugetlb_folio_needs_a_target_again_after_the_others_took_the_pool():
    # migrate_hugetlbs(): the stuck folio takes the only pool folio and gives it back, the next
    # one migrates to it; the second pass finds no pool folio and no free page: -ENOMEM, and the
    # order-0 page after them is never tried.
    v = offline(ram("0", "256MiB") + pages(0, "hugetlb_free", 512) + pages(512, "anon", 32256)
                + pages(BASE, "hugetlb", 512) + "refcount = 2\n" + pages(BASE + 512, "hugetlb", 512)
                + pages(BASE + 1024, "anon"))
    assert warnings(v)[:2] == [f"migrating pfn {BASE + 1024:x} failed ret:-12",
                               f"migrating pfn {BASE:x} failed ret:-12"]
    assert v.pages.migrated == 512


def test_a_later_round_cuts_its_batches_elsewhere_and_gets_further():
    # Round 1: the stuck THP at 0x8200 closes a batch whose held pages leave it 511 of the 512
    # pages it needs: -ENOMEM, the THP at 0x8000 is never tried. Round 2: two pages fewer on the
    # list move the batch boundary; the stuck THP finds a target (and gives it back), the THP at
    # 0x8000 migrates. Round 3 changes nothing: SCAN loops on the stuck THP.
    v = offline(targets(656) + pages(BASE, "thp", 512) + pages(BASE + 0x200, "thp", 512) + "refcount = 2\n"
                + pages(BASE + 0x400, "anon", 3) + pages(BASE + 0x403, "anon", 650) + "refcount = 2\n"
                + pages(BASE + 0x68d, "anon", 2))
    assert (v.result, v.culprit.pfn, v.pages.migrated) == (Outcome.HANGS, BASE + 0x200, 5)


def test_a_thp_leaving_a_kernel_zone_may_land_in_zone_movable_an_order0_page_may_not():
    text = (ram("0", "128MiB") + ram("128MiB", "128MiB") + ram("256MiB", "128MiB", "Movable")
            + pages(0, "anon", 32768) + pages(0x10000, "anon", 32768 - 600))
    assert offline(text + pages(BASE, "thp", 512)).result is Outcome.OFFLINED
    v = offline(text + pages(BASE, "anon", 512))
    assert (v.result, v.cause) == (Outcome.HANGS, Cause.NO_MIGRATION_TARGET)


def test_split_pages_migrate_tail_pages_first():
    order = piece_order(512)
    assert order[0] == 1 and order[-2] == 511 and order[-1] == 0


def test_target_zones_per_folio_size():
    assert target_zones(Zone.NORMAL) == (Zone.NORMAL, Zone.DMA32, Zone.DMA)
    assert target_zones(Zone.NORMAL, large=True)[0] is Zone.MOVABLE
    assert target_zones(Zone.MOVABLE) == target_zones(Zone.MOVABLE, large=True)


def test_pools_take_zone_movable_first_for_large_folios_only():
    pools = Pools(Capacity(kernel=10, movable=600), Zone.NORMAL)
    assert pools.alloc(1, False) == (0, 1)
    assert pools.alloc(512, True) == (512, 0)
    assert pools.alloc(512, True) is None and pools.fits(9, 88) and not pools.fits(10, 89)


def test_migrate_pages_on_a_list_that_fits_leaves_only_the_stuck_folios():
    folios = SourceFolios(size=np.array([1, 1, 512, 1]), hugetlb=np.array([False, False, True, False]),
                          stuck=np.array([True, False, True, False]), unmap_stuck=np.array([True, False, False, False]),
                          order=np.array([0, 0, 9, 0]), gigantic=np.zeros(4, dtype=bool))
    done = migrate_pages(folios, Pools(None, Zone.NORMAL), {9: 0}, 512)
    assert done.migrated.tolist() == [False, True, False, True]
    assert done.left_folio.tolist() == [2, 0] and done.ret == 2  # the hugetlb folio first: one short batch


def test_a_block_spanning_nodes_carries_its_pages_per_node():
    machine = build_machine({"format": 1, "machine": {"nodes": 2},
                             "ram": [{"start": 0, "size": "192MiB", "zone": "Normal", "node": 0},
                                     {"start": "192MiB", "size": "192MiB", "zone": "Normal", "node": 1}]}, "<test>")
    table = machine.blocks
    row = int(table.rows([1])[0])
    assert int(table.node[row]) == -1 and table.spans == {1: {0: 16384, 1: 16384}}
    oracle = Oracle(machine, "refcount")
    assert oracle.facts.present == {0: 49152, 1: 49152}
    assert simulate(machine, "refcount", [1]).blocks[0].cause is Cause.ZONE_NULL


def test_a_snapshot_block_linked_under_two_nodes_spans_them(tmp_path):
    # register_memory_blocks_under_node() links a boot block spanning nodes under each; zoneinfo
    # spans say which of its pages each node has (node_present_pages).
    import os

    from conftest import build_sysroot
    from memplan.engine.context import node_present_pages
    from memplan.snapshot.reader import load_snapshot

    root = build_sysroot(str(tmp_path / "t"), {0: ("online", "Normal"), 1: ("online", "none"), 2: ("online", "Normal")},
                         np.zeros(3 * 32768), "00000000-17ffffff : System RAM\n")
    for node, blocks in ((0, (0, 1)), (1, (1, 2))):
        for block in blocks:
            link = os.path.join(root, f"sys/devices/system/memory/memory{block}/node{node}")
            os.symlink(f"../../node/node{node}", link)
    with open(os.path.join(root, "proc/zoneinfo"), "w") as handle:
        for node in (0, 1):
            handle.write(f"Node {node}, zone   Normal\n  pages free     0\n        spanned  49152\n"
                         f"        present  49152\n  start_pfn:           {node * 49152}\n")
    machine = load_snapshot(root)
    assert machine.blocks.node.tolist() == [0, -1, 1] and machine.blocks.spans == {1: {0: 16384, 1: 16384}}
    assert node_present_pages(machine) == {0: 49152, 1: 49152}
