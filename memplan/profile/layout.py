"""Memory blocks from a profile's ranges: which blocks exist, with what state, zone and node.

Built as numpy columns: one row per (range, block) pair, reduced per block (a 16 TiB profile
has 131072 blocks; no per-block Python work). A block exists when it holds System RAM
(``[[ram]]``) or a virtio-mem device added it (``add_memory_driver_managed()``); pages of an
existing block outside System RAM are holes (``offline_pages()`` step 3,
``walk_system_ram_range()``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from memplan.core.arrays import IntArray, unique_sorted
from memplan.core.geometry import Geometry
from memplan.core.machine import VirtioMemDevice
from memplan.core.model import Zone
from memplan.kernel import virtio_mem

#: per-block attributes whose (min, max) over the ranges touching the block is kept
ATTRIBUTES = ("zone", "node", "state", "memmap")
_EMPTY: IntArray = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class RamRange:
    """One validated ``[[ram]]`` table, in bytes (holes as [start, end) byte ranges)."""

    start: int
    end: int
    zone: Zone
    node: int
    online: bool
    holes: Tuple[Tuple[int, int], ...]
    #: pageblock-aligned CMA pfn ranges [start, end)
    cma: Tuple[Tuple[int, int], ...]
    memmap_on_memory: bool


@dataclass(frozen=True)
class BlockColumns:
    """Per memory block (sorted ids): System RAM pages, ``(low, high)`` of each attribute over
    the ranges that touch it, and the virtio-mem device index (-1: none)."""

    ids: IntArray
    pages: IntArray
    low: Dict[str, IntArray]
    high: Dict[str, IntArray]
    device: np.ndarray

    def take(self, rows: IntArray) -> "BlockColumns":
        return BlockColumns(self.ids[rows], self.pages[rows], {k: v[rows] for k, v in self.low.items()},
                            {k: v[rows] for k, v in self.high.items()}, self.device[rows])


def _cover(lo_pfn: int, hi_pfn: int, ppb: int) -> Tuple[IntArray, IntArray]:
    """The blocks [lo_pfn, hi_pfn) touches and how many of its pages fall into each."""
    blocks = np.arange(lo_pfn // ppb, (hi_pfn - 1) // ppb + 1, dtype=np.int64)
    pages = np.minimum(hi_pfn, (blocks + 1) * ppb) - np.maximum(lo_pfn, blocks * ppb)
    return blocks, pages


def _ram_attributes(ram: RamRange) -> Dict[str, int]:
    return {"zone": ram.zone.code, "node": ram.node, "state": 0 if ram.online else 1,
            "memmap": int(ram.memmap_on_memory)}


def ram_columns(rams: Sequence[RamRange], geometry: Geometry) -> BlockColumns:
    """The blocks System RAM touches: pages of RAM (holes subtracted) and attribute ranges."""
    ppb, page = geometry.pages_per_block, geometry.page_size
    cover_blocks: List[IntArray] = []
    cover_pages: List[IntArray] = []
    attr_blocks: List[IntArray] = []
    attr_values: Dict[str, List[IntArray]] = {key: [] for key in ATTRIBUTES}
    for ram in rams:
        blocks, pages = _cover(ram.start // page, ram.end // page, ppb)
        cover_blocks.append(blocks)
        cover_pages.append(pages)
        for hs, he in ram.holes:
            hole_blocks, hole_pages = _cover(hs // page, he // page, ppb)
            cover_blocks.append(hole_blocks)
            cover_pages.append(-hole_pages)
        attr_blocks.append(blocks)
        for key, value in _ram_attributes(ram).items():
            attr_values[key].append(np.broadcast_to(np.int64(value), blocks.shape))
    ids, inverse = np.unique(np.concatenate(cover_blocks or [_EMPTY]), return_inverse=True)
    pages_col = np.zeros(len(ids), dtype=np.int64)
    np.add.at(pages_col, inverse, np.concatenate(cover_pages or [_EMPTY]))
    rows = np.searchsorted(ids, np.concatenate(attr_blocks or [_EMPTY]))
    low: Dict[str, IntArray] = {}
    high: Dict[str, IntArray] = {}
    for key in ATTRIBUTES:
        values = np.concatenate(attr_values[key] or [_EMPTY])
        low[key] = np.full(len(ids), np.iinfo(np.int64).max, dtype=np.int64)
        high[key] = np.full(len(ids), np.iinfo(np.int64).min, dtype=np.int64)
        np.minimum.at(low[key], rows, values)
        np.maximum.at(high[key], rows, values)
    return BlockColumns(ids, pages_col, low, high, np.full(len(ids), -1, dtype=np.int32))


def node_spans(rams: Sequence[RamRange], geometry: Geometry, blocks: IntArray) -> Dict[int, Dict[int, int]]:
    """System RAM pages per node of the given blocks (those whose ranges name several nodes):
    what each node's ``node_present_pages`` holds of them."""
    ppb, page = geometry.pages_per_block, geometry.page_size
    out: Dict[int, Dict[int, int]] = {}
    if not len(blocks):
        return out
    for ram in rams:
        parts = [_cover(ram.start // page, ram.end // page, ppb)]
        parts += [(ids, -pages) for ids, pages in (_cover(hs // page, he // page, ppb) for hs, he in ram.holes)]
        for ids, pages in parts:
            keep = np.isin(ids, blocks)
            for block, count in zip(ids[keep].tolist(), pages[keep].tolist()):
                nodes = out.setdefault(block, {})
                nodes[ram.node] = nodes.get(ram.node, 0) + count
    return out


def with_devices(ram: BlockColumns, devices: Sequence[VirtioMemDevice], geometry: Geometry) -> BlockColumns:
    """Add the blocks virtio-mem devices added: the device decides everything about them."""
    dev_cols = [virtio_mem.added_block_columns(device, geometry) for device in devices]
    all_ids = unique_sorted(np.concatenate([ram.ids, *[c.blocks for c in dev_cols]]))
    in_ram = np.searchsorted(all_ids, ram.ids)
    pages = np.zeros(len(all_ids), dtype=np.int64)
    pages[in_ram] = ram.pages
    low = {key: np.zeros(len(all_ids), dtype=np.int64) for key in ATTRIBUTES}
    high = {key: np.zeros(len(all_ids), dtype=np.int64) for key in ATTRIBUTES}
    for key in ATTRIBUTES:
        low[key][in_ram], high[key][in_ram] = ram.low[key], ram.high[key]
    device = np.full(len(all_ids), -1, dtype=np.int32)
    for index, (dev, c) in enumerate(zip(devices, dev_cols)):
        rows = np.searchsorted(all_ids, c.blocks)
        pages[rows] = geometry.pages_per_block
        for key, value in (("zone", c.zone.astype(np.int64)), ("node", dev.node),
                           ("state", np.where(c.online, 0, 1))):
            low[key][rows] = value
            high[key][rows] = value
        device[rows] = index
    return BlockColumns(all_ids, pages, low, high, device)


def boundary_holes(ids: IntArray, pages: IntArray, rams: Sequence[RamRange],
                   geometry: Geometry) -> List[Tuple[int, int]]:
    """pfn ranges of existing blocks that no ``[[ram]]`` range covers (partly covered blocks)."""
    ppb, page = geometry.pages_per_block, geometry.page_size
    holes: List[Tuple[int, int]] = []
    for b in ids[pages < ppb].tolist():
        lo_b, hi_b = b * ppb, (b + 1) * ppb
        covered = sorted((max(r.start // page, lo_b), min(r.end // page, hi_b))
                         for r in rams if r.start // page < hi_b and r.end // page > lo_b)
        cursor = lo_b
        for lo, hi in covered:
            if lo > cursor:
                holes.append((cursor, lo))
            cursor = max(cursor, hi)
        if cursor < hi_b:
            holes.append((cursor, hi_b))
    return holes


def merge_ranges(ranges: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """Merge overlapping or touching [start, end) ranges."""
    merged: List[Tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged
