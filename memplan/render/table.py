"""Rich tables for people (lsmem-like columns and sizes)."""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from rich.console import Console

from memplan.core.results import SimulationResult
from memplan.core.units import format_block_ranges, format_size
from memplan.render.block_columns import verdict_columns
from memplan.render.lsmem import TableOptions, print_table


def summary_lines(result: SimulationResult) -> List[str]:
    s = result.summary
    reason = f" ({result.semantics_reason})" if result.semantics_reason else ""
    lines = [
        f"Semantics:          {result.semantics}{reason}",
        f"Blocks judged:      {s.blocks}",
        f"Would offline:      {s.offlined} ({format_size(s.offlinable_bytes)})",
        f"Would fail:         {s.fails}",
        f"Would hang:         {s.hangs} (until a signal: -EINTR \"signal backoff\")",
    ]
    return lines


def blind_spot_lines(result: SimulationResult) -> List[str]:
    """Snapshot verdicts: the blind spots, grouped by block (counts differ per block: N)."""
    groups: Dict[Tuple[str, ...], List[int]] = {}
    for v in result.blocks:
        if v.blind_spots:
            confidence = v.confidence.value if v.confidence else ""
            key = (confidence,) + tuple(re.sub(r"\b\d+\b", "N", s) for s in v.blind_spots)
            groups.setdefault(key, []).append(v.block)
    lines = []
    for key, blocks in sorted(groups.items(), key=lambda kv: kv[1][0]):
        lines.append(f"  blocks {format_block_ranges(blocks)} ({key[0]}):")
        lines.extend(f"    - {spot}" for spot in key[1:])
    return (["Blind spots (snapshot; per-block counts N in --json):"] + lines) if lines else []


def print_simulation(console: Console, result: SimulationResult, options: Optional[TableOptions] = None) -> None:
    """The lsmem-style table (contiguous blocks with equal columns merged, see
    ``memplan.render.lsmem``) and the summary (not in ``--raw`` mode, as lsmem)."""
    options = options or TableOptions()
    columns = verdict_columns(confidence=any(b.confidence for b in result.blocks))
    print_table(console, columns, result.blocks, options)
    if options.raw:
        return
    console.print()
    for line in summary_lines(result) + blind_spot_lines(result):
        console.print(line, highlight=False, markup=False)
