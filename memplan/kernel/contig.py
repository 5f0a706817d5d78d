"""``alloc_contig_range()`` as virtio-mem uses it to fake-offline plugged memory (spec §4.2).

Mirrors ``alloc_contig_range_noprof()`` / ``alloc_contig_frozen_range_noprof()`` and
``__alloc_contig_migrate_range()`` (mm/page_alloc.c, linux-mm @ 6e2201b1 = MM-PA),
``page_is_unmovable()`` / ``start_isolate_page_range()`` / ``test_pages_isolated()`` in
``PB_ISOLATE_MODE_OTHER`` (mm/page_isolation.c, torvalds/linux @ c17ee635) and
``isolate_or_dissolve_huge_folio()`` (mm/hugetlb.c). The caller (virtio-mem's
``virtio_mem_fake_offline()``) retries up to five times in ZONE_MOVABLE, once elsewhere.

The differences from memory offlining that decide virtio-mem's unplug:

* isolation runs in ``PB_ISOLATE_MODE_OTHER``: no HWPoison and no PageOffline exemption, so
  in kernel zones any such page with a reference fails isolation; CMA pageblocks and
  pageblocks someone else isolated fail too; nothing is dumped;
* only folios that can be isolated are migrated (LRU without extra references, movable_ops,
  migratable hugetlb); a 1 GiB hugetlb folio makes ``isolate_or_dissolve_huge_folio()``
  return ``-ENOMEM`` ("bailing out right away"); a free 2 MiB hugetlb folio is replaced by a
  fresh one on the same node (``alloc_and_dissolve_hugetlb_folio()``, ``__GFP_THISNODE``);
  a target allocation that fails makes ``migrate_pages()`` return ``-ENOMEM``, which ends
  the call at once;
* ``test_pages_isolated(..., PB_ISOLATE_MODE_OTHER)`` accepts only buddy pages: every page
  left in use, HWPoison, PageOffline (whatever its refcount) or otherwise makes it ``-EBUSY``.

There is no semantics parameter: the PG_offline_skippable patch only touches the
``PB_ISOLATE_MODE_MEM_OFFLINE`` paths, so both variants allocate alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional, Protocol, Tuple

import numpy as np

from memplan.core.arrays import AnyArray, BoolArray, IntArray, KindArray
from memplan.core.geometry import Geometry
from memplan.core.model import DEFAULT_REFCOUNT, IS_PINNED, Errno, PageKind
from memplan.kernel.hugetlb import free_kind_of
from memplan.kernel.isolation import isolate_range, unmovable_pages
from memplan.kernel.pages import RangeView, first_index

#: ``virtio_mem_fake_offline()``: attempts in ZONE_MOVABLE; other zones get one.
MOVABLE_ATTEMPTS = 5


class ContigStep(str, Enum):
    """Where ``alloc_contig_range()`` gave up."""

    ISOLATE = "isolate"
    MIGRATE = "migrate"
    TEST_ISOLATED = "test_isolated"


class Request(int, Enum):
    """What a folio of the range needs from the rest of the machine."""

    #: migrate an in-use folio (a hugetlb folio takes a pool folio if the pool allows, else a fresh one)
    MIGRATE = 0
    #: replace a free 2 MiB hugetlb folio by a fresh free one on the same node
    REPLACE = 1


class ContigTargets(Protocol):
    """Where migrated folios go (the caller owns the machine and places them)."""

    def allocate(self, pfns: IntArray, kinds: KindArray, requests: np.ndarray) -> Tuple[int, np.ndarray]:
        """Serve the requests in order until one cannot be served.

        Returns how many were served and, per served request, whether a hugetlb folio took
        a free folio of the pool as its target.
        """


@dataclass(frozen=True, eq=False)
class ContigResult:
    """One ``virtio_mem_fake_offline()`` over ``[start_pfn, start_pfn + len)``."""

    #: ``None`` on success (the range is now allocated: virtio-mem marks it fake-offline)
    errno: Optional[Errno]
    step: Optional[ContigStep]
    #: index in the range of the page that made it fail
    culprit: Optional[int]
    #: ``alloc_contig_range()`` calls made (all fail alike but the first migrates)
    attempts: int
    #: pages whose folio left the range (migrated, or a free hugetlb folio replaced): free now
    vacated: BoolArray
    #: pages of hugetlb folios that migrated to a pool folio and whose source stayed in the pool
    #: as a free folio (its replacement failed): free hugetlb pages now
    pooled: np.ndarray


def unmovable_pages_other(view: RangeView, zone_movable: bool) -> np.ndarray:
    """``page_is_unmovable(zone, page, PB_ISOLATE_MODE_OTHER)`` for every page.

    Rule order as in the kernel: PageReserved -> ZONE_MOVABLE shortcut -> hugetlb/compound ->
    refcount 0 -> (the HWPoison and PageOffline exemptions apply to MEM_OFFLINE only) ->
    LRU/movable_ops -> unmovable.
    """
    return unmovable_pages(view, zone_movable, None)


def alloc_contig_range(kinds: KindArray, refcount: AnyArray, start_pfn: int, zone_movable: bool,
                       cma: BoolArray, isolated: BoolArray, geometry: Geometry,
                       targets: ContigTargets) -> ContigResult:
    """Predict ``virtio_mem_fake_offline(vm, start_pfn, len(kinds))``."""
    n = len(kinds)
    pageblock_pages = geometry.pageblock_pages
    view = RangeView(start_pfn, kinds, refcount.astype(np.int64), np.zeros(n, dtype=bool), geometry)
    none = np.zeros(n, dtype=bool)
    attempts_on_busy = MOVABLE_ATTEMPTS if zone_movable else 1

    # start_isolate_page_range(start, end, PB_ISOLATE_MODE_OTHER): deterministic, so every attempt fails alike.
    failure = isolate_range(unmovable_pages_other(view, zone_movable), pageblock_pages, cma, isolated)
    if failure is not None:
        return ContigResult(Errno.EBUSY, ContigStep.ISOLATE, failure.index, attempts_on_busy, none, none)

    # __alloc_contig_migrate_range() + isolate_migratepages_range(): folios in pfn order.
    first = view.folio_first()
    lru, movable_ops, hugetlb = view.lru, view.movable_ops, view.hugetlb
    heads = np.flatnonzero(first & (lru | movable_ops | hugetlb))
    kinds_h = kinds[heads]
    ref_h = view.refcount[heads]
    order_h = np.take(geometry.folio_order, kinds_h)
    # hstate_is_gigantic(): isolate_or_dissolve_huge_folio() bails out with -ENOMEM
    gigantic = hugetlb[heads] & geometry.gigantic(order_h)
    free_huge = hugetlb[heads] & (ref_h == 0) & ~gigantic
    # Migration is only attempted for folios that can be isolated and whose references are
    # all accounted for; pinned pages are not even isolated (isolate_migratepages_block()'s
    # "migration will fail if an anonymous page is pinned" check), extra references make
    # migrate_pages() fail until the 5-try limit; refcount 0 means folio_try_get() fails.
    movable = (lru[heads] | movable_ops[heads]) & ~IS_PINNED[kinds_h] & (ref_h == DEFAULT_REFCOUNT[kinds_h])
    migratable_huge = (kinds_h == PageKind.HUGETLB) & (ref_h > 0)
    wants = movable | migratable_huge | free_huge
    stop = first_index(gigantic)
    cut = len(heads) if stop is None else stop
    served_heads = heads[:cut][wants[:cut]]
    requests = np.where(free_huge[:cut][wants[:cut]], int(Request.REPLACE), int(Request.MIGRATE)).astype(np.int8)
    done, pool = targets.allocate(start_pfn + served_heads, kinds[served_heads], requests)
    pool = np.asarray(pool, dtype=bool)

    # Expand the served folios to their pages.
    folio_id = np.cumsum(first, dtype=np.int32) - 1  # int32: bool->int64 cumsum is 10x slower
    vacated_folio = np.zeros(int(folio_id[-1]) + 1 if n else 0, dtype=bool)
    pool_folio = np.zeros_like(vacated_folio)
    vacated_folio[folio_id[served_heads[:done]]] = True
    pool_folio[folio_id[served_heads[:done]]] = pool[:done]
    vacated = vacated_folio[folio_id]
    pool_migrated = pool_folio[folio_id]

    if done < len(served_heads):
        # No target: migrate_pages() (or the hugetlb replacement) returns -ENOMEM at once.
        return ContigResult(Errno.ENOMEM, ContigStep.MIGRATE, int(served_heads[done]), 1, vacated & ~pool_migrated,
                            pool_migrated)
    if stop is not None:
        return ContigResult(Errno.ENOMEM, ContigStep.MIGRATE, int(heads[stop]), 1, vacated & ~pool_migrated,
                            pool_migrated)
    # replace_free_hugepage_folios(): sources that went back to the pool are replaced by
    # fresh folios on the same node, like free folios found while isolating.
    returned = np.flatnonzero(first & pool_migrated)
    if len(returned):
        again, _ = targets.allocate(start_pfn + returned,
                                    np.array([int(free_kind_of(PageKind(int(k)))) for k in kinds[returned]],
                                             dtype=np.uint8),
                                    np.full(len(returned), int(Request.REPLACE), dtype=np.int8))
        if again < len(returned):
            left = np.zeros(n, dtype=bool)
            for head in returned[again:]:
                left[head:head + (1 << view.order_at(int(head)))] = True
            return ContigResult(Errno.ENOMEM, ContigStep.MIGRATE, int(returned[again]), 1, vacated & ~left, left)

    # test_pages_isolated(PB_ISOLATE_MODE_OTHER): buddy pages only.
    stuck = first_index(~(view.buddy | vacated))
    if stuck is not None:
        return ContigResult(Errno.EBUSY, ContigStep.TEST_ISOLATED, stuck, attempts_on_busy, vacated, none)
    return ContigResult(None, None, None, 1, vacated, none)
