"""A memory range's pages as the offline code sees them, plus small helpers shared by the steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from memplan.model import (
    FOLIO_ORDER, IS_HUGETLB, IS_HUGETLB_MIGRATABLE, IS_LRU, IS_MOVABLE_OPS, IS_PAGE_OFFLINE, IS_RESERVED,
    PageKind,
)
from memplan.results import LogEntry, LogLevel

#: Per-page messages (e.g. one WARN per referenced fake-offline page) beyond this many are merged.
PER_PAGE_LOG_LIMIT = 8
#: ``DEFAULT_RATELIMIT_BURST``: do_migrate_range() prints at most this many messages per interval.
RATELIMIT_BURST = 10


@dataclass
class RangeView:
    """The pages ``[pfn, pfn + len)`` that ``offline_pages()`` works on (vmemmap excluded)."""

    pfn: int
    kinds: np.ndarray
    refcount: np.ndarray
    #: ``PageOfflineSkippable`` per page (always false under the refcount semantics)
    skippable: np.ndarray

    def __len__(self) -> int:
        return len(self.kinds)

    @property
    def lru(self) -> np.ndarray:
        return IS_LRU[self.kinds]

    @property
    def movable_ops(self) -> np.ndarray:
        return IS_MOVABLE_OPS[self.kinds]

    @property
    def offline(self) -> np.ndarray:
        """``PageOffline``."""
        return IS_PAGE_OFFLINE[self.kinds]

    @property
    def reserved(self) -> np.ndarray:
        return IS_RESERVED[self.kinds]

    @property
    def hugetlb(self) -> np.ndarray:
        return IS_HUGETLB[self.kinds]

    @property
    def hwpoison(self) -> np.ndarray:
        return self.kinds == PageKind.HWPOISON

    @property
    def buddy(self) -> np.ndarray:
        return self.kinds == PageKind.FREE

    @property
    def hugetlb_in_use_migratable(self) -> np.ndarray:
        """``PageHuge && folio_test_hugetlb_migratable`` (free folios have the flag cleared)."""
        return IS_HUGETLB_MIGRATABLE[self.kinds] & (self.refcount > 0)

    def folio_first(self) -> np.ndarray:
        """True on the first page of every folio inside the range (a tail page at the start of
        the range counts: the walks reach a folio that began in an earlier block there)."""
        order = FOLIO_ORDER[self.kinds].astype(np.int64)
        pfns = self.pfn + np.arange(len(self.kinds), dtype=np.int64)
        first = (pfns & ((np.int64(1) << order) - 1)) == 0
        if len(first):
            first[0] = True
        # A new folio also starts where the kind changes (e.g. two kinds of 2 MiB folios).
        first[1:] |= self.kinds[1:] != self.kinds[:-1]
        return first


def first_index(mask: np.ndarray, start: int = 0) -> Optional[int]:
    """Index of the first true element at or after ``start``, or ``None``."""
    if start >= len(mask):
        return None
    hit = int(np.argmax(mask[start:]))
    return start + hit if mask[start + hit] else None


def per_page_entries(level: LogLevel, text: str, function: str, pfns: np.ndarray,
                     limit: int = PER_PAGE_LOG_LIMIT, repeats: bool = False) -> List[LogEntry]:
    """One entry per page for the first ``limit`` pages, then one merged entry with a count."""
    entries = [LogEntry(level, text, int(p), function, 1, repeats) for p in pfns[:limit]]
    if len(pfns) > limit:
        entries.append(LogEntry(level, text, int(pfns[limit]), function, int(len(pfns) - limit), repeats))
    return entries
