"""Tables at their natural width: every column as wide as its widest cell, nothing truncated,
wrapped or dropped, whatever the terminal's width (the terminal may wrap a long line; memplan
never does), no trailing spaces, ``-`` in every empty cell, colour only where rich emits it.

The layout is rich's ``Table(box=None, pad_edge=False)`` -- columns separated by two spaces,
headers in bold, each column left- or right-justified -- drawn line by line as rich ``Text``
and printed through the rich ``Console`` (which owns colour, ``NO_COLOR`` and terminal
detection). tests/test_render_grid.py checks byte for byte that the lines equal what rich's
``Table`` renders for the same cells at an unbounded width, with its padding stripped; rich's
own renderer is not used for the rows because it spends about 2 ms per 13-cell row measuring
and wrapping cells that never wrap here.

Streaming: a column's width depends on every row, so nothing can be printed before the last
row has been added. A ``Grid`` therefore keeps only the widths in memory and the rows as text:
up to ``SPILL_ROWS`` rows in a list, beyond that in an anonymous temporary file (deleted when
the grid is printed or garbage-collected). Memory stays flat however many rows a table has
(a 64 TiB machine listed with ``--all`` has 524,288); callers that merge rows (the lsmem-style
listings) add far fewer. Cells are escaped with ``memplan.render.escape.safe`` on the way in,
so no control character from an input reaches the terminal and none can break the spill file's
one-line-per-row format.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import IO, Collection, Dict, Iterator, List, Literal, NamedTuple, Optional, Sequence, Tuple, Union

from rich.cells import cell_len
from rich.console import Console
from rich.segment import Segment, Segments
from rich.style import Style
from rich.text import Text

from memplan.render.console import print_line
from memplan.render.escape import safe

Justify = Literal["left", "right"]

#: Rows kept in memory before the rest go to a temporary file.
SPILL_ROWS = 4096
#: Lines printed per ``Console.print`` call.
BATCH_LINES = 512
#: Between two columns (rich's default cell padding of one space on each side).
SEPARATOR = "  "
HEADER_STYLE = "bold"

_FIELD, _STYLES, _PIECE, _EMPTY = "\x1f", "\x1e", "\x1d", "-"


@dataclass(frozen=True)
class GridColumn:
    header: str
    justify: Justify = "left"


class Styled(NamedTuple):
    """A cell with a rich style (``"green"``, ``"bold red"``)."""

    text: str
    style: str


#: a cell: text, styled text, or styled pieces side by side (a bar of several colours)
Cell = Union[str, Styled, Tuple[Styled, ...]]
_Row = Tuple[Tuple[str, ...], Optional[Tuple[str, ...]]]


def _width(text: str) -> int:
    return len(text) if text.isascii() else cell_len(text)


_HEADER = Style.parse(HEADER_STYLE)
_NEWLINE = Segment.line()
_STYLE_CACHE: Dict[str, Style] = {}


def _style(name: str) -> Style:
    style = _STYLE_CACHE.get(name)
    if style is None:
        style = _STYLE_CACHE[name] = Style.parse(name)
    return style


class Grid:
    """Rows of cells, printed once all are known (see the module docstring)."""

    def __init__(self, columns: Sequence[GridColumn], headings: bool = True, title: Optional[str] = None,
                 spill_rows: Optional[int] = None) -> None:
        self.columns = tuple(columns)
        self.headings = headings
        self.title = title
        self.widths = [_width(safe(c.header)) if headings else 0 for c in self.columns]
        self.row_count = 0
        self._rows: List[_Row] = []
        self._spill: Optional[IO[str]] = None
        self._spill_rows = SPILL_ROWS if spill_rows is None else spill_rows

    def add_row(self, cells: Sequence[Cell]) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        texts: List[str] = []
        styles: List[str] = []
        for i, cell in enumerate(cells):
            if isinstance(cell, str):
                text, style = safe(cell), ""
            elif isinstance(cell, Styled):
                text, style = safe(cell.text), cell.style
            else:  # pieces: the separator cannot occur in escaped text
                text, style = _PIECE.join(safe(p.text) for p in cell), _PIECE.join(p.style for p in cell)
            if not text.replace(_PIECE, ""):
                text, style = _EMPTY, ""
            texts.append(text)
            styles.append(style)
            width = _width(text.replace(_PIECE, ""))
            if width > self.widths[i]:
                self.widths[i] = width
        row: _Row = (tuple(texts), tuple(styles) if any(styles) else None)
        self.row_count += 1
        if self._spill is None and len(self._rows) < self._spill_rows:
            self._rows.append(row)
            return
        if self._spill is None:
            self._spill = tempfile.TemporaryFile("w+", encoding="utf-8", prefix="memplan-table-")
            self._write(self._rows)
            self._rows = []
        self._write([row])

    def _write(self, rows: Sequence[_Row]) -> None:
        assert self._spill is not None
        self._spill.writelines(_FIELD.join(texts) + (_STYLES + _FIELD.join(styles) if styles else "") + "\n"
                               for texts, styles in rows)

    def _stored(self) -> Iterator[_Row]:
        if self._spill is None:
            yield from self._rows
            return
        self._spill.seek(0)
        for line in self._spill:
            texts, _, styles = line.rstrip("\n").partition(_STYLES)
            yield tuple(texts.split(_FIELD)), tuple(styles.split(_FIELD)) if styles else None

    def lines(self, hide: Collection[int] = ()) -> Iterator[List[Segment]]:
        """The header (unless ``headings`` is off) and one line per row, as segments, without
        the columns whose indexes are in ``hide``."""
        shown = [i for i in range(len(self.columns)) if i not in hide]
        if self.headings and shown:
            yield self._line(shown, tuple(c.header for c in self.columns), None, _HEADER)
        for texts, styles in self._stored():
            yield self._line(shown, texts, styles, None)

    def plain_lines(self, hide: Collection[int] = ()) -> List[str]:
        """The lines as text without styles (tests, and whoever wants the bytes)."""
        return ["".join(s.text for s in line) for line in self.lines(hide)]

    def _line(self, shown: Sequence[int], texts: Sequence[str], styles: Optional[Sequence[str]],
              base: Optional[Style]) -> List[Segment]:
        out: List[Segment] = []
        plain: List[str] = []  # unstyled text not yet in a segment
        last = shown[-1]
        for i in shown:
            right = self.columns[i].justify == "right"
            if base is None and not (styles and styles[i]) and _PIECE not in texts[i]:
                # the usual cell, plain text (the loop below, without its splits): a fleet's
                # parent prints one row per host
                text = texts[i].rstrip(" ")
                pad = " " * (self.widths[i] - _width(text))
                plain.append(pad + text if right else text)
                if i != last:
                    plain.append(("" if right else pad) + SEPARATOR)
                continue
            # rich measures a cell with its trailing blanks but justifies it without them
            pieces = texts[i].rstrip(" ").split(_PIECE)
            piece_styles = styles[i].split(_PIECE) if styles else [""] * len(pieces)
            pad = " " * (self.widths[i] - sum(_width(p) for p in pieces))
            if right:
                plain.append(pad)
            for text, name in zip(pieces, piece_styles):
                style = _style(name) if name else base
                if style is None:
                    plain.append(text)
                    continue
                if plain:
                    out.append(Segment("".join(plain)))
                    plain = []
                out.append(Segment(text, style))
            if i != last:
                plain.append(("" if right else pad) + SEPARATOR)
        if plain:
            out.append(Segment("".join(plain)))
        while out and not out[-1].text.rstrip(" "):
            out.pop()
        if out:
            out[-1] = Segment(out[-1].text.rstrip(" "), out[-1].style)
        return out

    def print(self, console: Console, hide: Collection[int] = ()) -> None:
        """Print the title, header and rows (and drop the rows)."""
        if self.title is not None:
            print_line(console, Text(safe(self.title), HEADER_STYLE))
        batch: List[Segment] = []
        lines = 0
        for line in self.lines(hide):
            batch.extend(line)
            batch.append(_NEWLINE)
            lines += 1
            if lines == BATCH_LINES:
                console.print(Segments(batch), end="", soft_wrap=True)
                batch, lines = [], 0
        if batch:
            console.print(Segments(batch), end="", soft_wrap=True)
        self.close()

    def close(self) -> None:
        self._rows = []
        if self._spill is not None:
            self._spill.close()
            self._spill = None


def grid_of(columns: Sequence[Tuple[str, Justify]], title: Optional[str] = None, headings: bool = True) -> Grid:
    """A grid with ``columns`` given as ``(header, justify)`` pairs."""
    return Grid([GridColumn(name, justify) for name, justify in columns], headings=headings, title=title)


def print_grid(console: Console, columns: Sequence[Tuple[str, Justify]], rows: Sequence[Sequence[Cell]],
               title: Optional[str] = None, headings: bool = True) -> None:
    """A small table in one call: ``columns`` as ``(header, justify)`` pairs."""
    grid = grid_of(columns, title, headings)
    for row in rows:
        grid.add_row(row)
    grid.print(console)
