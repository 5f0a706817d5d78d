"""Saved trees as they really come (issue 13 §2-§3, issue 14 §2-§3): special files where a file
belongs, gaps between blocks, out-of-range ids, kpageflags read only as far as the memory map
needs; sysfs-only trees (what ``lsmem --sysroot`` reads); page sizes other than 4 KiB."""

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
