"""``memplan fleet`` end to end: outputs, exit statuses, errors, --jsonl streaming, Dask."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from conftest import FIXTURES, ROOT
from fleet_hosts import dask_cluster, write_big_fleet, write_fleet
from memplan.cli import main
from memplan.core.status import ExitStatus
from memplan.core.units import format_size
from memplan.fleet.types import ConfidenceBytes

GiB = 1 << 30


@pytest.fixture(scope="module")
def dask_scheduler():
    yield from dask_cluster()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> str:
    return write_fleet(str(tmp_path_factory.mktemp("fleet")), fixtures=("qemu-6.1-post1",))


def run(*args: str):
    return CliRunner().invoke(main, ["fleet", *args])


def gen(fleet: str, *names: int):
    return [os.path.join(fleet, "profiles", f"gen-{n}.toml") for n in names]


def test_table_with_a_broken_input_exits_0(fleet, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("not toml [")
    result = run(fleet, str(bad), "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "bad.toml" in result.output and "error: " in result.output and "invalid TOML" in result.output
    assert "memplan: warning: 1 of 8 hosts could not be judged (error rows)" in result.output
    assert "Hosts:              8 (7 judged, 1 error)" in result.output
    assert "Top blocking causes" in result.output and "slab in ZONE_NORMAL" in result.output
    lines = result.output.splitlines()
    # Hosts sorted by unreclaimable memory: gen-5 (every block fails) first, the error row last.
    rows = [line for line in lines if line.startswith(fleet) or line.startswith(str(tmp_path))]
    assert rows[0].startswith(gen(fleet, 5)[0]) and rows[-1].startswith(str(bad))
    assert "hosts/s" not in result.stderr  # no progress bar: stderr is not a terminal


@pytest.mark.parametrize("inputs, status", [((0, 2), 0), ((0, 5), 64), ((5,), 1)])
def test_check_without_size_wants_offlinable_memory_on_every_host(fleet, inputs, status):
    result = run(*gen(fleet, *inputs), "--check", "--workers", "1")
    assert result.exit_code == status, result.output


def test_check_with_a_broken_input_exits_2(fleet):
    result = run(*gen(fleet, 0), os.path.join(fleet, "nothing-here"), "--check", "--workers", "1")
    assert result.exit_code == 2, result.output
    assert "nothing-here" in result.output and "no such file or directory" in result.output


def test_plan_size_matches_memplan_plan_and_check(fleet):
    hosts = gen(fleet, 0, 1, 3)
    result = run(*hosts, "--plan-size", "1G", "--json", "--workers", "1")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["mode"] == "plan" and doc["size_bytes"] == GiB
    plans = {}
    for host in hosts:
        plans[host] = json.loads(CliRunner().invoke(main, ["plan", host, "--size", "1G", "--json"]).stdout)
        (row,) = [h for h in doc["hosts"] if h["host"] == host]
        assert (row["asked_bytes"], row["achieved_bytes"]) == (plans[host]["asked_bytes"],
                                                                 plans[host]["achieved_bytes"])
    # chmem's contract: a host whose plan meets a hanging block stops there (measured: all three
    # generated hosts do before 1 GiB; one of them reaches it with --skip-hangs)
    stopped = sorted(h for h, p in plans.items() if p["hang_block"] is not None)
    reached = sum(h["achieved_bytes"] == GiB for h in doc["hosts"])
    assert (len(stopped), reached) == (3, 0)
    assert run(*hosts, "--plan-size", "1G", "--check", "--workers", "1").exit_code == 1
    # chmem's SIZE: a bare number means MiB.
    assert json.loads(run(*gen(fleet, 0), "--plan-size", "256", "--json").stdout)["size_bytes"] == 256 << 20


def test_unplug_by_matches_memplan_unplug(fleet):
    hosts = gen(fleet, 0, 2) + [os.path.join(fleet, "snapshots", "qemu-6.1-post1")]
    result = run(*hosts, "--unplug-by", "512M", "--json", "--workers", "1")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["device"] is None and doc["summary"]["errors"] == 0
    for host in hosts:
        args = ["unplug", *(["--sysroot", host] if os.path.isdir(host) else [host]), "--by", "512M", "--json"]
        one = json.loads(CliRunner().invoke(main, args).stdout)
        (row,) = [h for h in doc["hosts"] if h["host"] == host]
        assert row["achieved_bytes"] == one["achieved_bytes"]
        assert row["devices"][0]["plugged_after_bytes"] == one["plugged_after_bytes"]
    # Hosts name their devices differently (snapshots: virtio0): --device picks one, others are error rows.
    named = json.loads(run(*hosts, "--unplug-by", "512M", "--device", "vmem0", "--json").stdout)
    assert [h["error"] for h in named["hosts"]] == [
        None, None, "no virtio-mem device 'vmem0' on qemu-6.1-post1 (devices: virtio0)"]


def test_jsonl_writes_one_line_per_host(fleet):
    result = run(fleet, os.path.join(fleet, "missing.toml"), "--jsonl", "--workers", "2")
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(docs) == 8 and len({d["host"] for d in docs}) == 8
    assert [d["error"] for d in docs if d["error"]] == ["no such file or directory"]


def test_jsonl_lines_arrive_before_the_fleet_is_done(fleet):
    """A pipeline reads the first host while memplan still works on the others."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "memplan", "fleet", *gen(fleet, 3, 0, 1, 2, 4, 5),
                             os.path.join(fleet, "snapshots"), "--jsonl", "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        first = proc.stdout.readline()
        running = proc.poll() is None
        rest = proc.stdout.read()
    finally:
        proc.wait(timeout=60)
    assert json.loads(first)["machine"] == "gen-3"
    assert running, "memplan had finished before the first line was read"
    assert len(rest.splitlines()) == 6 and proc.returncode == 0


@pytest.mark.parametrize("args, message", [
    (["--json", "--jsonl"], "--json and --jsonl exclude each other"),
    (["--unplug-by", "1G", "--plan-size", "1G"], "--unplug-by and --plan-size exclude each other"),
    (["--device", "vmem0"], "--device only applies to --unplug-by"),
    (["--workers", "2", "--dask-local", "2"], "--workers and --dask-local exclude each other"),
    (["--plan-size", "lots"], "--plan-size: 'lots' is not a size"),
    (["--unplug-by", "0"], "--unplug-by: '0' is not more than 0"),
    (["--workers", "0"], "0 is not in the range x>=1"),
])
def test_usage_errors_exit_2(fleet, args, message):
    result = run(*gen(fleet, 0), *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_dask_options_without_dask_say_how_to_install(fleet, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    for args in (["--scheduler", "tcp://127.0.0.1:8786"], ["--dask-local", "2"]):
        result = run(*gen(fleet, 0), *args)
        assert result.exit_code == 2
        assert result.output.strip().splitlines()[-1] == (
            f"memplan: error: {args[0]} needs Dask, which is not installed: pip install 'memplan[fleet]'")


def test_scheduler_runs_the_fleet_on_dask(fleet, dask_scheduler):
    local = json.loads(run(fleet, "--json", "--workers", "1").stdout)
    result = run(fleet, "--json", "--scheduler", dask_scheduler)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == local


# ---- exit statuses, JSON shape, confidence -------------------------------------------------


def test_no_host_judged_exits_2_even_without_check(fleet):
    """--plan-size 100M is no multiple of any host's 128M blocks: every host is an error row."""
    result = run(*gen(fleet, 0, 1), "--plan-size", "100M", "--workers", "1")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        "memplan: error: none of the 2 hosts could be judged (all error rows)"]
    assert "Size must be aligned to memory block size (128M)" in result.stdout
    doc = json.loads(run(*gen(fleet, 0, 1), "--plan-size", "100M", "--json").stdout)
    assert doc["summary"]["errors"] == doc["summary"]["hosts"] == 2
    assert doc["warnings"] == ["2 of 2 hosts could not be judged (error rows)"]
    assert run(*gen(fleet, 0), os.path.join(fleet, "missing.toml"), "--workers", "1").exit_code == 0


def _types(value):
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value[:1]]
    return type(value).__name__


@pytest.mark.parametrize("mode", [[], ["--plan-size", "256M"], ["--unplug-by", "64M"]])
def test_error_rows_have_the_keys_and_types_of_every_row(fleet, mode):
    hosts = gen(fleet, 0, 2)
    result = run(*hosts, os.path.join(fleet, "missing.toml"), *mode, "--json", "--workers", "1")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    good, bad = doc["hosts"][0], doc["hosts"][-1]
    assert bad["error"] == "no such file or directory" and good["error"] is None
    assert good["zones"] and good["warnings"] == []
    assert set(good) == set(bad)
    scalars = {k for k, v in good.items() if not isinstance(v, (list, dict))}
    # an error row's INPUT is neither a profile nor a tree: its source_kind is null
    nullable = {"machine", "semantics", "error", "source_kind"}
    assert bad["source_kind"] is None and good["source_kind"] == "profile"
    assert {k: _types(good[k]) for k in scalars - nullable} == {k: _types(bad[k]) for k in scalars - nullable}
    assert all(bad[k] == 0 for k in scalars - nullable - {"asked_bytes"} if isinstance(bad[k], int))
    # what was asked of the host stays in its row (simulate asks no size)
    assert bad["asked_bytes"] == {"--plan-size": 256 << 20, "--unplug-by": 64 << 20}.get(mode[0] if mode else "", 0)
    for key in ("offlinable_bytes_by_confidence", "achieved_bytes_by_confidence"):
        assert list(good[key]) == list(bad[key]) == ["certain", "likely", "unknown"]
        assert bad[key] == {"certain": 0, "likely": 0, "unknown": 0}
    assert sum(good["offlinable_bytes_by_confidence"].values()) == good["offlinable_bytes"]
    assert isinstance(doc["warnings"], list) and doc["trust"] == "likely"
    summary = doc["summary"]
    assert sum(summary["offlinable_bytes_by_confidence"].values()) == summary["offlinable_bytes"]
    assert isinstance(summary["asked_bytes"], int) and isinstance(summary["unknown_blocks"], int)
    if not mode:  # simulate asks no size
        assert good["asked_bytes"] == good["achieved_bytes"] == summary["asked_bytes"] == 0
        assert good["achieved_bytes_by_confidence"] == {"certain": 0, "likely": 0, "unknown": 0}
    else:
        assert good["achieved_bytes_by_confidence"] == good["offlinable_bytes_by_confidence"]
        assert sum(good["achieved_bytes_by_confidence"].values()) == good["achieved_bytes"]


def _simulate(host: str):
    args = ["--sysroot", host] if os.path.isdir(host) else [host]
    return json.loads(CliRunner().invoke(main, ["simulate", *args, "--json"]).stdout)


#: A live 24 GiB host whose snapshot leaves most verdicts unknown (no kpagecount).
HOST_24G = os.path.join(FIXTURES, "host-6.18-24g")


@pytest.mark.parametrize("mode, tree", [([], HOST_24G), (["--plan-size", "512M"], HOST_24G),
                                        (["--unplug-by", "512M"], "snapshots/qemu-6.1-post1")])
def test_unknown_blocks_and_the_confidence_split_in_every_mode(fleet, mode, tree):
    """Snapshots cannot see everything: fleet counts unknown verdicts and splits the memory by
    confidence in every mode (profiles: all certain)."""
    snapshot = os.path.join(fleet, tree)
    doc = json.loads(run(snapshot, *gen(fleet, 0), *mode, "--json", "--workers", "1").stdout)
    rows = {h["host"]: h for h in doc["hosts"]}
    snap, profile = rows[snapshot], rows[gen(fleet, 0)[0]]
    assert snap["error"] is None and profile["error"] is None
    assert profile["offlinable_bytes_by_confidence"]["certain"] == profile["offlinable_bytes"]
    assert profile["unknown_blocks"] == 0
    assert sum(snap["offlinable_bytes_by_confidence"].values()) == snap["offlinable_bytes"]
    assert 0 <= snap["unknown_blocks"] <= snap["blocks"]
    assert doc["summary"]["unknown_blocks"] == snap["unknown_blocks"]
    total = doc["summary"]["offlinable_bytes_by_confidence"]
    for level in ("certain", "likely", "unknown"):
        assert total[level] == snap["offlinable_bytes_by_confidence"][level] + \
            profile["offlinable_bytes_by_confidence"][level]
    if not mode:
        verdicts = _simulate(snapshot)["blocks"]
        assert snap["unknown_blocks"] == sum(v["confidence"] == "unknown" for v in verdicts) > 0
        for level in ("certain", "likely", "unknown"):
            assert snap["offlinable_bytes_by_confidence"][level] == sum(
                v["end"] - v["start"] + 1 for v in verdicts if v["confidence"] == level and v["result"] == "offlined")
    elif mode[0] == "--plan-size":
        attempts = json.loads(CliRunner().invoke(main, ["plan", "--sysroot", snapshot, "--size", "512M",
                                                        "--json"]).stdout)["attempts"]
        # A plan attempt that carries no confidence (before interface I2) is as unsure as can be.
        assert snap["blocks"] == len(attempts)
        assert snap["unknown_blocks"] == sum(a.get("confidence") in (None, "unknown") for a in attempts)


def test_check_counts_only_trusted_memory(fleet):
    """--check (and "Hosts reaching it") count certain and likely memory; --trust unknown all."""
    snapshot = os.path.join(fleet, "snapshots", "qemu-6.1-post1")
    hosts = [snapshot, *gen(fleet, 0, 3)]
    for mode in ([], ["--plan-size", "512M"]):
        doc = json.loads(run(*hosts, *mode, "--json", "--workers", "1").stdout)
        for trust, levels in (("likely", ("certain", "likely")), ("unknown", ("certain", "likely", "unknown"))):
            reached = 0
            for h in doc["hosts"]:
                counted = sum(h["offlinable_bytes_by_confidence"][level] for level in levels)
                reached += counted > 0 if not mode else counted >= h["asked_bytes"]
            expected = 0 if reached == len(hosts) else 64 if reached else 1
            result = run(*hosts, *mode, "--check", "--trust", trust, "--workers", "1")
            assert result.exit_code == expected, (mode, trust, result.output)
            if mode:
                assert f"Hosts reaching it:  {reached} of {len(hosts)}" in result.stdout


def test_confidence_split_in_the_summary(fleet):
    result = run(HOST_24G, *gen(fleet, 0), "--workers", "1")
    doc = json.loads(run(HOST_24G, *gen(fleet, 0), "--json", "--workers", "1").stdout)
    assert doc["summary"]["unknown_blocks"] > 0
    split = ConfidenceBytes(**doc["summary"]["offlinable_bytes_by_confidence"])
    assert (f"  by confidence:    certain {format_size(split.certain)}, likely {format_size(split.likely)}, "
            f"unknown {format_size(split.unknown)}") in result.stdout
    assert f"Unknown blocks:     {doc['summary']['unknown_blocks']} " in result.stdout


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e9", "soon"])
def test_host_timeout_must_be_a_sane_number_of_seconds(fleet, value):
    result = run(*gen(fleet, 0), "--host-timeout", value)
    assert result.exit_code == 2
    assert "--host-timeout" in result.output and "Traceback" not in result.output


def test_a_host_past_its_time_limit_is_an_error_row(tmp_path, fleet):
    big = write_big_fleet(str(tmp_path / "big"), hosts=1, size_gib=4096)
    result = run(big, os.path.join(fleet, "missing.toml"), "--host-timeout", "0.3", "--jsonl", "--workers", "1")
    assert result.exit_code == 2, result.output
    rows = {os.path.basename(d["host"]): d for d in map(json.loads, result.stdout.splitlines())}
    assert rows["big-0.toml"]["error"] == "timed out after 0.3 s (--host-timeout)"
    assert rows["big-0.toml"]["machine"] is None and rows["big-0.toml"]["blocks"] == 0


# ---- signals ----------------------------------------------------------------------------

#: What memplan's CLI does on SIGTERM and Ctrl-C once interface I5 is in (memplan.core.status
#: ExitStatus.INTERRUPTED / TERMINATED): until then the tests run the CLI under this stand-in,
#: which turns them into exceptions the same way, to check that fleet cleans up after them.
I5 = hasattr(ExitStatus, "INTERRUPTED")
STAND_IN = """
import signal, sys
import click
from memplan.cli import main
class Terminated(BaseException):
    pass
def terminated(signum, frame):
    raise Terminated()
signal.signal(signal.SIGTERM, terminated)
try:
    sys.exit(main.main(sys.argv[1:], prog_name="memplan", standalone_mode=False))
except click.exceptions.Abort:
    sys.stderr.write("memplan: interrupted\\n")
    sys.exit(130)
except Terminated:
    sys.stderr.write("memplan: terminated\\n")
    sys.exit(143)
"""


def _session_processes(sid: int):
    out = subprocess.run(["ps", "-s", str(sid), "-o", "pid=,stat=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split()[1:2] != ["Z"] and line.split()[1:2] != ["Z+"]]


def _signal_fleet(args, sig, group: bool):
    """Start ``memplan fleet ARGS --jsonl`` in its own session (Ctrl-C goes to the whole
    process group, as a terminal sends it), send ``sig`` once the first host is answered,
    return (exit status, stderr, leftover processes)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    command = ["-m", "memplan"] if I5 else ["-c", STAND_IN]
    proc = subprocess.Popen([sys.executable, *command, "fleet", *args, "--jsonl"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline(), proc.stderr.read()
        if group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
        deadline = time.monotonic() + 15
        while _session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        return proc.returncode, err, _session_processes(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


NEEDS_DASK = pytest.mark.skipif(not importlib.util.find_spec("distributed"), reason="dask.distributed is not installed")
BACKENDS = [pytest.param(["--workers", "2"], id="pool"),
            pytest.param(["--dask-local", "2"], id="dask-local", marks=NEEDS_DASK),
            pytest.param(["--scheduler"], id="scheduler", marks=NEEDS_DASK)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sig, group, status", [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143)],
                         ids=["ctrl-c", "sigterm"])
def test_signals_end_the_fleet_with_one_line_and_no_worker_left(request, tmp_path, backend, sig, group, status):
    """Pool workers and the workers of a LocalCluster memplan started end with it, silently;
    someone else's scheduler (here one in the test process) just loses memplan's tasks."""
    if backend == ["--scheduler"]:
        backend = ["--scheduler", request.getfixturevalue("dask_scheduler")]
    big = write_big_fleet(str(tmp_path / "big"), hosts=12, size_gib=512)
    code, err, left = _signal_fleet([big, *backend], sig, group)
    assert "Traceback" not in err and "Error" not in err, err
    assert left == [], left
    assert code == status
    assert len(err.strip().splitlines()) == 1, err
