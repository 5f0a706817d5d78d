"""End to end: map, explain, profiles, the lsmem table controls, --csv, colours, help, completion."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from click.testing import CliRunner

from conftest import bundled
from memplan.cli import main
from memplan.render.csv import DIFF_COLUMNS, SIMULATION_COLUMNS

SBM = bundled("sbm-guest.toml")
REVIEW = bundled("skippable-review.toml")


def run(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env)


def one_error_line(result, needle):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memplan: error:") and needle in lines[0], result.output


def test_map(tmp_path):
    result = run("map", SBM)
    assert result.exit_code == 0
    assert "vmem0 SBM" in result.output and "no memory: 16 blocks (2G)" in result.output
    assert re.search(r"H  hangs until a signal +2  256M", result.output)
    svg, html = tmp_path / "m.svg", tmp_path / "m.html"
    result = run("map", REVIEW, "--left", "refcount", "--right", "skippable", "--svg", str(svg), "--html", str(html))
    assert result.exit_code == 0 and "offlines only under skippable" in result.output
    assert svg.read_text().startswith("<svg") and "refcount&#160;vs&#160;skippable" in svg.read_text()
    assert "<html" in html.read_text().lower() and "offlines only under refcount" in html.read_text()


def test_map_errors(tmp_path):
    one_error_line(run("map", SBM, "--diff", "--semantics", "skippable"), "--semantics cannot be combined with --diff")
    one_error_line(run("map", SBM, "--svg", str(tmp_path / "no" / "such" / "dir.svg")), "--svg: cannot write")


def test_explain_text_and_json():
    result = run("explain", SBM, "memory36")
    assert result.exit_code == 0
    assert "SCAN/MIGRATE" in result.output and "not reached" in result.output
    assert "Advice: Release the extra references on 3 pages" in result.output
    doc = json.loads(run("explain", REVIEW, "42", "--semantics", "skippable", "--json").output)
    assert set(doc) == {"memplan", "profile", "machine", "semantics", "block", "steps", "population", "culprit", "advice"}
    assert doc["block"]["result"] == "offlined" and doc["culprit"] is None
    assert [s["status"] for s in doc["steps"]] == ["passed"] * 13
    assert sum(r["pages"] for r in doc["population"]) == 32768
    fake = next(r for r in doc["population"] if r["kind"] == "fake_offline")
    assert fake["long_names"] == "offline,owner_2"  # PG_offline_skippable = PG_owner_2 (KPF bit 34)


def test_explain_errors():
    one_error_line(run("explain", SBM, "400"), "did you mean 57?")
    one_error_line(run("explain", SBM, "60"), "was never added")
    one_error_line(run("explain", SBM, "mem36"), "is not a memory block number")


def test_profiles():
    result = run("profiles")
    assert result.exit_code == 0
    for name in ("boot-vm", "sbm-guest", "bbm-guest", "hugetlb-cma-host", "skippable-review"):
        assert name in result.output
    assert "virtio-mem SBM" in result.output
    doc = json.loads(run("profiles", "--json").output)
    assert {p["name"] for p in doc["profiles"]} >= {"sbm-guest", "boot-vm"}
    assert all(p["description"] for p in doc["profiles"])


def test_simulate_table_controls():
    result = run("simulate", SBM, "--blocks", "32-40", "-o", "BLOCK,SIZE,RESULT", "--bytes", "-r", "-n")
    assert result.output.splitlines() == ["32-35 536870912 offlined", "36 134217728 hangs", "37-40 536870912 offlined"]
    result = run("simulate", SBM, "--blocks", "32-40", "-o", "+NODE", "--all")
    # header, 9 blocks, a blank line, lsmem's summary (3 lines) and memplan's (6)
    assert "NODE" in result.output.splitlines()[0] and len(result.output.splitlines()) == 1 + 9 + 1 + 3 + 6
    result = run("simulate", SBM, "--blocks", "32-40", "-o", "BLOCK,RESULT", "-S", "none", "-r", "-n")
    assert result.output.splitlines() == ["32-40 offlined"]


def test_simulate_column_errors_suggest_the_fix():
    one_error_line(run("simulate", SBM, "-o", "BLOCK,RESLT"), "did you mean 'RESULT'?")
    one_error_line(run("simulate", SBM, "--split", "FRE"), "--split: unknown column 'FRE'")
    one_error_line(run("simulate", SBM, "--json", "--csv"), "--json and --csv exclude each other")
    one_error_line(run("simulate", SBM, "--csv", "-o", "BLOCK"), "--output applies to the listing, not to --csv")
    one_error_line(run("simulate", SBM, "-r", "-P"), "--pairs and --raw exclude each other")
    one_error_line(run("simulate", SBM, "-a", "-S", "RESULT"), "--all and --split exclude each other")
    one_error_line(run("simulate", SBM, "-r", "--summary=only"), "--summary=only are mutually exclusive")


def test_csv_is_one_row_per_block_with_the_json_values():
    rows = list(csv.reader(io.StringIO(run("simulate", SBM, "--csv").output)))
    doc = json.loads(run("simulate", SBM, "--json").output)
    assert tuple(rows[0]) == SIMULATION_COLUMNS
    assert len(rows) - 1 == len(doc["blocks"])
    for row, block in zip(rows[1:], doc["blocks"]):
        record = dict(zip(rows[0], row))
        assert int(record["block"]) == block["block"] and record["result"] == block["result"]
        assert record["errno"] == (block["errno"] or "") and int(record["pages_free"]) == block["pages"]["free"]
        assert record["culprit_pfn"] == (str(block["culprit"]["pfn"]) if block["culprit"] else "")
    assert run("simulate", SBM, "--csv", "-n").output.splitlines()[0].startswith("0,")


def test_diff_semantics_csv_and_raw():
    rows = list(csv.reader(io.StringIO(run("diff-semantics", REVIEW, "--csv").output)))
    assert tuple(rows[0]) == DIFF_COLUMNS and [r[0] for r in rows[1:]] == ["34", "35", "42", "67"]
    result = run("diff-semantics", REVIEW, "--raw", "-n", "-o", "BLOCK,LEFT,RIGHT")
    assert result.exit_code == 1
    assert result.output.splitlines()[1] == 'offlined fails\\x20EBUSY\\x20isolate\\x20"failure\\x20to\\x20isolate\\x20range"'.join(["35 ", ""])
    one_error_line(run("diff-semantics", REVIEW, "-o", "BLOCK,SKIPABLE"), "did you mean 'SKIPPABLE'?")


SGR = re.compile(r"\x1b\[([0-9;]*)m")


def colour_codes(text: str) -> bool:
    """True if any SGR sequence sets a foreground colour (30-38, 90-97)."""
    for params in SGR.findall(text):
        numbers = [int(p) for p in params.split(";") if p]
        if any(30 <= n <= 38 or 90 <= n <= 97 for n in numbers):
            return True
    return False


@pytest.mark.parametrize("args", [["map", SBM], ["simulate", SBM, "--blocks", "35-37"], ["explain", SBM, "36"]])
def test_colours_only_on_a_terminal_and_never_with_no_color(args):
    plain = run(*args, env={"FORCE_COLOR": None, "NO_COLOR": None})
    assert plain.exit_code == 0 and "\x1b[" not in plain.output  # stdout is not a terminal
    forced = run(*args, env={"FORCE_COLOR": "1", "NO_COLOR": None})
    assert colour_codes(forced.output)
    no_color = run(*args, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert no_color.exit_code == 0 and not colour_codes(no_color.output)


@pytest.mark.parametrize("command", ["simulate", "diff-semantics", "map", "explain", "profiles"])
def test_every_help_has_an_example(command):
    result = run(command, "--help")
    assert result.exit_code == 0 and "Example" in result.output and "memplan " + command in result.output


def test_bash_completion_script():
    result = CliRunner().invoke(main, [], prog_name="memplan", env={"_MEMPLAN_COMPLETE": "bash_source"})
    assert result.exit_code == 0 and "_memplan_completion" in result.output


def test_missing_profile_and_block_suggest_the_fix():
    one_error_line(run("simulate", "sbm-guest.toml"), "did you mean profiles/sbm-guest.toml?")
    one_error_line(run("map", SBM, "--blocks", "99"), "did you mean 57?")
