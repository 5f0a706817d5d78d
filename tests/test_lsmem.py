"""lsmem's listing, exactly: the generic machinery (memplan.render.lsmem) and, on sysfs-only
trees of three architectures (tests/lsmem_trees.py), the rows util-linux's lsmem prints.

The comparisons run the installed ``lsmem --sysroot`` (skipped with a reason where there is
none) against memplan's rendering of the same tree: cell for cell, spacing aside, with one
deliberate difference -- memplan prints ``-`` in an empty cell (lsmem leaves it blank; in
``--raw`` output that shifts every later field for ``awk``).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from typing import List, Optional

import click
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from lsmem_trees import TREES, tree_facts
from memplan.cli import main
from memplan.cli.columns import ListingCommand, pop_table_options, table_options
from memplan.core.errors import UsageError
from memplan.render import table as render_table
from memplan.render.block_columns import LSMEM_DEFAULT, lsmem_columns, lsmem_zones
from memplan.render.escape import json_string, nonblank, quoted, safe
from memplan.render.lsmem import Column, ColumnSet, Merge, TableOptions, merged_rows, print_listing

MiB = 1 << 20


# ---- the machinery -------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    block: int
    state: str
    zone: str
    pages: int


COLUMNS = ColumnSet((
    Column("BLOCK", lambda i: i.block, Merge.KEY, justify="right"),
    Column("RANGE", lambda i: (i.block * 128 * MiB, (i.block + 1) * 128 * MiB - 1), Merge.RANGE),
    Column("SIZE", lambda i: 128 * MiB, Merge.SUM, size=True, justify="right"),
    Column("STATE", lambda i: i.state),
    Column("ZONE", lambda i: i.zone, aliases=("ZONES",)),
    Column("PAGES", lambda i: i.pages, Merge.SUM, justify="right"),
), ("RANGE", "SIZE", "STATE", "BLOCK"))

ITEMS = [Item(0, "online", "DMA32", 1), Item(1, "online", "DMA32", 2), Item(2, "online", "Normal", 3),
         Item(3, "offline", "Normal", 4), Item(5, "offline", "Normal", 5), Item(6, "offline", "Normal", 6)]


def render(options: TableOptions, items=ITEMS, column_set=COLUMNS) -> List[str]:
    console = Console(width=40, record=True, color_system=None, file=io.StringIO())
    print_listing(console, column_set, items, options)
    return console.export_text().splitlines()


def test_default_merges_contiguous_blocks_with_equal_printed_columns():
    # Default split columns are the printed ones (STATE): ZONE is not printed, so it does not split.
    assert render(TableOptions(raw=True)) == [
        "RANGE SIZE STATE BLOCK",
        "0x0000000000000000-0x0000000017ffffff 384M online 0-2",
        "0x0000000018000000-0x000000001fffffff 128M offline 3",
        "0x0000000028000000-0x0000000037ffffff 256M offline 5-6",
    ]


def test_output_plus_split_all_bytes_noheadings():
    assert render(TableOptions(output="+ZONES,PAGES", raw=True))[1:3] == [
        "0x0000000000000000-0x000000000fffffff 256M online 0-1 DMA32 3",
        "0x0000000010000000-0x0000000017ffffff 128M online 2 Normal 3",
    ]
    assert render(TableOptions(output="BLOCK,PAGES", split="none", noheadings=True, raw=True)) == ["0-3 10", "5-6 11"]
    assert render(TableOptions(output="block,size", all_rows=True, in_bytes=True, raw=True))[1:3] == [
        "0 134217728", "1 134217728"]
    assert render(TableOptions(output_all=True, raw=True))[0] == "BLOCK RANGE SIZE STATE ZONE PAGES"
    # lsmem allows a column twice; the limit is twice the number of columns
    assert render(TableOptions(output="BLOCK,BLOCK", raw=True, noheadings=True))[0] == "0-3 0-3"
    with pytest.raises(UsageError, match="too many columns specified, the limit is 12 columns"):
        COLUMNS.select(TableOptions(output=",".join(["BLOCK"] * 13)))


def test_split_ignores_columns_that_cannot_split_as_lsmem_does():
    # lsmem --split RANGE,SIZE,...,BLOCK: only the splittable columns count
    assert render(TableOptions(output="BLOCK,STATE", split="RANGE,SIZE,BLOCK,PAGES", raw=True, noheadings=True)) == [
        "0-3 online", "5-6 offline"]
    assert render(TableOptions(output="BLOCK,STATE", split="ZONE,PAGES", raw=True, noheadings=True)) == [
        "0-1 online", "2-3 online", "5-6 offline"]


def test_unknown_columns_suggest_the_fix():
    with pytest.raises(UsageError) as exc:
        COLUMNS.select(TableOptions(output="BLOCK,STAT"))
    assert "unknown column 'STAT'" in str(exc.value) and "did you mean 'STATE'?" in str(exc.value)
    with pytest.raises(UsageError, match="--split: unknown column 'PAGS'"):
        COLUMNS.splits(TableOptions(split="PAGS"), COLUMNS.columns)
    with pytest.raises(UsageError, match="empty column name"):
        COLUMNS.select(TableOptions(output="BLOCK,,SIZE"))


def test_formats_escape_like_libsmartcols():
    items = [Item(0, "on line\t\x1b[31m", "a\"$`\\b", 1)]
    options = TableOptions(output="BLOCK,STATE,ZONE", noheadings=True)
    assert render(replace(options, raw=True), items) == ["0 on\\x20line\\x09\\x1b[31m a\"$`\\x5cb"]
    assert render(replace(options, pairs=True), items) == [
        'BLOCK="0" STATE="on line\\x09\\x1b[31m" ZONE="a\\x22\\x24\\x60\\x5cb"']
    doc = json.loads("\n".join(render(replace(options, json=True), items)))
    assert doc == {"memory": [{"block": "0", "state": "on line\t\x1b[31m", "zone": "a\"$`\\b"}]}
    assert render(options, items) == ["0  on line\\x09\\x1b[31m  a\"$`\\b"]


def test_escapes():
    assert nonblank('signal backoff\t"x"\\') == 'signal\\x20backoff\\x09"x"\\x5c'
    assert nonblank("\u2192") == "\\xe2\\x86\\x92"
    assert safe("host\x1b]0;pwned\x07\n") == "host\\x1b]0;pwned\\x07\\x0a"
    assert safe("a\\x41 b\u202e") == "a\\x5cx41 b\\xe2\\x80\\xae"  # a forged escape, a bidi override
    assert safe("naïve 世界 ok") == "naïve 世界 ok"
    assert quoted("é") == '"\\xc3\\xa9"'
    assert json_string("é\n\x01") == '"é\\n\\u0001"'


def test_empty_json_listing_and_empty_table():
    assert json.loads("\n".join(render(TableOptions(json=True), []))) == {"memory": []}
    assert render(TableOptions(), []) == []  # libsmartcols prints no header without lines


def test_lsmem_zone_names():
    assert lsmem_zones(("Normal", "Movable")) == ("Normal", "Movable")
    assert lsmem_zones(("none",)) == ("None",)
    assert lsmem_zones(("dma32", "ZONE_X")) == ("DMA32", "Unknown")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["a", "b"]), st.integers(0, 9)), max_size=30),
       st.booleans())
def test_merged_rows_cover_every_item_once_and_sum(rows, all_rows):
    items, block = [], 0
    for gap, state, pages in rows:
        block += gap + 1
        items.append(Item(block, state, "Z", pages))
    options = TableOptions(output="BLOCK,STATE,PAGES", all_rows=all_rows)
    merged = list(merged_rows(COLUMNS, items, options))
    assert sum(r.count for r in merged) == len(items)
    assert sum(r.values[2] for r in merged) == sum(i.pages for i in items)
    if all_rows:
        assert len(merged) == len(items)
    for r in merged:
        first, last = r.values[0]
        assert last - first + 1 == r.count  # only consecutive blocks merge
    for a, b in zip(merged, merged[1:]):  # a merge is never missed
        assert not (b.values[0][0] == a.values[0][1] + 1 and a.values[1] == b.values[1]) or all_rows


def test_merging_streams_one_row_at_a_time():
    """A run is yielded as soon as the next item breaks it: nothing else is held."""
    seen: List[int] = []

    def items():
        for i in ITEMS:
            seen.append(i.block)
            yield i

    rows = merged_rows(COLUMNS, items(), TableOptions(output="BLOCK,STATE"))
    first = next(rows)
    assert first.values[0] == (0, 2) and seen == [0, 1, 2, 3]


# ---- against util-linux's lsmem --------------------------------------------------------------

LSMEM = shutil.which("lsmem")
needs_lsmem = pytest.mark.skipif(LSMEM is None, reason="util-linux lsmem is not installed here")
ALL7 = "RANGE,SIZE,STATE,REMOVABLE,BLOCK,NODE,ZONES"
#: util-linux's tests/ts/lsmem invocations, and the other options
INVOCATIONS = [
    [], ["-o", "RANGE,SIZE"], ["-o", "RANGE,SIZE,STATE"], ["--all", "-o", "RANGE,SIZE,STATE,REMOVABLE,BLOCK,NODE"],
    ["--raw", "-o", "RANGE,SIZE,STATE,REMOVABLE,BLOCK,NODE"], ["--json", "-o", "RANGE,SIZE,STATE,REMOVABLE,BLOCK,NODE"],
    ["-o", "+ZONES"], ["--output-all"], ["--split=STATE,REMOVABLE"], ["-o", "RANGE,SIZE", "--split", "none"],
    ["-o", "RANGE,SIZE,STATE", "--split", "STATE"], ["--raw", "-o", ALL7, "--split", ALL7],
    ["--json", "-o", ALL7, "--split", ALL7], ["-P", "-o", "+ZONES,NODE"], ["-b", "-o", "+ZONES"], ["-J", "-b"],
    ["-n", "-r"], ["-r", "-o", "RANGE,STATE,REMOVABLE,BLOCK"], ["--summary=only"], ["--summary=never", "-o", "+NODE"],
    ["-S", "ZONES,SIZE", "-o", "RANGE,BLOCK,ZONES"], ["-a", "-o", "BLOCK,STATE,ZONES", "-n"],
]


def lsmem_version() -> tuple:
    if LSMEM is None:
        return (0,)
    out = subprocess.run([LSMEM, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"(\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else (0,)


def run_lsmem(root: str, args: List[str]) -> str:
    result = subprocess.run([LSMEM, "--sysroot", root] + args, capture_output=True, text=True,
                            env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    return result.stdout


def lsmem_options(args: List[str]) -> TableOptions:
    """The arguments as memplan's listing options (the same spelling)."""
    captured: List[TableOptions] = []

    @click.command(cls=ListingCommand)
    @click.option("-J", "--json", "as_json", is_flag=True)
    @table_options
    def parse(as_json: bool, **table: object) -> None:
        options = pop_table_options(table)
        captured.append(replace(options, json=True) if as_json else options)

    result = CliRunner().invoke(parse, args)
    if isinstance(result.exception, UsageError):
        raise result.exception
    assert result.exit_code == 0, result.output
    return captured[0]


def normalise(text: str, options: TableOptions, memplan: bool) -> object:
    """What must agree: JSON as data, pairs exactly, raw fields (memplan's ``-`` = lsmem's
    empty field), table cells without spacing (memplan's ``-`` = lsmem's blank cell)."""
    if options.json:
        return json.loads(text)
    if options.pairs:
        return text
    lines = text.splitlines()
    if options.raw:
        return [["" if memplan and f == "-" else f for f in line.split(" ")] for line in lines]
    return [[t for t in line.split() if not (memplan and t == "-")] for line in lines]


def memplan_listing(root: str, options: TableOptions) -> str:
    console = Console(width=80, record=True, color_system=None, file=io.StringIO())
    render_table.print_simulation(console, None, tree_facts(root), options, lsmem_columns())
    return console.export_text()


#: upstream's expected ZONES for the arm64 dump (tests/expected/lsmem/lsmem-aarch64_16K_16g), which
#: lsmem before 2.41 leaves empty (util-linux#4055: it looked for memory0/valid_zones)
ARM64_ZONES = "DMA"


@needs_lsmem
@pytest.mark.parametrize("tree", sorted(TREES))
@pytest.mark.parametrize("args", INVOCATIONS, ids=lambda a: " ".join(a) or "default")
def test_rows_are_lsmems(tmp_path, tree, args):
    root = TREES[tree].write(str(tmp_path / tree))
    options = lsmem_options(args)
    mine = memplan_listing(root, options)
    theirs = run_lsmem(root, args)
    wants_zones = "ZONES" in " ".join(args) or "--output-all" in args
    if tree == "arm64_16k" and wants_zones and lsmem_version() < (2, 41):
        zones = sorted(set(re.findall(r"\bDMA\b", mine)))
        assert zones == [ARM64_ZONES]  # what the fixed lsmem prints
        mine = re.sub(r"\bDMA\b", "", mine) if not options.json else mine.replace('"DMA"', "null")
        if options.raw:
            mine = mine.replace(" \n", " -\n")
    assert normalise(mine, options, True) == normalise(theirs, options, False)


# ---- end to end: memplan simulate / snapshot --sysroot on the same trees ---------------------


def run(*args: str):
    return CliRunner().invoke(main, list(args))


E2E = [["-o", "RANGE,SIZE,STATE,REMOVABLE,BLOCK"], ["-o", ALL7, "-r"], ["-o", ALL7, "--json"],
       ["-o", "RANGE,SIZE,STATE,REMOVABLE,BLOCK,ZONES", "-P"], ["-o", "BLOCK,STATE,ZONES", "-a", "-n"]]


@needs_lsmem
@pytest.mark.parametrize("tree", sorted(TREES))
@pytest.mark.parametrize("command", ["simulate", "snapshot"])
@pytest.mark.parametrize("args", E2E, ids=lambda a: " ".join(a))
def test_memplan_lists_a_tree_as_lsmem_does(tmp_path, tree, command, args):
    root = TREES[tree].write(str(tmp_path / tree))
    result = run(command, "--sysroot", root, *args)
    assert result.exit_code == 0, result.output
    options = lsmem_options(args)
    out = result.stdout if not options.want_summary else result.stdout.split("\n\n")[0] + "\n"
    theirs = run_lsmem(root, args)
    if not options.raw and not options.json and not options.pairs and options.want_summary:
        theirs = theirs.split("\n\n")[0] + "\n"
    if tree == "arm64_16k" and "ZONES" in " ".join(args) and lsmem_version() < (2, 41):
        out = re.sub(r"\bDMA\b", "", out) if not options.json else out.replace('"DMA"', "null")
        if options.raw:
            out = out.replace(" \n", " -\n")
    assert normalise(out, options, True) == normalise(theirs, options, False)


def test_simulate_lists_every_block_with_only_lsmem_columns(tmp_path):
    """Offline blocks too, as lsmem does; with verdict columns the listing is of the judged
    blocks, and an offline block selected with --blocks says it is offline (STATE appears)."""
    root = TREES["x86_64"].write(str(tmp_path / "x86"))
    result = run("simulate", "--sysroot", root, "-o", "BLOCK,STATE", "-r", "-n")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["0-23 online", "32-43 online", "44-45 offline", "46 on->off", "47 online"]
    result = run("simulate", "--sysroot", root, "--blocks", "43-45")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.split("\n\n")[0].splitlines()
    assert header.split()[:4] == ["BLOCK", "RANGE", "SIZE", "STATE"]
    assert rows[1].split()[3:7] == ["offline", "Movable", "fails", "EINVAL"]


def test_lsmem_default_columns_are_lsmems():
    assert LSMEM_DEFAULT == ("RANGE", "SIZE", "STATE", "REMOVABLE", "BLOCK")
    assert [c.name for c in lsmem_columns(True).columns] == [
        "RANGE", "SIZE", "STATE", "REMOVABLE", "BLOCK", "NODE", "ZONES", "CONFIGURED", "MEMMAP-ON-MEMORY"]
    # without /sys/firmware/memory lsmem leaves CONFIGURED and MEMMAP-ON-MEMORY out, even when asked
    shown = lsmem_columns(False).select(TableOptions(output="BLOCK,CONFIGURED,MEMMAP-ON-MEMORY")).shown
    assert [c.name for c in shown] == ["BLOCK"]


def test_option_exclusions_are_lsmems():
    for args, needle in ((["-r", "-P"], "--pairs and --raw exclude each other"),
                         (["-a", "-S", "STATE"], "--all and --split exclude each other"),
                         (["-r", "--summary=only"], "options --{raw,json,pairs} and --summary=only are mutually")):
        with pytest.raises(UsageError, match=re.escape(needle)):
            lsmem_options(args)


def test_bare_summary_does_not_take_the_next_word(tmp_path):
    options: Optional[TableOptions] = lsmem_options(["--summary"])
    assert options is not None and options.summary is not None and options.summary.value == "only"


#: the real kernels' trees in tests/fixtures (captured without the memoryN/nodeX links: lsmem's
#: NODE is empty there)
FIXTURE_COLUMNS = "RANGE,SIZE,STATE,REMOVABLE,BLOCK,ZONES,NODE"
FIXTURES = ["qemu-6.1-pre", "qemu-6.1-post1", "qemu-6.1-post2", "qemu-6.1-bbm-post1",
            # captured without memoryN/removable: lsmem reads 0 ("no"), and so does memplan
            "host-6.18-24g"]


@needs_lsmem
@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("command", ["simulate", "snapshot"])
@pytest.mark.parametrize("fmt", [[], ["-r"], ["-J"], ["-P"]], ids=lambda a: " ".join(a) or "table")
def test_real_trees_list_as_lsmem_lists_them(fixture, command, fmt):
    from conftest import fixture_tree

    root = fixture_tree(fixture)
    args = ["-o", FIXTURE_COLUMNS] + fmt
    result = run(command, "--sysroot", root, *args)
    assert result.exit_code == 0, result.output
    options = lsmem_options(args)
    theirs = run_lsmem(root, args)
    if options.want_summary:  # the listing, then lsmem's summary (memplan's report goes on)
        lines = result.stdout.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("RANGE"))
        end = lines.index("", start)
        assert lines[end + 1:end + 4] == theirs.split("\n\n")[1].splitlines()
        mine_rows, their_rows = "\n".join(lines[start:end]), theirs.split("\n\n")[0]
    else:
        mine_rows, their_rows = result.stdout, theirs
    assert normalise(mine_rows, options, True) == normalise(their_rows, options, False)
