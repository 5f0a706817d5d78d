"""``memplan fleet`` end to end: outputs, exit statuses, errors, --jsonl streaming, Dask."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import ROOT
from fleet_hosts import dask_scheduler, write_fleet  # noqa: F401  (fixture)
from memplan.cli import main

GiB = 1 << 30


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
    for host in hosts:
        plan = json.loads(CliRunner().invoke(main, ["plan", host, "--size", "1G", "--json"]).stdout)
        (row,) = [h for h in doc["hosts"] if h["host"] == host]
        assert (row["asked_bytes"], row["achieved_bytes"]) == (plan["asked_bytes"], plan["achieved_bytes"])
    reached = sum(h["achieved_bytes"] == GiB for h in doc["hosts"])
    assert reached == 1  # one of the three generated hosts reaches 1 GiB (measured)
    assert run(*hosts, "--plan-size", "1G", "--check", "--workers", "1").exit_code == 64
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
