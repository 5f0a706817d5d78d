"""Build a ``BlockMap`` from a machine and verdicts (``memplan map``, ``map --diff``).

Plain functions over results: they need only the ``Machine`` (block table, virtio-mem
regions) and the verdicts (a ``SimulationResult`` or, flat in memory, ``stream()``'s), so a
machine read from a snapshot draws the same way as one from a profile. ``map --diff``
classifies cells with ``memplan.diff.compute.changed_fields``,
the same comparison ``diff-semantics`` reports.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from memplan.core.machine import Machine
from memplan.core.model import BlockState
from memplan.core.results import BlockVerdict, Confidence, Outcome, SimulationResult, Verdicts
from memplan.diff.compute import changed_fields
from memplan.map.types import BlockMap, CellKind, CellRun, Change, Segment

_OUTCOME_CELL = {Outcome.OFFLINED: CellKind.OFFLINES, Outcome.FAILS: CellKind.FAILS, Outcome.HANGS: CellKind.HANGS}


#: a held result or a stream of verdicts (interface I1)
VerdictSource = Union[SimulationResult, Verdicts]

#: blocks looked up per numpy call while the map is built
_STEP = 4096


def _verdicts(result: VerdictSource) -> Iterator[BlockVerdict]:
    """The verdicts in block order: a held ``SimulationResult`` or a stream (``Verdicts``,
    interface I1: ``memplan.engine.simulation.stream()``), read once."""
    return iter(result.blocks) if isinstance(result, SimulationResult) else iter(result)


def _block_ids(machine: Machine, span: Optional[Tuple[int, int]]) -> Tuple[np.ndarray, np.ndarray]:
    """Every block id of the map (memory blocks and block-sized slots of the virtio-mem regions),
    sorted, and per id the index of the device region it lies in (the first that covers it;
    -1: none). Numpy arrays: a few bytes per block."""
    size = machine.geometry.memory_block_size
    ranges = []
    for device in machine.devices:
        first = -(-device.addr // size)
        last = (device.addr + device.region_size) // size - 1
        if span is not None:
            first, last = max(first, span[0]), min(last, span[1])
        ranges.append((first, last))
    ids = np.asarray(machine.blocks.ids, dtype=np.int64)
    if span is not None:
        ids = ids[(ids >= span[0]) & (ids <= span[1])]
    parts = [ids] + [np.arange(first, last + 1, dtype=np.int64) for first, last in ranges if last >= first]
    ids = np.unique(np.concatenate(parts)) if len(parts) > 1 else ids
    region = np.full(len(ids), -1, dtype=np.int64)
    for index in reversed(range(len(ranges))):
        first, last = ranges[index]
        region[(ids >= first) & (ids <= last)] = index
    return ids, region


class _Run:
    """The segment being built: runs of cells of one device region, zone and node (zone and node
    stay ``None`` while the run holds only unplugged slots)."""

    def __init__(self, device: Optional[str], mode: Optional[str], zone: Optional[str], node: Optional[int]) -> None:
        self.device, self.mode, self.zone, self.node = device, mode, zone, node
        self.runs: List[CellRun] = []
        self.open: Optional[List[Any]] = None  # [first, count, kind, change, changed, confidence]

    def joins(self, device: Optional[str], kind: CellKind, zone: Optional[str], node: Optional[int]) -> bool:
        if self.device != device:
            return False
        return kind is CellKind.UNPLUGGED or (self.zone in (None, zone) and self.node in (None, node))

    def add(self, block: int, kind: CellKind, change: Change, changed: Tuple[str, ...], confidence: Confidence,
            zone: Optional[str], node: Optional[int]) -> None:
        if kind is not CellKind.UNPLUGGED and self.zone is None:
            self.zone, self.node = zone, node
        run = self.open
        if (run is not None and run[0] + run[1] == block and run[2] is kind and run[3] is change
                and run[4] == changed and run[5] is confidence):
            run[1] += 1
            return
        self._flush()
        self.open = [block, 1, kind, change, changed, confidence]

    def _flush(self) -> None:
        if self.open is not None:
            self.runs.append(CellRun(*self.open))
            self.open = None

    def segment(self) -> Segment:
        self._flush()
        return Segment(self.runs[0].first, self.runs[-1].last, self.zone, self.node, self.device, self.mode,
                       runs=tuple(self.runs))


class _Counts:
    """Cells per kind (and per change of the judged ones), counted as they are made."""

    def __init__(self) -> None:
        self.kinds: Dict[CellKind, int] = {k: 0 for k in CellKind}
        self.changes: Dict[Change, int] = {c: 0 for c in Change}


def _cells(machine: Machine, verdicts: Iterator[BlockVerdict], span: Optional[Tuple[int, int]],
           counts: _Counts, change_of: Optional[Callable[[int], Tuple[Change, Tuple[str, ...]]]] = None
           ) -> List[Segment]:
    """The segments, reading ``verdicts`` (block order) once as the blocks go by: nothing per
    block is held but numpy arrays of the block ids."""
    table = machine.blocks
    ids, region = _block_ids(machine, span)
    exists = table.exists(ids)
    multi_node = machine.nodes > 1
    segments: List[Segment] = []
    current: Optional[_Run] = None
    pending = next(verdicts, None)

    def close() -> None:
        if current is not None:
            segments.append(current.segment())

    previous: Optional[int] = None
    for lo in range(0, len(ids), _STEP):
        step_ids = ids[lo:lo + _STEP]
        step_rows = np.zeros(len(step_ids), dtype=np.int64)
        here = exists[lo:lo + _STEP]
        step_rows[here] = table.rows(step_ids[here])
        for block, row, present, slot in zip(step_ids.tolist(), step_rows.tolist(), here.tolist(),
                                             region[lo:lo + _STEP].tolist()):
            while pending is not None and pending.block < block:
                pending = next(verdicts, None)
            verdict = pending if pending is not None and pending.block == block else None
            if present:
                state = table.state_of(row)
                zone = table.zone_of(row)
                zone_name: Optional[str] = zone.value if zone else "none"
                node = int(table.node[row]) if multi_node else None
                device_index = int(table.device[row])
                device_index = device_index if device_index >= 0 else slot
                if state is not BlockState.ONLINE:
                    kind = CellKind.OFFLINE
                elif verdict is None:
                    kind = CellKind.NOT_JUDGED
                else:
                    kind = _OUTCOME_CELL[verdict.result]
            else:
                device_index = slot
                kind = CellKind.UNPLUGGED
                zone_name, node, verdict = None, None, None
            device = machine.devices[device_index] if device_index >= 0 else None
            change, changed = change_of(block) if change_of is not None else (Change.SAME, ())
            sure = verdict.confidence if verdict is not None and kind is not CellKind.OFFLINE else None
            counts.kinds[kind] += 1
            if kind not in (CellKind.UNPLUGGED, CellKind.OFFLINE, CellKind.NOT_JUDGED):
                counts.changes[change] += 1
            if previous is not None and block > previous + 1:
                close()
                current = None
                segments.append(Segment(previous + 1, block - 1, None, None))
            device_id = device.id if device else None
            if current is None or not current.joins(device_id, kind, zone_name, node):
                close()
                current = _Run(device_id, device.mode.value.upper() if device else None, zone_name, node)
            current.add(block, kind, change, changed, sure or Confidence.CERTAIN, zone_name, node)
            previous = block
    close()
    return segments


def _span(blocks: Optional[Sequence[int]]) -> Optional[Tuple[int, int]]:
    if not blocks:
        return None
    return min(blocks), max(blocks)


def machine_map(machine: Machine, result: VerdictSource, blocks: Optional[Sequence[int]] = None,
                semantics: Optional[str] = None) -> BlockMap:
    """Every block of the machine (or of the span of ``blocks``) as a cell, by verdict. ``result``
    is a ``SimulationResult`` or a stream of verdicts (``stream()``: read once, in block order,
    nothing per block held; its ``semantics``, or ``semantics``, names the map's)."""
    counts = _Counts()
    segments = _cells(machine, _verdicts(result), _span(blocks), counts)
    name = semantics or result.semantics
    return BlockMap(machine.name, machine.source, machine.geometry.memory_block_size, (name,),
                    tuple(segments), dict(counts.kinds))


def change_of(left: BlockVerdict, right: BlockVerdict) -> Tuple[Change, Tuple[str, ...]]:
    """How the right verdict of a block differs from the left one."""
    changed = changed_fields(left, right)
    if not changed:
        return Change.SAME, ()
    lok, rok = left.result is Outcome.OFFLINED, right.result is Outcome.OFFLINED
    if lok and not rok:
        return Change.LEFT_ONLY, changed
    if rok and not lok:
        return Change.RIGHT_ONLY, changed
    return Change.OTHER, changed


def diff_map(machine: Machine, left: VerdictSource, right: VerdictSource,
             blocks: Optional[Sequence[int]] = None) -> BlockMap:
    """The map under ``left``, each block marked with how its verdict changes under ``right``
    (both in block order over the same blocks: held results or streams read side by side)."""
    lv, rv = _verdicts(left), _verdicts(right)
    pending: List[BlockVerdict] = []  # the left verdict the map reads next, and its right one
    right_next = next(rv, None)

    def left_verdicts() -> Iterator[BlockVerdict]:
        nonlocal right_next
        for v in lv:
            while right_next is not None and right_next.block < v.block:
                right_next = next(rv, None)
            pending[:] = [v, right_next] if right_next is not None and right_next.block == v.block else [v]
            yield v

    def change(block: int) -> Tuple[Change, Tuple[str, ...]]:
        if len(pending) == 2 and pending[0].block == block:
            return change_of(pending[0], pending[1])
        return Change.SAME, ()

    counts = _Counts()
    segments = _cells(machine, left_verdicts(), _span(blocks), counts, change)
    return BlockMap(machine.name, machine.source, machine.geometry.memory_block_size,
                    (left.semantics, right.semantics), tuple(segments),
                    dict(counts.kinds), dict(counts.changes))
