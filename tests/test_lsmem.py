"""The generic lsmem-style column/row machinery (memplan.render.lsmem)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from memplan.core.errors import UsageError
from memplan.render.lsmem import (
    Column, ColumnSet, Merge, TableOptions, merged_rows, print_table, raw_escape, raw_lines,
)

MiB = 1 << 20


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


def lines(options: TableOptions, items=ITEMS):
    shown = COLUMNS.select(options)
    return raw_lines(shown, merged_rows(COLUMNS, items, options, shown), options)


def test_default_merges_contiguous_blocks_with_equal_printed_columns():
    # Default split columns are the printed ones (STATE): ZONE is not printed, so it does not split.
    assert lines(TableOptions()) == [
        "RANGE SIZE STATE BLOCK",
        "0x0000000000000000-0x0000000017ffffff 384M online 0-2",
        "0x0000000018000000-0x000000001fffffff 128M offline 3",
        "0x0000000028000000-0x0000000037ffffff 256M offline 5-6",
    ]


def test_output_plus_split_all_bytes_noheadings():
    assert lines(TableOptions(output="+ZONES,PAGES"))[1:3] == [
        "0x0000000000000000-0x000000000fffffff 256M online 0-1 DMA32 3",
        "0x0000000010000000-0x0000000017ffffff 128M online 2 Normal 3",
    ]
    assert lines(TableOptions(output="BLOCK,PAGES", split="none", noheadings=True)) == ["0-3 10", "5-6 11"]
    assert lines(TableOptions(output="block,size", all_rows=True, in_bytes=True))[1:3] == ["0 134217728",
                                                                                         "1 134217728"]
    assert lines(TableOptions(output_all=True))[0] == "BLOCK RANGE SIZE STATE ZONE PAGES"


def test_unknown_and_unsplittable_columns_suggest_the_fix():
    with pytest.raises(UsageError) as exc:
        COLUMNS.select(TableOptions(output="BLOCK,STAT"))
    assert "unknown column 'STAT'" in str(exc.value) and "did you mean 'STATE'?" in str(exc.value)
    with pytest.raises(UsageError, match="--split: column PAGES is merged"):
        COLUMNS.splits(TableOptions(split="PAGES"), COLUMNS.columns)
    with pytest.raises(UsageError, match="empty column name"):
        COLUMNS.select(TableOptions(output="BLOCK,,SIZE"))


def test_raw_escapes_like_libsmartcols():
    assert raw_escape('signal backoff\t"x"\\') == 'signal\\x20backoff\\x09"x"\\x5c'
    assert raw_escape("\u2192") == "\\xe2\\x86\\x92"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["a", "b"]), st.integers(0, 9)), max_size=30),
       st.booleans())
def test_merged_rows_cover_every_item_once_and_sum(rows, all_rows):
    items, block = [], 0
    for gap, state, pages in rows:
        block += gap + 1
        items.append(Item(block, state, "Z", pages))
    options = TableOptions(output="BLOCK,STATE,PAGES", all_rows=all_rows)
    merged = merged_rows(COLUMNS, items, options)
    assert sum(r.count for r in merged) == len(items)
    assert sum(r.values[2] for r in merged) == sum(i.pages for i in items)
    if all_rows:
        assert len(merged) == len(items)
    for r in merged:
        first, last = r.values[0]
        assert last - first + 1 == r.count  # only consecutive blocks merge
    for a, b in zip(merged, merged[1:]):  # a merge is never missed
        assert not (b.values[0][0] == a.values[0][1] + 1 and a.values[1] == b.values[1]) or all_rows


def test_print_table_aligned_and_raw():
    console = Console(width=120, record=True, color_system=None)
    print_table(console, COLUMNS, ITEMS, TableOptions(output="BLOCK,SIZE,STATE"))
    text = console.export_text()
    assert text.splitlines()[0].split() == ["BLOCK", "SIZE", "STATE"]
    assert text.splitlines()[1].split() == ["0-2", "384M", "online"]
    print_table(console, COLUMNS, ITEMS, TableOptions(output="BLOCK", raw=True, noheadings=True))
    assert console.export_text().splitlines() == ["0-3", "5-6"]  # no split column printed
