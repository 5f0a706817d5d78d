"""``memplan map --json``: the grid as one JSON document, the same shape for every input.

Every cell (memory block or empty virtio-mem slot) with what it shows and, for judged cells,
the confidence of the verdict; the segments (zone, node, device regions, gaps); the counts per
cell kind and the judged memory split by confidence. Without ``--diff`` the ``diff`` member is
``null`` and every cell's ``change`` is ``same``.
"""

from __future__ import annotations

import json
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence

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
    for run in bmap.runs():
        if run.kind in JUDGED:
            blocks[run.confidence] += run.count
            if run.kind is CellKind.OFFLINES:
                offlinable[run.confidence] += bmap.memory_block_size * run.count
    return {"blocks": {c.value: n for c, n in blocks.items()},
            "offlinable_bytes": {c.value: n for c, n in offlinable.items()}}


def map_dict(bmap: BlockMap, source: InputSource, warnings: Sequence[str] = (),
             cells: bool = True) -> Dict[str, Any]:
    """The document (``cells=False``: with an empty ``cells`` list, as ``write_map()`` streams them)."""
    split = confidence_split(bmap)
    diff: Optional[Dict[str, Any]] = None
    if bmap.is_diff:
        diff = {"left": bmap.semantics[0], "right": bmap.semantics[1],
                "changes": {c.value: bmap.changes.get(c, 0) for c in Change if c is not Change.SAME}}
    cell_dicts: List[Dict[str, Any]] = [_cell(c) for c in bmap.cells] if cells else []
    return {
        "memplan": __version__,
        **source.fields(),
        "machine": bmap.machine,
        "semantics": bmap.semantics[0],
        "diff": diff,
        "memory_block_size": bmap.memory_block_size,
        "segments": [_segment(s) for s in bmap.segments],
        "cells": cell_dicts,
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


#: cells encoded per ``write()`` call
_BATCH = 512
_EMPTY_CELLS = '\n "cells": [],\n'


def _cell_batches(bmap: BlockMap) -> Iterator[List[Cell]]:
    batch: List[Cell] = []
    for segment in bmap.segments:
        for cell in segment.cells_between(segment.first, segment.last):
            batch.append(cell)
            if len(batch) == _BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def write_map(bmap: BlockMap, source: InputSource, warnings: Sequence[str], stream: IO[str]) -> None:
    """``memplan.render.json.write(map_dict(bmap, source, warnings), stream)``, byte for byte, with the
    cells made and written a batch at a time from the segments' runs: nothing per block is held."""
    text = json.dumps(map_dict(bmap, source, warnings, cells=False), indent=1)
    head, tail = text.split(_EMPTY_CELLS, 1)
    stream.write(head + '\n "cells": [')
    first = True
    for batch in _cell_batches(bmap):
        parts = ["  " + json.dumps(_cell(c), indent=1).replace("\n", "\n  ") for c in batch]
        # Inside the document a cell is at nesting level 2: each of its lines gets two more spaces.
        stream.write(("\n" if first else ",\n") + ",\n".join(parts))
        first = False
    stream.write(("]" if first else "\n ]") + ",\n" + tail + "\n")
