"""Pageblock isolation for memory offlining (``mm/page_isolation.c``, ML-NEW).

``page_is_unmovable()`` / ``has_unmovable_pages()`` / ``set_migratetype_isolate()`` /
``start_isolate_page_range()`` in ``PB_ISOLATE_MODE_MEM_OFFLINE``. The PageOffline rule
(predicate site 1) comes from the semantics.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import List, Optional, Tuple

import numpy as np

from memplan.core.arrays import BoolArray
from memplan.core.geometry import Geometry
from memplan.core.model import DEFAULT_REFCOUNT, PageKind
from memplan.core.results import Cause, LogEntry, LogLevel
from memplan.kernel.pages import RangeView, first_index
from memplan.kernel.semantics import OfflineSemantics


def unmovable_pages(view: RangeView, zone_movable: bool, semantics: Optional[OfflineSemantics],
                    hugepage_migration: bool = True) -> np.ndarray:
    """``page_is_unmovable(zone, page, mode)`` for every page: ``PB_ISOLATE_MODE_MEM_OFFLINE``
    with the semantics' PageOffline rule (site 1), ``PB_ISOLATE_MODE_OTHER`` (``alloc_contig_range()``)
    without a semantics.

    Rule order as in the kernel: PageReserved (every zone) -> ZONE_MOVABLE shortcut ->
    hugetlb/compound -> refcount 0 -> HWPoison and PageOffline (MEM_OFFLINE mode only) ->
    LRU/movable_ops.
    """
    unmovable = view.reserved.copy()
    if zone_movable:
        return unmovable
    compound = view.compound
    hugetlb = view.hugetlb
    lru, movable_ops = view.lru, view.movable_ops
    # Hugetlb folios are movable iff the hstate supports migration: x86-64 selects
    # CONFIG_ARCH_ENABLE_HUGEPAGE_MIGRATION and the generic arch_hugetlb_migration_supported()
    # (include/linux/hugetlb.h) accepts PMD, PUD and PGDIR sizes, so 2 MiB and 1 GiB both are.
    # Other compound folios are movable only if they are on the LRU.
    unmovable |= compound & (hugetlb if not hugepage_migration else np.zeros_like(hugetlb))
    unmovable |= compound & ~hugetlb & ~lru
    considered = ~compound & ~view.reserved & (view.refcount != 0)
    if semantics is not None:  # PB_ISOLATE_MODE_MEM_OFFLINE
        considered &= ~view.hwpoison & (~view.offline | ~semantics.isolation_treats_as_movable(view.skippable))
    unmovable |= considered & ~(lru | movable_ops)
    return unmovable


@lru_cache(maxsize=64)
def unmovable_kinds(zone_movable: bool, semantics: OfflineSemantics, skippable: bool,
                    geometry: Geometry) -> np.ndarray:
    """``unmovable_pages()`` for one page of every kind at its default refcount, as a table
    indexed by the kind byte (``skippable``: the block's fake-offline pages carry
    PG_offline_skippable). Block-level shortcuts look pages up here instead of restating the
    rule."""
    kinds = np.array([int(k) for k in PageKind], dtype=np.uint8)
    view = RangeView(0, kinds, DEFAULT_REFCOUNT[kinds].astype(np.int32),
                     (kinds == PageKind.FAKE_OFFLINE.value) & skippable, geometry)
    table = np.zeros(256, dtype=bool)
    table[kinds] = unmovable_pages(view, zone_movable, semantics)
    table.setflags(write=False)
    return table


@dataclass(frozen=True)
class IsolationFailure:
    """Why ``start_isolate_page_range()`` returned -EBUSY."""

    pageblock: int
    #: index (in the range) of the page the kernel reports or stops at
    index: int
    #: ``dump_page(page, "unmovable page")`` is printed (not for already-isolated pageblocks)
    dumped: bool
    #: ``Cause.PAGEBLOCK_ISOLATED``, ``Cause.CMA_PAGEBLOCK`` or ``Cause.UNMOVABLE_PAGE``
    cause: Cause

    def log(self, range_pfn: int) -> Tuple[LogEntry, ...]:
        """What ``set_migratetype_isolate()`` prints for this failure (range starting at ``range_pfn``)."""
        if not self.dumped:
            return ()
        return (LogEntry(LogLevel.DUMP_PAGE, "unmovable page", range_pfn + self.index, "set_migratetype_isolate"),)


def isolation_order(pageblocks: int) -> List[int]:
    """First pageblock, last pageblock, then the middle ones ascending."""
    if pageblocks <= 1:
        return [0][:pageblocks]
    return [0, pageblocks - 1] + list(range(1, pageblocks - 1))


def _isolation_spans(pageblocks: int) -> Tuple[Tuple[int, int], ...]:
    """``isolation_order()`` as runs of pageblocks [lo, hi) walked in ascending order."""
    if pageblocks <= 2:
        return tuple((pb, pb + 1) for pb in isolation_order(pageblocks))
    return ((0, 1), (pageblocks - 1, pageblocks), (1, pageblocks - 1))


def isolate_range(unmovable: BoolArray, pageblock_pages: int, cma: BoolArray,
                  isolated: BoolArray) -> Optional[IsolationFailure]:
    """``start_isolate_page_range()``: the first failing pageblock in isolation order, if any.

    Within a pageblock ``set_migratetype_isolate()`` checks "already isolated" first
    (``-EBUSY``, no dump), then CMA (reports the pageblock's first page), then the lowest-pfn
    unmovable page (``has_unmovable_pages()`` walks upward).
    """
    blocks = len(unmovable) // pageblock_pages
    special = isolated | cma
    if not special.any() and not unmovable.any():
        return None
    for lo, hi in _isolation_spans(blocks):
        page = first_index(unmovable[lo * pageblock_pages:hi * pageblock_pages])
        flagged = first_index(special[lo:hi])
        pb = min(hi, lo + page // pageblock_pages if page is not None else hi,
                 lo + flagged if flagged is not None else hi)
        if pb == hi:
            continue
        base = pb * pageblock_pages
        if isolated[pb]:
            return IsolationFailure(pb, base, False, Cause.PAGEBLOCK_ISOLATED)
        if cma[pb]:
            return IsolationFailure(pb, base, True, Cause.CMA_PAGEBLOCK)
        assert page is not None
        return IsolationFailure(pb, lo * pageblock_pages + page, True, Cause.UNMOVABLE_PAGE)
    return None
