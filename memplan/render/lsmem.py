"""lsmem-compatible tables: column definitions -> rows -> merged rows -> rich table or raw text.

Any command that prints one row per memory block (``simulate``, ``diff-semantics``, later
``plan`` and ``unplug``) describes its columns once and gets util-linux ``lsmem``'s table
controls for free: ``-o/--output`` (``+COL`` adds to the defaults), ``--output-all``,
``--bytes``, ``-S/--split`` (or ``none``), ``-a/--all``, ``-n/--noheadings`` and ``-r/--raw``.

API
---
``Column(name, get, merge=Merge.SPLIT, ...)``
    One column: ``name`` is both the header and what ``-o`` accepts (case-insensitive, plus
    ``aliases``); ``get(item)`` returns the raw value for one item (one block); ``merge``
    says what happens when contiguous items merge into one row:

    * ``Merge.KEY`` -- the block number (an ``int``); merged rows show ``N-M``. Items merge
      only when their keys are consecutive (lsmem: ``curr->index + curr->count == index``).
    * ``Merge.RANGE`` -- an inclusive ``(start, end)`` byte range printed as lsmem's
      ``0x%016x-0x%016x``; merged rows cover first start to last end.
    * ``Merge.SUM`` -- numbers added up (page counts; with ``size=True`` byte sizes, printed
      like lsmem ``128M``/``2.9G`` unless ``--bytes``).
    * ``Merge.SPLIT`` -- a value; rows merge only where every *split* column is equal. A
      merged row shows the first item's value of a non-split column (as lsmem does).

    ``fmt(value)`` turns a raw value into text (default: ``str``, ``None`` -> ``""``),
    ``style(value)`` gives a rich style, ``justify``/``wrap`` lay the column out.

``ColumnSet(columns, default, key)``
    Everything a command offers: ``select(options)`` resolves ``-o``/``--output-all`` into the
    shown columns, ``splits(options, shown)`` resolves ``--split`` (default: the shown
    ``SPLIT`` columns, like lsmem). Unknown names are ``UsageError``s with "did you mean".

``TableOptions``
    The parsed controls (``memplan.cli.columns.table_options`` adds the click options and
    builds one).

``merged_rows(column_set, items, options) -> list[Row]``
    Items in block order -> rows (one per item with ``--all``).

``rich_table(columns, rows, options) -> Table`` / ``raw_lines(columns, rows, options)``
    The aligned table, or libsmartcols' raw format: one line per row, cells separated by one
    space, blanks, backslashes and non-printable bytes escaped as ``\\xNN``.

``print_table(console, column_set, items, options)``
    All of the above.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Generic, List, Optional, Sequence, Tuple, TypeVar

from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from memplan.core.errors import UsageError, did_you_mean
from memplan.core.units import format_size

T = TypeVar("T")


class Merge(str, Enum):
    KEY = "key"
    RANGE = "range"
    SUM = "sum"
    SPLIT = "split"


def _default_fmt(value: Any) -> str:
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Column(Generic[T]):
    name: str
    get: Callable[[T], Any]
    merge: Merge = Merge.SPLIT
    help: str = ""
    justify: JustifyMethod = "left"
    size: bool = False
    fmt: Callable[[Any], str] = _default_fmt
    style: Optional[Callable[[Any], Optional[str]]] = None
    wrap: bool = False
    aliases: Tuple[str, ...] = ()

    def text(self, value: Any, in_bytes: bool) -> str:
        """The cell text of a (merged) raw value."""
        if self.merge is Merge.KEY:
            first, last = value
            return str(first) if first == last else f"{first}-{last}"
        if self.merge is Merge.RANGE:
            return f"0x{value[0]:016x}-0x{value[1]:016x}"
        if self.size:
            return str(value) if in_bytes else format_size(value)
        return self.fmt(value)


@dataclass(frozen=True)
class TableOptions:
    """``-o``, ``--output-all``, ``--bytes``, ``--split``, ``--all``, ``--noheadings``, ``--raw``."""

    output: Optional[str] = None
    output_all: bool = False
    in_bytes: bool = False
    split: Optional[str] = None
    all_rows: bool = False
    noheadings: bool = False
    raw: bool = False


@dataclass(frozen=True)
class ColumnSet(Generic[T]):
    columns: Tuple[Column[T], ...]
    default: Tuple[str, ...]
    #: the ``Merge.KEY`` column that decides adjacency (``None``: rows never merge)
    key: Optional[str] = "BLOCK"

    def names(self) -> List[str]:
        return [c.name for c in self.columns]

    def lookup(self, name: str, option: str = "--output") -> Column[T]:
        wanted = name.strip().upper()
        for c in self.columns:
            if wanted == c.name.upper() or wanted in (a.upper() for a in c.aliases):
                return c
        hint = did_you_mean(wanted, self.names())
        raise UsageError(f"{option}: unknown column {name.strip()!r} (columns: {', '.join(self.names())})", hint=hint)

    def select(self, options: TableOptions) -> Tuple[Column[T], ...]:
        """The shown columns: the defaults, ``-o COL,...``, ``-o +COL,...`` or ``--output-all``."""
        if options.output_all:
            return self.columns
        names: List[str] = list(self.default)
        spec = options.output
        if spec:
            spec = spec.strip()
            if spec.startswith("+"):
                spec = spec[1:]
            else:
                names = []
            for part in spec.split(","):
                if not part.strip():
                    raise UsageError(f"--output: empty column name in {options.output!r}")
                names.append(self.lookup(part).name)
        shown: List[Column[T]] = []
        for n in names:
            column = self.lookup(n)
            if column not in shown:
                shown.append(column)
        return tuple(shown)

    def splits(self, options: TableOptions, shown: Sequence[Column[T]]) -> Tuple[Column[T], ...]:
        """Columns whose values keep contiguous items apart (``--split``; default: the shown
        ``SPLIT`` columns; ``none``: only adjacency)."""
        if options.split is None:
            return tuple(c for c in shown if c.merge is Merge.SPLIT)
        if options.split.strip().lower() == "none":
            return ()
        out: List[Column[T]] = []
        for part in options.split.split(","):
            column = self.lookup(part, "--split")
            if column.merge is not Merge.SPLIT:
                splittable = [c.name for c in self.columns if c.merge is Merge.SPLIT]
                raise UsageError(f"--split: column {column.name} is merged, not compared (split columns: "
                                 f"{', '.join(splittable)})")
            out.append(column)
        return tuple(out)


@dataclass
class Row:
    """One output row: raw (merged) values per shown column and how many items it covers."""

    values: List[Any]
    count: int = 1
    split_values: Tuple[Any, ...] = field(default=())


def merged_rows(column_set: ColumnSet[T], items: Sequence[T], options: TableOptions,
                shown: Optional[Sequence[Column[T]]] = None) -> List[Row]:
    """One row per run of contiguous items whose split columns are equal (lsmem's merging)."""
    shown = tuple(shown) if shown is not None else column_set.select(options)
    splits = column_set.splits(options, shown)
    key = column_set.lookup(column_set.key) if column_set.key else None
    rows: List[Row] = []
    last_key: Optional[int] = None
    for item in items:
        split_values = tuple(c.get(item) for c in splits)
        this_key = key.get(item) if key is not None else None
        mergeable = (rows and not options.all_rows and key is not None and last_key is not None
                     and this_key == last_key + 1 and rows[-1].split_values == split_values)
        if mergeable:
            row = rows[-1]
            for i, c in enumerate(shown):
                value = c.get(item)
                if c.merge is Merge.KEY:
                    row.values[i] = (row.values[i][0], value)
                elif c.merge is Merge.RANGE:
                    row.values[i] = (row.values[i][0], value[1])
                elif c.merge is Merge.SUM:
                    row.values[i] = row.values[i] + value
            row.count += 1
        else:
            values: List[Any] = []
            for c in shown:
                value = c.get(item)
                values.append((value, value) if c.merge is Merge.KEY else value)
            rows.append(Row(values, 1, split_values))
        last_key = this_key
    return rows


def rich_table(shown: Sequence[Column[T]], rows: Sequence[Row], options: TableOptions) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False, show_header=not options.noheadings)
    for c in shown:
        table.add_column(c.name, justify=c.justify, no_wrap=not c.wrap)
    for row in rows:
        cells = []
        for c, value in zip(shown, row.values):
            style = c.style(value) if c.style is not None and c.merge is Merge.SPLIT else None
            cells.append(Text(c.text(value, options.in_bytes), style=style or ""))
        table.add_row(*cells)
    return table


def raw_escape(text: str) -> str:
    """libsmartcols' ``fputs_nonblank()``: blanks, ``\\`` and non-printable bytes as ``\\xNN``."""
    out: List[str] = []
    for byte in text.encode("utf-8"):
        if byte in (0x20, 0x09, 0x5C) or not 0x21 <= byte <= 0x7E:
            out.append(f"\\x{byte:02x}")
        else:
            out.append(chr(byte))
    return "".join(out)


def raw_lines(shown: Sequence[Column[T]], rows: Sequence[Row], options: TableOptions) -> List[str]:
    lines: List[str] = []
    if not options.noheadings:
        lines.append(" ".join(raw_escape(c.name) for c in shown))
    for row in rows:
        lines.append(" ".join(raw_escape(c.text(v, options.in_bytes)) for c, v in zip(shown, row.values)))
    return lines


def print_table(console: Console, column_set: ColumnSet[T], items: Sequence[T], options: TableOptions) -> None:
    """Select, merge and print (raw lines go out verbatim, without markup or highlighting)."""
    shown = column_set.select(options)
    rows = merged_rows(column_set, items, options, shown)
    if options.raw:
        for line in raw_lines(shown, rows, options):
            console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)
        return
    console.print(rich_table(shown, rows, options))
