"""``memplan simulate``: judge every selected block against the machine's current state.

Blocks are materialised in chunks (bounded memory). Each block is judged independently, as
if it were the only one being offlined; the only cross-block input is where migrated pages
can go (free pages of other online blocks on the allowed nodes, spec §3 step 9b) and the
hugetlb pools, which a second pass takes into account only where it matters.

``stream()`` yields the verdicts chunk by chunk, holding none beyond the chunk: the
cross-block inputs come from the blocks judged before (lower bounds of the census, enough for
nearly every block) and from the census only where those cannot tell. ``judge()`` holds every
block's result and takes the same decisions over the whole run (tests/test_streaming.py
compares the two).
"""

from __future__ import annotations

import dataclasses
import gc
import weakref
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from memplan.core.arrays import IntArray
from memplan.core.errors import UsageError
from memplan.core.machine import Machine, PageSource, chunks
from memplan.core.model import Zone
from memplan.core.results import BlockVerdict, Confidence, Outcome, SimulationResult, Summary
from memplan.core.units import format_block_ranges
from memplan.engine.context import (
    ContextBuilder,
    capacities_of,
    census,
    node_present_pages,
    pageblock_masks,
    resolve_pools,
)
from memplan.engine.shortcut import chunk_verdicts
from memplan.kernel.migration import Capacity, allowed_nodes, targets_suffice
from memplan.kernel.offline import BlockStats, offline_block
from memplan.kernel.semantics import OfflineSemantics, get_semantics

__all__ = [
    "Progress",
    "RunningSummary",
    "SimulationStream",
    "Simulator",
    "census",
    "chunks",
    "judge",
    "migration_capacities",
    "pageblock_masks",
    "resolve_pools",
    "select_blocks",
    "simulate",
    "stream",
    "with_confidence",
]

Progress = Callable[[int, int], None]


class Simulator(ContextBuilder):
    """Builds per-block contexts for one machine (``ContextBuilder``) and runs the pipeline over
    chunks: the block-level shortcut first, ``offline_block()`` for the blocks it leaves."""

    def run(self, block_ids: IntArray, capacities: Optional[Dict[int, Capacity]] = None,
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


def select_blocks(machine: Machine, blocks: Optional[Sequence[int]]) -> IntArray:
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


def _describe_ids(ids: IntArray) -> str:
    text = format_block_ranges([int(i) for i in ids])
    return text if len(text) < 60 else text[:57] + "..."


def migration_capacities(machine: Machine, stats: Dict[int, BlockStats]) -> Dict[int, Capacity]:
    """Where migration targets may come from for the blocks whose source list may not all find
    one (the others need no count, ``targets_suffice()``): free pages of the online blocks on the
    other memory nodes, or on its own when it is the only one (``do_migrate_range()``'s
    nodemask), in kernel zones and in ZONE_MOVABLE (``alloc_migration_target()``:
    ``memplan.kernel.migration.target_zones``); the rule is ``memplan.engine.context.capacities_of``."""
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

    def capacities(free: IntArray) -> Tuple[np.ndarray, np.ndarray]:
        return capacities_of(needy_rows, table.node, table.zone, table.online, present, free)

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


def judge(machine: Machine, sem: OfflineSemantics, ids: IntArray,
          progress: Optional[Progress] = None) -> List[Tuple[BlockVerdict, BlockStats]]:
    """Run the pipeline over the given blocks, then again where migration targets run short
    (every result held: ``stream()`` gives the same verdicts chunk by chunk)."""
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
        pessimistic = _pessimistic(machine, alternative)
        second = {v.block: v for v, _ in judge(pessimistic, sem, again)}
    effect = sem.foreign_reference_effect()
    out = []
    for v in verdicts:
        level, spots = assessor.assess(v, second.get(v.block), effect)
        out.append(dataclasses.replace(v, confidence=level, blind_spots=spots, pages_known=machine.page_data))
    return out


_PESSIMISTIC: "weakref.WeakKeyDictionary[Machine, Machine]" = weakref.WeakKeyDictionary()


def _pessimistic(machine: Machine, alternative: PageSource) -> Machine:
    """The machine read pessimistically: one object per machine, so that its census (cached
    per machine object) is counted once however many chunks ask for second readings."""
    cached = _PESSIMISTIC.get(machine)
    if cached is None:
        cached = _PESSIMISTIC[machine] = dataclasses.replace(machine, pages=alternative, assessor=None)
    return cached


class _Known:
    """What the blocks judged so far say about where other blocks' pages can go: their free
    pages (migration targets, summed per node and zone class) and their free hugetlb folios
    the pool may hand out (summed per node and order). Lower bounds of the machine's census
    while the blocks stream by (the blocks are judged in order), which decide most blocks'
    targets without one: ``short()`` and ``pool_may_matter()``. Per block table row a few
    integers; no verdict is held."""

    def __init__(self, machine: Machine, present: Dict[int, int]) -> None:
        table = machine.blocks
        self.machine = machine
        self.present = present
        self.counted = table.online & (table.node >= 0)
        self.movable = table.zone == Zone.MOVABLE.code
        self.free = np.zeros(len(table), dtype=np.int64)
        self.free_by: Dict[Tuple[int, bool], int] = {}
        self.heads = {order: np.zeros(len(table), dtype=np.int64) for order in machine.geometry.hugetlb_orders}
        self.heads_by: Dict[Tuple[int, int], int] = {}
        self._allowed: Dict[int, List[int]] = {}

    def allowed(self, node: int) -> List[int]:
        nodes = self._allowed.get(node)
        if nodes is None:
            nodes = self._allowed[node] = [int(n) for n in allowed_nodes(self.present, node)]
        return nodes

    def learn(self, results: Sequence[Tuple[BlockVerdict, BlockStats]]) -> None:
        """Take in the stats of judged blocks (again: the newer stats replace the older)."""
        table = self.machine.blocks
        rows = table.rows(np.fromiter((v.block for v, _ in results), dtype=np.int64, count=len(results)))
        for row, (_, stats) in zip(rows.tolist(), results):
            if not self.counted[row]:
                self.free[row] = stats.free_pages
                continue
            node = int(table.node[row])
            key = (node, bool(self.movable[row]))
            self.free_by[key] = self.free_by.get(key, 0) + stats.free_pages - int(self.free[row])
            self.free[row] = stats.free_pages
            held = stats.pool_hugetlb or stats.free_hugetlb
            for order, heads in self.heads.items():
                count = held.get(order, 0)
                self.heads_by[(node, order)] = self.heads_by.get((node, order), 0) + count - int(heads[row])
                heads[row] = count

    def pool_may_matter(self, row: int, stand_in: Mapping[int, int],
                        hugetlb_folios: Optional[Mapping[int, int]]) -> bool:
        """``False`` when the block's exact pool targets (``ContextBuilder.pool_targets()``: at
        least the free folios of the judged blocks on its allowed nodes, other than its own)
        and its stand-in both cover its hugetlb folios: judged with either, it is judged alike
        (``ContextBuilder.pool_matters()``). ``True``: only the census can tell."""
        table = self.machine.blocks
        node = int(table.node[row])
        allowed = self.allowed(node)
        for order, count in (hugetlb_folios or {}).items():
            if count <= 0:
                continue
            if order not in self.heads:
                return True
            at_least = sum(self.heads_by.get((n, order), 0) for n in allowed)
            if table.online[row] and node in allowed:
                at_least -= int(self.heads[order][row])
            if count > min(at_least, stand_in.get(order, 0)):
                return True
        return False

    def short(self, results: Sequence[Tuple[BlockVerdict, BlockStats]]) -> Dict[int, Capacity]:
        """``migration_capacities()`` for the blocks of ``results``, judged after every block
        before them: a block whose demand the free pages of the judged blocks cover is never
        short (the census only adds pages); the census decides the others."""
        table = self.machine.blocks
        needy = [(v.block, s.demand) for v, s in results if s.demand > 0]
        if not needy:
            return {}
        blocks = np.asarray([b for b, _ in needy], dtype=np.int64)
        demand = np.asarray([d for _, d in needy], dtype=np.int64)
        rows = table.rows(blocks)
        kernel = np.zeros(len(rows), dtype=np.int64)
        movable = np.zeros(len(rows), dtype=np.int64)
        for i, row in enumerate(rows.tolist()):
            node = int(table.node[row])
            allowed = self.allowed(node)
            kernel[i] = sum(self.free_by.get((n, False), 0) for n in allowed)
            movable[i] = sum(self.free_by.get((n, True), 0) for n in allowed)
            if self.counted[row] and node in allowed:
                if self.movable[row]:
                    movable[i] -= self.free[row]
                else:
                    kernel[i] -= self.free[row]
        movable_source = self.movable[rows]
        unsure = ~np.asarray(targets_suffice(kernel, movable, movable_source, demand, 0), dtype=bool)
        if not unsure.any():
            return {}
        rows, blocks, demand, movable_source = rows[unsure], blocks[unsure], demand[unsure], movable_source[unsure]
        kernel, movable = capacities_of(rows, table.node, table.zone, table.online, self.present,
                                        census(self.machine).free_pages)
        short = ~np.asarray(targets_suffice(kernel, movable, movable_source, demand, 0), dtype=bool)
        return {int(b): Capacity(int(k), int(m))
                for b, k, m in zip(blocks[short].tolist(), kernel[short].tolist(), movable[short].tolist())}


def _judge_chunk(simulator: Simulator, known: _Known, ids: IntArray) -> List[Tuple[BlockVerdict, BlockStats]]:
    """``judge()`` for one chunk of blocks, after every block before it: the same verdicts."""
    table_ids = simulator.machine.blocks.ids
    simulator.deferred_pool = {} if simulator.hugetlb_heads is None else None
    results = simulator.run(ids)
    deferred, simulator.deferred_pool = simulator.deferred_pool, None
    known.learn(results)
    if deferred:
        stats = {v.block: s for v, s in results}
        rows = [row for row, stand_in in sorted(deferred.items())
                if known.pool_may_matter(row, stand_in, stats[int(table_ids[row])].hugetlb_folios)
                and simulator.pool_matters(row, stand_in, stats[int(table_ids[row])].hugetlb_folios)]
        if rows:
            again = simulator.run(table_ids[rows])
            known.learn(again)
            redone = {v.block: (v, s) for v, s in again}
            results = [redone.get(v.block, (v, s)) for v, s in results]
    short = known.short(results)
    if short:
        # Pool targets as the first pass had them: exact once known, else the stand-in (which
        # the pool check above found to judge the block alike).
        simulator.deferred_pool = {} if simulator.hugetlb_heads is None else None
        redone = {v.block: (v, s)
                  for v, s in simulator.run(np.asarray(sorted(short), dtype=np.int64), capacities=short)}
        simulator.deferred_pool = None
        results = [redone.get(v.block, (v, s)) for v, s in results]
    return results


class RunningSummary:
    """``SimulationResult.summary`` kept as running totals while the verdicts stream by."""

    def __init__(self) -> None:
        self.blocks = self.offlined = self.hangs = self.unknown = 0
        self.by_confidence: Dict[Confidence, int] = {c: 0 for c in Confidence}
        self.offlined_by_confidence: Dict[Confidence, int] = {c: 0 for c in Confidence}

    def add(self, verdict: BlockVerdict) -> None:
        self.blocks += 1
        if verdict.result is Outcome.OFFLINED:
            self.offlined += 1
            self.by_confidence[verdict.confidence or Confidence.CERTAIN] += verdict.size
            self.offlined_by_confidence[verdict.confidence or Confidence.CERTAIN] += 1
        elif verdict.result is Outcome.HANGS:
            self.hangs += 1
        if verdict.confidence is Confidence.UNKNOWN:
            self.unknown += 1

    def summary(self) -> Summary:
        return Summary(blocks=self.blocks, offlined=self.offlined, fails=self.blocks - self.offlined - self.hangs,
                       hangs=self.hangs, offlinable_bytes=sum(self.by_confidence.values()),
                       offlinable_bytes_by_confidence=dict(self.by_confidence), unknown_blocks=self.unknown,
                       offlined_by_confidence=dict(self.offlined_by_confidence))


class SimulationStream:
    """The verdicts of one ``simulate`` run (``Verdicts``, interface I1), judged chunk by chunk
    while they are read: one chunk's pages and verdicts at a time, whatever the machine's
    size. Iterate once; ``summary`` is valid after that."""

    def __init__(self, machine: Machine, sem: OfflineSemantics, ids: IntArray, semantics_reason: Optional[str],
                 progress: Optional[Progress] = None) -> None:
        self._machine = machine
        self._sem = sem
        self._ids = ids
        self._progress = progress
        self._totals = RunningSummary()
        self._started = False
        self._finished = False
        self.profile = machine.source
        self.machine = machine.name
        self.semantics = sem.name
        self.semantics_reason = semantics_reason
        self.warnings = machine.warnings

    def __len__(self) -> int:
        """The number of blocks judged."""
        return len(self._ids)

    def chunks(self) -> Iterator[List[BlockVerdict]]:
        """The verdicts a chunk at a time, in block order."""
        if self._started:
            raise RuntimeError("a simulation stream is read once")
        self._started = True
        machine, sem = self._machine, self._sem
        simulator = Simulator(machine, sem)
        known = _Known(machine, simulator.setup.node_present_pages)
        done = 0
        for ids in chunks(self._ids, machine.geometry.pages_per_block):
            with _without_cyclic_gc():
                verdicts = with_confidence(machine, sem, [v for v, _ in _judge_chunk(simulator, known, ids)])
            for v in verdicts:
                self._totals.add(v)
            done += len(ids)
            if self._progress:
                self._progress(done, len(self._ids))
            yield verdicts
        self._finished = True

    def __iter__(self) -> Iterator[BlockVerdict]:
        for verdicts in self.chunks():
            yield from verdicts

    @property
    def summary(self) -> Summary:
        if not self._finished:
            raise RuntimeError("the summary of a simulation stream is known once every verdict was read")
        return self._totals.summary()


def stream(machine: Machine, semantics: Optional[str] = None, blocks: Optional[Sequence[int]] = None,
           progress: Optional[Progress] = None) -> SimulationStream:
    """``simulate()`` as a stream: the verdicts are judged as they are read, in block order, a
    chunk at a time (memory does not grow with the number of blocks). Unknown blocks are a
    usage error here, before anything is judged."""
    sem = get_semantics(semantics or machine.default_semantics)
    ids = select_blocks(machine, blocks)
    return SimulationStream(machine, sem, ids, machine.semantics_reason if semantics is None else None, progress)


def simulate(machine: Machine, semantics: Optional[str] = None, blocks: Optional[Sequence[int]] = None,
             progress: Optional[Progress] = None) -> SimulationResult:
    """Predict offlining each selected block (default: every online block): ``stream()``, held."""
    verdicts = stream(machine, semantics, blocks, progress)
    return SimulationResult(
        profile=verdicts.profile, machine=verdicts.machine, semantics=verdicts.semantics,
        blocks=tuple(verdicts), warnings=verdicts.warnings, semantics_reason=verdicts.semantics_reason,
    )
