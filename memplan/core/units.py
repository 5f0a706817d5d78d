"""Sizes, addresses and block ranges in the syntax of lsmem/chmem, and lsmem-style printing."""

from __future__ import annotations

import re
from typing import List, Set, Tuple, Union

SizeLike = Union[int, str]

#: ``UINTMAX_MAX``: util-linux parses sizes into a ``uintmax_t`` (64 bits on Linux)
UINTMAX = (1 << 64) - 1
#: the suffixes ``parse_size()`` knows, in order of their power (K = 1 ... Y = 8)
_SUFFIXES = "KMGTPEZY"
#: C ``isspace()`` in the C locale (``strtoumax()`` skips these before the number)
_SPACE = " \t\n\v\f\r"
_DIGITS = "0123456789"
_HEX = "0123456789abcdefABCDEF"
_EXAMPLES = "examples: 4096, 0x1000, 128MiB, 2M, 1.5G, 4GiB; KB, MB, GB are powers of 1000"
#: valid SIZEs for chmem (a bare number is MiB)
CHMEM_EXAMPLES = "examples: 512M, 1G, 1.5G, 4GiB, 512 (MiB); KB, MB, GB are powers of 1000"
#: ``strtoumax(..., 0)`` reads this as hexadecimal (white space and a sign may come first)
_HEX_PREFIX = re.compile(r"[ \t\n\v\f\r]*[+-]?0[xX][0-9a-fA-F]")


def shown(value: object, limit: int = 40) -> str:
    """``repr()`` of a value for an error message, shortened when it is long (a 400-digit
    number is named by its ends and its length)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit - 12]}...{text[-8:]} ({len(str(value))} characters)"


def _strtoumax(text: str, pos: int) -> Tuple[int, int, bool]:
    """C ``strtoumax(text + pos, &end, 0)`` over ASCII: ``(value, end, overflowed)``.

    Leading white space and one sign are skipped; ``0x`` means hexadecimal, a leading ``0``
    octal; no digits: ``end == pos``. A value past ``UINTMAX_MAX`` saturates (``ERANGE``)."""
    i, n = pos, len(text)
    while i < n and text[i] in _SPACE:
        i += 1
    negative = i < n and text[i] == "-"
    if i < n and text[i] in "+-":
        i += 1
    base, digits = 10, _DIGITS
    if text.startswith(("0x", "0X"), i) and i + 2 < n and text[i + 2] in _HEX:
        base, digits, i = 16, _HEX, i + 2
    elif i < n and text[i] == "0":
        base, digits = 8, "01234567"
    first = i
    while i < n and text[i] in digits:
        i += 1
    if i == first:
        return 0, pos, False
    value = int(text[first:i], base)
    if value > UINTMAX:
        return UINTMAX, i, True
    return (-value) & UINTMAX if negative else value, i, False


def _scale(x: int, base: int, power: int) -> Tuple[int, bool]:
    """util-linux ``do_scale_by_power()``: ``x * base**power``, stopping where it would overflow."""
    for _ in range(power):
        if UINTMAX // base < x:
            return x, False
        x *= base
    return x, True


def _fraction(x: int, frac: int, zeros: int, base: int, power: int) -> int:
    """The digits after the decimal point, added the way util-linux's ``parse_size()`` does: one
    digit at a time, each truncated (``1.25K`` is 1279 bytes; ``0.10M`` reads as 1 MiB, because
    a fraction that is a power of ten gets one decimal place too few)."""
    frac_base, _ = _scale(1, base, power)
    frac_div, frac_poz = 10, 1
    while frac_div < frac:
        if frac_div <= UINTMAX // 10:
            frac_div *= 10
        else:
            frac //= 10
    for _ in range(zeros):
        if frac_div <= UINTMAX // 10:
            frac_div *= 10
        else:
            frac //= 10
    while True:
        seg, seg_div = frac % 10, frac_div // frac_poz
        frac //= 10
        frac_poz *= 10
        if seg and seg_div // seg:
            x += frac_base // (seg_div // seg)
        if not frac:
            return x


class _SizeError(ValueError):
    """Why ``strtosize()`` refuses a string (``why``), without the examples callers add."""

    def __init__(self, why: str, out_of_range: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.out_of_range = out_of_range


def strtosize(text: str) -> int:
    """util-linux ``strtosize()`` (lib/strutils.c ``parse_size()``), digit for digit.

    ``K``/``KiB`` (also ``k``, ``Kib``) are powers of 1024 up to ``Y``, ``KB``/``kb`` powers of
    1000; ``0x`` numbers are hexadecimal and a leading ``0`` is octal (``strtoumax(..., 0)``);
    a decimal point needs a suffix; a sign ``-``, a space before the suffix or after it, ``B``
    alone and anything past ``2**64 - 1`` are errors.
    """
    try:
        return _strtosize(text)
    except _SizeError as exc:
        if exc.out_of_range:
            raise ValueError(f"{shown(text)} is out of range: sizes end at 2^64 - 1 bytes (16E)") from None
        raise ValueError(f"{shown(text)} is not a size ({exc.why}; {_EXAMPLES})") from None


def _strtosize(text: str) -> int:
    """:func:`strtosize` raising :class:`_SizeError`."""
    def fail(why: str) -> _SizeError:
        return _SizeError(why)

    def out_of_range() -> _SizeError:
        return _SizeError("out of range", out_of_range=True)

    i = 0
    while i < len(text) and text[i] in _SPACE:
        i += 1
    if not text or text.startswith("-", i):
        raise fail("no number" if not text.strip() else "negative")
    x, end, overflowed = _strtoumax(text, 0)
    if end == 0:
        raise fail("no number")
    if overflowed:
        raise out_of_range()
    if end == len(text):
        return x
    base, frac, zeros, p = 1024, 0, 0, end
    while True:  # check_suffix:
        if p >= len(text):
            raise fail("a decimal point needs a suffix")
        rest = text[p + 1:]
        if rest in ("iB", "ib"):
            base = 1024
        elif rest in ("B", "b"):
            base = 1000
        elif rest:
            if frac or text[p] != ".":
                raise fail(f"unexpected {shown(text[p:], 12)}")
            p += 1
            while p < len(text) and text[p] == "0":
                zeros, p = zeros + 1, p + 1
            if p < len(text) and text[p] in _DIGITS:
                frac, p, overflowed = _strtoumax(text, p)
                if overflowed:
                    raise out_of_range()
            if frac and p == len(text):
                raise fail("a decimal point needs a suffix")
            continue
        break
    power = _SUFFIXES.find(text[p].upper()) + 1 if text[p] in _SUFFIXES + _SUFFIXES.lower() else 0
    if not power:
        raise fail(f"unknown suffix {shown(text[p:], 12)}")
    x, fits = _scale(x, base, power)
    if not fits:
        raise out_of_range()
    if frac:
        x = _fraction(x, frac, zeros, base, power)
        if x > UINTMAX:
            raise out_of_range()
    return x


def parse_size(value: SizeLike) -> int:
    """A size or address: an integer (bytes) or a string util-linux's ``strtosize()`` accepts
    (``"0x140000000"``, ``"4096"``, ``"4GiB"``, ``"2M"``, ``"1.5G"``, ``"512MB"`` = 512 * 10^6).

    Every result lies in ``[0, 2**64)``; callers check it against what a machine can have
    (``memplan.core.limits``).

    >>> parse_size("128MiB"), parse_size("0x200000"), parse_size("1.5G"), parse_size("1MB")
    (134217728, 2097152, 1610612736, 1000000)
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{shown(value)} is negative")
        if value > UINTMAX:
            raise ValueError(f"{shown(value)} is out of range: sizes end at 2^64 - 1 bytes (16E)")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{shown(value)} is not a size ({_EXAMPLES})")
    return strtosize(value)


def _chmem_quoted(value: str) -> str:
    """The SIZE as chmem's messages quote it (``'512X'``), escaped and shortened when needed."""
    if len(value) <= 40 and value.isprintable() and "'" not in value:
        return f"'{value}'"
    return shown(value)


def parse_chmem_size(value: str) -> int:
    """chmem's SIZE (sys-utils/chmem.c ``parse_single_param()``): util-linux ``strtosize()``
    (``M``/``MiB`` powers of 1024, ``MB`` powers of 1000), and a SIZE whose last character is
    a digit is a number of MiB (``desc->size *= 1024*1024``).

    Refused, one line each, with valid examples: what ``strtosize_or_err()`` refuses (chmem's
    ``Failed to parse size: '...'``), a product past ``2**64 - 1`` (chmem's multiplication
    would wrap). A hexadecimal SIZE that ends in a digit is MiB too, as chmem reads it
    (``0x1000`` is 4096 MiB); one that ends in a letter is bytes (``0x8000000``... ``0xfe``), and
    chmem then refuses it unless it is block-aligned.

    >>> parse_chmem_size("512"), parse_chmem_size("1G"), parse_chmem_size("128MB"), parse_chmem_size("0x10")
    (536870912, 1073741824, 128000000, 16777216)
    """
    if not isinstance(value, str):
        raise ValueError(f"{shown(value)} is not a size ({CHMEM_EXAMPLES})")
    quoted = _chmem_quoted(value)
    try:
        size = _strtosize(value)
    except _SizeError as exc:
        why = "past 2^64 - 1 bytes (16E)" if exc.out_of_range else exc.why
        raise ValueError(f"{quoted} is not a size ({why}; chmem: Failed to parse size: {quoted}; "
                         f"{CHMEM_EXAMPLES})") from None
    if value and value[-1] in _DIGITS:
        size <<= 20
        if size > UINTMAX:
            raise ValueError(f"{quoted} MiB is past 2^64 - 1 bytes (16E) ({CHMEM_EXAMPLES})")
    return size


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
        # three digits after the decimal point, without overflowing a uint64_t
        if frac >= UINTMAX // 1000:
            frac = ((frac // 1024) * 1000) >> (exp - 10)
        else:
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
