"""lsmem's listing controls as click options, shared by every command that lists memory blocks.

``-o/--output``, ``--output-all``, ``-a/--all``, ``-b/--bytes``, ``-n/--noheadings``,
``-r/--raw``, ``-P/--pairs``, ``-S/--split`` and ``--summary[=never|always|only]``, with
lsmem's meaning (``memplan.render.lsmem``); ``-J/--json`` is each command's own ``--json``:
alone it writes the command's JSON document, with a listing option (``-o``, ``--output-all``,
``-a``, ``-S``, ``-b``) the listing as ``lsmem -J`` prints it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import click

from memplan.cli.common import FuncT, SnapshotSource
from memplan.cli.names import SUMMARY_WHEN, ColumnsHelp
from memplan.core.errors import UsageError

if TYPE_CHECKING:  # numpy and rich: imported by the functions that use them (``--help`` needs neither)
    from memplan.render.block_facts import SysfsTree
    from memplan.render.lsmem import ColumnSet
    from memplan.render.table_options import TableOptions

_OPTIONS = ("output", "output_all", "in_bytes", "split", "all_rows", "noheadings", "raw", "pairs", "summary")
#: options that choose what the listing holds (with --json they ask for lsmem's JSON)
_LISTING = (("output", "--output"), ("output_all", "--output-all"), ("all_rows", "--all"), ("split", "--split"),
            ("in_bytes", "--bytes"))
#: options of the listing formats only (-n also drops the CSV header)
_TABLE_ONLY = (("raw", "--raw"), ("pairs", "--pairs"), ("summary", "--summary"))


class ListingCommand(click.Command):
    """A command with lsmem's ``--summary[=when]``: getopt's optional argument is attached
    with ``=`` only, so a bare ``--summary`` (lsmem: ``only``) never takes the next word
    (``memplan simulate --summary PROFILE``)."""

    def parse_args(self, ctx: click.Context, args: List[str]) -> List[str]:
        rewritten: List[str] = []
        for i, arg in enumerate(args):
            if arg == "--":
                rewritten.extend(args[i:])
                break
            rewritten.append("--summary=only" if arg == "--summary" else arg)
        return super().parse_args(ctx, rewritten)


def table_options(func: FuncT) -> FuncT:
    """lsmem's options (see the module docstring)."""
    decorators = [
        click.option("-o", "--output", "output", metavar="LIST", default=None,
                     help="Columns to print, comma-separated; +LIST adds to the defaults (lsmem -o +NODE)."),
        click.option("--output-all", "output_all", is_flag=True, help="Print every column."),
        click.option("-a", "--all", "all_rows", is_flag=True, help="One row per block (do not merge)."),
        click.option("-b", "--bytes", "in_bytes", is_flag=True, help="Print sizes in bytes instead of 128M / 2.9G."),
        click.option("-n", "--noheadings", "noheadings", is_flag=True, help="Do not print a header line."),
        click.option("-r", "--raw", "raw", is_flag=True,
                     help="Raw output: cells separated by one space, blanks and unsafe characters as \\xNN."),
        click.option("-P", "--pairs", "pairs", is_flag=True, help='Print KEY="value" pairs (lsmem -P).'),
        click.option("-S", "--split", "split", metavar="LIST", default=None,
                     help="Merge contiguous blocks only where these columns are equal (default: the printed "
                          "columns; 'none': every contiguous run; columns that cannot split are ignored)."),
        click.option("--summary", "summary", type=click.Choice(SUMMARY_WHEN), default=None,
                     metavar="[=WHEN]",
                     help="Print the summary: never, always or only (a bare --summary: only); "
                          "--raw, --json and --pairs print none."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def sysfs_tree(source: str) -> Optional[SysfsTree]:
    """The tree lsmem would read for a machine given as ``--sysroot DIR`` or ``--live``
    (``None`` for a profile)."""
    if not isinstance(source, SnapshotSource):
        return None
    from memplan.render.block_facts import SysfsTree

    return SysfsTree(str(source))


def columns_help(column_set: ColumnSet[Any]) -> ColumnsHelp:
    """What ``columns_epilog()`` shows of a column set (``memplan.cli.names`` holds it for each
    listing, so that ``--help`` imports no renderer)."""
    return ColumnsHelp(tuple((c.name, c.help) for c in column_set.columns), tuple(column_set.default),
                       tuple(n for n in column_set.default if n in column_set.optional))


def columns_epilog(columns: ColumnsHelp) -> str:
    """lsmem's "Available output columns" list for a command's ``--help``."""
    width = max(len(name) for name, _ in columns.columns)
    lines = [f"  {name:>{width}}  {text}" for name, text in columns.columns]
    default = [n for n in columns.default if n not in columns.optional]
    optional = [n for n in columns.default if n in columns.optional]
    shown = ",".join(default) + (f" (and {','.join(optional)} when needed)" if optional else "")
    return "\b\nAvailable output columns (default: " + shown + "):\n" + "\n".join(lines)


def _given(options: TableOptions, names: Sequence[tuple]) -> Optional[str]:
    for name, flag in names:
        if getattr(options, name):
            return str(flag)
    return None


def pop_table_options(kwargs: Dict[str, Any], as_json: bool = False) -> TableOptions:
    """Remove the table options from a command's keyword arguments and build ``TableOptions``;
    ``as_json`` with a listing option asks for lsmem's JSON (``listing_json()``)."""
    from memplan.render.table_options import SummaryWhen, TableOptions, check_format_options

    values = {name: kwargs.pop(name) for name in _OPTIONS}
    summary = values.pop("summary")
    options = TableOptions(**values, summary=SummaryWhen(summary) if summary else None)
    if as_json and _given(options, _LISTING):
        options = TableOptions(**{**values, "json": True}, summary=options.summary)
    check_format_options(options)
    return options


def listing_json(options: TableOptions) -> bool:
    """``--json`` asked for the listing (lsmem's JSON), not for the command's document."""
    return options.json


def used_table_options(options: TableOptions) -> Optional[str]:
    """The first table option given, as typed (for "does not apply with --json/--csv" errors)."""
    return _given(options, _LISTING + _TABLE_ONLY)


def reject_table_options(options: TableOptions, output: str, hint: Optional[str] = None) -> None:
    """``--csv`` (or the JSON document) with a listing option is a usage error."""
    used = used_table_options(options)
    if used:
        raise UsageError(f"{used} applies to the listing, not to {output}", hint=hint)


def listing_request(table: Dict[str, Any], as_json: bool,
                    column_set: Union[ColumnSet[Any], Callable[[], ColumnSet[Any]]],
                    **others: bool) -> Tuple[TableOptions, bool]:
    """The listing options of a command and whether ``--json`` asks for the command's document
    (rather than lsmem's JSON listing); ``others`` are the command's other output formats
    (``csv=True``). One format at most; a listing option with the document or another format
    is a usage error; bad column names fail here, before any work. ``column_set`` may be a
    function that returns it: it is called only for a listing (the document and the other
    formats take no column option, so there is nothing to check)."""
    options = pop_table_options(table, as_json=as_json)
    document = as_json and not options.json
    exclusive_formats(json=document, raw=options.raw, pairs=options.pairs, **others)
    chosen = "--json" if document else next((f"--{name.replace('_', '-')}" for name, on in others.items() if on),
                                            None)
    if chosen:
        reject_table_options(options, chosen, hint="-o with --json prints the listing as lsmem -J does")
    else:
        (column_set() if callable(column_set) else column_set).check(options)
    return options, document


def exclusive_formats(**formats: bool) -> None:
    """At most one of the output formats (``json=True, csv=False, raw=...``)."""
    chosen = [f"--{name}" for name, on in formats.items() if on]
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(chosen)} exclude each other", hint="pick one output format")
