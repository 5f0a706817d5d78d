"""Saved trees as they really come (issue 13 §2-§3, issue 14 §2-§3): special files where a file
belongs, gaps between blocks, out-of-range ids, kpageflags read only as far as the memory map
needs; sysfs-only trees (what ``lsmem --sysroot`` reads); page sizes other than 4 KiB."""

import json
import lzma
import os
import shutil

import pytest
from click.testing import CliRunner

from conftest import fixture_tree
from memplan.cli import main

POST2 = fixture_tree("qemu-6.1-post2")
MEMORY = "sys/devices/system/memory"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(result, needle=""):
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if not line.startswith("memplan: warning:")]
    assert len(errors) == 1 and errors[0].startswith("memplan: error:") and needle in errors[0], result.stderr
    assert "Traceback" not in result.output


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(POST2, root, symlinks=True)
    return root


def raw_kpageflags(root) -> str:
    with lzma.open(root / "proc" / "kpageflags.xz") as handle:
        data = handle.read()
    os.unlink(root / "proc" / "kpageflags.xz")
    (root / "proc" / "kpageflags").write_bytes(data)
    return str(root / "proc" / "kpageflags")


# ---- special files -----------------------------------------------------------------------------

@pytest.mark.parametrize("rel", ["proc/kpageflags.xz", "proc/kpagecount.xz", f"{MEMORY}/block_size_bytes",
                                 f"{MEMORY}/memory33/state", f"{MEMORY}/memory33/valid_zones", "proc/iomem",
                                 "proc/zoneinfo", "proc/osrelease"])
@pytest.mark.parametrize("command", ["simulate", "snapshot"])
def test_a_fifo_is_refused_naming_it(tree, rel, command):
    os.unlink(tree / rel)
    os.mkfifo(tree / rel)
    one_error_line(run(command, "--sysroot", tree), f"{tree / rel}: is a FIFO, not a regular file")


def test_a_device_as_kpageflags_is_refused(tree):
    path = raw_kpageflags(tree)
    os.unlink(path)
    os.symlink("/dev/zero", path)
    one_error_line(run("snapshot", "--sysroot", tree), f"{path}: is a character device, not a regular file")


def test_a_directory_as_a_file_is_refused(tree):
    rel = f"{MEMORY}/memory33/state"
    os.unlink(tree / rel)
    os.mkdir(tree / rel)
    one_error_line(run("simulate", "--sysroot", tree), f"{tree / rel}: is a directory, not a regular file")


def test_kpageflags_is_read_only_as_far_as_the_blocks_go(tree):
    """A sparse 1 TiB kpageflags: the report covers the memory blocks, not the file."""
    path = raw_kpageflags(tree)
    real = os.path.getsize(path) // 8
    os.truncate(path, 1 << 40)
    result = run("snapshot", "--sysroot", tree, "--json")
    assert result.exit_code == 0, result.output
    import json
    doc = json.loads(result.stdout)
    last = max(int(n[6:]) for n in os.listdir(tree / MEMORY) if n.startswith("memory") and n[6:].isdigit())
    assert doc["pfns"] == (last + 1) * 32768 <= real


# ---- gaps and ids ------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["simulate", "snapshot"])
def test_a_block_missing_inside_a_virtio_mem_range(tree, command):
    shutil.rmtree(tree / MEMORY / "memory33")
    result = run(command, "--sysroot", tree, "--json")
    assert result.exit_code == 0, result.output
    assert '"block": 33' not in result.stdout


def test_a_device_resource_over_boot_memory_never_traces_back(tree):
    """A corrupted iomem whose virtio-mem device starts below 4 GiB, where memory8..31 are
    missing (once a KeyError)."""
    path = tree / "proc" / "iomem"
    text = path.read_text().replace("100000000-1ffffffff : virtio0", "40000000-1ffffffff : virtio0")
    path.write_text(text.replace("  100000000-117ffffff : System RAM (virtio_mem)",
                                 "  40000000-117ffffff : System RAM (virtio_mem)"))
    result = run("simulate", "--sysroot", tree, "--json")
    assert result.exit_code in (0, 2) and result.exception is None or isinstance(result.exception, SystemExit)


def test_a_node_id_beyond_max_numnodes(tree):
    os.symlink("../../node/node0", tree / MEMORY / "memory33" / "node4000000000")
    one_error_line(run("simulate", "--sysroot", tree), "node 4000000000 is out of range (MAX_NUMNODES is at most 1024")


def test_a_block_id_beyond_any_physical_address(tree):
    shutil.copytree(tree / MEMORY / "memory33", tree / MEMORY / "memory9223372036854775808")
    one_error_line(run("simulate", "--sysroot", tree), "block 9223372036854775808 would start at")


# ---- sysfs-only trees --------------------------------------------------------------------------

def sysfs_tree(tmp_path, name):
    from lsmem_trees import TREES

    return TREES[name].write(str(tmp_path / name))


def simulate_json(*args):
    result = run("simulate", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result


NO_FLAGS = ("no page flags saved (proc/kpageflags): what the block's pages hold is not known; "
            "`memplan snapshot --save DIR` on the machine saves a tree that has them")


def test_a_sysfs_only_tree_gets_a_verdict_for_every_block(tmp_path):
    root = sysfs_tree(tmp_path, "x86_64")
    doc, result = simulate_json("--sysroot", root, "--blocks", "0-23,32-47")
    verdicts = {b["block"]: b for b in doc["blocks"]}
    assert sorted(verdicts) == list(range(0, 24)) + list(range(32, 48))
    # valid_zones "none": the block spans zones, memory_block_offline() fails -EINVAL, whatever its pages
    zero = verdicts[0]
    assert (zero["result"], zero["errno"], zero["step"], zero["confidence"], zero["blind_spots"]) == (
        "fails", "EINVAL", "zone", "certain", [])
    for block in (44, 45):  # already offline: state_store() refuses, certain
        v = verdicts[block]
        assert (v["result"], v["errno"], v["step"], v["confidence"]) == ("fails", "EINVAL", "state", "certain")
    from memplan.snapshot.confidence import REMOVABLE_ZERO
    not_removable = (7, 15, 22, 23, 32, 33, 34)  # removable 0: the kernel's own rating (before 5.8)
    for block in list(range(1, 24)) + list(range(32, 44)) + [47]:
        assert verdicts[block]["confidence"] == "unknown", block
        assert verdicts[block]["blind_spots"] == [NO_FLAGS] + ([REMOVABLE_ZERO] if block in not_removable else [])
    warnings = [w for w in result.stderr.splitlines() if "no page flags saved" in w]
    assert len(warnings) == 1 and "memplan snapshot --save DIR" in warnings[0]


def test_a_sysfs_only_tree_in_snapshot_lists_its_blocks_then_says_what_is_missing(tmp_path):
    root = sysfs_tree(tmp_path, "s390")
    result = run("snapshot", "--sysroot", root)
    assert result.exit_code == 0, result.output
    first = result.stdout.split("\n\n")[0].splitlines()
    assert first[0].split() == ["RANGE", "SIZE", "STATE", "REMOVABLE", "BLOCK", "ZONES"]
    assert any(line.split()[-2:] == ["17", "Normal/Movable"] for line in first)
    assert "no page flags saved" in result.stdout
    doc = json.loads(run("snapshot", "--sysroot", root, "--json").stdout)
    assert (doc["pfns"], doc["page_flags_saved"], doc["page_classes"]) == (0, False, [])
    assert NO_FLAGS in doc["blind_spots"]


def test_an_online_block_listing_two_zones_is_judged_in_its_own(tmp_path):
    root = sysfs_tree(tmp_path, "s390")
    doc, _ = simulate_json("--sysroot", root, "--blocks", "17,18")
    assert [(b["block"], b["zone"]) for b in doc["blocks"]] == [(17, "Normal"), (18, "Movable")]


# ---- page size ---------------------------------------------------------------------------------

def test_16k_pages_from_the_hugetlb_sizes_and_ids_from_8192(tmp_path):
    root = sysfs_tree(tmp_path, "arm64_16k")
    result = run("snapshot", "--sysroot", root, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["page_size"] == 16384 and doc["page_size_source"].startswith("guessed from the hugetlb sizes")
    assert "page size 16 KiB guessed" in result.stderr
    doc, _ = simulate_json("--sysroot", root, "--blocks", "8192,8319")
    assert [b["block"] for b in doc["blocks"]] == [8192, 8319]
    # 16 KiB pages: 8192 per 128 MiB block; what they hold is not known (no page flags)
    assert all(b["pages"]["total"] == (128 << 20) // 16384 and b["pages"]["free"] is None for b in doc["blocks"])


def test_without_evidence_4k_is_assumed_and_said(tmp_path):
    root = sysfs_tree(tmp_path, "x86_64")
    result = run("snapshot", "--sysroot", root, "--json")
    assert json.loads(result.stdout)["page_size"] == 4096
    assert "page size 4 KiB assumed: the tree has nothing to tell it by" in result.stderr


def test_page_size_inferred_from_meminfo_and_zoneinfo():
    doc = json.loads(run("snapshot", "--sysroot", POST2, "--json").stdout)
    assert doc["page_size"] == 4096
    assert doc["page_size_source"] == "inferred: /proc/meminfo MemTotal over the managed pages in /proc/zoneinfo"


def test_page_size_inferred_from_zone_spans(tree):
    os.unlink(tree / "proc" / "meminfo")
    doc = json.loads(run("snapshot", "--sysroot", tree, "--json").stdout)
    assert doc["page_size"] == 4096 and "zone spans" in doc["page_size_source"]


def test_save_records_the_page_size(tmp_path):
    dest = tmp_path / "saved"
    result = run("snapshot", "--sysroot", POST2, "--save", dest)
    assert result.exit_code == 0, result.output
    assert (dest / "memplan-page-size").read_text() == "4096\n"
    (dest / "proc" / "meminfo").unlink()
    doc = json.loads(run("snapshot", "--sysroot", dest, "--json").stdout)
    assert doc["page_size_source"] == "recorded by memplan snapshot --save (memplan-page-size)"


def test_a_bad_recorded_page_size_is_refused(tree):
    (tree / "memplan-page-size").write_text("4097\n")
    one_error_line(run("simulate", "--sysroot", tree), "memplan-page-size: '4097' is not a page size")


def test_short_kpageflags_with_16k_pages_names_the_real_end_pfn(tmp_path):
    root = sysfs_tree(tmp_path, "arm64_16k")
    with open(os.path.join(root, "memplan-page-size"), "w") as handle:
        handle.write("16384\n")
    ppb = (128 << 20) // 16384
    end = 8200 * ppb + 100
    path = os.path.join(root, "proc", "kpageflags")
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as handle:
        handle.truncate(end * 8)  # sparse: every entry 0
    result = run("simulate", "--sysroot", root, "--blocks", "8192-8200")
    one_error_line(result, f"kpageflags: ends at pfn {end:#x}, but memory block 8200 needs pfns up to "
                           f"{8201 * ppb - 1:#x} (truncated?)")


# ---- explain --sysroot DIR BLOCK / --live BLOCK ------------------------------------------------

@pytest.mark.parametrize("word", ["36", "memory36"])
def test_explain_takes_a_block_after_sysroot(word):
    result = run("explain", "--sysroot", POST2, word, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["block"]["block"] == 36 and (doc["source"], doc["source_kind"]) == (str(POST2), "sysroot")


def test_explain_a_sysfs_only_block_spanning_zones(tmp_path):
    root = sysfs_tree(tmp_path, "x86_64")
    result = run("explain", "-s", root, "0")
    assert result.exit_code == 0, result.output
    assert "fails: the write returns -EINVAL (decided at zone)" in result.stdout


@pytest.mark.parametrize("args,needle", [
    (["--sysroot", POST2], "missing BLOCK"),
    (["profiles/sbm-guest.toml"], "give a PROFILE, --sysroot DIR or --live, and a BLOCK (only"),
    (["--sysroot", POST2, "profiles/sbm-guest.toml", "36"], "PROFILE and --sysroot exclude each other"),
    (["profiles/sbm-guest.toml", "36", "37"], "too many arguments"),
])
def test_explain_argument_errors(args, needle):
    one_error_line(run("explain", *args), needle)


def test_explain_live_takes_the_block():
    """--live BLOCK: the block is the block, not a profile path (whatever this machine allows)."""
    result = run("explain", "--live", "999999")
    assert "Missing argument" not in result.output
    assert result.exit_code == 2 and result.stderr.splitlines()[-1].startswith("memplan: error:")
    if "memory block 999999 does not exist" not in result.stderr:  # this machine cannot be read
        assert "/sys/devices/system/memory" in result.stderr or "/proc/" in result.stderr, result.stderr


# ---- one reading of a live machine -------------------------------------------------------------

def test_read_once_serves_the_first_reading(tmp_path):
    import numpy as np

    from memplan.snapshot.kpageflags import KpageFile
    from memplan.snapshot.once import ONCE_CHUNK, ReadOnce

    path = tmp_path / "kpageflags"
    n = ONCE_CHUNK + 1000
    path.write_bytes(np.arange(n, dtype="<u8").tobytes())
    once = ReadOnce(KpageFile(str(path), "kpageflags"))
    first = once.read(ONCE_CHUNK - 10, 20).copy()
    path.write_bytes(np.full(n, 7, dtype="<u8").tobytes())  # the machine moves on
    assert (once.read(ONCE_CHUNK - 10, 20) == first).all()
    assert first.tolist() == list(range(ONCE_CHUNK - 10, ONCE_CHUNK + 10))
    assert len(once.read(ONCE_CHUNK + 990, 100)) == 10  # ends where the file ended
    assert once.read(5, 3).tolist() == [5, 6, 7]  # chunk 0 was copied with the first read
    assert len(once.read(3 * ONCE_CHUNK, 8)) == 0


def live_reason():
    try:
        with open("/proc/kpageflags", "rb") as handle:
            if len(handle.read(8)) != 8:
                return "/proc/kpageflags reads empty here"
    except OSError as exc:
        return f"/proc/kpageflags is not readable here ({exc.strerror})"
    return None if os.path.isdir("/sys/devices/system/memory") else "no memory hotplug sysfs here"


@pytest.mark.skipif(live_reason() is not None, reason=str(live_reason()))
def test_a_live_machine_is_read_once():
    from memplan.snapshot.once import ReadOnce
    from memplan.snapshot.reader import load_snapshot

    machine = load_snapshot("/", live=True)
    assert isinstance(machine.pages.flags, ReadOnce)
    block = int(machine.blocks.ids[machine.blocks.online][-1])
    a = machine.pages.materialize([block]).kinds.copy()
    b = machine.pages.materialize([block]).kinds
    assert (a == b).all()


@pytest.mark.parametrize("fixture", ["host-6.18-24g", "qemu-6.1-pre", "qemu-6.1-bbm-post1"])
def test_without_pageoffline_pages_both_semantics_agree_on_every_block(fixture):
    root = fixture_tree(fixture)
    snap = json.loads(run("snapshot", "--sysroot", root, "--json").stdout)
    assert not [c for c in snap["page_classes"] if "offline" in c["class"] or "balloon" in c["class"]]
    for command in (["diff-semantics", "--sysroot", root, "--json"],
                    ["map", "--sysroot", root, "--diff"]):
        result = run(*command)
        assert result.exit_code == 0, result.output
    doc = json.loads(run("diff-semantics", "--sysroot", root, "--json").stdout)
    assert doc["differences"] == [] and doc["summary"]["differ"] == 0 and doc["summary"]["blocks"] > 0


def test_without_page_flags_both_semantics_agree(tmp_path):
    root = sysfs_tree(tmp_path, "x86_64")
    result = run("diff-semantics", "--sysroot", root, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["differences"] == []


def test_saving_a_sysfs_only_tree_keeps_what_lsmem_reads_and_adds_no_empty_page_files(tmp_path):
    root = sysfs_tree(tmp_path, "s390")
    dest = tmp_path / "saved"
    result = run("snapshot", "--sysroot", root, "--save", dest)
    assert result.exit_code == 0, result.output
    assert not (dest / "proc").exists()
    assert (dest / MEMORY / "memory14" / "removable").read_text() == "0\n"
    listing = ["-o", "RANGE,SIZE,STATE,REMOVABLE,BLOCK,ZONES", "-r"]
    assert run("snapshot", "--sysroot", dest, *listing).stdout == run("snapshot", "--sysroot", root, *listing).stdout
    doc, _ = simulate_json("--sysroot", dest)
    assert {b["confidence"] for b in doc["blocks"]} == {"unknown"}


# ---- blocks without valid_zones ----------------------------------------------------------------

def test_without_valid_zones_the_zone_comes_from_zoneinfo(tree):
    def verdicts(root):
        doc, _ = simulate_json("--sysroot", root)
        return [(b["block"], b["zone"], b["result"], b["errno"], b["step"], b["confidence"]) for b in doc["blocks"]]

    before = verdicts(POST2)
    for name in os.listdir(tree / MEMORY):
        if name.startswith("memory"):
            os.unlink(tree / MEMORY / name / "valid_zones")
    assert verdicts(tree) == before
    assert before[0][:5] == (0, "none", "fails", "EINVAL", "zone")  # DMA and DMA32 both meet block 0


def test_without_valid_zones_or_zoneinfo_the_zone_is_not_known(tmp_path):
    root = sysfs_tree(tmp_path, "x86_64")
    for name in os.listdir(os.path.join(root, MEMORY)):
        if name.startswith("memory"):
            os.unlink(os.path.join(root, MEMORY, name, "valid_zones"))
    doc, result = simulate_json("--sysroot", root, "--blocks", "0,44")
    zero, offline = doc["blocks"]
    assert (zero["result"], zero["confidence"]) == ("offlined", "unknown")  # not a certain EINVAL
    assert any(s.startswith("zone not known (no valid_zones, no /proc/zoneinfo span)") for s in zero["blind_spots"])
    assert (offline["errno"], offline["step"], offline["confidence"]) == ("EINVAL", "state", "certain")
    assert "judged as ZONE_NORMAL" in result.stderr


def test_page_size_inferred_from_the_length_of_kpageflags(tmp_path):
    """arm64 with 16 KiB pages, no hugetlb sizes: kpageflags holds one entry per pfn up to the
    last block (rounded up to a section)."""
    root = sysfs_tree(tmp_path, "arm64_16k")
    shutil.rmtree(os.path.join(root, "sys", "kernel"))
    os.makedirs(os.path.join(root, "proc"))
    with open(os.path.join(root, "proc", "kpageflags"), "wb") as handle:
        handle.truncate(8320 * 8192 * 8)  # sparse
    doc = json.loads(run("snapshot", "--sysroot", root, "--json").stdout)
    assert doc["page_size"] == 16384
    assert doc["page_size_source"] == "inferred: the length of proc/kpageflags against the end of the last memory block"


def test_save_keeps_s390_firmware_memory(tmp_path):
    root = sysfs_tree(tmp_path, "s390")
    for block in range(24):
        firmware = os.path.join(root, "sys", "firmware", "memory", f"memory{block}")
        os.makedirs(firmware)
        with open(os.path.join(firmware, "config"), "w") as handle:
            handle.write("0\n" if block >= 20 else "1\n")
    dest = tmp_path / "saved"
    assert run("snapshot", "--sysroot", root, "--save", dest).exit_code == 0
    assert (dest / "sys/firmware/memory/memory21/config").read_text() == "0\n"
    listing = ["-o", "BLOCK,STATE,CONFIGURED", "-r"]
    mine = run("snapshot", "--sysroot", dest, *listing).stdout
    assert mine == run("snapshot", "--sysroot", root, *listing).stdout
    assert "20-23 offline no" in mine


def test_explain_on_a_snapshot_carries_simulates_confidence(tmp_path):
    doc, _ = simulate_json("--sysroot", POST2, "--blocks", "36")
    story = json.loads(run("explain", "--sysroot", POST2, "36", "--json").stdout)
    assert (story["block"]["confidence"], story["block"]["blind_spots"]) == (
        doc["blocks"][0]["confidence"], doc["blocks"][0]["blind_spots"])
    root = sysfs_tree(tmp_path, "x86_64")
    result = run("explain", "--sysroot", root, "1")
    assert "Confidence: unknown, because the input cannot see:" in result.stdout and NO_FLAGS in result.stdout
