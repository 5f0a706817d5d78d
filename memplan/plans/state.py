"""A machine's memory as a capacity plan changes it: mutable, numpy-backed, bounded.

``MachineState`` starts from a ``Machine`` and keeps, per memory block, its state, zone,
node and counters (free pages, free hugetlb folios, fully free pageblocks) from one census
pass. Page contents are materialised only for the blocks a plan touches: the blocks it
offlines or unplugs from, and the blocks that receive migrated folios. Every offline goes
through the one pipeline (``memplan.kernel.offline.offline_block``) with migration targets
computed from the current state; its effects (``OfflineEffects``) are then applied: migrated
folios land in free pages elsewhere, dissolved hugetlb folios leave the pool, the block goes
offline. virtio-mem's fake-offlining goes through ``memplan.kernel.contig.alloc_contig_range``.

What the kernel model is given comes from the same place as for ``simulate``
(``memplan.engine.context``): the ``OfflineSetup`` (``setup_with()``), the pool counters
(``resolve_pools()``), the nodes' present pages, the per-block census (``count_block()``), the
pool targets and migration capacity of a block (``pool_targets_of()``, ``capacity_of()``); the
nodemask is ``kernel.migration.allowed_nodes()`` and the free-folio walk
``kernel.hugetlb.free_folio_head_offsets()``. This module only keeps them current as the plan
changes the machine, and places migrated folios (the placement rule below).

Placement rule (where a migrated folio lands; the kernel's buddy allocator gives no pfn
guarantee, so memplan fixes a deterministic order that follows the allocator's zonelist):

1. nodes: offlining (``do_migrate_range()``) uses every memory node except the source node,
   or the source node alone when it is the only one, in ascending node id;
   ``alloc_contig_range()`` prefers the source node, then the others in ascending id;
2. zones per node: the zonelist order (Movable, Normal, DMA32, DMA), restricted by
   ``alloc_migration_target()``: a folio from a kernel zone never lands in ZONE_MOVABLE;
3. memory blocks of a zone in ascending block id, pages of a block lowest free pfn first;
4. a THP needs a fully free aligned PMD-sized pageblock, else it is split into order-0 anon pages
   (``migrate_pages()`` splits a large folio whose target allocation fails); a fresh hugetlb
   folio takes a fully free pageblock, else one made free by compacting the order-0 movable
   pages of a pageblock into free pages of the same block (hugetlb allocations compact; THP
   migration targets do not);
5. a hugetlb folio migrated to the pool takes the lowest-pfn free folio of its size on the
   allowed nodes (outside the isolated range); free folios the profile counts in the pool
   but does not place anywhere are used last, as counters only.

Only free pages are migration targets (no reclaim, no watermarks), as in ``simulate``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from memplan.core.geometry import Geometry
from memplan.core.machine import BlockTable, HugetlbPool, Machine, PageBatch, PageSource, VirtioMemDevice, chunks
from memplan.core.model import (
    DEFAULT_REFCOUNT,
    FOLIO_SIZE,
    IS_HUGETLB,
    IS_LRU,
    IS_MOVABLE_OPS,
    IS_PINNED,
    ZONE_NONE,
    BlockState,
    FolioSize,
    PageKind,
    VirtioMemMode,
    Zone,
)
from memplan.core.results import BlockVerdict, Outcome
from memplan.engine.context import (
    SpecialPageblocks,
    block_context,
    capacity_of,
    count_block,
    pool_targets_of,
    resolve_pools,
    setup_with,
    table_present_pages,
)
from memplan.kernel import hugetlb as hugetlb_mod
from memplan.kernel.contig import ContigResult, Request, alloc_contig_range
from memplan.kernel.migration import ZONELIST_ORDER, Capacity, MigrationTargets, allowed_nodes, target_zones
from memplan.kernel.offline import BlockContext, OfflineEffects, OfflineSetup, offline_block
from memplan.kernel.pages import RangeView
from memplan.kernel.semantics import OfflineSemantics, get_semantics
from memplan.kernel.virtio_mem import bbm_state, sbm_state
from memplan.plans.types import MemoryLeft, ZoneMemory

FREE = int(PageKind.FREE)
#: order-0 kinds compaction can move out of the way (movable, no extra references)
_COMPACTABLE = (IS_LRU | IS_MOVABLE_OPS) & ~IS_PINNED & (FOLIO_SIZE == FolioSize.BASE)


def _pool_free_kind(kinds: np.ndarray) -> np.ndarray:
    """The free pool kind of in-use hugetlb pages (their folio went back to the pool)."""
    return np.where(FOLIO_SIZE[kinds] == FolioSize.PUD, int(PageKind.GIGANTIC_FREE),
                    int(PageKind.HUGETLB_FREE)).astype(np.uint8)


class DeviceState:
    """A virtio-mem device's mutable driver state: plugged units and FAKE_OFFLINE big blocks."""

    def __init__(self, index: int, device: VirtioMemDevice, geometry: Geometry) -> None:
        self.index = index
        self.device = device
        self.plugged = device.plugged.copy()
        self.fake_offline: Set[int] = set(device.fake_offline_units)
        self.unit_pages = device.unit_size // geometry.page_size
        self.pages_per_block = geometry.pages_per_block

    @property
    def sbm(self) -> bool:
        return self.device.mode is VirtioMemMode.SBM

    @property
    def per_block(self) -> int:
        """SBM: sub-blocks per memory block."""
        return self.pages_per_block // self.unit_pages

    @property
    def blocks_per_bb(self) -> int:
        """BBM: memory blocks per big block."""
        return max(self.unit_pages // self.pages_per_block, 1)

    def grid(self) -> np.ndarray:
        """SBM: plugged sub-blocks, one row per memory block of the region (a view)."""
        return self.plugged.reshape(-1, self.per_block)

    def subblocks(self, block: int) -> np.ndarray:
        return self.grid()[block - self.device.first_block]

    def big_block_of(self, block: int) -> int:
        return (block - self.device.first_block) // self.blocks_per_bb

    def bb_blocks(self, bb: int) -> List[int]:
        first = self.device.first_block + bb * self.blocks_per_bb
        return list(range(first, first + self.blocks_per_bb))

    @property
    def plugged_bytes(self) -> int:
        return int(np.count_nonzero(self.plugged)) * self.device.unit_size


@dataclass
class _Pages:
    kinds: np.ndarray
    refcount: np.ndarray


class MachineState:
    """The mutable machine a plan works on (see the module docstring for the placement rule)."""

    def __init__(self, machine: Machine, semantics: Optional[str] = None) -> None:
        self.machine = machine
        self.geometry = geo = machine.geometry
        self.semantics: OfflineSemantics = get_semantics(semantics or machine.default_semantics)
        table = machine.blocks
        self.ids = table.ids.copy()
        self.state = table.state.copy()
        self.zone = table.zone.copy()
        self.node = table.node.copy()
        self.ram_pages = table.ram_pages.copy()
        self.vmemmap = table.vmemmap.copy()
        self.device = table.device.copy()
        self.present = np.ones(len(self.ids), dtype=bool)
        self._rows = {int(b): i for i, b in enumerate(self.ids)}
        n = len(self.ids)
        self.free = np.zeros(n, dtype=np.int64)
        self.free_slots = np.zeros(n, dtype=np.int64)
        self.free_huge = {o: np.zeros(n, dtype=np.int64) for o in geo.hugetlb_orders}
        #: free pages migration targets may come from (``free_target_pages()``) and free
        #: hugetlb folios the pool may hand out (head outside pageblocks someone else isolated)
        self.target_free = np.zeros(n, dtype=np.int64)
        self.pool_heads = {o: np.zeros(n, dtype=np.int64) for o in geo.hugetlb_orders}
        self._pages: Dict[int, _Pages] = {}
        self.devices = [DeviceState(i, d, geo) for i, d in enumerate(machine.devices)]
        self.pageblocks = SpecialPageblocks(machine)
        #: placement approximations worth telling the user about
        self.notes: List[str] = []
        self._census()
        # The pool counters as simulate resolves them, with the free folios this census counted.
        self.pools: Dict[int, HugetlbPool] = resolve_pools(
            machine, {order: int(self.free_huge[order].sum()) for order in geo.hugetlb_orders})

    def copy(self) -> "MachineState":
        """An independent copy (the census is not redone)."""
        other = object.__new__(MachineState)
        other.__dict__.update(self.__dict__)
        for name in ("ids", "state", "zone", "node", "ram_pages", "vmemmap", "device", "present", "free",
                     "free_slots", "target_free"):
            setattr(other, name, getattr(self, name).copy())
        other.free_huge = {o: a.copy() for o, a in self.free_huge.items()}
        other.pool_heads = {o: a.copy() for o, a in self.pool_heads.items()}
        other._pages = {b: _Pages(p.kinds.copy(), p.refcount.copy()) for b, p in self._pages.items()}
        other.pools = dict(self.pools)
        other.notes = list(self.notes)
        other.devices = []
        for d in self.devices:
            copy = object.__new__(DeviceState)
            copy.__dict__.update(d.__dict__)
            copy.plugged = d.plugged.copy()
            copy.fake_offline = set(d.fake_offline)
            other.devices.append(copy)
        return other

    # ---- lookups --------------------------------------------------------------------------

    def row_of(self, block: int) -> int:
        return self._rows[int(block)]

    def has_block(self, block: int) -> bool:
        row = self._rows.get(int(block))
        return row is not None and bool(self.present[row])

    def online(self, row: int) -> bool:
        return bool(self.present[row]) and self.state[row] == 0

    def zone_of(self, row: int) -> Optional[Zone]:
        return Zone.from_code(int(self.zone[row]))

    def online_rows(self) -> np.ndarray:
        return np.flatnonzero(self.present & (self.state == 0))

    def device_of(self, row: int) -> Optional[DeviceState]:
        index = int(self.device[row])
        return None if index < 0 else self.devices[index]

    def device_named(self, name: str) -> Optional[DeviceState]:
        return next((d for d in self.devices if d.device.id == name), None)

    def memory_nodes(self) -> List[int]:
        """``node_states[N_MEMORY]``: nodes with present pages."""
        return sorted(n for n, pages in self.node_present_pages().items() if pages > 0)

    def node_present_pages(self) -> Dict[int, int]:
        """``pgdat->node_present_pages`` of the current blocks (``memplan.engine.context``)."""
        return table_present_pages(self.table())

    def table(self) -> BlockTable:
        """The current block table (removed blocks left out)."""
        keep = np.flatnonzero(self.present)
        return BlockTable(ids=self.ids[keep], state=self.state[keep], zone=self.zone[keep], node=self.node[keep],
                          ram_pages=self.ram_pages[keep], vmemmap=self.vmemmap[keep], device=self.device[keep],
                          spans=self.machine.blocks.spans)

    def block_state_name(self, row: int) -> Optional[str]:
        """``virtio_mem_sbm_mb_state`` / ``virtio_mem_bbm_bb_state`` name of a device block."""
        dev = self.device_of(row)
        if dev is None:
            return None
        block = int(self.ids[row])
        if dev.sbm:
            added = bool(self.present[row])
            full = added and bool(dev.subblocks(block).all())
            return sbm_state(added, bool(self.state[row] == 0), self.zone_of(row) is Zone.MOVABLE, full).value
        return self.bb_state_name(dev, dev.big_block_of(block))

    def bb_state_name(self, dev: DeviceState, bb: int) -> str:
        return bbm_state(bool(dev.plugged[bb]), bb in dev.fake_offline).value

    # ---- pages ----------------------------------------------------------------------------

    def _census(self) -> None:
        geo = self.geometry
        rows = self.online_rows()
        for ids in chunks(self.ids[rows], geo.pages_per_block):
            batch = self.machine.pages.materialize(ids)
            for r, block in enumerate(ids):
                self._count(self.row_of(int(block)), batch.kinds[r])

    def _count(self, row: int, kinds: np.ndarray) -> None:
        """Count a block again: the engine's census of it (``count_block()``), plus the free pages
        and fully free pageblocks the placement rule hands out."""
        geo = self.geometry
        block = int(self.ids[row])
        self.free[row] = int(np.count_nonzero(kinds == FREE))
        self.free_slots[row] = int(np.count_nonzero((kinds.reshape(-1, geo.pageblock_pages) == FREE).all(axis=1)))
        counts = count_block(kinds, block, geo, self.pageblocks.isolated(block))
        self.target_free[row] = counts.free_pages
        for order in geo.hugetlb_orders:
            self.free_huge[order][row] = counts.free_hugetlb.get(order, 0)
            self.pool_heads[order][row] = counts.pool_heads.get(order, 0)

    def pages(self, block: int) -> _Pages:
        """The (mutable) pages of an online block, materialised on first use."""
        got = self._pages.get(int(block))
        if got is None:
            self.materialise([int(block)])
            got = self._pages[int(block)]
        return got

    def materialise(self, blocks: Sequence[int]) -> None:
        need = np.asarray(sorted({int(b) for b in blocks if int(b) not in self._pages}), dtype=np.int64)
        for ids in chunks(need, self.geometry.pages_per_block):
            batch = self.machine.pages.materialize(ids)
            refs = batch.refcounts()
            for r, block in enumerate(ids):
                self._pages[int(block)] = _Pages(batch.kinds[r].copy(), refs[r].astype(np.int32).copy())

    def touched_blocks(self) -> List[int]:
        return sorted(self._pages)

    def _refresh(self, row: int) -> None:
        self._count(row, self._pages[int(self.ids[row])].kinds)

    # ---- offlining ------------------------------------------------------------------------

    def _setup(self, kworker: bool) -> OfflineSetup:
        """The run's ``OfflineSetup`` as ``simulate`` builds it, from the current pools and blocks."""
        env = self.machine.environment
        if kworker:
            # virtio-mem's work item runs in a kworker: no signal ever arrives there.
            env = replace(env, signal_pending=False)
        return setup_with(self.machine, self.semantics, self.pools, self.node_present_pages(), env)

    def offline_nodes(self, row: int) -> List[int]:
        """``do_migrate_range()``'s nodemask (``memplan.kernel.migration.allowed_nodes``)."""
        return allowed_nodes(self.node_present_pages(), int(self.node[row]))

    def _target_rows(self, nodes: Sequence[int], zones: Sequence[Zone], exclude_row: Optional[int]) -> np.ndarray:
        rows = self.online_rows()
        out: List[np.ndarray] = []
        for node in nodes:
            for zone in zones:
                sel = rows[(self.node[rows] == node) & (self.zone[rows] == zone.code)]
                out.append(sel)
            if zones and zones[-1] is Zone.DMA:
                # Boot blocks spanning kernel zones (valid_zones "none") hold DMA/DMA32 pages.
                out.append(rows[(self.node[rows] == node) & (self.zone[rows] == ZONE_NONE)])
        order = np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
        if exclude_row is not None:
            order = order[order != exclude_row]
        return order

    def offline_capacity(self, row: int) -> Capacity:
        """Free pages ``do_migrate_range()`` may migrate this block's folios to: in the kernel
        zones and ZONE_MOVABLE of its allowed nodes (``target_zones()`` decides which folio may
        use which)."""
        return capacity_of(row, self.node, self.zone, self.present & (self.state == 0), self.node_present_pages(),
                           self.target_free)

    def pool_targets(self, row: int) -> Dict[int, int]:
        """Free hugetlb folios ``alloc_hugetlb_folio_nodemask()`` may dequeue while this block is
        isolated: on its allowed nodes, outside pageblocks someone else isolated and outside the
        block; plus those the pool counters know of and no page shows."""
        online = self.present & (self.state == 0)
        free = {order: int(counts[online].sum()) for order, counts in self.free_huge.items()}
        return pool_targets_of(row, self.node, online, self.node_present_pages(), self.pools, free, self.pool_heads)

    def context(self, row: int, capacity: Optional[Capacity] = None) -> BlockContext:
        dev = self.device_of(row)
        return block_context(
            self.machine, self.pageblocks, int(self.ids[row]),
            BlockState.ONLINE if self.online(row) else BlockState.OFFLINE, self.zone_of(row), int(self.node[row]),
            int(self.vmemmap[row]), self.current_device(dev) if dev else None, self.block_state_name(row),
            MigrationTargets(capacity=capacity, pool=self.pool_targets(row) if self.online(row) else {}))

    def current_device(self, dev: DeviceState) -> VirtioMemDevice:
        offline = frozenset(int(b) for b in self.ids[(self.device == dev.index) & self.present & (self.state != 0)])
        return replace(dev.device, plugged=dev.plugged.copy(), fake_offline_units=frozenset(dev.fake_offline),
                       offline_blocks=offline)

    def offline(self, block: int, kworker: bool = False) -> BlockVerdict:
        """Write ``offline`` to ``memoryN/state`` (or ``device_offline()`` from a kworker) and apply it."""
        row = self.row_of(block)
        if not self.online(row):
            empty = np.zeros(self.geometry.pages_per_block, dtype=np.uint8)
            verdict, _ = offline_block(self._setup(kworker), self.context(row), empty, None)
            return verdict
        pages = self.pages(block)
        ctx = self.context(row, self.offline_capacity(row))
        verdict, stats = offline_block(self._setup(kworker), ctx, pages.kinds, pages.refcount)
        if stats.effects is not None:
            self._apply_offline(row, stats.effects)
        if verdict.result is Outcome.OFFLINED:
            self.state[row] = 1
            self._clear_counts(row)
            self._pages.pop(int(block), None)  # the memmap is stale from now on
        return verdict

    def _apply_offline(self, row: int, effects: OfflineEffects) -> None:
        block = int(self.ids[row])
        pages = self._pages[block]
        off = effects.offset
        k = pages.kinds[off:]
        if effects.split is not None:  # migrate_pages() split these THPs into order-0 pages
            k[effects.split] = int(PageKind.ANON)
        lo = self.geometry.block_start_pfn(block) + off
        first = RangeView(lo, k, pages.refcount[off:].astype(np.int64), np.zeros(len(k), bool),
                          self.geometry).folio_first()
        zone = self.zone_of(row) or Zone.NORMAL
        fresh = np.flatnonzero(effects.migrated & first)
        for large in (False, True):  # alloc_migration_target(): large folios may land in more zones
            mine = fresh[(FOLIO_SIZE[k[fresh]] != FolioSize.BASE) == large]
            alloc = _Allocator(self, self._target_rows(self.offline_nodes(row), target_zones(zone, large), row),
                               replace_rows=np.zeros(0, dtype=np.int64), pool_nodes=self.offline_nodes(row),
                               exclude_row=row, exclude=(0, self.geometry.pages_per_block))
            done, _ = alloc.allocate(lo + mine, k[mine], np.zeros(len(mine), dtype=np.int8), pool=False)
            if done < len(mine):
                self.notes.append(f"memory block {block}: {len(mine) - done} migrated folio(s) found no place in "
                                  "the described free memory")
        for head in np.flatnonzero(effects.pool_migrated & first):
            order = int(self.geometry.folio_order[k[head]])
            alloc.take_pool(order, forced=True)
            self._add_pool(order, +1)  # the source goes back to the pool as a free folio
        dissolved_heads = np.flatnonzero(effects.dissolved & first)
        for head in dissolved_heads:
            self._add_pool(int(self.geometry.folio_order[k[head]]), -1)
        changed = effects.migrated | effects.pool_migrated | effects.dissolved
        k[effects.migrated] = FREE
        k[effects.pool_migrated] = _pool_free_kind(k[effects.pool_migrated])
        k[effects.dissolved] = FREE
        pages.refcount[off:][changed] = 0
        self._refresh(row)

    def _add_pool(self, order: int, delta: int) -> None:
        pool = self.pools[order]
        self.pools[order] = HugetlbPool(free=max((pool.free or 0) + delta, 0), resv=pool.resv)

    # ---- virtio-mem -----------------------------------------------------------------------

    def fake_offline(self, row: int, lo: int, hi: int) -> ContigResult:
        """``virtio_mem_fake_offline()`` on pages [lo, hi) of an online block, applied."""
        geo = self.geometry
        block = int(self.ids[row])
        pages = self.pages(block)
        zone = self.zone_of(row) or Zone.NORMAL
        own = int(self.node[row])
        nodes = [own] + [n for n in self.memory_nodes() if n != own]
        alloc = _Allocator(self, self._target_rows(nodes, target_zones(zone), None),
                           replace_rows=self._target_rows([own], ZONELIST_ORDER, None), pool_nodes=nodes,
                           exclude_row=row, exclude=(lo, hi))
        pb = geo.pageblock_pages
        cma = self.pageblocks.cma(block)[lo // pb:hi // pb]
        isolated = self.pageblocks.isolated(block)[lo // pb:hi // pb]
        kinds, ref = pages.kinds[lo:hi], pages.refcount[lo:hi]
        before = kinds.copy()
        start_pfn = geo.block_start_pfn(block) + lo
        result = alloc_contig_range(before, ref, start_pfn, zone is Zone.MOVABLE, cma, isolated, geo, alloc)
        first = RangeView(start_pfn, before, ref.astype(np.int64), np.zeros(len(before), bool), geo).folio_first()
        # Pool bookkeeping: free folios replaced (+1 new elsewhere was counted by the allocator,
        # -1 here for the dissolved original); sources left in the pool count again.
        replaced = result.vacated & first & (before == PageKind.HUGETLB_FREE)
        self._add_pool(geo.pmd_order, -int(np.count_nonzero(replaced)))
        for head in np.flatnonzero(result.pooled & first):
            self._add_pool(int(geo.folio_order[before[head]]), +1)
        kinds[result.vacated] = FREE
        ref[result.vacated] = 0
        kinds[result.pooled] = _pool_free_kind(before[result.pooled])
        ref[result.pooled] = 0
        if result.errno is None:
            # virtio_mem_set_fake_offline(..., onlined=true): PageOffline, refcount 1 from the allocation.
            kinds[:] = int(PageKind.FAKE_OFFLINE)
            ref[:] = 1
        self._refresh(row)
        return result

    def fake_online(self, row: int, lo: int, hi: int) -> None:
        """``virtio_mem_fake_online()``: fake-offline pages [lo, hi) go back to the buddy."""
        pages = self.pages(int(self.ids[row]))
        sel = pages.kinds[lo:hi] == PageKind.FAKE_OFFLINE
        pages.kinds[lo:hi][sel] = FREE
        pages.refcount[lo:hi][sel] = 0
        self._refresh(row)

    def reonline(self, row: int) -> None:
        """Online a device block again (``offline_and_remove_memory()`` rolling back): the memmap is
        re-initialised and virtio-mem's online callback keeps unplugged memory fake-offline."""
        block = int(self.ids[row])
        geo = self.geometry
        dev = self.device_of(row)
        kinds = np.zeros(geo.pages_per_block, dtype=np.uint8)
        if dev is not None:
            if dev.sbm:
                fake = np.repeat(~dev.subblocks(block), dev.unit_pages)
                kinds[fake] = int(PageKind.FAKE_OFFLINE)
            elif dev.big_block_of(block) in dev.fake_offline:
                kinds[:] = int(PageKind.FAKE_OFFLINE)
        self._pages[block] = _Pages(kinds, DEFAULT_REFCOUNT[kinds].astype(np.int32))
        self.state[row] = 0
        self._refresh(row)

    def remove(self, row: int) -> None:
        """``remove_memory()`` / ``try_remove_memory()``: the memory block device disappears."""
        self.present[row] = False
        self.state[row] = 1
        self._clear_counts(row)
        self._pages.pop(int(self.ids[row]), None)

    def _clear_counts(self, row: int) -> None:
        """An offline or removed block has no free pages anyone can allocate."""
        for counts in (self.free, self.free_slots, self.target_free, *self.free_huge.values(),
                       *self.pool_heads.values()):
            counts[row] = 0

    # ---- summaries ------------------------------------------------------------------------

    def left(self) -> MemoryLeft:
        page = self.geometry.page_size
        rows = self.online_rows()
        groups: Dict[Tuple[int, int], List[int]] = {}
        for row in rows:
            key = (int(self.node[row]), int(self.zone[row]))
            acc = groups.setdefault(key, [0, 0])
            acc[0] += int(self.free[row]) * page
            acc[1] += int(self.ram_pages[row]) * page
        zones = [ZoneMemory(node, Zone.from_code(code), free, total)
                 for (node, code), (free, total) in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1]))]
        return MemoryLeft(tuple(zones), free_known=self.machine.page_data)

    def free_pages_total(self) -> int:
        return int(self.free[self.online_rows()].sum())

    # ---- back to a Machine ----------------------------------------------------------------

    def to_machine(self) -> Machine:
        """A frozen snapshot of the state as a ``Machine`` (``simulate`` and the writer read it)."""
        table = self.table()
        devices = tuple(self.current_device(d) for d in self.devices)
        env = replace(self.machine.environment, hugetlb={o: HugetlbPool(p.free, p.resv) for o, p in self.pools.items()})
        source = StatePageSource(self.machine.pages, {b: _Pages(p.kinds.copy(), p.refcount.copy())
                                                      for b, p in self._pages.items()
                                                      if self.online(self.row_of(b))})
        return replace(self.machine, blocks=table, pages=source, devices=devices, environment=env, warnings=())


class StatePageSource:
    """Pages of a state snapshot: materialised blocks from the snapshot, the rest from the original."""

    def __init__(self, original: PageSource, snapshot: Dict[int, _Pages]) -> None:
        self.original = original
        self.snapshot = snapshot

    def materialize(self, block_ids: np.ndarray) -> PageBatch:
        block_ids = np.asarray(block_ids, dtype=np.int64)
        n = len(block_ids)
        need = np.asarray([b for b in block_ids if int(b) not in self.snapshot], dtype=np.int64)
        batch = self.original.materialize(need) if len(need) else None
        ppb = (batch.kinds.shape[1] if batch is not None
               else len(next(iter(self.snapshot.values())).kinds) if self.snapshot else 0)
        kinds = np.zeros((n, ppb), dtype=np.uint8)
        refs = np.zeros((n, ppb), dtype=np.int32)
        j = 0
        for i, block in enumerate(block_ids):
            got = self.snapshot.get(int(block))
            if got is not None:
                kinds[i], refs[i] = got.kinds, got.refcount
            else:
                assert batch is not None
                kinds[i] = batch.kinds[j]
                refs[i] = batch.refcounts()[j]
                j += 1
        default = DEFAULT_REFCOUNT[kinds]
        return PageBatch(block_ids=block_ids, kinds=kinds,
                         refcount=None if np.array_equal(refs, default) else refs)


class _Allocator:
    """Migration targets for one operation, in the placement order of the module docstring.

    Implements ``memplan.kernel.contig.ContigTargets``.
    """

    def __init__(self, state: MachineState, rows: np.ndarray, replace_rows: np.ndarray, pool_nodes: Sequence[int],
                 exclude_row: int, exclude: Tuple[int, int]) -> None:
        self.state = state
        self.rows = rows
        self.replace_rows = replace_rows
        self.pool_nodes = list(pool_nodes)
        self.exclude_row = exclude_row
        self.exclude = exclude

    # -- helpers --
    def _usable(self, row: int) -> np.ndarray:
        """Free page indexes of a row that may be allocated (outside the isolated range)."""
        kinds = self.state.pages(int(self.state.ids[row])).kinds
        free = np.flatnonzero(kinds == FREE)
        if row == self.exclude_row:
            lo, hi = self.exclude
            free = free[(free < lo) | (free >= hi)]
        return free

    def _available(self, row: int) -> int:
        if row != self.exclude_row:
            return int(self.state.free[row])
        return len(self._usable(row))

    def capacity(self, rows: Optional[np.ndarray] = None) -> int:
        rows = self.rows if rows is None else rows
        total = int(self.state.free[rows].sum())
        if self.exclude_row in set(rows.tolist()):
            total += self._available(self.exclude_row) - int(self.state.free[self.exclude_row])
        return total

    # -- order-0 --
    def place_order0(self, kinds: np.ndarray, rows: Optional[np.ndarray] = None) -> int:
        """Place order-0 pages of the given kinds; returns how many found a free page."""
        rows = self.rows if rows is None else rows
        st = self.state
        done = 0
        for row in rows:
            if done == len(kinds):
                break
            if st.free[row] <= 0:
                continue
            free = self._usable(int(row))
            take = min(len(free), len(kinds) - done)
            if not take:
                continue
            pages = st.pages(int(st.ids[row]))
            idx = free[:take]
            chunk = kinds[done:done + take]
            pages.kinds[idx] = chunk
            pages.refcount[idx] = DEFAULT_REFCOUNT[chunk]
            done += take
            st._refresh(int(row))
        return done

    # -- compound --
    def _slots(self, row: int) -> np.ndarray:
        """Aligned pageblocks (indexes) of a row outside the isolated range."""
        pb = self.state.geometry.pageblock_pages
        slots = np.arange(self.state.geometry.pageblocks_per_block)
        if row == self.exclude_row:
            lo, hi = self.exclude
            slots = slots[(slots * pb + pb <= lo) | (slots * pb >= hi)]
        return slots

    def place_compound(self, kind: int, rows: np.ndarray, compact: bool) -> bool:
        st = self.state
        pb = st.geometry.pageblock_pages
        for row in rows:
            if st.free_slots[row] <= 0:
                continue
            pages = st.pages(int(st.ids[row]))
            slots = self._slots(int(row))
            grid = pages.kinds.reshape(-1, pb)
            ok = slots[(grid[slots] == FREE).all(axis=1)]
            if len(ok):
                self._fill_slot(int(row), int(ok[0]), kind)
                return True
        if not compact:
            return False
        for row in rows:
            if self._available(int(row)) < pb:
                continue
            pages = st.pages(int(st.ids[row]))
            slots = self._slots(int(row))
            grid = pages.kinds.reshape(-1, pb)[slots]
            refs = pages.refcount.reshape(-1, pb)[slots]
            movable = (grid == FREE) | (_COMPACTABLE[grid] & (refs == DEFAULT_REFCOUNT[grid]))
            ok = np.flatnonzero(movable.all(axis=1))
            if not len(ok):
                continue
            free_count = (grid[ok] == FREE).sum(axis=1)
            slot = int(slots[ok[int(np.argmax(free_count))]])
            # Compaction moves the slot's movable pages to free pages of the same block.
            base = slot * pb
            busy = base + np.flatnonzero(pages.kinds[base:base + pb] != FREE)
            free = self._usable(int(row))
            free = free[(free < base) | (free >= base + pb)][:len(busy)]
            pages.kinds[free] = pages.kinds[busy]
            pages.refcount[free] = pages.refcount[busy]
            pages.kinds[busy] = FREE
            pages.refcount[busy] = 0
            self._fill_slot(int(row), slot, kind)
            return True
        return False

    def _fill_slot(self, row: int, slot: int, kind: int) -> None:
        st = self.state
        pb = st.geometry.pageblock_pages
        pages = st.pages(int(st.ids[row]))
        pages.kinds[slot * pb:(slot + 1) * pb] = kind
        pages.refcount[slot * pb:(slot + 1) * pb] = DEFAULT_REFCOUNT[kind]
        st._refresh(row)

    # -- hugetlb pool --
    def take_pool(self, order: int, forced: bool = False) -> bool:
        """``alloc_hugetlb_folio_nodemask()``'s dequeue: a free pool folio becomes the target."""
        st = self.state
        pool = st.pools[order]
        if not forced and (pool.free or 0) <= pool.resv:
            return False  # available_huge_pages(): free_huge_pages > resv_huge_pages
        size = 1 << order
        rows = st._target_rows(self.pool_nodes, ZONELIST_ORDER, None)
        for row in rows[st.pool_heads[order][rows] > 0]:
            block = int(st.ids[row])
            pages = st.pages(block)
            base = st.geometry.block_start_pfn(block)
            # dequeue_hugetlb_folio_node_exact(): never a folio whose head's pageblock is isolated
            heads = hugetlb_mod.free_folio_head_offsets(pages.kinds, base, order, st.geometry,
                                                        st.pageblocks.isolated(block))
            if row == self.exclude_row:
                lo, hi = self.exclude
                heads = heads[(heads + size <= lo) | (heads >= hi)]
            if not len(heads):
                continue
            self._mark_used(base + int(heads[0]), order)
            st._add_pool(order, -1)
            return True
        known = int(st.free_huge[order][st.online_rows()].sum())
        if (pool.free or 0) > known:
            st._add_pool(order, -1)  # a pool folio the profile counts but does not place
            return True
        return False

    def _mark_used(self, head_pfn: int, order: int) -> None:
        st = self.state
        ppb = st.geometry.pages_per_block
        end = head_pfn + (1 << order)
        for block in range(head_pfn // ppb, (end - 1) // ppb + 1):
            if not st.has_block(block):
                continue
            pages = st.pages(block)
            lo, hi = max(head_pfn - block * ppb, 0), min(end - block * ppb, ppb)
            pages.kinds[lo:hi] = int(PageKind.GIGANTIC if order == st.geometry.pud_order else PageKind.HUGETLB)
            pages.refcount[lo:hi] = 1
            st._refresh(st.row_of(block))

    # -- ContigTargets --
    def allocate(self, pfns: np.ndarray, kinds: np.ndarray, requests: np.ndarray,
                 pool: bool = True) -> Tuple[int, np.ndarray]:
        n = len(kinds)
        used_pool = np.zeros(n, dtype=bool)
        geo = self.state.geometry
        orders = geo.folio_order[kinds] if n else np.zeros(0, dtype=np.uint8)
        simple = (orders == 0) & (requests == int(Request.MIGRATE))
        breaks = np.flatnonzero(~simple)
        i = 0
        while i < n:
            if simple[i]:
                nxt = breaks[np.searchsorted(breaks, i)] if np.searchsorted(breaks, i) < len(breaks) else n
                want = kinds[i:nxt]
                placed = self.place_order0(want)
                if placed < len(want):
                    return i + placed, used_pool
                i = int(nxt)
                continue
            kind, order = int(kinds[i]), int(orders[i])
            if requests[i] == int(Request.REPLACE):
                ok = self.place_compound(int(PageKind.HUGETLB_FREE), self.replace_rows, compact=True)
                if ok:
                    self.state._add_pool(geo.pmd_order, +1)
            elif IS_HUGETLB[kind]:
                if pool and self.take_pool(order):
                    used_pool[i] = ok = True
                elif geo.is_gigantic(order):
                    ok = False  # alloc_migrate_hugetlb_folio(): gigantic folios cannot be allocated fresh
                else:
                    ok = self.place_compound(int(PageKind.HUGETLB), self.rows, compact=True)
            else:
                ok = self.place_compound(kind, self.rows, compact=False)
                if not ok and self.capacity() >= (1 << order):
                    # migrate_pages() splits a THP whose target allocation fails.
                    ok = self.place_order0(np.full(1 << order, int(PageKind.ANON), dtype=np.uint8)) == 1 << order
            if not ok:
                return i, used_pool
            i += 1
        return n, used_pool
