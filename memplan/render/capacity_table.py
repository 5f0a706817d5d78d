"""Rich output of ``memplan plan`` and ``memplan unplug`` (tables, summaries, the sweep curve)."""

from __future__ import annotations

from typing import List

from rich.console import Console
from rich.table import Table
from rich.text import Text

from memplan.core.units import format_block_ranges, format_size
from memplan.plans.types import AUTO_MOVABLE_RATIO, RETRY_MAX_S, MemoryLeft, PlanResult, SweepResult, UnplugResult
from memplan.render.cells import RESULT_STYLE, add_columns, culprit_text, lsmem_range

#: Width of the sweep curve in character cells.
CURVE_WIDTH = 48


def left_table(left: MemoryLeft) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False, title="Left online", title_justify="left")
    add_columns(table, (("NODE", "right"), ("ZONE", "left"), ("FREE", "right"), ("TOTAL", "right")))
    for z in left.zones:
        table.add_row(str(z.node), z.zone.value if z.zone else "none", format_size(z.free_bytes),
                      format_size(z.total_bytes))
    for node, (free, total) in left.nodes().items():
        table.add_row(str(node), Text("all", style="bold"), format_size(free), format_size(total))
    return table


def ratio_line(left: MemoryLeft) -> str:
    ratio = left.movable_ratio_percent
    shown = "n/a (no kernel zone)" if ratio is None else f"{ratio}%"
    mark = " (exceeds)" if left.ratio_exceeded else ""
    return f"MOVABLE:KERNEL:     {shown}{mark}, auto_movable_ratio {AUTO_MOVABLE_RATIO}%"


def plan_table(result: PlanResult) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    add_columns(table, (("#", "right"), ("BLOCK", "right"), ("RANGE", "left"), ("ZONE", "left"),
                        ("RESULT", "left"), ("ERRNO", "left"), ("REASON", "left"), ("STEP", "left"),
                        ("MIGRATED", "right"), ("CULPRIT", "left")), wrap=("REASON", "CULPRIT"))
    for i, v in enumerate(result.attempts, 1):
        table.add_row(str(i), str(v.block), lsmem_range(v), v.zone.value if v.zone else "none",
                      Text(v.result.value, style=RESULT_STYLE[v.result]), v.errno.value if v.errno else "-",
                      v.reason.value if v.reason else "-", v.step.value if v.step else "-", str(v.pages.migrated),
                      culprit_text(v))
    return table


def print_plan(console: Console, result: PlanResult) -> None:
    if result.attempts:
        console.print(plan_table(result))
        console.print()
    lines = [
        f"Semantics:          {result.semantics}",
        f"Asked:              {format_size(result.asked_bytes)} ({result.asked_bytes // result.block_size} blocks of "
        f"{format_size(result.block_size)}{', zone ' + result.zone if result.zone else ''})",
        f"Achieved:           {format_size(result.achieved_bytes)} "
        f"(blocks {format_block_ranges(list(result.offlined)) or 'none'})",
        f"Attempts:           {len(result.attempts)} of {result.candidates} candidate blocks",
        ratio_line(result.left),
    ]
    for line in lines:
        console.print(line, highlight=False, markup=False)
    console.print()
    console.print(left_table(result.left))


def unplug_table(result: UnplugResult) -> Table:
    sbm = result.mode == "sbm"
    table = Table(box=None, header_style="bold", pad_edge=False)
    add_columns(table, (("BLOCK" if sbm else "BIG BLOCK", "right"), ("MEMORY", "left"), ("ZONE", "left"),
                        ("BEFORE", "left"), ("AFTER", "left"), ("UNPLUGGED", "right"), ("LEFT", "right"),
                        ("CULPRITS", "left")), wrap=("CULPRITS",))
    for b in result.blocks:
        if not (b.visited or b.state_before != b.state_after):
            continue
        shown = [c for c in b.culprits if c.unit is not None] or list(b.culprits)
        culprits = ", ".join(
            f"{'sb' if sbm else 'sec'} {'all' if c.unit is None else c.unit}: "
            f"{c.kind.label if c.kind else '?'}@{c.pfn:#x} {c.errno.value}" if c.pfn is not None
            else f"{'all' if c.unit is None else c.unit}: {c.errno.value}"
            for c in shown)
        table.add_row(str(b.block), format_block_ranges(list(b.memory_blocks)), b.zone.value if b.zone else "-",
                      b.state_before, b.state_after, str(len(b.unplugged_units)) if sbm else
                      ("yes" if b.unplugged_units else "no"),
                      str(len(b.plugged_units_left)) if sbm else ("-" if b.unplugged_units else "plugged"), culprits)
    return table


def print_unplug(console: Console, result: UnplugResult) -> None:
    unit = "sub-block" if result.mode == "sbm" else "big block"
    lines = [
        f"Device:             {result.device} ({result.mode.upper()}, {format_size(result.unit_size)} {unit}s)",
        f"Requested size:     {format_size(result.requested_bytes)}",
        f"Plugged:            {format_size(result.plugged_before_bytes)} -> {format_size(result.plugged_after_bytes)}",
        f"Achieved:           {format_size(result.achieved_bytes)} of {format_size(result.asked_bytes)} asked",
        f"Driver:             {_stop_text(result)}",
    ]
    table = unplug_table(result)
    if table.row_count:
        console.print(table)
        console.print()
    for line in lines:
        console.print(line, highlight=False, markup=False)
    if result.runs:
        timeline = ", ".join(f"t={r.at_seconds}s {r.errno.value if r.errno else 'ok'}"
                             + (f" (-{format_size(r.unplugged_bytes)})" if r.unplugged_bytes else "")
                             for r in result.runs)
        console.print(f"Work runs:          {timeline}", highlight=False, markup=False)
    if result.next_retries:
        console.print(f"Retries:            at {', '.join(f'{t}s' for t in result.next_retries)}, then every "
                      f"{RETRY_MAX_S}s (virtio_mem_run_wq retry timer)", highlight=False, markup=False)


def _stop_text(result: UnplugResult) -> str:
    return {
        "reached": "reached the requested size",
        "unplug_online": "stopped after the offline blocks (unplug_online=0)",
        "granularity": f"cannot get closer than one {format_size(result.unit_size)} unit",
        "busy": "-EBUSY: the remaining plugged memory is busy; retrying",
        "no_memory": "-ENOMEM: no memory left to migrate to; retrying",
        "hung": "offline_and_remove_memory() never returns (the work item hangs)",
        "driver": "driver not loaded: nothing happens",
    }.get(result.stop, result.stop)


def sweep_table(result: SweepResult) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    add_columns(table, (("REQUESTED", "right"), ("ACHIEVABLE", "right"), ("UNPLUGGED", "right"),
                        ("DRIVER", "left"), ("CURVE", "left")))
    top = max(result.plugged_before_bytes, 1)
    for p in result.points:
        filled = round(p.plugged_after_bytes * CURVE_WIDTH / top)
        wanted = round(p.requested_bytes * CURVE_WIDTH / top)
        # The driver never unplugs more than asked: requested <= achievable <= plugged.
        bar = Text()
        bar.append("█" * wanted, style="green")
        bar.append("▒" * max(filled - wanted, 0), style="red")
        bar.append("·" * max(CURVE_WIDTH - max(filled, wanted), 0), style="dim")
        table.add_row(format_size(p.requested_bytes), format_size(p.plugged_after_bytes),
                      format_size(result.plugged_before_bytes - p.plugged_after_bytes),
                      p.stop if p.errno is None else f"{p.stop} ({p.errno.value})", bar)
    return table


def print_sweep(console: Console, result: SweepResult) -> None:
    console.print(sweep_table(result))
    console.print()
    lines: List[str] = [
        f"Device:             {result.device} ({result.mode.upper()}), "
        f"plugged {format_size(result.plugged_before_bytes)}",
        f"Floor:              {format_size(result.floor_bytes)} (the smallest plugged size any request reaches)",
        "Curve:              █ plugged as requested, ▒ plugged beyond the request (could not go), · unplugged",
    ]
    for line in lines:
        console.print(line, highlight=False, markup=False)
