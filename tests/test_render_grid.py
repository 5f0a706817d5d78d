"""``memplan.render.grid``: rich's table layout at the natural width, spilled rows, and the
simulate listing streamed over verdicts with flat memory."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from typing import Iterator, List, Tuple

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table

from memplan.core.geometry import Geometry
from memplan.core.machine import BlockTable, Machine
from memplan.core.model import Errno, Zone
from memplan.core.results import BlockVerdict, Confidence, Outcome, PageCounts, Reason, Step, Summary
from memplan.render import grid as grid_module
from memplan.render.block_facts import MachineFacts
from memplan.render.grid import Grid, GridColumn, Styled
from memplan.render.table import print_simulation

cells = st.text(alphabet=st.sampled_from(list("ab -x7") + ["世", "é", "\u2192"]), max_size=6)


def rich_lines(columns: List[Tuple[str, str]], rows: List[List[str]]) -> List[str]:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*[c or "-" for c in row])
    console = Console(width=1000, record=True, color_system=None, file=io.StringIO())
    console.print(table)
    return [line.rstrip() for line in console.export_text().splitlines()]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["A", "LONGER NAME", "#"]), st.sampled_from(["left", "right"])),
                min_size=1, max_size=5).flatmap(
    lambda cols: st.tuples(st.just(cols), st.lists(st.lists(cells, min_size=len(cols), max_size=len(cols)),
                                                    min_size=1, max_size=6))))
def test_lines_are_richs_table_without_padding(data):
    columns, rows = data
    grid = Grid([GridColumn(name, justify) for name, justify in columns])  # type: ignore[arg-type]
    for row in rows:
        grid.add_row(row)
    assert grid.plain_lines() == rich_lines(columns, rows)


def test_spilled_rows_print_the_same_lines_and_styles():
    def fill(grid: Grid) -> Grid:
        for i in range(50):
            grid.add_row([str(i), Styled("ok" * (i % 3), "green"), (Styled("#", "red"), Styled("-" * (i % 4), "dim"))])
        return grid

    columns = [GridColumn("N", "right"), GridColumn("STATUS"), GridColumn("BAR")]
    outputs = []
    for spill in (10_000, 7):
        console = Console(width=20, record=True, force_terminal=True, color_system="truecolor", file=io.StringIO())
        fill(Grid(columns, spill_rows=spill)).print(console)
        outputs.append(console.file.getvalue())
    assert outputs[0] == outputs[1] and "\x1b[32m" in outputs[0]


def test_hidden_columns_and_headings():
    grid = Grid([GridColumn("A"), GridColumn("B", "right"), GridColumn("C")], headings=False)
    grid.add_row(["x", "1", "zz"])
    assert grid.plain_lines(hide=[1]) == ["x  zz"]
    assert grid.plain_lines(hide=[2]) == ["x  1"]


# ---- the simulate listing over a stream --------------------------------------------------------


class Stream:
    """A ``Verdicts`` stream: iterable once, ``summary`` only after iteration (interface I1)."""

    def __init__(self, blocks: int, every: int) -> None:
        self.profile, self.machine, self.semantics = "synthetic", "synthetic", "refcount"
        self.semantics_reason, self.warnings = None, ()
        self.blocks, self.every = blocks, every
        self.done = False
        self.iterated = False

    def __iter__(self) -> Iterator[BlockVerdict]:
        assert not self.iterated, "iterated twice"
        self.iterated = True
        size = 128 << 20
        for b in range(self.blocks):
            fails = b % self.every == 0
            yield BlockVerdict(
                block=b, start=b * size, end=(b + 1) * size - 1, zone=Zone.MOVABLE, node=0,
                result=Outcome.FAILS if fails else Outcome.OFFLINED, errno=Errno.EBUSY if fails else None,
                reason=Reason.FAILURE_TO_ISOLATE_RANGE if fails else None, step=Step.ISOLATE if fails else None,
                culprit=None, pages=PageCounts(total=32768, free=32768), confidence=Confidence.LIKELY if b % 7 == 0
                else Confidence.CERTAIN, blind_spots=(f"{b % 3} pages may be pinned",) if b % 7 == 0 else ())
        self.done = True

    @property
    def summary(self) -> Summary:
        assert self.done, "summary read before the verdicts"
        failed = (self.blocks + self.every - 1) // self.every
        ok = self.blocks - failed
        return Summary(self.blocks, ok, failed, 0, ok << 27, {c: ok << 27 if c is Confidence.CERTAIN else 0
                                                              for c in Confidence}, 0)


def facts(blocks: int) -> MachineFacts:
    ids = np.arange(blocks)
    table = BlockTable(ids, np.zeros(blocks), np.full(blocks, Zone.MOVABLE.code), np.zeros(blocks),
                       np.full(blocks, 32768), np.zeros(blocks), np.full(blocks, -1))
    return MachineFacts(Machine("synthetic", "synthetic", Geometry(), table, pages=None))  # type: ignore[arg-type]


#: run in a child: the listing of N synthetic blocks, one row each, printed to /dev/null; prints
#: the peak RSS in KiB
CHILD = """
import io, os, resource, sys
sys.path.insert(0, {tests!r})
from rich.console import Console
from test_render_grid import Stream, facts
from memplan.render.lsmem import TableOptions
from memplan.render.table import print_simulation
blocks = int(sys.argv[1])
machine_facts = facts(blocks)
with open(os.devnull, "w") as sink:
    print_simulation(Console(width=80, color_system=None, file=sink), Stream(blocks, every=5), machine_facts,
                     TableOptions(all_rows=True))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_kib(blocks: int) -> int:
    tests = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, "-c", CHILD.format(tests=tests), str(blocks)], capture_output=True,
                         text=True, check=True).stdout
    return int(out.split()[-1])


def test_listing_memory_is_flat_in_the_number_of_blocks():
    """One row per block (--all): 8 times the blocks, the same peak RSS within a few MiB (a
    listing that held its 14,000 extra rows would add some 10 MiB here)."""
    small, large = peak_rss_kib(2_000), peak_rss_kib(16_000)
    assert large - small < 4 * 1024, (small, large)


def test_grid_keeps_few_rows_in_memory(monkeypatch):
    monkeypatch.setattr(grid_module, "SPILL_ROWS", 16)
    grid = Grid([GridColumn("N", "right")])
    for i in range(100):
        grid.add_row([str(i)])
    assert grid._rows == [] and grid._spill is not None and grid.row_count == 100
    assert grid.plain_lines()[1:] == [f"{i:>2}" for i in range(100)]


def test_stream_is_read_once_and_the_summary_after_it():
    console = Console(width=80, record=True, color_system=None, file=io.StringIO())
    print_simulation(console, Stream(30, every=5), facts(30))
    text = console.export_text()
    assert "Would offline:          24 (3G)" in text and "CONFIDENCE" in text
    assert "  blocks 0,7,14,21,28 (likely):\n    - N pages may be pinned" in text  # grouped, N for counts
