"""lsmem's table controls as click options, shared by every command that prints block rows."""

from __future__ import annotations

from typing import Any, Dict, Optional

import click

from memplan.cli.common import FuncT
from memplan.core.errors import UsageError
from memplan.render.lsmem import ColumnSet, TableOptions

_OPTIONS = ("output", "output_all", "in_bytes", "split", "all_rows", "noheadings", "raw")


def table_options(func: FuncT) -> FuncT:
    """``-o/--output``, ``--output-all``, ``--bytes``, ``-S/--split``, ``-a/--all``,
    ``-n/--noheadings``, ``-r/--raw`` (lsmem's spelling; ``-b`` stays free: chmem uses it for
    blocks)."""
    decorators = [
        click.option("-o", "--output", "output", metavar="COLUMNS", default=None,
                     help="Columns to print, comma-separated; +COL,... adds to the defaults (like lsmem -o +NODE)."),
        click.option("--output-all", "output_all", is_flag=True, help="Print every column."),
        click.option("--bytes", "in_bytes", is_flag=True, help="Print sizes in bytes instead of 128M / 2.9G."),
        click.option("-S", "--split", "split", metavar="COLUMNS", default=None,
                     help="Merge contiguous blocks only where these columns are equal (default: the printed "
                          "columns; 'none': merge every contiguous run)."),
        click.option("-a", "--all", "all_rows", is_flag=True, help="One row per block (do not merge)."),
        click.option("-n", "--noheadings", "noheadings", is_flag=True, help="Do not print a header line."),
        click.option("-r", "--raw", "raw", is_flag=True,
                     help="Raw output: cells separated by one space, blanks escaped as \\x20 (lsmem -r)."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def columns_epilog(column_set: ColumnSet[Any]) -> str:
    """lsmem's "Available output columns" list for a command's ``--help``."""
    width = max(len(c.name) for c in column_set.columns)
    lines = [f"  {c.name:<{width}}  {c.help}" for c in column_set.columns]
    return "\b\nAvailable output columns (default: " + ",".join(column_set.default) + "):\n" + "\n".join(lines)


def pop_table_options(kwargs: Dict[str, Any]) -> TableOptions:
    """Remove the table options from a command's keyword arguments and build ``TableOptions``."""
    return TableOptions(**{name: kwargs.pop(name) for name in _OPTIONS})


def used_table_options(options: TableOptions) -> Optional[str]:
    """The first table option given, as typed (for "does not apply with --json" errors)."""
    for name, flag in (("output", "--output"), ("output_all", "--output-all"), ("in_bytes", "--bytes"),
                       ("split", "--split"), ("all_rows", "--all"), ("raw", "--raw")):
        if getattr(options, name):
            return flag
    return None


def exclusive_formats(**formats: bool) -> None:
    """At most one of the output formats (``json=True, csv=False, raw=...``)."""
    chosen = [f"--{name}" for name, on in formats.items() if on]
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(chosen)} cannot be combined", hint="pick one output format")
