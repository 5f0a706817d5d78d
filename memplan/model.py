"""The machine model: zones, block states, page kinds and the static description of a machine.

Names follow the kernel: ``Zone`` values are the sysfs ``valid_zones`` words, ``BlockState``
values the sysfs ``state`` words, ``PageKind`` values the profile's kind names. Page kinds are
stored one byte per page; the codes are chosen so that every kind the offline pipeline treats
as trivially migratable or free has bit 7 clear (``SPECIAL_BIT``), which lets a whole memory
block be classified with one OR-reduction over its bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from memplan.geometry import Geometry


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
    #: folio order (0 = order-0 page; 9 = 2 MiB; 18 = 1 GiB)
    order: int = 0
    #: the page carries references migration can never drop (long-term pin)
    pinned: bool = False
    profile: bool = True


KIND_INFO: Dict[PageKind, KindInfo] = {
    i.kind: i
    for i in (
        KindInfo(PageKind.FREE, "free page in the buddy allocator", 0),
        KindInfo(PageKind.ANON, "anonymous memory on the LRU", 1, lru=True),
        KindInfo(PageKind.FILE, "page-cache page on the LRU", 1, lru=True),
        KindInfo(PageKind.THP, "transparent huge page (2 MiB LRU folio)", 1, lru=True, order=9),
        KindInfo(PageKind.MOVABLE, "non-LRU movable page with movable_ops (zsmalloc)", 1, movable_ops=True),
        KindInfo(PageKind.BALLOON_MOVABLE, "balloon page with balloon migration (PageOffline + movable_ops)", 1,
                 movable_ops=True, page_offline=True),
        KindInfo(PageKind.HWPOISON, "hardware-poisoned page", 1),
        KindInfo(PageKind.PINNED, "LRU page with a long-term pin (VFIO, RDMA)", 1025, lru=True, pinned=True),
        KindInfo(PageKind.SLAB, "slab page", 1),
        KindInfo(PageKind.PAGETABLE, "page-table page", 1),
        KindInfo(PageKind.KERNEL, "other unmovable kernel allocation", 1),
        KindInfo(PageKind.RESERVED, "PG_reserved page (memblock, firmware, crashkernel)", 1, reserved=True),
        KindInfo(PageKind.HUGETLB_FREE, "free 2 MiB hugetlb page in the pool", 0, hugetlb=True, order=9),
        KindInfo(PageKind.HUGETLB, "in-use 2 MiB hugetlb page (migratable)", 1, hugetlb=True,
                 hugetlb_migratable=True, order=9),
        KindInfo(PageKind.HUGETLB_UNMIGRATABLE, "in-use hugetlb page without the migratable flag", 1,
                 hugetlb=True, order=9),
        KindInfo(PageKind.GIGANTIC, "in-use 1 GiB hugetlb page", 1, hugetlb=True, hugetlb_migratable=True,
                 order=18),
        KindInfo(PageKind.GIGANTIC_FREE, "free 1 GiB hugetlb page in the pool", 0, hugetlb=True, order=18),
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
    table = np.zeros(256, dtype=dtype)
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
FOLIO_ORDER = _lut("order", np.uint8)
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
    """When an unexpected reference on a fake-offline page is dropped (spec rows 20-22)."""

    NEVER = "never"
    DURING_OFFLINE = "during-offline"
    AFTER_OFFLINE = "after-offline"


@dataclass(frozen=True)
class HugetlbPool:
    """One hstate's global pool counters (``/sys/kernel/mm/hugepages/hugepages-*``)."""

    #: ``free_hugepages``; ``None``: count the free folios the machine's pages hold
    free: Optional[int]
    resv: int = 0

    @property
    def headroom(self) -> int:
        """``free_huge_pages - resv_huge_pages``: how many free folios may be dissolved."""
        return max((self.free or 0) - self.resv, 0)


@dataclass(frozen=True)
class Environment:
    """Dynamic conditions at offline time (spec §8.1 "environment")."""

    signal_pending: bool = False
    #: errno another memory notifier returns from MEM_GOING_OFFLINE, if any
    notifier_veto: Optional[Errno] = None
    #: errno a NUMA node notifier returns for NODE_REMOVING_LAST_MEMORY (6.17+), if any
    node_notifier_veto: Optional[Errno] = None
    #: pool counters by folio order (9 = 2 MiB, 18 = 1 GiB); a missing order or ``free=None``
    #: means "count the free folios of that size in the machine's pages"
    hugetlb: Dict[int, HugetlbPool] = field(default_factory=dict)
    #: pfn ranges [start, end) whose pageblocks someone else has isolated (row 38)
    isolated: Tuple[Tuple[int, int], ...] = ()
    foreign_ref_dropped: ForeignRefTiming = ForeignRefTiming.NEVER


@dataclass(frozen=True)
class VirtioMemDevice:
    """A virtio-mem device as the guest driver sees it (spec §1.3, §4)."""

    id: str
    addr: int
    region_size: int
    device_block_size: int
    mode: VirtioMemMode
    #: SBM sub-block size or BBM big-block size: the driver's (un)plug unit
    unit_size: int
    #: plugged state per unit, from the first usable unit of the region
    plugged: np.ndarray
    online: OnlineType
    node: int
    driver: DriverState
    #: BBM: big-block indexes in ``VIRTIO_MEM_BBM_BB_FAKE_OFFLINE``
    fake_offline_units: frozenset = frozenset()
    #: ``unplug_online`` module parameter
    unplug_online: bool = True
    #: first memory block (SBM) or first big block's first memory block (BBM) of the region
    first_block: int = 0
    #: number of units that fit into the region
    units: int = 0
    #: memory blocks that are added but offline although ``online`` says how the others were
    #: onlined (e.g. offlined through sysfs later; profile key ``offline_blocks``)
    offline_blocks: frozenset = frozenset()

    @property
    def plugged_size(self) -> int:
        return int(np.count_nonzero(self.plugged)) * self.unit_size


@dataclass(frozen=True)
class PageRun:
    """Pages placed explicitly by ``[[pages]]`` (or fixed by virtio-mem, holes, vmemmap)."""

    pfn: int
    count: int
    kind: PageKind
    refcount: Optional[int] = None


@dataclass(frozen=True)
class Fill:
    """A seeded random population (``[[fill]]``): fractions of pages per kind."""

    blocks: Tuple[int, ...]
    seed: int
    fractions: Dict[PageKind, float]


def consecutive_runs(ids: np.ndarray, max_len: Optional[int] = None,
                     key: Optional[Callable[[int], object]] = None) -> List[Tuple[int, int]]:
    """Row ranges ``[start, end)`` of ``ids`` holding consecutive block ids, at most ``max_len``
    long and (with ``key``) with one key value each: the units pages are read or drawn in."""
    ids = np.asarray(ids)
    if not len(ids):
        return []
    cuts = np.flatnonzero(np.diff(ids) != 1) + 1
    if key is not None:
        keys = [key(int(b)) for b in ids.tolist()]
        cuts = np.union1d(cuts, [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]]).astype(np.int64)
    out: List[Tuple[int, int]] = []
    for start, end in zip([0] + cuts.tolist(), cuts.tolist() + [len(ids)]):
        step = max_len or (end - start)
        out.extend((i, min(i + step, end)) for i in range(start, end, step))
    return out


class BlockTable:
    """All memory blocks of a machine as numpy columns (one row per existing block).

    Columns: ``ids`` (block id), ``state`` (``BlockState`` index: 0 online, 1 offline,
    2 going-offline), ``zone`` (``Zone.code`` or ``ZONE_NONE``), ``node`` (-1 when the block
    spans nodes), ``ram_pages`` (System RAM pages in the block), ``vmemmap`` (self-hosted
    memmap pages at the block start), ``device`` (index into ``Machine.devices`` or -1).
    """

    STATES = (BlockState.ONLINE, BlockState.OFFLINE, BlockState.GOING_OFFLINE)

    def __init__(self, ids: Sequence[int], state: Sequence[int], zone: Sequence[int], node: Sequence[int],
                 ram_pages: Sequence[int], vmemmap: Sequence[int], device: Sequence[int]) -> None:
        order = np.argsort(np.asarray(ids, dtype=np.int64), kind="stable")
        self.ids = np.asarray(ids, dtype=np.int64)[order]
        self.state = np.asarray(state, dtype=np.int8)[order]
        self.zone = np.asarray(zone, dtype=np.int8)[order]
        self.node = np.asarray(node, dtype=np.int32)[order]
        self.ram_pages = np.asarray(ram_pages, dtype=np.int64)[order]
        self.vmemmap = np.asarray(vmemmap, dtype=np.int64)[order]
        self.device = np.asarray(device, dtype=np.int32)[order]

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, block_ids: Sequence[int]) -> np.ndarray:
        """Row indexes of the given block ids (which must exist)."""
        ids = np.asarray(block_ids, dtype=np.int64)
        rows = np.searchsorted(self.ids, ids)
        rows = np.minimum(rows, len(self.ids) - 1)
        if len(ids) and not np.array_equal(self.ids[rows], ids):
            missing = ids[self.ids[rows] != ids]
            raise KeyError(int(missing[0]))
        return rows

    def exists(self, block_ids: Sequence[int]) -> np.ndarray:
        ids = np.asarray(block_ids, dtype=np.int64)
        rows = np.minimum(np.searchsorted(self.ids, ids), max(len(self.ids) - 1, 0))
        return (self.ids[rows] == ids) if len(self.ids) else np.zeros(len(ids), bool)

    def state_of(self, row: int) -> BlockState:
        return self.STATES[int(self.state[row])]

    def zone_of(self, row: int) -> Optional[Zone]:
        return Zone.from_code(int(self.zone[row]))

    @property
    def online(self) -> np.ndarray:
        return self.state == 0


@dataclass
class PageBatch:
    """Pages of a run of memory blocks: one row per block, one byte of kind per page.

    ``refcount`` is ``None`` when every page has its kind's default refcount.
    """

    block_ids: np.ndarray
    kinds: np.ndarray
    refcount: Optional[np.ndarray] = None
    #: rows that may hold a page with a non-default refcount (``None``: compare ``refcount``
    #: with the defaults to find out); a superset is fine
    refcount_rows: Optional[np.ndarray] = None
    #: every page of a compound kind lies in a whole, naturally aligned folio of that kind
    #: (profiles guarantee it; a snapshot need not)
    whole_folios: bool = False
    #: rows that may hold a page of kind code ``LOOK_CLOSER`` or above (``None``: look at the
    #: bytes to find out); a superset is fine
    special_rows: Optional[np.ndarray] = None

    def refcounts(self) -> np.ndarray:
        """The refcount of every page (defaults filled in)."""
        if self.refcount is not None:
            return self.refcount
        return DEFAULT_REFCOUNT[self.kinds]

    def refcounts_default(self) -> np.ndarray:
        """What ``refcounts()`` would be if no page had an explicit refcount."""
        return DEFAULT_REFCOUNT[self.kinds]

    def rows_with_refcount(self) -> np.ndarray:
        """Per row: some page may have a refcount other than its kind's default."""
        if self.refcount is None:
            return np.zeros(len(self.kinds), dtype=bool)
        if self.refcount_rows is not None:
            return self.refcount_rows
        return (self.refcount != self.refcounts_default()).any(axis=1)


class PageSource(Protocol):
    """Where page contents come from: a profile's fills and placements, or a snapshot."""

    def materialize(self, block_ids: np.ndarray) -> PageBatch:
        """Pages of the given (existing) blocks, in order."""


@dataclass(frozen=True, eq=False)
class Machine:
    """Everything memplan knows about one machine (from a profile or a snapshot)."""

    name: str
    source: str
    geometry: Geometry
    blocks: BlockTable
    pages: PageSource
    devices: Tuple[VirtioMemDevice, ...] = ()
    environment: Environment = field(default_factory=Environment)
    default_semantics: str = "refcount"
    nodes: int = 1
    #: kernel release the rules should follow (``None``: newest mainline)
    kernel: Optional[str] = None
    #: pageblock-aligned CMA pfn ranges [start, end)
    cma: Tuple[Tuple[int, int], ...] = ()
    warnings: Tuple[str, ...] = ()
    #: extra per-block facts from a snapshot (confidence inputs), keyed by block id
    annotations: Dict[int, dict] = field(default_factory=dict)
    #: why ``default_semantics`` was chosen, when a snapshot detected it
    semantics_reason: Optional[str] = None

    def device_of_block(self, row: int) -> Optional[VirtioMemDevice]:
        index = int(self.blocks.device[row])
        return None if index < 0 else self.devices[index]

    def block_pfn_range(self, block: int) -> Tuple[int, int]:
        start = self.geometry.block_start_pfn(block)
        return start, start + self.geometry.pages_per_block
