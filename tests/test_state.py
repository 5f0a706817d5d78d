"""MachineState: the placement rule, pool bookkeeping, conservation of pages, snapshots."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import machine_from
from memplan.core.model import FOLIO_SIZE, FolioSize, PageKind
from memplan.core.results import Outcome
from memplan.engine.simulation import simulate
from memplan.plans.state import MachineState

PPB = 32768
PB = 512

# Block 0 Normal, blocks 1-2 Movable, block 3 Movable holding the pages to move.
LAYOUT = """
[[ram]]
start = "0"
size = "128MiB"
zone = "Normal"

[[ram]]
start = "128MiB"
size = "384MiB"
zone = "Movable"
"""


def page(pfn: int, kind: str, count: int = 1) -> str:
    return f'\n[[pages]]\npfn = "{pfn:#x}"\ncount = {count}\nkind = "{kind}"\n'


def kinds_of(state: MachineState, block: int) -> np.ndarray:
    return state.pages(block).kinds


def test_movable_pages_go_to_zone_movable_first_lowest_pfn_first():
    state = MachineState(machine_from(LAYOUT + page(3 * PPB + 7, "anon", 100), spare=False))
    assert state.offline(3).result is Outcome.OFFLINED
    assert list(np.flatnonzero(kinds_of(state, 1))) == list(range(100))
    assert not kinds_of(state, 0).any() and not kinds_of(state, 2).any()


def test_kernel_zone_pages_never_land_in_zone_movable():
    text = LAYOUT + page(0, "anon", PPB - 50) + page(PPB - 50, "file", 50)
    state = MachineState(machine_from(text.replace('size = "128MiB"\nzone = "Normal"',
                                                   'size = "256MiB"\nzone = "Normal"')
                                      .replace('start = "128MiB"\nsize = "384MiB"',
                                               'start = "256MiB"\nsize = "256MiB"'),
                                      spare=False))
    # Block 1 (Normal) is free, blocks 2-3 Movable are free: block 0's pages may only go to block 1.
    assert state.offline(0).result is Outcome.OFFLINED
    assert np.count_nonzero(kinds_of(state, 1)) == PPB
    assert not kinds_of(state, 2).any()


def every_pageblock(blocks, kind: str = "slab") -> str:
    return "".join(page(b * PPB + i * PB + 3, kind) for b in blocks for i in range(64))


def test_thp_falls_back_along_the_zonelist_then_splits():
    # No free pageblock in ZONE_MOVABLE: the order-9 target comes from ZONE_NORMAL (block 0).
    state = MachineState(machine_from(LAYOUT + every_pageblock((1, 2)) + page(3 * PPB, "thp", PB), spare=False))
    assert state.offline(3).result is Outcome.OFFLINED
    assert np.count_nonzero(kinds_of(state, 0) == PageKind.THP) == PB
    # No free pageblock anywhere: migrate_pages() splits the THP into 512 pages.
    state = MachineState(machine_from(LAYOUT + every_pageblock((0, 1, 2)) + page(3 * PPB, "thp", PB), spare=False))
    assert state.offline(3).result is Outcome.OFFLINED
    assert np.count_nonzero(kinds_of(state, 1) == PageKind.ANON) == PB
    assert not any((kinds_of(state, b) == PageKind.THP).any() for b in (0, 1, 2))


def test_thp_takes_a_free_pageblock():
    state = MachineState(machine_from(LAYOUT + page(PPB, "anon") + page(3 * PPB, "thp", PB), spare=False))
    state.offline(3)
    assert list(np.flatnonzero(kinds_of(state, 1) == PageKind.THP)[[0, -1]]) == [PB, 2 * PB - 1]


def test_hugetlb_pool_target_and_dissolve():
    text = LAYOUT + page(0, "hugetlb_free", 2 * PB) + page(3 * PPB, "hugetlb", PB) + page(3 * PPB + PB, "anon")
    state = MachineState(machine_from(text, spare=False))
    assert state.pools[9].free == 2
    assert state.offline(3).result is Outcome.OFFLINED
    # The lowest free folio became the target; the source went to the pool and was dissolved.
    assert list(np.unique(kinds_of(state, 0)[:PB])) == [PageKind.HUGETLB]
    assert list(np.unique(kinds_of(state, 0)[PB:2 * PB])) == [PageKind.HUGETLB_FREE]
    assert state.pools[9].free == 1 and state.free_huge[9][state.row_of(0)] == 1


def test_hugetlb_pool_target_skips_folios_in_isolated_pageblocks():
    # dequeue_hugetlb_folio_node_exact() skips a folio whose head's pageblock is isolated
    # (is_migrate_isolate_page()): the folio at pfn 0 stays free, the next one is the target.
    text = (LAYOUT + page(0, "hugetlb_free", 2 * PB) + page(3 * PPB, "hugetlb", PB) + page(3 * PPB + PB, "anon")
            + "\n[environment]\nisolated = ['0x0-0x1fffff']\n")
    state = MachineState(machine_from(text, spare=False))
    assert state.pool_heads[9][state.row_of(0)] == 1 and state.free_huge[9][state.row_of(0)] == 2
    assert state.offline(3).result is Outcome.OFFLINED
    assert list(np.unique(kinds_of(state, 0)[:PB])) == [PageKind.HUGETLB_FREE]
    assert list(np.unique(kinds_of(state, 0)[PB:2 * PB])) == [PageKind.HUGETLB]


def test_fresh_hugetlb_target_compacts_a_pageblock():
    # No pool; every pageblock holds one anon page: compaction frees one in the first block tried.
    anon = every_pageblock((0, 1, 2), "anon")
    text = LAYOUT + anon + page(3 * PPB, "hugetlb", PB) + '\n[environment]\nhugetlb_2m = { free = 0 }\n'
    state = MachineState(machine_from(text, spare=False))
    assert state.offline(3).result is Outcome.OFFLINED
    k = kinds_of(state, 1)
    assert np.count_nonzero(k == PageKind.HUGETLB) == PB and np.count_nonzero(k == PageKind.ANON) == 64


def test_snapshot_simulates_like_the_state():
    state = MachineState(machine_from(LAYOUT + page(3 * PPB, "anon", 2000) + page(3 * PPB + 5000, "pinned"),
                                      spare=False))
    assert state.offline(3).result is Outcome.HANGS  # the pinned page; the anon pages moved anyway
    snap = state.to_machine()
    verdicts = {v.block: v for v in simulate(snap).blocks}
    assert (verdicts[3].pages.free, verdicts[3].pages.migrated, verdicts[3].result) == (PPB - 1, 0, Outcome.HANGS)
    copy = state.copy()
    copy.offline(1)
    assert state.online(state.row_of(1)) and not copy.online(copy.row_of(1))


LRU_KINDS = [PageKind.ANON, PageKind.FILE, PageKind.THP]


def census(state: MachineState):
    counts = {"free": 0, "lru": 0, "other": 0}
    for row in state.online_rows():
        k = state.pages(int(state.ids[row])).kinds
        counts["free"] += int(np.count_nonzero(k == PageKind.FREE))
        counts["lru"] += int(np.count_nonzero(np.isin(k, LRU_KINDS)))
        counts["other"] += int(np.count_nonzero(~np.isin(k, LRU_KINDS + [PageKind.FREE])))
    return counts


@settings(max_examples=12, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 0.6), st.floats(0, 0.3), st.sampled_from([0.0, 0.0002])), min_size=4,
                max_size=4), st.integers(0, 3))
def test_offlining_moves_pages_and_never_creates_or_loses_any(fills, seed):
    text = LAYOUT
    for block, (anon, thp, slab) in enumerate(fills):
        text += f'\n[[fill]]\nblocks = "{block}"\nseed = {seed + block}\nanon = {anon}\nthp = {thp}\nslab = {slab}\n'
    state = MachineState(machine_from(text, spare=False))
    for block in (3, 2, 1, 0):
        before = census(state)
        gone = state.pages(block).kinds.copy()
        verdict = state.offline(block)
        after = census(state)
        if verdict.result is Outcome.OFFLINED:
            # The block's free pages vanish; its in-use pages now take free pages elsewhere.
            moved = int(np.count_nonzero(gone != PageKind.FREE))
            assert after["free"] == before["free"] - int(np.count_nonzero(gone == PageKind.FREE)) - moved
            assert after["lru"] == before["lru"] - int(np.count_nonzero(np.isin(gone, LRU_KINDS))) + moved
        else:
            assert after == before  # migrated or not, every page is still somewhere
        assert state.free_pages_total() == after["free"]
        assert (FOLIO_SIZE[np.concatenate([state.pages(int(state.ids[r])).kinds for r in state.online_rows()])]
                <= FolioSize.PMD).all() if len(state.online_rows()) else True
