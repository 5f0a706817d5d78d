"""The vocabulary of the model: zones, block states, errnos and page kinds with their kernel predicates.

Names follow the kernel: ``Zone`` values are the sysfs ``valid_zones`` words, ``BlockState``
values the sysfs ``state`` words, ``PageKind`` values the profile's kind names. Page kinds are
stored one byte per page; the codes are chosen so that every kind the offline pipeline treats
as trivially migratable or free has bit 7 clear (``SPECIAL_BIT``), which lets a whole memory
block be classified with one OR-reduction over its bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Dict, Optional, Tuple

import numpy as np


class Zone(str, Enum):
    """A memory zone, spelled as in sysfs ``valid_zones`` and ``/proc/zoneinfo``."""

    DMA = "DMA"
    DMA32 = "DMA32"
    NORMAL = "Normal"
    MOVABLE = "Movable"

    @property
    def code(self) -> int:
        return _ZONE_CODES[self]

    @classmethod
    def from_code(cls, code: int) -> Optional["Zone"]:
        return None if code < 0 else _ZONES_BY_CODE[code]

    @property
    def is_kernel(self) -> bool:
        """DMA, DMA32 and Normal are "kernel zones" (unmovable allocations allowed)."""
        return self is not Zone.MOVABLE


_ZONE_CODES = {Zone.DMA: 0, Zone.DMA32: 1, Zone.NORMAL: 2, Zone.MOVABLE: 3}
_ZONES_BY_CODE = {v: k for k, v in _ZONE_CODES.items()}
#: Zone code for a block whose ``valid_zones`` reads ``none`` (``mem->zone == NULL``).
ZONE_NONE = -1


class BlockState(str, Enum):
    """``/sys/devices/system/memory/memoryN/state`` (``MEM_ONLINE`` etc. in the kernel)."""

    ONLINE = "online"
    OFFLINE = "offline"
    GOING_OFFLINE = "going-offline"


class Errno(str, Enum):
    """The errnos the offline path returns, by name (``write(2)`` sees the negative value)."""

    EPERM = "EPERM"
    EINTR = "EINTR"
    EAGAIN = "EAGAIN"
    ENOMEM = "ENOMEM"
    EBUSY = "EBUSY"
    EINVAL = "EINVAL"
    ENOSPC = "ENOSPC"
    ETXTBSY = "ETXTBSY"
    EHWPOISON = "EHWPOISON"

    @property
    def number(self) -> int:
        return _ERRNO_NUMBERS[self]


_ERRNO_NUMBERS = {
    Errno.EPERM: 1, Errno.EINTR: 4, Errno.EAGAIN: 11, Errno.ENOMEM: 12, Errno.EBUSY: 16,
    Errno.EINVAL: 22, Errno.ENOSPC: 28, Errno.ETXTBSY: 26, Errno.EHWPOISON: 133,
}

#: Bit 7 of a page-kind code: the kind needs the full per-page pipeline.
SPECIAL_BIT = 0x80
#: Kind codes from here up (HWPoison and the ``SPECIAL_BIT`` kinds) are more than a free page or
#: a trivially migratable one: block-level shortcuts count them.
LOOK_CLOSER = 0x40


class PageKind(IntEnum):
    """What occupies a page frame (spec §2.2). ``kind.label`` is the profile spelling."""

    # Trivially handled kinds (bit 7 clear).
    FREE = 0x00  # P1/P2: buddy (PCP lists are drained by zone_pcp_disable())
    ANON = 0x01  # P3: anonymous LRU
    FILE = 0x02  # P3: page-cache LRU
    THP = 0x03  # P6: 2 MiB LRU folio
    MOVABLE = 0x04  # P8: non-LRU movable_ops page (zsmalloc)
    BALLOON_MOVABLE = 0x05  # P8: PageOffline balloon page with balloon migration
    HWPOISON = 0x40  # P14: hwpoisoned order-0 page
    # Kinds that need the per-page pipeline (bit 7 set).
    PINNED = 0x80  # P4: LRU page with a long-term pin (FOLL_LONGTERM)
    SLAB = 0x81  # P9
    PAGETABLE = 0x82  # P9
    KERNEL = 0x83  # P9: other unmovable kernel allocation
    RESERVED = 0x84  # P10: PG_reserved
    HUGETLB_FREE = 0x85  # P11: free 2 MiB hugetlb folio
    HUGETLB = 0x86  # P12: in-use 2 MiB hugetlb folio, migratable
    HUGETLB_UNMIGRATABLE = 0x87  # P13: in-use hugetlb folio without the migratable flag
    GIGANTIC = 0x88  # P12: in-use 1 GiB hugetlb folio
    GIGANTIC_FREE = 0x89  # P11: free 1 GiB hugetlb folio
    BALLOON = 0x8A  # P16: unmovable PageOffline (hv_balloon, xen, virtio-balloon w/o migration)
    OFFLINE_REFCOUNT_DRIVER = 0x8B  # rows 34-35: driver using the MEM_GOING_OFFLINE refcount protocol
    OFFLINE_ORPHAN = 0x8C  # P20: PageOffline, refcount 0, nobody restores it
    FAKE_OFFLINE = 0x8D  # P15: virtio-mem fake-offline page
    VMEMMAP = 0x8E  # P18: self-hosted memmap (memmap_on_memory)
    HOLE = 0x8F  # P19: not System RAM (internal; profiles use [[ram]] holes)

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> "PageKind":
        return cls[label.upper()]


class FolioSize(IntEnum):
    """How big a folio of a page kind is, in page-table terms: the order follows from the
    page size (``Geometry.folio_order``): PMD = ``PAGE_SHIFT - 3`` (2 MiB with 4 KiB pages,
    32 MiB with 16 KiB, 512 MiB with 64 KiB), PUD = twice that (1 GiB with 4 KiB pages)."""

    BASE = 0
    PMD = 1
    PUD = 2


@dataclass(frozen=True)
class KindInfo:
    """Static properties of a page kind, as the kernel's predicates see them."""

    kind: PageKind
    description: str
    default_refcount: int
    lru: bool = False
    movable_ops: bool = False
    page_offline: bool = False
    reserved: bool = False
    hugetlb: bool = False
    hugetlb_migratable: bool = False
    #: folio size class; the order comes from the geometry (``Geometry.folio_order``)
    folio: FolioSize = FolioSize.BASE
    #: the page carries references migration can never drop (long-term pin)
    pinned: bool = False
    profile: bool = True


KIND_INFO: Dict[PageKind, KindInfo] = {
    i.kind: i
    for i in (
        KindInfo(PageKind.FREE, "free page in the buddy allocator", 0),
        KindInfo(PageKind.ANON, "anonymous memory on the LRU", 1, lru=True),
        KindInfo(PageKind.FILE, "page-cache page on the LRU", 1, lru=True),
        KindInfo(PageKind.THP, "transparent huge page (2 MiB LRU folio)", 1, lru=True, folio=FolioSize.PMD),
        KindInfo(PageKind.MOVABLE, "non-LRU movable page with movable_ops (zsmalloc)", 1, movable_ops=True),
        KindInfo(PageKind.BALLOON_MOVABLE, "balloon page with balloon migration (PageOffline + movable_ops)", 1,
                 movable_ops=True, page_offline=True),
        KindInfo(PageKind.HWPOISON, "hardware-poisoned page", 1),
        KindInfo(PageKind.PINNED, "LRU page with a long-term pin (VFIO, RDMA)", 1025, lru=True, pinned=True),
        KindInfo(PageKind.SLAB, "slab page", 1),
        KindInfo(PageKind.PAGETABLE, "page-table page", 1),
        KindInfo(PageKind.KERNEL, "other unmovable kernel allocation", 1),
        KindInfo(PageKind.RESERVED, "PG_reserved page (memblock, firmware, crashkernel)", 1, reserved=True),
        KindInfo(PageKind.HUGETLB_FREE, "free 2 MiB hugetlb page in the pool", 0, hugetlb=True,
                 folio=FolioSize.PMD),
        KindInfo(PageKind.HUGETLB, "in-use 2 MiB hugetlb page (migratable)", 1, hugetlb=True,
                 hugetlb_migratable=True, folio=FolioSize.PMD),
        KindInfo(PageKind.HUGETLB_UNMIGRATABLE, "in-use hugetlb page without the migratable flag", 1,
                 hugetlb=True, folio=FolioSize.PMD),
        KindInfo(PageKind.GIGANTIC, "in-use 1 GiB hugetlb page", 1, hugetlb=True, hugetlb_migratable=True,
                 folio=FolioSize.PUD),
        KindInfo(PageKind.GIGANTIC_FREE, "free 1 GiB hugetlb page in the pool", 0, hugetlb=True,
                 folio=FolioSize.PUD),
        KindInfo(PageKind.BALLOON, "unmovable PageOffline balloon page (hv_balloon, xen, virtio-balloon "
                 "without migration)", 1, page_offline=True),
        KindInfo(PageKind.OFFLINE_REFCOUNT_DRIVER, "PageOffline page of a driver that drops its reference "
                 "in MEM_GOING_OFFLINE", 1, page_offline=True),
        KindInfo(PageKind.OFFLINE_ORPHAN, "PageOffline page with refcount 0 and no owner", 0, page_offline=True),
        KindInfo(PageKind.FAKE_OFFLINE, "virtio-mem fake-offline page (unplugged memory)", 1, page_offline=True),
        KindInfo(PageKind.VMEMMAP, "self-hosted memmap page (memmap_on_memory)", 1),
        KindInfo(PageKind.HOLE, "memory hole (not System RAM)", 0, reserved=True, profile=False),
    )
}

PROFILE_KINDS: Tuple[str, ...] = tuple(k.label for k, i in KIND_INFO.items() if i.profile)


def _lut(attr: str, dtype: type = np.bool_) -> np.ndarray:
    table: np.ndarray = np.zeros(256, dtype=dtype)
    for kind, info in KIND_INFO.items():
        table[int(kind)] = getattr(info, attr)
    return table


# Lookup tables indexed by the page-kind byte.
IS_LRU = _lut("lru")
IS_MOVABLE_OPS = _lut("movable_ops")
IS_PAGE_OFFLINE = _lut("page_offline")
IS_RESERVED = _lut("reserved")
IS_HUGETLB = _lut("hugetlb")
IS_HUGETLB_MIGRATABLE = _lut("hugetlb_migratable")
IS_PINNED = _lut("pinned")
#: ``FolioSize`` per kind byte (``Geometry.folio_order`` turns it into orders)
FOLIO_SIZE = _lut("folio", np.uint8)
DEFAULT_REFCOUNT = _lut("default_refcount", np.int32)
KIND_NAMES = {int(k): k.label for k in PageKind}


class OnlineType(str, Enum):
    """How a memory block was onlined (``online_movable`` / ``online_kernel``) or left offline."""

    MOVABLE = "movable"
    KERNEL = "kernel"
    OFFLINE = "offline"


class DriverState(str, Enum):
    """State of the virtio-mem driver (spec rows 26-28)."""

    LOADED = "loaded"
    REMOVING = "removing"
    UNLOADED = "unloaded"


class VirtioMemMode(str, Enum):
    SBM = "sbm"
    BBM = "bbm"


class ForeignRefTiming(str, Enum):
    """When an unexpected reference on a fake-offline page is dropped (spec rows 20-22, §9.1)."""

    #: the holder keeps it
    NEVER = "never"
    #: after virtio-mem's MEM_GOING_OFFLINE handler ran, before the commit or MEM_CANCEL_OFFLINE (row 21)
    DURING_OFFLINE = "during-offline"
    #: while the block is offline (row 22)
    AFTER_OFFLINE = "after-offline"
    #: after the block, offlined with the reference held, was onlined again (spec §9.1 "re-online")
    AFTER_ONLINE = "after-online"
