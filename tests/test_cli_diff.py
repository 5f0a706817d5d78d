"""``memplan diff-semantics`` end to end through CliRunner: output, exit statuses, errors."""

import json

import pytest
from click.testing import CliRunner

from conftest import bundled
from memplan.cli import main

REVIEW = bundled("skippable-review.toml")
SBM = bundled("sbm-guest.toml")


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, ["diff-semantics", *args])
    return invoke


def test_differences_exit_1_with_a_grouped_report(run):
    result = run(REVIEW)
    assert result.exit_code == 1, result.output
    assert "isolation: refcount fails at scan -> skippable fails at isolate" in result.output
    assert "Blocks that differ:" in result.output


def test_no_difference_exits_0(run):
    result = run(SBM)
    assert result.exit_code == 0, result.output
    assert "No differences" in result.output


def test_a_semantics_against_itself_exits_0(run):
    assert run(REVIEW, "--left", "skippable", "--right", "skippable").exit_code == 0


def test_json_and_swapped_sides(run):
    result = run(REVIEW, "--json", "--left", "skippable", "--right", "refcount", "--blocks", "35,42")
    assert result.exit_code == 1
    doc = json.loads(result.output)
    assert (doc["left"], doc["right"]) == ("skippable", "refcount")
    d35 = next(d for d in doc["differences"] if d["block"] == 35)
    assert (d35["left"]["result"], d35["right"]["result"]) == ("fails", "offlined")
    assert [d["block"] for d in doc["differences"]] == [35, 42]


def test_blocks_without_difference_exit_0_with_json(run):
    result = run(REVIEW, "--json", "--blocks", "32-33")
    assert result.exit_code == 0
    assert json.loads(result.output)["differences"] == []


@pytest.mark.parametrize("timing,left,right,hazard_side,hazard", [
    ("during-offline", "offlined", "offlined", "left", "freed_to_buddy"),
    ("after-offline", "fails", "offlined", "right", "stale_memmap_reference"),
])
def test_foreign_ref_dropped_option(run, timing, left, right, hazard_side, hazard):
    doc = json.loads(run(REVIEW, "--json", "--blocks", "42", "--foreign-ref-dropped", timing).output)
    assert doc["foreign_ref_dropped"] == timing
    (d,) = doc["differences"]
    assert (d["left"]["result"], d["right"]["result"]) == (left, right)
    assert (hazard_side, hazard) in {(h["side"], h["kind"]) for h in d["hazards"]}


def test_foreign_ref_dropped_option_overrides_the_profile(run, write_profile, tmp_path):
    text = open(REVIEW).read() + '\n[environment]\nforeign_ref_dropped = "during-offline"\n'
    path = write_profile(text, "review-during.toml")
    during = json.loads(run(path, "--json", "--blocks", "42").output)
    never = json.loads(run(path, "--json", "--blocks", "42", "--foreign-ref-dropped", "never").output)
    assert during["differences"][0]["left"]["result"] == "offlined"
    assert never["foreign_ref_dropped"] == "never"
    assert never["differences"][0]["left"]["result"] == "fails"


@pytest.mark.parametrize("args,needle", [
    (["/nonexistent.toml"], "cannot read"),
    ([REVIEW, "--blocks", "7-x"], "--blocks:"),
    ([REVIEW, "--blocks", "999"], "memory block 999 does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(run, args, needle):
    result = run(*args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memplan: error:") and needle in lines[0]


@pytest.mark.parametrize("args", [
    [REVIEW, "--left", "frozen"],
    [REVIEW, "--right", "mainline"],
    [REVIEW, "--foreign-ref-dropped", "sometimes"],
    [],
])
def test_bad_options_exit_2(run, args):
    result = run(*args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_bad_profile_names_file_and_key(run, write_profile):
    path = write_profile('format = 1\n[[ram]]\nstart = 0\nsize = "1GiB"\nzone = "Normal"\n'
                         '[environment]\nforeign_ref_dropped = "soon"\n')
    result = run(path)
    assert result.exit_code == 2
    assert result.output.startswith("memplan: error:") and "foreign_ref_dropped" in result.output
