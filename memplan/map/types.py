"""The machine as a grid of memory blocks: the frozen result of ``memplan map``.

One ``Cell`` per memory block (and per block-sized slot of a virtio-mem device region that has
no memory block), classified by what offlining it would do; ``Segment``s group consecutive
cells that share a zone, a node and a device, so zone boundaries and device regions are
visible; a ``Segment`` without cells is a stretch of the physical address space without
memory. Built by ``memplan.map.compute`` from any ``Machine`` and its verdicts (profile or
snapshot alike); drawn by ``memplan.render.map``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, Optional, Tuple

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
class Segment:
    """Consecutive blocks ``first..last`` with the same zone, node and device (or no memory)."""

    first: int
    last: int
    #: zone name, ``"none"`` (valid_zones none), or ``None`` (no memory / only unplugged slots)
    zone: Optional[str]
    node: Optional[int]
    #: virtio-mem device id and mode (``"SBM"``/``"BBM"``) of the region
    device: Optional[str] = None
    device_mode: Optional[str] = None
    cells: Tuple[Cell, ...] = ()

    @property
    def gap(self) -> bool:
        """No memory here (a hole in the physical address space, e.g. the PCI hole)."""
        return not self.cells

    @property
    def blocks(self) -> int:
        return self.last - self.first + 1


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
        return tuple(c for s in self.segments for c in s.cells)
