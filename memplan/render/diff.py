"""``memplan diff-semantics`` output: the rich report (the JSON document is
``memplan.render.diff_json``, which imports no rich; its functions are re-exported here)."""

from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Optional, Tuple, Union

from rich.console import Console
from rich.text import Text

from memplan.core.results import BlockVerdict, Confidence, Outcome, log_lines
from memplan.core.units import format_size
from memplan.diff.types import (
    BlockDifference,
    OwnerOutcome,
    SemanticsDiff,
    Site,
)
from memplan.render.block_columns import difference_columns
from memplan.render.console import print_line
from memplan.render.diff_json import (  # noqa: F401  (re-exported)
    diff_dict,
    difference_dict,
    finding_dict,
    owner_dict,
    sided_hazard_dict,
)
from memplan.render.escape import safe
from memplan.render.grid import Cell, Grid, GridColumn, Styled
from memplan.render.lsmem import Format, SummaryWhen, TableOptions, print_listing
from memplan.render.table import by_confidence_text, unknown_caveat

# --- rich -------------------------------------------------------------------------------

def _short(v: BlockVerdict) -> str:
    if v.result is Outcome.OFFLINED:
        return "offlined"
    return f"{v.result.value} at {v.step.value}" if v.step else v.result.value


def group_key(d: BlockDifference) -> Tuple[Tuple[Site, ...], str, str]:
    return d.sites, _short(d.left), _short(d.right)


def groups(diff: SemanticsDiff) -> List[Tuple[Tuple[Tuple[Site, ...], str, str], List[BlockDifference]]]:
    """Differences grouped by their sites and the kind of change, in first-block order."""
    out: Dict[Tuple[Tuple[Site, ...], str, str], List[BlockDifference]] = {}
    for d in diff.differences:
        out.setdefault(group_key(d), []).append(d)
    return list(out.items())


def _log_lines(v: BlockVerdict) -> List[str]:
    return log_lines(v.kernel_log)


def _line(console: Console, text: Union[str, Text]) -> None:
    print_line(console, Text(safe(text)) if isinstance(text, str) else text)


def _print_details(console: Console, diff: SemanticsDiff, d: BlockDifference) -> None:
    _line(console, f"  block {d.block}: {d.explanation}")
    logs = [(name, _log_lines(v)) for name, v in ((diff.left, d.left), (diff.right, d.right))]
    if logs[0][1] != logs[1][1]:
        for name, lines in logs:
            _line(console, f"    {name} log: " + ("; ".join(lines) if lines else "-"))
    for h in d.hazards:
        _line(console, Text.assemble("    hazard ", (f"[{safe(h.semantics)}] ", "bold"), (h.hazard.kind.value, "red"),
                                     f": {safe(h.hazard.text)}"))


def _owner_cell(o: OwnerOutcome) -> str:
    text = f"{o.answer} ({o.offlinable}/{o.blocks})"
    if o.failures:
        result, errno, reason, step = o.failures[0]
        text += f", {result.value}" + (f" at {step.value}" if step else "") + (f' "{reason}"' if reason else "")
    others = o.blocks - o.offlinable - o.blocked_by_kind
    if others:
        text += f", {others} blocked by other pages"
    return text


def print_owners(console: Console, diff: SemanticsDiff) -> None:
    grid = Grid([GridColumn("KIND"), GridColumn("ZONE"), GridColumn("BLOCKS", "right"),
                 GridColumn(diff.left.upper()), GridColumn(diff.right.upper()), GridColumn("CHANGES")])
    for o in diff.owners:
        for z in o.zones:
            if z.changes:
                change: Cell = Styled("yes", "bold red")
            elif z.step_changed_blocks:
                change = Styled("step only", "yellow")
            else:
                change = "no"
            grid.add_row([o.kind.label, z.zone.value if z.zone else "none", str(z.blocks),
                          _owner_cell(z.left), _owner_cell(z.right), change])
    grid.print(console)


def summary_lines(diff: SemanticsDiff, in_bytes: bool = False) -> List[str]:
    s = diff.summary
    # the split by confidence on every input, as simulate's summary prints it (issue 13 §1; a
    # profile's verdicts are all certain)
    splits = ((diff.left, s.left_offlinable_by_confidence or {Confidence.CERTAIN: s.left_offlinable_bytes}),
              (diff.right, s.right_offlinable_by_confidence or {Confidence.CERTAIN: s.right_offlinable_bytes}))
    width = max(len(diff.left), len(diff.right)) + 18
    size = (lambda n: str(n)) if in_bytes else format_size
    lines = [
        f"{'Blocks compared:':<{width}} {s.blocks}",
        f"{'Blocks that differ:':<{width}} {s.differ}",
        f"{f'Offlinable ({diff.left}):':<{width}} {s.left_offlined} ({size(s.left_offlinable_bytes)}"
        f"{unknown_caveat(splits[0][1], in_bytes)})",
        f"{f'Offlinable ({diff.right}):':<{width}} {s.right_offlined} ({size(s.right_offlinable_bytes)}"
        f"{unknown_caveat(splits[1][1], in_bytes)})",
    ]
    lines += [f"{f'By confidence ({name}):':<{width}} {by_confidence_text(by, in_bytes)}" for name, by in splits]
    return lines


def print_diff(console: Console, diff: SemanticsDiff, titles: Optional[Dict[str, str]] = None,
               options: Optional[TableOptions] = None) -> None:
    """The grouped report; the group tables take lsmem's controls, and ``--raw``/``--pairs``/
    lsmem's ``--json`` print one listing of every differing block instead (no groups, no details)."""
    titles = titles or {}
    options = options or TableOptions()
    columns = difference_columns(diff.left, diff.right)
    if options.format is not Format.TABLE:
        print_listing(console, columns, diff.differences, options, name="differences")
        return

    for side, name in (("left: ", diff.left), ("right:", diff.right)):
        _line(console, f"{side} {name}" + (f" - {titles[name]}" if name in titles else ""))
    _line(console, f"{diff.profile} ({diff.machine}); a foreign reference on a fake-offline page is dropped: "
                   f"{diff.foreign_ref_dropped.value}")
    if not diff.differences:
        print_line(console)
        _line(console, f"No differences: every selected block behaves the same under {diff.left} and {diff.right}.")
    for (sites, lshort, rshort), items in groups(diff):
        print_line(console)
        where = " + ".join(s.value for s in sites) or "no predicate site"
        _line(console, Text.assemble((where, "bold"), f": {diff.left} {lshort} -> {diff.right} {rshort}",
                                     f" ({len(items)} block{'s' if len(items) != 1 else ''})"))
        if options.want_table:
            print_listing(console, columns, items, replace(options, summary=SummaryWhen.NEVER))
        for d in items:
            _print_details(console, diff, d)
    if diff.owners:
        print_line(console)
        _line(console, Text("Zi Yan's question: can blocks holding each kind of PageOffline page still be offlined?",
                            style="bold"))
        print_owners(console, diff)
        for o in diff.owners:
            _line(console, f"  {o.kind.label} - {o.owner}: {o.note}")
    if options.want_summary:
        print_line(console)
        for line in summary_lines(diff, options.in_bytes):
            _line(console, line)
