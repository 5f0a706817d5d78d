"""lsmem's table controls, parsed: the output format, ``--summary[=when]`` and the checks lsmem
makes on them (``memplan.render.lsmem`` prints the listings they describe and re-exports these).

A module of its own, light to import: every command with a listing parses these options, also
when it writes a JSON document or CSV instead and imports no renderer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional

from memplan.core.errors import UsageError


class Format(str, Enum):
    TABLE = "table"
    RAW = "raw"
    PAIRS = "pairs"
    JSON = "json"


class SummaryWhen(str, Enum):
    """``--summary[=when]`` (lsmem: bare ``--summary`` means ``only``)."""

    NEVER = "never"
    ALWAYS = "always"
    ONLY = "only"


@dataclass(frozen=True)
class TableOptions:
    """lsmem's table controls, parsed (``memplan.cli.columns`` builds them from the options)."""

    output: Optional[str] = None
    output_all: bool = False
    in_bytes: bool = False
    split: Optional[str] = None
    all_rows: bool = False
    noheadings: bool = False
    raw: bool = False
    pairs: bool = False
    json: bool = False
    summary: Optional[SummaryWhen] = None

    @property
    def format(self) -> Format:
        return Format.RAW if self.raw else Format.PAIRS if self.pairs else Format.JSON if self.json else Format.TABLE

    @property
    def want_summary(self) -> bool:
        """lsmem: a summary after the table unless ``never``, or ``--raw/--json/--pairs``."""
        if self.summary is not None:
            return self.summary is not SummaryWhen.NEVER
        return self.format is Format.TABLE

    @property
    def want_table(self) -> bool:
        return self.summary is not SummaryWhen.ONLY


def check_format_options(options: TableOptions) -> None:
    """lsmem's exclusions: ``-J``, ``-P``, ``-r`` one at most; ``--all`` and ``--split``;
    ``--summary=only`` needs the table format."""
    chosen = [flag for flag, on in (("--json", options.json), ("--pairs", options.pairs), ("--raw", options.raw))
              if on]
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(chosen)} exclude each other", hint="pick one output format")
    if options.all_rows and options.split is not None:
        raise UsageError("--all and --split exclude each other (lsmem -a lists every block, unmerged)")
    if chosen and options.summary in (SummaryWhen.ONLY, SummaryWhen.ALWAYS):
        raise UsageError(f"options --{{raw,json,pairs}} and --summary={options.summary.value} are mutually "
                         "exclusive")

