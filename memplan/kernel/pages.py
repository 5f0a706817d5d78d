"""A memory range's pages as the offline code sees them, plus small helpers shared by the steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from memplan.core.arrays import AnyArray, BoolArray, IntArray, KindArray
from memplan.core.geometry import Geometry
from memplan.core.model import (
    FOLIO_SIZE,
    IS_HUGETLB,
    IS_HUGETLB_MIGRATABLE,
    IS_LRU,
    IS_MOVABLE_OPS,
    IS_PAGE_OFFLINE,
    IS_RESERVED,
    PageKind,
)
from memplan.core.results import LogEntry, LogLevel

#: Per-page messages (e.g. one WARN per referenced fake-offline page) beyond this many are merged.
PER_PAGE_LOG_LIMIT = 8
#: ``DEFAULT_RATELIMIT_BURST``: do_migrate_range() prints at most this many messages per interval.
RATELIMIT_BURST = 10
#: ``DEFAULT_RATELIMIT_INTERVAL`` (``5 * HZ``), in seconds (include/linux/ratelimit_types.h).
RATELIMIT_INTERVAL_S = 5
#: What a rate-limited kernel line means for someone grepping dmesg (explain prints it).
RATELIMIT_NOTE = (
    "rate-limited: do_migrate_range() prints these lines and their dump_page through one rate limit shared by "
    f"every offline attempt (DEFINE_RATELIMIT_STATE(migrate_rs, {RATELIMIT_INTERVAL_S} s, burst {RATELIMIT_BURST})): "
    "another block's failures can use it up, and the line is then missing from dmesg, counted only in a later "
    "\"do_migrate_range: N callbacks suppressed\"")


# One byte of kernel predicates per page kind: a block's predicates come from a single
# lookup-table pass (``np.take``) plus cheap bit tests, instead of one table pass each.
_LRU, _MOVABLE_OPS, _OFFLINE, _RESERVED, _HUGETLB, _HUGETLB_MIGRATABLE, _COMPOUND = (1 << i for i in range(7))
KIND_PREDICATES = (IS_LRU * _LRU | IS_MOVABLE_OPS * _MOVABLE_OPS | IS_PAGE_OFFLINE * _OFFLINE
                   | IS_RESERVED * _RESERVED | IS_HUGETLB * _HUGETLB | IS_HUGETLB_MIGRATABLE * _HUGETLB_MIGRATABLE
                   | (FOLIO_SIZE > 0) * _COMPOUND).astype(np.uint8)
_ARANGE = np.arange(1 << 15, dtype=np.uint32)


def _offsets(n: int) -> np.ndarray:
    """``arange(n)`` as uint32, shared (a block is judged thousands of times per run)."""
    global _ARANGE
    if n > len(_ARANGE):
        _ARANGE = np.arange(max(n, 2 * len(_ARANGE)), dtype=np.uint32)
    return _ARANGE[:n]


@dataclass
class RangeView:
    """The pages ``[pfn, pfn + len)`` that ``offline_pages()`` works on (vmemmap excluded).

    Predicates are computed once per view and shared with views of the same pages that only
    differ in refcounts (views are never mutated: a step that changes pages builds a new view).
    """

    pfn: int
    kinds: KindArray
    refcount: AnyArray
    #: ``PageOfflineSkippable`` per page (always false under the refcount semantics)
    skippable: BoolArray
    #: folio orders (``Geometry.folio_order``) and everything else that follows the page size
    geometry: Geometry
    #: values that depend only on ``pfn`` and ``kinds``, by name
    derived: Dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.kinds)

    def with_refcount(self, refcount: AnyArray) -> RangeView:
        """The same pages with other refcounts (what depends only on the kinds is shared)."""
        return RangeView(self.pfn, self.kinds, refcount, self.skippable, self.geometry, self.derived)

    def with_pages(self, kinds: KindArray, refcount: AnyArray) -> RangeView:
        """The same range after a step changed pages (nothing derived is shared)."""
        return RangeView(self.pfn, kinds, refcount, self.skippable, self.geometry)

    def order_at(self, index: int) -> int:
        """Folio order of the page at ``index`` (``Geometry.folio_order``)."""
        return int(self.geometry.folio_order[self.kinds[index]])

    def _derived(self, name: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        value = self.derived.get(name)
        if value is None:
            value = self.derived[name] = compute()
        return value

    @property
    def predicates(self) -> np.ndarray:
        """``KIND_PREDICATES`` of every page."""
        return self._derived("predicates", lambda: np.take(KIND_PREDICATES, self.kinds))

    def _test(self, bit: int) -> BoolArray:
        return np.bitwise_and(self.predicates, np.uint8(bit)) != 0

    @property
    def lru(self) -> BoolArray:
        return self._derived("lru", lambda: self._test(_LRU))

    @property
    def movable_ops(self) -> BoolArray:
        return self._derived("movable_ops", lambda: self._test(_MOVABLE_OPS))

    @property
    def offline(self) -> BoolArray:
        """``PageOffline``."""
        return self._derived("offline", lambda: self._test(_OFFLINE))

    @property
    def reserved(self) -> BoolArray:
        return self._derived("reserved", lambda: self._test(_RESERVED))

    @property
    def hugetlb(self) -> BoolArray:
        return self._derived("hugetlb", lambda: self._test(_HUGETLB))

    @property
    def compound(self) -> BoolArray:
        """Part of a folio of order > 0."""
        return self._derived("compound", lambda: self._test(_COMPOUND))

    @property
    def hwpoison(self) -> BoolArray:
        return self._derived("hwpoison", lambda: self.kinds == PageKind.HWPOISON.value)

    @property
    def buddy(self) -> BoolArray:
        return self._derived("buddy", lambda: self.kinds == PageKind.FREE.value)

    @property
    def lru_or_movable_ops(self) -> BoolArray:
        """``PageLRU || page_has_movable_ops()``: what SCAN reports first."""
        return self._derived("lru_or_movable_ops", lambda: self._test(_LRU | _MOVABLE_OPS))

    @property
    def maybe_hugetlb_migratable(self) -> bool:
        """Whether any page is of a migratable hugetlb kind (refcount not considered)."""
        return bool(self._derived("any_hugetlb_migratable",
                                  lambda: np.array(self._test(_HUGETLB_MIGRATABLE).any())))

    @cached_property
    def hugetlb_in_use_migratable(self) -> BoolArray:
        """``PageHuge && folio_test_hugetlb_migratable`` (free folios have the flag cleared)."""
        return self._test(_HUGETLB_MIGRATABLE) & (self.refcount > 0)

    @property
    def first(self) -> BoolArray:
        """``folio_first()``, computed once."""
        return self._derived("first", self.folio_first)

    def folio_first(self) -> BoolArray:
        """True on the first page of every folio inside the range (a tail page at the start of
        the range counts: the walks reach a folio that began in an earlier block there)."""
        offsets = _offsets(len(self.kinds)) + np.uint32(self.pfn & 0xFFFFFFFF)  # low bits of the pfns
        first = np.bitwise_and(offsets, np.take(self.geometry.folio_mask, self.kinds)) == 0
        if len(first):
            first[0] = True
        # A new folio also starts where the kind changes (e.g. two kinds of 2 MiB folios).
        first[1:] |= self.kinds[1:] != self.kinds[:-1]
        return first


def folio_heads(mask: BoolArray, order: int) -> int:
    """How many pages of ``mask`` start a folio as ``RangeView.folio_first()`` sees it, when
    ``mask`` marks the pages of one folio kind of ``order`` in a range whose first pfn is aligned
    to the folio size: every aligned page, the first page, and every page whose predecessor is of
    another kind. A block-level reduction (three strided counts, no per-page lookup) for the
    shortcut over whole blocks."""
    size = 1 << order
    aligned = int(np.count_nonzero(mask[::size]))
    starts = int(np.count_nonzero(mask[1:] > mask[:-1]))
    # run starts on an aligned index are already counted as aligned pages
    aligned_starts = int(np.count_nonzero(mask[size::size] > mask[size - 1:-1:size]))
    return aligned + starts - aligned_starts


@dataclass(frozen=True)
class KindSet:
    """A set of page-kind codes, tested over a page array as a few range compares (one per run
    of consecutive codes) instead of a table lookup per page (``np.take`` costs ten compares)."""

    runs: Tuple[Tuple[int, int], ...]

    @classmethod
    def of(cls, table: AnyArray) -> KindSet:
        """The kind codes where a per-kind-byte boolean table is true."""
        codes = np.flatnonzero(table).tolist()
        runs: List[Tuple[int, int]] = []
        for code in codes:
            if runs and runs[-1][1] == code:
                runs[-1] = (runs[-1][0], code + 1)
            else:
                runs.append((code, code + 1))
        return cls(tuple(runs))

    def __bool__(self) -> bool:
        return bool(self.runs)

    def mask(self, kinds: KindArray) -> BoolArray:
        """Which pages of ``kinds`` (uint8) are of a kind in the set."""
        out: Optional[np.ndarray] = None
        for lo, hi in self.runs:
            if hi - lo >= 256:
                return np.ones(len(kinds), dtype=bool)
            hit = kinds == np.uint8(lo) if hi == lo + 1 else (kinds - np.uint8(lo)) < np.uint8(hi - lo)
            out = hit if out is None else out | hit
        return out if out is not None else np.zeros(len(kinds), dtype=bool)


def first_index(mask: BoolArray, start: int = 0) -> Optional[int]:
    """Index of the first true element at or after ``start``, or ``None``."""
    if start >= len(mask):
        return None
    hit = int(np.argmax(mask[start:]))
    return start + hit if mask[start + hit] else None


def per_page_entries(level: LogLevel, text: str, function: str, pfns: IntArray,
                     limit: int = PER_PAGE_LOG_LIMIT, repeats: bool = False) -> List[LogEntry]:
    """One entry per page for the first ``limit`` pages, then one merged entry with a count."""
    entries = [LogEntry(level, text, int(p), function, 1, repeats) for p in pfns[:limit]]
    if len(pfns) > limit:
        entries.append(LogEntry(level, text, int(pfns[limit]), function, int(len(pfns) - limit), repeats))
    return entries
