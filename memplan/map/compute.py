"""Build a ``BlockMap`` from a machine and verdicts (``memplan map``, ``map --diff``).

Plain functions over results: they need only the ``Machine`` (block table, virtio-mem
regions) and the ``SimulationResult``(s), so a machine read from a snapshot draws the same way
as one from a profile. ``map --diff`` classifies cells with ``memplan.diff.compute.changed_fields``,
the same comparison ``diff-semantics`` reports.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from memplan.core.machine import Machine
from memplan.core.model import BlockState
from memplan.core.results import BlockVerdict, Confidence, Outcome, SimulationResult
from memplan.diff.compute import changed_fields
from memplan.map.types import BlockMap, Cell, CellKind, Change, Segment

_OUTCOME_CELL = {Outcome.OFFLINED: CellKind.OFFLINES, Outcome.FAILS: CellKind.FAILS, Outcome.HANGS: CellKind.HANGS}


def _region_slots(machine: Machine) -> Dict[int, int]:
    """Block id -> device index for every block-sized slot of every virtio-mem region."""
    size = machine.geometry.memory_block_size
    slots: Dict[int, int] = {}
    for index, device in enumerate(machine.devices):
        first = -(-device.addr // size)
        last = (device.addr + device.region_size) // size - 1
        for block in range(first, last + 1):
            slots.setdefault(block, index)
    return slots


@dataclass
class _Run:
    """The segment being built: cells of one device region, zone and node (zone and node stay
    ``None`` while the run holds only unplugged slots)."""

    device: Optional[str]
    mode: Optional[str]
    zone: Optional[str]
    node: Optional[int]
    cells: List[Cell] = field(default_factory=list)

    def joins(self, device: Optional[str], kind: CellKind, zone: Optional[str], node: Optional[int]) -> bool:
        if self.device != device:
            return False
        return kind is CellKind.UNPLUGGED or (self.zone in (None, zone) and self.node in (None, node))

    def add(self, cell: Cell, zone: Optional[str], node: Optional[int]) -> None:
        if cell.kind is not CellKind.UNPLUGGED and self.zone is None:
            self.zone, self.node = zone, node
        self.cells.append(cell)

    def segment(self) -> Segment:
        return Segment(self.cells[0].block, self.cells[-1].block, self.zone, self.node, self.device, self.mode,
                       tuple(self.cells))


def _cells(machine: Machine, verdicts: Dict[int, BlockVerdict], span: Optional[Tuple[int, int]],
           change_of: Optional[Dict[int, Tuple[Change, Tuple[str, ...]]]] = None) -> List[Segment]:
    table = machine.blocks
    slots = _region_slots(machine)
    ids = sorted(set(int(b) for b in table.ids) | set(slots))
    if span is not None:
        ids = [b for b in ids if span[0] <= b <= span[1]]
    rows = {int(b): r for r, b in enumerate(table.ids)}
    multi_node = machine.nodes > 1
    segments: List[Segment] = []
    current: Optional[_Run] = None

    def close() -> None:
        if current is not None:
            segments.append(current.segment())

    previous: Optional[int] = None
    for block in ids:
        row = rows.get(block)
        if row is not None:
            state = table.state_of(row)
            zone = table.zone_of(row)
            zone_name: Optional[str] = zone.value if zone else "none"
            node = int(table.node[row]) if multi_node else None
            device_index = int(table.device[row])
            device_index = device_index if device_index >= 0 else slots.get(block, -1)
            verdict = verdicts.get(block)
            if state is not BlockState.ONLINE:
                kind = CellKind.OFFLINE
            elif verdict is None:
                kind = CellKind.NOT_JUDGED
            else:
                kind = _OUTCOME_CELL[verdict.result]
        else:
            device_index = slots[block]
            kind = CellKind.UNPLUGGED
            zone_name, node, verdict = None, None, None
        device = machine.devices[device_index] if device_index >= 0 else None
        change, changed = (change_of or {}).get(block, (Change.SAME, ()))
        sure = verdict.confidence if verdict is not None and kind is not CellKind.OFFLINE else None
        cell = Cell(block, kind, change, changed, sure or Confidence.CERTAIN)
        if previous is not None and block > previous + 1:
            close()
            current = None
            segments.append(Segment(previous + 1, block - 1, None, None))
        device_id = device.id if device else None
        if current is None or not current.joins(device_id, kind, zone_name, node):
            close()
            current = _Run(device_id, device.mode.value.upper() if device else None, zone_name, node)
        current.add(cell, zone_name, node)
        previous = block
    close()
    return segments


def _span(blocks: Optional[Sequence[int]]) -> Optional[Tuple[int, int]]:
    if not blocks:
        return None
    return min(blocks), max(blocks)


def machine_map(machine: Machine, result: SimulationResult, blocks: Optional[Sequence[int]] = None) -> BlockMap:
    """Every block of the machine (or of the span of ``blocks``) as a cell, by verdict."""
    verdicts = {v.block: v for v in result.blocks}
    segments = _cells(machine, verdicts, _span(blocks))
    counts = Counter(c.kind for s in segments for c in s.cells)
    return BlockMap(machine.name, machine.source, machine.geometry.memory_block_size, (result.semantics,),
                    tuple(segments), {k: counts.get(k, 0) for k in CellKind})


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


def diff_map(machine: Machine, left: SimulationResult, right: SimulationResult,
             blocks: Optional[Sequence[int]] = None) -> BlockMap:
    """The map under ``left``, each block marked with how its verdict changes under ``right``."""
    lv = {v.block: v for v in left.blocks}
    rv = {v.block: v for v in right.blocks}
    changes = {b: change_of(lv[b], rv[b]) for b in lv if b in rv}
    segments = _cells(machine, lv, _span(blocks), changes)
    counts = Counter(c.kind for s in segments for c in s.cells)
    change_counts = Counter(c.change for s in segments for c in s.cells if c.kind not in (
        CellKind.UNPLUGGED, CellKind.OFFLINE, CellKind.NOT_JUDGED))
    return BlockMap(machine.name, machine.source, machine.geometry.memory_block_size,
                    (left.semantics, right.semantics), tuple(segments), {k: counts.get(k, 0) for k in CellKind},
                    {c: change_counts.get(c, 0) for c in Change})
