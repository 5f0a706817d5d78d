"""memplan plan / memplan unplug end to end through CliRunner: every exit status and error path."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import HALF_FULL as _HALF_FULL
from conftest import SPARE
from memplan.cli import main
from memplan.profile.reader import load_profile

HALF_FULL = "format = 1\n" + _HALF_FULL

STUCK = """
format = 1
[[ram]]
start = "0"
size = "128MiB"
zone = "Normal"

[[pages]]
pfn = "0x100"
kind = "slab"
"""

SBM = SPARE + """
[[virtio_mem]]
id = "vmem0"
addr = "4GiB"
region_size = "256MiB"
block_size = "2MiB"
plugged = ["0-127"]
online = "movable"
driver = "{driver}"

[[fill]]
blocks = "vmem0"
seed = 5
anon = 0.3

[[pages]]
pfn = "0x100a11"
kind = "slab"
"""


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args])
    return invoke


@pytest.fixture
def profiles(write_profile):
    return {
        "half": write_profile(HALF_FULL, "half.toml"),
        "stuck": write_profile(STUCK, "stuck.toml"),
        "sbm": write_profile(SBM.format(driver="loaded"), "sbm.toml"),
        "unloaded": write_profile(SBM.format(driver="unloaded"), "unloaded.toml"),
    }


def one_error_line(result, needle):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith(("memplan: error:", "Error:")) and needle in result.output
    assert "Traceback" not in result.output


# ---- plan ------------------------------------------------------------------------------------

def test_plan_table(run, profiles):
    result = run("plan", profiles["half"], "--size", "384M")
    assert result.exit_code == 0
    assert "hangs" in result.output and "Achieved:           128M" in result.output and "Left online" in result.output


@pytest.mark.parametrize("profile,size,status", [("half", "128M", 0), ("half", "384M", 64), ("stuck", "128M", 1),
                                                 ("half", "0", 0)])
def test_plan_check_exit_status(run, profiles, profile, size, status):
    assert run("plan", profiles[profile], "--size", size, "--check").exit_code == status


def test_plan_json(run, profiles):
    result = run("plan", profiles["half"], "--size", "384M", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert (doc["asked_bytes"], doc["achieved_bytes"]) == (384 << 20, 128 << 20)
    assert [(a["block"], a["result"], a["errno"]) for a in doc["attempts"]] == \
        [(3, "offlined", None), (2, "hangs", "EINTR"), (1, "hangs", "EINTR"), (0, "hangs", "EINTR")]
    assert doc["attempts"][1]["reason"] == "signal backoff" and doc["attempts"][1]["culprit"]["kind"] == "anon"
    left = doc["left"]
    assert left["free_bytes"] == 16384 * 4096 and left["zones"] == [
        {"node": 0, "zone": "Normal", "free_bytes": 16384 * 4096, "total_bytes": 3 << 27}]
    assert left["nodes"] == [{"node": 0, "free_bytes": 16384 * 4096, "total_bytes": 3 << 27}]
    assert doc["offlined"] == [3] and "Could only disable 128M of memory" in doc["warnings"]


def test_plan_write_profile(run, profiles, tmp_path):
    out = tmp_path / "after.toml"
    result = run("plan", profiles["half"], "--size", "128M", "--write-profile", out)
    assert result.exit_code == 0
    machine = load_profile(str(out))
    assert list(machine.blocks.state) == [0, 0, 0, 1]
    again = run("plan", out, "--size", "128M", "--json")
    assert [a["block"] for a in json.loads(again.stdout)["attempts"]] == [2, 1, 0]


@pytest.mark.parametrize("args,needle", [
    (["--size", "100M"], "Size must be aligned to memory block size (128M)"),
    (["--size", "big"], "--size:"),
    (["--size", "128M", "--blocks", "x"], "--blocks:"),
    (["--size", "128M", "--blocks", "77"], "memory block 77 does not exist"),
    (["--size", "128M", "--zone", "Nowhere"], "Invalid value for '--zone'"),
])
def test_plan_bad_input(run, profiles, args, needle):
    one_error_line(run("plan", profiles["half"], *args), needle)


def test_plan_missing_profile(run):
    one_error_line(run("plan", "/nonexistent.toml", "--size", "128M"), "cannot read")


def test_plan_unwritable_profile(run, profiles, tmp_path):
    one_error_line(run("plan", profiles["half"], "--size", "128M", "--write-profile", tmp_path / "no" / "x.toml"),
                   "cannot write")


# ---- unplug ----------------------------------------------------------------------------------

def test_unplug_table(run, profiles):
    result = run("unplug", profiles["sbm"], "--device", "vmem0", "--to", "0")
    assert result.exit_code == 0
    assert "MOVABLE_PARTIAL" in result.output and "slab@0x100a11" in result.output
    assert "then every 300s" in result.output


@pytest.mark.parametrize("profile,args,status", [
    ("sbm", ["--by", "128M"], 0),        # reached
    ("sbm", ["--to", "0"], 64),          # all but the slab sub-block
    ("unloaded", ["--to", "0"], 1),      # nobody acts on requested-size
])
def test_unplug_check_exit_status(run, profiles, profile, args, status):
    assert run("unplug", profiles[profile], *args, "--check").exit_code == status


def test_unplug_json(run, profiles):
    result = run("unplug", profiles["sbm"], "--to", "0", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert (doc["device"], doc["mode"], doc["requested_bytes"], doc["plugged_before_bytes"],
            doc["plugged_after_bytes"], doc["achieved_bytes"]) == ("vmem0", "sbm", 0, 256 << 20, 2 << 20, 254 << 20)
    b32, b33 = doc["blocks"]
    assert (b32["state_before"], b32["state_after"], b32["plugged_subblocks_left"]) == \
        ("MOVABLE", "MOVABLE_PARTIAL", [5])
    assert len(b32["unplugged_subblocks"]) == 63 and b33["state_after"] == "UNUSED"
    culprit = [c for c in b32["culprits"] if c["subblock"] == 5][0]
    assert (culprit["kind"], culprit["pfn"], culprit["errno"], culprit["step"], culprit["attempts"]) == \
        ("slab", 0x100a11, "EBUSY", "test_isolated", 5)
    assert doc["stop"] == "busy" and doc["errno"] == "EBUSY"
    assert doc["next_retries_seconds"] == [50, 150, 350, 650] and doc["retry_every_seconds"] == 300
    assert [r["trigger"] for r in doc["runs"]] == ["request", "immediate"]


def test_unplug_write_profile(run, profiles, tmp_path):
    out = tmp_path / "after.toml"
    assert run("unplug", profiles["sbm"], "--by", "128M", "--write-profile", out).exit_code == 0
    machine = load_profile(str(out))
    assert machine.devices[0].plugged_size == 128 << 20 and 33 not in machine.blocks.ids.tolist()


def test_unplug_sweep(run, profiles, tmp_path):
    svg = tmp_path / "curve.svg"
    result = run("unplug", profiles["sbm"], "--sweep", "--svg", svg)
    assert result.exit_code == 0 and "Floor:              2M" in result.output
    assert svg.read_text().startswith("<svg")
    doc = json.loads(run("unplug", profiles["sbm"], "--sweep", "--json", "--step", "64M").stdout)
    assert [p["plugged_after_bytes"] >> 20 for p in doc["points"]] == [2, 64, 128, 192, 256]
    assert doc["floor_bytes"] == 2 << 20


@pytest.mark.parametrize("args,needle", [
    (["--to", "0", "--by", "2M"], "exactly one of --to SIZE and --by SIZE"),
    ([], "exactly one of --to SIZE and --by SIZE"),
    (["--sweep", "--to", "0"], "drop --to/--by"),
    (["--sweep", "--check"], "need one request"),
    (["--to", "0", "--svg", "x.svg"], "only apply to --sweep"),
    (["--to", "3M"], "not a multiple of the device block size"),
    (["--to", "1G"], "plug request"),
    (["--by", "1G"], "more than the plugged size"),
    (["--to", "lots"], "--to:"),
    (["--device", "vmem7", "--to", "0"], "did you mean 'vmem0'?"),
])
def test_unplug_bad_input(run, profiles, args, needle):
    one_error_line(run("unplug", profiles["sbm"], *args), needle)


def test_unplug_without_a_device(run, profiles):
    one_error_line(run("unplug", profiles["half"], "--to", "0"), "has no virtio-mem device")
