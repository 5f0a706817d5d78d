"""``migrate_pages()`` (mm/migrate.c) over ``do_migrate_range()``'s source list.

The source list: ``isolate_folio_to_list()`` ``list_add()``s every LRU and movable_ops folio,
so those run from the highest pfn down; ``folio_isolate_hugetlb()`` ``list_move_tail()``s
hugetlb folios behind them, lowest pfn first. ``migrate_pages(MIGRATE_SYNC)`` then:

1. ``migrate_hugetlbs()``: the hugetlb folios, in list order, up to NR_MAX_MIGRATE_PAGES_RETRY
   passes; a target that cannot be allocated (-ENOMEM) ends ``migrate_pages()`` at once;
2. the other folios in batches of NR_MAX_BATCHED_MIGRATION (HPAGE_PMD_NR) pages, the folio
   reaching the limit closing its batch (a THP always closes one). ``migrate_pages_sync()``
   runs a MIGRATE_ASYNC ``migrate_pages_batch()`` over the batch (every target is allocated
   while unmapping, folios are moved afterwards), then each failed folio alone (MIGRATE_SYNC).
   -ENOMEM ends ``migrate_pages()``, except for a THP ``try_split_folio()`` can split: its
   order-0 pages (tail pages in order, then the head) get one MIGRATE_ASYNC pass after the
   batch, whose -ENOMEM is ignored.

A folio that cannot migrate ("stuck": a long-term pin, references beyond its own) still takes
a target each time it is tried: a long-term pinned page gives it back at once (``try_to_migrate()``
cannot unmap it, ``folio_try_share_anon_rmap_pte()`` refuses a maybe-pinned anon-exclusive
page), any other holds it until its batch is undone (``folio_migrate_mapping()``'s refcount
check fails after unmapping). The folios left on the list, in list order, and the return value
(-ENOMEM, else the number of folios that failed, a split THP counting once) are what
``do_migrate_range()`` reports.

Targets come from ``Pools``: free pages outside the block on the allowed nodes by zone class
(spec §3 step 9b; no fragmentation, watermarks or reclaim), as ``alloc_migration_target()``
may use them (``target_zones()``). Most source lists need no folio-by-folio walk: when every
folio on the list fits at once, no allocation can fail and only the stuck folios' order is
computed; the batch walk runs only where targets run short.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from memplan.core.arrays import BoolArray, IntArray, KindArray
from memplan.core.model import PageKind, Zone
from memplan.kernel.pages import first_index

ENOMEM = -12
#: NR_MAX_MIGRATE_PAGES_RETRY: passes over the hugetlb folios while some return -EAGAIN
NR_MAX_MIGRATE_PAGES_RETRY = 10
#: Zonelist order of one node, highest zone first (``build_zonerefs_node()``).
ZONELIST_ORDER = (Zone.MOVABLE, Zone.NORMAL, Zone.DMA32, Zone.DMA)
#: A capacity nobody counted because it suffices.
_PLENTY = 1 << 62

Ints = Union[int, np.ndarray]


def target_zones(source_zone: Zone, large: bool = False) -> Tuple[Zone, ...]:
    """Zones a migration target for a folio in ``source_zone`` may come from, in zonelist order.

    ``alloc_migration_target()`` (mm/migrate.c) adds ``__GFP_HIGHMEM`` when the source folio
    sits in ZONE_MOVABLE; ``GFP_KERNEL | __GFP_MOVABLE`` without it maps to ZONE_NORMAL in
    ``gfp_zone()``, so an order-0 folio leaving a kernel zone lands in kernel zones. A large
    folio gets more: a THP's mask ``GFP_TRANSHUGE`` and a hugetlb folio's ``htlb_alloc_mask()``
    (``GFP_HIGHUSER_MOVABLE``) carry ``__GFP_HIGHMEM | __GFP_MOVABLE``, so it may land in
    ZONE_MOVABLE wherever it comes from. Both ``do_migrate_range()`` (offlining) and
    ``__alloc_contig_migrate_range()`` (virtio-mem) allocate through it.
    """
    if source_zone is Zone.MOVABLE or large:
        return ZONELIST_ORDER
    return ZONELIST_ORDER[1:]


#: Whether ZONE_MOVABLE pages are targets, for (order-0, large) folios: (source in ZONE_MOVABLE,
#: source in a kernel zone).
_MOVABLE_TARGETS = tuple(tuple(Zone.MOVABLE in target_zones(source, large) for source in (Zone.MOVABLE, Zone.NORMAL))
                         for large in (False, True))


@dataclass(frozen=True)
class Capacity:
    """Free pages migration targets may come from: outside the block, on ``do_migrate_range()``'s
    allowed nodes, in kernel zones and in ZONE_MOVABLE."""

    kernel: int
    movable: int


def pool_sizes(kernel: Ints, movable: Ints, movable_source: Ints) -> Tuple[Ints, Ints]:
    """``(pages any folio may take, pages only large folios may take)`` of the free pages in
    kernel zones and in ZONE_MOVABLE, for a source in ZONE_MOVABLE or not (``target_zones()``).
    Works on arrays of blocks too."""
    order0 = np.where(movable_source, *_MOVABLE_TARGETS[0])
    large = np.where(movable_source, *_MOVABLE_TARGETS[1])
    return kernel + np.where(order0, movable, 0), np.where(large & ~order0, movable, 0)


def targets_suffice(kernel: Ints, movable: Ints, movable_source: Ints, small: Ints, large: Ints) -> Ints:
    """Whether every folio on the source list finds a target even if all were allocated at
    once: ``small`` pages of order-0 folios, ``large`` pages of large folios (which take
    ZONE_MOVABLE pages first where they may). Then no allocation can fail, whatever the order.
    Works on arrays of blocks too."""
    any_folio, large_only = pool_sizes(kernel, movable, movable_source)
    return small + np.maximum(np.asarray(large) - large_only, 0) <= any_folio


def free_target_pages(kinds: KindArray, isolated: BoolArray, pageblock_pages: int) -> int:
    """Free pages of one block that migration targets may come from: those in pageblocks
    someone else isolated sit on MIGRATE_ISOLATE free lists, which ``__rmqueue()`` never
    allocates from. ``isolated``: the block's pageblocks someone else isolated."""
    free = kinds == PageKind.FREE.value
    pages = int(np.count_nonzero(free))
    if isolated.any():
        pages -= int(np.count_nonzero(free.reshape(-1, pageblock_pages)[isolated]))
    return pages


class Pools:
    """Migration targets as ``migrate_pages()`` uses them up and gives them back."""

    def __init__(self, capacity: Optional[Capacity], source_zone: Zone) -> None:
        if capacity is None:
            self.any_folio, self.large_only = _PLENTY, _PLENTY
        else:
            any_folio, large_only = pool_sizes(capacity.kernel, capacity.movable, source_zone is Zone.MOVABLE)
            self.any_folio, self.large_only = int(any_folio), int(large_only)

    def alloc(self, size: int, large: bool) -> Optional[Tuple[int, int]]:
        """``alloc_migration_target()`` for a folio of ``size`` pages: the pages taken from each
        pool (large-only first), or ``None`` (-ENOMEM)."""
        first = min(self.large_only, size) if large else 0
        if self.any_folio < size - first:
            return None
        self.large_only -= first
        self.any_folio -= size - first
        return first, size - first

    def free(self, taken: Tuple[int, int]) -> None:
        """A target nobody migrated to goes back (``put_new_folio`` / ``folio_put()``)."""
        self.large_only += taken[0]
        self.any_folio += taken[1]

    def fits(self, small: int, large: int) -> bool:
        """``targets_suffice()`` for what is left."""
        return bool(small + max(large - self.large_only, 0) <= self.any_folio)


@dataclass
class SourceFolios:
    """The folios on the source list, one entry per folio, ascending pfn."""

    #: pages a target must have (``folio_nr_pages()``)
    size: np.ndarray
    hugetlb: np.ndarray
    #: migration fails every time (a long-term pin, references beyond the folio's own)
    stuck: BoolArray
    #: stuck before the move: ``try_to_migrate()`` cannot unmap it (its target is freed at once)
    unmap_stuck: np.ndarray
    #: hugetlb folios: hstate order; ``hstate_is_gigantic()``
    order: np.ndarray
    gigantic: np.ndarray

    def __len__(self) -> int:
        return len(self.size)


@dataclass
class Migrated:
    """What one ``migrate_pages()`` call did to the folios of a ``SourceFolios``."""

    migrated: BoolArray
    #: hugetlb folios whose target was a free pool folio (the source returns to the pool)
    pooled: np.ndarray
    #: THPs split on -ENOMEM: how many of their pages (in split-list order) migrated, else -1
    pieces: np.ndarray
    #: the folios left on the list, in list order: folio index and, for a page of a split THP,
    #: its offset in the THP (else -1)
    left_folio: np.ndarray
    left_piece: np.ndarray
    #: the return value: -ENOMEM, else the folios that failed (a split THP counts once)
    ret: int
    #: hugetlb folios that took a fresh target (not from the pool) at least once
    fresh: np.ndarray


def piece_order(size: int) -> np.ndarray:
    """Page offsets of a split THP in split-list order: ``lru_add_split_folio()``
    ``list_add_tail()``s the tail pages in order, ``try_split_folio()`` moves the head after them."""
    return np.concatenate([np.arange(1, size, dtype=np.int64), np.zeros(1, dtype=np.int64)])


@dataclass
class _Walk:
    """The state of one ``migrate_pages()`` call."""

    folios: SourceFolios
    pools: Pools
    #: free pool folios ``alloc_hugetlb_folio_nodemask()`` may dequeue, per hstate order
    pool: Dict[int, int]
    migrated: BoolArray
    pooled: np.ndarray
    pieces: np.ndarray
    fresh: np.ndarray
    #: segments of the list left over, in order: (folio indexes, piece positions)
    ret_folios: List[Tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def keep(self, folio_idx: np.ndarray, pieces: Optional[np.ndarray] = None) -> None:
        """Append folios (or pages of one split THP) to the list of folios left over."""
        idx = np.asarray(folio_idx, dtype=np.int64)
        self.ret_folios.append((idx, pieces if pieces is not None else np.full(len(idx), -1, dtype=np.int64)))

    def hugetlb_target(self, i: int) -> Optional[object]:
        """``alloc_hugetlb_folio_nodemask()``: a pool folio while one may be dequeued, else a fresh
        one (``alloc_migrate_hugetlb_folio()``: never for a gigantic hstate)."""
        order = int(self.folios.order[i])
        if self.pool.get(order, 0) > 0:
            self.pool[order] -= 1
            return "pool"
        if self.folios.gigantic[i]:
            return None
        taken = self.pools.alloc(int(self.folios.size[i]), True)
        self.fresh[i] |= taken is not None
        return taken

    def give_back(self, i: int, target: object) -> None:
        if target == "pool":
            self.pool[int(self.folios.order[i])] += 1
        else:
            self.pools.free(target)  # type: ignore[arg-type]


def migrate_pages(folios: SourceFolios, pools: Pools, pool: Dict[int, int], batch_pages: int) -> Migrated:
    """``migrate_pages()`` on the source list ``do_migrate_range()`` builds from ``folios``;
    ``pools``: the free pages targets come from, ``pool``: free pool folios per hstate order the
    hugetlb folios may take (both used up as the folios take them: a later call goes on from
    there); ``batch_pages``: NR_MAX_BATCHED_MIGRATION."""
    n = len(folios)
    walk = _Walk(folios, pools, pool, np.zeros(n, dtype=bool),
                 np.zeros(n, dtype=bool), np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool))
    huge = np.flatnonzero(folios.hugetlb)
    others = np.flatnonzero(~folios.hugetlb)[::-1]  # list_add(): highest pfn first
    rc = _migrate_hugetlbs(walk, huge)
    if rc < 0:  # -ENOMEM: nothing else is tried
        walk.keep(others)
        walk.keep(huge[~walk.migrated[huge]])
    else:
        stuck_huge = huge[~walk.migrated[huge]]
        more = _migrate_others(walk, others, stuck_huge, batch_pages)
        rc = ENOMEM if more < 0 else rc + more
    left_folio = np.concatenate([f for f, _ in walk.ret_folios] or [np.zeros(0, dtype=np.int64)])
    left_piece = np.concatenate([p for _, p in walk.ret_folios] or [np.zeros(0, dtype=np.int64)])
    return Migrated(walk.migrated, walk.pooled, walk.pieces, left_folio, left_piece, rc if len(left_folio) else 0,
                    walk.fresh)


def _migrate_hugetlbs(walk: _Walk, huge: np.ndarray) -> int:
    """``migrate_hugetlbs()`` / ``unmap_and_move_huge_page()``: -ENOMEM, else the folios left
    (a stuck folio takes a target and gives it back in every pass; passes after the second
    repeat it exactly)."""
    stuck = walk.folios.stuck
    retry = 1
    for _ in range(min(NR_MAX_MIGRATE_PAGES_RETRY, 2)):
        if not retry:
            break
        retry = 0
        for i in huge[~walk.migrated[huge]].tolist():
            target = walk.hugetlb_target(i)
            if target is None:
                return ENOMEM
            if stuck[i]:
                walk.give_back(i, target)
                retry += 1
                continue
            walk.migrated[i] = True
            walk.pooled[i] = target == "pool"
    return retry


def _batch_starts(size: np.ndarray, limit: int) -> Tuple[np.ndarray, bool]:
    """Where ``migrate_pages()`` cuts the list into batches (the folio whose pages reach
    ``limit`` closes its batch), and whether the last batch reached the limit."""
    n = len(size)
    if not n:
        return np.zeros(0, dtype=np.int64), False
    if (size == 1).all():
        return np.arange(0, n, limit, dtype=np.int64), n % limit == 0
    cum = np.cumsum(size)
    starts: List[int] = []
    start, base = 0, 0
    while start < n:
        starts.append(start)
        start = min(int(np.searchsorted(cum, base + limit, side="left")) + 1, n)
        base = int(cum[start - 1])
    return np.asarray(starts, dtype=np.int64), int(cum[-1]) - int(cum[starts[-1] - 1] if starts[-1] else 0) >= limit


def _migrate_others(walk: _Walk, others: np.ndarray, stuck_huge: np.ndarray, limit: int) -> int:
    """The non-hugetlb folios (``others``, in list order) batch by batch; ``stuck_huge`` join the
    folios left over when the list walk of ``migrate_pages()`` reaches them. Returns -ENOMEM or
    the failures counted."""
    f = walk.folios
    size = f.size[others]
    large = size > 1
    fits = walk.pools.fits(int(np.count_nonzero(~large)), int(size[large].sum()))
    if fits and not len(stuck_huge) and not f.stuck[others].any():
        walk.migrated[others] = True  # nothing can fail and nothing is left
        return 0
    starts, last_full = _batch_starts(size, limit)
    ends = np.append(starts[1:], len(others))
    # The hugetlb folios sit behind every other folio: the list walk reaches them (and moves
    # them to ret_folios) while cutting a last batch that does not reach the limit, else after
    # the last batch.
    huge_before = len(starts) - 1 if len(starts) and not last_full else len(starts)
    if fits:
        return _migrate_plenty(walk, others, starts, stuck_huge, huge_before)
    failed = 0
    for b, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
        if b == huge_before:
            walk.keep(stuck_huge)
        rc = _migrate_batch(walk, others[s:e])
        if rc < 0:
            walk.keep(others[e:])
            if b < huge_before:
                walk.keep(stuck_huge)
            return ENOMEM
        failed += rc
    if huge_before == len(starts):
        walk.keep(stuck_huge)
    return failed


def _migrate_plenty(walk: _Walk, others: np.ndarray, starts: IntArray, stuck_huge: np.ndarray,
                    huge_before: int) -> int:
    """Every folio finds a target: all but the stuck ones migrate. Per batch, the stuck folios
    are left in ``migrate_pages_sync()``'s order: those ``try_to_migrate()`` could not unmap
    (still on the batch list) before those undone after the move (on the ASYNC ret list)."""
    f = walk.folios
    stuck = f.stuck[others]
    walk.migrated[others[~stuck]] = True
    pos = np.flatnonzero(stuck)
    batch = np.searchsorted(starts, pos, side="right") - 1
    group = (~f.unmap_stuck[others[pos]]).astype(np.int64)
    order = np.lexsort((pos, group, batch))
    pos, batch = pos[order], batch[order]
    cut = int(np.searchsorted(batch, huge_before, side="left"))
    walk.keep(others[pos[:cut]])
    walk.keep(stuck_huge)
    walk.keep(others[pos[cut:]])
    return len(pos)


def _migrate_batch(walk: _Walk, batch: np.ndarray) -> int:
    """``migrate_pages_sync()`` on one batch (in list order; a THP can only be its last folio),
    then the split pass: -ENOMEM or the failures counted."""
    f, pools = walk.folios, walk.pools
    thp = int(batch[-1]) if f.size[batch[-1]] > 1 else None
    smalls = batch[:-1] if thp is not None else batch
    unmap, stuck = f.unmap_stuck[smalls], f.stuck[smalls]
    held = ~unmap  # a page try_to_migrate() cannot unmap gives its target back at once
    # MIGRATE_ASYNC pass 0: every order-0 folio needs one page besides those held before it.
    fail = first_index(np.cumsum(held) - held >= pools.any_folio)
    if fail is not None:  # -ENOMEM: the folios unmapped so far are moved, migrate_pages() ends
        before = np.arange(len(smalls)) < fail
        moved = smalls[before & held & ~stuck]
        pools.any_folio -= len(moved)
        _move(walk, moved)
        walk.keep(smalls[before & held & stuck])
        walk.keep(np.append(smalls[(before & unmap) | ~before], [] if thp is None else [thp]).astype(np.int64))
        return ENOMEM
    pools.any_folio -= int(np.count_nonzero(held))
    thp_taken = pools.alloc(int(f.size[thp]), True) if thp is not None else None
    split = thp is not None and thp_taken is None
    if thp is not None and split and f.stuck[thp]:  # try_split_folio() fails on a stuck THP: -ENOMEM
        pools.any_folio += int(np.count_nonzero(held & stuck))
        _move(walk, smalls[held & ~stuck])
        walk.keep(smalls[held & stuck])
        walk.keep(np.append(smalls[unmap], thp).astype(np.int64))
        return ENOMEM
    return _finish_batch(walk, smalls, thp, thp_taken, split)


def _finish_batch(walk: _Walk, smalls: np.ndarray, thp: Optional[int], thp_taken: Optional[Tuple[int, int]],
                  split: bool) -> int:
    """The rest of ``migrate_pages_batch()`` (passes 1-2 for unmap failures, the move, the
    undo), the MIGRATE_SYNC retries and the split pass of one batch."""
    f, pools = walk.folios, walk.pools
    unmap, stuck = f.unmap_stuck[smalls], f.stuck[smalls]
    move_stuck = smalls[~unmap & stuck]
    held_thp = [] if thp is None or split else [thp]
    stuck_thp = [t for t in held_thp if f.stuck[t]]
    if unmap.any() and pools.any_folio < 1:  # pass 1: -ENOMEM for the first page not unmapped
        pools.any_folio += len(move_stuck)
        if stuck_thp:
            assert thp_taken is not None
            pools.free(thp_taken)
        _move(walk, np.append(smalls[~stuck], [t for t in held_thp if not f.stuck[t]]).astype(np.int64))
        walk.keep(np.append(move_stuck, stuck_thp).astype(np.int64))
        walk.keep(smalls[unmap])
        _keep_pieces(walk, thp if split else None, 0)
        return ENOMEM
    _move(walk, np.append(smalls[~stuck], [t for t in held_thp if not f.stuck[t]]).astype(np.int64))
    pools.any_folio += len(move_stuck)  # migrate_folios_undo(): the stuck folios' targets are freed
    if stuck_thp:
        assert thp_taken is not None
        pools.free(thp_taken)
    # MIGRATE_SYNC, one failed folio at a time: each takes a target and gives it back. None runs
    # short: a folio undone after the move finds at least the target it held, one that could
    # not be unmapped what the second unmap pass found.
    sync = np.append(np.append(smalls[unmap], move_stuck), stuck_thp).astype(np.int64)
    walk.keep(sync)
    if split:
        assert thp is not None
        walk.pieces[thp] = taken = min(int(f.size[thp]), pools.any_folio)
        pools.any_folio -= taken
        _keep_pieces(walk, thp, taken)
    return int(split) + len(sync)


def _move(walk: _Walk, folios: np.ndarray) -> None:
    """The folios migrate to the targets they hold (taken from the pools already)."""
    walk.migrated[folios] = True


def _keep_pieces(walk: _Walk, thp: Optional[int], migrated: int) -> None:
    """The pages of a split THP left on the split list (all but the first ``migrated``)."""
    if thp is None:
        return
    order = piece_order(int(walk.folios.size[thp]))[migrated:]
    walk.keep(np.full(len(order), thp, dtype=np.int64), order)
