"""Output of ``memplan fleet``: the rich summary table and the progress bar on stderr (the JSON
document and JSON lines are ``memplan.render.fleet_json``, which imports no rich; its names are
re-exported here)."""

from __future__ import annotations

from typing import List, Optional, Tuple

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from memplan.core.results import Confidence
from memplan.core.units import format_size
from memplan.fleet.types import ConfidenceBytes, FleetMode, FleetReport, HostSummary
from memplan.render.console import print_line
from memplan.render.escape import safe
from memplan.render.fleet_json import (  # noqa: F401  (re-exported)
    cause_text,
    fleet_dict,
    host_dict,
    where,
    write_line,
    zone_label,
)
from memplan.render.grid import Cell, Justify, Styled, grid_of

#: Blocking causes listed under the table (``--json`` has them all).
TOP_CAUSES = 10
#: Causes shown per host in the table.
HOST_CAUSES = 2


# ---- rich -------------------------------------------------------------------------------


def _host_causes(h: HostSummary) -> str:
    causes = sorted(h.causes(), key=lambda zc: (-zc[1].bytes, -zc[1].blocks, zc[1].cause))
    parts = [f"{where(c.cause, zone, label=False)}" + (f" ({format_size(c.bytes)})" if c.bytes else "")
             for zone, c in causes[:HOST_CAUSES]]
    if len(causes) > HOST_CAUSES:
        parts.append(f"+{len(causes) - HOST_CAUSES} more")
    return ", ".join(parts)


def print_hosts(console: Console, report: FleetReport) -> None:
    """One row per host (error rows say why); UNKNOWN counts the verdicts rated unknown."""
    capacity = report.mode is not FleetMode.SIMULATE
    columns: List[Tuple[str, Justify]] = [("HOST", "left"), ("MACHINE", "left"), ("MEMORY", "right")]
    if capacity:
        columns += [("ASKED", "right"), ("ACHIEVED", "right"), ("SHORT", "right")]
    else:
        columns += [("OFFLINABLE", "right"), ("UNRECLAIMABLE", "right")]
    columns += [("BLOCKS", "right"), ("FAILS", "right"), ("HANGS", "right"), ("UNKNOWN", "right"),
                ("BLOCKED BY", "left")]
    grid = grid_of(columns)
    for h in report.hosts:
        if h.error is not None:
            grid.add_row([h.host, h.machine or ""] + [""] * (len(columns) - 3) + [Styled(f"error: {h.error}", "red")])
            continue
        cells: List[Cell] = [h.host, h.machine or "", format_size(h.memory_bytes)]
        short = h.unreclaimable_bytes
        if capacity:
            cells += [format_size(h.asked_bytes), format_size(h.achieved_bytes)]
        else:
            cells.append(format_size(h.offlinable_bytes))
        cells += [Styled(format_size(short), "red" if short else "green"), str(h.blocks), str(h.fails), str(h.hangs),
                  str(h.unknown_blocks), _host_causes(h)]
        grid.add_row(cells)
    grid.print(console)


def print_causes(console: Console, report: FleetReport, limit: int = TOP_CAUSES) -> None:
    grid = grid_of((("HOSTS", "right"), ("CAUSE", "left"), ("BLOCKS", "right"), ("MEMORY", "right"),
                    ("SHARE", "right")), title="Top blocking causes (share of the blocked memory)")
    for c in report.causes[:limit]:
        grid.add_row([str(c.hosts), where(c.cause, c.zone), str(c.blocks), format_size(c.bytes),
                      f"{c.share * 100:.1f}%"])
    grid.print(console)


def _percent(part: int, whole: int) -> str:
    return f" ({part * 100 / whole:.0f}%)" if whole else ""


def _by_zone(report: FleetReport) -> str:
    return ", ".join(f"{z.zone} {format_size(z.offlinable_bytes)}" for z in report.zones
                     if z.offlinable_bytes) or "-"


def _by_confidence(split: ConfidenceBytes) -> str:
    return ", ".join(f"{level} {format_size(nbytes)}" for level, nbytes in split.as_dict().items())


def _trusted(report: FleetReport) -> str:
    return "certain or likely memory" if report.trust is Confidence.LIKELY else "memory of any confidence"


def summary_lines(report: FleetReport, ran: Optional[str] = None) -> List[str]:
    hosts = report.totals.hosts
    judged = report.judged
    lines = [f"Hosts:              {hosts} ({judged} judged, {report.errors} error{'s' if report.errors != 1 else ''})"]
    if report.semantics:
        lines.append(f"Semantics:          {report.semantics}")
    lines.append(f"Online memory:      {format_size(report.memory_bytes)}")
    if report.mode is FleetMode.SIMULATE:
        lines += [
            f"Offlinable:         {format_size(report.offlinable_bytes)}"
            f"{_percent(report.offlinable_bytes, report.memory_bytes)}",
            f"  by confidence:    {_by_confidence(report.offlinable_by_confidence)}",
            f"Unreclaimable:      {format_size(report.unreclaimable_bytes)}"
            f"{_percent(report.unreclaimable_bytes, report.memory_bytes)}",
        ]
        if report.zones:
            lines.append("Offlinable by zone: " + _by_zone(report))
    else:
        what = ("chmem -d " if report.mode is FleetMode.PLAN else "unplug by ") + format_size(report.size_bytes or 0)
        if report.mode is FleetMode.UNPLUG:
            what += f" from {'device ' + report.device if report.device else 'every virtio-mem device'}"
        asked, achieved = report.asked_bytes, report.achieved_bytes
        lines += [
            f"Asked:              {format_size(asked)} ({what} on {judged} host{'s' if judged != 1 else ''})",
            f"Achieved:           {format_size(achieved)}{_percent(achieved, asked)}",
            f"  by confidence:    {_by_confidence(report.achieved_by_confidence)}",
            f"Short:              {format_size(report.unreclaimable_bytes)}",
            f"Hosts reaching it:  {report.succeeded} of {hosts} (counting {_trusted(report)})",
        ]
        if report.zones:
            lines.append("Achieved by zone:   " + _by_zone(report))
    # in every mode, 0 too: the confidence of the figures above is part of the answer
    lines.append(f"Unknown blocks:     {report.unknown_blocks} (verdicts the inputs cannot decide)")
    if ran:
        lines.append(f"Ran on:             {ran}")
    return lines


def print_fleet(console: Console, report: FleetReport, ran: Optional[str] = None) -> None:
    print_hosts(console, report)
    print_line(console)
    for line in summary_lines(report, ran):
        print_line(console, safe(line))
    if report.causes:
        print_line(console)
        print_causes(console, report)


# ---- progress ---------------------------------------------------------------------------


class RateColumn(ProgressColumn):
    """Hosts per second (rich's speed estimate over the recent samples)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- hosts/s" if speed is None else f"{speed:.1f} hosts/s", style="progress.data.speed")


def progress_bar(console: Console) -> Progress:
    """hosts done / total, hosts/s, ETA; cleared when done."""
    return Progress(TextColumn("fleet"), BarColumn(), MofNCompleteColumn(), RateColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=console, transient=True)
