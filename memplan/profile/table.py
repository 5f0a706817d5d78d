"""Typed access to the tables of a parsed profile, with errors that name the file and the key path.

Every check of a single value lives here (sizes, integers, booleans, choices, zones, errnos,
pageblock-aligned address ranges); the section readers of ``memplan.profile.reader`` only
say which keys a table has and what they mean.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, overload

from memplan.core.errors import ProfileError, did_you_mean
from memplan.core.geometry import Geometry
from memplan.core.model import Errno, Zone
from memplan.core.units import parse_inclusive_range, parse_size

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
                raise ProfileError(path, self.key(key), "unknown key", hint=did_you_mean(key, allowed))

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
    def size(self, name: str, default: int) -> int: ...

    @overload
    def size(self, name: str, default: None = None) -> Optional[int]: ...

    def size(self, name: str, default: Optional[int] = None) -> Optional[int]:
        if name not in self.table:
            return default
        try:
            return parse_size(self.table[name])
        except ValueError as exc:
            raise self.fail(name, str(exc)) from None

    def required_size(self, name: str) -> int:
        if name not in self.table:
            raise self.fail(name, "is required")
        return self.size(name, 0)

    def integer(self, name: str, default: Optional[int] = None, minimum: int = 0) -> Optional[int]:
        value = self.table.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"{value!r} is not an integer")
        if value < minimum:
            raise self.fail(name, f"{value} is below {minimum}")
        return value

    def count(self, name: str, default: int, minimum: int = 0) -> int:
        """An integer that has a default (never ``None``)."""
        value = self.integer(name, default, minimum)
        assert value is not None
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.table.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, f"{value!r} is not true or false")
        return value

    def choice(self, name: str, choices: Sequence[str], default: Optional[str]) -> Optional[str]:
        value = self.table.get(name, default)
        if value is None:
            return None
        if value not in choices:
            raise self.fail(name, f"{value!r} is not one of {', '.join(choices)}",
                            hint=did_you_mean(str(value), choices))
        return str(value)

    def string(self, name: str, default: Optional[str] = None) -> Optional[str]:
        value = self.table.get(name, default)
        if value is not None and not isinstance(value, str):
            raise self.fail(name, f"{value!r} is not a string")
        return value

    def zone(self, name: str) -> Zone:
        value = self.raw(name)
        names = [z.value for z in Zone]
        if value is None:
            raise self.fail(name, "is required")
        if value not in names:
            raise self.fail(name, f"{value!r} is not a zone ({', '.join(names)})",
                            hint=did_you_mean(str(value), names))
        return Zone(value)

    def errno(self, name: str) -> Optional[Errno]:
        value = self.raw(name, "")
        if value in ("", None, False):
            return None
        names = [e.value for e in Errno]
        if value not in names:
            raise self.fail(name, f"{value!r} is not an errno name ({', '.join(names)})",
                            hint=did_you_mean(str(value), names))
        return Errno(value)

    def pageblock_ranges(self, name: str, geometry: Geometry,
                         within: Optional[Tuple[int, int]] = None) -> List[Tuple[int, int]]:
        """A list of inclusive address ranges (``"0x20000000-0x21ffffff"``) aligned to
        pageblocks, as pfn ranges [start, end)."""
        raw = self.table.get(name, [])
        if not isinstance(raw, list):
            raise self.fail(name, "must be an array of inclusive ranges like \"0x20000000-0x21ffffff\"")
        ranges = []
        for j, text in enumerate(raw):
            try:
                lo, hi = parse_inclusive_range(text)
            except ValueError as exc:
                raise self.fail(f"{name}[{j}]", str(exc)) from None
            if lo % geometry.pageblock_size or hi % geometry.pageblock_size:
                raise self.fail(f"{name}[{j}]", f"{text!r} is not aligned to "
                                f"{geometry.pageblock_size >> 20} MiB pageblocks")
            if within and (lo < within[0] or hi > within[1]):
                raise self.fail(f"{name}[{j}]", f"{text!r} is outside the range")
            ranges.append((geometry.pfn(lo), geometry.pfn(hi)))
        return ranges


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
