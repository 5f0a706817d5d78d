"""Sizes, addresses and block ranges in the syntax of lsmem/chmem, and lsmem-style printing."""

from __future__ import annotations

import re
from typing import List, Set, Tuple, Union

SizeLike = Union[int, str]

_SUFFIX = {
    "": 1,
    "b": 1,
    "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
    "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
    "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
    "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
    "p": 1 << 50, "pb": 1 << 50, "pib": 1 << 50,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: SizeLike) -> int:
    """Parse a size or address: an int, ``"0x140000000"``, ``"4096"``, ``"4GiB"``, ``"2M"``.

    Suffixes are binary (K/M/G/T/P, with or without ``B``/``iB``), as in lsmem and chmem.

    >>> parse_size("128MiB"), parse_size("0x200000"), parse_size("1.5G")
    (134217728, 2097152, 1610612736)
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a size")
    text = value.strip()
    if text.lower().startswith("0x"):
        try:
            return int(text, 16)
        except ValueError:
            raise ValueError(f"{value!r} is not a hexadecimal number") from None
    match = _SIZE_RE.match(text)
    if not match or match.group(2).lower() not in _SUFFIX:
        raise ValueError(f"{value!r} is not a size (examples: 4096, 0x1000, 128MiB, 2M, 4GiB)")
    number, suffix = match.groups()
    scaled = float(number) * _SUFFIX[suffix.lower()] if "." in number else int(number) * _SUFFIX[suffix.lower()]
    if scaled != int(scaled):
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(scaled)


def parse_chmem_size(value: str) -> int:
    """chmem's SIZE (``parse_single_param()``): like :func:`parse_size`, but a bare number means MiB.

    >>> parse_chmem_size("512"), parse_chmem_size("1G")
    (536870912, 1073741824)
    """
    text = value.strip()
    return parse_size(text) * (1 << 20) if text.isdigit() else parse_size(text)


def parse_inclusive_range(value: str) -> Tuple[int, int]:
    """Parse ``"0x20000000-0x21ffffff"`` (inclusive end, like lsmem's RANGE) into ``(start, end_exclusive)``."""
    if not isinstance(value, str) or "-" not in value:
        raise ValueError(f"{value!r} is not a range like 0x20000000-0x21ffffff")
    first, _, last = value.partition("-")
    start, end = parse_size(first), parse_size(last)
    if end < start:
        raise ValueError(f"{value!r} ends before it starts")
    return start, end + 1


def parse_block_spans(value: Union[str, int]) -> List[Tuple[int, int]]:
    """Parse an lsmem/chmem block range list into its ``(first, last)`` spans (inclusive), as
    written: ``"1,4,8-9"`` -> ``[(1, 1), (4, 4), (8, 9)]``. Large ranges stay two numbers.

    >>> parse_block_spans("1,4,8-9")
    [(1, 1), (4, 4), (8, 9)]
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a block range")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return [(value, value)]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a block range (examples: 7, 32-63, 1,4,8-9)")
    spans = []
    for part in value.split(","):
        part = part.strip()
        if part.startswith("memory"):
            part = part[len("memory"):]
        first, sep, last = part.partition("-")
        if not first.strip().isdigit() or (sep and not last.strip().isdigit()):
            raise ValueError(f"{value!r} is not a block range (examples: 7, 32-63, 1,4,8-9)")
        lo = int(first)
        hi = int(last) if sep else lo
        if hi < lo:
            raise ValueError(f"{part!r} ends before it starts")
        spans.append((lo, hi))
    return spans


def parse_block_ranges(value: Union[str, int]) -> List[int]:
    """Parse an lsmem/chmem block range list: ``"7"``, ``"32-63"``, ``"1,4,8-9"`` (also ``memory8-9``).

    Returns the sorted, de-duplicated block ids.

    >>> parse_block_ranges("1,4,8-9")
    [1, 4, 8, 9]
    """
    blocks: Set[int] = set()
    for lo, hi in parse_block_spans(value):
        blocks.update(range(lo, hi + 1))
    return sorted(blocks)


def format_block_ranges(blocks: List[int]) -> str:
    """Inverse of :func:`parse_block_ranges`: ``[1, 4, 8, 9]`` -> ``"1,4,8-9"``."""
    parts = []
    ordered = sorted(set(blocks))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def _get_exp(n: int) -> int:
    shift = 10
    while shift <= 60:
        if n < (1 << shift):
            break
        shift += 10
    return shift - 10


def format_size(nbytes: int) -> str:
    """Print a size like lsmem does (util-linux ``size_to_human_string``): ``128M``, ``2.9G``, ``0B``.

    >>> format_size(134217728), format_size(3113851290), format_size(0)
    ('128M', '2.9G', '0B')
    """
    nbytes = int(nbytes)
    exp = _get_exp(nbytes)
    letter = "BKMGTPE"[exp // 10 if exp else 0]
    dec = nbytes >> exp if exp else nbytes
    frac = nbytes % (1 << exp) if exp else 0
    if frac:
        frac = (frac * 1000) >> exp
        frac = ((frac + 50) // 100) * 10
        if frac == 100:
            dec += 1
            frac = 0
    if frac:
        text = f"{dec}.{frac:02d}"
        if text.endswith("0"):
            text = text[:-1]
        return text + letter
    return f"{dec}{letter}"
