"""``memplan simulate``: judge every selected block against the machine's current state.

Blocks are materialised in chunks (bounded memory). Each block is judged independently, as
if it were the only one being offlined; the only cross-block input is where migrated pages
can go (free pages of other online blocks on the allowed nodes, spec §3 step 9b) and the
hugetlb pools, which a second pass takes into account only where it matters.
"""

from __future__ import annotations

import dataclasses
import gc
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from memplan.core.errors import UsageError
from memplan.core.machine import Machine, chunks
from memplan.core.model import Zone
from memplan.core.results import BlockVerdict, SimulationResult
from memplan.core.units import format_block_ranges
from memplan.engine.context import ContextBuilder, census, node_present_pages, pageblock_masks, resolve_pools
from memplan.engine.shortcut import chunk_verdicts
from memplan.kernel.migration import Capacity, allowed_nodes, targets_suffice
from memplan.kernel.offline import BlockStats, offline_block
from memplan.kernel.semantics import OfflineSemantics, get_semantics

__all__ = [
    "Progress",
    "Simulator",
    "census",
    "chunks",
    "judge",
    "migration_capacities",
    "pageblock_masks",
    "resolve_pools",
    "select_blocks",
    "simulate",
    "with_confidence",
]

Progress = Callable[[int, int], None]


class Simulator(ContextBuilder):
    """Builds per-block contexts for one machine (``ContextBuilder``) and runs the pipeline over
    chunks: the block-level shortcut first, ``offline_block()`` for the blocks it leaves."""

    def run(self, block_ids: np.ndarray, capacities: Optional[Dict[int, Capacity]] = None,
            progress: Optional[Progress] = None) -> List[Tuple[BlockVerdict, BlockStats]]:
        machine = self.machine
        table = machine.blocks
        caps = capacities or {}
        out: List[Tuple[BlockVerdict, BlockStats]] = []
        done = 0
        for ids in chunks(block_ids, machine.geometry.pages_per_block):
            rows = table.rows(ids)
            online = table.online[rows]
            online_rows = rows[online]
            batch = machine.pages.materialize(ids[online]) if len(online_rows) else None
            fast: List = []
            if batch is not None:
                fast = chunk_verdicts(self.setup, self.columns(online_rows, caps), batch.kinds,
                                      batch.rows_with_refcount(), batch.whole_folios, batch.special_rows)
            if len(fast) == len(rows) and None not in fast:
                out.extend(fast)  # every block decided without the per-page pipeline
                done += len(ids)
                if progress:
                    progress(done, len(block_ids))
                continue
            j = 0
            for r, is_online in zip(rows.tolist(), online.tolist()):
                if not is_online:
                    empty = np.zeros(machine.geometry.pages_per_block, dtype=np.uint8)
                    out.append(offline_block(self.setup, self.context(r, caps.get(int(table.ids[r]))), empty, None))
                    continue
                result = fast[j]
                if result is None:
                    assert batch is not None
                    ref = batch.refcount[j] if batch.refcount is not None else None
                    ctx = self.context(r, caps.get(int(table.ids[r])))
                    result = offline_block(self.setup, ctx, batch.kinds[j], ref)
                out.append(result)
                j += 1
            done += len(ids)
            if progress:
                progress(done, len(block_ids))
        return out


def select_blocks(machine: Machine, blocks: Optional[Sequence[int]]) -> np.ndarray:
    """The requested block ids (all online blocks by default); unknown ids are a usage error."""
    table = machine.blocks
    if blocks is None:
        return table.ids[table.online]
    ids = np.asarray(sorted(set(int(b) for b in blocks)), dtype=np.int64)
    exists = table.exists(ids)
    if not exists.all():
        missing = int(ids[~exists][0])
        nearest = int(table.ids[np.argmin(np.abs(table.ids - missing))]) if len(table.ids) else None
        raise UsageError(f"memory block {missing} does not exist on {machine.name} "
                         f"(blocks: {_describe_ids(table.ids)})",
                         hint=f"did you mean {nearest}?" if nearest is not None else None)
    return ids


def _describe_ids(ids: np.ndarray) -> str:
    text = format_block_ranges([int(i) for i in ids])
    return text if len(text) < 60 else text[:57] + "..."


def migration_capacities(machine: Machine, stats: Dict[int, BlockStats]) -> Dict[int, Capacity]:
    """Where migration targets may come from for the blocks whose source list may not all find
    one (the others need no count, ``targets_suffice()``): free pages of the online blocks on the
    other memory nodes, or on its own when it is the only one (``do_migrate_range()``'s
    nodemask), in kernel zones and in ZONE_MOVABLE (``alloc_migration_target()``:
    ``memplan.kernel.migration.target_zones``). Boot blocks spanning kernel zones count as kernel
    zones; blocks spanning nodes count nowhere (the model does not split their free pages)."""
    table = machine.blocks
    known = np.fromiter(stats.keys(), dtype=np.int64, count=len(stats))
    all_demand = np.fromiter((s.demand for s in stats.values()), dtype=np.int64, count=len(stats))
    needy = all_demand > 0
    if not needy.any():
        return {}
    # Every page of demand counted as an order-0 page's (the stats do not split it): a block
    # this says is short may not be; its verdict then comes from the exact count.
    needy_blocks, small, large = known[needy], all_demand[needy], 0
    needy_rows = table.rows(needy_blocks)
    movable_source = table.zone[needy_rows] == Zone.MOVABLE.code
    # Lower bound from the selected blocks alone; a census only when that is not enough.
    free_known = np.zeros(len(table), dtype=np.int64)
    free_known[table.rows(known)] = np.fromiter((s.free_pages for s in stats.values()), dtype=np.int64,
                                                count=len(stats))
    present = node_present_pages(machine)

    def capacities(free: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        online = table.online & (table.node >= 0)
        in_movable = table.zone == Zone.MOVABLE.code
        kernel = np.zeros(len(needy_blocks), dtype=np.int64)
        movable = np.zeros(len(needy_blocks), dtype=np.int64)
        for node in np.unique(table.node[needy_rows]).tolist():
            allowed = online & np.isin(table.node, allowed_nodes(present, node))
            here = table.node[needy_rows] == node
            kernel[here] = int(free[allowed & ~in_movable].sum())
            movable[here] = int(free[allowed & in_movable].sum())
            # The block's own free pages are never its targets (they sit in the isolated range).
            own = here & allowed[needy_rows]
            kernel[own & ~movable_source] -= free[needy_rows[own & ~movable_source]]
            movable[own & movable_source] -= free[needy_rows[own & movable_source]]
        return kernel, movable

    if np.all(targets_suffice(*capacities(free_known), movable_source, small, large)):
        return {}
    kernel, movable = capacities(census(machine).free_pages)
    short = ~targets_suffice(kernel, movable, movable_source, small, large)
    return {int(b): Capacity(int(k), int(m))
            for b, k, m in zip(needy_blocks[short].tolist(), kernel[short].tolist(), movable[short].tolist())}


@contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: a 16 TiB run allocates some 400,000 small acyclic
    objects (verdicts, counts), and each full collection would walk all of them again (it
    more than doubled the pipeline's time). Nothing collectable is created meanwhile."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def judge(machine: Machine, sem: OfflineSemantics, ids: np.ndarray,
          progress: Optional[Progress] = None) -> List[Tuple[BlockVerdict, BlockStats]]:
    """Run the pipeline over the given blocks, then again where migration targets run short."""
    simulator = Simulator(machine, sem)
    # Blocks migrating hugetlb folios need the machine's free pool folios by node: counted from
    # every block's stats after this pass (no census when every block is judged anyway).
    simulator.deferred_pool = {}
    results = simulator.run(ids, progress=progress)
    stats = {v.block: s for v, s in results}
    results = _with_pool_targets(simulator, results, stats)
    short = migration_capacities(machine, stats)
    if short:
        redo = np.asarray(sorted(short), dtype=np.int64)
        redone = {v.block: (v, s) for v, s in simulator.run(redo, capacities=short)}
        results = [redone.get(v.block, (v, s)) for v, s in results]
    return results


def _with_pool_targets(simulator: Simulator, results: List[Tuple[BlockVerdict, BlockStats]],
                       stats: Dict[int, BlockStats]) -> List[Tuple[BlockVerdict, BlockStats]]:
    """Judge again the blocks whose verdict their real pool targets could change (``stats`` is
    updated): now that every block's free pool folios are known."""
    deferred, simulator.deferred_pool = simulator.deferred_pool, None
    if not deferred:
        return results
    simulator.learn_hugetlb(stats)
    ids = simulator.machine.blocks.ids
    rows = [row for row, stand_in in sorted(deferred.items())
            if simulator.pool_matters(row, stand_in, stats[int(ids[row])].hugetlb_folios)]
    again = {v.block: (v, s) for v, s in simulator.run(ids[rows])} if rows else {}
    stats.update((b, s) for b, (_, s) in again.items())
    return [again.get(v.block, (v, s)) for v, s in results]


def with_confidence(machine: Machine, sem: OfflineSemantics, verdicts: List[BlockVerdict]) -> List[BlockVerdict]:
    """Machines whose input cannot see everything (snapshots): judge the blocks a pessimistic
    reading could change a second time, then attach confidence and blind spots
    (``Machine.assessor``)."""
    assessor = machine.assessor
    if assessor is None:
        return verdicts
    alternative = assessor.second_reading()
    again = np.asarray([v.block for v in verdicts if alternative is not None and assessor.needs_second_reading(v)],
                       dtype=np.int64)
    second: Dict[int, BlockVerdict] = {}
    if len(again) and alternative is not None:
        pessimistic = dataclasses.replace(machine, pages=alternative, assessor=None)
        second = {v.block: v for v, _ in judge(pessimistic, sem, again)}
    effect = sem.foreign_reference_effect()
    out = []
    for v in verdicts:
        level, spots = assessor.assess(v, second.get(v.block), effect)
        out.append(dataclasses.replace(v, confidence=level, blind_spots=spots))
    return out


def simulate(machine: Machine, semantics: Optional[str] = None, blocks: Optional[Sequence[int]] = None,
             progress: Optional[Progress] = None) -> SimulationResult:
    """Predict offlining each selected block (default: every online block)."""
    sem = get_semantics(semantics or machine.default_semantics)
    ids = select_blocks(machine, blocks)
    with _without_cyclic_gc():
        verdicts = with_confidence(machine, sem, [v for v, _ in judge(machine, sem, ids, progress)])
    return SimulationResult(
        profile=machine.source, machine=machine.name, semantics=sem.name,
        blocks=tuple(verdicts), warnings=machine.warnings,
        semantics_reason=machine.semantics_reason if semantics is None else None,
    )
