"""``/proc/kpageflags`` as the kernel would report memplan's page kinds, in page-types style.

Bit numbers are ``include/uapi/linux/kernel-page-flags.h`` (0-26) plus the kernel-internal
ones of ``include/linux/kernel-page-flags.h`` (32-41). Letters and long names are
``page_flag_names[]`` of ``tools/mm/page-types.c``; ``symbolic()`` and ``long_names()`` are
its ``page_flag_name()`` / ``page_flag_longname()`` (one character per named bit, ``_`` when
clear; names comma-separated).

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

from typing import Dict, Optional, Tuple

import numpy as np

from memplan.model import FOLIO_ORDER, PageKind

# include/uapi/linux/kernel-page-flags.h and include/linux/kernel-page-flags.h
KPF_LOCKED = 0
KPF_ERROR = 1
KPF_REFERENCED = 2
KPF_UPTODATE = 3
KPF_DIRTY = 4
KPF_LRU = 5
KPF_ACTIVE = 6
KPF_SLAB = 7
KPF_WRITEBACK = 8
KPF_RECLAIM = 9
KPF_BUDDY = 10
KPF_MMAP = 11
KPF_ANON = 12
KPF_SWAPCACHE = 13
KPF_SWAPBACKED = 14
KPF_COMPOUND_HEAD = 15
KPF_COMPOUND_TAIL = 16
KPF_HUGE = 17
KPF_UNEVICTABLE = 18
KPF_HWPOISON = 19
KPF_NOPAGE = 20
KPF_KSM = 21
KPF_THP = 22
KPF_OFFLINE = 23
KPF_ZERO_PAGE = 24
KPF_IDLE = 25
KPF_PGTABLE = 26
KPF_RESERVED = 32
KPF_MLOCKED = 33
KPF_OWNER_2 = 34
KPF_PRIVATE = 35
KPF_PRIVATE_2 = 36
KPF_OWNER_PRIVATE = 37
KPF_ARCH = 38
KPF_UNCACHED = 39
KPF_SOFTDIRTY = 40
KPF_ARCH_2 = 41

#: ``page_flag_names[]`` of tools/mm/page-types.c: bit -> "letter:long_name" (page-types'
#: own overloaded pseudo-bits 47-63 included, so the symbolic string has its full width).
PAGE_FLAG_NAMES: Dict[int, str] = {
    0: "L:locked", 1: "E:error", 2: "R:referenced", 3: "U:uptodate", 4: "D:dirty", 5: "l:lru", 6: "A:active",
    7: "S:slab", 8: "W:writeback", 9: "I:reclaim", 10: "B:buddy", 11: "M:mmap", 12: "a:anonymous",
    13: "s:swapcache", 14: "b:swapbacked", 15: "H:compound_head", 16: "T:compound_tail", 17: "G:huge",
    18: "u:unevictable", 19: "X:hwpoison", 20: "n:nopage", 21: "x:ksm", 22: "t:thp", 23: "o:offline",
    24: "z:zero_page", 25: "i:idle_page", 26: "g:pgtable",
    32: "r:reserved", 33: "m:mlocked", 34: "d:owner_2", 35: "P:private", 36: "p:private_2",
    37: "O:owner_private", 38: "h:arch", 39: "c:uncached", 40: "f:softdirty", 41: "H:arch_2",
    47: "d:anon_exclusive", 48: "I:readahead", 50: "A:slub_frozen", 51: "E:slub_debug",
    61: "F:file", 62: "w:swap", 63: "1:mmap_exclusive",
}
_BITS: Tuple[int, ...] = tuple(sorted(PAGE_FLAG_NAMES))


def _bits(*numbers: int) -> int:
    value = 0
    for n in numbers:
        value |= 1 << n
    return value


_ANON_MAPPED = _bits(KPF_UPTODATE, KPF_LRU, KPF_MMAP, KPF_ANON, KPF_SWAPBACKED)

#: Flags of every page of a kind (compound head/tail bits are added per page by ``page_flags``).
KIND_FLAGS: Dict[PageKind, int] = {
    PageKind.FREE: _bits(KPF_BUDDY),
    PageKind.ANON: _ANON_MAPPED,
    PageKind.FILE: _bits(KPF_UPTODATE, KPF_LRU),
    PageKind.THP: _ANON_MAPPED | _bits(KPF_THP),
    PageKind.MOVABLE: _bits(KPF_UPTODATE),
    PageKind.BALLOON_MOVABLE: _bits(KPF_UPTODATE, KPF_OFFLINE),
    PageKind.HWPOISON: _bits(KPF_HWPOISON),
    PageKind.PINNED: _ANON_MAPPED,  # a long-term pin is invisible in kpageflags
    PageKind.SLAB: _bits(KPF_SLAB),
    PageKind.PAGETABLE: _bits(KPF_PGTABLE),
    PageKind.KERNEL: 0,  # no page type, no flag: invisible
    PageKind.RESERVED: _bits(KPF_RESERVED),
    PageKind.HUGETLB_FREE: _bits(KPF_HUGE),
    PageKind.HUGETLB: _bits(KPF_UPTODATE, KPF_MMAP, KPF_HUGE),
    PageKind.HUGETLB_UNMIGRATABLE: _bits(KPF_UPTODATE, KPF_HUGE),
    PageKind.GIGANTIC: _bits(KPF_UPTODATE, KPF_MMAP, KPF_HUGE),
    PageKind.GIGANTIC_FREE: _bits(KPF_HUGE),
    PageKind.BALLOON: _bits(KPF_OFFLINE),
    PageKind.OFFLINE_REFCOUNT_DRIVER: _bits(KPF_OFFLINE),
    PageKind.OFFLINE_ORPHAN: _bits(KPF_OFFLINE),
    PageKind.FAKE_OFFLINE: _bits(KPF_OFFLINE),
    PageKind.VMEMMAP: _bits(KPF_OWNER_PRIVATE),
    PageKind.HOLE: _bits(KPF_RESERVED),  # in-section holes are PG_reserved (spec §6.3)
}

_FLAGS_LUT = np.zeros(256, dtype=np.uint64)
for _kind, _flags in KIND_FLAGS.items():
    _FLAGS_LUT[int(_kind)] = _flags


def page_flags(kinds: np.ndarray, pfns: np.ndarray, skippable: Optional[np.ndarray] = None) -> np.ndarray:
    """The kpageflags value of every page (``uint64``), from its kind and pfn.

    ``pfns`` locates compound heads (a folio of order ``n`` starts at a multiple of ``1 << n``);
    ``skippable`` marks PageOfflineSkippable pages (``KPF_OWNER_2``).
    """
    flags = _FLAGS_LUT[kinds]
    order = FOLIO_ORDER[kinds].astype(np.int64)
    compound = order > 0
    head = compound & ((np.asarray(pfns, dtype=np.int64) & ((np.int64(1) << order) - 1)) == 0)
    flags = flags | np.where(head, np.uint64(1 << KPF_COMPOUND_HEAD), np.uint64(0))
    flags = flags | np.where(compound & ~head, np.uint64(1 << KPF_COMPOUND_TAIL), np.uint64(0))
    if skippable is not None:
        flags = flags | np.where(skippable, np.uint64(1 << KPF_OWNER_2), np.uint64(0))
    return flags


def kind_page_flags(kind: PageKind, pfn: int, skippable: bool = False) -> int:
    """``page_flags()`` of one page."""
    return int(page_flags(np.asarray([int(kind)], dtype=np.uint8), np.asarray([pfn]), np.asarray([skippable]))[0])


def symbolic(flags: int) -> str:
    """``page_flag_name()``: one letter per named bit, ``_`` when the bit is clear.

    >>> symbolic(1 << KPF_OFFLINE)[:27]
    '_______________________o___'
    """
    return "".join(PAGE_FLAG_NAMES[b][0] if (flags >> b) & 1 else "_" for b in _BITS)


def long_names(flags: int) -> str:
    """``page_flag_longname()``: the long names of the set bits, comma-separated.

    >>> long_names((1 << KPF_LRU) | (1 << KPF_ANON))
    'lru,anonymous'
    """
    return ",".join(PAGE_FLAG_NAMES[b][2:] for b in _BITS if (flags >> b) & 1)
