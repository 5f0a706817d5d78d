"""Rich tables for people (lsmem-like columns and sizes)."""

from __future__ import annotations

from typing import List, Optional

from rich.color import ColorSystem
from rich.console import Console
from rich.style import Style
from rich.table import Table
from rich.text import Text

from memplan.results import BlockVerdict, Outcome, SimulationResult
from memplan.units import format_size

RESULT_STYLE = {Outcome.OFFLINED: "green", Outcome.FAILS: "red", Outcome.HANGS: "yellow"}


def lsmem_range(v: BlockVerdict) -> str:
    """lsmem's RANGE cell: ``0x%016x-0x%016x`` with an inclusive end."""
    return f"0x{v.start:016x}-0x{v.end:016x}"


def culprit_text(v: BlockVerdict) -> str:
    if v.culprit is None:
        return ""
    return f"{v.culprit.kind.label}@{v.culprit.pfn:#x}"


_COLUMNS = (("BLOCK", "right"), ("RANGE", "left"), ("SIZE", "right"), ("ZONE", "left"), ("RESULT", "left"),
            ("ERRNO", "left"), ("REASON", "left"), ("STEP", "left"), ("FREE", "right"), ("TO MIGRATE", "right"),
            ("SKIPPED", "right"), ("DISSOLVED", "right"), ("CULPRIT", "left"))
_RESULT_COLUMN = 4
#: a colour terminal gets the exact rich table up to this many rows (beyond, the plain layout
#: with the same styles: rich measures every cell, about half a millisecond per row)
RICH_MAX_ROWS = 2000


def _row_cells(v: BlockVerdict, confidence: bool) -> List[str]:
    cells = [
        str(v.block), lsmem_range(v), format_size(v.size), v.zone.value if v.zone else "none", v.result.value,
        v.errno.value if v.errno else "-", v.reason.value if v.reason else "-", v.step.value if v.step else "-",
        str(v.pages.free), str(v.pages.migrated), str(v.pages.skipped_offline), str(v.pages.dissolved),
        culprit_text(v),
    ]
    if confidence:
        cells.append(v.confidence or "")
    return cells


def simulation_table(result: SimulationResult) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, justify in _COLUMNS:
        table.add_column(name, justify=justify, no_wrap=name not in ("REASON", "CULPRIT"))
    confidence = any(b.confidence for b in result.blocks)
    if confidence:
        table.add_column("CONFIDENCE")
    for v in result.blocks:
        row: List = _row_cells(v, confidence)
        row[_RESULT_COLUMN] = Text(v.result.value, style=RESULT_STYLE[v.result])
        table.add_row(*row)
    return table


_COLOR_SYSTEMS = {"standard": ColorSystem.STANDARD, "256": ColorSystem.EIGHT_BIT, "truecolor": ColorSystem.TRUECOLOR,
                  "windows": ColorSystem.WINDOWS}


def _plain_table(console: Console, result: SimulationResult) -> Optional[str]:
    """The text rich would print for ``simulation_table()`` when every column gets its natural
    width (rich's layout with ``box=None``: cells justified to the widest one, two spaces between
    columns, every line padded to the table's width), or ``None`` when rich must lay it out:
    the table is wider than the console, or a cell is not plain ASCII."""
    if not result.blocks:
        return None
    color = console.color_system
    if color is not None and len(result.blocks) <= RICH_MAX_ROWS:
        return None
    confidence = any(b.confidence for b in result.blocks)
    header = [name for name, _ in _COLUMNS] + (["CONFIDENCE"] if confidence else [])
    right = [justify == "right" for _, justify in _COLUMNS] + ([False] if confidence else [])
    rows = [_row_cells(v, confidence) for v in result.blocks]
    widths = [max(len(header[i]), max(len(row[i]) for row in rows)) for i in range(len(header))]
    if sum(widths) + 2 * (len(widths) - 1) > console.width:
        return None
    if any(not cell.isascii() or "[" in cell for row in rows for cell in row):
        return None  # markup or wide characters: rich's own measuring

    def line(cells: List[str], styles: Optional[List[Optional[Style]]] = None) -> str:
        parts = []
        for i, (cell, width) in enumerate(zip(cells, widths)):
            pad = " " * (width - len(cell))
            text = cell if styles is None or styles[i] is None else styles[i].render(cell, color_system=system)
            parts.append(pad + text if right[i] else text + pad)
        return "  ".join(parts)

    system = _COLOR_SYSTEMS.get(color) if color else None
    if system is None:
        return "\n".join([line(header)] + [line(row) for row in rows]) + "\n"
    bold = Style(bold=True)
    styles = {o: Style.parse(name) for o, name in RESULT_STYLE.items()}
    if console.no_color:
        styles = {o: s.without_color for o, s in styles.items()}
    header_line = line(header, [bold] * len(header))
    row_styles = [None] * len(header)
    lines = [header_line]
    for v, row in zip(result.blocks, rows):
        row_styles[_RESULT_COLUMN] = styles[v.result]
        lines.append(line(row, row_styles))
    return "\n".join(lines) + "\n"


def summary_lines(result: SimulationResult) -> List[str]:
    s = result.summary
    lines = [
        f"Semantics:          {result.semantics}" + (f" ({result.semantics_reason})" if result.semantics_reason else ""),
        f"Blocks judged:      {s.blocks}",
        f"Would offline:      {s.offlined} ({format_size(s.offlinable_bytes)})",
        f"Would fail:         {s.fails}",
        f"Would hang:         {s.hangs} (until a signal: -EINTR \"signal backoff\")",
    ]
    return lines


def print_simulation(console: Console, result: SimulationResult) -> None:
    plain = _plain_table(console, result)
    if plain is None:
        console.print(simulation_table(result))
    elif console.record:
        console.out(plain, highlight=False, end="")
    else:
        console.file.write(plain)
    console.print()
    for line in summary_lines(result):
        console.print(line, highlight=False, markup=False)
