"""Cell formatters and the column helper shared by every table renderer."""

from __future__ import annotations

from typing import Container, Iterable, Tuple

from rich.console import JustifyMethod
from rich.table import Table

from memplan.core.results import BlockVerdict, Outcome

RESULT_STYLE = {Outcome.OFFLINED: "green", Outcome.FAILS: "red", Outcome.HANGS: "yellow"}


def lsmem_range(v: BlockVerdict) -> str:
    """lsmem's RANGE cell: ``0x%016x-0x%016x`` with an inclusive end."""
    return f"0x{v.start:016x}-0x{v.end:016x}"


def add_columns(table: Table, columns: Iterable[Tuple[str, JustifyMethod]], wrap: Container[str] = ()) -> None:
    """Add ``(name, justify)`` columns to ``table``; only the columns named in ``wrap`` wrap."""
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=name not in wrap)


def culprit_text(v: BlockVerdict) -> str:
    if v.culprit is None:
        return ""
    return f"{v.culprit.kind.label}@{v.culprit.pfn:#x}"
