"""Exit statuses that mean one thing each (issue 15 §4, issue 14 §5), end to end.

0 ok, 1 ``--check`` none / differences, 2 bad input (one ``memplan: error:`` line, click's usage
errors included), 64 partial, 74 stdout cannot be written, 130 SIGINT, 141 broken pipe (quiet,
every format), 143 SIGTERM. Pipes, closed descriptors and signals run the real ``memplan``
in a subprocess (``python -m memplan``)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from typing import Dict, List, Optional

import pytest
from click.testing import CliRunner

import memplan.core.status as status_module
from conftest import ROOT, bundled
from memplan.cli import main
from memplan.cli.app import COMMANDS
from memplan.core.status import ExitStatus

SBM = bundled("sbm-guest.toml")
REVIEW = bundled("skippable-review.toml")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from make_profile import profile_text  # noqa: E402

MEMPLAN = [sys.executable, "-m", "memplan"]
ENV = dict(os.environ, PYTHONPATH=ROOT, NO_COLOR="1", PYTHONHASHSEED="0")
ENV.pop("MEMPLAN_TRACEBACK", None)


def stderr_lines(text: str) -> List[str]:
    return [line for line in text.splitlines() if line.strip()]


# ---- the statuses themselves --------------------------------------------------------------------

def test_every_status_is_documented_once():
    doc = status_module.__doc__ or ""
    codes = [int(m) for m in re.findall(r"^\s*(\d+)  ", doc, flags=re.M)]
    assert codes == sorted(int(s) for s in ExitStatus)
    assert ExitStatus.INTERRUPTED == 128 + signal.SIGINT and ExitStatus.TERMINATED == 128 + signal.SIGTERM
    assert ExitStatus.BROKEN_PIPE == 128 + signal.SIGPIPE and ExitStatus.IO_ERROR == 74  # sysexits.h EX_IOERR


# ---- usage errors: one line, exit 2 ---------------------------------------------------------------

@pytest.mark.parametrize("args, start, needle", [
    (["simulate", SBM, "--nope"], "memplan: error: simulate: ", "--nope"),
    (["nope"], "memplan: error: ", "'nope'"),
    (["simulate", SBM, "--semantics", "garbage"], "memplan: error: simulate: ", "'garbage'"),
    (["explain", SBM], "memplan: error: give a PROFILE, --sysroot DIR or --live, and a BLOCK", "BLOCK"),
    (["explain", SBM, "-1"], "memplan: error: explain: ", "-1"),
    (["simulate", "--sysroot", SBM], "memplan: error: simulate: ", "is a file"),
    (["fleet"], "memplan: error: fleet: ", "INPUT"),
    (["simulate", SBM, "--blocks", "3000000000"], "memplan: error: --blocks '3000000000': ", "did you mean 57?"),
    (["simulate", SBM, "--blocks", "0-3000000000"], "memplan: error: --blocks '0-3000000000': ", "block 16 "),
    (["simulate", SBM, "--blocks", "３２"], "memplan: error: --blocks: ", "ASCII"),
    (["map", SBM, "--blocks", "99999999999999999999"], "memplan: error: --blocks ", "99999999999999999999"),
    (["diff-semantics", SBM, "--blocks", "56"], "memplan: error: --blocks '56': ", "block 56 does not exist"),
    (["explain", SBM, "99999999999999999999"], "memplan: error: BLOCK: ", "not a memory block of any machine"),
    (["explain", SBM, "３６"], "memplan: error: BLOCK: ", "not a memory block number"),
])
def test_usage_errors_are_one_line_and_exit_2(args, start, needle):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert result.stdout == ""
    lines = stderr_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(start) and needle in lines[0], result.stderr
    assert "Usage:" not in result.stderr and "Try " not in result.stderr


def test_blocks_present_are_accepted_as_spans():
    result = CliRunner().invoke(main, ["simulate", SBM, "--blocks", "0-15,32-55,57,33", "--csv"])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1 + 16 + 24 + 1


def test_an_error_line_escapes_control_characters_and_stays_bounded(tmp_path):
    text = open(SBM, encoding="utf-8").read()
    evil = tmp_path / "evil.toml"
    evil.write_text(re.sub(r'(?m)^name = ".*"$', lambda m: 'name = "evil\\u001b[2J\\nname"', text, count=1),
                    encoding="utf-8")
    result = CliRunner().invoke(main, ["simulate", str(evil), "--blocks", "99"])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "\x1b" not in result.stderr and "evil\\x1b[2J\\x0aname" in lines[0]
    result = CliRunner().invoke(main, ["simulate", SBM, "--semantics", "x" * 100000])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1 and len(result.stderr) < 1100
    assert "characters]..." in result.stderr


def test_fleet_exits_2_when_no_host_could_be_judged(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("format = 1\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["fleet", str(bad), "--workers", "1"])
    assert result.exit_code == ExitStatus.BAD_INPUT
    assert stderr_lines(result.stderr)[-1] == "memplan: error: no host could be judged"


def test_check_statuses_are_chmems():
    assert CliRunner().invoke(main, ["simulate", SBM, "--check", "--json"]).exit_code == ExitStatus.PARTIAL
    assert CliRunner().invoke(main, ["simulate", SBM, "--check", "--blocks", "0"]).exit_code == ExitStatus.FAILURE
    assert CliRunner().invoke(main, ["simulate", SBM, "--check", "--blocks", "57"]).exit_code == ExitStatus.SUCCESS


# ---- interruptions inside the process (deterministic) -------------------------------------------

@pytest.mark.parametrize("raised, code, line", [
    ("KeyboardInterrupt", ExitStatus.INTERRUPTED, "memplan: interrupted"),
    ("memplan.core.errors.Terminated", ExitStatus.TERMINATED, "memplan: terminated"),
])
def test_a_signal_while_a_command_loads_is_one_line(tmp_path, monkeypatch, raised, code, line):
    """Ctrl-C or SIGTERM while a command's module is imported (start-up): one line, its status."""
    (tmp_path / "memplan_slow_command.py").write_text(f"import memplan.core.errors\nraise {raised}()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(COMMANDS, "slow", ("memplan_slow_command", "A command that is interrupted."))
    result = CliRunner().invoke(main, ["slow"])
    assert result.exit_code == code
    assert result.stderr == line + "\n" and result.stdout == ""


# ---- subprocesses: pipes, closed and full stdout ------------------------------------------------

def run_to_closed_pipe(args: List[str]) -> subprocess.CompletedProcess:
    """``memplan ARGS`` writing into a pipe whose reader is already gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(MEMPLAN + args, stdout=write_end, stderr=subprocess.PIPE, env=ENV, cwd=ROOT,
                              timeout=120)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [
    ["simulate", SBM],
    ["simulate", SBM, "--json"],
    ["simulate", SBM, "--csv"],
    ["simulate", SBM, "--json", "--check"],
    ["diff-semantics", REVIEW, "--json"],
    ["explain", SBM, "36"],
    ["map", SBM],
    ["plan", SBM, "--size", "512M", "--check"],
    ["unplug", SBM, "--by", "128M", "--json"],
    ["snapshot", "--sysroot", os.path.join(ROOT, "tests", "fixtures", "qemu-6.1-post2")],
    ["fleet", os.path.join(ROOT, "profiles"), "--jsonl", "--workers", "2"],
    ["profiles"],
    ["--help"],
])
def test_a_broken_pipe_exits_141_quietly(args):
    done = run_to_closed_pipe(args)
    assert done.returncode == ExitStatus.BROKEN_PIPE
    assert done.stderr == b""


@pytest.fixture(scope="module")
def big_profile(tmp_path_factory):
    """256 GiB (2048 blocks): its JSON and CSV are far bigger than a pipe's buffer."""
    path = tmp_path_factory.mktemp("exit") / "256g.toml"
    path.write_text(profile_text(256 << 30), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("fmt", ["--json", "--csv"])
def test_head_in_a_shell_pipeline_sees_141(big_profile, fmt):
    script = f'"$@" simulate {big_profile} {fmt} | head -n 1 >/dev/null; echo "${{PIPESTATUS[0]}}"'
    done = subprocess.run(["bash", "-c", script, "bash", *MEMPLAN], capture_output=True, text=True, env=ENV,
                          cwd=ROOT, timeout=120)
    assert done.stdout.strip() == "141" and done.stderr == ""


@pytest.mark.parametrize("args", [["simulate", SBM], ["simulate", SBM, "--json"], ["simulate", SBM, "--csv"],
                                  ["--version"], ["profiles", "--json"]])
@pytest.mark.parametrize("redirect, reason", [(">&-", "Bad file descriptor"),
                                              (">/dev/full", "No space left on device")])
def test_stdout_closed_or_full_is_one_line_and_74(args, redirect, reason):
    if redirect == ">/dev/full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    done = subprocess.run(["bash", "-c", f'"$@" {redirect}', "bash", *MEMPLAN, *args], capture_output=True, text=True,
                          env=ENV, cwd=ROOT, timeout=120)
    assert done.returncode == ExitStatus.IO_ERROR
    assert done.stderr == f"memplan: error: cannot write to stdout: {reason}\n"


def test_a_command_that_prints_nothing_does_not_mind_a_closed_stdout(tmp_path):
    svg = tmp_path / "map.svg"
    done = subprocess.run(["bash", "-c", '"$@" >&-', "bash", *MEMPLAN, "map", SBM, "--svg", str(svg)],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    # map prints its grid too: the picture is written first, then stdout fails
    assert done.returncode == ExitStatus.IO_ERROR and svg.exists()


# ---- signals to a running memplan --------------------------------------------------------------

@pytest.fixture(scope="module")
def huge_profile(tmp_path_factory):
    """16 TiB (131072 blocks): judging it takes seconds, long enough to be interrupted."""
    path = tmp_path_factory.mktemp("signals") / "16t.toml"
    path.write_text(profile_text(16 << 40), encoding="utf-8")
    return str(path)


def _wait_until_running(proc: subprocess.Popen, module: str = "numpy", timeout: float = 60.0) -> None:
    """Until ``proc`` has loaded ``module``'s shared objects: memplan's command code is running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{proc.pid}/maps", encoding="utf-8", errors="replace") as handle:
                if module in handle.read():
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"memplan ended before it was running: {proc.returncode}")
        time.sleep(0.02)
    raise AssertionError("memplan did not start in time")


def interrupt(args: List[str], signum: int, extra_delay: float = 0.3,
              env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(MEMPLAN + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env or ENV,
                            cwd=ROOT, text=True)
    try:
        _wait_until_running(proc)
        time.sleep(extra_delay)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
@pytest.mark.parametrize("signum, code, line", [
    (signal.SIGINT, ExitStatus.INTERRUPTED, "memplan: interrupted"),
    (signal.SIGTERM, ExitStatus.TERMINATED, "memplan: terminated"),
])
@pytest.mark.parametrize("command", ["simulate", "fleet"])
def test_a_signal_ends_a_running_command_with_one_line(huge_profile, signum, code, line, command):
    args = ["simulate", huge_profile, "--json"] if command == "simulate" else \
        ["fleet", huge_profile, huge_profile, "--workers", "2", "--jsonl"]
    done = interrupt(args, signum)
    assert done.returncode == code, done.stderr[-2000:]
    assert stderr_lines(done.stderr) == [line]


@pytest.mark.parametrize("signum, code, line", [
    (signal.SIGINT, ExitStatus.INTERRUPTED, "memplan: interrupted"),
    (signal.SIGTERM, ExitStatus.TERMINATED, "memplan: terminated"),
])
def test_a_signal_during_start_up_is_one_line(signum, code, line):
    """The entry point takes both signals over first thing (memplan.__main__), before click."""
    code_text = textwrap.dedent(f"""
        import os, time
        import memplan.__main__
        os.kill(os.getpid(), {int(signum)})
        time.sleep(30)
    """)
    done = subprocess.run([sys.executable, "-c", code_text], capture_output=True, text=True, env=ENV, cwd=ROOT,
                          timeout=60)
    assert done.returncode == code
    assert done.stderr == line + "\n"


@pytest.mark.parametrize("error, code", [(BrokenPipeError(32, "Broken pipe"), ExitStatus.BROKEN_PIPE),
                                         (OSError(28, "No space left on device"), ExitStatus.IO_ERROR)])
def test_output_errors_in_process(monkeypatch, capsys, error, code):
    """A write error on stdout, also one raised by a writer that holds the real stream (round
    the guard): the status of the error, never click's "exit 1" for EPIPE."""
    import click

    def callback() -> None:
        if isinstance(error, BrokenPipeError):
            raise error
        sys.stdout.write("x" * 10)

    class Failing:
        def write(self, text: str) -> int:
            raise error

        def flush(self) -> None:
            raise error

        def isatty(self) -> bool:
            return False

    monkeypatch.setitem(main.commands, "writer", click.Command("writer", callback=callback))
    monkeypatch.setattr(sys, "stdout", Failing())
    with pytest.raises(SystemExit) as ended:
        main(["writer"], prog_name="memplan")
    assert ended.value.code == code
    full = "memplan: error: cannot write to stdout: No space left on device\n"
    assert capsys.readouterr().err == ("" if code == ExitStatus.BROKEN_PIPE else full)


def test_a_ctrl_c_swallowed_on_its_way_still_ends_the_run():
    """A KeyboardInterrupt raised in a weakref callback of the import system is "ignored" by
    Python: the hook takes it as the Ctrl-C it was, prints nothing, and the run ends with 130."""
    from types import SimpleNamespace

    from memplan.cli import signals

    seen = []
    signals._SIGINT.update(seen=False, said=False)
    try:
        hook = signals._unraisable(seen.append)
        hook(SimpleNamespace(exc_value=ValueError("other")))
        assert len(seen) == 1 and not signals.interrupt_lost()
        hook(SimpleNamespace(exc_value=KeyboardInterrupt()))
        assert len(seen) == 1 and signals.interrupt_lost()
        assert signals.finish(KeyboardInterrupt()) == ExitStatus.INTERRUPTED
        assert not signals.interrupt_lost()
    finally:
        signals._SIGINT.update(seen=False, said=False)
