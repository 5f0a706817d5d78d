"""``memplan diff-semantics`` output: the JSON document and the rich report."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, List, Optional, Tuple, Union

from rich.console import Console
from rich.text import Text

from memplan import __version__
from memplan.core.results import BlockVerdict, Confidence, Outcome, log_lines
from memplan.core.source import InputSource
from memplan.core.units import format_block_ranges, format_size
from memplan.diff.types import (
    BlockDifference,
    OwnerAnswer,
    OwnerHazard,
    OwnerOutcome,
    SemanticsDiff,
    SidedHazard,
    Site,
    SiteFinding,
)
from memplan.render.block_columns import difference_columns
from memplan.render.cells import worst_confidence
from memplan.render.console import print_line
from memplan.render.escape import safe
from memplan.render.grid import Cell, Grid, GridColumn, Styled
from memplan.render.json import block_dict, by_confidence_dict
from memplan.render.lsmem import Format, SummaryWhen, TableOptions, print_listing
from memplan.render.table import by_confidence_text, unknown_caveat

# --- JSON -------------------------------------------------------------------------------

def finding_dict(f: SiteFinding) -> Dict[str, Any]:
    return {"site": f.site.value, "left": f.left, "right": f.right, "pages": f.pages, "kinds": list(f.kinds),
            "pfn": f.pfn}


def sided_hazard_dict(h: SidedHazard) -> Dict[str, Any]:
    return {"side": h.side.value, "semantics": h.semantics, "kind": h.hazard.kind.value, "text": h.hazard.text,
            "pfn": h.hazard.pfn}


def difference_dict(d: BlockDifference) -> Dict[str, Any]:
    return {
        "block": d.block,
        "zone": d.zone.value if d.zone else "none",
        "left": block_dict(d.left),
        "right": block_dict(d.right),
        "changed": list(d.changed),
        # the less certain side's (each side's own is in its block)
        "confidence": worst_confidence((d.left.confidence, d.right.confidence)).value,
        "sites": [s.value for s in d.sites],
        "findings": [finding_dict(f) for f in d.findings],
        "explanation": d.explanation,
        "hazards": [sided_hazard_dict(h) for h in d.hazards],
    }


def _owner_outcome_dict(o: OwnerOutcome) -> Dict[str, Any]:
    return {
        "answer": o.answer, "blocks": o.blocks, "offlinable": o.offlinable, "blocked_by_kind": o.blocked_by_kind,
        "failures": [{"result": r.value, "errno": e, "reason": why, "step": s.value if s else None}
                     for r, e, why, s in o.failures],
    }


def _owner_hazard_dict(h: OwnerHazard, left: str, right: str) -> Dict[str, Any]:
    def side(name: str, blocks: Tuple[int, ...]) -> Dict[str, Any]:
        return {"semantics": name, "blocks": list(blocks), "ranges": format_block_ranges(list(blocks))}
    return {"kind": h.kind.value, "left": side(left, h.left), "right": side(right, h.right)}


def owner_dict(o: OwnerAnswer, left: str, right: str) -> Dict[str, Any]:
    return {
        "kind": o.kind.label,
        "owner": o.owner,
        "pages": o.pages,
        "changes_in": [z.value if z else "none" for z in o.changes_in],
        "note": o.note,
        "hazards": [_owner_hazard_dict(h, left, right) for h in o.hazards],
        "zones": [{"zone": z.zone.value if z.zone else "none", "blocks": z.blocks, "changes": z.changes,
                   "changed_blocks": z.changed_blocks, "step_changed_blocks": z.step_changed_blocks,
                   "left": _owner_outcome_dict(z.left), "right": _owner_outcome_dict(z.right)} for z in o.zones],
    }


def diff_dict(d: SemanticsDiff, source: InputSource) -> Dict[str, Any]:
    s = d.summary
    return {
        "memplan": __version__,
        **source.fields(),
        "machine": d.machine,
        "left": d.left,
        "right": d.right,
        "foreign_ref_dropped": d.foreign_ref_dropped.value,
        "differences": [difference_dict(x) for x in d.differences],
        "owners": [owner_dict(o, d.left, d.right) for o in d.owners],
        "summary": {
            "blocks": s.blocks,
            "differ": s.differ,
            "left": {"semantics": d.left, "offlined": s.left_offlined, "offlinable_bytes": s.left_offlinable_bytes,
                     "offlinable_bytes_by_confidence": by_confidence_dict(s.left_offlinable_by_confidence)},
            "right": {"semantics": d.right, "offlined": s.right_offlined,
                      "offlinable_bytes": s.right_offlinable_bytes,
                      "offlinable_bytes_by_confidence": by_confidence_dict(s.right_offlinable_by_confidence)},
        },
        "warnings": list(d.warnings),
    }


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
