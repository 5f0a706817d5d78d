"""The static description of one machine: its memory blocks, devices, environment and page source.

``Machine`` is what every input (profile, snapshot) produces and what the engine judges. Page
contents come from a ``PageSource`` one run of blocks at a time, so memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from memplan.core.geometry import Geometry
from memplan.core.model import (
    DEFAULT_REFCOUNT,
    BlockState,
    DriverState,
    Errno,
    ForeignRefTiming,
    OnlineType,
    PageKind,
    VirtioMemMode,
    Zone,
)
from memplan.core.results import BlockVerdict, Confidence, ForeignRefEffect


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
    #: pool counters by folio order (``Geometry.hugetlb_orders``); a missing order or ``free=None``
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

    #: the memory block ids it populates, sorted (an array: one entry per block, no Python ints)
    blocks: np.ndarray
    seed: int
    fractions: Dict[PageKind, float]
    #: pages per draw, as an order: 0 draws every page (profile format 1), 3 one kind per
    #: naturally aligned group of 8 pages (format 2)
    group_order: int = 0


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


#: integers as a sequence or a numpy array
Ints = Union[Sequence[int], np.ndarray]


class BlockTable:
    """All memory blocks of a machine as numpy columns (one row per existing block).

    Columns: ``ids`` (block id), ``state`` (``BlockState`` index: 0 online, 1 offline,
    2 going-offline), ``zone`` (``Zone.code`` or ``ZONE_NONE``), ``node`` (-1 when the block
    spans nodes), ``ram_pages`` (System RAM pages in the block), ``vmemmap`` (self-hosted
    memmap pages at the block start), ``device`` (index into ``Machine.devices`` or -1).
    ``spans``: for the (few) blocks that span nodes, their System RAM pages per node, where the
    input says (block id -> node -> pages).
    """

    STATES = (BlockState.ONLINE, BlockState.OFFLINE, BlockState.GOING_OFFLINE)

    def __init__(self, ids: Ints, state: Ints, zone: Ints, node: Ints, ram_pages: Ints, vmemmap: Ints,
                 device: Ints, spans: Optional[Mapping[int, Mapping[int, int]]] = None) -> None:
        order = np.argsort(np.asarray(ids, dtype=np.int64), kind="stable")
        self.ids = np.asarray(ids, dtype=np.int64)[order]
        self.state = np.asarray(state, dtype=np.int8)[order]
        self.zone = np.asarray(zone, dtype=np.int8)[order]
        self.node = np.asarray(node, dtype=np.int32)[order]
        self.ram_pages = np.asarray(ram_pages, dtype=np.int64)[order]
        self.vmemmap = np.asarray(vmemmap, dtype=np.int64)[order]
        self.device = np.asarray(device, dtype=np.int32)[order]
        self.spans: Dict[int, Dict[int, int]] = {int(b): {int(n): int(p) for n, p in nodes.items()}
                                                 for b, nodes in (spans or {}).items()}

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, block_ids: Ints) -> np.ndarray:
        """Row indexes of the given block ids (which must exist)."""
        ids = np.asarray(block_ids, dtype=np.int64)
        rows = np.searchsorted(self.ids, ids)
        rows = np.minimum(rows, len(self.ids) - 1)
        if len(ids) and not np.array_equal(self.ids[rows], ids):
            missing = ids[self.ids[rows] != ids]
            raise KeyError(int(missing[0]))
        return rows

    def exists(self, block_ids: Ints) -> np.ndarray:
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
    #: the same pages read as their worst plausible kinds, from the same read of the input
    #: (snapshots, whose flags can be ambiguous); ``None`` when the pages are known exactly
    pessimistic: Optional[np.ndarray] = None

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
    #: semantics name the input detected or asked for (``None``: mainline)
    default_semantics: Optional[str] = None
    nodes: int = 1
    #: kernel release the rules should follow (``None``: newest mainline)
    kernel: Optional[str] = None
    #: pageblock-aligned CMA pfn ranges [start, end)
    cma: Tuple[Tuple[int, int], ...] = ()
    warnings: Tuple[str, ...] = ()
    #: how sure verdicts about this machine are (snapshots); ``None``: exact (profiles)
    assessor: Optional[VerdictAssessor] = None
    #: why ``default_semantics`` was chosen, when a snapshot detected it
    semantics_reason: Optional[str] = None
    #: ``False``: the input holds no page contents (a tree without kpageflags, a live machine
    #: read without root): ``pages`` serves stand-ins (all free) to judge with, and every page
    #: count taken from them is unknown (``BlockVerdict.pages_known``, ``MemoryLeft.free_known``)
    page_data: bool = True
    #: why virtio-mem devices cannot be seen in the input (a tree without /proc/iomem, a live
    #: /proc/iomem read without root); ``None``: every device the input has is listed
    devices_unseen: Optional[str] = None

    def device_of_block(self, row: int) -> Optional[VirtioMemDevice]:
        index = int(self.blocks.device[row])
        return None if index < 0 else self.devices[index]

    def block_pfn_range(self, block: int) -> Tuple[int, int]:
        start = self.geometry.block_start_pfn(block)
        return start, start + self.geometry.pages_per_block


#: Pages materialised at once (bounded memory: about 4 MiB of page kinds per chunk).
CHUNK_PAGES = 1 << 22


def chunks(ids: np.ndarray, pages_per_block: int) -> List[np.ndarray]:
    """Split block ids into chunks of consecutive ids of at most ``CHUNK_PAGES`` pages."""
    ids = np.asarray(ids)
    return [ids[a:b] for a, b in consecutive_runs(ids, max(1, CHUNK_PAGES // pages_per_block))]


class VerdictAssessor(Protocol):
    """How sure verdicts about a machine are, and what they rest on that the input cannot see.

    Snapshots implement it (``memplan.snapshot.confidence``); a profile describes its machine
    exactly and has none. The engine asks for a second, pessimistic reading of the blocks
    whose verdict it could change, and then for each verdict's confidence.
    """

    def second_reading(self) -> Optional[PageSource]:
        """The same pages read pessimistically (every ambiguous page as its worst plausible kind)."""

    def needs_second_reading(self, verdict: BlockVerdict) -> bool:
        """Whether the pessimistic reading could change this verdict."""

    def assess(self, verdict: BlockVerdict, second: Optional[BlockVerdict],
               foreign_reference: ForeignRefEffect) -> Tuple[Confidence, Tuple[str, ...]]:
        """``(confidence, blind_spots)`` of one verdict."""
