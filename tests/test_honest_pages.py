"""Honest page counts (issue 13 §1-§2): a block judged without page data -- a sysfs-only tree
(no proc/kpageflags), a live machine whose /proc/kpageflags needs root -- shows no page count
at all: ``-`` in tables, empty CSV cells, ``null`` in JSON (same keys), "page data: not saved"
in explain; merged rows never add known counts to unknown ones; a live read without root
degrades like a sysfs-only tree with one warning and is never refused."""

from __future__ import annotations

import csv
import errno
import io
import json
import lzma
import os
import re
import shutil

import pytest
from click.testing import CliRunner

from conftest import fixture_tree
from memplan.cli import main
from memplan.render.lsmem import Column, ColumnSet, Merge, TableOptions, merged_rows
from memplan.snapshot import reader, sysroot
from memplan.snapshot.confidence import NO_PAGE_FLAGS, NO_PAGE_FLAGS_ROOT
from test_json_schema import validate

COUNTS = ("free", "migrated", "skipped_offline", "dissolved", "hwpoison", "vmemmap", "holes", "blocking")
NEEDS_ROOT = "reading page flags needs root; every verdict that depends on the pages is unknown"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, (args, result.output[-2000:])
    return result


@pytest.fixture
def x86(tmp_path):
    from lsmem_trees import TREES

    return TREES["x86_64"].write(str(tmp_path / "x86_64"))


def table_rows(text: str):
    """The listing's rows (up to the blank line before the summary) as cell lists."""
    lines = text.split("\n\n")[0].splitlines()
    return lines[0].split(), [line.split() for line in lines[1:]]


# ---- sysfs-only trees ------------------------------------------------------------------------

def test_page_count_cells_of_a_sysfs_only_tree_are_dashes(x86):
    header, rows = table_rows(ok("simulate", "--sysroot", x86).stdout)
    counts = [header.index(c) for c in ("FREE", "TO-MIGRATE", "SKIPPED", "DISSOLVED")]
    assert [r[0] for r in rows] == ["0", "1-23", "32-39", "40-43", "47"]
    for row in rows:  # block 0 fails certain at the zone step, its pages are not known either
        assert [row[i] for i in counts] == ["-"] * 4, row


def test_every_count_column_is_unknown_but_the_block_size(x86):
    columns = "BLOCK,FREE,HWPOISON,VMEMMAP,HOLES,BLOCKING,PAGES"
    header, rows = table_rows(ok("simulate", "--sysroot", x86, "-o", columns, "-S", "none").stdout)
    assert rows == [["0-23", "-", "-", "-", "-", "-", str(24 * 32768)], ["32-43", "-", "-", "-", "-", "-",
                                                                           str(12 * 32768)],
                    ["47", "-", "-", "-", "-", "-", "32768"]]
    doc = json.loads(ok("simulate", "--sysroot", x86, "-J", "-o", "BLOCK,FREE,PAGES").stdout)
    assert doc["memory"][0] == {"block": "0-23", "free": None, "pages": 24 * 32768}
    raw = ok("simulate", "--sysroot", x86, "-r", "-n", "-o", "BLOCK,FREE", "-S", "none").stdout.splitlines()
    assert raw == ["0-23 -", "32-43 -", "47 -"]


def test_json_keeps_every_page_key_with_null_counts(x86):
    doc = json.loads(ok("simulate", "--sysroot", x86, "--json").stdout)
    validate("simulate", doc)
    for b in doc["blocks"]:
        assert set(b["pages"]) == {"total", *COUNTS}
        assert b["pages"]["total"] == 32768 and all(b["pages"][k] is None for k in COUNTS), b["block"]


def test_csv_page_cells_are_empty(x86):
    rows = list(csv.DictReader(io.StringIO(ok("simulate", "--sysroot", x86, "--csv").stdout)))
    assert len(rows) == 37
    for row in rows:
        assert row["pages_total"] == "32768"
        assert [row[f"pages_{k}"] for k in COUNTS] == [""] * len(COUNTS)


def test_a_tree_with_page_flags_still_shows_its_counts():
    root = fixture_tree("qemu-6.1-post2")
    doc = json.loads(ok("simulate", "--sysroot", root, "--json").stdout)
    assert all(isinstance(b["pages"]["free"], int) for b in doc["blocks"])
    assert sum(b["pages"]["free"] for b in doc["blocks"]) > 0
    header, rows = table_rows(ok("simulate", "--sysroot", root, "-o", "BLOCK,FREE,TO-MIGRATE").stdout)
    assert rows and all(r[1].isdigit() and r[2].isdigit() for r in rows)


def test_explain_says_page_data_not_saved_instead_of_a_page_table(x86):
    out = ok("explain", "--sysroot", x86, "5").stdout
    assert "Pages of the block: page data: not saved" in out
    assert "kpageflags as page-types" not in out and "page-count" not in out
    steps = [line for line in out.splitlines() if re.match(r"\s*\d+\s", line)]
    reading = [s for s in steps if "SCAN/MIGRATE" in s or "TEST_ISOLATED" in s]
    assert len(reading) == 2 and all("page data: not saved, judged as if every page were free" in s
                                      for s in reading)
    assert not any("page data" in s for s in steps if "block state" in s or "memory holes" in s)
    assert "Advice: Save the block's pages first" in out
    doc = json.loads(ok("explain", "--sysroot", x86, "5", "--json").stdout)
    validate("explain", doc)
    assert doc["population"] is None and doc["block"]["pages"]["free"] is None
    assert doc["block"]["blind_spots"] == [NO_PAGE_FLAGS]


def test_explain_of_an_offline_block_has_no_pages_to_show_either_way(x86):
    out = ok("explain", "--sysroot", x86, "44").stdout
    assert "Pages of the block: none to show (an offline block has no memmap" in out and "page data" not in out
    assert json.loads(ok("explain", "--sysroot", x86, "44", "--json").stdout)["population"] == []


def test_explain_of_a_tree_with_page_flags_keeps_its_page_table():
    doc = json.loads(ok("explain", "--sysroot", fixture_tree("qemu-6.1-post2"), "5", "--json").stdout)
    assert doc["population"] and sum(r["pages"] for r in doc["population"]) == doc["block"]["pages"]["total"]
    assert not any("page data" in (s["detail"] or "") for s in doc["steps"])


def test_plan_on_a_sysfs_only_tree_knows_no_free_memory(x86):
    doc = json.loads(ok("plan", "--sysroot", x86, "--size", "256M", "--json").stdout)
    validate("plan", doc)
    left = doc["left"]
    assert left["free_bytes"] is None and left["total_bytes"] > 0
    assert all(z["free_bytes"] is None for z in left["zones"] + left["nodes"])
    assert all(a["pages"]["migrated"] is None for a in doc["attempts"])
    out = ok("plan", "--sysroot", x86, "--size", "256M").stdout
    assert "FREE not known: the input holds no page data" in out
    left = out.split("Left online\n")[1].split("\nFREE not known")[0].splitlines()
    assert left[0].split() == ["NODE", "ZONE", "FREE", "TOTAL"]
    assert len(left) > 2 and all(line.split()[2] == "-" for line in left[1:])


# ---- merged rows ----------------------------------------------------------------------------

def _counts_set():
    columns = (Column("BLOCK", lambda r: r[0], Merge.KEY), Column("FREE", lambda r: r[1], Merge.SUM))
    return ColumnSet(columns, ("BLOCK", "FREE"))


@pytest.mark.parametrize("split", [None, "none"])
def test_rows_never_add_known_counts_to_unknown_ones(split):
    items = [(1, 10), (2, 5), (3, None), (4, None), (5, 7)]
    rows = list(merged_rows(_counts_set(), items, TableOptions(split=split)))
    assert [(r.values[0], r.values[1]) for r in rows] == [((1, 2), 15), ((3, 4), None), ((5, 5), 7)]


# ---- a live machine read without root --------------------------------------------------------

@pytest.fixture
def live_root(tmp_path, monkeypatch):
    """A live-looking machine: a copy of a 24 GiB host's tree read as ``/`` (``--live``), with
    a plain /proc/kpageflags; returns a function that makes kpageflags/kpagecount fail with
    EACCES and /proc/iomem read as a non-root user reads it (every address 0)."""
    root = tmp_path / "live"
    shutil.copytree(fixture_tree("host-6.18-24g"), root, symlinks=True)
    with lzma.open(root / "proc" / "kpageflags.xz") as packed:
        (root / "proc" / "kpageflags").write_bytes(packed.read())
    os.remove(root / "proc" / "kpageflags.xz")

    class LiveTree(sysroot.Tree):
        def __init__(self, path: str, live: bool = False) -> None:
            super().__init__(str(root) if live else path, live)

    monkeypatch.setattr(reader, "Tree", LiveTree)

    def not_root() -> None:
        real_open = os.open

        def fake_open(path, *args, **kwargs):
            if str(path).endswith(("proc/kpageflags", "proc/kpagecount")):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", fake_open)
        iomem = root / "proc" / "iomem"
        iomem.write_text(re.sub(r"[0-9a-f]+-[0-9a-f]+ :", "00000000-00000000 :", iomem.read_text()))

    return not_root


def test_a_live_machine_as_root_reads_its_page_flags(live_root):
    doc = json.loads(ok("simulate", "--live", "--json").stdout)
    assert all(isinstance(b["pages"]["free"], int) for b in doc["blocks"])
    assert not any(NO_PAGE_FLAGS_ROOT in b["blind_spots"] for b in doc["blocks"])


def test_a_live_machine_without_root_degrades_with_one_warning(live_root):
    live_root()
    result = ok("simulate", "--live", "--json")
    doc = json.loads(result.stdout)
    validate("simulate", doc)
    warnings = [w for w in result.stderr.splitlines() if NEEDS_ROOT in w]
    assert warnings == [f"memplan: warning: /proc/kpageflags: {NEEDS_ROOT} (run memplan as root to read them)"]
    assert "/proc/iomem: every address reads 0 (physical addresses need root)" in result.stderr
    assert "Traceback" not in result.output
    blocks = {b["block"]: b for b in doc["blocks"]}
    assert (blocks[0]["step"], blocks[0]["confidence"]) == ("zone", "certain")  # valid_zones none
    unknown = [b for b in doc["blocks"] if b["confidence"] == "unknown"]
    assert len(unknown) == len(doc["blocks"]) - 1
    assert all(b["blind_spots"] == [NO_PAGE_FLAGS_ROOT] for b in unknown)
    assert all(b["pages"]["free"] is None for b in doc["blocks"])
    summary = doc["summary"]
    assert summary["offlinable_bytes_by_confidence"]["unknown"] == summary["offlinable_bytes"] > 0
    assert summary["unknown_blocks"] == len(unknown)


def test_live_without_root_in_every_command(live_root):
    live_root()
    out = ok("simulate", "--live").stdout
    assert "By confidence:          certain 0B, likely 0B, unknown" in out
    assert re.search(r"^Would offline: +\d+ \(23\.9G, 23\.9G of it unknown\)$", out, re.M), out
    assert NO_PAGE_FLAGS_ROOT in out
    map_out = ok("map", "--live").stdout
    assert "?  unknown" in map_out
    plan = json.loads(ok("plan", "--live", "--size", "1G", "--json").stdout)
    assert plan["achieved_bytes_by_confidence"]["unknown"] == plan["achieved_bytes"] == 1 << 30
    assert plan["left"]["free_bytes"] is None
    assert "Achieved:           1G (blocks 192-199, 1G of it unknown)" in ok("plan", "--live", "--size", "1G").stdout
    story = ok("explain", "--live", "40").stdout
    assert "page data: not saved" in story and NO_PAGE_FLAGS_ROOT in story
    snap = json.loads(ok("snapshot", "--live", "--json").stdout)
    assert snap["page_flags_saved"] is False and NO_PAGE_FLAGS_ROOT in snap["blind_spots"]


def test_a_saved_tree_whose_page_flags_cannot_be_read_is_still_refused(tmp_path, monkeypatch):
    root = tmp_path / "tree"
    shutil.copytree(fixture_tree("qemu-6.1-post2"), root, symlinks=True)
    real_open = os.open

    def fake_open(path, *args, **kwargs):
        if "kpageflags" in str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    result = run("simulate", "--sysroot", root)
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("memplan: error:")]
    assert errors == [f"memplan: error: cannot read {root}/proc/kpageflags.xz: Permission denied "
                      "(reading it needs root)"]
