"""The machine as a grid of memory blocks: the frozen result of ``memplan map``.

One ``Cell`` per memory block (and per block-sized slot of a virtio-mem device region that has
no memory block), classified by what offlining it would do; ``Segment``s group consecutive
cells that share a zone, a node and a device, so zone boundaries and device regions are
visible (a segment keeps its cells as ``CellRun``s, consecutive blocks that look the same: a
map's memory does not grow with the number of blocks); a ``Segment`` without cells is a stretch
of the physical address space without memory. Built by ``memplan.map.compute`` from any
``Machine`` and its verdicts (profile or snapshot alike); drawn by ``memplan.render.map``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from memplan.core.results import Confidence


class CellKind(str, Enum):
    """What a block's cell shows."""

    OFFLINES = "offlines"
    FAILS = "fails"
    HANGS = "hangs"
    #: the block exists but is offline already
    OFFLINE = "offline"
    #: a virtio-mem device region slot without a memory block (nothing plugged, never added)
    UNPLUGGED = "unplugged"
    #: an online block outside the judged selection
    NOT_JUDGED = "not_judged"


class Change(str, Enum):
    """``map --diff``: how a block's verdict differs between the left and right semantics."""

    SAME = "same"
    #: offlines under the left semantics only
    LEFT_ONLY = "left_only"
    #: offlines under the right semantics only
    RIGHT_ONLY = "right_only"
    #: offlinability is the same, the verdict is not (errno, reason, step, culprit, log, hazards)
    OTHER = "other"


@dataclass(frozen=True)
class Cell:
    block: int
    kind: CellKind
    change: Change = Change.SAME
    #: ``map --diff``: the verdict fields that differ
    changed: Tuple[str, ...] = ()
    #: how sure the verdict of a judged block is
    confidence: Confidence = Confidence.CERTAIN


@dataclass(frozen=True)
class CellRun:
    """``count`` consecutive cells from block ``first`` that look the same."""

    first: int
    count: int
    kind: CellKind
    change: Change = Change.SAME
    changed: Tuple[str, ...] = ()
    confidence: Confidence = Confidence.CERTAIN

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    def same_look(self, cell: Cell) -> bool:
        return (cell.kind is self.kind and cell.change is self.change and cell.changed == self.changed
                and cell.confidence is self.confidence)

    def cells(self, lo: int, hi: int) -> Iterator[Cell]:
        """The cells of blocks ``lo..hi`` (inclusive) of this run."""
        for block in range(max(lo, self.first), min(hi, self.last) + 1):
            yield Cell(block, self.kind, self.change, self.changed, self.confidence)


def runs_of(cells: Sequence[Cell]) -> Tuple[CellRun, ...]:
    """Consecutive cells that look the same, as runs."""
    runs: List[CellRun] = []
    for cell in cells:
        last = runs[-1] if runs else None
        if last is not None and last.first + last.count == cell.block and last.same_look(cell):
            runs[-1] = CellRun(last.first, last.count + 1, last.kind, last.change, last.changed, last.confidence)
        else:
            runs.append(CellRun(cell.block, 1, cell.kind, cell.change, cell.changed, cell.confidence))
    return tuple(runs)


@dataclass(frozen=True, init=False)
class Segment:
    """Consecutive blocks ``first..last`` with the same zone, node and device (or no memory).
    Its cells are kept as ``runs`` (``cells=`` is turned into runs)."""

    first: int
    last: int
    #: zone name, ``"none"`` (valid_zones none), or ``None`` (no memory / only unplugged slots)
    zone: Optional[str]
    node: Optional[int]
    #: virtio-mem device id and mode (``"SBM"``/``"BBM"``) of the region
    device: Optional[str]
    device_mode: Optional[str]
    runs: Tuple[CellRun, ...]

    def __init__(self, first: int, last: int, zone: Optional[str], node: Optional[int],
                 device: Optional[str] = None, device_mode: Optional[str] = None, cells: Sequence[Cell] = (),
                 runs: Tuple[CellRun, ...] = ()) -> None:
        for name, value in (("first", first), ("last", last), ("zone", zone), ("node", node), ("device", device),
                            ("device_mode", device_mode), ("runs", tuple(runs) or runs_of(cells))):
            object.__setattr__(self, name, value)

    @property
    def gap(self) -> bool:
        """No memory here (a hole in the physical address space, e.g. the PCI hole)."""
        return not self.runs

    @property
    def blocks(self) -> int:
        return self.last - self.first + 1

    @property
    def cells(self) -> Tuple[Cell, ...]:
        """Every cell (one object per block: for small maps and tests; see ``cells_between()``)."""
        return tuple(self.cells_between(self.first, self.last))

    def cells_between(self, lo: int, hi: int) -> Iterator[Cell]:
        """The cells of blocks ``lo..hi`` (inclusive), made as they are read."""
        for run in self.runs:
            if run.last >= lo and run.first <= hi:
                yield from run.cells(lo, hi)


@dataclass(frozen=True)
class BlockMap:
    machine: str
    source: str
    memory_block_size: int
    #: ``(semantics,)`` or, for ``map --diff``, ``(left, right)``
    semantics: Tuple[str, ...]
    segments: Tuple[Segment, ...]
    counts: Dict[CellKind, int] = field(default_factory=dict)
    changes: Dict[Change, int] = field(default_factory=dict)

    @property
    def is_diff(self) -> bool:
        return len(self.semantics) == 2

    @property
    def cells(self) -> Tuple[Cell, ...]:
        """Every cell (one object per block: for small maps and tests; renderers read ``runs()``)."""
        return tuple(c for s in self.segments for c in s.cells)

    def runs(self) -> Iterator[CellRun]:
        return (r for s in self.segments for r in s.runs)
