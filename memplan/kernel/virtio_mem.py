"""virtio-mem: device geometry, SBM/BBM block states and fake-offline pages.

Mirrors ``drivers/virtio/virtio_mem.c`` (ML-NEW torvalds/linux @ c17ee635):
``virtio_mem_init_hotplug()`` (sub-block size, SBM/BBM choice, big-block size),
``enum virtio_mem_sbm_mb_state`` / ``enum virtio_mem_bbm_bb_state`` and
``virtio_mem_online_page()`` (which pages stay fake-offline while a block is online).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from memplan.core.geometry import Geometry
from memplan.core.machine import Ints, VirtioMemDevice
from memplan.core.model import DriverState, OnlineType, VirtioMemMode, Zone
from memplan.core.units import format_block_ranges


class SbmState(str, Enum):
    """``enum virtio_mem_sbm_mb_state`` (without the ``VIRTIO_MEM_SBM_MB_`` prefix)."""

    UNUSED = "UNUSED"
    PLUGGED = "PLUGGED"
    OFFLINE = "OFFLINE"
    OFFLINE_PARTIAL = "OFFLINE_PARTIAL"
    KERNEL = "KERNEL"
    KERNEL_PARTIAL = "KERNEL_PARTIAL"
    MOVABLE = "MOVABLE"
    MOVABLE_PARTIAL = "MOVABLE_PARTIAL"


class BbmState(str, Enum):
    """``enum virtio_mem_bbm_bb_state`` (without the ``VIRTIO_MEM_BBM_BB_`` prefix)."""

    UNUSED = "UNUSED"
    PLUGGED = "PLUGGED"
    ADDED = "ADDED"
    FAKE_OFFLINE = "FAKE_OFFLINE"


#: the SBM states of an added memory block, indexed by ``sbm_state_index()``
SBM_ADDED_STATES: Tuple[SbmState, ...] = (SbmState.OFFLINE_PARTIAL, SbmState.OFFLINE, SbmState.MOVABLE_PARTIAL,
                                          SbmState.MOVABLE, SbmState.KERNEL_PARTIAL, SbmState.KERNEL)
#: the BBM states of a big block with added memory blocks, indexed by ``fake_offline``
BBM_ADDED_STATES: Tuple[BbmState, ...] = (BbmState.ADDED, BbmState.FAKE_OFFLINE)


def sbm_state_index(online: Any, movable: Any, fully_plugged: Any) -> Any:
    """Index into ``SBM_ADDED_STATES`` of added memory blocks (bools or numpy bool arrays):
    ``virtio_mem_sbm_notify_online()`` sets KERNEL or MOVABLE by the block's zone,
    ``virtio_mem_sbm_notify_offline()`` OFFLINE; each ``_PARTIAL`` while a sub-block of the
    block is unplugged (``virtio_mem_sbm_test_sb_plugged()`` of all of them fails)."""
    return np.where(online, np.where(movable, 2, 4), 0) + np.asarray(fully_plugged, dtype=np.int8)


def sbm_state(added: bool, online: bool, movable: bool, fully_plugged: bool) -> SbmState:
    """``virtio_mem_sbm_get_mb_state()`` of one memory block (UNUSED: not added)."""
    if not added:
        return SbmState.UNUSED
    return SBM_ADDED_STATES[int(sbm_state_index(online, movable, fully_plugged))]


def bbm_state(plugged: bool, fake_offline: bool) -> BbmState:
    """``virtio_mem_bbm_get_bb_state()`` of one big block (UNUSED: nothing plugged)."""
    if not plugged:
        return BbmState.UNUSED
    return BBM_ADDED_STATES[int(fake_offline)]


class DeviceConfigError(ValueError):
    """The device description is inconsistent; ``key`` names the offending profile key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def subblock_size(geometry: Geometry, device_block_size: int) -> int:
    """``sb_size = max(device_block_size, PAGE_SIZE * pageblock_nr_pages)`` (2 MiB on x86-64)."""
    return max(device_block_size, geometry.pageblock_size)


def select_mode(geometry: Geometry, device_block_size: int, force_bbm: bool = False) -> VirtioMemMode:
    """SBM iff the sub-block is smaller than a memory block and ``force_bbm`` is off."""
    if subblock_size(geometry, device_block_size) < geometry.memory_block_size and not force_bbm:
        return VirtioMemMode.SBM
    return VirtioMemMode.BBM


def big_block_size(geometry: Geometry, device_block_size: int, param: int = 0) -> Tuple[int, Optional[str]]:
    """``bb_size = max(device_block_size, memory_block_size)``; ``bbm_block_size`` overrides it
    only if it is a power of two and not smaller (else the kernel warns and ignores it)."""
    size = max(device_block_size, geometry.memory_block_size)
    if not param:
        return size, None
    if param & (param - 1):
        return size, "bbm_block_size is not a power of 2"
    if param < size:
        return size, "bbm_block_size is too small"
    return param, None


def default_kernel_zone(geometry: Geometry, start_pfn: int) -> Zone:
    """``default_kernel_zone_for_pfn()`` for hotplugged memory on x86-64: the lowest kernel
    zone whose span contains the range (DMA < 16 MiB, DMA32 < 4 GiB, else Normal)."""
    address = geometry.address(start_pfn)
    if address < 16 << 20:
        return Zone.DMA
    if address < 4 << 30:
        return Zone.DMA32
    return Zone.NORMAL


def configure(
    geometry: Geometry,
    *,
    id: str,
    addr: int,
    region_size: int,
    device_block_size: int,
    mode: str = "auto",
    bbm_block_size: int = 0,
    plugged_blocks: Optional[Ints] = None,
    plugged_size: Optional[int] = None,
    online: OnlineType = OnlineType.MOVABLE,
    node: int = 0,
    driver: DriverState = DriverState.LOADED,
    fake_offline_big_blocks: Sequence[int] = (),
    unplug_online: bool = True,
    offline_blocks: Sequence[int] = (),
) -> Tuple[VirtioMemDevice, List[str]]:
    """Build a device the way ``virtio_mem_init_hotplug()`` sees it; returns it and warnings."""
    warnings: List[str] = []
    if device_block_size <= 0 or device_block_size & (device_block_size - 1):
        raise DeviceConfigError("block_size", f"{device_block_size:#x} is not a power of two")
    if device_block_size < geometry.page_size:
        raise DeviceConfigError("block_size", f"{device_block_size:#x} is smaller than a page")
    if addr % geometry.memory_block_size:
        raise DeviceConfigError("addr", f"{addr:#x} is not aligned to the memory block size "
                                f"({geometry.memory_block_size >> 20} MiB)")
    if region_size <= 0 or region_size % device_block_size:
        raise DeviceConfigError("region_size", f"{region_size:#x} is not a multiple of the device block size")
    chosen = _choose_mode(geometry, device_block_size, mode)
    unit, usable_start, units = _units(geometry, id, addr, region_size, device_block_size, chosen, bbm_block_size,
                                       warnings)
    head = (usable_start - addr) // device_block_size
    plugged = _plugged_units(region_size // device_block_size, head, units, unit // device_block_size, unit,
                             device_block_size, chosen, plugged_blocks, plugged_size)
    fake_offline = frozenset(int(b) for b in fake_offline_big_blocks)
    if fake_offline and chosen is not VirtioMemMode.BBM:
        raise DeviceConfigError("fake_offline_big_blocks", "only applies to Big Block Mode")
    for bb in fake_offline:
        if not 0 <= bb < units or not plugged[bb]:
            raise DeviceConfigError("fake_offline_big_blocks", f"big block {bb} is not plugged")

    device = VirtioMemDevice(
        id=id, addr=addr, region_size=region_size, device_block_size=device_block_size, mode=chosen,
        unit_size=unit, plugged=plugged, online=online, node=node, driver=driver,
        fake_offline_units=fake_offline, unplug_online=unplug_online,
        first_block=usable_start // geometry.memory_block_size, units=units,
    )
    if offline_blocks:
        device = _with_offline_blocks(device, geometry, offline_blocks)
    return device, warnings


def _choose_mode(geometry: Geometry, device_block_size: int, mode: str) -> VirtioMemMode:
    """``auto`` picks what the driver picks; ``sbm`` must be possible; ``bbm`` is ``force_bbm=1``."""
    auto = select_mode(geometry, device_block_size)
    if mode == "auto":
        return auto
    if mode == "sbm":
        if auto is not VirtioMemMode.SBM:
            raise DeviceConfigError("mode", "SBM needs a sub-block smaller than a memory block "
                                    f"(sub-block {subblock_size(geometry, device_block_size) >> 20} MiB)")
        return VirtioMemMode.SBM
    if mode == "bbm":
        return VirtioMemMode.BBM
    raise DeviceConfigError("mode", f"{mode!r} is not one of auto, sbm, bbm")


def _units(geometry: Geometry, id: str, addr: int, region_size: int, device_block_size: int, chosen: VirtioMemMode,
           bbm_block_size: int, warnings: List[str]) -> Tuple[int, int, int]:
    """The (un)plug unit, the first usable address and how many units fit into the region."""
    if chosen is VirtioMemMode.SBM:
        if bbm_block_size:
            raise DeviceConfigError("bbm_block_size", "only applies to Big Block Mode")
        unit = subblock_size(geometry, device_block_size)
        mb = geometry.memory_block_size
        usable_start = -(-addr // mb) * mb
        usable_end = (addr + region_size) // mb * mb
    else:
        unit, warning = big_block_size(geometry, device_block_size, bbm_block_size)
        if warning:
            warnings.append(f"virtio-mem {id}: {warning}; using {unit >> 20} MiB big blocks")
        usable_start = -(-addr // unit) * unit
        usable_end = (addr + region_size) // unit * unit
    units = max((usable_end - usable_start) // unit, 0)
    if units == 0:
        raise DeviceConfigError("region_size", f"the region holds no whole {unit >> 20} MiB "
                                f"{'sub-block' if chosen is VirtioMemMode.SBM else 'big block'}")
    return unit, usable_start, units


def _plugged_units(device_blocks: int, head: int, units: int, per_unit: int, unit: int, device_block_size: int,
                   chosen: VirtioMemMode, plugged_blocks: Optional[Ints],
                   plugged_size: Optional[int]) -> np.ndarray:
    """Plugged state per unit from the plugged device blocks (``plugged``: indexes, or a boolean map
    with one flag per device block of the region) or size (``plugged_size``)."""
    map_given = isinstance(plugged_blocks, np.ndarray) and plugged_blocks.dtype == bool and plugged_size is None
    # A boolean map is read in place (at 64 TiB it is 32 MiB: no copies of it).
    plugged_db = np.zeros(0 if map_given else device_blocks, dtype=bool)
    if plugged_blocks is not None and plugged_size is not None:
        raise DeviceConfigError("plugged", "give either plugged or plugged_size, not both")
    if plugged_size is not None:
        if plugged_size % unit:
            raise DeviceConfigError("plugged_size", f"{plugged_size:#x} is not a multiple of the "
                                    f"{unit >> 20} MiB (un)plug unit")
        count = plugged_size // device_block_size
        if count > units * per_unit:
            raise DeviceConfigError("plugged_size", "is larger than the usable region")
        plugged_db[head:head + count] = True
    elif isinstance(plugged_blocks, np.ndarray) and plugged_blocks.dtype == bool:
        # the plugged map itself, one flag per device block (a profile's spans, never indexes)
        if len(plugged_blocks) != device_blocks:
            raise DeviceConfigError("plugged", f"the plugged map has {len(plugged_blocks)} device blocks, the "
                                    f"region {device_blocks}")
        plugged_db = plugged_blocks
    elif plugged_blocks is not None:
        idx = np.asarray(plugged_blocks if isinstance(plugged_blocks, np.ndarray) else list(plugged_blocks),
                         dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= device_blocks):
            raise DeviceConfigError("plugged", f"device block {int(idx.max())} is outside the region "
                                    f"({device_blocks} blocks of {device_block_size >> 10} KiB)")
        plugged_db[idx] = True
    end = head + units * per_unit
    outside = [int(i) for i in np.flatnonzero(plugged_db[:head])[:1]] + \
              [end + int(i) for i in np.flatnonzero(plugged_db[end:])[:1]]
    if outside:
        raise DeviceConfigError("plugged", f"device block {outside[0]} is not in a usable part of the region")
    grid = plugged_db[head:end].reshape(units, per_unit)
    if per_unit == 1:  # one device block per unit: none is partly plugged
        return np.array(grid[:, 0])
    partial = grid.any(axis=1) & ~grid.all(axis=1)
    if partial.any():
        raise DeviceConfigError("plugged", f"unit {int(np.flatnonzero(partial)[0])} is partly plugged; the "
                                f"driver plugs whole {unit >> 10} KiB "
                                f"{'sub-blocks' if chosen is VirtioMemMode.SBM else 'big blocks'}")
    return np.asarray(grid.all(axis=1))


def _with_offline_blocks(device: VirtioMemDevice, geometry: Geometry,
                         offline_blocks: Sequence[int]) -> VirtioMemDevice:
    added = {b.block for b in added_blocks(device, geometry)}
    for block in sorted(set(offline_blocks)):
        if block not in added:
            raise DeviceConfigError("offline_blocks", f"memory block {block} is not an added memory block "
                                    f"of this device (blocks with plugged memory: "
                                    f"{_ranges(sorted(added)) or 'none'})")
    return replace(device, offline_blocks=frozenset(int(b) for b in offline_blocks))


def _ranges(blocks: Sequence[int]) -> str:
    return format_block_ranges(list(blocks))


@dataclass(frozen=True)
class AddedBlock:
    """A memory block the driver added with ``add_memory_driver_managed()``."""

    block: int
    state: str  # SbmState / BbmState name
    online: bool
    zone: Zone


def units_per_block(device: VirtioMemDevice, geometry: Geometry) -> int:
    """SBM: sub-blocks per memory block (``sbs_per_mb``); BBM: 0 (a big block spans blocks)."""
    if device.mode is VirtioMemMode.SBM:
        return geometry.memory_block_size // device.unit_size
    return 0


def blocks_per_unit(device: VirtioMemDevice, geometry: Geometry) -> int:
    """BBM: memory blocks per big block."""
    return max(device.unit_size // geometry.memory_block_size, 1)


def block_zone(device: VirtioMemDevice, geometry: Geometry, block: int) -> Zone:
    if device.online is OnlineType.MOVABLE:
        return Zone.MOVABLE
    return default_kernel_zone(geometry, geometry.block_start_pfn(block))


@dataclass(frozen=True)
class AddedBlockColumns:
    """The memory blocks a device added, as numpy columns (a big device adds 100k+ blocks).

    ``state`` indexes ``state_names``; ``zone`` holds ``Zone.code`` values.
    """

    blocks: np.ndarray
    state: np.ndarray
    state_names: Tuple[str, ...]
    #: per block: onlined (``offline_blocks`` lists the ones offlined since)
    online: np.ndarray
    zone: np.ndarray

    def __len__(self) -> int:
        return len(self.blocks)


def _block_zones(device: VirtioMemDevice, geometry: Geometry, blocks: np.ndarray) -> np.ndarray:
    """``block_zone()`` for many blocks at once."""
    if device.online is OnlineType.MOVABLE:
        return np.full(len(blocks), Zone.MOVABLE.code, dtype=np.int8)
    address = blocks * geometry.memory_block_size
    return np.where(address < 16 << 20, Zone.DMA.code,
                    np.where(address < 4 << 30, Zone.DMA32.code, Zone.NORMAL.code)).astype(np.int8)


def added_block_columns(device: VirtioMemDevice, geometry: Geometry) -> AddedBlockColumns:
    """Every memory block of the device that exists (has plugged memory), with its state."""
    offline = np.array(sorted(device.offline_blocks), dtype=np.int64)
    if device.mode is VirtioMemMode.SBM:
        per = units_per_block(device, geometry)
        grid: np.ndarray = device.plugged.reshape(-1, per)
        used = np.asarray(grid.any(axis=1))  # UNUSED blocks were never added: no memory block device
        full = np.asarray(grid.all(axis=1))[used]
        blocks = device.first_block + np.flatnonzero(used).astype(np.int64)
        online = (device.online is not OnlineType.OFFLINE) & ~np.isin(blocks, offline)
        names: Tuple[str, ...] = tuple(s.value for s in SBM_ADDED_STATES)
        state = sbm_state_index(online, device.online is OnlineType.MOVABLE, full).astype(np.int8)
    else:
        per = blocks_per_unit(device, geometry)
        bbs = np.flatnonzero(device.plugged).astype(np.int64)
        blocks = (device.first_block + bbs[:, None] * per + np.arange(per, dtype=np.int64)).ravel()
        fake = np.isin(bbs, np.array(sorted(device.fake_offline_units), dtype=np.int64))
        names = tuple(s.value for s in BBM_ADDED_STATES)
        state = np.repeat(fake, per).astype(np.int8)
        online = (device.online is not OnlineType.OFFLINE) & ~np.isin(blocks, offline)
    return AddedBlockColumns(blocks, state, names, online, _block_zones(device, geometry, blocks))


_ZONES = {z.code: z for z in Zone}


def added_blocks(device: VirtioMemDevice, geometry: Geometry) -> List[AddedBlock]:
    """Every memory block of the device that exists (has plugged memory), with its state."""
    cols = added_block_columns(device, geometry)
    return [AddedBlock(int(b), cols.state_names[s], bool(o), _ZONES[int(z)])
            for b, s, o, z in zip(cols.blocks.tolist(), cols.state.tolist(), cols.online.tolist(),
                                  cols.zone.tolist())]


def block_online(device: VirtioMemDevice, block: int) -> bool:
    """Whether an added memory block of the device is online."""
    return device.online is not OnlineType.OFFLINE and block not in device.offline_blocks


def fake_offline_ranges(device: VirtioMemDevice, geometry: Geometry) -> List[Tuple[int, int]]:
    """pfn ranges [start, end) that are fake-offline (PageOffline) inside online blocks.

    SBM: unplugged sub-blocks of added, online blocks (``virtio_mem_online_page()`` keeps them
    back). BBM: every page of an online block of a ``FAKE_OFFLINE`` big block.
    """
    if device.online is OnlineType.OFFLINE:
        return []
    ranges: List[Tuple[int, int]] = []
    unit_pages = device.unit_size // geometry.page_size
    base = geometry.block_start_pfn(device.first_block)
    if device.mode is VirtioMemMode.SBM:
        per = units_per_block(device, geometry)
        grid = device.plugged.reshape(-1, per)
        added = np.asarray(grid.any(axis=1))
        for block in device.offline_blocks:
            added[block - device.first_block] = False  # offline: no online memmap
        unplugged = ~grid & added[:, None]
        flat = unplugged.ravel()
        edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        edges = np.concatenate(([0] if flat[0] else [], edges, [len(flat)] if flat[-1] else [])).astype(np.int64)
        starts = (base + edges[::2] * unit_pages).tolist()
        ends = (base + edges[1::2] * unit_pages).tolist()
        ranges.extend(zip(starts, ends))
    else:
        ppb = geometry.pages_per_block
        for bb in sorted(device.fake_offline_units):
            lo, hi = base + bb * unit_pages, base + (bb + 1) * unit_pages
            for block in range(lo // ppb, hi // ppb):
                if block not in device.offline_blocks:
                    ranges.append((block * ppb, (block + 1) * ppb))
    return _merge(ranges)


def _merge(ranges: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    merged: List[Tuple[int, int]] = []
    for lo, hi in ranges:
        if merged and merged[-1][1] == lo:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def block_states(device: VirtioMemDevice, geometry: Geometry) -> Dict[int, str]:
    cols = added_block_columns(device, geometry)
    names = cols.state_names
    return dict(zip(cols.blocks.tolist(), [names[s] for s in cols.state.tolist()]))
