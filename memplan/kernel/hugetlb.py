"""Free hugetlb folios during offlining: ``dissolve_free_hugetlb_folios()`` (mm/hugetlb.c, v6.10+).

Each free folio is dissolved only while its hstate has headroom
(``available_huge_pages()``: ``free_huge_pages > resv_huge_pages``); every dissolve lowers
``free_huge_pages``. An in-use hugetlb folio (refcount > 0) fails with -EBUSY. The first
failure aborts; folios dissolved before it stay dissolved.

hstates are keyed by folio order (``Geometry.hugetlb_orders``: PMD- and PUD-sized folios).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from memplan.core.arrays import AnyArray, BoolArray, KindArray
from memplan.core.geometry import Geometry
from memplan.core.model import DEFAULT_REFCOUNT, IS_HUGETLB, KIND_INFO, FolioSize, PageKind
from memplan.core.results import Cause
from memplan.kernel.pages import first_index

#: The free hugetlb folio kind of each folio size (``free_huge_folio()`` turns an in-use folio
#: into one of these).
FREE_KINDS: Dict[FolioSize, PageKind] = {
    info.folio: kind for kind, info in KIND_INFO.items() if info.hugetlb and DEFAULT_REFCOUNT[int(kind)] == 0
}


def free_kind(geometry: Geometry, order: int) -> PageKind:
    """The free hugetlb folio kind of the hstate of ``order``."""
    return next(kind for size, kind in FREE_KINDS.items() if geometry.order_of(size) == order)


def free_kind_of(kind: PageKind) -> PageKind:
    """The free hugetlb kind of the same folio size as the hugetlb kind ``kind``."""
    return FREE_KINDS[KIND_INFO[kind].folio]


@dataclass
class DissolveOutcome:
    #: index (in the range) of the folio that made dissolve fail, or ``None``
    failure: Optional[int]
    #: pages of free folios that dissolve (within headroom, before any failure)
    dissolved: BoolArray
    #: pages of free folios that would dissolve if no earlier folio failed
    dissolvable: BoolArray
    #: why the folio at ``failure`` does not dissolve
    cause: Optional[Cause] = None


def dissolve(kinds: KindArray, refcount: AnyArray, folio_first: BoolArray,
             headroom: Dict[int, int], geometry: Geometry) -> DissolveOutcome:
    hugetlb = np.take(IS_HUGETLB, kinds)
    if not hugetlb.any():
        none = np.zeros(len(kinds), dtype=bool)
        return DissolveOutcome(None, none, none)
    heads = np.flatnonzero(hugetlb & folio_first)
    order = geometry.folio_order[kinds[heads]]
    free = refcount[heads] == 0
    ok = np.zeros(len(heads), dtype=bool)
    for o in np.unique(order):
        mask = free & (order == o)
        ok |= mask & (np.cumsum(mask) <= headroom.get(int(o), 0))
    fail = ~ok
    if len(heads):
        # One code per folio (has a hugetlb head / dissolves), one gather to the pages.
        folio_id = np.cumsum(folio_first, dtype=np.int32) - 1  # int32: bool->int64 cumsum is 10x slower
        code = np.zeros(int(folio_id[-1]) + 1, dtype=np.uint8)
        code[folio_id[heads]] = 1 | (ok << 1)
        dissolvable = (np.take(code, folio_id) * hugetlb) == 3
    else:
        dissolvable = np.zeros(len(kinds), dtype=bool)
    f = first_index(fail)
    if f is None:
        return DissolveOutcome(None, dissolvable, dissolvable)
    cut = int(heads[f])
    dissolved = dissolvable & (np.arange(len(kinds)) < cut)
    # dissolve_free_hugetlb_folio(): an in-use folio is -EBUSY; a free one lacks headroom.
    cause = Cause.HUGETLB_IN_USE if refcount[cut] > 0 else Cause.HUGETLB_NO_HEADROOM
    return DissolveOutcome(cut, dissolved, dissolvable, cause)


def free_folio_heads(kinds: KindArray, base_pfn: int, order: int, geometry: Geometry,
                     isolated: Optional[BoolArray] = None) -> int:
    """Free hugetlb folios of the given order whose head page lies in ``kinds`` (pfn ``base_pfn``
    onwards). ``dequeue_hugetlb_folio_node_exact()`` skips a folio whose head's pageblock is
    isolated (``is_migrate_isolate_page()``): with ``isolated`` (one flag per pageblock of
    ``kinds``), folios whose head lies in such a pageblock are left out."""
    kind = free_kind(geometry, order).value
    size = 1 << order
    skip = (-base_pfn) % size
    heads = kinds[skip::size] == kind
    if isolated is None or not isolated.any():
        return int(np.count_nonzero(heads))
    return len(free_folio_head_offsets(kinds, base_pfn, order, geometry, isolated))


def free_folio_head_offsets(kinds: KindArray, base_pfn: int, order: int, geometry: Geometry,
                            isolated: Optional[BoolArray] = None) -> np.ndarray:
    """The offsets in ``kinds`` of the heads :func:`free_folio_heads` counts, lowest first (the
    folios ``dequeue_hugetlb_folio_node_exact()`` may hand out)."""
    size = 1 << order
    skip = (-base_pfn) % size
    at = skip + np.flatnonzero(kinds[skip::size] == free_kind(geometry, order).value) * size
    if isolated is not None and isolated.any():
        at = at[~isolated[at // geometry.pageblock_pages]]
    return at
