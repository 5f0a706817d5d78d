"""What the w6 audit of issues 13 and 16 found and fixed, end to end through the CLI.

* A sysfs-only tree of a kernel before 5.8 (util-linux's s390 dump) says which online blocks the
  kernel itself rated not removable: ``removable_show()`` then computed
  ``is_mem_section_removable()`` of every section (false on an unmovable page in a pageblock
  outside ZONE_MOVABLE), so a verdict made without page data names that evidence. Since 5.8
  ``removable`` reads ``IS_ENABLED(CONFIG_MEMORY_HOTREMOVE)`` (drivers/base/memory.c).
* Grouped blind spots keep the numbers that are not per-block counts (kernel versions).
"""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from lsmem_trees import TREES
from memplan.cli import main
from memplan.snapshot.confidence import NO_PAGE_FLAGS, REMOVABLE_ZERO

#: util-linux's s390-zvm-6g dump: online blocks whose ``removable`` reads 0
S390_NOT_REMOVABLE = [7, 10, 11, 16, 17]


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def s390(tmp_path) -> str:
    return TREES["s390"].write(str(tmp_path / "s390"))


def test_removable_zero_is_named_on_blocks_judged_without_page_data(s390):
    result = run("simulate", "--sysroot", s390, "--blocks", "0-23", "--json")
    assert result.exit_code == 0, result.output
    blocks = {b["block"]: b for b in json.loads(result.stdout)["blocks"]}
    assert sorted(blocks) == list(range(24))
    for block, v in blocks.items():
        if block in (14, 20, 21, 22, 23):  # offline already: decided by the state, certain
            assert (v["result"], v["errno"], v["step"], v["confidence"], v["blind_spots"]) == (
                "fails", "EINVAL", "state", "certain", []), v
        elif block in S390_NOT_REMOVABLE:
            assert (v["result"], v["confidence"]) == ("offlined", "unknown")
            assert v["blind_spots"] == [NO_PAGE_FLAGS, REMOVABLE_ZERO]
        else:
            assert v["blind_spots"] == [NO_PAGE_FLAGS], v
    # the kernel's reason string, as offline_pages() prints it
    assert '-EBUSY "failure to isolate range"' in REMOVABLE_ZERO


def test_removable_zero_in_the_table_explain_and_plan(s390):
    table = run("simulate", "--sysroot", s390).stdout
    assert "  blocks 7,10-11,16-17 (unknown):" in table.splitlines()
    # the kernel version is not a per-block count: it stays as written
    assert f"    - {REMOVABLE_ZERO}" in table.splitlines()
    story = run("explain", "--sysroot", s390, 17).stdout.splitlines()
    assert story[3:6] == ["Confidence: unknown, because the input cannot see:", f"  - {NO_PAGE_FLAGS}",
                          f"  - {REMOVABLE_ZERO}"]
    plan = json.loads(run("plan", "--sysroot", s390, "--size", "1G", "--json").stdout)
    spots = {a["block"]: a["blind_spots"] for a in plan["attempts"]}
    assert spots == {19: [NO_PAGE_FLAGS], 18: [NO_PAGE_FLAGS], 17: [NO_PAGE_FLAGS, REMOVABLE_ZERO],
                     16: [NO_PAGE_FLAGS, REMOVABLE_ZERO]}


def test_removable_one_or_unreadable_adds_nothing(s390):
    memory = os.path.join(s390, "sys", "devices", "system", "memory")
    with open(os.path.join(memory, "memory7", "removable"), "w") as handle:
        handle.write("1\n")
    with open(os.path.join(memory, "memory10", "removable"), "w") as handle:
        handle.write("garbage\n")  # not read before: a partial or odd tree is not bad input
    os.remove(os.path.join(memory, "memory11", "removable"))
    result = run("simulate", "--sysroot", s390, "--blocks", "7,10-11,16", "--json")
    assert result.exit_code == 0, result.output
    spots = {b["block"]: b["blind_spots"] for b in json.loads(result.stdout)["blocks"]}
    assert spots == {7: [NO_PAGE_FLAGS], 10: [NO_PAGE_FLAGS], 11: [NO_PAGE_FLAGS],
                     16: [NO_PAGE_FLAGS, REMOVABLE_ZERO]}


def test_trees_with_page_data_are_judged_from_the_pages():
    # the real 6.1 fixtures read removable 1 everywhere (5.8+): no block gets the note
    from conftest import fixture_tree
    doc = json.loads(run("simulate", "--sysroot", fixture_tree("qemu-6.1-post1"), "--json").stdout)
    assert not [b for b in doc["blocks"] if REMOVABLE_ZERO in b["blind_spots"]]


def test_unplug_on_a_tree_without_iomem_says_why_no_device_is_seen(s390):
    # a partial tree is not bad input: the device may exist, the tree cannot show it
    iomem = os.path.join(s390, "proc", "iomem")
    result = run("unplug", "--sysroot", s390, "--by", "1G")
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("memplan: error:")]
    assert errors == [f"memplan: error: s390: no virtio-mem device visible: {iomem} is missing (a device's memory "
                      "shows there as 'System RAM (virtio_mem)')"]
    doc = json.loads(run("fleet", s390, "--unplug-by", "1G", "--json", "--workers", 1).stdout)
    assert doc["hosts"][0]["error"] == errors[0][len("memplan: error: "):]


def test_unplug_on_a_tree_with_iomem_and_no_device_says_so(tmp_path):
    from conftest import fixture_tree
    result = run("unplug", "--sysroot", fixture_tree("host-6.18-24g"), "--by", "1G")
    assert result.exit_code == 2
    assert "memplan: error: host-6.18-24g has no virtio-mem device" in result.stderr.splitlines()


def test_patched_snapshot_after_offline_and_online_is_read_the_same(tmp_path):
    # spec §9.1: the patched kernel's fake-offline pages read 0x400800000, and 0x400800010 once
    # the block was offlined and onlined again (virtio_mem_set_fake_offline(..., false) sets
    # PG_dirty on PageOffline pages that were not onlined): still skippable fake-offline pages
    import lzma
    import shutil

    import numpy as np

    from conftest import fixture_tree
    root = str(tmp_path / "reonlined")
    shutil.copytree(fixture_tree("qemu-7.2-skippable-post1"), root)
    path = os.path.join(root, "proc", "kpageflags.xz")
    with lzma.open(path) as handle:
        flags = np.frombuffer(handle.read(), dtype="<u8").copy()
    fake = flags == 0x400800000
    assert int(fake.sum()) == 16384 and int(np.nonzero(fake)[0][0]) == 0x13C000
    flags[fake] = 0x400800010
    with lzma.open(path, "wb", preset=0) as handle:
        handle.write(flags.tobytes())
    before = json.loads(run("simulate", "--sysroot", fixture_tree("qemu-7.2-skippable-post1"), "--blocks", 39,
                            "--json").stdout)
    after = json.loads(run("simulate", "--sysroot", root, "--blocks", 39, "--json").stdout)
    assert after["semantics"] == before["semantics"] == "skippable"
    assert after["semantics_reason"] == before["semantics_reason"]
    assert after["blocks"][0]["pages"] == before["blocks"][0]["pages"]
    assert after["blocks"][0]["pages"]["skipped_offline"] == 16384
    for key in ("result", "errno", "reason", "confidence", "blind_spots", "kernel_log", "hazards"):
        assert after["blocks"][0][key] == before["blocks"][0][key], key


def test_a_block_caught_going_offline_is_not_a_certain_einval(tmp_path):
    # MEM_GOING_OFFLINE is only seen while another offline_pages() holds device_hotplug_lock:
    # state_store() -> lock_device_hotplug_sysfs() restarts the write until that attempt ends,
    # then device_offline() returns 1 (-EINVAL) if it offlined the block, or the block is online
    # again and is judged on its pages. Already offline blocks stay certain.
    from memplan.snapshot.confidence import GOING_OFFLINE
    root = TREES["x86_64"].write(str(tmp_path / "x86_64"))
    doc = json.loads(run("simulate", "--sysroot", root, "--blocks", "44-46", "--json").stdout)
    got = {b["block"]: (b["result"], b["errno"], b["step"], b["confidence"], b["blind_spots"]) for b in doc["blocks"]}
    assert got == {44: ("fails", "EINVAL", "state", "certain", []), 45: ("fails", "EINVAL", "state", "certain", []),
                   46: ("fails", "EINVAL", "state", "unknown", [GOING_OFFLINE])}
    assert doc["summary"]["unknown_blocks"] == 1
    story = run("explain", "--sysroot", root, 46).stdout.splitlines()
    assert story[3:5] == ["Confidence: unknown, because the input cannot see:", f"  - {GOING_OFFLINE}"]
