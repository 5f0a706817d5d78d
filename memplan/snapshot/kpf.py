"""``/proc/kpageflags`` as the kernel would report memplan's page kinds, in page-types style.

Bit numbers are ``include/uapi/linux/kernel-page-flags.h`` (0-26) plus the kernel-internal
ones of ``include/linux/kernel-page-flags.h`` (32-41). Letters and long names are
``page_flag_names[]`` of ``tools/mm/page-types.c`` (newest version: no ``c:uncached`` bit, so
the symbolic string is 43 characters wide); ``symbolic_flags()`` and ``long_symbolic_flags()``
are its ``page_flag_name()`` / ``page_flag_longname()`` (one character per named bit, ``_``
when clear; names comma-separated). This module is the one home of that vocabulary: the
snapshot reader (``memplan.snapshot.kpageflags``) decodes with it, ``explain`` encodes with it.

``KIND_FLAGS`` is what ``stable_page_flags()`` (fs/proc/page.c, torvalds/linux @ 02e1960a)
derives for a typical page of each kind: ``KPF_BUDDY`` for every page of a free buddy chunk,
``KPF_LRU`` (+ ``KPF_ANON``/``KPF_MMAP``/``KPF_SWAPBACKED`` for mapped anonymous memory),
``KPF_SLAB``, ``KPF_PGTABLE``, ``KPF_OFFLINE`` for every PageOffline page, ``KPF_HUGE`` on all
pages of a hugetlb folio, ``KPF_THP`` for large rmappable folios, ``KPF_RESERVED`` (bit 32),
``KPF_OWNER_PRIVATE`` for self-hosted memmap (``PG_vmemmap_self_hosted`` aliases
``PG_owner_priv_1``), ``KPF_UPTODATE`` for movable_ops pages (6.17+: ``PG_movable_ops``
aliases ``PG_uptodate``). Compound folios get ``KPF_COMPOUND_HEAD`` on the head and
``KPF_COMPOUND_TAIL`` on every other page. Under PG_offline_skippable a skippable
fake-offline page also shows ``KPF_OWNER_2`` (bit 34: ``PG_offline_skippable = PG_owner_2``).
What kpageflags cannot show (refcounts, long-term pins, the kernel allocation behind a page
without flags) is exactly what the snapshot reader must treat as a blind spot.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Dict, Optional, Tuple

import numpy as np

from memplan.core.arrays import BoolArray, IntArray, KindArray, U64Array
from memplan.core.geometry import DEFAULT_GEOMETRY, Geometry
from memplan.core.model import PageKind


# include/uapi/linux/kernel-page-flags.h and include/linux/kernel-page-flags.h
class KPF(IntEnum):
    """``KPF_*`` bit numbers of ``/proc/kpageflags``."""

    LOCKED = 0
    ERROR = 1
    REFERENCED = 2
    UPTODATE = 3  # also PG_reported (free page reporting) and, 6.17+, PG_movable_ops
    DIRTY = 4
    LRU = 5
    ACTIVE = 6
    SLAB = 7
    WRITEBACK = 8
    RECLAIM = 9
    BUDDY = 10
    MMAP = 11
    ANON = 12
    SWAPCACHE = 13
    SWAPBACKED = 14
    COMPOUND_HEAD = 15
    COMPOUND_TAIL = 16
    HUGE = 17
    UNEVICTABLE = 18
    HWPOISON = 19
    NOPAGE = 20
    KSM = 21
    THP = 22
    OFFLINE = 23
    ZERO_PAGE = 24
    IDLE = 25
    PGTABLE = 26
    # kernel-internal ("kernel hacking assistances")
    RESERVED = 32
    MLOCKED = 33
    OWNER_2 = 34  # PG_owner_2: PG_offline_skippable on PageOffline pages (Variant S)
    PRIVATE = 35
    PRIVATE_2 = 36
    OWNER_PRIVATE = 37
    ARCH = 38
    UNCACHED = 39
    SOFTDIRTY = 40
    ARCH_2 = 41
    ARCH_3 = 42


def bit(*names: KPF) -> int:
    """The mask of the given bits."""
    out = 0
    for name in names:
        out |= 1 << int(name)
    return out


#: ``page_flag_names[]`` of tools/mm/page-types.c: (bit, letter, long name), in bit order.
#: Bits 47+ are page-types' own pseudo-bits for overloaded flags (only shown with ``-r``).
PAGE_TYPES_NAMES: Tuple[Tuple[int, str, str], ...] = (
    (0, "L", "locked"), (1, "E", "error"), (2, "R", "referenced"), (3, "U", "uptodate"), (4, "D", "dirty"),
    (5, "l", "lru"), (6, "A", "active"), (7, "S", "slab"), (8, "W", "writeback"), (9, "I", "reclaim"),
    (10, "B", "buddy"), (11, "M", "mmap"), (12, "a", "anonymous"), (13, "s", "swapcache"),
    (14, "b", "swapbacked"), (15, "H", "compound_head"), (16, "T", "compound_tail"), (17, "G", "huge"),
    (18, "u", "unevictable"), (19, "X", "hwpoison"), (20, "n", "nopage"), (21, "x", "ksm"), (22, "t", "thp"),
    (23, "o", "offline"), (24, "z", "zero_page"), (25, "i", "idle_page"), (26, "g", "pgtable"),
    (32, "r", "reserved"), (33, "m", "mlocked"), (34, "d", "owner_2"), (35, "P", "private"),
    (36, "p", "private_2"), (37, "O", "owner_private"), (38, "h", "arch"), (40, "f", "softdirty"),
    (41, "H", "arch_2"),
    (47, "d", "anon_exclusive"), (48, "I", "readahead"), (50, "A", "slub_frozen"), (51, "E", "slub_debug"),
    (61, "F", "file"), (62, "w", "swap"), (63, "1", "mmap_exclusive"),
)

#: ``KPF_HACKERS_BITS``: bits 32-47, hidden by page-types unless ``-r``.
HACKERS_BITS = 0xFFFF << 32
BITS_COMPOUND = bit(KPF.COMPOUND_HEAD, KPF.COMPOUND_TAIL)



def well_known_flags(flags: U64Array) -> U64Array:
    """page-types' default view (``well_known_flags()``): hide the kernel-hacker bits, and
    compound head/tail unless the page is hugetlb."""
    out = flags & _U64(~HACKERS_BITS & 0xFFFFFFFFFFFFFFFF)
    hide = ((out & _U64(BITS_COMPOUND)) != 0) & ((out & _U64(bit(KPF.HUGE))) == 0)
    return np.where(hide, out & _U64(~BITS_COMPOUND & 0xFFFFFFFFFFFFFFFF), out)


def symbolic_flags(value: int) -> str:
    """page-types' fixed-width symbolic string: one letter per named bit, ``_`` when clear."""
    return "".join(letter if value >> b & 1 else "_" for b, letter, _ in PAGE_TYPES_NAMES)


def long_symbolic_flags(value: int) -> str:
    """page-types' comma-separated long names of the set bits."""
    return ",".join(name for b, _, name in PAGE_TYPES_NAMES if value >> b & 1)

_U64 = np.uint64


_ANON_MAPPED = bit(KPF.UPTODATE, KPF.LRU, KPF.MMAP, KPF.ANON, KPF.SWAPBACKED)

#: Flags of every page of a kind (compound head/tail bits are added per page by ``page_flags``).
KIND_FLAGS: Dict[PageKind, int] = {
    PageKind.FREE: bit(KPF.BUDDY),
    PageKind.ANON: _ANON_MAPPED,
    PageKind.FILE: bit(KPF.UPTODATE, KPF.LRU),
    PageKind.THP: _ANON_MAPPED | bit(KPF.THP),
    PageKind.MOVABLE: bit(KPF.UPTODATE),
    PageKind.BALLOON_MOVABLE: bit(KPF.UPTODATE, KPF.OFFLINE),
    PageKind.HWPOISON: bit(KPF.HWPOISON),
    PageKind.PINNED: _ANON_MAPPED,  # a long-term pin is invisible in kpageflags
    PageKind.SLAB: bit(KPF.SLAB),
    PageKind.PAGETABLE: bit(KPF.PGTABLE),
    PageKind.KERNEL: 0,  # no page type, no flag: invisible
    PageKind.RESERVED: bit(KPF.RESERVED),
    PageKind.HUGETLB_FREE: bit(KPF.HUGE),
    PageKind.HUGETLB: bit(KPF.UPTODATE, KPF.MMAP, KPF.HUGE),
    PageKind.HUGETLB_UNMIGRATABLE: bit(KPF.UPTODATE, KPF.HUGE),
    PageKind.GIGANTIC: bit(KPF.UPTODATE, KPF.MMAP, KPF.HUGE),
    PageKind.GIGANTIC_FREE: bit(KPF.HUGE),
    PageKind.BALLOON: bit(KPF.OFFLINE),
    PageKind.OFFLINE_REFCOUNT_DRIVER: bit(KPF.OFFLINE),
    PageKind.OFFLINE_ORPHAN: bit(KPF.OFFLINE),
    PageKind.FAKE_OFFLINE: bit(KPF.OFFLINE),
    PageKind.VMEMMAP: bit(KPF.OWNER_PRIVATE),
    PageKind.HOLE: bit(KPF.RESERVED),  # in-section holes are PG_reserved (spec §6.3)
}

_FLAGS_LUT = np.zeros(256, dtype=np.uint64)
for _kind, _flags in KIND_FLAGS.items():
    _FLAGS_LUT[int(_kind)] = _flags


def page_flags(kinds: KindArray, pfns: IntArray, skippable: Optional[BoolArray] = None,
               geometry: Geometry = DEFAULT_GEOMETRY) -> U64Array:
    """The kpageflags value of every page (``uint64``), from its kind and pfn.

    ``pfns`` locates compound heads (a folio of order ``n`` starts at a multiple of ``1 << n``);
    ``skippable`` marks PageOfflineSkippable pages (``KPF_OWNER_2``); ``geometry`` gives the folio
    orders (they follow the page size).
    """
    flags = _FLAGS_LUT[kinds]
    order = geometry.folio_order[kinds].astype(np.int64)
    compound = order > 0
    head = compound & ((np.asarray(pfns, dtype=np.int64) & ((np.int64(1) << order) - 1)) == 0)
    flags = flags | np.where(head, np.uint64(1 << KPF.COMPOUND_HEAD), np.uint64(0))
    flags = flags | np.where(compound & ~head, np.uint64(1 << KPF.COMPOUND_TAIL), np.uint64(0))
    if skippable is not None:
        flags = flags | np.where(skippable, np.uint64(1 << KPF.OWNER_2), np.uint64(0))
    return flags


def kind_page_flags(kind: PageKind, pfn: int, skippable: bool = False, geometry: Geometry = DEFAULT_GEOMETRY) -> int:
    """``page_flags()`` of one page."""
    return int(page_flags(np.asarray([int(kind)], dtype=np.uint8), np.asarray([pfn]), np.asarray([skippable]),
                          geometry)[0])
