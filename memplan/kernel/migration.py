"""The inner migrate loop of ``offline_pages()``: ``scan_movable_pages()`` + ``do_migrate_range()``.

The kernel repeats SCAN/MIGRATE until SCAN finds nothing or fails. Because nothing outside
the model changes between rounds, the loop's fixed point is computed directly:

* round 1 SCAN from the range start stops at the first page that is movable (FOUND) or a
  "definitely unmovable" PageOffline page (BUSY, predicate site 2);
* on FOUND, MIGRATE walks from there to the end of the range (site 3), isolates every folio it
  can and hands the list to ``migrate_pages()`` (``memplan.kernel.migrate_pages``): hugetlb
  folios first, then the rest from the highest pfn down, until targets run out (-ENOMEM ends
  it; a THP without a target is split and its pages migrated one by one);
* the next SCAN restarts at the found pfn: a BUSY page first means -EBUSY "unmovable page",
  nothing found -ENOENT. A folio left over means another MIGRATE round: when the last one ran
  short of targets its successor may get further (the list changed, so its batches are cut
  elsewhere and stuck folios hold targets at other moments); a round that changes nothing
  means the write loops until a signal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from memplan.core.arrays import AnyArray, BoolArray, KindArray
from memplan.core.model import DEFAULT_REFCOUNT, IS_HUGETLB, IS_PINNED, PageKind, Zone
from memplan.core.results import Cause, LogEntry, LogLevel
from memplan.kernel.hugetlb import free_kind_of
from memplan.kernel.migrate_pages import (
    ENOMEM,
    ZONELIST_ORDER,
    Capacity,
    Migrated,
    Pools,
    SourceFolios,
    migrate_pages,
    piece_order,
    target_zones,
    targets_suffice,
)
from memplan.kernel.pages import RATELIMIT_BURST, RangeView, first_index
from memplan.kernel.semantics import OfflineSemantics

__all__ = [
    "ENOMEM",
    "ZONELIST_ORDER",
    "Capacity",
    "allowed_nodes",
    "MigrationOutcome",
    "MigrationTargets",
    "ScanResult",
    "busy_pages",
    "found_pages",
    "migrate",
    "migrate_leaves",
    "target_zones",
    "targets_suffice",
]

#: The highest refcount a folio of each kind may have and still migrate: its kind's own
#: references; -1 for long-term pinned kinds, which never migrate.
_MIGRATABLE_REFCOUNT = np.where(IS_PINNED, -1, DEFAULT_REFCOUNT).astype(np.int32)
_ANON = PageKind.ANON.value


@dataclass(frozen=True)
class MigrationTargets:
    """Where migrated folios can go while this block is isolated.

    ``capacity``: free pages outside the block on the allowed nodes by zone class (``None``:
    plenty); ``pool``: free hugetlb folios of each order ``alloc_hugetlb_folio_nodemask()`` may
    dequeue for this block (only while ``free_huge_pages > resv_huge_pages``).
    """

    capacity: Optional[Capacity] = None
    pool: Mapping[int, int] = field(default_factory=dict)


class ScanResult(str, Enum):
    """How the SCAN/MIGRATE loop ends."""

    #: scan_movable_pages() returns -ENOENT: nothing left to migrate
    NONE_LEFT = "none_left"
    #: scan_movable_pages() returns -EBUSY ("unmovable page")
    BUSY = "busy"
    #: SCAN keeps finding a folio MIGRATE cannot move: the loop runs until a signal
    LOOPS = "loops"


@dataclass
class MigrationOutcome:
    result: ScanResult
    #: index in the range of the page SCAN stops at (busy) or keeps finding (loops)
    index: Optional[int]
    #: pages of folios that migrate successfully, over every round
    migrated: BoolArray
    #: kinds after the migration rounds (migrated pages freed, pool sources back in the pool,
    #: split THPs order-0 pages)
    kinds_after: KindArray
    refcount_after: AnyArray
    #: pages of the folios on the source list that need a target outside the hugetlb pool (a
    #: stuck folio every time it is tried); ``large_demand`` of them belong to large folios
    demand: int
    log: List[LogEntry]
    #: MIGRATE ran at least once (migrated folios stay migrated whatever the verdict)
    ran: bool = False
    #: pages of hugetlb folios whose target came from the pool (their source returns to the pool)
    pool: Optional[BoolArray] = None
    #: why SCAN stops (busy) or the loop never ends (loops)
    cause: Optional[Cause] = None
    #: pages of large folios on the list that need a target outside the hugetlb pool
    large_demand: int = 0
    #: pages of THPs migrate_pages() split for want of a target (order-0 pages from then on)
    split: Optional[BoolArray] = None
    #: hugetlb folios on the source list per hstate order (each takes at most one pool folio
    #: at a time, so a pool of that many never runs out)
    hugetlb_folios: Optional[Dict[int, int]] = None
    #: pages the first MIGRATE round migrates (the page counts' ``migrated``; ``migrated`` holds
    #: every round's)
    counted: Optional[BoolArray] = None


def allowed_nodes(node_present_pages: Mapping[int, int], node: int) -> List[int]:
    """``do_migrate_range()``'s nodemask: ``node_states[N_MEMORY]`` (nodes with present pages)
    without the source node, unless that leaves none ("we are offlining a part of the only
    existing node")."""
    others = sorted(n for n, pages in node_present_pages.items() if pages > 0 and n != node)
    return others or [node]


def found_pages(view: RangeView) -> np.ndarray:
    """Pages SCAN reports as movable: LRU, movable_ops (checked before PageOffline), and
    in-use hugetlb folios with the migratable flag."""
    if not view.maybe_hugetlb_migratable:
        return view.lru_or_movable_ops
    return view.lru_or_movable_ops | view.hugetlb_in_use_migratable


def busy_pages(view: RangeView, semantics: OfflineSemantics) -> np.ndarray:
    """PageOffline pages without movable_ops that make SCAN fail (site 2)."""
    offline = view.offline & ~view.movable_ops
    if not offline.any():
        return offline
    return offline & semantics.scan_busy(view.refcount, view.skippable)


def migrate_leaves(view: RangeView, semantics: OfflineSemantics, tail: slice = slice(None)) -> np.ndarray:
    """Pages ``do_migrate_range()`` steps over without trying to isolate them: skippable
    PageOffline pages (site 3), pages ``folio_try_get()`` fails on (refcount 0) and hwpoisoned
    pages (``unmap_poisoned_folio()``, never migrated)."""
    return ((view.offline[tail] & semantics.migrate_skips(view.skippable[tail])) | (view.refcount[tail] == 0)
            | view.hwpoison[tail])


def _loop_cause(ref: int, pinned: bool, gigantic: bool) -> Cause:
    """Why MIGRATE fails on the folio SCAN keeps finding, every round."""
    if ref == 0:
        return Cause.FOLIO_REFCOUNT_ZERO  # folio_try_get() fails: never isolated
    if pinned:
        return Cause.EXTRA_REFERENCES  # folio_migrate_mapping()'s refcount check
    if gigantic:
        return Cause.GIGANTIC_NO_POOL_FOLIO  # alloc_migrate_hugetlb_folio(): hstate_is_gigantic()
    return Cause.NO_MIGRATION_TARGET  # the target allocation fails: -ENOMEM


@dataclass
class _Source:
    """The folios SCAN reports, ascending, and the source list ``do_migrate_range()`` builds."""

    #: index of each folio's first page in the range
    heads: np.ndarray
    refcount: AnyArray
    #: folio_try_get() succeeds (refcount > 0): the folio is isolated onto the list
    on_list: np.ndarray
    #: references migrate_pages() cannot drop
    stuck: BoolArray
    #: an in-use gigantic hugetlb folio (hstate_is_gigantic())
    gigantic: np.ndarray
    #: folio_pfn(): the head page's pfn (in an earlier block when the folio began there)
    pfn: np.ndarray
    #: the folios on the list, as migrate_pages() takes them
    folios: SourceFolios


def _source(view: RangeView, found: np.ndarray) -> _Source:
    """The found folios (``isolate_folio_to_list()``, ``folio_isolate_hugetlb()``)."""
    heads = np.flatnonzero(found & view.first)
    kinds = view.kinds[heads]
    geo = view.geometry
    order = np.take(geo.folio_order, kinds).astype(np.int64)
    size = np.left_shift(np.int64(1), order)
    ref = view.refcount[heads]
    # Long-term pins and any reference beyond the kind's own make migrate_pages() fail
    # (folio_migrate_mapping()'s refcount check) every time.
    stuck = ref > np.take(_MIGRATABLE_REFCOUNT, kinds)
    hugetlb = np.take(IS_HUGETLB, kinds)
    gigantic = hugetlb & geo.gigantic(order)
    pfn = view.pfn + heads
    on = ref > 0
    # try_to_migrate() cannot unmap a long-term pinned (order-0, anon-exclusive) page.
    unmap_stuck = np.take(IS_PINNED, kinds) & (order == 0)
    folios = SourceFolios(size[on], hugetlb[on], stuck[on], unmap_stuck[on], order[on], gigantic[on])
    return _Source(heads, ref, on, stuck, gigantic, pfn - (pfn & (size - 1)), folios)


def _pages(view: RangeView, found: np.ndarray, src: _Source,
           moved: Migrated) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """The folio results as pages: migrated, taken from the pool, split. Folios are contiguous
    runs starting at their heads: one code per folio, one gather to the pages."""
    n = len(view)
    migrated = np.zeros(len(src.heads), dtype=bool)
    migrated[src.on_list] = moved.migrated
    pooled = np.zeros(len(src.heads), dtype=bool)
    pooled[src.on_list] = moved.pooled
    split_folios = np.flatnonzero(moved.pieces >= 0)
    none = np.zeros(n, dtype=bool)
    if migrated.all() and not pooled.any() and not len(split_folios) and len(src.heads) == np.count_nonzero(found):
        return found, none, None  # every found page is its own folio and migrates
    folio_id = np.cumsum(view.first, dtype=np.int32) - 1  # int32: bool->int64 cumsum is 10x slower
    code = np.zeros(int(folio_id[-1]) + 1, dtype=np.uint8)
    code[folio_id[src.heads]] = 1 | (migrated.view(np.uint8) << 1) | (pooled.view(np.uint8) << 2)
    page_code = np.take(code, folio_id) * found
    pages = (page_code & 3) == 3
    split = None
    if len(split_folios):
        split = none.copy()
        head_pfn = src.pfn[src.on_list]
        for i in split_folios.tolist():
            index = head_pfn[i] - view.pfn + piece_order(int(src.folios.size[i]))
            split[index] = True
            pages[index[:int(moved.pieces[i])]] = True
    return pages, (page_code & 5) == 5, split


def _pages_after(view: RangeView, migrated: BoolArray, pool_pages: np.ndarray, any_pool: bool,
                 split: Optional[BoolArray]) -> Tuple[np.ndarray, np.ndarray]:
    """Kinds and refcounts once migrated folios are freed, pool-backed hugetlb sources went back
    to the pool (free folios) and split THPs became order-0 pages."""
    # PageKind.FREE is 0: multiplying by "stays" frees the migrated pages (cheaper than np.where).
    kinds_after = view.kinds * ~(migrated & ~pool_pages if any_pool else migrated)
    if any_pool:
        freed_pool = migrated & pool_pages
        for kind in np.unique(view.kinds[freed_pool]).tolist():
            kinds_after[freed_pool & (view.kinds == kind)] = free_kind_of(PageKind(kind))
    if split is not None:
        kinds_after[split & ~migrated] = _ANON
    refcount_after = view.refcount.copy()
    np.copyto(refcount_after, 0, where=migrated)
    return kinds_after, refcount_after


def _round_one_log(view: RangeView, semantics: OfflineSemantics, h: int, found: np.ndarray, src: _Source,
                   moved: Migrated, repeats: bool) -> List[LogEntry]:
    """What round 1 of MIGRATE from ``h`` prints: ``failed to isolate pfn`` for every page it
    cannot isolate, then ``migrating pfn ... failed ret:%d`` for every folio migrate_pages()
    leaves on the list (``folio_pfn()``, in list order), each with its dump_page. One
    ``__ratelimit(&migrate_rs)`` call guards each pr_warn + dump_page pair; ``migrate_rs`` is one
    static ``DEFINE_RATELIMIT_STATE`` of do_migrate_range() (5 s, burst 10; ML-NEW), shared by
    both call sites and every offline attempt, so every such entry is ``ratelimited``: another
    block may have used the burst up."""
    tail = slice(h, None)  # do_migrate_range() walks from the found pfn to the end
    not_isolatable = view.first[tail] & ~migrate_leaves(view, semantics, tail) & ~found[tail]
    events: List[Tuple[int, str, str]] = [(view.pfn + h + int(i), f"failed to isolate pfn {view.pfn + h + int(i):x}",
                                           "isolation failed")
                                          for i in np.flatnonzero(not_isolatable)[:RATELIMIT_BURST]]
    room = RATELIMIT_BURST - len(events)
    if moved.ret and room > 0:
        head_pfn = src.pfn[src.on_list][moved.left_folio[:room]]
        piece = moved.left_piece[:room]
        for pfn in (head_pfn + np.maximum(piece, 0)).tolist():
            events.append((pfn, f"migrating pfn {pfn:x} failed ret:{moved.ret}", "migration failure"))
    return [LogEntry(level, text, pfn, "do_migrate_range", 1, repeats, True)
            for pfn, warning, dump in events
            for level, text in ((LogLevel.PR_WARN, warning), (LogLevel.DUMP_PAGE, dump))]


@dataclass
class _Round:
    """One ``do_migrate_range()``: the folios SCAN reports on the pages as they are, and what
    ``migrate_pages()`` makes of them, as pages."""

    view: RangeView
    found: np.ndarray
    src: _Source
    moved: Migrated
    migrated: BoolArray
    pooled: np.ndarray
    split: Optional[BoolArray]

    @property
    def short(self) -> bool:
        """A target allocation failed (-ENOMEM, or a THP split): another round, after the list
        changed, may find targets this one did not."""
        return self.moved.ret < 0 or bool((self.moved.pieces >= 0).any())


def _round(view: RangeView, found: np.ndarray, pools: Pools, pool: Dict[int, int]) -> _Round:
    src = _source(view, found)
    moved = migrate_pages(src.folios, pools, pool, 1 << view.geometry.pmd_order)
    migrated, pooled, split = _pages(view, found, src, moved)
    return _Round(view, found, src, moved, migrated, pooled & migrated, split)


def migrate(view: RangeView, semantics: OfflineSemantics, targets: MigrationTargets, zone: Zone,
            headroom: Mapping[int, int]) -> MigrationOutcome:
    """The SCAN/MIGRATE loop's fixed point (see the module docstring) for a block in ``zone``;
    ``headroom``: ``free_huge_pages - resv_huge_pages`` per hstate order (a pool folio is only
    dequeued while it is positive)."""
    found = found_pages(view)
    busy = busy_pages(view, semantics)
    h = first_index(found | busy)
    if h is None:
        return MigrationOutcome(ScanResult.NONE_LEFT, None, found, view.kinds, view.refcount, 0, [])
    pools = Pools(targets.capacity, zone)
    hugetlb_folios = _hugetlb_folios(found & view.first & view.hugetlb, view)
    pool = {o: targets.pool.get(o, 0) if headroom.get(o, 0) > 0 else 0 for o in hugetlb_folios or ()}
    first = _round(view, found, pools, pool)
    folios = first.src.folios
    small = ~folios.hugetlb & (folios.size == 1)
    large_demand = int(folios.size[~folios.hugetlb & ~small].sum() + folios.size[first.moved.fresh].sum())
    outcome = MigrationOutcome(ScanResult.BUSY, h, first.migrated, view.kinds, view.refcount,
                               int(np.count_nonzero(small)) + large_demand, [], cause=Cause.PAGE_OFFLINE_BUSY,
                               large_demand=large_demand, hugetlb_folios=hugetlb_folios, counted=first.migrated)
    if busy[h]:
        return outcome  # SCAN stops before MIGRATE runs (the counts are the first round's all the same)
    last, again = _later_rounds(first, busy, h, pools, pool, outcome)
    repeats = again is not None and not busy[again]
    outcome.log = _round_one_log(view, semantics, h, found, first.src, first.moved, repeats)
    outcome.ran = True
    if again is None:
        outcome.result, outcome.index, outcome.cause = ScanResult.NONE_LEFT, None, None
    elif not repeats:
        outcome.index = again
    else:
        src = last.src
        j = max(int(np.searchsorted(src.heads, again, side="right")) - 1, 0)  # the folio SCAN keeps finding
        outcome.result, outcome.index = ScanResult.LOOPS, again
        outcome.cause = _loop_cause(int(src.refcount[j]), bool(src.stuck[j]), bool(src.gigantic[j]))
    return outcome


def _hugetlb_folios(heads: np.ndarray, view: RangeView) -> Optional[Dict[int, int]]:
    """In-use migratable hugetlb folios per hstate order (``None``: none)."""
    if not heads.any():
        return None
    orders, counts = np.unique(np.take(view.geometry.folio_order, view.kinds[heads]), return_counts=True)
    return dict(zip(orders.tolist(), counts.tolist()))


def _later_rounds(first: _Round, busy: BoolArray, h: int, pools: Pools, pool: Dict[int, int],
                  outcome: MigrationOutcome) -> Tuple[_Round, Optional[int]]:
    """SCAN from the found pfn and MIGRATE again while a round ran short of targets and changed
    something (its list changed: a later round may cut its batches elsewhere and find targets
    for folios the earlier one did not get to). Fills in ``outcome``'s pages after the rounds;
    returns the last round and where SCAN ends (``None``: nothing found)."""
    now = first
    pages = first.migrated.copy()
    pooled = first.pooled.copy()
    split = first.split
    kinds, refcount = _pages_after(first.view, first.migrated, first.pooled, bool(first.pooled.any()), first.split)
    again = first_index((first.found & ~first.migrated) | busy, h)
    while again is not None and not busy[again] and now.short:
        view = first.view.with_pages(kinds, refcount)
        found = found_pages(view)
        later = _round(view, found, pools, pool)
        if not later.migrated.any() and later.split is None:
            break  # nothing changed: SCAN finds the same folio every round
        now = later
        kinds, refcount = _pages_after(view, later.migrated, later.pooled, bool(later.pooled.any()), later.split)
        pages |= later.migrated
        pooled |= later.pooled
        if later.split is not None:
            split = later.split if split is None else split | later.split
        again = first_index((found & ~later.migrated) | busy, again)
    outcome.migrated, outcome.pool, outcome.split = pages, pooled, split
    outcome.kinds_after, outcome.refcount_after = kinds, refcount
    return now, again
