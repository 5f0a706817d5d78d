"""Output of ``memplan fleet``: the rich summary table, the JSON document, JSON lines, and
the progress bar on stderr."""

from __future__ import annotations

import json
from typing import IO, Any, Dict, List, Optional, Tuple

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from memplan import __version__
from memplan.core.results import Confidence
from memplan.core.units import format_size
from memplan.fleet.types import ConfidenceBytes, FleetCause, FleetMode, FleetReport, HostSummary, InputKind
from memplan.render.console import print_line
from memplan.render.escape import safe
from memplan.render.grid import Cell, Justify, Styled, grid_of

#: Blocking causes listed under the table (``--json`` has them all).
TOP_CAUSES = 10
#: Causes shown per host in the table.
HOST_CAUSES = 2


def zone_label(zone: str) -> str:
    """``Normal`` -> ``ZONE_NORMAL``; ``none`` (a block spanning zones) -> ``no single zone``."""
    return "no single zone" if zone == "none" else f"ZONE_{zone.upper()}"


def where(cause: str, zone: str, label: bool = True) -> str:
    """``slab in ZONE_NORMAL``; a cause of a block spanning zones stands alone."""
    if zone == "none":
        return cause
    return f"{cause} in {zone_label(zone) if label else zone}"


def cause_text(cause: FleetCause) -> str:
    """``412 hosts: slab in ZONE_NORMAL``."""
    return f"{cause.hosts} host{'s' if cause.hosts != 1 else ''}: {where(cause.cause, cause.zone)}"


# ---- JSON -------------------------------------------------------------------------------


def host_dict(h: HostSummary) -> Dict[str, Any]:
    """One host (a ``--jsonl`` line; an element of ``--json``'s ``hosts``). The same keys and
    types in every row and mode: byte figures and counts are integers (0 in an error row and
    where the mode asks nothing, e.g. ``asked_bytes`` in simulate mode); ``machine``,
    ``semantics`` and ``error`` are strings or null. ``host`` is the INPUT as named and
    ``source_kind`` what it holds, as every command's ``source_kind`` (``profile`` or
    ``sysroot``; null when the INPUT is neither: the row is an error row)."""
    return {
        "host": h.host,
        "source_kind": None if h.input is InputKind.INVALID else h.input.value,
        "mode": h.mode.value,
        "machine": h.machine,
        "semantics": h.semantics,
        "error": h.error,
        "blocks": h.blocks,
        "offlined": h.offlined,
        "fails": h.fails,
        "hangs": h.hangs,
        "memory_bytes": h.memory_bytes,
        "offlinable_bytes": h.offlinable_bytes,
        "offlinable_bytes_by_confidence": h.offlinable_by_confidence.as_dict(),
        "unreclaimable_bytes": h.unreclaimable_bytes,
        "blocked_bytes": h.blocked_bytes,
        "asked_bytes": h.asked_bytes,
        "achieved_bytes": h.achieved_bytes,
        "achieved_bytes_by_confidence": h.achieved_by_confidence.as_dict(),
        "unknown_blocks": h.unknown_blocks,
        "zones": [{"zone": z.zone, "blocks": z.blocks, "offlined": z.offlined, "fails": z.fails, "hangs": z.hangs,
                   "offlinable_bytes": z.offlinable_bytes, "blocked_bytes": z.blocked_bytes,
                   "causes": [{"cause": c.cause, "blocks": c.blocks, "bytes": c.bytes} for c in z.causes]}
                  for z in h.zones],
        "devices": [{"device": d.device, "mode": d.mode.value, "plugged_before_bytes": d.plugged_before_bytes,
                     "plugged_after_bytes": d.plugged_after_bytes, "asked_bytes": d.asked_bytes,
                     "achieved_bytes": d.achieved_bytes, "stop": d.stop.value, "errno": d.errno} for d in h.devices],
        "warnings": list(h.warnings),
    }


def fleet_dict(report: FleetReport) -> Dict[str, Any]:
    """``memplan fleet --json``: ``size_bytes`` and ``device`` echo the options (null when not given)."""
    return {
        "memplan": __version__,
        "mode": report.mode.value,
        "semantics": report.semantics,
        "size_bytes": report.size_bytes,
        "device": report.device,
        "trust": report.trust.value,
        "warnings": list(report.warnings),
        "summary": {
            "hosts": report.totals.hosts,
            "errors": report.errors,
            "succeeded": report.succeeded,
            "memory_bytes": report.memory_bytes,
            "offlinable_bytes": report.offlinable_bytes,
            "offlinable_bytes_by_confidence": report.offlinable_by_confidence.as_dict(),
            "unreclaimable_bytes": report.unreclaimable_bytes,
            "blocked_bytes": report.blocked_bytes,
            "asked_bytes": report.asked_bytes,
            "achieved_bytes": report.achieved_bytes,
            "achieved_bytes_by_confidence": report.achieved_by_confidence.as_dict(),
            "unknown_blocks": report.unknown_blocks,
            "zones": [{"zone": z.zone, "hosts": z.hosts, "blocks": z.blocks, "offlinable_bytes": z.offlinable_bytes,
                       "blocked_bytes": z.blocked_bytes} for z in report.zones],
        },
        "causes": [{"cause": c.cause, "zone": c.zone, "hosts": c.hosts, "blocks": c.blocks, "bytes": c.bytes,
                    "share": round(c.share, 6)} for c in report.causes],
        "hosts": [host_dict(h) for h in report.hosts],
    }


def write_line(host: HostSummary, stream: IO[str]) -> None:
    """One ``--jsonl`` line, flushed at once so a pipeline sees it while the fleet still runs."""
    stream.write(json.dumps(host_dict(host), separators=(",", ":")) + "\n")
    stream.flush()


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
