"""Typed access to the tables of a parsed profile, with errors that name the file and the key path.

Every check of a single value lives here (sizes, integers, booleans, choices, zones, errnos,
pageblock-aligned address ranges); the section readers of ``memplan.profile.reader`` only
say which keys a table has and what they mean.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, overload

import numpy as np

from memplan.core.arrays import IntArray
from memplan.core.errors import ProfileError, did_you_mean
from memplan.core.geometry import Geometry
from memplan.core.model import Errno, Zone
from memplan.core.units import parse_block_spans, parse_inclusive_range, parse_size, shown

#: a [start, end) interval with the key path that declared it (overlap checks)
Interval = Tuple[int, int, str]


class TableReader:
    """One TOML table: unknown keys are rejected on construction, values are read by type."""

    def __init__(self, path: str, prefix: str, table: Any, allowed: Set[str]) -> None:
        self.path, self.prefix = path, prefix
        if not isinstance(table, dict):
            raise ProfileError(path, prefix, f"must be a table, not {type(table).__name__}")
        self.table: Dict[str, Any] = table
        for key in table:
            if key not in allowed:
                named = key if key.isprintable() and len(key) <= 60 else shown(key)
                raise ProfileError(path, self.key(named), "unknown key", hint=did_you_mean(key[:60], allowed))

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, message: str, hint: Optional[str] = None) -> ProfileError:
        return ProfileError(self.path, self.key(name), message, hint=hint)

    def child(self, name: str, table: Any, allowed: Set[str]) -> "TableReader":
        """A reader for a sub-table (``ram[0].holes[1]``, ``environment.hugetlb_2m``)."""
        return TableReader(self.path, self.key(name), table, allowed)

    def has(self, name: str) -> bool:
        return name in self.table

    def raw(self, name: str, default: Any = None) -> Any:
        return self.table.get(name, default)

    @overload
    def size(self, name: str, default: int, maximum: Optional[int] = None, why: str = "") -> int: ...

    @overload
    def size(self, name: str, default: None = None, maximum: Optional[int] = None, why: str = "") -> Optional[int]: ...

    def size(self, name: str, default: Optional[int] = None, maximum: Optional[int] = None,
             why: str = "") -> Optional[int]:
        """A size or address (``memplan.core.units.parse_size``), at most ``maximum``."""
        if name not in self.table:
            return default
        try:
            value = parse_size(self.table[name])
        except ValueError as exc:
            raise self.fail(name, str(exc)) from None
        if maximum is not None and value > maximum:
            raise self.fail(name, f"{shown(self.table[name])} is above {maximum:#x}{f' ({why})' if why else ''}")
        return value

    def required_size(self, name: str, maximum: Optional[int] = None, why: str = "") -> int:
        if name not in self.table:
            raise self.fail(name, "is required")
        return self.size(name, 0, maximum, why)

    def integer(self, name: str, default: Optional[int] = None, minimum: int = 0, maximum: Optional[int] = None,
                why: str = "") -> Optional[int]:
        """A TOML integer (not a boolean, not a float, not a string of digits) in [minimum, maximum]."""
        value = self.table.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"{shown(value)} is not an integer")
        if value < minimum:
            raise self.fail(name, f"{shown(value)} is below {minimum}")
        if maximum is not None and value > maximum:
            raise self.fail(name, f"{shown(value)} is above {maximum}{f' ({why})' if why else ''}")
        return value

    def count(self, name: str, default: int, minimum: int = 0, maximum: Optional[int] = None, why: str = "") -> int:
        """An integer that has a default (never ``None``)."""
        value = self.integer(name, default, minimum, maximum, why)
        assert value is not None
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.table.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, f"{shown(value)} is not true or false")
        return value

    def choice(self, name: str, choices: Sequence[str], default: Optional[str]) -> Optional[str]:
        value = self.table.get(name, default)
        if value is None:
            return None
        if not isinstance(value, str) or value not in choices:
            raise self.fail(name, f"{shown(value)} is not one of {', '.join(choices)}", hint=_hint(value, choices))
        return str(value)

    def string(self, name: str, default: Optional[str] = None) -> Optional[str]:
        value = self.table.get(name, default)
        if value is not None and not isinstance(value, str):
            raise self.fail(name, f"{shown(value)} is not a string")
        return value

    def zone(self, name: str) -> Zone:
        value = self.raw(name)
        names = [z.value for z in Zone]
        if value is None:
            raise self.fail(name, "is required")
        if not isinstance(value, str) or value not in names:
            raise self.fail(name, f"{shown(value)} is not a zone ({', '.join(names)})", hint=_hint(value, names))
        return Zone(value)

    def errno(self, name: str) -> Optional[Errno]:
        value = self.raw(name, "")
        if value in ("", None, False):
            return None
        names = [e.value for e in Errno]
        if not isinstance(value, str) or value not in names:
            raise self.fail(name, f"{shown(value)} is not an errno name ({', '.join(names)})",
                            hint=_hint(value, names))
        return Errno(value)

    def pageblock_ranges(self, name: str, geometry: Geometry, within: Tuple[int, int],
                         where: str = "the range") -> List[Tuple[int, int]]:
        """A list of inclusive address ranges (``"0x20000000-0x21ffffff"``) aligned to
        pageblocks and inside ``within`` (bytes [start, end)), as pfn ranges [start, end)."""
        raw = self.table.get(name, [])
        if not isinstance(raw, list):
            raise self.fail(name, "must be an array of inclusive ranges like \"0x20000000-0x21ffffff\"")
        ranges = []
        for j, text in enumerate(raw):
            try:
                lo, hi = parse_inclusive_range(text)
            except ValueError as exc:
                raise self.fail(f"{name}[{j}]", str(exc)) from None
            if lo < within[0] or hi > within[1]:
                raise self.fail(f"{name}[{j}]", f"{shown(text)} is outside {where} "
                                f"({within[0]:#x}-{within[1] - 1:#x})")
            if lo % geometry.pageblock_size or hi % geometry.pageblock_size:
                raise self.fail(f"{name}[{j}]", f"{shown(text)} is not aligned to "
                                f"{geometry.pageblock_size >> 20} MiB pageblocks")
            ranges.append((geometry.pfn(lo), geometry.pfn(hi)))
        return ranges

    def block_spans(self, name: str, value: Any, what: str = "block range",
                    hint: Optional[Sequence[str]] = None) -> List[Tuple[int, int]]:
        """An lsmem/chmem range list (``7``, ``"32-63"``, ``"1,4,8-9"``) as inclusive spans, as
        written (ASCII digits only: a full-width digit is not a number)."""
        if isinstance(value, str) and not value.isascii():
            raise self.fail(name, f"{shown(value)} is not a {what} (ASCII digits, like 7, 32-63, 1,4,8-9)")
        try:
            return parse_block_spans(value)
        except ValueError as exc:
            raise self.fail(name, str(exc), hint=_hint(value, hint) if hint else None) from None


def _hint(value: Any, choices: Sequence[str]) -> Optional[str]:
    """``did you mean ...?`` for a mistyped string (nothing for other types)."""
    return did_you_mean(value[:60], choices) if isinstance(value, str) else None


def array_of_tables(path: str, doc: Dict[str, Any], name: str) -> List[Any]:
    """The ``[[name]]`` tables of the document (empty when absent)."""
    value = doc.get(name, [])
    if not isinstance(value, list):
        raise ProfileError(path, name, f"must be an array of tables ([[{name}]])")
    return value


def check_disjoint(path: str, intervals: Sequence[Interval]) -> None:
    """Fail on the first two intervals that overlap, naming the later one."""
    ordered = sorted(intervals)
    for (_, e1, k1), (s2, _, k2) in zip(ordered, ordered[1:]):
        if s2 < e1:
            raise ProfileError(path, k2, f"overlaps {k1}")


def merge_spans(spans: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """Sorted, disjoint inclusive spans: overlapping or adjacent ones merged (a list that names
    the same blocks a thousand times costs no more than naming them once)."""
    merged: List[Tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


#: ids beyond any block id (block ids stay below 2**52 / 128 MiB); bigger numbers are clipped
#: to it before numpy sees them
_BEYOND = 1 << 62


def first_missing(ids: IntArray, spans: Sequence[Tuple[int, int]]) -> Optional[int]:
    """The first id of the sorted, disjoint inclusive ``spans`` that the sorted ``ids`` lack
    (``None``: every one exists), found with two binary searches per span."""
    if not spans:
        return None
    los = np.array([min(lo, _BEYOND) for lo, _ in spans], dtype=np.int64)
    his = np.array([min(hi, _BEYOND) for _, hi in spans], dtype=np.int64)
    first = np.searchsorted(ids, los, side="left")
    last = np.searchsorted(ids, his, side="right")
    bad = np.flatnonzero(last - first != his - los + 1)
    if not len(bad):
        return None
    i = int(bad[0])
    lo, a, b = spans[i][0], int(first[i]), int(last[i])
    present = ids[a:b] - los[i]
    gaps = np.flatnonzero(present != np.arange(len(present)))
    return lo + int(gaps[0]) if len(gaps) else lo + len(present)


def span_rows(ids: IntArray, spans: Sequence[Tuple[int, int]]) -> np.ndarray:
    """The rows of the sorted ``ids`` that the inclusive spans cover (every id exists)."""
    first = np.searchsorted(ids, [lo for lo, _ in spans], side="left")
    last = np.searchsorted(ids, [hi for _, hi in spans], side="right")
    parts = [np.arange(a, b) for a, b in zip(first.tolist(), last.tolist())]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
