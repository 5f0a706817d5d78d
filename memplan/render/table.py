"""``memplan simulate``'s listing and summary, streamed.

The verdicts stream by once (``Verdicts``, interface I1): each becomes a ``BlockRow`` with the
facts lsmem shows for its block and goes into the lsmem-style listing
(``memplan.render.lsmem.print_listing``), which merges contiguous rows as they come and keeps
only the merged rows' text (spilled to a temporary file when there are many; see
``memplan.render.grid``). The summary keeps running totals: the blind spots are grouped by
their text with the blocks as spans, so memory does not grow with the number of blocks.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from rich.console import Console

from memplan.core.results import BlockVerdict, Confidence, Summary, Verdicts
from memplan.core.units import format_size
from memplan.render.block_columns import BlockRow, verdict_columns
from memplan.render.block_facts import MachineFacts
from memplan.render.console import print_line
from memplan.render.escape import safe
from memplan.render.lsmem import ColumnSet, TableOptions, print_listing

#: the label column of the summary (lsmem's ``%-23s`` and a space)
LABEL = 24


def size_text(nbytes: int, in_bytes: bool = False) -> str:
    """A size as lsmem prints it (``2.9G``), or in bytes with ``--bytes``."""
    return str(nbytes) if in_bytes else format_size(nbytes)


def by_confidence_text(split: Dict[Confidence, int], in_bytes: bool = False) -> str:
    """``certain 2.9G, likely 0B, unknown 0B``."""
    return ", ".join(f"{c.value} {size_text(split.get(c, 0), in_bytes)}" for c in Confidence)


def unknown_caveat(split: Dict[Confidence, int], in_bytes: bool = False) -> str:
    """``, 23.9G of it unknown`` (empty when nothing is unknown): a headline amount never passes
    unknown verdicts off as memory that would go offline without saying so."""
    unknown = split.get(Confidence.UNKNOWN, 0)
    return f", {size_text(unknown, in_bytes)} of it unknown" if unknown else ""


def label(name: str, value: str) -> str:
    return f"{name + ':':<{LABEL}}{value}"


def summary_lines(result: Verdicts, summary: Optional[Summary] = None, in_bytes: bool = False,
                  counts: Optional[Dict[Confidence, int]] = None) -> List[str]:
    """memplan's summary of a simulation (after the verdicts have been read)."""
    s = summary if summary is not None else result.summary
    reason = f" ({result.semantics_reason})" if result.semantics_reason else ""
    judged = str(s.blocks)
    if counts and counts.get(Confidence.CERTAIN, 0) != s.blocks:
        judged += " (" + ", ".join(f"{counts.get(c, 0)} {c.value}" for c in Confidence) + ")"
    split = s.offlinable_bytes_by_confidence or {Confidence.CERTAIN: s.offlinable_bytes}
    caveat = unknown_caveat(split, in_bytes)
    return [
        label("Semantics", safe(f"{result.semantics}{reason}")),
        label("Blocks judged", judged),
        label("Would offline", f"{s.offlined} ({size_text(s.offlinable_bytes, in_bytes)}{caveat})"),
        label("By confidence", by_confidence_text(split, in_bytes)),
        label("Would fail", str(s.fails)),
        label("Would hang", f"{s.hangs} (until a signal: -EINTR \"signal backoff\")"),
    ]


Spans = List[List[int]]


#: block spans listed per blind-spot group (the rest are counted; --json lists every block)
MAX_SPANS = 32


class BlindSpots:
    """Blind spots grouped by confidence and text (per-block counts shown as N), each group
    with its first ``MAX_SPANS`` runs of blocks and a count of the others: bounded by the
    number of distinct texts, not of blocks."""

    def __init__(self) -> None:
        self.groups: Dict[Tuple[str, ...], Spans] = {}
        self.more: Dict[Tuple[str, ...], int] = {}

    def add(self, v: BlockVerdict) -> None:
        if not v.blind_spots:
            return
        confidence = (v.confidence or Confidence.CERTAIN).value
        key = (confidence,) + tuple(re.sub(r"(?<![.\w])\d+(?![.\w])", "N", s) for s in v.blind_spots)
        spans = self.groups.setdefault(key, [])
        if spans and spans[-1][1] + 1 == v.block and key not in self.more:
            spans[-1][1] = v.block
        elif len(spans) < MAX_SPANS:
            spans.append([v.block, v.block])
        else:
            self.more[key] = self.more.get(key, 0) + 1

    def lines(self) -> List[str]:
        out: List[str] = []
        for key, spans in sorted(self.groups.items(), key=lambda kv: kv[1][0][0]):
            blocks = ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
            more = f" and {self.more[key]} more" if key in self.more else ""
            many = len(spans) > 1 or spans[0][0] != spans[0][1] or key in self.more
            out.append(f"  {'blocks' if many else 'block'} {blocks}{more} ({key[0]}):")
            out.extend(f"    - {safe(spot)}" for spot in key[1:])
        return (["Blind spots (snapshot; per-block counts N in --json):"] + out) if out else []


class _Tally:
    """Running totals while the verdicts stream by (blind spots only for a summary)."""

    def __init__(self, blind_spots: bool) -> None:
        self.blind_spots = BlindSpots() if blind_spots else None
        self.counts: Dict[Confidence, int] = {c: 0 for c in Confidence}

    def observe(self, row: BlockRow) -> None:
        v = row.verdict
        if v is not None:
            if self.blind_spots is not None:
                self.blind_spots.add(v)
            self.counts[v.confidence or Confidence.CERTAIN] += 1


def _rows(verdicts: Iterable[BlockVerdict], facts: MachineFacts) -> Iterator[BlockRow]:
    for v in verdicts:
        yield BlockRow(facts.facts(v.block), v)


def print_simulation(console: Console, result: Optional[Verdicts], facts: MachineFacts,
                     options: Optional[TableOptions] = None, columns: Optional[ColumnSet[BlockRow]] = None,
                     ids: Optional[Iterable[int]] = None) -> None:
    """The listing (contiguous blocks with equal columns merged, as lsmem does) and, unless
    ``--raw``/``--json``/``--pairs`` or ``--summary=never``, lsmem's summary and memplan's.
    ``result`` is ``None`` when only lsmem's columns are wanted: the blocks ``ids`` (default:
    every present block) are listed from ``facts`` without judging anything."""
    options = options or TableOptions()
    columns = columns or verdict_columns(facts.has_memconfig)
    tally = _Tally(blind_spots=options.want_summary)
    rows = _rows(result, facts) if result is not None else (BlockRow(f) for f in facts.blocks(ids))
    print_listing(console, columns, rows, options, observe=tally.observe)
    if not options.want_summary:
        return
    if options.want_table:
        print_line(console)
    for line in facts.summary_lines(options.in_bytes):
        print_line(console, line)
    if result is None:
        return
    lines = summary_lines(result, result.summary, options.in_bytes, tally.counts)
    lines += tally.blind_spots.lines() if tally.blind_spots is not None else []
    for line in lines:
        print_line(console, line)
