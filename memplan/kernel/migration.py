"""The inner migrate loop of ``offline_pages()``: ``scan_movable_pages()`` + ``do_migrate_range()``.

The kernel repeats SCAN/MIGRATE until SCAN finds nothing or fails. Because nothing outside
the model changes between rounds, the loop's fixed point is computed directly:

* round 1 SCAN from the range start stops at the first page that is movable (FOUND) or a
  "definitely unmovable" PageOffline page (BUSY, predicate site 2);
* on FOUND, MIGRATE walks from there to the end of the range (site 3) and migrates every
  isolatable folio; folios whose migration cannot succeed (long-term pins, extra references,
  no target) fail the same way in every later round;
* round 2 SCAN restarts at the found pfn: a failed folio before any BUSY page means the write
  loops until a signal; a BUSY page means -EBUSY "unmovable page"; otherwise -ENOENT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, List, Optional, Tuple

import numpy as np

from memplan.core.model import DEFAULT_REFCOUNT, IS_HUGETLB_MIGRATABLE, IS_PINNED, PageKind, Zone
from memplan.core.results import Cause, LogEntry, LogLevel
from memplan.kernel.hugetlb import free_kind_of
from memplan.kernel.pages import RATELIMIT_BURST, RangeView, first_index
from memplan.kernel.semantics import OfflineSemantics

ENOMEM = -12
#: In-use hugetlb kinds SCAN reports (``folio_test_hugetlb_migratable``): their targets may come
#: from the pool.
_HUGETLB_MIGRATABLE_KINDS = tuple(k for k in PageKind if IS_HUGETLB_MIGRATABLE[int(k)])
#: The highest refcount a folio of each kind may have and still migrate: its kind's own
#: references; -1 for long-term pinned kinds, which never migrate.
_MIGRATABLE_REFCOUNT = np.where(IS_PINNED, -1, DEFAULT_REFCOUNT).astype(np.int32)

#: Zonelist order of one node, highest zone first (``build_zonerefs_node()``).
ZONELIST_ORDER = (Zone.MOVABLE, Zone.NORMAL, Zone.DMA32, Zone.DMA)


def target_zones(source_zone: Zone) -> Tuple[Zone, ...]:
    """Zones a migration target for a folio in ``source_zone`` may come from, in zonelist order.

    ``alloc_migration_target()`` (mm/migrate.c) adds ``__GFP_HIGHMEM`` only when the source
    folio sits in ZONE_MOVABLE (or highmem); ``GFP_KERNEL | __GFP_MOVABLE`` without it maps to
    ZONE_NORMAL in ``gfp_zone()``, so a folio leaving a kernel zone can only land in kernel
    zones, one leaving ZONE_MOVABLE anywhere. Both ``do_migrate_range()`` (offlining) and
    ``__alloc_contig_migrate_range()`` (virtio-mem) allocate through it.

    Not modelled: a large folio's target mask gets ``GFP_TRANSHUGE``, which carries
    ``__GFP_HIGHMEM``, so a THP leaving a kernel zone may also land in ZONE_MOVABLE; memplan
    counts only kernel-zone targets for it (conservative when ZONE_MOVABLE has the room).
    """
    if source_zone is Zone.MOVABLE:
        return ZONELIST_ORDER
    return ZONELIST_ORDER[1:]


@dataclass
class MigrationTargets:
    """Where migrated folios can go while this block is isolated.

    ``capacity``: free pages on the allowed nodes outside the block (``None`` = plenty);
    ``pool``: free hugetlb folios of each order outside the block that the pool may hand out
    (``alloc_hugetlb_folio_nodemask()``: only while ``free_huge_pages > resv_huge_pages``).
    """

    capacity: Optional[int] = None
    pool: Dict[int, int] = field(default_factory=dict)


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
    #: pages of folios that migrate successfully
    migrated: np.ndarray
    #: kinds after the migration rounds (migrated pages freed, pool sources back in the pool)
    kinds_after: np.ndarray
    refcount_after: np.ndarray
    #: pages that need a migration target taken from ``capacity``
    demand: int
    log: List[LogEntry]
    #: MIGRATE ran at least once (migrated folios stay migrated whatever the verdict)
    ran: bool = False
    #: pages of hugetlb folios whose target came from the pool (their source returns to the pool)
    pool: Optional[np.ndarray] = None
    #: why SCAN stops (busy) or the loop never ends (loops)
    cause: Optional[Cause] = None


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
class _Folios:
    """What MIGRATE does with every folio SCAN reports (one entry per folio head)."""

    heads: np.ndarray
    refcount: np.ndarray
    #: references migrate_pages() cannot drop, or refcount 0: fails every round
    pinned: np.ndarray
    #: an in-use gigantic hugetlb folio (hstate_is_gigantic())
    gigantic: np.ndarray
    #: the target is a free folio of the pool (alloc_hugetlb_folio_nodemask())
    uses_pool: np.ndarray
    success: np.ndarray
    #: fails because no target can be allocated
    enomem: np.ndarray
    #: pages that need a target taken from ``capacity``
    demand: int


def _folio_fates(view: RangeView, found: np.ndarray, targets: MigrationTargets) -> _Folios:
    """Which found folios migrate, and where to (``do_migrate_range()`` + ``migrate_pages()``)."""
    heads = np.flatnonzero(found & view.first)
    kinds_h = view.kinds[heads]
    geometry = view.geometry
    size_h = np.left_shift(np.int64(1), np.take(geometry.folio_order, kinds_h).astype(np.int64))
    # Long-term pins and any reference beyond the kind's own make migrate_pages() fail
    # (folio_migrate_mapping()'s refcount check) every round; a folio whose refcount is 0
    # is found by SCAN but never isolated (folio_try_get() fails), also every round.
    ref_h = view.refcount[heads]
    pinned = (ref_h > np.take(_MIGRATABLE_REFCOUNT, kinds_h)) | (ref_h == 0)
    uses_pool = np.zeros(len(heads), dtype=bool)
    gigantic = np.zeros(len(heads), dtype=bool)
    for kind in _HUGETLB_MIGRATABLE_KINDS:
        is_kind = kinds_h == kind.value
        if not is_kind.any():
            continue
        order = int(geometry.folio_order[int(kind)])
        mask = is_kind & ~pinned
        uses_pool |= mask & (np.cumsum(mask) <= targets.pool.get(order, 0))
        gigantic |= is_kind & geometry.is_gigantic(order)
    # Gigantic folios cannot be allocated fresh (alloc_migrate_hugetlb_folio() returns NULL).
    needs_capacity = ~pinned & ~uses_pool & ~gigantic
    needed = np.where(needs_capacity, size_h, 0)
    if targets.capacity is None:
        fits = np.ones(len(heads), bool)
        demand = int(needed.sum())
    else:
        demand_curve = np.cumsum(needed)
        fits = demand_curve <= targets.capacity
        demand = int(demand_curve[-1]) if len(demand_curve) else 0
    success = uses_pool | (needs_capacity & fits)
    return _Folios(heads, ref_h, pinned, gigantic, uses_pool, success, ~pinned & ~success, demand)


def _folio_pages(view: RangeView, found: np.ndarray, folios: _Folios) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The folio results as pages (folios are contiguous runs starting at their heads): one code
    per folio (has a found head / migrates / uses the pool), one gather to the pages. Returns
    the pages that migrate, that fail, and that take a pool folio."""
    none = np.zeros(len(view), dtype=bool)
    if len(folios.heads) == 0:
        return none, none, none
    if folios.success.all() and not folios.uses_pool.any() and len(folios.heads) == np.count_nonzero(found):
        return found, none, none  # every found page is its own head (order-0 pages only) and migrates
    folio_id = np.cumsum(view.first, dtype=np.int32) - 1  # int32: bool->int64 cumsum is 10x slower
    code = np.zeros(int(folio_id[-1]) + 1, dtype=np.uint8)
    code[folio_id[folios.heads]] = 1 | (folios.success.view(np.uint8) << 1) | (folios.uses_pool.view(np.uint8) << 2)
    page_code = np.take(code, folio_id) * found
    return (page_code & 3) == 3, (page_code & 3) == 1, (page_code & 5) == 5


def _pages_after(view: RangeView, migrated: np.ndarray, pool_pages: np.ndarray,
                 any_pool: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Kinds and refcounts once migrated folios are freed and pool-backed hugetlb sources went
    back to the pool (free folios)."""
    # PageKind.FREE is 0: multiplying by "stays" frees the migrated pages (cheaper than np.where).
    kinds_after = view.kinds * ~(migrated & ~pool_pages if any_pool else migrated)
    if any_pool:
        freed_pool = migrated & pool_pages
        for kind in _HUGETLB_MIGRATABLE_KINDS:
            kinds_after[freed_pool & (view.kinds == kind.value)] = free_kind_of(kind)
    refcount_after = view.refcount.copy()
    np.copyto(refcount_after, 0, where=migrated)
    return kinds_after, refcount_after


def _round_one_log(view: RangeView, semantics: OfflineSemantics, h: int, found: np.ndarray, folios: _Folios,
                   repeats: bool) -> List[LogEntry]:
    """What round 1 of MIGRATE from ``h`` prints: ``failed to isolate pfn`` for every page it
    cannot isolate, then ``migrating pfn ... failed ret:%d`` for every folio migrate_pages()
    gives back, each with its dump_page. One ``__ratelimit(&migrate_rs)`` call guards each
    pr_warn + dump_page pair; ``migrate_rs`` is one static ``DEFINE_RATELIMIT_STATE`` of
    do_migrate_range() (5 s, burst 10; ML-NEW), shared by both call sites and every offline
    attempt, so every such entry is ``ratelimited``: another block may have used the burst up."""
    tail = slice(h, None)  # do_migrate_range() walks from the found pfn to the end
    not_isolatable = view.first[tail] & ~migrate_leaves(view, semantics, tail) & ~found[tail]
    events: List[List[LogEntry]] = []
    for i in np.flatnonzero(not_isolatable):
        pfn = view.pfn + h + int(i)
        events.append([LogEntry(LogLevel.PR_WARN, f"failed to isolate pfn {pfn:x}", pfn, "do_migrate_range",
                                1, repeats, True),
                       LogEntry(LogLevel.DUMP_PAGE, "isolation failed", pfn, "do_migrate_range", 1, repeats, True)])
        if len(events) >= RATELIMIT_BURST:
            break
    failed_heads = folios.heads[~folios.success & (folios.refcount > 0)]  # refcount 0: never reach migrate_pages()
    if len(failed_heads) and len(events) < RATELIMIT_BURST:
        ret = ENOMEM if folios.enomem.any() else int(len(failed_heads))
        for i in failed_heads[: RATELIMIT_BURST - len(events)]:
            pfn = view.pfn + int(i)
            events.append([LogEntry(LogLevel.PR_WARN, f"migrating pfn {pfn:x} failed ret:{ret}", pfn,
                                    "do_migrate_range", 1, repeats, True),
                           LogEntry(LogLevel.DUMP_PAGE, "migration failure", pfn, "do_migrate_range", 1, repeats,
                                    True)])
    return [e for pair in events for e in pair]


def migrate(view: RangeView, semantics: OfflineSemantics, targets: MigrationTargets) -> MigrationOutcome:
    """The SCAN/MIGRATE loop's fixed point (see the module docstring)."""
    found = found_pages(view)
    busy = busy_pages(view, semantics)
    folios = _folio_fates(view, found, targets)
    migrated, failed, pool_pages = _folio_pages(view, found, folios)
    demand = folios.demand
    h = first_index(found | busy)
    if h is None:
        return MigrationOutcome(ScanResult.NONE_LEFT, None, migrated, view.kinds, view.refcount, demand, [])
    if busy[h]:
        return MigrationOutcome(ScanResult.BUSY, h, migrated, view.kinds, view.refcount, demand, [],
                                cause=Cause.PAGE_OFFLINE_BUSY)
    kinds_after, refcount_after = _pages_after(view, migrated, pool_pages, bool(folios.uses_pool.any()))
    # Round 2 SCAN from h; messages repeat every round while the write loops.
    again = first_index((failed & found) | busy, h)
    repeats = again is not None and not busy[again]
    log = _round_one_log(view, semantics, h, found, folios, repeats)
    pooled = migrated & pool_pages
    if again is None:
        return MigrationOutcome(ScanResult.NONE_LEFT, None, migrated, kinds_after, refcount_after, demand, log, True,
                                pooled)
    if not repeats:
        return MigrationOutcome(ScanResult.BUSY, again, migrated, kinds_after, refcount_after, demand, log, True,
                                pooled, Cause.PAGE_OFFLINE_BUSY)
    j = max(int(np.searchsorted(folios.heads, again, side="right")) - 1, 0)  # the folio SCAN keeps finding
    cause = _loop_cause(int(folios.refcount[j]), bool(folios.pinned[j]), bool(folios.gigantic[j]))
    return MigrationOutcome(ScanResult.LOOPS, again, migrated, kinds_after, refcount_after, demand, log, True,
                            pooled, cause)
