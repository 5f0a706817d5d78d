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


def test_map_json_one_shape_with_and_without_diff():
    plain = json.loads(run("map", SBM, "--json").output)
    diff = json.loads(run("map", REVIEW, "--diff", "--json").output)
    assert set(plain) == set(diff) and set(plain["summary"]) == set(diff["summary"])
    assert plain["diff"] is None and diff["diff"]["left"] == "refcount" and diff["diff"]["right"] == "skippable"
    assert sum(diff["diff"]["changes"].values()) == sum(c["change"] != "same" for c in diff["cells"]) > 0
    assert {c["change"] for c in plain["cells"]} == {"same"}
    hang = next(c for c in plain["cells"] if c["block"] == 36)
    assert hang == {"block": 36, "kind": "hangs", "confidence": "certain", "change": "same", "changed": []}
    summary = plain["summary"]
    assert summary["offlinable_bytes_by_confidence"] == {"certain": summary["offlinable_bytes"], "likely": 0,
                                                         "unknown": 0}
    assert summary["cells"]["hangs"] == 2 and summary["judged_blocks"] == sum(summary["blocks_by_confidence"].values())


def test_map_errors(tmp_path):
    one_error_line(run("map", SBM, "--diff", "--semantics", "skippable"), "--semantics cannot be combined with --diff")
    one_error_line(run("map", SBM, "--svg", str(tmp_path / "no" / "such" / "dir.svg")), "--svg: cannot write")


def test_explain_text_and_json():
    result = run("explain", SBM, "memory36")
    assert result.exit_code == 0
    assert "SCAN/MIGRATE" in result.output and "not reached" in result.output
    assert "Advice: Release the extra references on 3 pages" in result.output
    doc = json.loads(run("explain", REVIEW, "42", "--semantics", "skippable", "--json").output)
    assert set(doc) == {"memplan", "source", "source_kind", "machine", "semantics", "block", "steps", "population",
                        "culprit", "advice", "warnings"}
    assert (doc["source"], doc["source_kind"]) == (REVIEW, "profile")
    assert (doc["block"]["confidence"], doc["block"]["blind_spots"], doc["warnings"]) == ("certain", [], [])
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
    fails = 'fails\\x20EBUSY\\x20isolate\\x20"failure\\x20to\\x20isolate\\x20range"'
    assert result.output.splitlines()[1] == f"35 offlined {fails}"
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


# ---- widths, terminals and pipes -------------------------------------------------------------

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from conftest import fixture_tree  # noqa: E402

BBM = bundled("bbm-guest.toml")
WIDTH_COMMANDS = [
    ["simulate", SBM], ["simulate", SBM, "--output-all"], ["simulate", SBM, "-o", "+NODE,ZONES,STATE", "-a"],
    ["plan", SBM, "--size", "512M"], ["unplug", SBM, "--by", "1G"], ["unplug", BBM, "--sweep", "--step", "2G"],
    ["fleet", SBM, REVIEW, "--workers", "1"], ["diff-semantics", REVIEW], ["profiles"], ["explain", SBM, "36"],
    ["snapshot", "--sysroot", fixture_tree("qemu-6.1-post2")],
    ["simulate", "--sysroot", fixture_tree("qemu-6.1-post2")],
]
#: the one line that is not the same from run to run
TIMING = re.compile(r"^Ran on: .*$", re.M)


@pytest.mark.parametrize("args", WIDTH_COMMANDS, ids=lambda a: " ".join(os.path.basename(x) for x in a))
def test_tables_never_depend_on_the_width(args):
    outputs = []
    for columns in ("40", "200", None, "0"):
        result = run(*args, env={"COLUMNS": columns, "FORCE_COLOR": None, "NO_COLOR": None})
        assert result.exit_code in (0, 1), result.output  # diff-semantics exits 1 for differences
        outputs.append(TIMING.sub("Ran on: -", result.stdout))
    assert all(out == outputs[0] for out in outputs)
    text = outputs[0]
    assert text and "…" not in text and "\x1b" not in text
    assert all(line == line.rstrip() for line in text.splitlines()), "trailing spaces"


def test_every_empty_cell_is_a_dash():
    out = run("simulate", SBM, "--blocks", "32-36", "-a").stdout
    header, first = out.splitlines()[:2]
    assert len(first.split()) == len(header.split())  # ERRNO, REASON, STEP, CULPRIT: "-"


def terminal_output(args, columns: int = 80) -> str:
    """What memplan prints on a terminal of the given width (a pseudo-terminal), colour
    codes removed, line endings as a pipe would have them."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "NO_COLOR", "FORCE_COLOR")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen([sys.executable, "-m", "memplan", *args], stdin=slave, stdout=slave,
                            stderr=subprocess.DEVNULL, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait()
    os.close(master)
    text = b"".join(chunks).decode("utf-8").replace("\r\n", "\n")
    return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]|\x1b\][^\x07]*\x07", "", text)


@pytest.mark.skipif(not os.path.exists("/dev/ptmx"), reason="no pseudo-terminals here")
@pytest.mark.parametrize("args", [["simulate", SBM], ["explain", SBM, "36"]], ids=lambda a: a[0])
def test_piped_output_is_the_terminals_minus_colour(args):
    piped = subprocess.run([sys.executable, "-m", "memplan", *args], capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}).stdout
    coloured = terminal_output(args, columns=60)
    assert coloured == piped


def test_control_characters_from_inputs_are_escaped(tmp_path):
    evil = tmp_path / "evil\x1b[2Jhost.toml"
    evil.write_text('format = 1\n[machine]\nname = "vm\\u001b]0;pwned\\u0007\\nforged row"\n'
                    'description = "d\\u001b[31m"\n[[ram]]\nstart = "0"\nsize = "512MiB"\nzone = "Normal"\n')
    for args in (["fleet", str(evil), "--workers", "1"], ["map", str(evil)], ["explain", str(evil), "1"],
                 ["simulate", str(evil)], ["plan", str(evil), "--size", "128M"]):
        result = run(*args, env={"FORCE_COLOR": None})
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout, args
        if args[0] in ("fleet", "map", "explain"):
            assert "vm\\x1b]0;pwned\\x07\\x0aforged row" in result.stdout, args
    fleet = run("fleet", str(evil), "--workers", "1").stdout
    assert "evil\\x1b[2Jhost.toml" in fleet


@pytest.mark.parametrize("columns", ["abc", "0", "-5", "\u00b2", "\uff18\uff10", "99999999999999999999"])
def test_columns_that_is_not_a_positive_number_is_ignored(columns):
    result = run("map", SBM, env={"COLUMNS": columns})
    assert result.exit_code == 0 and "Legend:" in result.stdout
    default = run("map", SBM, env={"COLUMNS": None}).stdout
    assert result.stdout == default or columns == "99999999999999999999"  # a huge width is clamped, not ignored
