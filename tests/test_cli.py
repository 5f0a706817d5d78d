"""End to end through click.testing.CliRunner: every exit status and error path."""

import json

import pytest
from click.testing import CliRunner

from conftest import bundled
from memplan import __version__
from memplan.cli import main

SBM = bundled("sbm-guest.toml")


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, list(args))
    return invoke


def test_version(run):
    result = run("--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_simulate_table(run):
    result = run("simulate", SBM)
    assert result.exit_code == 0
    assert "RESULT" in result.output and "signal backoff" in result.output


def test_simulate_json(run):
    result = run("simulate", SBM, "--json", "--blocks", "32-36", "--semantics", "skippable")
    assert result.exit_code == 0
    doc = json.loads(result.output)
    assert doc["semantics"] == "skippable" and [b["block"] for b in doc["blocks"]] == [32, 33, 34, 35, 36]


@pytest.mark.parametrize("blocks,status", [("32-35", 0), ("1-5", 1), ("32-36", 64)])
def test_check_exit_status(run, blocks, status):
    assert run("simulate", SBM, "--check", "--blocks", blocks).exit_code == status


def test_without_check_a_failing_run_exits_0(run):
    assert run("simulate", SBM, "--blocks", "1-5").exit_code == 0


@pytest.mark.parametrize("args,needle", [
    (["simulate", "/nonexistent.toml"], "cannot read"),
    (["simulate", SBM, "--blocks", "7-x"], "--blocks:"),
    (["simulate", SBM, "--blocks", "99"], "memory block 99 does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(run, args, needle):
    result = run(*args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memplan: error:") and needle in lines[0]
    assert "Traceback" not in result.output


def test_bad_profile(run, write_profile):
    path = write_profile("format = 1\n[[ram]]\nstart = 0\nsize = '1GiB'\nzone = 'Norml'\n")
    result = run("simulate", path)
    assert result.exit_code == 2
    assert f"{path}: ram[0].zone: 'Norml' is not a zone" in result.output
    assert "did you mean 'Normal'?" in result.output


def test_bad_semantics_is_a_usage_error(run):
    result = run("simulate", SBM, "--semantics", "frozen")
    assert result.exit_code == 2 and "Invalid value" in result.output


def test_warnings_go_to_stderr(write_profile):
    path = write_profile("""
format = 1
[[virtio_mem]]
id = "v"
addr = "4GiB"
region_size = "4GiB"
block_size = "128MiB"
bbm_block_size = "384MiB"
plugged_size = "128MiB"
""")
    result = CliRunner(mix_stderr=False).invoke(main, ["simulate", path, "--json"]) if "mix_stderr" in \
        CliRunner.__init__.__code__.co_varnames else CliRunner().invoke(main, ["simulate", path, "--json"])
    assert result.exit_code == 0
    assert "bbm_block_size is not a power of 2" in result.stderr
    json.loads(result.stdout)


# ---- the progress bar on stderr -----------------------------------------------------------------

import io  # noqa: E402

from rich.console import Console  # noqa: E402

from memplan.cli import progress as progress_mod  # noqa: E402


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_for_a_terminal_without_json():
    assert progress_mod.wanted(False, _Terminal())
    assert not progress_mod.wanted(True, _Terminal())
    assert not progress_mod.wanted(False, io.StringIO())


def test_progress_bar_shows_blocks_and_pages_per_second():
    screen = _Terminal()
    console = Console(file=screen, force_terminal=True, width=120)
    with progress_mod.block_progress(True, 32768, console=console) as update:
        update(64, 128)
        update(128, 128)
    text = screen.getvalue()
    assert "128/128" in text and "blocks" in text and "pages/s" in text
    with progress_mod.block_progress(False, 32768) as update:
        assert update is None


def test_simulate_reports_progress_when_stderr_is_a_terminal(monkeypatch):
    calls = []

    def fake_wanted(as_json: bool, stream=None) -> bool:
        calls.append(as_json)
        return True

    monkeypatch.setattr("memplan.cli.simulate.progress_wanted", fake_wanted)
    seen = []

    class Recorder:
        def __init__(self, enabled, pages_per_block):
            self.enabled = enabled

        def __enter__(self):
            return lambda done, total: seen.append((done, total))

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr("memplan.cli.simulate.block_progress", Recorder)
    result = CliRunner().invoke(main, ["simulate", SBM])
    assert result.exit_code == 0 and calls == [False]
    assert seen and seen[-1][0] == seen[-1][1]


def test_json_run_prints_nothing_but_the_document(tmp_path):
    runner = CliRunner(mix_stderr=False) if "mix_stderr" in CliRunner.__init__.__code__.co_varnames else CliRunner()
    result = runner.invoke(main, ["simulate", SBM, "--json"])
    assert result.exit_code == 0 and result.stderr == ""
    json.loads(result.stdout)
