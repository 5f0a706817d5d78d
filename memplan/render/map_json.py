"""``memplan map --json``: the grid as one JSON document, the same shape for every input.

Every cell (memory block or empty virtio-mem slot) with what it shows and, for judged cells,
the confidence of the verdict; the segments (zone, node, device regions, gaps); the counts per
cell kind and the judged memory split by confidence. Without ``--diff`` the ``diff`` member is
``null`` and every cell's ``change`` is ``same``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from memplan import __version__
from memplan.core.results import Confidence
from memplan.core.source import InputSource
from memplan.map.types import BlockMap, Cell, CellKind, Change, Segment

#: cells that carry a verdict (and so a confidence)
JUDGED = (CellKind.OFFLINES, CellKind.FAILS, CellKind.HANGS)


def _cell(cell: Cell) -> Dict[str, Any]:
    judged = cell.kind in JUDGED
    return {"block": cell.block, "kind": cell.kind.value,
            "confidence": cell.confidence.value if judged else None,
            "change": cell.change.value, "changed": list(cell.changed)}


def _segment(s: Segment) -> Dict[str, Any]:
    return {"first": s.first, "last": s.last, "gap": s.gap, "zone": s.zone, "node": s.node,
            "device": s.device, "device_mode": s.device_mode}


def confidence_split(bmap: BlockMap) -> Dict[str, Dict[str, int]]:
    """Judged blocks and their offlinable bytes per confidence (every level present)."""
    blocks = {c: 0 for c in Confidence}
    offlinable = {c: 0 for c in Confidence}
    for cell in bmap.cells:
        if cell.kind in JUDGED:
            blocks[cell.confidence] += 1
            if cell.kind is CellKind.OFFLINES:
                offlinable[cell.confidence] += bmap.memory_block_size
    return {"blocks": {c.value: n for c, n in blocks.items()},
            "offlinable_bytes": {c.value: n for c, n in offlinable.items()}}


def map_dict(bmap: BlockMap, source: InputSource, warnings: Sequence[str] = ()) -> Dict[str, Any]:
    split = confidence_split(bmap)
    diff: Optional[Dict[str, Any]] = None
    if bmap.is_diff:
        diff = {"left": bmap.semantics[0], "right": bmap.semantics[1],
                "changes": {c.value: bmap.changes.get(c, 0) for c in Change if c is not Change.SAME}}
    cells: List[Dict[str, Any]] = [_cell(c) for c in bmap.cells]
    return {
        "memplan": __version__,
        **source.fields(),
        "machine": bmap.machine,
        "semantics": bmap.semantics[0],
        "diff": diff,
        "memory_block_size": bmap.memory_block_size,
        "segments": [_segment(s) for s in bmap.segments],
        "cells": cells,
        "summary": {
            "cells": {k.value: bmap.counts.get(k, 0) for k in CellKind},
            "judged_blocks": sum(split["blocks"].values()),
            "blocks_by_confidence": split["blocks"],
            "unknown_blocks": split["blocks"][Confidence.UNKNOWN.value],
            "offlinable_bytes": sum(split["offlinable_bytes"].values()),
            "offlinable_bytes_by_confidence": split["offlinable_bytes"],
        },
        "warnings": list(warnings),
    }
