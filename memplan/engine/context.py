"""What the kernel model needs to judge the blocks of one machine: the run's ``OfflineSetup``
and each block's ``BlockContext`` (one object per block, or columns for a run of blocks).

The only place that turns a ``Machine`` into the kernel model's inputs: the pool counters
(counted from the pages when the input does not give them), the nodes' present pages, the
virtio-mem device and per-block state of every block, and the CMA and isolated pageblocks.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from memplan.core.geometry import Geometry
from memplan.core.machine import BlockTable, HugetlbPool, Machine, VirtioMemDevice, chunks
from memplan.core.model import ZONE_NONE, PageKind
from memplan.kernel import hugetlb as hugetlb_mod
from memplan.kernel import versions
from memplan.kernel.migration import MigrationTargets
from memplan.kernel.offline import BlockContext, OfflineSetup
from memplan.kernel.semantics import OfflineSemantics
from memplan.kernel.virtio_mem import added_block_columns, block_states


@dataclass(frozen=True)
class Census:
    """Per-row free pages of every online block and free hugetlb folios of the machine."""

    free_pages: np.ndarray
    free_hugetlb: Dict[int, int]


_CENSUS: weakref.WeakKeyDictionary[Machine, Census] = weakref.WeakKeyDictionary()


def census(machine: Machine) -> Census:
    """Count free pages per online block and free hugetlb folios (cached per machine)."""
    cached = _CENSUS.get(machine)
    if cached is not None:
        return cached
    geo = machine.geometry
    table = machine.blocks
    free = np.zeros(len(table), dtype=np.int64)
    huge = {order: 0 for order in geo.hugetlb_orders}
    online_ids = table.ids[table.online]
    for ids in chunks(online_ids, geo.pages_per_block):
        batch = machine.pages.materialize(ids)
        rows = table.rows(ids)
        free[rows] = np.count_nonzero(batch.kinds == PageKind.FREE.value, axis=1)
        for r, block in enumerate(ids):
            base = geo.block_start_pfn(int(block))
            for order in geo.hugetlb_orders:
                huge[order] += hugetlb_mod.free_folio_heads(batch.kinds[r], base, order, geo)
    result = Census(free, huge)
    _CENSUS[machine] = result
    return result


def resolve_pools(machine: Machine) -> Dict[int, HugetlbPool]:
    """Pool counters; a missing ``free`` is the number of free folios the machine holds."""
    pools: Dict[int, HugetlbPool] = {}
    geo = machine.geometry
    for order in geo.hugetlb_orders:
        pool = machine.environment.hugetlb.get(order)
        if pool is not None and pool.free is not None:
            pools[order] = pool
            continue
        possible = getattr(machine.pages, "possible_kinds", lambda: None)()
        if possible is not None and hugetlb_mod.free_kind(geo, order) not in possible:
            free = 0
        else:
            free = census(machine).free_hugetlb[order]
        pools[order] = HugetlbPool(free=free, resv=pool.resv if pool else 0)
    return pools


def pageblock_masks(geo: Geometry, ranges: Sequence[Tuple[int, int]]) -> Dict[int, np.ndarray]:
    """Per memory block touched by the pfn ranges [start, end): which of its pageblocks they cover."""
    masks: Dict[int, np.ndarray] = {}
    for lo, hi in ranges:
        for block in range(lo // geo.pages_per_block, (hi - 1) // geo.pages_per_block + 1):
            mask = masks.setdefault(block, np.zeros(geo.pageblocks_per_block, dtype=bool))
            base = geo.block_start_pfn(block)
            a = max(lo - base, 0) // geo.pageblock_pages
            b = -(-(min(hi - base, geo.pages_per_block)) // geo.pageblock_pages)
            mask[a:b] = True
    return masks


def offline_setup(machine: Machine, semantics: OfflineSemantics) -> OfflineSetup:
    """What every block of a run on ``machine`` shares."""
    table = machine.blocks
    online = table.online
    nodes, node_of_row = np.unique(table.node[online], return_inverse=True)
    present = np.zeros(len(nodes), dtype=np.int64)
    np.add.at(present, node_of_row, table.ram_pages[online])
    return OfflineSetup(
        geometry=machine.geometry, semantics=semantics, environment=machine.environment,
        pools=resolve_pools(machine), node_present_pages=dict(zip(nodes.tolist(), present.tolist())),
        node_notifier=versions.at_least(machine.kernel, versions.NODE_NOTIFIER),
    )


@dataclass(frozen=True)
class BlockColumns:
    """The ``BlockContext`` facts of a run of memory blocks, as one column per fact."""

    block: np.ndarray
    start_pfn: np.ndarray
    #: ``BlockTable.STATES`` index (0 = online)
    state: np.ndarray
    #: ``Zone.code`` or ``ZONE_NONE``
    zone: np.ndarray
    node: np.ndarray
    vmemmap: np.ndarray
    #: some pageblock of the block is CMA or already isolated by someone else
    special_pageblocks: np.ndarray
    #: free pages migration may use (``-1``: plenty)
    capacity: np.ndarray
    device: Tuple[Optional[VirtioMemDevice], ...]
    device_state: Tuple[Optional[str], ...]

    def __len__(self) -> int:
        return len(self.block)

    @classmethod
    def from_contexts(cls, contexts: Sequence[BlockContext]) -> BlockColumns:
        return cls(
            block=np.array([c.block for c in contexts], dtype=np.int64),
            start_pfn=np.array([c.start_pfn for c in contexts], dtype=np.int64),
            state=np.array([BlockTable.STATES.index(c.state) for c in contexts], dtype=np.int8),
            zone=np.array([c.zone.code if c.zone is not None else ZONE_NONE for c in contexts], dtype=np.int8),
            node=np.array([c.node for c in contexts], dtype=np.int32),
            vmemmap=np.array([c.vmemmap for c in contexts], dtype=np.int64),
            special_pageblocks=np.array([bool(c.cma.any() or c.isolated.any()) for c in contexts], dtype=bool),
            capacity=np.array([-1 if c.targets.capacity is None else c.targets.capacity for c in contexts],
                              dtype=np.int64),
            device=tuple(c.device for c in contexts),
            device_state=tuple(c.device_state for c in contexts),
        )


class ContextBuilder:
    """The kernel model's inputs for the blocks of one machine under one semantics."""

    def __init__(self, machine: Machine, semantics: OfflineSemantics) -> None:
        self.machine = machine
        self.semantics = semantics
        geo = machine.geometry
        table = machine.blocks
        self.setup = offline_setup(machine, semantics)
        self.device_states = [block_states(d, geo) for d in machine.devices]
        # Per table row: the device object and its per-block state (None outside devices).
        self._device_of_row = np.empty(len(table), dtype=object)
        self._device_state_of_row = np.empty(len(table), dtype=object)
        for device in machine.devices:
            cols = added_block_columns(device, geo)
            present = table.exists(cols.blocks)
            rows = table.rows(cols.blocks[present])
            self._device_of_row[rows] = device
            names = np.array(cols.state_names, dtype=object)
            self._device_state_of_row[rows] = names[cols.state[present]]
        self._no_pageblocks = np.zeros(geo.pageblocks_per_block, dtype=bool)
        self._cma = pageblock_masks(geo, machine.cma)
        self._isolated = pageblock_masks(geo, machine.environment.isolated)
        self._special_pageblock_blocks = np.array(
            sorted(b for masks in (self._cma, self._isolated) for b, m in masks.items() if m.any()), dtype=np.int64)

    def context(self, row: int, capacity: Optional[int] = None) -> BlockContext:
        """One block's facts (``row`` of the block table; ``capacity``: free pages migration may use)."""
        machine, geo = self.machine, self.machine.geometry
        table = machine.blocks
        block = int(table.ids[row])
        device_index = int(table.device[row])
        device = machine.devices[device_index] if device_index >= 0 else None
        return BlockContext(
            block=block, start_pfn=geo.block_start_pfn(block), state=table.state_of(row), zone=table.zone_of(row),
            node=int(table.node[row]), vmemmap=int(table.vmemmap[row]), device=device,
            device_state=self.device_states[device_index].get(block) if device else None,
            cma=self._cma.get(block, self._no_pageblocks), isolated=self._isolated.get(block, self._no_pageblocks),
            targets=MigrationTargets(capacity=capacity),
        )

    def columns(self, rows: np.ndarray, capacities: Optional[Dict[int, int]] = None) -> BlockColumns:
        """``context()`` for many rows at once, as columns (no per-block objects)."""
        machine, geo = self.machine, self.machine.geometry
        table = machine.blocks
        ids = table.ids[rows]
        capacity = np.full(len(rows), -1, dtype=np.int64)
        if capacities:
            for i, block in enumerate(ids.tolist()):
                capacity[i] = capacities.get(block, -1)
        return BlockColumns(
            block=ids, start_pfn=ids * geo.pages_per_block, state=table.state[rows], zone=table.zone[rows],
            node=table.node[rows], vmemmap=table.vmemmap[rows],
            special_pageblocks=np.isin(ids, self._special_pageblock_blocks), capacity=capacity,
            device=tuple(self._device_of_row[rows].tolist()),
            device_state=tuple(self._device_state_of_row[rows].tolist()),
        )
