"""End to end: `memplan snapshot`, `--sysroot`/`--live` in place of PROFILE, --save, the live
machine, and corrupted trees (a hypothesis fuzz test: never a traceback)."""

import errno
import json
import lzma
import os
import shutil

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import bundled, fixture_tree
from memplan.cli import main

POST2 = fixture_tree("qemu-6.1-post2")
HOST = fixture_tree("host-6.18-24g")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(result, needle=""):
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if not line.startswith("memplan: warning:")]
    assert len(errors) == 1 and errors[0].startswith("memplan: error:") and needle in errors[0], result.stderr
    assert "Traceback" not in result.output


def live_unreadable_reason():
    try:
        with open("/proc/kpageflags", "rb") as handle:
            if len(handle.read(8)) != 8:
                return "/proc/kpageflags reads empty here"
    except OSError as exc:
        return f"/proc/kpageflags is not readable here ({exc.strerror}; it needs root and CONFIG_PROC_PAGE_MONITOR)"
    if not os.path.isdir("/sys/devices/system/memory"):
        return "no /sys/devices/system/memory here (no memory hotplug)"
    return None


LIVE_SKIP = live_unreadable_reason()


def test_snapshot_table():
    result = run("snapshot", "--sysroot", POST2)
    assert result.exit_code == 0, result.output
    for needle in ("Movable", "fake_offline", "virtio-mem virtio0", "Semantics:  refcount", "Blind spots"):
        assert needle in result.stdout


def test_snapshot_json_is_stable():
    doc = json.loads(run("snapshot", "--sysroot", POST2, "--json").stdout)
    assert set(doc) == {"memplan", "source", "source_kind", "machine", "kernel", "block_size", "page_size", "pfns",
                        "blocks", "page_classes", "page_flags", "zones", "devices", "semantics", "semantics_reason",
                        "blind_spots", "warnings", "saved_to", "page_size_source", "page_flags_saved"}
    assert doc["semantics"] == "refcount" and doc["kernel"] == "6.1.0-56-amd64"
    assert (doc["source"], doc["source_kind"]) == (str(POST2), "sysroot")
    assert {"state": "online", "zone": "Movable", "blocks": 4, "bytes": 4 << 27} in doc["blocks"]
    (device,) = doc["devices"]
    assert (device["mode"], device["unit_size"], device["plugged_bytes"]) == ("sbm", 2 << 20, 384 << 20)
    assert sum(r["pages"] for r in doc["page_flags"]) == doc["pfns"]


def test_snapshot_page_types_output_is_the_kernels():
    result = run("snapshot", "--sysroot", HOST, "--page-types")
    assert result.exit_code == 0
    with open(os.path.join(HOST, "page-types-summary.txt")) as handle:
        assert result.stdout == handle.read()


def test_simulate_sysroot_json_carries_confidence():
    doc = json.loads(run("simulate", "--sysroot", POST2, "--json").stdout)
    assert doc["semantics_reason"].startswith("none of the 32768 fake-offline pages")
    for block in doc["blocks"]:
        assert block["confidence"] in ("certain", "likely", "unknown")
        assert isinstance(block["blind_spots"], list)
    table = run("simulate", "--sysroot", POST2, "--blocks", "34")
    assert "CONFIDENCE" in table.stdout and "Blind spots" in table.stdout


def test_save_then_read_back(tmp_path):
    dest = tmp_path / "copy"
    saved = run("snapshot", "--sysroot", POST2, "--save", dest, "--json")
    assert saved.exit_code == 0 and json.loads(saved.stdout)["saved_to"] == str(dest)
    again = run("snapshot", "--sysroot", dest, "--page-types")
    assert again.stdout == run("snapshot", "--sysroot", POST2, "--page-types").stdout
    one_error_line(run("snapshot", "--sysroot", POST2, "--save", dest), "not an empty directory")


@pytest.mark.parametrize("args,needle", [
    (["simulate"], "give a PROFILE, --sysroot DIR"),
    (["simulate", bundled("sbm-guest.toml"), "--sysroot", POST2], "PROFILE and --sysroot exclude each other"),
    (["simulate", "--sysroot", POST2, "--live"], "--sysroot and --live exclude each other"),
    (["snapshot"], "give a PROFILE, --sysroot DIR"),
    (["simulate", "--sysroot", "/nonexistent"], "not a directory"),
    (["snapshot", "--sysroot", os.path.dirname(POST2)], "sys/devices/system/memory: missing"),
])
def test_usage_errors(args, needle):
    one_error_line(run(*args), needle)


def test_unreadable_kpageflags_is_one_line(monkeypatch):
    import memplan.snapshot.kpageflags as kpf
    real_open = os.open

    def deny(path, flags, *args):
        if "kpageflags" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *args)

    tree = fixture_tree("host-6.18-24g")
    monkeypatch.setattr(kpf.os, "open", deny)
    monkeypatch.setattr(kpf.os.path, "lexists", lambda p: True if p.endswith("kpageflags") else os.path.exists(p))
    one_error_line(run("snapshot", "--sysroot", tree), "needs root")


@pytest.mark.skipif(LIVE_SKIP is not None, reason=LIVE_SKIP or "")
def test_live_snapshot_save_and_simulate(tmp_path):
    dest = tmp_path / "live"
    result = run("snapshot", "--live", "--json", "--save", dest)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["source"], doc["source_kind"]) == ("live", "live")
    assert doc["pfns"] > 0 and doc["semantics"] in ("refcount", "skippable")
    assert doc["semantics_reason"] and doc["kernel"] == open("/proc/sys/kernel/osrelease").read().strip()
    online = sum(g["blocks"] for g in doc["blocks"] if g["state"] == "online")
    assert sum(c["pages"] for c in doc["page_classes"]) == online * doc["block_size"] // doc["page_size"]
    # the saved tree is exactly what was reported
    saved = json.loads(run("snapshot", "--sysroot", dest, "--json").stdout)
    assert saved["page_flags"] == doc["page_flags"] and saved["page_classes"] == doc["page_classes"]
    assert os.path.exists(dest / "proc" / "kpageflags.xz")
    ids = sorted(int(n[6:]) for n in os.listdir("/sys/devices/system/memory") if n[6:].isdigit())
    sim = run("simulate", "--live", "--json", "--blocks", ",".join(map(str, ids[:2] + ids[-2:])))
    assert sim.exit_code == 0, sim.output
    for block in json.loads(sim.stdout)["blocks"]:
        assert block["confidence"] in ("certain", "likely", "unknown")


# --------------------------------------------------------------------------------------------
# Fuzz: corrupted trees give one clear error line (exit 2) or a normal run, never a traceback.

TARGETS = [
    "proc/kpageflags.xz", "proc/kpagecount.xz", "proc/iomem", "proc/zoneinfo", "proc/osrelease", "proc/meminfo",
    "sys/devices/system/memory/block_size_bytes", "sys/devices/system/memory/memory34/state",
    "sys/devices/system/memory/memory34/valid_zones", "sys/devices/system/memory/memory36/phys_index",
    "sys/devices/system/memory/memory0/valid_zones", "module-params.txt",
]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine") / "post2"
    shutil.copytree(POST2, root)
    with lzma.open(root / "proc" / "kpageflags.xz") as handle:
        raw = handle.read()
    return root, raw


def corrupt(root, raw, target, action, data, fraction):
    path = root / target
    if action == "delete":
        if path.exists():
            path.unlink()
        return
    if action == "short-entries" and target == "proc/kpageflags.xz":
        cut = int(len(raw) * fraction)
        path.write_bytes(lzma.compress(raw[:cut], preset=0))
        return
    content = path.read_bytes() if path.exists() else b""
    if action == "truncate":
        path.write_bytes(content[:int(len(content) * fraction)])
    elif action == "garbage":
        path.write_bytes(data)
    else:  # splice garbage into the middle
        at = int(len(content) * fraction)
        path.write_bytes(content[:at] + data + content[at + len(data):])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(TARGETS),
       action=st.sampled_from(["delete", "truncate", "garbage", "splice", "short-entries"]),
       data=st.binary(min_size=1, max_size=24) | st.sampled_from([b"Foo\n", b"online\n", b"0x\n", b"-1\n",
                                                                    b"Node 0, zone\n", b"zz-yy : System RAM\n"]),
       fraction=st.floats(min_value=0.0, max_value=1.0),
       command=st.sampled_from(["simulate", "snapshot"]))
def test_corrupted_trees_never_trace_back(tmp_path, pristine, target, action, data, fraction, command):
    source, raw = pristine
    root = tmp_path / "tree"
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(source, root)
    corrupt(root, raw, target, action, data, fraction)
    result = run(command, "--sysroot", root, "--json")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        one_error_line(result)
    else:
        json.loads(result.stdout)


def test_garbage_in_valid_zones_names_file_and_value(tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(POST2, root)
    (root / "sys/devices/system/memory/memory34/valid_zones").write_text("Moveable\n")
    one_error_line(run("simulate", "--sysroot", root), "memory34/valid_zones: 'Moveable' is not one zone")


def test_short_kpageflags_names_the_block(tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(POST2, root)
    with lzma.open(root / "proc" / "kpageflags.xz") as handle:
        raw = handle.read()
    (root / "proc" / "kpageflags.xz").write_bytes(lzma.compress(raw[:8 * 36 * 32768 + 800], preset=0))
    one_error_line(run("simulate", "--sysroot", root), "but memory block 36 needs")
