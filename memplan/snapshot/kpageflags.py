"""``/proc/kpageflags`` and ``/proc/kpagecount``: bits, page-types names, a chunked reader,
the page-types summary and the classification of flags into page classes and kinds.

Bit numbers are the kernel's ``KPF_*`` (``include/uapi/linux/kernel-page-flags.h`` for 0-26,
``include/linux/kernel-page-flags.h`` for 32+; spec §6.1). Both files hold one little-endian
u64 per pfn; reads must be 8-byte aligned and a multiple of 8 bytes long
(``kpageflags_read()`` returns ``-EINVAL`` otherwise, ``fs/proc/page.c``) and end at
``round_up(max_pfn, PAGES_PER_SECTION)``. memplan reads them in large aligned chunks straight
into numpy buffers (``preadv``), or streams a saved ``.xz`` copy chunk by chunk — a whole
machine is never held in memory.

Names, letters and the default masking follow the kernel's own ``tools/mm/page-types.c``
(newest version: no ``c:uncached`` bit, so the symbolic string is 43 characters wide).
"""

from __future__ import annotations

import lzma
import os
from dataclasses import dataclass
from typing import BinaryIO, Dict, Iterator, List, Optional, Tuple

import numpy as np

from memplan.core.arrays import BoolArray, ClassArray, KindArray, U64Array
from memplan.core.errors import InputError
from memplan.core.geometry import DEFAULT_GEOMETRY
from memplan.core.model import PageKind
from memplan.snapshot import ingest
from memplan.snapshot.evidence import CLASSES, PageClass
from memplan.snapshot.files import open_regular
from memplan.snapshot.kpf import (  # noqa: F401  (KPF, bit, symbolic_flags, ... are the reader's vocabulary too)
    BITS_COMPOUND,
    KPF,
    bit,
    long_symbolic_flags,
    symbolic_flags,
    well_known_flags,
)

_U64 = np.uint64


# --------------------------------------------------------------------------------------------
# Reading


#: pfns per read: 4 MiB of u64 (page-types uses 64 Ki pages; larger reads cost less per pfn).
CHUNK_PFNS = 1 << 19


class KpageFile:
    """One u64-per-pfn file (``kpageflags``/``kpagecount``): plain (``/proc`` or a saved copy,
    read with ``preadv`` at 8-byte aligned offsets) or ``.xz`` (decompressed as a stream;
    forward skips decompress and discard, a backward seek restarts the stream)."""

    def __init__(self, path: str, display: str) -> None:
        self._fd: Optional[int] = None
        self._stream: Optional[lzma.LZMAFile] = None
        self._chunks: Optional[ingest.XzStreams] = None
        self.path = path
        self.display = display
        self.compressed = path.endswith(".xz")
        self._pos = 0  # byte offset of the stream
        self._raw: Optional[BinaryIO] = None
        try:
            fd = open_regular(path, display)
        except OSError as exc:
            raise InputError(f"cannot read {display}: {exc.strerror or exc}") from None
        if self.compressed:
            self._raw = os.fdopen(fd, "rb")
            self._chunks = ingest.XzStreams.open(path, display)  # a chunked save: parallel
            if self._chunks is None:
                self._open_stream()
        else:
            self._fd = fd

    @classmethod
    def find(cls, base: str, display: str) -> Optional["KpageFile"]:
        """Open ``base`` or, failing that, ``base + ".xz"``; ``None`` if neither exists."""
        if os.path.lexists(base):
            return cls(base, display)
        if os.path.lexists(base + ".xz"):
            return cls(base + ".xz", display + ".xz")
        return None

    def _open_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
        assert self._raw is not None
        try:
            self._raw.seek(0)
            # FORMAT_XZ, not auto-detection: "auto" takes a run of zero bytes for an empty raw
            # stream and would read a sparse 1 TiB file of zeros to its end
            self._stream = lzma.LZMAFile(self._raw, "rb", format=lzma.FORMAT_XZ)
        except OSError as exc:
            raise InputError(f"cannot read {self.display}: {exc.strerror or exc}") from None
        self._pos = 0

    def size_hint(self) -> Optional[int]:
        """pfns in a plain saved file (``None`` for ``/proc`` files, which stat as 0, and .xz)."""
        if self._fd is None:
            return None
        size = os.fstat(self._fd).st_size
        if size == 0:
            return None
        if size % 8:
            raise InputError(f"{self.display}: {size} bytes is not a whole number of 8-byte entries "
                             "(truncated or corrupt)")
        return size // 8

    def _fill(self, view: memoryview, offset: int) -> int:
        """Read into ``view`` from byte ``offset``; returns bytes read (short only at EOF)."""
        got = 0
        total = len(view)
        try:
            if self._fd is not None:
                return ingest.pread_into(self._fd, view, offset)  # parallel readers (--jobs)
            if self._chunks is not None:
                return self._chunks.read_into(view, offset)
            assert self._stream is not None
            if offset < self._pos:
                self._open_stream()
            if offset > self._pos:
                scratch = bytearray(min(offset - self._pos, 1 << 22))
                while self._pos < offset:
                    want = min(offset - self._pos, len(scratch))
                    n = self._stream.readinto(memoryview(scratch)[:want])
                    if not n:
                        return 0
                    self._pos += n
            while got < total:
                n = self._stream.readinto(view[got:])
                if not n:
                    break
                got += n
            self._pos += got
            return got
        except (lzma.LZMAError, EOFError) as exc:
            raise InputError(f"{self.display}: corrupt xz data ({exc})") from None
        except OSError as exc:
            raise InputError(f"cannot read {self.display}: {exc.strerror or exc}") from None

    def read(self, start_pfn: int, count: int) -> U64Array:
        """Entries ``[start_pfn, start_pfn + count)``; fewer only where the file ends."""
        buffer = np.empty(count, dtype="<u8")
        got = self._fill(buffer.data.cast("B"), start_pfn * 8)
        if got % 8:
            raise InputError(f"{self.display}: ends in the middle of an 8-byte entry at byte "
                             f"{start_pfn * 8 + got} (truncated or corrupt)")
        return buffer[: got // 8]

    def chunks(self, chunk_pfns: int = CHUNK_PFNS) -> Iterator[Tuple[int, U64Array]]:
        """``(start_pfn, entries)`` from pfn 0 to the end of the file."""
        start = 0
        while True:
            data = self.read(start, chunk_pfns)
            if len(data) == 0:
                return
            yield start, data
            if len(data) < chunk_pfns:
                return
            start += len(data)

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        if self._chunks is not None:
            self._chunks.close()
            self._chunks = None


# --------------------------------------------------------------------------------------------
# The page-types summary

#: ``HASH_SHIFT`` of page-types: the summary lists rows in the order of an 8192-slot hash.
_HASH_SIZE = 1 << 13


@dataclass(frozen=True)
class FlagsRow:
    """One row of page-types' summary: a distinct (masked) flags value and its page count."""

    flags: int
    pages: int

    @property
    def symbolic(self) -> str:
        return symbolic_flags(self.flags)

    @property
    def long_symbolic(self) -> str:
        return long_symbolic_flags(self.flags)


class FlagsHistogram:
    """Pages per distinct flags value, as ``page-types`` (default view) counts them.

    Row order reproduces page-types' ``hash_slot()``: values are inserted in the order of the
    pfn where each first occurs, key ``flags & 8191``, linear probing from slot 1, slot 0
    reserved for flags 0; ``show_summary()`` walks the slots in order.
    """

    def __init__(self) -> None:
        self.pages: Dict[int, int] = {}
        self.first_pfn: Dict[int, int] = {}
        self.total = 0

    def add(self, start_pfn: int, flags: U64Array) -> None:
        values = well_known_flags(flags)
        uniq, first, counts = np.unique(values, return_index=True, return_counts=True)
        for value, index, count in zip(uniq.tolist(), first.tolist(), counts.tolist()):
            if value not in self.pages:
                self.pages[value] = 0
                self.first_pfn[value] = start_pfn + index
            self.pages[value] += count
        self.total += len(flags)

    def rows(self) -> List[FlagsRow]:
        slots: List[Optional[int]] = [None] * _HASH_SIZE
        for value in sorted(self.pages, key=self.first_pfn.__getitem__):
            if value == 0:
                slots[0] = 0
                continue
            k = value & (_HASH_SIZE - 1)
            for _ in range(1, _HASH_SIZE):
                if k == 0 or k >= _HASH_SIZE:
                    k = 1
                if slots[k] is None:
                    slots[k] = value
                    break
                k += 1
            else:
                raise InputError("more distinct page flags than page-types' hash table holds")
        return [FlagsRow(v, self.pages[v]) for v in slots if v is not None]

    def summary(self, page_size: int = DEFAULT_GEOMETRY.page_size) -> str:
        """The text ``page-types -F FILE`` prints (``show_summary()``)."""

        def mb(pages: int) -> int:
            return (pages * page_size) >> 20

        lines = ["             flags\tpage-count       MB  symbolic-flags\t\t\tlong-symbolic-flags"]
        for row in self.rows():
            lines.append(f"0x{row.flags:016x}\t{row.pages:10d} {mb(row.pages):8d}  {row.symbolic}\t{row.long_symbolic}")
        lines.append(f"             total\t{self.total:10d} {mb(self.total):8d}")
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Classification

_USER_BITS = bit(KPF.MMAP, KPF.ANON, KPF.SWAPCACHE, KPF.SWAPBACKED, KPF.KSM, KPF.UNEVICTABLE, KPF.MLOCKED,
                 KPF.UPTODATE, KPF.DIRTY, KPF.WRITEBACK, KPF.LOCKED, KPF.RECLAIM, KPF.ACTIVE, KPF.REFERENCED)
#: Bits that say nothing about whether a page is in use.
_NEUTRAL_BITS = bit(KPF.IDLE, KPF.ERROR, KPF.ARCH, KPF.ARCH_2, KPF.ARCH_3, KPF.UNCACHED, KPF.SOFTDIRTY)


def _has(flags: U64Array, mask: int) -> BoolArray:
    return (flags & _U64(mask)) != 0


def has_huge(flags: U64Array) -> bool:
    """Whether any of these pages is part of a hugetlb folio (KPF_HUGE)."""
    return bool(np.bitwise_or.reduce(flags) & _U64(bit(KPF.HUGE))) if len(flags) else False


def classify(flags: U64Array, mapcount: Optional[U64Array], start_pfn: int,
             movable_ops_visible: bool, pmd_pages: int = DEFAULT_GEOMETRY.pmd_pages) -> ClassArray:
    """The ``PageClass`` of every pfn (one byte each), from its flags and mapcount.

    Follows ``stable_page_flags()`` (fs/proc/page.c): BUDDY is set on every page of a free
    chunk; HUGE on every page of a hugetlb folio; THP on every page of a large rmappable
    folio (any size); SLAB/PGTABLE/OFFLINE are page types. Whole-folio tests (2 MiB THP,
    hugetlb sizes) need ``start_pfn`` and the length aligned to ``pmd_pages`` (the machine's
    ``Geometry.pmd_pages``); memory blocks are.
    Context this function cannot know (holes, virtio-mem resources) is applied by the caller.
    """
    n = len(flags)
    cls = np.full(n, int(PageClass.UNFLAGGED), dtype=np.uint8)
    mapped = (mapcount > 0) if mapcount is not None else np.zeros(n, dtype=bool)
    cls[_has(flags, ~(_NEUTRAL_BITS | _USER_BITS) & 0xFFFFFFFFFFFFFFFF)] = PageClass.UNTYPED
    cls[_has(flags, _USER_BITS) | mapped] = PageClass.USER_UNTYPED

    anon = _has(flags, bit(KPF.ANON))
    zero = _has(flags, bit(KPF.ZERO_PAGE))
    huge = _has(flags, bit(KPF.HUGE))
    lru_like = _has(flags, bit(KPF.LRU)) | (_has(flags, bit(KPF.THP)) & ~zero)
    cls[lru_like & anon] = PageClass.LRU_ANON
    cls[lru_like & ~anon] = PageClass.LRU_FILE
    # A compound page that is neither on the LRU, a THP nor hugetlb (slab is decided below):
    # has_unmovable_pages() calls it unmovable in kernel zones (spec P7). So is the huge zero
    # folio (KPF_ZERO_PAGE|KPF_THP) and an unreserved zero page.
    compound = _has(flags, BITS_COMPOUND)
    cls[(compound & ~lru_like & ~huge) | zero] = PageClass.KERNEL

    aligned = start_pfn % pmd_pages == 0
    whole = (n // pmd_pages) * pmd_pages if aligned else 0
    if whole:
        groups = cls[:whole].reshape(-1, pmd_pages)
        f2 = flags[:whole].reshape(-1, pmd_pages)
        head0 = _has(f2[:, 0], bit(KPF.COMPOUND_HEAD))
        tails = _has(f2[:, 1:], bit(KPF.COMPOUND_TAIL)).all(axis=1)
        thp = _has(f2, bit(KPF.THP)).all(axis=1) & ~_has(f2, bit(KPF.ZERO_PAGE) | bit(KPF.HUGE)).any(axis=1)
        groups[thp & head0 & tails] = PageClass.THP
        if huge.any():
            hugetlb: BoolArray = np.all(_has(f2, bit(KPF.HUGE)), axis=1)
            tail0 = _has(f2[:, 0], bit(KPF.COMPOUND_TAIL))
            # A 1 GiB folio: its later 2 MiB groups start with a tail page; its first group is
            # a head whose next group starts with a tail.
            next_tail = np.zeros_like(tail0)
            next_tail[:-1] = tail0[1:] & hugetlb[1:]
            gigantic = hugetlb & (tail0 | (head0 & next_tail))
            pmd = hugetlb & head0 & tails & ~gigantic
            group_mapped = mapped[:whole].reshape(-1, pmd_pages).any(axis=1)
            groups[pmd & group_mapped] = PageClass.HUGETLB_MAPPED
            groups[pmd & ~group_mapped] = PageClass.HUGETLB_UNMAPPED
            groups[gigantic & group_mapped] = PageClass.GIGANTIC_MAPPED
            groups[gigantic & ~group_mapped] = PageClass.GIGANTIC_UNMAPPED
    # hugetlb pages that do not form a whole folio here: in use, type unclear
    stray = huge & ~np.isin(cls, [PageClass.HUGETLB_MAPPED, PageClass.HUGETLB_UNMAPPED,
                                   PageClass.GIGANTIC_MAPPED, PageClass.GIGANTIC_UNMAPPED])
    cls[stray] = PageClass.UNTYPED

    cls[_has(flags, bit(KPF.PGTABLE))] = PageClass.PGTABLE
    cls[_has(flags, bit(KPF.SLAB))] = PageClass.SLAB
    offline = _has(flags, bit(KPF.OFFLINE))
    if offline.any():
        if movable_ops_visible:
            # 6.17+: PG_movable_ops aliases PG_uptodate, which stable_page_flags() copies.
            movable = _has(flags, bit(KPF.UPTODATE))
            cls[offline & movable] = PageClass.BALLOON_MOVABLE
            cls[offline & ~movable] = PageClass.BALLOON
        else:
            cls[offline] = PageClass.BALLOON_UNKNOWN
    cls[_has(flags, bit(KPF.BUDDY))] = PageClass.FREE
    cls[_has(flags, bit(KPF.HWPOISON))] = PageClass.HWPOISON
    cls[_has(flags, bit(KPF.RESERVED))] = PageClass.RESERVED
    cls[_has(flags, bit(KPF.NOPAGE))] = PageClass.NOPAGE
    return cls


def _kind_lut(overrides: Dict[PageClass, PageKind]) -> KindArray:
    base = {
        PageClass.UNFLAGGED: PageKind.FREE,
        PageClass.FREE: PageKind.FREE,
        PageClass.LRU_ANON: PageKind.ANON,
        PageClass.LRU_FILE: PageKind.FILE,
        PageClass.THP: PageKind.THP,
        PageClass.USER_UNTYPED: PageKind.ANON,
        PageClass.UNTYPED: PageKind.KERNEL,
        PageClass.KERNEL: PageKind.KERNEL,
        PageClass.SLAB: PageKind.SLAB,
        PageClass.PGTABLE: PageKind.PAGETABLE,
        PageClass.RESERVED: PageKind.RESERVED,
        PageClass.HWPOISON: PageKind.HWPOISON,
        PageClass.HUGETLB_MAPPED: PageKind.HUGETLB,
        PageClass.HUGETLB_UNMAPPED: PageKind.HUGETLB_FREE,
        PageClass.GIGANTIC_MAPPED: PageKind.GIGANTIC,
        PageClass.GIGANTIC_UNMAPPED: PageKind.GIGANTIC_FREE,
        PageClass.BALLOON_MOVABLE: PageKind.BALLOON_MOVABLE,
        PageClass.BALLOON: PageKind.BALLOON,
        PageClass.BALLOON_UNKNOWN: PageKind.BALLOON_MOVABLE,
        PageClass.FAKE_OFFLINE: PageKind.FAKE_OFFLINE,
        PageClass.FAKE_OFFLINE_SKIPPABLE: PageKind.FAKE_OFFLINE,
        PageClass.NOPAGE: PageKind.HOLE,
        PageClass.HOLE: PageKind.HOLE,
    }
    base.update(overrides)
    lut = np.zeros(256, dtype=np.uint8)
    for cls, kind in base.items():
        lut[int(cls)] = int(kind)
    return lut


#: The most likely kernel page kind of each class: a page without flags is a free per-CPU
#: page, user memory off the LRU sits in a per-CPU LRU batch (``lru_cache_disable()`` drains
#: it), an unmapped hugetlb folio is free in the pool, a PageOffline page outside virtio-mem
#: is a balloon page with balloon compaction (distribution kernels enable it).
PRIMARY_KINDS = _kind_lut({})

#: The worst plausible kind of each ambiguous class (spec §6.3): an untyped kernel allocation,
#: an in-use hugetlb folio that is not migratable yet, a balloon page without movable_ops.
PESSIMISTIC_KINDS = _kind_lut({
    PageClass.UNFLAGGED: PageKind.KERNEL,
    PageClass.USER_UNTYPED: PageKind.KERNEL,
    PageClass.HUGETLB_UNMAPPED: PageKind.HUGETLB_UNMIGRATABLE,
    PageClass.GIGANTIC_UNMAPPED: PageKind.GIGANTIC,
    PageClass.BALLOON_UNKNOWN: PageKind.BALLOON,
})

assert CLASSES <= 256
