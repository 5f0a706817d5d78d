"""lsmem-compatible listings: column definitions -> streamed, merged rows -> table, raw, pairs or JSON.

Any command that prints one row per memory block (``simulate``, ``snapshot``'s block listing,
``diff-semantics``) describes its columns once and gets util-linux ``lsmem``'s controls, with
lsmem's semantics (sys-utils/lsmem.c, libsmartcols):

* ``-o/--output COLS`` (``+COLS`` adds to the defaults; a column may be named twice, as in
  lsmem), ``--output-all``; unknown names are errors with a suggestion;
* ``-S/--split COLS`` or ``none``: contiguous blocks merge into one row unless a split column
  differs; by default the split columns are the printed ones (lsmem's "follow output
  columns"); columns that cannot split (BLOCK, RANGE, SIZE, sums) are ignored, as lsmem
  ignores them; ``-a/--all`` (one row per block) excludes ``--split``;
* ``-b/--bytes``, ``-n/--noheadings``, and the formats ``-r/--raw``, ``-P/--pairs``,
  ``-J/--json`` (exclusive), escaped exactly as libsmartcols escapes them
  (``memplan.render.escape``); ``--summary[=never|always|only]``.

Rows stream: items arrive in block order and only the row being merged is held; a closed row
goes straight to its output (raw, pairs and JSON print it at once; the aligned table keeps it
as text in a ``memplan.render.grid.Grid``, which spills to a temporary file beyond a few
thousand rows). Memory does not grow with the number of blocks.

API
---
``Column(name, get, merge=Merge.SPLIT, ...)``: ``get(item)`` gives the raw value, ``merge`` says
what contiguous items do (``KEY``: the block number, shown ``N-M``; ``RANGE``: an inclusive
``(start, end)`` printed ``0x%016x-0x%016x``; ``SUM``: added up (``None`` is an unknown
value: its sum is unknown, and a row never merges unknown values with known ones), ``size=True``
prints lsmem sizes; ``SPLIT``: a value that keeps rows apart, the first item's value shown otherwise).
``fmt`` turns a value into text (``""`` is an empty cell: ``-`` in tables, ``null`` in JSON),
``style`` gives it a colour, ``json`` its JSON type (lsmem's: NUMBER, BOOLEAN, STRING),
``split_key`` what is compared when splitting.

``ColumnSet(columns, default, key="BLOCK", optional=..., unavailable=...)``: ``optional`` maps a
default column to a predicate: the aligned table shows it only when some item satisfies it
(``CONFIDENCE`` only when a verdict is not certain); ``unavailable`` columns are dropped
wherever they are asked for (lsmem's CONFIGURED without ``/sys/firmware/memory``).

``print_listing(console, column_set, items, options)``: all of the above. The options
(``TableOptions``, ``Format``, ``SummaryWhen``, ``check_format_options()``) live in
``memplan.render.table_options``, which a command reads before it knows whether it lists
anything (a JSON document imports neither this module nor rich).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    FrozenSet,
    Generic,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    TypeVar,
)

from memplan.core.errors import UsageError, did_you_mean
from memplan.core.units import format_size
from memplan.render.escape import json_string, nonblank, quoted
from memplan.render.table_options import Format as Format
from memplan.render.table_options import SummaryWhen as SummaryWhen
from memplan.render.table_options import TableOptions as TableOptions
from memplan.render.table_options import check_format_options as check_format_options

if TYPE_CHECKING:  # rich and the grid are imported by the writers that print (JSON output needs neither)
    from rich.console import Console
    from rich.segment import Segment

    from memplan.render.grid import Grid, Justify

T = TypeVar("T")


class Merge(str, Enum):
    KEY = "key"
    RANGE = "range"
    SUM = "sum"
    SPLIT = "split"


class JsonType(str, Enum):
    """libsmartcols' JSON types (``scols_column_set_json_type()``)."""

    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"


def _default_fmt(value: Any) -> str:
    return "" if value is None else str(getattr(value, "value", value))


@dataclass(frozen=True)
class Column(Generic[T]):
    name: str
    get: Callable[[T], Any]
    merge: Merge = Merge.SPLIT
    help: str = ""
    justify: Justify = "left"
    size: bool = False
    fmt: Callable[[Any], str] = _default_fmt
    style: Optional[Callable[[Any], Optional[str]]] = None
    aliases: Tuple[str, ...] = ()
    json: JsonType = JsonType.STRING
    #: what ``--split`` compares (default: the value itself)
    split_key: Optional[Callable[[Any], Any]] = None

    def text(self, value: Any, in_bytes: bool) -> str:
        """The cell text of a (merged) raw value (``""``: an empty cell)."""
        if self.merge is Merge.KEY:
            first, last = value
            return str(first) if first == last else f"{first}-{last}"
        if self.merge is Merge.RANGE:
            return f"0x{value[0]:016x}-0x{value[1]:016x}"
        if self.size:
            if value is None:
                return ""
            return str(value) if in_bytes else format_size(value)
        return self.fmt(value)

    def json_type(self, in_bytes: bool) -> JsonType:
        """lsmem: SIZE is a number only with ``--bytes``."""
        return JsonType.STRING if self.size and not in_bytes else self.json

    def splits(self) -> bool:
        return self.merge is Merge.SPLIT


@dataclass(frozen=True)
class Selection(Generic[T]):
    """The columns to print; ``conditional`` ones (indexes) only if some item satisfies their
    predicate (aligned tables decide at the end; other formats show them)."""

    shown: Tuple[Column[T], ...]
    conditional: Dict[int, Callable[[T], bool]] = field(default_factory=dict)


@dataclass(frozen=True)
class ColumnSet(Generic[T]):
    columns: Tuple[Column[T], ...]
    default: Tuple[str, ...]
    #: the ``Merge.KEY`` column that decides adjacency (``None``: rows never merge)
    key: Optional[str] = "BLOCK"
    #: default columns printed in an aligned table only when some item satisfies the predicate
    optional: Mapping[str, Callable[[T], bool]] = field(default_factory=dict)
    #: columns this input cannot fill: dropped wherever they are asked for (as lsmem does)
    unavailable: FrozenSet[str] = frozenset()

    def names(self) -> List[str]:
        return [c.name for c in self.columns]

    def lookup(self, name: str, option: str = "--output") -> Column[T]:
        wanted = name.strip().upper()
        for c in self.columns:
            if wanted == c.name.upper() or wanted in (a.upper() for a in c.aliases):
                return c
        hint = did_you_mean(wanted, self.names())
        raise UsageError(f"{option}: unknown column {name.strip()!r} (columns: {', '.join(self.names())})", hint=hint)

    def _parse(self, spec: str, option: str) -> List[Column[T]]:
        out: List[Column[T]] = []
        for part in spec.split(","):
            if not part.strip():
                raise UsageError(f"{option}: empty column name in {spec!r}")
            out.append(self.lookup(part, option))
        return out

    def select(self, options: TableOptions) -> Selection[T]:
        """The shown columns: the defaults, ``-o COL,...``, ``-o +COL,...`` or ``--output-all``."""
        if options.output_all:
            return Selection(tuple(c for c in self.columns if c.name not in self.unavailable))
        spec = (options.output or "").strip()
        names: List[str] = [] if spec and not spec.startswith("+") else list(self.default)
        if spec:
            names += [c.name for c in self._parse(spec.lstrip("+"), "--output")]
        limit = 2 * len(self.columns)
        if len(names) > limit:  # lsmem's err_columns_index()
            raise UsageError(f"--output: too many columns specified, the limit is {limit} columns")
        shown = [self.lookup(n) for n in names if n not in self.unavailable]
        defaults = len(self.default) if not spec or spec.startswith("+") else 0
        conditional = {i: self.optional[c.name] for i, c in enumerate(shown)
                       if i < defaults and c.name in self.optional}
        return Selection(tuple(shown), conditional)

    def splits(self, options: TableOptions, shown: Sequence[Column[T]]) -> Tuple[Column[T], ...]:
        """Columns whose values keep contiguous items apart: ``--split`` (``none``: only
        adjacency; columns that cannot split are ignored, as lsmem ignores them), by default
        the shown columns that can."""
        if options.split is None:
            chosen: Sequence[Column[T]] = shown
        elif options.split.strip().lower() == "none":
            chosen = ()
        else:
            chosen = self._parse(options.split, "--split")
        out: List[Column[T]] = []
        for c in chosen:
            if c.splits() and c not in out:
                out.append(c)
        return tuple(out)

    def check(self, options: TableOptions) -> None:
        """Resolve ``-o`` and ``--split`` once, so a bad column fails before any work."""
        self.splits(options, self.select(options).shown)


@dataclass
class Row:
    """One output row: raw (merged) values per shown column and how many items it covers."""

    values: List[Any]
    count: int = 1


class _Merger(Generic[T]):
    """lsmem's ``is_mergeable()``, one item at a time (each column's value is read once)."""

    def __init__(self, column_set: ColumnSet[T], options: TableOptions, shown: Sequence[Column[T]]) -> None:
        self.shown = tuple(shown)
        splits = column_set.splits(options, shown)
        #: per split column: its index among the shown ones (-1: not shown), and its key function
        self.splits = tuple((self.shown.index(c) if c in self.shown else -1, c) for c in splits)
        self.merging = tuple((i, c.merge) for i, c in enumerate(self.shown) if c.merge is not Merge.SPLIT)
        self.key = column_set.lookup(column_set.key) if column_set.key else None
        self.all_rows = options.all_rows
        self.row: Optional[Row] = None
        self.split_values: Tuple[Any, ...] = ()
        self.last_key: Optional[int] = None

    def feed(self, item: T) -> Optional[Row]:
        """Add an item; returns the row it closed, if any."""
        values = [c.get(item) for c in self.shown]
        split_values = tuple(c.split_key(v) if c.split_key else v
                             for v, c in ((values[i] if i >= 0 else c.get(item), c) for i, c in self.splits))
        this_key = self.key.get(item) if self.key is not None else None
        row = self.row
        if (row is not None and not self.all_rows and this_key is not None and self.last_key is not None
                and this_key == self.last_key + 1 and split_values == self.split_values
                and self._sums_agree(row, values)):
            for i, merge in self.merging:
                if merge is Merge.KEY:
                    row.values[i] = (row.values[i][0], values[i])
                elif merge is Merge.RANGE:
                    row.values[i] = (row.values[i][0], values[i][1])
                elif values[i] is not None:
                    row.values[i] = row.values[i] + values[i]
            row.count += 1
            self.last_key = this_key
            return None
        for i, merge in self.merging:
            if merge is Merge.KEY:
                values[i] = (values[i], values[i])
        self.row, self.split_values, self.last_key = Row(values), split_values, this_key
        return row

    def _sums_agree(self, row: Row, values: List[Any]) -> bool:
        """A sum is unknown (``None``) when its items' values are: a row never adds known values
        to unknown ones (the total would pass a guess off as a count)."""
        return all((row.values[i] is None) == (values[i] is None) for i, merge in self.merging if merge is Merge.SUM)

    def close(self) -> Optional[Row]:
        row, self.row = self.row, None
        return row


def merged_rows(column_set: ColumnSet[T], items: Iterable[T], options: TableOptions,
                shown: Optional[Sequence[Column[T]]] = None) -> Iterator[Row]:
    """One row per run of contiguous items whose split columns are equal (lsmem's merging),
    yielded as soon as the run ends."""
    merger = _Merger(column_set, options, shown if shown is not None else column_set.select(options).shown)
    for item in items:
        row = merger.feed(item)
        if row is not None:
            yield row
    row = merger.close()
    if row is not None:
        yield row


# ---- output formats ----------------------------------------------------------------------


class _Lines:
    """Plain lines printed in batches (raw, pairs, JSON: no colour, no width)."""

    BATCH = 512

    def __init__(self, console: Console) -> None:
        from rich.segment import Segment

        self.console = console
        self.batch: List[Segment] = []
        self._segment = Segment

    def add(self, text: str) -> None:
        self.batch.append(self._segment(text + "\n"))
        if len(self.batch) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            from rich.segment import Segments

            self.console.print(Segments(self.batch), end="", soft_wrap=True)
            self.batch = []


def _json_value(column: Column[Any], text: str, in_bytes: bool) -> str:
    kind = column.json_type(in_bytes)
    if kind is JsonType.BOOLEAN:  # libsmartcols: "", "0", "N..." and "n..." are false
        return "false" if not text or text[0] in "0Nn" else "true"
    if not text:
        return "null"
    return text if kind is JsonType.NUMBER else json_string(text)


class ListingWriter(Generic[T]):
    """Rows in one of the four formats; ``finish()`` ends the output."""

    def __init__(self, console: Console, selection: Selection[T], options: TableOptions,
                 name: str = "memory") -> None:
        self.console, self.options, self.name = console, options, name
        self.shown = selection.shown
        self.conditional = dict(selection.conditional) if options.format is Format.TABLE else {}
        self.wanted: Set[int] = set()
        self.lines = _Lines(console)
        self.rows = 0
        self.grid: Optional[Grid] = None
        fmt = options.format
        if fmt is Format.TABLE:
            from memplan.render.grid import Grid, GridColumn, Styled

            self._styled = Styled
            self.grid = Grid([GridColumn(c.name, c.justify) for c in self.shown], headings=not options.noheadings)
        elif fmt is Format.RAW and not options.noheadings:
            self.lines.add(" ".join(nonblank(c.name) for c in self.shown))
        elif fmt is Format.JSON:
            self.lines.add("{")

    def observe(self, item: T) -> None:
        """Let the conditional columns see every item (not only the first of a merged row)."""
        for i, wanted in self.conditional.items():
            if i not in self.wanted and wanted(item):
                self.wanted.add(i)

    def add(self, row: Row) -> None:
        in_bytes = self.options.in_bytes
        texts = [c.text(v, in_bytes) for c, v in zip(self.shown, row.values)]
        fmt = self.options.format
        if self.grid is not None:
            cells = []
            for c, v, text in zip(self.shown, row.values, texts):
                style = c.style(v) if c.style is not None and c.merge is Merge.SPLIT else None
                cells.append(self._styled(text, style) if style else text)
            self.grid.add_row(cells)
        elif fmt is Format.RAW:
            self.lines.add(" ".join(nonblank(t) if t else "-" for t in texts))
        elif fmt is Format.PAIRS:
            self.lines.add(" ".join(f"{c.name}={quoted(t)}" for c, t in zip(self.shown, texts)))
        else:
            pairs = ",\n".join(f"         {json_string(c.name.lower())}: {_json_value(c, t, in_bytes)}"
                               for c, t in zip(self.shown, texts))
            if not self.rows:
                self.lines.add(f"   {json_string(self.name.lower())}: [")
            self.lines.add(("      {" if not self.rows else "      },{") + "\n" + pairs)
        self.rows += 1

    def finish(self) -> None:
        if self.grid is not None:
            if self.grid.row_count:  # libsmartcols prints no header for a table without lines
                hide = [i for i in self.conditional if i not in self.wanted]
                self.grid.print(self.console, hide)
        elif self.options.format is Format.JSON:
            if self.rows:
                self.lines.add("      }")
                self.lines.add("   ]")
            else:
                self.lines.add(f"   {json_string(self.name.lower())}: []")
            self.lines.add("}")
        self.lines.flush()


def print_listing(console: Console, column_set: ColumnSet[T], items: Iterable[T], options: TableOptions,
                  observe: Optional[Callable[[T], None]] = None, name: str = "memory") -> None:
    """Select, merge and print the items; ``observe`` sees every item as it streams by
    (running totals for a summary). With ``--summary=only`` nothing is printed, but every
    item is still observed."""
    selection = column_set.select(options)
    if not options.want_table:
        for item in items:
            if observe is not None:
                observe(item)
        return
    writer = ListingWriter(console, selection, options, name)
    merger = _Merger(column_set, options, selection.shown)
    for item in items:
        if observe is not None:
            observe(item)
        writer.observe(item)
        row = merger.feed(item)
        if row is not None:
            writer.add(row)
    last = merger.close()
    if last is not None:
        writer.add(last)
    writer.finish()
