"""``memplan map``: draw a ``BlockMap`` as a grid of one-character cells.

Each segment (one zone, node and device) starts a new line labelled with its first block,
its start address, zone and device; its cells wrap at the console width in groups of eight.
A cell's character says what it is even without colour (``o`` offlines, ``X`` fails, ``H``
hangs, ``?`` judged but the verdict is unknown, ``-`` offline, ``.`` unplugged virtio-mem slot,
``_`` not judged); colour repeats it. A ``likely`` verdict keeps its character and is
underlined on a terminal; the legend counts certain, likely and unknown cells and their memory.
With ``--diff`` a block whose verdict differs shows ``<`` (offlines only on the left), ``>``
(only on the right) or ``*`` (differs otherwise); the others are dimmed.

Names from the input (machine, source, device ids) are escaped (``memplan.render.escape``).
``print_map`` never crops a line: a label wider than the terminal is the terminal's to wrap.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Tuple

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from memplan.core.results import Confidence
from memplan.core.units import format_size
from memplan.map.types import BlockMap, Cell, CellKind, Change, Segment
from memplan.render.escape import safe

GLYPH = {CellKind.OFFLINES: "o", CellKind.FAILS: "X", CellKind.HANGS: "H", CellKind.OFFLINE: "-",
         CellKind.UNPLUGGED: ".", CellKind.NOT_JUDGED: "_"}
#: a judged cell whose verdict is unknown (whatever the outcome memplan predicts)
UNKNOWN_GLYPH = "?"
JUDGED = (CellKind.OFFLINES, CellKind.FAILS, CellKind.HANGS)
CONFIDENCE_LABEL = {Confidence.CERTAIN: "certain", Confidence.LIKELY: "likely (underlined on a terminal)",
                    Confidence.UNKNOWN: "unknown (? whatever the outcome)"}
STYLE = {CellKind.OFFLINES: "bold green", CellKind.FAILS: "bold red", CellKind.HANGS: "bold yellow",
         CellKind.OFFLINE: "bright_black", CellKind.UNPLUGGED: "blue", CellKind.NOT_JUDGED: "bright_black"}
LABEL = {CellKind.OFFLINES: "offlines", CellKind.FAILS: "fails", CellKind.HANGS: "hangs until a signal",
         CellKind.OFFLINE: "offline already", CellKind.UNPLUGGED: "virtio-mem, not plugged (no block)",
         CellKind.NOT_JUDGED: "not judged"}
CHANGE_GLYPH = {Change.LEFT_ONLY: "<", Change.RIGHT_ONLY: ">", Change.OTHER: "*"}
CHANGE_STYLE = {Change.LEFT_ONLY: "bold magenta", Change.RIGHT_ONLY: "bold cyan", Change.OTHER: "bold yellow"}
GROUP = 8
#: this many consecutive rows of only unplugged slots collapse into one line
COLLAPSE_ROWS = 3


def cell_text(cell: Cell, diff: bool) -> Tuple[str, str]:
    """The character and style of one cell."""
    if diff and cell.change is not Change.SAME:
        return CHANGE_GLYPH[cell.change], CHANGE_STYLE[cell.change]
    glyph, style = GLYPH[cell.kind], ("dim " if diff else "") + STYLE[cell.kind]
    if cell.kind in JUDGED and cell.confidence is Confidence.UNKNOWN:
        return UNKNOWN_GLYPH, style + " reverse"
    if cell.kind in JUDGED and cell.confidence is Confidence.LIKELY:
        return glyph, style + " underline"
    return glyph, style


def _labels(bmap: BlockMap, segment: Segment, first: int) -> List[str]:
    address = first * bmap.memory_block_size
    zone = segment.zone or ""
    if segment.node is not None and segment.zone is not None:
        zone += f"/{segment.node}"
    device = f"{segment.device} {segment.device_mode}" if segment.device else ""
    return [str(first), f"{address:#x}", safe(zone), safe(device)]


def cells_per_row(width: int, label_width: int) -> int:
    """Cells that fit after the labels, in whole groups of eight (at least one group)."""
    avail = width - label_width
    groups = max((avail + 1) // (GROUP + 1), 1)
    return groups * GROUP


def map_lines(bmap: BlockMap, width: int) -> List[Text]:
    """The grid, one ``Text`` per output line (``iter_map_lines()``, held)."""
    return list(iter_map_lines(bmap, width))


def _only_unplugged(segment: Segment, lo: int, hi: int) -> bool:
    """Every cell of blocks ``lo..hi`` of the segment is an unplugged slot."""
    return all(r.kind is CellKind.UNPLUGGED for r in segment.runs if r.last >= lo and r.first <= hi)


def iter_map_lines(bmap: BlockMap, width: int) -> Iterator[Text]:
    """The grid, one ``Text`` per output line, made as it is read (a line's cells are made from
    the segment's runs only for that line). On a narrow console the ADDRESS, then the DEVICE
    and ZONE labels are left out so that at least one group of cells fits."""
    label_rows: List[List[str]] = []
    for s in bmap.segments:
        label_rows.append(_labels(bmap, s, s.first))
        label_rows.append(_labels(bmap, s, s.last))
    heads = ["BLOCK", "ADDRESS", "ZONE", "DEVICE"]
    widths = [max([len(h)] + [len(r[i]) for r in label_rows]) for i, h in enumerate(heads)]
    keep = [0, 1, 2, 3]
    for drop in (1, 3, 2):
        if sum(widths[i] + 2 for i in keep) + GROUP <= width:
            break
        keep.remove(drop)
    label_width = sum(widths[i] + 2 for i in keep)
    per_row = cells_per_row(width, label_width)

    def label(parts: List[str]) -> Text:
        cells = [parts[i].rjust(widths[i]) if i < 2 else parts[i].ljust(widths[i]) for i in keep]
        return Text("  ".join(cells) + "  ")

    head = label(heads) + Text("CELLS (one per block)")
    head.stylize("bold")
    yield head
    for s in bmap.segments:
        if s.gap:
            line = label([str(s.first), f"{s.first * bmap.memory_block_size:#x}", "", ""])
            line.append(f"no memory: {s.blocks} block{'s' if s.blocks != 1 else ''} "
                        f"({format_size(s.blocks * bmap.memory_block_size)})", style="dim")
            yield line
            continue
        # The segment's cells are blocks first..last; rows of per_row cells.
        starts = range(s.first, s.last + 1, per_row)
        i = 0
        while i < len(starts):
            # Three or more rows of nothing but unplugged slots (a big, mostly empty device
            # region) become one line.
            j = i
            while j < len(starts) and _only_unplugged(s, starts[j], min(starts[j] + per_row - 1, s.last)):
                j += 1
            if j - i >= COLLAPSE_ROWS:
                first, last = starts[i], min(starts[j - 1] + per_row - 1, s.last)
                line = label(_labels(bmap, s, first))
                slots = last - first + 1
                line.append(f"{GLYPH[CellKind.UNPLUGGED] * GROUP} x{slots // GROUP} "
                            f"({slots} blocks {first}-{last}, {format_size(slots * bmap.memory_block_size)}) "
                            "not plugged",
                            style=STYLE[CellKind.UNPLUGGED])
                yield line
                i = j
                continue
            lo = starts[i]
            i += 1
            line = label(_labels(bmap, s, lo))
            for n, cell in enumerate(s.cells_between(lo, min(lo + per_row - 1, s.last))):
                if n and n % GROUP == 0:
                    line.append(" ")
                glyph, style = cell_text(cell, bmap.is_diff)
                line.append(glyph, style=style)
            yield line


def confidence_counts(bmap: BlockMap) -> Dict[Tuple[Confidence, CellKind], int]:
    """Judged cells per confidence and outcome."""
    counts: Dict[Tuple[Confidence, CellKind], int] = {}
    for r in bmap.runs():
        if r.kind in JUDGED:
            counts[(r.confidence, r.kind)] = counts.get((r.confidence, r.kind), 0) + r.count
    return counts


def _confidence_lines(bmap: BlockMap) -> List[Text]:
    """How sure the judged cells are: blocks and memory per confidence, split by outcome."""
    size = bmap.memory_block_size
    counts = confidence_counts(bmap)
    lines = [Text("Confidence of the judged cells:", style="bold")]
    for level in Confidence:
        n = sum(counts.get((level, k), 0) for k in JUDGED)
        offlines = counts.get((level, CellKind.OFFLINES), 0)
        line = Text("  ")
        # the unknown cells' reverse video, in a neutral colour (theirs is their outcome's): a
        # reverse without a colour shows nothing in the SVG and HTML exports
        glyph, style = (UNKNOWN_GLYPH, "bold reverse bright_black") if level is Confidence.UNKNOWN else (
            GLYPH[CellKind.OFFLINES], STYLE[CellKind.OFFLINES] + (" underline" if level is Confidence.LIKELY else ""))
        line.append(glyph, style=style)
        line.append(f"  {CONFIDENCE_LABEL[level]:<36} {n:>6}"
                    + (f"  {format_size(n * size)}, {format_size(offlines * size)} offlinable" if n else ""))
        lines.append(line)
    return lines


def legend_lines(bmap: BlockMap) -> List[Text]:
    """One line per cell kind (and, for a diff, per kind of change), with its count, and the
    judged cells per confidence."""
    size = bmap.memory_block_size
    lines: List[Text] = [Text("Legend:", style="bold")]
    for kind in CellKind:
        n = bmap.counts.get(kind, 0)
        line = Text("  ")
        line.append(GLYPH[kind], style=("dim " if bmap.is_diff else "") + STYLE[kind])
        line.append(f"  {LABEL[kind]:<36} {n:>6}" + (f"  {format_size(n * size)}" if n else ""))
        lines.append(line)
    lines += _confidence_lines(bmap)
    if bmap.is_diff:
        left, right = bmap.semantics
        names = {Change.LEFT_ONLY: f"offlines only under {left}", Change.RIGHT_ONLY: f"offlines only under {right}",
                 Change.OTHER: "verdict differs otherwise"}
        lines.append(Text(f"Differences ({left} -> {right}; dimmed cells: the same verdict under both):",
                          style="bold"))
        for change in (Change.LEFT_ONLY, Change.RIGHT_ONLY, Change.OTHER):
            n = bmap.changes.get(change, 0)
            line = Text("  ")
            line.append(CHANGE_GLYPH[change], style=CHANGE_STYLE[change])
            line.append(f"  {names[change]:<36} {n:>6}")
            lines.append(line)
    return lines


def title_lines(bmap: BlockMap) -> List[Text]:
    judged = sum(r.count for r in bmap.runs() if r.kind in (CellKind.OFFLINES, CellKind.FAILS, CellKind.HANGS))
    what = f"semantics {bmap.semantics[0]}" if not bmap.is_diff else f"{bmap.semantics[0]} vs {bmap.semantics[1]}"
    return [Text.assemble((safe(bmap.machine), "bold"), f" ({safe(bmap.source)}): {safe(what)}, "
                          f"{format_size(bmap.memory_block_size)} memory blocks, {judged} judged")]


def _finished(lines: Iterator[Text]) -> Iterator[Text]:
    for t in lines:
        t.no_wrap = True
        t.overflow = "ignore"
        yield t


def map_texts(bmap: BlockMap, width: int) -> Iterator[Text]:
    """Title, grid and legend, one ``Text`` per line, made as they are read."""
    yield from _finished(iter(title_lines(bmap) + [Text("")]))
    yield from _finished(iter_map_lines(bmap, width))
    yield from _finished(iter([Text(""), *legend_lines(bmap)]))


class MapRenderable:
    """Title, grid and legend as one renderable, its lines made as they are rendered (again on
    every render): nothing per block is held but what the console itself keeps."""

    def __init__(self, bmap: BlockMap, width: int) -> None:
        self.bmap, self.width = bmap, width

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from map_texts(self.bmap, self.width)


def map_renderable(bmap: BlockMap, width: int) -> MapRenderable:
    """Title, grid and legend as one renderable (printed to stdout and to SVG/HTML alike)."""
    return MapRenderable(bmap, width)


def print_map(console: Console, bmap: BlockMap) -> None:
    """The map at the console's width; lines are never cropped or wrapped by memplan. Printed a
    line at a time: what is held does not grow with the number of blocks."""
    for line in map_texts(bmap, console.width):
        console.print(line, soft_wrap=True)
