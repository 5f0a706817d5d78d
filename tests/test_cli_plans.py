"""memplan plan / memplan unplug end to end through CliRunner: every exit status and error path."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import HALF_FULL as _HALF_FULL
from conftest import SPARE, fixture_tree
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
    result = run("plan", profiles["half"], "--size", "384M", "--skip-hangs")
    assert result.exit_code == 0
    assert "hangs" in result.output and "Achieved:           128M" in result.output and "Left online" in result.output
    # chmem's own last words when SIZE is not reached (warnx("Could only disable %s of memory"))
    assert result.stdout.splitlines()[-1] == "Could only disable 128M of memory"
    assert "Asked:              384M (3 blocks of 128M)" in result.stdout
    one = run("plan", profiles["half"], "--size", "128M", "--skip-hangs")
    assert "Asked:              128M (1 block of 128M)" in one.stdout


def test_plan_stops_where_chmem_would_hang(run, profiles):
    result = run("plan", profiles["half"], "--size", "384M")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert [line.split()[:5] for line in lines[1:3]] == [["1", "3", "0x0000000018000000-0x000000001fffffff",
                                                          "Normal", "offlined"],
                                                         ["2", "2", "0x0000000010000000-0x0000000017ffffff",
                                                          "Normal", "hangs"]]
    assert not lines[3].strip()  # two writes: chmem blocks in the second one
    assert lines[-1] == "chmem would hang at block 2 (anon page 0x10000): Ctrl-C ends chmem with 128M offlined"
    assert "Could only disable" not in result.output  # SIGINT kills chmem before it could say so
    assert run("plan", profiles["half"], "--size", "384M", "--check").exit_code == 64


@pytest.mark.parametrize("profile,size,status", [("half", "128M", 0), ("half", "384M", 64), ("stuck", "128M", 1),
                                                 ("half", "0", 0)])
def test_plan_check_exit_status(run, profiles, profile, size, status):
    assert run("plan", profiles[profile], "--size", size, "--check", "--skip-hangs").exit_code == status


def test_plan_json(run, profiles):
    result = run("plan", profiles["half"], "--size", "384M", "--json", "--skip-hangs")
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
    assert doc["offlined"] == [3] and doc["end"] == "Could only disable 128M of memory"
    assert (doc["skip_hangs"], doc["hang_block"]) == (True, None)
    doc = json.loads(run("plan", profiles["half"], "--size", "384M", "--json").stdout)
    assert [a["block"] for a in doc["attempts"]] == [3, 2] and (doc["skip_hangs"], doc["hang_block"]) == (False, 2)
    assert doc["end"] == "chmem would hang at block 2 (anon page 0x10000): Ctrl-C ends chmem with 128M offlined"


def test_plan_write_profile(run, profiles, tmp_path):
    out = tmp_path / "after.toml"
    result = run("plan", profiles["half"], "--size", "128M", "--write-profile", out)
    assert result.exit_code == 0
    machine = load_profile(str(out))
    assert list(machine.blocks.state) == [0, 0, 0, 1]
    again = run("plan", out, "--size", "128M", "--json", "--skip-hangs")
    assert [a["block"] for a in json.loads(again.stdout)["attempts"]] == [2, 1, 0]


@pytest.mark.parametrize("args,needle", [
    (["--size", "100M"], "--size 100M is 100M: Size must be aligned to memory block size (128M)"),
    (["--size", "512MB"], "--size 512MB is 488.3M: Size must be aligned to memory block size (128M)"),
    (["--size", "big"], "--size: 'big' is not a size (no number; chmem: Failed to parse size: 'big'; examples: 512M, "
                        "1G, 1.5G, 4GiB, 512 (MiB)"),
    # chmem reads 0x1000 as 4096 MiB (it ends in a digit); 0x1000K is 4096 KiB
    (["--size", "0x1000K"], "--size 0x1000K is 4M: Size must be aligned to memory block size (128M)"),
    # util-linux adds the fraction's digits one at a time, truncating: 0.25G is 268435455 bytes
    (["--size", "0.25G"], "--size 0.25G is 256M: Size must be aligned to memory block size (128M)"),
    (["--size", "0x1F"], "--size 0x1F is 31B: Size must be aligned to memory block size (128M)"),
    (["--size", "17592186044416"], "'17592186044416' MiB is past 2^64 - 1 bytes (16E)"),
    (["--size", "128M", "--blocks", "x"], "--blocks:"),
    (["--size", "128M", "--zone", "Nowhere"], "Invalid value for '--zone'"),
])
def test_plan_bad_input(run, profiles, args, needle):
    result = run("plan", profiles["half"], *args)
    one_error_line(result, needle)
    assert "4096" not in result.output


@pytest.mark.parametrize("size,blocks", [("128", [3]), ("256M", [3, 2]), ("0.5G", [3, 2]), ("256MiB", [3, 2]),
                                         ("268435456B", None),
                                         # strtoumax(str, &end, 0) in parse_size(): hex and octal digits, and
                                         # chmem reads a SIZE that ends in a digit as MiB
                                         ("0x100", [3, 2]), ("0200", [3])])
def test_plan_sizes_as_chmem_reads_them(run, profiles, size, blocks):
    result = run("plan", profiles["half"], "--size", size, "--json", "--skip-hangs")
    if blocks is None:  # "268435456B": B alone is no suffix util-linux knows
        one_error_line(result, "--size: '268435456B' is not a size (unknown suffix 'B'")
    else:
        assert [a["block"] for a in json.loads(result.stdout)["attempts"]][:len(blocks)] == blocks


def test_plan_blocks_are_spans_and_absent_blocks_are_skipped(run, profiles):
    result = run("plan", profiles["half"], "--size", "128M", "--blocks", "2-20000000000", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert [a["block"] for a in doc["attempts"]] == [3] and doc["candidates"] == 2
    assert "memplan: warning: --blocks: 19999999997 blocks not on half (4-20000000000): skipped, as chmem only " \
           "writes to the memoryN directories that exist" in result.stderr
    absent = run("plan", profiles["half"], "--size", "128M", "--blocks", "77", "--check")
    assert absent.exit_code == 1 and absent.stdout.splitlines()[-1] == "Could only disable 0B of memory"


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


# ---- confidence (issue 13 §1) ------------------------------------------------------------------

LEVELS = ["certain", "likely", "unknown"]


def test_plan_on_a_profile_is_certain(run, profiles):
    doc = json.loads(run("plan", profiles["half"], "--size", "384M", "--json", "--skip-hangs").stdout)
    assert {(a["confidence"], tuple(a["blind_spots"])) for a in doc["attempts"]} == {("certain", ())}
    assert doc["achieved_bytes_by_confidence"] == {"certain": 128 << 20, "likely": 0, "unknown": 0}


def test_plan_attempts_on_a_snapshot_carry_confidence(run):
    tree = fixture_tree("qemu-6.1-post2")
    result = run("plan", "--sysroot", tree, "--size", "1G", "--json", "--skip-hangs")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    attempts = doc["attempts"]
    assert all(a["confidence"] in LEVELS and isinstance(a["blind_spots"], list) for a in attempts)
    assert all(a["blind_spots"] for a in attempts if a["confidence"] != "certain")
    split = doc["achieved_bytes_by_confidence"]
    assert sorted(split) == sorted(LEVELS) and sum(split.values()) == doc["achieved_bytes"]
    assert split == {"certain": 0, "likely": 3 << 27, "unknown": 0}  # blocks 36, 34, 33
    # the first write judges the machine as simulate does: the same confidence and blind spots
    first = attempts[0]
    alone = json.loads(run("simulate", "--sysroot", tree, "--blocks", first["block"], "--json").stdout)["blocks"][0]
    assert (first["confidence"], first["blind_spots"]) == (alone["confidence"], alone["blind_spots"]) != \
        ("certain", [])
    table = run("plan", "--sysroot", tree, "--size", "1G", "--skip-hangs").stdout
    assert "By confidence:      certain 0B, likely 384M, unknown 0B" in table


def test_plan_check_counts_only_trusted_memory(run):
    # host-6.18-24g: the highest blocks offline, but the snapshot cannot decide them (unknown)
    tree = fixture_tree("host-6.18-24g")
    args = ["plan", "--sysroot", tree, "--size", "256M", "--blocks", "198-199"]
    doc = json.loads(run(*args, "--json").stdout)
    assert [(a["block"], a["result"], a["confidence"]) for a in doc["attempts"]] == \
        [(199, "offlined", "unknown"), (198, "offlined", "unknown")]
    assert run(*args, "--check").exit_code == 1
    assert run(*args, "--check", "--trust", "likely").exit_code == 1
    assert run(*args, "--check", "--trust", "unknown").exit_code == 0


def test_unplug_says_when_it_relies_on_a_likely_block(run):
    tree = fixture_tree("qemu-6.1-post1")
    result = run("unplug", "--sysroot", tree, "--by", "512M", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    (b36,) = [b for b in doc["blocks"] if b["block"] == 36]
    assert b36["state_after"] == "UNUSED" and b36["confidence"] == "likely"
    assert b36["blind_spots"] == ["LRU pages may carry extra references (vmsplice, pins) a snapshot cannot see"]
    assert doc["achieved_bytes_by_confidence"] == {"certain": 0, "likely": 512 << 20, "unknown": 0}
    assert doc["caveats"][0] == ("the unplug relies on blocks 35-37, rated likely: LRU pages may carry extra "
                                 "references (vmsplice, pins) a snapshot cannot see")
    table = run("unplug", "--sysroot", tree, "--by", "512M")
    assert "Caveat:             the unplug relies on blocks 35-37, rated likely" in table.stdout
    assert "By confidence:      certain 0B, likely 512M, unknown 0B" in table.stdout
    assert run("unplug", "--sysroot", tree, "--by", "512M", "--check").exit_code == 0  # likely is trusted


def test_unplug_on_a_profile_is_certain(run, profiles):
    doc = json.loads(run("unplug", profiles["sbm"], "--to", "0", "--json").stdout)
    assert {b["confidence"] for b in doc["blocks"] if b["visited"]} == {"certain"} and doc["caveats"] == []
    assert doc["achieved_bytes_by_confidence"] == {"certain": 254 << 20, "likely": 0, "unknown": 0}
