"""A ``Machine`` from a snapshot of a real machine: a live ``/`` or a saved sysroot (spec §6).

``load_snapshot()`` reads the sysfs/procfs text files (``memplan.snapshot.sysroot``), rebuilds
every memory block (state, zone, node, System RAM pages, virtio-mem device) and returns a
machine whose pages come from ``/proc/kpageflags`` block by block (``SnapshotPageSource``):
nothing per page is held beyond the chunk being judged.

Each pfn gets a ``PageClass`` (what its flags prove) and then a ``PageKind`` (what the kernel
will meet). Ambiguous classes have two readings: the primary one (the most likely kind) and a
pessimistic one (the worst plausible kind); the source's ``alternative`` serves the second,
and ``memplan.engine.simulation`` compares both readings to give every verdict a confidence.

``describe()`` is the one full pass over the machine for ``memplan snapshot``: the page-types
summary, the class histogram and, with ``save_to``, a saved copy of the tree.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from memplan.core.errors import InputError, UsageError
from memplan.core.geometry import Geometry
from memplan.core.machine import (
    BlockTable,
    Environment,
    HugetlbPool,
    Machine,
    PageBatch,
    VirtioMemDevice,
    consecutive_runs,
)
from memplan.core.model import ZONE_NONE, BlockState, DriverState, OnlineType, PageKind, VirtioMemMode, Zone
from memplan.core.units import format_block_ranges
from memplan.kernel import versions
from memplan.kernel.semantics import MAINLINE, foreign_reference_blocks, get_semantics, semantics_marking
from memplan.snapshot import ingest
from memplan.snapshot import kpageflags as kpf
from memplan.snapshot.btf import btf_names_skippable
from memplan.snapshot.confidence import NO_PAGE_FLAGS, NO_PAGE_FLAGS_ROOT, SnapshotAssessor
from memplan.snapshot.evidence import CLASS_MEANING, CLASSES, BlockEvidence, PageClass
from memplan.snapshot.files import NeedsRootError
from memplan.snapshot.kpageflags import KPF, FlagsHistogram, KpageFile
from memplan.snapshot.once import ReadOnce
from memplan.snapshot.pagesize import PAGE_SIZE_FILE, geometry_for
from memplan.snapshot.report import (
    BlockGroup,
    ClassCount,
    DeviceSummary,
    FlagsCount,
    SnapshotReport,
    ZoneCount,
)
from memplan.snapshot.sysroot import (
    MEMORY_DIR,
    MemoryBlockInfo,
    Resource,
    SysrootFacts,
    Tree,
    ZoneInfo,
    ram_ranges,
    read_sysroot,
)

VIRTIO_MEM_RAM = "System RAM (virtio_mem)"
#: a page file: a saved one, or a live one read once (``memplan.snapshot.once``)
PageFile = Union[KpageFile, ReadOnce]


@dataclass(frozen=True)
class _DeviceFacts:
    """What the snapshot showed of one virtio-mem device (for the report)."""

    device: VirtioMemDevice
    assumed: bool
    unit_max: Optional[int]
    blocks: Tuple[int, ...]
    fake_offline: int
    skippable: int
    kept_back: int


class SnapshotPageSource:
    """Pages of a snapshot, classified from kpageflags/kpagecount on demand, in chunks.

    ``materialize()`` reads only the blocks asked for. The primary reading also records a
    ``BlockEvidence`` per block into ``evidence`` (shared with the machine's ``SnapshotAssessor``).
    """

    def __init__(self, geometry: Geometry, flags: Optional[PageFile], counts: Optional[PageFile],
                 ram: Sequence[Tuple[int, int, str]], zone_of_block: Dict[int, Optional[Zone]],
                 cma_of_block: Dict[int, int], movable_ops_visible: bool, kinds: np.ndarray,
                 evidence: Optional[Dict[int, BlockEvidence]], pessimistic_kinds: Optional[np.ndarray] = None) -> None:
        self.geometry = geometry
        self.flags = flags
        self.counts = counts
        self.ram = tuple(ram)
        self._ram = np.array([(lo, hi) for lo, hi, _ in ram], dtype=np.int64).reshape(-1, 2)
        self._virtio = np.array([(lo, hi) for lo, hi, name in ram if name == VIRTIO_MEM_RAM],
                                dtype=np.int64).reshape(-1, 2)
        self.zone_of_block = zone_of_block
        self.cma_of_block = cma_of_block
        #: blocks whose zone is assumed (neither valid_zones nor zoneinfo tell it)
        self.zone_assumed: frozenset = frozenset()
        #: online blocks whose ``removable`` read 0
        self.removable_zero: frozenset = frozenset()
        #: the blind spot of a verdict that needed pages this source does not hold (``blind``)
        self.no_page_spot = NO_PAGE_FLAGS
        self.movable_ops_visible = movable_ops_visible
        self.kinds = kinds
        self.evidence = evidence
        self._pessimistic_kinds = pessimistic_kinds
        #: the tree and parsed files behind this source (``describe()`` needs them)
        self.context: Optional["SnapshotContext"] = None

    @property
    def alternative(self) -> Optional["SnapshotPageSource"]:
        """The same pages read pessimistically (ambiguous classes -> worst plausible kind)."""
        if self._pessimistic_kinds is None:
            return None
        return SnapshotPageSource(self.geometry, self.flags, self.counts, self.ram, self.zone_of_block,
                                  self.cma_of_block, self.movable_ops_visible, self._pessimistic_kinds, None)

    # -- reading ---------------------------------------------------------------------------

    def read(self, start_pfn: int, count: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Flags and mapcounts of memory blocks ``[start_pfn, start_pfn + count)``; a file that
        ends inside them is an error naming the first block it cuts. Without page flags (a
        sysfs-only tree) every flag reads 0 and nothing is ever taken from them."""
        if self.flags is None:
            return np.zeros(count, dtype=np.uint64), None
        flags = self.read_flags(start_pfn, count)
        if len(flags) < count:
            ppb = self.geometry.pages_per_block
            block = (start_pfn + len(flags)) // ppb
            raise InputError(f"{self.flags.display}: ends at pfn {start_pfn + len(flags):#x}, but memory block "
                             f"{block} needs pfns up to {(block + 1) * ppb - 1:#x} (truncated?)")
        return flags, self.mapcount(start_pfn, flags)

    def read_flags(self, start_pfn: int, count: int) -> np.ndarray:
        """kpageflags entries ``[start_pfn, start_pfn + count)`` (fewer where the file ends): the
        one place page flags are read."""
        assert self.flags is not None
        return self.flags.read(start_pfn, count)

    @property
    def blind(self) -> bool:
        """No page flags were saved: nothing about the pages is known."""
        return self.flags is None

    def mapcount(self, start_pfn: int, flags: np.ndarray, always: bool = False) -> Optional[np.ndarray]:
        """``/proc/kpagecount`` for these pfns, read only where it tells more than the flags.

        A page is mapped exactly when ``stable_page_flags()`` sets KPF_MMAP (``page_mapped()``,
        or ``folio_mapped()`` on snapshot-based kernels), so the mapcount only matters for
        hugetlb folios (in use vs free); reading it everywhere would double the time spent in
        the kernel producing /proc data.
        """
        if self.counts is None or not (always or kpf.has_huge(flags)):
            return None
        mapcount = self.counts.read(start_pfn, len(flags))
        if len(mapcount) < len(flags):
            raise InputError(f"{self.counts.display}: ends at pfn {start_pfn + len(mapcount):#x}, before "
                             f"{self.flags.display if self.flags else 'kpageflags'} (truncated?)")
        return mapcount

    def _mask(self, ranges: np.ndarray, lo: int, hi: int) -> np.ndarray:
        mask = np.zeros(hi - lo, dtype=bool)
        for a, b in ranges:
            if b > lo and a < hi:
                mask[max(a, lo) - lo:min(b, hi) - lo] = True
        return mask

    def classes_of(self, start_pfn: int, flags: np.ndarray, mapcount: Optional[np.ndarray]) -> np.ndarray:
        """``PageClass`` per pfn with the machine's context: holes, virtio-mem resources."""
        cls = kpf.classify(flags, mapcount, start_pfn, self.movable_ops_visible, self.geometry.pmd_pages)
        end = start_pfn + len(flags)
        cls[~self._mask(self._ram, start_pfn, end)] = PageClass.HOLE
        if len(self._virtio):
            inside = self._mask(self._virtio, start_pfn, end)
            offline = inside & ((flags & np.uint64(kpf.bit(KPF.OFFLINE))) != 0) & (cls != PageClass.HOLE)
            skippable = (flags & np.uint64(kpf.bit(KPF.OWNER_2))) != 0
            cls[offline & ~skippable] = PageClass.FAKE_OFFLINE
            cls[offline & skippable] = PageClass.FAKE_OFFLINE_SKIPPABLE
        return cls

    def block_classes(self, first_block: int, nblocks: int) -> np.ndarray:
        ppb = self.geometry.pages_per_block
        start = first_block * ppb
        if self.flags is None:
            # Nothing known about the pages: read as free (the verdict is then marked unknown,
            # memplan.snapshot.confidence), holes where /proc/iomem has them.
            cls = np.full(nblocks * ppb, int(PageClass.FREE), dtype=np.uint8)
            cls[~self._mask(self._ram, start, start + nblocks * ppb)] = PageClass.HOLE
            return cls.reshape(nblocks, ppb)
        flags, mapcount = self.read(start, nblocks * ppb)
        return self.classes_of(start, flags, mapcount).reshape(nblocks, ppb)

    def record(self, block: int, counts: np.ndarray) -> None:
        if self.evidence is None:
            return
        self.evidence[block] = BlockEvidence(
            block=block, zone=self.zone_of_block.get(block), counts=tuple(int(c) for c in counts),
            zone_cma_pages=self.cma_of_block.get(block, 0), movable_ops_visible=self.movable_ops_visible,
            no_page_data=self.flags is None, zone_assumed=block in self.zone_assumed,
            removable_zero=block in self.removable_zero)

    def materialize(self, block_ids: np.ndarray) -> PageBatch:
        ids = np.asarray(block_ids, dtype=np.int64)
        ppb = self.geometry.pages_per_block
        kinds = np.empty((len(ids), ppb), dtype=np.uint8)
        per_read = max(kpf.CHUNK_PFNS // ppb, 1)  # 16 blocks of 128 MiB, at least one block
        for row, end in consecutive_runs(ids, per_read):
            cls = self.block_classes(int(ids[row]), end - row)
            np.take(self.kinds, cls, out=kinds[row:end])
            if self.evidence is not None:
                for r in range(end - row):
                    self.record(int(ids[row + r]), np.bincount(cls[r], minlength=CLASSES))
        return PageBatch(block_ids=ids, kinds=kinds)


# --------------------------------------------------------------------------------------------
# Loading


def _open_page_files(tree: Tree) -> Tuple[Optional[PageFile], Optional[PageFile], bool]:
    """kpageflags and kpagecount (plain or ``.xz``); ``(None, None, _)`` without kpageflags.
    The flag: a live kpageflags exists but needs root (EPERM/EACCES): read like a tree without
    page flags, never refused."""
    def find(rel: str) -> Optional[PageFile]:
        if tree.live:
            # One reading of the live machine: every later look at a pfn sees the first one.
            return ReadOnce(KpageFile(tree.path(rel), tree.display(rel))) if tree.exists(rel) else None
        return KpageFile.find(tree.path(rel), tree.display(rel))

    try:
        flags = find("proc/kpageflags")
    except NeedsRootError:
        if not tree.live:
            raise
        return None, None, True
    if flags is None:
        if tree.live:
            raise InputError(f"{tree.display('proc/kpageflags')}: missing (the kernel lacks "
                             "CONFIG_PROC_PAGE_MONITOR)")
        return None, None, False
    try:
        counts = find("proc/kpagecount")
    except NeedsRootError:
        if not tree.live:
            raise
        counts = None
    sizes = [f.size_hint() for f in (flags, counts) if f is not None]
    if counts is not None and len(sizes) == 2 and None not in sizes and sizes[0] != sizes[1]:
        raise InputError(f"{counts.display} has {sizes[1]} entries but {flags.display} has {sizes[0]}")
    return flags, counts, False


def _zone_cma(facts: SysrootFacts, block_zone: Dict[int, Optional[Zone]], block_node: Dict[int, int],
              page_shift: int) -> Dict[int, int]:
    by_zone: Dict[Tuple[int, str], Optional[int]] = {(z.node, z.zone): z.cma for z in facts.zones}
    out: Dict[int, int] = {}
    for block, zone in block_zone.items():
        if zone is None:
            continue
        cma = by_zone.get((block_node.get(block, 0), zone.value))
        if cma is None:
            # No per-zone counter (older kernels): CmaTotal 0 rules CMA out everywhere.
            cma = 0 if not facts.cma_total else facts.cma_total >> page_shift
        out[block] = int(cma)
    return out


def _zone_from_zoneinfo(zones: Sequence[ZoneInfo], node: int, lo: int, hi: int) -> Tuple[Optional[Zone], bool]:
    """A block without ``valid_zones``: the one zone whose span meets it (``None``: the block
    spans zones, as ``test_pages_in_a_zone()`` would find; holes do not count), and whether any
    zone span meets the block at all (``False``: its zone is not known)."""
    meet = [z for z in zones if z.node == node and z.start_pfn is not None and z.spanned
            and z.start_pfn < hi and lo < z.start_pfn + z.spanned]
    names = {z.zone for z in meet}
    if len(names) == 1:
        name = names.pop()
        return next((zone for zone in Zone if zone.value == name), None), True
    return None, bool(meet)


def _virtio_regions(iomem: Sequence[Resource]) -> List[Tuple[str, int, int, List[Tuple[int, int]]]]:
    """virtio-mem devices: (id, region start, region end, [System RAM (virtio_mem) byte ranges]).

    virtio-mem adds its memory with ``add_memory_driver_managed(..., "System RAM (virtio_mem)")``
    under the device's own resource (named after the virtio device, spec §6.2).
    """
    groups: Dict[Optional[int], List[Resource]] = {}
    for r in iomem:
        if r.name == VIRTIO_MEM_RAM:
            groups.setdefault(r.parent, []).append(r)
    out = []
    for parent, children in groups.items():
        ranges = sorted((c.start, c.end + 1) for c in children)
        if parent is not None and not iomem[parent].name.startswith("System RAM"):
            p = iomem[parent]
            out.append((p.name, p.start, p.end + 1, ranges))
        else:
            out.append((f"virtio_mem@{ranges[0][0]:#x}", ranges[0][0], ranges[-1][1], ranges))
    return sorted(out, key=lambda d: d[1])


def _common_power_of_two(values: np.ndarray, cap: int) -> int:
    """The largest power of two (<= cap) dividing every value."""
    g = 0
    for v in values.tolist():
        g = math.gcd(g, int(v))
    if g == 0:
        return cap
    return min(g & -g, cap)


def _unit_bound(geometry: Geometry, first_block: int, offline_masks: Dict[int, np.ndarray]) -> Optional[int]:
    """The largest unit (bytes) the runs of fake-offline pages are all aligned to (at most a
    memory block); None without any."""
    ppb = geometry.pages_per_block
    boundaries: List[int] = []
    for block, mask in sorted(offline_masks.items()):
        edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
        boundaries.extend((block * ppb + edges - first_block * ppb).tolist())
    if not boundaries:
        return None
    return _common_power_of_two(np.asarray(boundaries, dtype=np.int64), ppb) * geometry.page_size


def _device_unit(geometry: Geometry, start: int, first_block: int, unit_max: Optional[int],
                 params: Dict[str, str]) -> Tuple[VirtioMemMode, int, int]:
    """The mode, unit size and first unit's block of a device (``virtio_mem_init_hotplug()``).

    Alignment only bounds the unit from above; sb_size = max(device_block_size, pageblock
    size) bounds it from below. Where the bounds differ, the lower one (QEMU's default 2 MiB
    device block) is used and marked as assumed.
    """
    mb = geometry.memory_block_size
    force_bbm = params.get("virtio_mem.force_bbm", "N").upper().startswith("Y")
    if not force_bbm and (unit_max is None or unit_max < mb):
        return VirtioMemMode.SBM, geometry.pageblock_size, first_block
    unit = mb
    try:
        param = int(params.get("virtio_mem.bbm_block_size", "0") or "0", 0)
    except ValueError:
        param = 0
    if param and not param & (param - 1) and param >= mb:
        unit = param
    return VirtioMemMode.BBM, unit, -(-start // unit) * unit // mb


def _sbm_plugged(geometry: Geometry, unit: int, first_unit_block: int, last_block: int, added: Set[int],
                 offline_masks: Dict[int, np.ndarray]) -> Tuple[int, np.ndarray]:
    """SBM: the sub-block count and plugged bitmap (a sub-block is unplugged where all its pages
    are fake-offline)."""
    per = geometry.memory_block_size // unit
    unit_pages = unit // geometry.page_size
    units = max(last_block - first_unit_block, 0) * per
    plugged = np.zeros(units, dtype=bool)
    for b in added:
        u0 = (b - first_unit_block) * per
        if b in offline_masks:
            plugged[u0:u0 + per] = ~offline_masks[b].reshape(per, unit_pages).all(axis=1)
        else:
            plugged[u0:u0 + per] = True
    return units, plugged


def _bbm_plugged(geometry: Geometry, unit: int, first_unit_block: int, end: int, added: Set[int],
                 offline_masks: Dict[int, np.ndarray]) -> Tuple[int, np.ndarray, frozenset]:
    """BBM: the big block count, plugged bitmap (a big block with an added memory block) and the
    FAKE_OFFLINE big blocks (every online page fake-offline)."""
    mb = geometry.memory_block_size
    per_bb = max(unit // mb, 1)
    units = max((end // unit * unit) // mb - first_unit_block, 0) // per_bb
    plugged = np.zeros(units, dtype=bool)
    fake = []
    for bb in range(units):
        members = range(first_unit_block + bb * per_bb, first_unit_block + (bb + 1) * per_bb)
        plugged[bb] = any(b in added for b in members)
        masks = [offline_masks[b] for b in members if b in offline_masks]
        if masks and all(m.all() for m in masks):
            fake.append(bb)
    return units, plugged, frozenset(fake)


def _online_type(zones: Set[Optional[Zone]]) -> OnlineType:
    """How the device's memory was onlined, from the zones of its online blocks."""
    if not zones:
        return OnlineType.OFFLINE
    return OnlineType.MOVABLE if zones == {Zone.MOVABLE} else OnlineType.KERNEL


def _build_device(geometry: Geometry, name: str, start: int, end: int, ranges: Sequence[Tuple[int, int]],
                  blocks: Dict[int, MemoryBlockInfo], offline_masks: Dict[int, np.ndarray], params: Dict[str, str],
                  node: int) -> Tuple[VirtioMemDevice, bool, Optional[int]]:
    """Reconstruct ``virtio_mem_init_hotplug()``'s view of a device from what is visible.

    The plugged bitmap is not exported (spec §6.3): inside an online block, runs of
    fake-offline pages are the unplugged sub-blocks, so their common alignment bounds the
    sub-block size (SBM) from above — whole memory blocks mean BBM (a FAKE_OFFLINE big block).
    Returns the device, whether mode/unit are assumed, and the alignment bound.
    """
    mb = geometry.memory_block_size
    first_block = -(-start // mb)
    last_block = end // mb  # exclusive
    unit_max = _unit_bound(geometry, first_block, offline_masks)
    mode, unit, first_unit_block = _device_unit(geometry, start, first_block, unit_max, params)
    added = {b for b in blocks if first_block <= b < last_block
             and any(lo < (b + 1) * mb and hi > b * mb for lo, hi in ranges)}
    online = [b for b in sorted(added) if blocks[b].state is BlockState.ONLINE] if blocks else []
    fake_units: frozenset = frozenset()
    if mode is VirtioMemMode.SBM:
        units, plugged = _sbm_plugged(geometry, unit, first_unit_block, last_block, added, offline_masks)
    else:
        units, plugged, fake_units = _bbm_plugged(geometry, unit, first_unit_block, end, added, offline_masks)
    online_type = _online_type({blocks[b].zone for b in online})
    unplug_online = params.get("virtio_mem.unplug_online", "Y").upper().startswith("Y")
    device = VirtioMemDevice(
        id=name, addr=start, region_size=end - start, device_block_size=unit, mode=mode, unit_size=unit,
        plugged=plugged, online=online_type, node=node, driver=DriverState.LOADED,
        fake_offline_units=fake_units, unplug_online=unplug_online, first_block=first_unit_block, units=units,
    )
    assumed = unit_max is None or (mode is VirtioMemMode.SBM and unit_max != unit)
    return device, assumed, unit_max


def _virtio_devices(probe: SnapshotPageSource, facts: SysrootFacts, infos: Dict[int, MemoryBlockInfo],
                    block_node: Dict[int, int]) -> Tuple[List[VirtioMemDevice], List[_DeviceFacts], Dict[int, int]]:
    """Every virtio-mem device with its fake-offline pages (read now: they decide the
    semantics), and the device index of each of its memory blocks."""
    geometry = probe.geometry
    mb = geometry.memory_block_size
    devices: List[VirtioMemDevice] = []
    device_facts: List[_DeviceFacts] = []
    device_of_block: Dict[int, int] = {}
    for name, start, end, ranges in _virtio_regions(facts.iomem or ()):
        masks: Dict[int, np.ndarray] = {}
        members = [b for b in sorted(infos) if any(lo < (b + 1) * mb and hi > b * mb for lo, hi in ranges)]
        fake = skippable = kept_back = 0
        for b in members:
            device_of_block[b] = len(devices)
            if infos[b].state is not BlockState.ONLINE:
                continue  # no online memmap: the sub-block state is not visible
            flags, mapcount = probe.read(b * geometry.pages_per_block, geometry.pages_per_block)
            cls = probe.classes_of(b * geometry.pages_per_block, flags, mapcount)
            offline = (cls == PageClass.FAKE_OFFLINE) | (cls == PageClass.FAKE_OFFLINE_SKIPPABLE)
            fake += int(offline.sum())
            skippable += int((cls == PageClass.FAKE_OFFLINE_SKIPPABLE).sum())
            # PageDirty: kept back by the online callback, never handed to the buddy
            # (virtio_mem_set_fake_offline(onlined=false)); otherwise unplugged while online.
            kept_back += int((offline & ((flags & np.uint64(kpf.bit(KPF.DIRTY))) != 0)).sum())
            if offline.any():
                masks[b] = offline
        device, assumed, unit_max = _build_device(geometry, name, start, end, ranges, infos, masks, facts.params,
                                                  block_node.get(members[0], 0) if members else 0)
        devices.append(device)
        device_facts.append(_DeviceFacts(device, assumed, unit_max, tuple(members), fake, skippable, kept_back))
    return devices, device_facts, device_of_block


def load_snapshot(root: str, live: bool = False) -> Machine:
    """Read a sysroot (``/`` when ``live``) into a machine backed by its kpageflags."""
    tree = Tree(root, live)
    flags, counts, needs_root = _open_page_files(tree)
    facts = read_sysroot(tree, flags.size_hint() if flags is not None else None)
    try:
        geometry = geometry_for(facts.memory.block_size, facts.page.size)
    except ValueError as exc:
        raise InputError(f"{tree.display(MEMORY_DIR + '/block_size_bytes')}: {exc}") from None
    if geometry.pageblock_size > geometry.memory_block_size:  # no kernel has it (a block holds whole pageblocks)
        raise InputError(f"{tree.display(MEMORY_DIR + '/block_size_bytes')}: memory blocks of "
                         f"{geometry.memory_block_size:#x} bytes are smaller than a pageblock "
                         f"({geometry.pageblock_size:#x}) of the {facts.page.size}-byte pages the tree has "
                         f"({facts.page.how})")
    warnings = _input_warnings(tree, facts, flags, counts, needs_root)
    ppb = geometry.pages_per_block
    ram = (ram_ranges(facts.iomem, geometry.page_shift) if facts.iomem is not None
           else _block_ram(facts.memory.blocks, ppb))
    infos = {b.id: b for b in facts.memory.blocks}
    # A block linked under several nodes spans them (node -1; ``_block_table()`` splits it).
    block_node = {b.id: -1 if len(b.nodes) > 1 else (b.node if b.node is not None else 0) for b in facts.memory.blocks}
    block_zone, zone_assumed = _block_zones(facts, block_node, ppb)
    if zone_assumed:
        warnings.append(f"memory blocks {format_block_ranges(zone_assumed)}: no valid_zones and no /proc/zoneinfo "
                        "span says their zone; judged as ZONE_NORMAL, and verdicts that depend on it are unknown")
    movable_ops_visible = facts.release is not None and versions.at_least(facts.release, versions.MOVABLE_OPS_FLAG)

    evidence: Dict[int, BlockEvidence] = {}
    probe = SnapshotPageSource(geometry, flags, counts, ram, block_zone, {}, movable_ops_visible,
                               kpf.PRIMARY_KINDS, None)
    devices, device_facts, device_of_block = _virtio_devices(probe, facts, infos, block_node)
    semantics, reason = detect_semantics(sum(d.fake_offline for d in device_facts),
                                         sum(d.skippable for d in device_facts), facts.release, bool(devices), tree)
    primary, pessimistic = _page_kinds(semantics)
    vmemmap = _self_hosted_memmap(probe, geometry, facts, infos, device_of_block)
    table = _block_table(facts, ram, block_zone, block_node, vmemmap, device_of_block, ppb)
    cma = _zone_cma(facts, block_zone, block_node, geometry.page_shift)
    source = SnapshotPageSource(geometry, flags, counts, ram, block_zone, cma, movable_ops_visible, primary, evidence,
                                pessimistic)
    no_page_spot = NO_PAGE_FLAGS_ROOT if needs_root else NO_PAGE_FLAGS
    assessor = SnapshotAssessor(evidence, source.alternative, no_page_spot)
    assessor.going_offline = frozenset(b.id for b in facts.memory.blocks if b.state is BlockState.GOING_OFFLINE)
    name = socket.gethostname() if live else os.path.basename(os.path.normpath(root)) or root
    machine = Machine(
        name=name, source="live" if live else root, geometry=geometry, blocks=table, pages=source,
        devices=tuple(devices), environment=Environment(hugetlb=_pools(facts, geometry)), default_semantics=semantics,
        nodes=max(block_node.values()) + 1 if block_node else 1, kernel=facts.release, warnings=tuple(warnings),
        assessor=assessor,
        semantics_reason=reason, page_data=flags is not None,
        devices_unseen=(f"{tree.display('proc/iomem')} reads every address as 0 without root" if facts.iomem_hidden
                        else f"{tree.display('proc/iomem')} is missing" if facts.iomem is None else None),
    )
    source.zone_assumed = frozenset(zone_assumed)
    source.removable_zero = frozenset(b.id for b in facts.memory.blocks
                                      if b.removable == 0 and b.state is BlockState.ONLINE)
    source.no_page_spot = no_page_spot
    source.context = SnapshotContext(tree, facts, tuple(device_facts))
    return machine


def _input_warnings(tree: Tree, facts: SysrootFacts, flags: Optional[PageFile],
                    counts: Optional[PageFile], needs_root: bool = False) -> List[str]:
    """What the tree lacks, one warning each (a guessed page size, missing page files, iomem, release)."""
    warnings: List[str] = []
    if facts.page.guessed:
        warnings.append(f"page size {facts.page.size // 1024} KiB {facts.page.how}")
    if needs_root:
        warnings.append(f"{tree.display('proc/kpageflags')}: reading page flags needs root; every verdict that "
                        "depends on the pages is unknown (run memplan as root to read them)")
    elif flags is None:
        warnings.append(f"{tree.display('proc/kpageflags')} missing (also no .xz copy): no page flags saved, so "
                        "every verdict that depends on the pages is unknown; `memplan snapshot --save DIR` on the "
                        "machine saves a tree that has them")
    elif counts is None:
        warnings.append(f"{tree.display('proc/kpagecount')} missing: hugetlb folios in use look free")
    if facts.iomem_hidden:
        warnings.append(f"{tree.display('proc/iomem')}: every address reads 0 (physical addresses need root): "
                        "memory holes and virtio-mem devices are not visible; every present block is taken as all "
                        "System RAM")
    elif facts.iomem is None:
        warnings.append(f"{tree.display('proc/iomem')} missing: memory holes and virtio-mem devices are not "
                        "visible; every present block is taken as all System RAM")
    if facts.release is None:
        warnings.append("no kernel release in the tree (proc/sys/kernel/osrelease, proc/osrelease): "
                        "assuming the newest mainline rules")
    return warnings


def _block_zones(facts: SysrootFacts, block_node: Dict[int, int],
                 ppb: int) -> Tuple[Dict[int, Optional[Zone]], List[int]]:
    """Each block's zone (``valid_zones``, else its zoneinfo span), and the blocks whose zone
    nothing says (judged as ZONE_NORMAL)."""
    block_zone: Dict[int, Optional[Zone]] = {}
    zone_assumed: List[int] = []
    for b in facts.memory.blocks:
        zone = b.zone
        if not b.valid_zones:
            zone, seen = _zone_from_zoneinfo(facts.zones, block_node[b.id], b.id * ppb, (b.id + 1) * ppb)
            if not seen:
                # Neither valid_zones nor a zoneinfo span: the zone is not known. Not "none"
                # (that would be a certain -EINVAL); judged as ZONE_NORMAL and marked unknown.
                zone = Zone.NORMAL
                zone_assumed.append(b.id)
        block_zone[b.id] = zone
    return block_zone, zone_assumed


def _page_kinds(semantics: str) -> Tuple[np.ndarray, np.ndarray]:
    """The primary and pessimistic page kind of every ``PageClass`` under this semantics."""
    primary, pessimistic = kpf.PRIMARY_KINDS.copy(), kpf.PESSIMISTIC_KINDS.copy()
    # What a fake-offline page without KPF_OWNER_2 is depends on the semantics: under
    # PG_offline_skippable an ordinary, unmovable PageOffline page
    # (virtio_mem_sbm_mark_mb_non_skippable()).
    unflagged = int(get_semantics(semantics).unflagged_fake_offline_kind)
    primary[int(PageClass.FAKE_OFFLINE)] = pessimistic[int(PageClass.FAKE_OFFLINE)] = unflagged
    return primary, pessimistic


def _block_table(facts: SysrootFacts, ram: Sequence[Tuple[int, int, str]], block_zone: Dict[int, Optional[Zone]],
                 block_node: Dict[int, int], vmemmap: Dict[int, int], device_of_block: Dict[int, int],
                 ppb: int) -> BlockTable:
    """The machine's block table, in the order of the memory block directories."""
    # A block linked under several nodes spans them; each node's part comes from its zoneinfo spans.
    spans = {b.id: _node_parts(ram, facts.zones, b.nodes, b.id * ppb, (b.id + 1) * ppb)
             for b in facts.memory.blocks if len(b.nodes) > 1}
    return BlockTable(
        ids=[b.id for b in facts.memory.blocks],
        state=[BlockTable.STATES.index(b.state) for b in facts.memory.blocks],
        zone=[_zone_code(block_zone[b.id]) for b in facts.memory.blocks],
        node=[block_node[b.id] for b in facts.memory.blocks],
        ram_pages=[_ram_pages(ram, b.id * ppb, (b.id + 1) * ppb) for b in facts.memory.blocks],
        vmemmap=[vmemmap.get(b.id, 0) for b in facts.memory.blocks],
        device=[device_of_block.get(b.id, -1) for b in facts.memory.blocks],
        spans=spans,
    )


def _pools(facts: SysrootFacts, geometry: Geometry) -> Dict[int, HugetlbPool]:
    """Pool counters as read; an hstate the tree says nothing about is counted from the pages
    (``free=None``: memplan.engine.context.resolve_pools())."""
    return {h.order: HugetlbPool(free=h.free, resv=h.resv) for h in facts.hugepages.values()
            if h.order in geometry.hugetlb_orders}


@dataclass(frozen=True)
class SnapshotContext:
    """The tree and parsed files behind a snapshot machine (for ``describe()``)."""

    tree: Tree
    facts: SysrootFacts
    devices: Tuple[_DeviceFacts, ...]


def _self_hosted_memmap(source: SnapshotPageSource, geometry: Geometry, facts: SysrootFacts,
                        infos: Dict[int, MemoryBlockInfo], device_of_block: Dict[int, int]) -> Dict[int, int]:
    """memmap_on_memory blocks: the first ``nr_vmemmap`` pages host the block's own memmap and
    are left out of offline_pages() (spec §1.4, P18).

    ``mhp_init_memmap_on_memory()`` marks each of them ``SetPageVmemmapSelfHosted()``
    (PG_owner_priv_1 = KPF_OWNER_PRIVATE; older kernels also PG_reserved). That flag is
    ambiguous on its own, so it counts only where the module parameter enables the feature
    (``Y``, or ``force``: rounded up to whole pageblocks); virtio-mem never uses it.
    """
    mode = facts.params.get("memory_hotplug.memmap_on_memory", "N").strip().lower()
    if mode not in ("y", "1", "force"):
        return {}
    pages = geometry.vmemmap_pages_per_block
    pb = geometry.pageblock_pages
    if pages % pb:
        if mode != "force":
            return {}
        pages = -(-pages // pb) * pb
    ppb = geometry.pages_per_block
    out: Dict[int, int] = {}
    for block, info in sorted(infos.items()):
        if info.state is not BlockState.ONLINE or block in device_of_block:
            continue
        flags, _ = source.read(block * ppb, pages)
        if ((flags & np.uint64(kpf.bit(KPF.OWNER_PRIVATE))) != 0).all():
            out[block] = pages
    return out


def _block_ram(blocks: Sequence[MemoryBlockInfo], ppb: int) -> List[Tuple[int, int, str]]:
    """Without /proc/iomem: every present block is System RAM (runs of consecutive blocks)."""
    out: List[Tuple[int, int, str]] = []
    for b in blocks:
        lo, hi = b.id * ppb, (b.id + 1) * ppb
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi, out[-1][2])
        else:
            out.append((lo, hi, "System RAM"))
    return out


def _zone_code(zone: Optional[Zone]) -> int:
    return zone.code if zone is not None else ZONE_NONE


def _ram_pages(ram: Sequence[Tuple[int, int, str]], lo: int, hi: int) -> int:
    return sum(max(0, min(b, hi) - max(a, lo)) for a, b, _ in ram)


def _node_parts(ram: Sequence[Tuple[int, int, str]], zones: Sequence[ZoneInfo], nodes: Sequence[int], lo: int,
                hi: int) -> Dict[int, int]:
    """System RAM pages of ``[lo, hi)`` per node, from each node's zone spans (zoneinfo
    ``start_pfn`` + ``spanned``); nothing without zoneinfo."""
    out: Dict[int, int] = {}
    for z in zones:
        if z.node in nodes and z.start_pfn is not None and z.spanned:
            a, b = max(lo, z.start_pfn), min(hi, z.start_pfn + z.spanned)
            if b > a:
                out[z.node] = out.get(z.node, 0) + _ram_pages(ram, a, b)
    return out


def detect_semantics(fake_offline: int, skippable: int, release: Optional[str], has_device: bool,
                     tree: Optional[Tree] = None) -> Tuple[str, str]:
    """The semantics (name) and why (spec §5.1 last rows: KPF_OWNER_2 = PG_offline_skippable).

    Only virtio-mem sets PG_offline_skippable, and only on its fake-offline pages: when any
    carries the flag, the semantics that marks them (``OfflineSemantics.marks_fake_offline``).
    Otherwise the kernel's BTF, where the tree has it, says whether the kernel knows the flag
    (``btf_names_skippable()``; a patched kernel whose virtio-mem was unloaded cleared the flag,
    ``virtio_mem_sbm_mark_mb_non_skippable()``). Without either, unflagged fake-offline pages
    mean the semantics that does not mark them, mainline first; with no fake-offline page at all
    the page flags cannot tell, and the reason says so and how to find out.
    """
    kernel = f"kernel {release}" if release else "unknown kernel"
    if skippable:
        return semantics_marking(True).name, (f"{skippable} of {fake_offline} fake-offline pages carry KPF_OWNER_2 "
                                              "(PG_offline_skippable, the posted patch)")
    btf, looked = btf_names_skippable(tree) if tree is not None else (None, "")
    if fake_offline:
        seen = f"none of the {fake_offline} fake-offline pages carries KPF_OWNER_2 (PG_offline_skippable)"
        if btf:
            return semantics_marking(True).name, (f"{seen}, but {looked}: a patched kernel (virtio-mem, when "
                                                  f"unloaded, clears the flag); {kernel}")
        return semantics_marking(False).name, f"{seen}; {kernel}"
    where = "the virtio-mem device has no fake-offline pages" if has_device else "no virtio-mem device"
    if btf is not None:
        return semantics_marking(btf).name, f"{looked} ({where} to read KPF_OWNER_2 from); {kernel}"
    return semantics_marking(False).name, (
        f"the semantics could not be told from the page flags ({where} to read KPF_OWNER_2 from); assuming "
        f"{MAINLINE}, which every released kernel uses (PG_offline_skippable was never merged); {kernel}; to tell, "
        f"run grep -a PG_offline_skippable /sys/kernel/btf/vmlinux on the host (a match: the patched kernel)"
        + (f"; {looked}" if looked else ""))


# --------------------------------------------------------------------------------------------
# The full pass: memplan snapshot


def _snapshot_of(machine: Machine) -> SnapshotContext:
    context = getattr(machine.pages, "context", None)
    if not isinstance(machine.pages, SnapshotPageSource) or context is None:
        raise UsageError(f"{machine.source} is not a snapshot")
    return context


def machine_blind_spots(facts: SysrootFacts, class_pages: np.ndarray, movable_ops_visible: bool,
                        semantics: str, zones: Sequence[ZoneCount] = (), page_flags: bool = True,
                        no_page_spot: str = NO_PAGE_FLAGS) -> List[str]:
    """What this snapshot cannot see, machine-wide (spec §6.3)."""
    out: List[str] = [] if page_flags else [no_page_spot]
    unflagged = int(class_pages[PageClass.UNFLAGGED])
    if unflagged:
        out.append(f"{unflagged} pages in memory blocks carry no flag: free per-CPU pages, or untyped kernel "
                   "allocations (vmalloc, kernel stacks, driver pages) that a snapshot cannot tell apart")
    lru = int(class_pages[PageClass.LRU_ANON] + class_pages[PageClass.LRU_FILE] + class_pages[PageClass.THP])
    if lru:
        out.append(f"{lru} LRU pages may carry extra references (vmsplice, long-term pins) a snapshot cannot see; "
                   "such a page makes offlining hang")
    if foreign_reference_blocks(get_semantics(semantics)) and class_pages[PageClass.FAKE_OFFLINE]:
        out.append("fake-offline pages: their refcount is not exported; an extra reference fails offlining")
    unmapped = int(class_pages[PageClass.HUGETLB_UNMAPPED] + class_pages[PageClass.GIGANTIC_UNMAPPED])
    if unmapped:
        out.append(f"{unmapped} hugetlb pages are not mapped: free in the pool, or in use but not migratable yet")
    if class_pages[PageClass.BALLOON_UNKNOWN] and not movable_ops_visible:
        out.append("PageOffline pages outside virtio-mem: balloon compaction (movable_ops) is exported only "
                   "from 6.17 on")
    for z in zones:
        if z.unflagged > z.pcp:
            unmanaged = max(z.present - z.managed, 0)
            out.append(f"zone {z.zone} (node {z.node}): {z.unflagged} no-flag pages but only {z.pcp} on the per-CPU "
                       f"free lists (zoneinfo), so most are not free per-CPU pages; {unmanaged} present pages are "
                       "not managed by the page allocator")
    out.append("pageblock migratetypes and CMA pageblocks are not exported per pfn"
               + (f" (CMA pages: {sum(z.cma or 0 for z in facts.zones)})" if facts.zones else ""))
    return out


@dataclass
class _Scan:
    """What one pass over kpageflags/kpagecount counted."""

    histogram: FlagsHistogram
    #: pages per ``PageClass`` in online blocks
    class_pages: np.ndarray
    #: no-flag pages per (node, zone name)
    unflagged_by_zone: Dict[Tuple[int, str], int]
    #: pfns read (where the flags end, if before the last present block)
    pfns: int = 0


def _scan(source: SnapshotPageSource, table: BlockTable, facts: SysrootFacts,
          writer: Optional["_TreeWriter"]) -> _Scan:
    """Stream the page flags chunk by chunk: the histogram, the class counts of every online
    block (recorded in the page source), the no-flag pages per zone, and the saved tree's pages."""
    ppb = source.geometry.pages_per_block
    scan = _Scan(FlagsHistogram(), np.zeros(CLASSES, dtype=np.int64), {})
    block_rows = {int(b): i for i, b in enumerate(table.ids)}
    chunk = max(kpf.CHUNK_PFNS // ppb, 1) * ppb
    start = 0
    # Only as far as the memory map needs (the last present block), never to the end of a
    # file that may be huge, sparse or endless (issue 14 §2).
    limit = (int(table.ids.max()) + 1) * ppb if len(table) and not source.blind else 0
    while start < limit:
        want = min(chunk, limit - start)
        flags = source.read_flags(start, want)
        if len(flags) == 0:
            break
        mapcount = source.mapcount(start, flags, always=writer is not None)
        scan.histogram.add(start, flags)
        if writer is not None:
            writer.pages(flags, mapcount)
        # Classify exactly as the page source does (mapcount only where hugetlb pages are).
        cls = source.classes_of(start, flags, mapcount if kpf.has_huge(flags) else None)
        _count_blocks(scan, source, table, block_rows, facts, start, cls)
        scan.pfns = start + len(flags)
        if len(flags) < want:
            break
        start += chunk
    return scan


def _count_blocks(scan: _Scan, source: SnapshotPageSource, table: BlockTable, block_rows: Dict[int, int],
                  facts: SysrootFacts, start: int, cls: np.ndarray) -> None:
    """Count the classes of the online blocks in one chunk (``cls`` from pfn ``start``)."""
    ppb = source.geometry.pages_per_block
    first_block = start // ppb
    for i in range(-(-len(cls) // ppb)):
        block = first_block + i
        row = block_rows.get(block)
        part = cls[i * ppb:(i + 1) * ppb]
        if row is None or table.state[row] != 0:
            continue
        counts = np.bincount(part, minlength=CLASSES)
        scan.class_pages += counts
        if len(part) == ppb:
            source.record(block, counts)
        _count_unflagged(scan.unflagged_by_zone, facts.zones, table.zone_of(row), int(table.node[row]),
                         block * ppb, part, int(counts[PageClass.UNFLAGGED]))


def _check_flags_cover_online_blocks(source: SnapshotPageSource, table: BlockTable, pfns: int) -> None:
    """A kpageflags that ends before an online block does is truncated: an error, not a guess."""
    ppb = source.geometry.pages_per_block
    online_end = [(int(b) + 1) * ppb for b, st in zip(table.ids, table.state) if st == 0]
    if online_end and max(online_end) > pfns and source.flags is not None:
        short = int(table.ids[table.state == 0][np.argmax(np.asarray(online_end) > pfns)])
        raise InputError(f"{source.flags.display}: ends at pfn {pfns:#x}, but online memory block {short} needs "
                         f"pfns up to {(short + 1) * ppb - 1:#x} (truncated?)")


def _block_groups(table: BlockTable, geo: Geometry) -> Tuple[BlockGroup, ...]:
    """Memory blocks counted by (state, zone)."""
    groups: Dict[Tuple[str, str], int] = {}
    for row in range(len(table)):
        zone = table.zone_of(row)
        key = (table.state_of(row).value, zone.value if zone else "none")
        groups[key] = groups.get(key, 0) + 1
    return tuple(BlockGroup(s, z, n, n * geo.memory_block_size) for (s, z), n in sorted(groups.items()))


def describe(machine: Machine, save_to: Optional[str] = None) -> SnapshotReport:
    """One streaming pass over kpageflags/kpagecount: the report ``memplan snapshot`` prints
    (and, with ``save_to``, a saved tree: the only thing memplan ever writes)."""
    context = _snapshot_of(machine)
    tree, facts, device_facts = context.tree, context.facts, context.devices
    source: SnapshotPageSource = machine.pages  # type: ignore[assignment]
    geo = machine.geometry
    writer = _TreeWriter(save_to, tree, geo.page_size, not source.blind) if save_to else None
    try:
        scan = _scan(source, machine.blocks, facts, writer)
        if writer is not None:
            writer.finish()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    _check_flags_cover_online_blocks(source, machine.blocks, scan.pfns)
    histogram, class_pages = scan.histogram, scan.class_pages
    kinds = source.kinds
    classes = tuple(ClassCount(c.label, CLASS_MEANING[c], int(class_pages[c]), PageKind(int(kinds[int(c)])).label)
                    for c in PageClass if class_pages[c])
    flag_rows = tuple(FlagsCount(r.flags, r.pages, r.symbolic, r.long_symbolic) for r in histogram.rows())
    zones = tuple(ZoneCount(z.node, z.zone, z.present, z.managed, z.free, z.pcp, z.cma,
                            scan.unflagged_by_zone.get((z.node, z.zone), 0)) for z in facts.zones if z.present)
    devices = tuple(DeviceSummary(d.device.id, d.device.addr, d.device.region_size, d.device.mode.value,
                                  d.device.unit_size, d.assumed, d.unit_max, d.device.plugged_size, d.blocks,
                                  d.fake_offline, d.kept_back, d.skippable) for d in device_facts)
    return SnapshotReport(
        source=machine.source, machine=machine.name, kernel=machine.kernel, block_size=geo.memory_block_size,
        pfns=scan.pfns, page_size=geo.page_size, page_size_source=facts.page.how, flags_saved=not source.blind,
        block_groups=_block_groups(machine.blocks, geo), classes=classes, flags=flag_rows,
        zones=zones, devices=devices, semantics=machine.default_semantics or MAINLINE,
        semantics_reason=machine.semantics_reason or "",
        blind_spots=tuple(machine_blind_spots(facts, class_pages, source.movable_ops_visible,
                                              machine.default_semantics or MAINLINE, zones,
                                              not source.blind, source.no_page_spot)),
        warnings=machine.warnings, page_types=histogram.summary(geo.page_size),
        saved_to=save_to,
    )


def _count_unflagged(out: Dict[Tuple[int, str], int], zones: Sequence[ZoneInfo], zone: Optional[Zone], node: int,
                     start_pfn: int, classes: np.ndarray, total: int) -> None:
    """Attribute a block's no-flag pages to zones: the block's zone, or — for a block that
    spans zones (``valid_zones`` none) — the zoneinfo span each page falls in."""
    if not total:
        return
    if zone is not None:
        out[(node, zone.value)] = out.get((node, zone.value), 0) + total
        return
    pfns = start_pfn + np.flatnonzero(classes == PageClass.UNFLAGGED)
    for z in zones:
        if (z.node == node or node < 0) and z.start_pfn is not None and z.spanned:  # node -1: spans nodes
            hit = int(np.count_nonzero((pfns >= z.start_pfn) & (pfns < z.start_pfn + z.spanned)))
            if hit:
                out[(z.node, z.zone)] = out.get((z.node, z.zone), 0) + hit


class _TreeWriter:
    """Writes a saved sysroot under one directory: the text files as read, kpageflags and
    kpagecount xz-compressed in independent chunks as they stream by (``ingest``). Everything
    goes to a temporary directory beside DIR, renamed to DIR at the end: never overwrites
    anything, never leaves a half-written tree."""

    def __init__(self, dest: str, tree: Tree, page_size: int, with_pages: bool = True) -> None:
        self.final = os.path.abspath(dest)
        self.page_size = page_size
        if os.path.exists(self.final) and (not os.path.isdir(self.final) or os.listdir(self.final)):
            raise UsageError(f"--save {dest}: exists and is not an empty directory")
        self.tree = tree
        self._created: List[str] = []
        self._flags: Optional[ingest.ChunkedXzWriter] = None
        self._counts: Optional[ingest.ChunkedXzWriter] = None
        try:
            self.dest = ingest.temp_dir_beside(self.final)
            if with_pages:  # a tree without page flags is saved without them (not with empty ones)
                self._flags = ingest.ChunkedXzWriter(self._new("proc/kpageflags.xz"))
                self._counts = ingest.ChunkedXzWriter(self._new("proc/kpagecount.xz"))
        except OSError as exc:
            raise UsageError(f"--save {dest}: {exc.strerror or exc}") from None
        self._have_counts = False

    def _new(self, rel: str) -> str:
        path = os.path.join(self.dest, rel)
        if not path.startswith(self.dest + os.sep):
            raise UsageError(f"--save: refusing to write outside {self.dest}: {rel}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._created.append(path)
        return path

    def pages(self, flags: np.ndarray, mapcount: Optional[np.ndarray]) -> None:
        assert self._flags is not None and self._counts is not None
        self._flags.write(flags.astype("<u8", copy=False).tobytes())
        if mapcount is not None:
            self._have_counts = True
            self._counts.write(mapcount.astype("<u8", copy=False).tobytes())

    def finish(self) -> None:
        try:
            for stream in (self._flags, self._counts):
                if stream is not None:
                    stream.close()
            if self._counts is not None and not self._have_counts:
                os.unlink(os.path.join(self.dest, "proc/kpagecount.xz"))
            # The page size, which no sysfs/procfs file states (memplan.snapshot.pagesize).
            texts = {**self.tree.texts, PAGE_SIZE_FILE: f"{self.page_size}\n"}
            for rel, text in sorted(texts.items()):
                with open(self._new(rel), "x") as handle:
                    handle.write(text)
            for rel, target in sorted(self.tree.links.items()):
                path = self._new(rel)
                try:
                    os.symlink(target or "../node", path)
                except OSError:
                    open(path, "x").close()
            ingest.rename_into_place(self.dest, self.final)
        except OSError as exc:
            raise UsageError(f"--save {self.final}: {exc.strerror or exc}") from None

    def abort(self) -> None:
        """Remove what this writer created (and only that): no half-written tree is left."""
        for handle in (self._flags, self._counts):
            if handle is not None:
                handle.abort()
        ingest.remove_temp_dir(self.dest)
