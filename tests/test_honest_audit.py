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
