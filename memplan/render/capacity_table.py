"""Output of ``memplan plan`` and ``memplan unplug`` for people: tables at their natural width
(``memplan.render.grid``), summaries, the sweep curve; every attempt with its confidence."""

from __future__ import annotations

from typing import List, Tuple

from rich.console import Console

from memplan.core.model import VirtioMemMode
from memplan.core.results import Confidence
from memplan.core.units import format_block_ranges, format_size
from memplan.plans.types import (
    AUTO_MOVABLE_RATIO,
    RETRY_MAX_S,
    MemoryLeft,
    PlanResult,
    SweepResult,
    UnplugBlock,
    UnplugResult,
    UnplugStop,
)
from memplan.render.cells import RESULT_STYLE, confidence_text, culprit_text, lsmem_range, worst_confidence
from memplan.render.console import print_line
from memplan.render.escape import safe
from memplan.render.grid import Cell, Grid, GridColumn, Styled, grid_of
from memplan.render.table import by_confidence_text, unknown_caveat

#: Width of the sweep curve in character cells.
CURVE_WIDTH = 48


def print_left(console: Console, left: MemoryLeft) -> None:
    grid = Grid([GridColumn("NODE", "right"), GridColumn("ZONE"), GridColumn("FREE", "right"),
                 GridColumn("TOTAL", "right")], title="Left online")
    def free_text(n: int) -> str:
        return format_size(n) if left.free_known else ""  # an empty cell: "-"

    for z in left.zones:
        grid.add_row([str(z.node), z.zone.value if z.zone else "none", free_text(z.free_bytes),
                      format_size(z.total_bytes)])
    for node, (free, total) in left.nodes().items():
        grid.add_row([str(node), Styled("all", "bold"), free_text(free), format_size(total)])
    grid.print(console)
    if not left.free_known:
        print_line(console, "FREE not known: the input holds no page data (free memory is counted from the pages)")


def ratio_line(left: MemoryLeft) -> str:
    ratio = left.movable_ratio_percent
    shown = "n/a (no kernel zone)" if ratio is None else f"{ratio}%"
    mark = " (exceeds)" if left.ratio_exceeded else ""
    return f"MOVABLE:KERNEL:     {shown}{mark}, auto_movable_ratio {AUTO_MOVABLE_RATIO}%"


def print_attempts(console: Console, result: PlanResult) -> None:
    """chmem's writes in order, each with its verdict and how sure it is."""
    grid = grid_of((
        ("#", "right"), ("BLOCK", "right"), ("RANGE", "left"), ("ZONE", "left"), ("RESULT", "left"),
        ("ERRNO", "left"), ("REASON", "left"), ("STEP", "left"), ("MIGRATED", "right"), ("CULPRIT", "left"),
        ("CONFIDENCE", "left")))
    for i, v in enumerate(result.attempts, 1):
        grid.add_row([str(i), str(v.block), lsmem_range(v), v.zone.value if v.zone else "none",
                      Styled(v.result.value, RESULT_STYLE[v.result]), v.errno.value if v.errno else "",
                      v.reason.value if v.reason else "", v.step.value if v.step else "",
                      str(v.pages.migrated) if v.pages_known else "",
                      culprit_text(v), confidence_text(v.confidence)])
    grid.print(console)


def label(name: str, value: str) -> str:
    return f"{name + ':':<20}{value}"


def print_plan(console: Console, result: PlanResult) -> None:
    if result.attempts:
        print_attempts(console, result)
        print_line(console)
    count = result.asked_bytes // result.block_size
    lines = [
        label("Semantics", result.semantics),
        label("Asked", f"{format_size(result.asked_bytes)} ({count} block{'' if count == 1 else 's'} of "
                       f"{format_size(result.block_size)}{', zone ' + result.zone if result.zone else ''})"),
        label("Achieved", f"{format_size(result.achieved_bytes)} "
                          f"(blocks {format_block_ranges(list(result.offlined)) or 'none'}"
                          f"{unknown_caveat(result.achieved_bytes_by_confidence)})"),
        label("By confidence", by_confidence_text(result.achieved_bytes_by_confidence)),
        label("Attempts", f"{len(result.attempts)} of {result.candidates} candidate blocks"),
        ratio_line(result.left),
    ]
    for line in lines:
        print_line(console, safe(line))
    print_line(console)
    print_left(console, result.left)
    if result.end_line:
        print_line(console)
        print_line(console, safe(result.end_line))


def unplug_confidence(b: UnplugBlock) -> Confidence:
    """How sure the unplug of this block is: its own rating, or a removal verdict's if less sure."""
    return worst_confidence([b.confidence, *(v.confidence for v in b.removal)])


def _culprits(result: UnplugResult, b: UnplugBlock) -> str:
    sbm = result.mode is VirtioMemMode.SBM
    shown = [c for c in b.culprits if c.unit is not None] or list(b.culprits)
    return ", ".join(
        f"{'sb' if sbm else 'sec'} {'all' if c.unit is None else c.unit}: "
        f"{c.kind.label if c.kind else '?'}@{c.pfn:#x} {c.errno.value}" if c.pfn is not None
        else f"{'all' if c.unit is None else c.unit}: {c.errno.value}"
        for c in shown)


def unplug_grid(result: UnplugResult) -> Grid:
    sbm = result.mode is VirtioMemMode.SBM
    grid = grid_of((
        ("BLOCK" if sbm else "BIG BLOCK", "right"), ("MEMORY", "left"), ("ZONE", "left"), ("BEFORE", "left"),
        ("AFTER", "left"), ("UNPLUGGED", "right"), ("LEFT", "right"), ("CULPRITS", "left"), ("CONFIDENCE", "left")))
    for b in result.blocks:
        if not (b.visited or b.state_before != b.state_after):
            continue
        grid.add_row([str(b.block), format_block_ranges(list(b.memory_blocks)), b.zone.value if b.zone else "",
                      b.state_before, b.state_after,
                      str(len(b.unplugged_units)) if sbm else ("yes" if b.unplugged_units else "no"),
                      str(len(b.plugged_units_left)) if sbm else ("" if b.unplugged_units else "plugged"),
                      _culprits(result, b), unplug_confidence(b).value])
    return grid


def print_unplug(console: Console, result: UnplugResult) -> None:
    unit = "sub-block" if result.mode is VirtioMemMode.SBM else "big block"
    split = result.achieved_bytes_by_confidence
    lines = [
        label("Device", f"{result.device} ({result.mode.value.upper()}, {format_size(result.unit_size)} {unit}s)"),
        label("Requested size", format_size(result.requested_bytes)),
        label("Plugged", f"{format_size(result.plugged_before_bytes)} -> {format_size(result.plugged_after_bytes)}"),
        label("Achieved", f"{format_size(result.achieved_bytes)} of {format_size(result.asked_bytes)} asked"),
        label("By confidence", by_confidence_text(split)),
        label("Driver", _stop_text(result)),
    ]
    grid = unplug_grid(result)
    if grid.row_count:
        grid.print(console)
        print_line(console)
    for line in lines:
        print_line(console, safe(line))
    if result.runs:
        timeline = ", ".join(f"t={r.at_seconds}s {r.errno.value if r.errno else 'ok'}"
                             + (f" (-{format_size(r.unplugged_bytes)})" if r.unplugged_bytes else "")
                             for r in result.runs)
        print_line(console, label("Work runs", timeline))
    if result.next_retries:
        print_line(console, label("Retries", f"at {', '.join(f'{t}s' for t in result.next_retries)}, then every "
                                             f"{RETRY_MAX_S}s (virtio_mem_run_wq retry timer)"))
    for caveat in result.caveats:
        print_line(console, safe(label("Caveat", caveat)))


def _stop_text(result: UnplugResult) -> str:
    return {
        UnplugStop.REACHED: "reached the requested size",
        UnplugStop.UNPLUG_ONLINE: "stopped after the offline blocks (unplug_online=0)",
        UnplugStop.GRANULARITY: f"cannot get closer than one {format_size(result.unit_size)} unit",
        UnplugStop.BUSY: "-EBUSY: the remaining plugged memory is busy; retrying",
        UnplugStop.NO_MEMORY: "-ENOMEM: no memory left to migrate to; retrying",
        UnplugStop.HUNG: "offline_and_remove_memory() never returns (the work item hangs)",
        UnplugStop.DRIVER: "driver not loaded: nothing happens",
    }[result.stop]


def curve_cell(result: SweepResult, requested: int, plugged_after: int) -> Tuple[Styled, ...]:
    """█ plugged as requested, ▒ plugged beyond the request, · unplugged (``CURVE_WIDTH`` cells)."""
    top = max(result.plugged_before_bytes, 1)
    filled = round(plugged_after * CURVE_WIDTH / top)
    wanted = round(requested * CURVE_WIDTH / top)
    # The driver never unplugs more than asked: requested <= achievable <= plugged.
    return (Styled("█" * wanted, "green"), Styled("▒" * max(filled - wanted, 0), "red"),
            Styled("·" * max(CURVE_WIDTH - max(filled, wanted), 0), "dim"))


def print_sweep(console: Console, result: SweepResult) -> None:
    grid = grid_of((
        ("REQUESTED", "right"), ("ACHIEVABLE", "right"), ("UNPLUGGED", "right"), ("DRIVER", "left"),
        ("CURVE", "left")))
    for p in result.points:
        curve: Cell = curve_cell(result, p.requested_bytes, p.plugged_after_bytes)
        grid.add_row([format_size(p.requested_bytes), format_size(p.plugged_after_bytes),
                      format_size(result.plugged_before_bytes - p.plugged_after_bytes),
                      p.stop.value if p.errno is None else f"{p.stop.value} ({p.errno.value})", curve])
    grid.print(console)
    print_line(console)
    lines: List[str] = [
        label("Device", f"{result.device} ({result.mode.value.upper()}), "
                        f"plugged {format_size(result.plugged_before_bytes)}"),
        label("Floor", f"{format_size(result.floor_bytes)} (the smallest plugged size any request reaches)"),
        label("Curve", "█ plugged as requested, ▒ plugged beyond the request (could not go), · unplugged"),
    ]
    for line in lines:
        print_line(console, safe(line))
