"""What the kernel model needs to judge the blocks of one machine: the run's ``OfflineSetup``
and each block's ``BlockContext`` (one object per block, or columns for a run of blocks).

The only place that turns a ``Machine`` into the kernel model's inputs: the pool counters
(counted from the pages when the input does not give them), the nodes' present pages, the
virtio-mem device and per-block state of every block, and the CMA and isolated pageblocks.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np

from memplan.core.arrays import BoolArray, IntArray, KindArray
from memplan.core.geometry import Geometry
from memplan.core.machine import BlockTable, Environment, HugetlbPool, Machine, VirtioMemDevice, chunks
from memplan.core.model import ZONE_NONE, BlockState, PageKind, Zone
from memplan.kernel import hugetlb as hugetlb_mod
from memplan.kernel import versions
from memplan.kernel.migrate_pages import free_target_pages
from memplan.kernel.migration import Capacity, MigrationTargets, allowed_nodes
from memplan.kernel.offline import BlockContext, BlockStats, OfflineSetup
from memplan.kernel.semantics import OfflineSemantics
from memplan.kernel.virtio_mem import added_block_columns


@dataclass(frozen=True)
class Census:
    """Per row of the block table (online blocks; zero elsewhere): the free pages migration
    targets may come from (``free_target_pages()``: not in pageblocks someone else isolated),
    and the free hugetlb folios ``dequeue_hugetlb_folio_node_exact()`` may hand out per order
    (``pool_heads``: head outside such pageblocks); ``free_hugetlb``: every free hugetlb folio of
    the machine per order."""

    free_pages: IntArray
    free_hugetlb: Dict[int, int]
    pool_heads: Dict[int, np.ndarray]


_CENSUS: weakref.WeakKeyDictionary[Machine, Census] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class BlockCounts:
    """One block's share of the :class:`Census`: free pages migration targets may come from,
    free hugetlb folios per order, and those the pool may hand out (head outside pageblocks
    someone else isolated)."""

    free_pages: int
    free_hugetlb: Dict[int, int]
    pool_heads: Dict[int, int]


def count_block(kinds: KindArray, block: int, geo: Geometry, isolated: BoolArray) -> BlockCounts:
    """The census of one online block's pages (``isolated``: its pageblocks someone else
    isolated); a capacity plan counts a block again with it whenever its pages change."""
    base = geo.block_start_pfn(block)
    special = bool(isolated.any())
    free = (free_target_pages(kinds, isolated, geo.pageblock_pages) if special
            else int(np.count_nonzero(kinds == PageKind.FREE.value)))
    huge: Dict[int, int] = {}
    heads: Dict[int, int] = {}
    for order in geo.hugetlb_orders:
        huge[order] = count = hugetlb_mod.free_folio_heads(kinds, base, order, geo)
        heads[order] = hugetlb_mod.free_folio_heads(kinds, base, order, geo, isolated) if special else count
    return BlockCounts(free, huge, heads)


def census(machine: Machine) -> Census:
    """Count free pages and free hugetlb folios per online block (cached per machine)."""
    cached = _CENSUS.get(machine)
    if cached is not None:
        return cached
    geo = machine.geometry
    table = machine.blocks
    isolated = pageblock_masks(geo, machine.environment.isolated)
    no_pageblocks = np.zeros(geo.pageblocks_per_block, dtype=bool)
    free = np.zeros(len(table), dtype=np.int64)
    huge = {order: 0 for order in geo.hugetlb_orders}
    heads = {order: np.zeros(len(table), dtype=np.int64) for order in geo.hugetlb_orders}
    online_ids = table.ids[table.online]
    for ids in chunks(online_ids, geo.pages_per_block):
        batch = machine.pages.materialize(ids)
        rows = table.rows(ids)
        for r, (row, block) in enumerate(zip(rows.tolist(), ids.tolist())):
            counts = count_block(batch.kinds[r], block, geo, isolated.get(block, no_pageblocks))
            free[row] = counts.free_pages
            for order in geo.hugetlb_orders:
                huge[order] += counts.free_hugetlb[order]
                heads[order][row] = counts.pool_heads[order]
    result = Census(free, huge, heads)
    _CENSUS[machine] = result
    return result


def resolve_pools(machine: Machine, free_hugetlb: Optional[Mapping[int, int]] = None) -> Dict[int, HugetlbPool]:
    """Pool counters; a missing ``free`` is the number of free folios the machine holds
    (``free_hugetlb`` per order when the caller counted them, else from the census)."""
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
        elif free_hugetlb is not None:
            free = int(free_hugetlb.get(order, 0))
        else:
            free = census(machine).free_hugetlb[order]
        pools[order] = HugetlbPool(free=free, resv=pool.resv if pool else 0)
    return pools


def pageblock_masks(geo: Geometry, ranges: Sequence[Tuple[int, int]]) -> Dict[int, BoolArray]:
    """Per memory block touched by the pfn ranges [start, end): which of its pageblocks they cover."""
    masks: Dict[int, BoolArray] = {}
    for lo, hi in ranges:
        for block in range(lo // geo.pages_per_block, (hi - 1) // geo.pages_per_block + 1):
            mask = masks.setdefault(block, np.zeros(geo.pageblocks_per_block, dtype=bool))
            base = geo.block_start_pfn(block)
            a = max(lo - base, 0) // geo.pageblock_pages
            b = -(-(min(hi - base, geo.pages_per_block)) // geo.pageblock_pages)
            mask[a:b] = True
    return masks


class SpecialPageblocks:
    """A machine's CMA pageblocks and the pageblocks someone else isolated, per memory block
    (``MIGRATE_CMA`` / ``MIGRATE_ISOLATE`` before offlining starts)."""

    def __init__(self, machine: Machine) -> None:
        geo = machine.geometry
        self.none = np.zeros(geo.pageblocks_per_block, dtype=bool)
        self._cma = pageblock_masks(geo, machine.cma)
        self._isolated = pageblock_masks(geo, machine.environment.isolated)
        #: blocks holding at least one such pageblock
        self.blocks = np.array(sorted(b for masks in (self._cma, self._isolated) for b, m in masks.items()
                                      if m.any()), dtype=np.int64)

    def cma(self, block: int) -> BoolArray:
        return self._cma.get(block, self.none)

    def isolated(self, block: int) -> BoolArray:
        return self._isolated.get(block, self.none)


def block_context(machine: Machine, pageblocks: SpecialPageblocks, block: int, state: BlockState,
                  zone: Optional[Zone], node: int, vmemmap: int, device: Optional[VirtioMemDevice],
                  device_state: Optional[str], targets: MigrationTargets) -> BlockContext:
    """One block's ``BlockContext`` from its current facts: the one builder ``simulate``
    (``ContextBuilder``) and the capacity plans (``MachineState``) share."""
    return BlockContext(
        block=block, start_pfn=machine.geometry.block_start_pfn(block), state=state, zone=zone, node=node,
        vmemmap=vmemmap, device=device, device_state=device_state if device is not None else None,
        cma=pageblocks.cma(block), isolated=pageblocks.isolated(block), targets=targets)


def node_present_pages(machine: Machine) -> Dict[int, int]:
    """``pgdat->node_present_pages`` per node: the pages of its online blocks (self-hosted
    memmap included), and its part of online blocks that span nodes."""
    return table_present_pages(machine.blocks)


def table_present_pages(table: BlockTable) -> Dict[int, int]:
    """:func:`node_present_pages` of a block table (a capacity plan's current one)."""
    online = table.online & (table.node >= 0)
    nodes, node_of_row = np.unique(table.node[online], return_inverse=True)
    present = np.zeros(len(nodes), dtype=np.int64)
    np.add.at(present, node_of_row, table.ram_pages[online])
    out = dict(zip(nodes.tolist(), present.tolist()))
    spanning = table.ids[table.online & (table.node < 0)].tolist()
    for block in spanning:
        for node, pages in table.spans.get(block, {}).items():
            out[node] = out.get(node, 0) + pages
    return out


def offline_setup(machine: Machine, semantics: OfflineSemantics) -> OfflineSetup:
    """What every block of a run on ``machine`` shares."""
    return setup_with(machine, semantics, resolve_pools(machine), node_present_pages(machine))


def setup_with(machine: Machine, semantics: OfflineSemantics, pools: Mapping[int, HugetlbPool],
               present_pages: Mapping[int, int], environment: Optional[Environment] = None) -> OfflineSetup:
    """:func:`offline_setup` for a machine whose pool counters and online blocks a caller tracks
    itself (a capacity plan, step after step; ``environment``: the machine's unless given)."""
    return OfflineSetup(
        geometry=machine.geometry, semantics=semantics,
        environment=machine.environment if environment is None else environment,
        pools=dict(pools), node_present_pages=dict(present_pages),
        node_notifier=versions.at_least(machine.kernel, versions.NODE_NOTIFIER),
    )


@dataclass(frozen=True)
class BlockColumns:
    """The ``BlockContext`` facts of a run of memory blocks, as one column per fact."""

    block: IntArray
    start_pfn: IntArray
    #: ``BlockTable.STATES`` index (0 = online)
    state: np.ndarray
    #: ``Zone.code`` or ``ZONE_NONE``
    zone: np.ndarray
    node: np.ndarray
    vmemmap: np.ndarray
    #: some pageblock of the block is CMA or already isolated by someone else
    special_pageblocks: BoolArray
    #: free pages migration targets may come from, in kernel zones (``-1``: plenty) and in
    #: ZONE_MOVABLE (``Capacity``)
    capacity: IntArray
    movable: IntArray
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
            capacity=np.array([-1 if c.targets.capacity is None else c.targets.capacity.kernel for c in contexts],
                              dtype=np.int64),
            movable=np.array([0 if c.targets.capacity is None else c.targets.capacity.movable for c in contexts],
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
        # Per table row: the device object and its per-block state (None outside devices); no
        # per-block Python objects (a dict of every block's state was 60 bytes a block).
        self._device_of_row = np.empty(len(table), dtype=object)
        self._device_state_of_row = np.empty(len(table), dtype=object)
        for device in machine.devices:
            cols = added_block_columns(device, geo)
            present = table.exists(cols.blocks)
            rows = table.rows(cols.blocks[present])
            self._device_of_row[rows] = device
            names = np.array(cols.state_names, dtype=object)
            self._device_state_of_row[rows] = names[cols.state[present]]
        self.pageblocks = SpecialPageblocks(machine)
        #: free hugetlb folios per order (every one) and per row (those the pool may hand out),
        #: once known; ``pool_targets()`` counts them itself otherwise (a census)
        self.hugetlb_heads: Optional[Tuple[Dict[int, int], Dict[int, np.ndarray]]] = None
        #: rows whose pool targets were asked for before ``hugetlb_heads`` was known, and the
        #: stand-in given (the pool counters), when the caller prefers to judge them again later
        #: (``learn_hugetlb()``) to a census now
        self.deferred_pool: Optional[Dict[int, Dict[int, int]]] = None

    def context(self, row: int, capacity: Optional[Capacity] = None) -> BlockContext:
        """One block's facts (``row`` of the block table; ``capacity``: where migration targets may
        come from, ``None``: plenty)."""
        machine = self.machine
        table = machine.blocks
        device_index = int(table.device[row])
        return block_context(
            machine, self.pageblocks, int(table.ids[row]), table.state_of(row), table.zone_of(row),
            int(table.node[row]), int(table.vmemmap[row]), machine.devices[device_index] if device_index >= 0 else None,
            self._device_state_of_row[row], MigrationTargets(capacity=capacity, pool=_LazyPool(
                lambda: self.pool_targets(row))))

    def pool_targets(self, row: int) -> Dict[int, int]:
        """Free hugetlb folios ``alloc_hugetlb_folio_nodemask()`` may dequeue while the block of
        ``row`` is isolated, per hstate order: on ``do_migrate_range()``'s allowed nodes
        (``dequeue_hugetlb_folio_nodemask()``), head outside pageblocks someone else isolated
        (``dequeue_hugetlb_folio_node_exact()``), outside the block itself; plus the free folios
        the pool counters know of and no page shows (nowhere to say where they are)."""
        machine = self.machine
        table = machine.blocks
        orders = machine.geometry.hugetlb_orders
        if self.hugetlb_heads is None and self.deferred_pool is not None:
            stand_in = self.deferred_pool[row] = {order: self.setup.pools[order].free or 0 for order in orders}
            return stand_in
        if self.hugetlb_heads is None:
            counted = census(machine)
            self.hugetlb_heads = (counted.free_hugetlb, counted.pool_heads)
        totals, pool_heads = self.hugetlb_heads
        return pool_targets_of(row, table.node, table.online, self.setup.node_present_pages, self.setup.pools,
                               {order: totals[order] for order in orders},
                               {order: pool_heads[order] for order in orders})

    def learn_hugetlb(self, stats: Mapping[int, BlockStats]) -> None:
        """``hugetlb_heads`` from the stats of judged blocks when they cover every online block
        (a census otherwise)."""
        table = self.machine.blocks
        online = table.ids[table.online]
        if not np.isin(online, np.fromiter(stats.keys(), dtype=np.int64, count=len(stats))).all():
            counted = census(self.machine)
            self.hugetlb_heads = (counted.free_hugetlb, counted.pool_heads)
            return
        orders = self.machine.geometry.hugetlb_orders
        totals = {order: 0 for order in orders}
        heads = {order: np.zeros(len(table), dtype=np.int64) for order in orders}
        holding = [(block, s) for block, s in stats.items() if any(s.free_hugetlb.values())]
        rows = table.rows([block for block, _ in holding])
        for row, (_, s) in zip(rows.tolist(), holding):
            for order in orders:
                totals[order] += s.free_hugetlb.get(order, 0)
                heads[order][row] = (s.pool_hugetlb or s.free_hugetlb).get(order, 0)
        self.hugetlb_heads = (totals, heads)

    def pool_matters(self, row: int, stand_in: Mapping[int, int], hugetlb_folios: Optional[Mapping[int, int]]) -> bool:
        """Whether a block judged with ``stand_in`` pool targets may be judged otherwise with its
        own: only if one of them is short of the block's hugetlb folios (each takes at most one
        pool folio at a time) and they differ."""
        exact = self.pool_targets(row)
        return any(count > min(exact.get(order, 0), stand_in.get(order, 0))
                   and exact.get(order, 0) != stand_in.get(order, 0)
                   for order, count in (hugetlb_folios or {}).items())

    def columns(self, rows: IntArray, capacities: Optional[Dict[int, Capacity]] = None) -> BlockColumns:
        """``context()`` for many rows at once, as columns (no per-block objects)."""
        machine, geo = self.machine, self.machine.geometry
        table = machine.blocks
        ids = table.ids[rows]
        capacity = np.full(len(rows), -1, dtype=np.int64)
        movable = np.zeros(len(rows), dtype=np.int64)
        if capacities:
            for i, block in enumerate(ids.tolist()):
                known = capacities.get(block)
                if known is not None:
                    capacity[i], movable[i] = known.kernel, known.movable
        return BlockColumns(
            block=ids, start_pfn=ids * geo.pages_per_block, state=table.state[rows], zone=table.zone[rows],
            node=table.node[rows], vmemmap=table.vmemmap[rows],
            special_pageblocks=np.isin(ids, self.pageblocks.blocks), capacity=capacity, movable=movable,
            device=tuple(self._device_of_row[rows].tolist()),
            device_state=tuple(self._device_state_of_row[rows].tolist()),
        )


def pool_targets_of(row: int, node: np.ndarray, online: BoolArray, present_pages: Mapping[int, int],
                    pools: Mapping[int, HugetlbPool], free_hugetlb: Mapping[int, int],
                    pool_heads: Mapping[int, np.ndarray]) -> Dict[int, int]:
    """Free hugetlb folios ``alloc_hugetlb_folio_nodemask()`` may dequeue while the block of
    ``row`` is isolated, per order: the ``pool_heads`` (per row) of the online rows on
    ``do_migrate_range()``'s allowed nodes, the block's own left out, plus the free folios the
    pool counters know of and no page shows (``free_hugetlb``: the free folios the pages show).
    ``node`` and ``online`` are per-row columns (a block table's, or a capacity plan's state)."""
    rows = online & np.isin(node, allowed_nodes(present_pages, int(node[row])))
    out: Dict[int, int] = {}
    for order, heads in pool_heads.items():
        pool = int(heads[rows].sum()) - (int(heads[row]) if rows[row] else 0)
        unlocated = (pools[order].free or 0) - int(free_hugetlb[order])
        out[order] = pool + max(unlocated, 0)
    return out


def capacities_of(rows: IntArray, node: np.ndarray, zone: np.ndarray, online: BoolArray,
                  present_pages: Mapping[int, int], free: IntArray) -> Tuple[np.ndarray, np.ndarray]:
    """Free pages ``do_migrate_range()`` may take migration targets from while the block of
    each of ``rows`` is isolated, in the kernel zones and in ZONE_MOVABLE: ``free`` (per row) of
    the online rows on its allowed nodes (``allowed_nodes()``), the block's own left out.
    Boot blocks spanning kernel zones count as kernel zones; blocks spanning nodes count
    nowhere (the model does not split their free pages). ``alloc_migration_target()`` decides
    which folio may use which (``target_zones()``). ``node``, ``zone`` and ``online`` are per-row
    columns (a block table's, or a capacity plan's state); one pass per source node."""
    counted = online & (node >= 0)
    in_movable = zone == Zone.MOVABLE.code
    source_node, source_movable = node[rows], in_movable[rows]
    kernel = np.zeros(len(rows), dtype=np.int64)
    movable = np.zeros(len(rows), dtype=np.int64)
    for n in np.unique(source_node).tolist():
        allowed = counted & np.isin(node, allowed_nodes(present_pages, n))
        here = source_node == n
        kernel[here] = int(free[allowed & ~in_movable].sum())
        movable[here] = int(free[allowed & in_movable].sum())
        # The block's own free pages are never its targets (they sit in the isolated range).
        own = here & allowed[rows]
        kernel[own & ~source_movable] -= free[rows[own & ~source_movable]]
        movable[own & source_movable] -= free[rows[own & source_movable]]
    return kernel, movable


def capacity_of(row: int, node: np.ndarray, zone: np.ndarray, online: BoolArray, present_pages: Mapping[int, int],
                free: IntArray) -> Capacity:
    """``capacities_of()`` for the block of one ``row``."""
    kernel, movable = capacities_of(np.asarray([row], dtype=np.int64), node, zone, online, present_pages, free)
    return Capacity(int(kernel[0]), int(movable[0]))


class _LazyPool(Mapping[int, int]):
    """A block's pool targets (``ContextBuilder.pool_targets()``), counted on first use: only a
    block that migrates hugetlb folios needs the census behind them."""

    def __init__(self, count: Callable[[], Dict[int, int]]) -> None:
        self._count: Optional[Callable[[], Dict[int, int]]] = count
        self._value: Dict[int, int] = {}

    def _get(self) -> Dict[int, int]:
        if self._count is not None:
            self._value, self._count = self._count(), None
        return self._value

    def __getitem__(self, order: int) -> int:
        return self._get()[order]

    def __iter__(self) -> Iterator[int]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())
