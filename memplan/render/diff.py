"""``memplan diff-semantics`` output: the JSON document and the rich report."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from rich.console import Console
from rich.table import Table
from rich.text import Text

from memplan import __version__
from memplan.core.results import BlockVerdict, Outcome, log_lines
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
from memplan.render.cells import RESULT_STYLE, add_columns, culprit_text, lsmem_range
from memplan.render.json import block_dict
from memplan.render.lsmem import TableOptions, merged_rows, raw_lines, rich_table

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


def diff_dict(d: SemanticsDiff) -> Dict[str, Any]:
    s = d.summary
    return {
        "memplan": __version__,
        "profile": d.profile,
        "machine": d.machine,
        "left": d.left,
        "right": d.right,
        "foreign_ref_dropped": d.foreign_ref_dropped.value,
        "differences": [difference_dict(x) for x in d.differences],
        "owners": [owner_dict(o, d.left, d.right) for o in d.owners],
        "summary": {
            "blocks": s.blocks,
            "differ": s.differ,
            "left": {"semantics": d.left, "offlined": s.left_offlined, "offlinable_bytes": s.left_offlinable_bytes},
            "right": {"semantics": d.right, "offlined": s.right_offlined,
                      "offlinable_bytes": s.right_offlinable_bytes},
        },
        "warnings": list(d.warnings),
    }


# --- rich -------------------------------------------------------------------------------

def verdict_cell(v: BlockVerdict) -> Text:
    """``fails EBUSY isolate "failure to isolate range"`` in the result's colour."""
    text = Text(v.result.value, style=RESULT_STYLE[v.result])
    if v.result is not Outcome.OFFLINED:
        parts = [p for p in (v.errno.value if v.errno else None, v.step.value if v.step else None) if p]
        if parts:
            text.append(" " + " ".join(parts))
        if v.reason:
            text.append(f' "{v.reason.value}"')
    return text


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


def _difference_table(diff: SemanticsDiff, items: Sequence[BlockDifference],
                      options: Optional[TableOptions] = None) -> Table:
    if options is not None:
        # lsmem's controls (-o, --split, --all, --bytes, -n) over the diff's columns.
        columns = difference_columns(diff.left, diff.right)
        shown = columns.select(options)
        return rich_table(shown, merged_rows(columns, items, options, shown), options)
    table = Table(box=None, header_style="bold", pad_edge=False)
    add_columns(table, (("BLOCK", "right"), ("RANGE", "left"), ("SIZE", "right"), ("ZONE", "left"),
                        (diff.left.upper(), "left"), (diff.right.upper(), "left"), ("CULPRIT", "left")),
                wrap=(diff.left.upper(), diff.right.upper(), "CULPRIT"))
    for d in items:
        culprits = {culprit_text(d.left), culprit_text(d.right)} - {""}
        table.add_row(str(d.block), lsmem_range(d.left), format_size(d.left.size),
                      d.zone.value if d.zone else "none", verdict_cell(d.left), verdict_cell(d.right),
                      " / ".join(sorted(culprits)))
    return table


def _print_details(console: Console, diff: SemanticsDiff, d: BlockDifference) -> None:
    console.print(f"  block {d.block}: {d.explanation}", highlight=False, markup=False, soft_wrap=True)
    logs = [(name, _log_lines(v)) for name, v in ((diff.left, d.left), (diff.right, d.right))]
    if logs[0][1] != logs[1][1]:
        for name, lines in logs:
            console.print(f"    {name} log: " + ("; ".join(lines) if lines else "-"), highlight=False, markup=False,
                          soft_wrap=True)
    for h in d.hazards:
        console.print(Text.assemble("    hazard ", (f"[{h.semantics}] ", "bold"), (h.hazard.kind.value, "red"),
                                    f": {h.hazard.text}"), highlight=False, soft_wrap=True)


def _owner_cell(o: OwnerOutcome) -> str:
    text = f"{o.answer} ({o.offlinable}/{o.blocks})"
    if o.failures:
        result, errno, reason, step = o.failures[0]
        text += f", {result.value}" + (f" at {step.value}" if step else "") + (f' "{reason}"' if reason else "")
    others = o.blocks - o.offlinable - o.blocked_by_kind
    if others:
        text += f", {others} blocked by other pages"
    return text


def owners_table(diff: SemanticsDiff) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("KIND", "ZONE", "BLOCKS", diff.left.upper(), diff.right.upper(), "CHANGES"):
        table.add_column(name, justify="right" if name == "BLOCKS" else "left",
                         no_wrap=name in ("KIND", "ZONE", "BLOCKS", "CHANGES"))
    for o in diff.owners:
        for i, z in enumerate(o.zones):
            if z.changes:
                change = Text("yes", style="bold red")
            elif z.step_changed_blocks:
                change = Text("step only", style="yellow")
            else:
                change = Text("no")
            table.add_row(o.kind.label if i == 0 else "", z.zone.value if z.zone else "none", str(z.blocks),
                          _owner_cell(z.left), _owner_cell(z.right), change)
    return table


def summary_lines(diff: SemanticsDiff, in_bytes: bool = False) -> List[str]:
    s = diff.summary
    width = max(len(diff.left), len(diff.right)) + 16
    size = (lambda n: str(n)) if in_bytes else format_size
    return [
        f"{'Blocks compared:':<{width}} {s.blocks}",
        f"{'Blocks that differ:':<{width}} {s.differ}",
        f"{f'Offlinable ({diff.left}):':<{width}} {s.left_offlined} ({size(s.left_offlinable_bytes)})",
        f"{f'Offlinable ({diff.right}):':<{width}} {s.right_offlined} ({size(s.right_offlinable_bytes)})",
    ]


def print_diff(console: Console, diff: SemanticsDiff, titles: Optional[Dict[str, str]] = None,
               options: Optional[TableOptions] = None) -> None:
    """The grouped report; with ``options`` the group tables take lsmem's controls, and
    ``options.raw`` prints only one raw table of every differing block (no groups, no details)."""
    titles = titles or {}
    if options is not None and options.raw:
        columns = difference_columns(diff.left, diff.right)
        shown = columns.select(options)
        for line in raw_lines(shown, merged_rows(columns, diff.differences, options, shown), options):
            console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)
        return

    for side, name in (("left: ", diff.left), ("right:", diff.right)):
        console.print(f"{side} {name}" + (f" - {titles[name]}" if name in titles else ""), highlight=False,
                      markup=False)
    console.print(f"{diff.profile} ({diff.machine}); a foreign reference on a fake-offline page is dropped: "
                  f"{diff.foreign_ref_dropped.value}", highlight=False, markup=False)
    if not diff.differences:
        console.print()
        console.print(f"No differences: every selected block behaves the same under {diff.left} and {diff.right}.",
                      highlight=False, markup=False)
    for (sites, lshort, rshort), items in groups(diff):
        console.print()
        where = " + ".join(s.value for s in sites) or "no predicate site"
        console.print(Text.assemble((where, "bold"), f": {diff.left} {lshort} -> {diff.right} {rshort}",
                                    f" ({len(items)} block{'s' if len(items) != 1 else ''})"), highlight=False)
        console.print(_difference_table(diff, items, options))
        for d in items:
            _print_details(console, diff, d)
    if diff.owners:
        console.print()
        console.print(Text("Zi Yan's question: can blocks holding each kind of PageOffline page still be offlined?",
                           style="bold"), highlight=False)
        console.print(owners_table(diff))
        for o in diff.owners:
            console.print(f"  {o.kind.label} - {o.owner}: {o.note}", highlight=False, markup=False, soft_wrap=True)
    console.print()
    for line in summary_lines(diff, options.in_bytes if options is not None else False):
        console.print(line, highlight=False, markup=False)
