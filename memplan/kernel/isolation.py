"""Pageblock isolation for memory offlining (``mm/page_isolation.c``, ML-NEW).

``page_is_unmovable()`` / ``has_unmovable_pages()`` / ``set_migratetype_isolate()`` /
``start_isolate_page_range()`` in ``PB_ISOLATE_MODE_MEM_OFFLINE``. The PageOffline rule
(predicate site 1) comes from the semantics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from memplan.kernel.pages import RangeView, first_index
from memplan.kernel.semantics import OfflineSemantics
from memplan.core.model import FOLIO_ORDER


def unmovable_pages(view: RangeView, zone_movable: bool, semantics: OfflineSemantics,
                    hugepage_migration: bool = True) -> np.ndarray:
    """``page_is_unmovable(zone, page, PB_ISOLATE_MODE_MEM_OFFLINE)`` for every page.

    Rule order as in the kernel: PageReserved (every zone) -> ZONE_MOVABLE shortcut ->
    hugetlb/compound -> refcount 0 -> HWPoison -> PageOffline (site 1) -> LRU/movable_ops.
    """
    unmovable = view.reserved.copy()
    if zone_movable:
        return unmovable
    compound = FOLIO_ORDER[view.kinds] > 0
    hugetlb = view.hugetlb
    lru, movable_ops = view.lru, view.movable_ops
    # Hugetlb folios are movable iff the hstate supports migration: x86-64 selects
    # CONFIG_ARCH_ENABLE_HUGEPAGE_MIGRATION and the generic arch_hugetlb_migration_supported()
    # (include/linux/hugetlb.h) accepts PMD, PUD and PGDIR sizes, so 2 MiB and 1 GiB both are.
    # Other compound folios are movable only if they are on the LRU.
    unmovable |= compound & (hugetlb if not hugepage_migration else np.zeros_like(hugetlb))
    unmovable |= compound & ~hugetlb & ~lru
    considered = ~compound & ~view.reserved & (view.refcount != 0) & ~view.hwpoison
    offline = view.offline
    falls_through = ~offline | ~semantics.isolation_treats_as_movable(view.skippable)
    unmovable |= considered & falls_through & ~(lru | movable_ops)
    return unmovable


@dataclass(frozen=True)
class IsolationFailure:
    """Why ``start_isolate_page_range()`` returned -EBUSY."""

    pageblock: int
    #: index (in the range) of the page the kernel reports or stops at
    index: int
    #: ``dump_page(page, "unmovable page")`` is printed (not for already-isolated pageblocks)
    dumped: bool
    cause: str  # "unmovable" | "cma" | "isolated"


def isolation_order(pageblocks: int) -> List[int]:
    """First pageblock, last pageblock, then the middle ones ascending."""
    if pageblocks <= 1:
        return [0][:pageblocks]
    return [0, pageblocks - 1] + list(range(1, pageblocks - 1))


def isolate_range(unmovable: np.ndarray, pageblock_pages: int, cma: np.ndarray,
                  isolated: np.ndarray) -> Optional[IsolationFailure]:
    """``start_isolate_page_range()``: the first failing pageblock in isolation order, if any.

    Within a pageblock ``set_migratetype_isolate()`` checks "already isolated" first
    (``-EBUSY``, no dump), then CMA (reports the pageblock's first page), then the lowest-pfn
    unmovable page (``has_unmovable_pages()`` walks upward).
    """
    blocks = len(unmovable) // pageblock_pages
    per_block = unmovable[: blocks * pageblock_pages].reshape(blocks, pageblock_pages)
    failing = isolated | cma | per_block.any(axis=1)
    if not failing.any():
        return None
    for pb in isolation_order(blocks):
        if not failing[pb]:
            continue
        base = pb * pageblock_pages
        if isolated[pb]:
            return IsolationFailure(pb, base, False, "isolated")
        if cma[pb]:
            return IsolationFailure(pb, base, True, "cma")
        return IsolationFailure(pb, base + int(first_index(per_block[pb])), True, "unmovable")
    return None  # pragma: no cover
