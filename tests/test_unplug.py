"""memplan unplug: virtio-mem's SBM/BBM unplug request over a machine state (hand-computed)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import machine_from
from memplan.core.errors import UsageError
from memplan.core.model import Errno, PageKind
from memplan.plans.state import MachineState
from memplan.plans.unplug import sweep, unplug

MB = 1 << 20
BLOCK32 = 0x100000  # first pfn of memory block 32 (4 GiB)
SB = 512            # pages per 2 MiB sub-block

SBM = """
[[virtio_mem]]
id = "vmem0"
addr = "4GiB"
region_size = "256MiB"
block_size = "2MiB"
plugged = ["0-127"]
online = "{online}"
{extra}

[[fill]]
blocks = "vmem0"
seed = 5
anon = 0.3
"""
SLAB_PFN = BLOCK32 + 5 * SB + 17  # one slab page in sub-block 5 of block 32


def sbm(online: str = "movable", extra: str = "", pages: str = "") -> str:
    return SBM.format(online=online, extra=extra) + pages


SLAB = f'\n[[pages]]\npfn = "{SLAB_PFN:#x}"\nkind = "slab"\n'


@pytest.mark.parametrize("online,step,attempts", [("movable", "test_isolated", 5), ("kernel", "isolate", 1)])
@pytest.mark.parametrize("semantics", ["refcount", "skippable"])
def test_one_slab_page_costs_exactly_one_subblock(online, step, attempts, semantics):
    result, _ = unplug(machine_from(sbm(online, pages=SLAB)), "vmem0", 0, semantics)
    assert result.plugged_before_bytes == 256 * MB and result.plugged_after_bytes == 2 * MB
    b32, b33 = result.blocks
    full = "MOVABLE" if online == "movable" else "KERNEL"
    assert (b33.block, b33.state_before, b33.state_after) == (33, full, "UNUSED")
    assert (b32.state_before, b32.state_after, b32.plugged_units_left) == (full, full + "_PARTIAL", (5,))
    assert len(b32.unplugged_units) == 63
    culprit = next(c for c in b32.culprits if c.unit == 5)
    assert (culprit.pfn, culprit.kind, culprit.errno, culprit.step, culprit.attempts) == \
        (SLAB_PFN, PageKind.SLAB, Errno.EBUSY, step, attempts)
    # The one-shot attempt over the whole block failed first (-EBUSY: fall back to sub-blocks).
    assert any(c.unit is None for c in b32.culprits)
    assert result.stop == "busy"
    # Run 0 removed block 33 (virtio_mem_retry(): run again at once), then the retry timer.
    assert [(r.at_seconds, r.trigger, r.errno) for r in result.runs] == [(0, "request", Errno.EBUSY),
                                                                          (0, "immediate", Errno.EBUSY)]
    assert result.next_retries == (50, 150, 350, 650)


# The boot memory is all in use except a ZONE_MOVABLE range: only folios leaving ZONE_MOVABLE
# may go there (alloc_migration_target() adds __GFP_HIGHMEM for them only).
ZONES = """
[[ram]]
start = "0"
size = "256MiB"
zone = "Normal"

[[ram]]
start = "256MiB"
size = "256MiB"
zone = "Movable"

[[fill]]
blocks = "0-1"
seed = 1
anon = 1.0

[[virtio_mem]]
id = "vmem0"
addr = "4GiB"
region_size = "128MiB"
block_size = "2MiB"
plugged = ["0-63"]
online = "{online}"

[[fill]]
blocks = "vmem0"
seed = 2
anon = 0.5
"""


def test_zone_movable_onlining_can_shrink_where_zone_normal_cannot():
    movable, _ = unplug(machine_from(ZONES.format(online="movable"), spare=False), "vmem0", 0)
    assert (movable.achieved_bytes, movable.stop) == (128 * MB, "reached")
    kernel, _ = unplug(machine_from(ZONES.format(online="kernel"), spare=False), "vmem0", 0)
    assert (kernel.achieved_bytes, kernel.stop, kernel.errno) == (0, "no_memory", Errno.ENOMEM)
    culprit = kernel.blocks[0].culprits[0]
    # The one-shot attempt ends the request: -ENOMEM is not skipped like -EBUSY.
    assert (culprit.unit, culprit.errno, culprit.step) == (None, Errno.ENOMEM, "migrate")


def test_request_reached_in_state_order_highest_block_first():
    # Block 32 partly plugged (MOVABLE_PARTIAL) goes before the fully plugged block 33.
    machine = machine_from(SBM.format(online="movable", extra="").replace('"0-127"', '"0-31", "64-127"'))
    result, _ = unplug(machine, "vmem0", 160 * MB)  # plugged 192 MiB: 16 sub-blocks asked
    assert result.stop == "reached" and result.plugged_after_bytes == 160 * MB
    b32, b33 = result.blocks
    # All from block 32 (MOVABLE_PARTIAL goes first), highest sub-block first.
    assert b32.unplugged_units == tuple(range(16, 32)) and b32.state_after == "MOVABLE_PARTIAL"
    assert b33.unplugged_units == () and not b33.visited
    result, _ = unplug(machine, "vmem0", 128 * MB)  # 32 sub-blocks: block 32 empties and is removed
    assert [(b.block, b.state_after, b.unplugged_units) for b in result.blocks] == \
        [(32, "UNUSED", tuple(range(32))), (33, "MOVABLE", ())]


def test_single_subblocks_from_the_highest_down():
    result, _ = unplug(machine_from(sbm()), "vmem0", 256 * MB - 6 * MB)
    b32, b33 = result.blocks
    # 3 sub-blocks < 64: no one-shot; block 33 first (highest), sub-blocks 63, 62, 61.
    assert b33.unplugged_units == (61, 62, 63) and b33.state_after == "MOVABLE_PARTIAL" and not b32.visited


def test_unplug_online_false_stops_after_the_offline_blocks():
    extra = 'offline_blocks = "33"\nunplug_online = false'
    result, _ = unplug(machine_from(sbm(extra=extra)), "vmem0", 0)
    assert (result.achieved_bytes, result.stop, result.errno) == (128 * MB, "unplug_online", None)
    assert [(b.block, b.state_before, b.state_after) for b in result.blocks] == \
        [(32, "MOVABLE", "MOVABLE"), (33, "OFFLINE", "UNUSED")]
    result, _ = unplug(machine_from(sbm(extra='offline_blocks = "33"')), "vmem0", 0)
    assert (result.achieved_bytes, result.stop) == (256 * MB, "reached")


def test_driver_not_loaded_does_nothing():
    result, _ = unplug(machine_from(sbm(extra='driver = "unloaded"')), "vmem0", 0)
    assert (result.achieved_bytes, result.stop, result.runs) == (0, "driver", ())


# ---- BBM -------------------------------------------------------------------------------------

BBM = """
[[virtio_mem]]
id = "vmem0"
addr = "4GiB"
region_size = "512MiB"
block_size = "256MiB"
plugged_size = "512MiB"
online = "movable"
{extra}

[[fill]]
blocks = "vmem0"
seed = 3
anon = 0.25
"""
# Big blocks of 256 MiB: BB 0 = memory blocks 32-33, BB 1 = 34-35 (one section per block).


def slab(block: int, offset: int = 100) -> str:
    return f'\n[[pages]]\npfn = "{BLOCK32 + (block - 32) * 32768 + offset:#x}"\nkind = "slab"\n'


def test_bbm_unplugs_the_highest_movable_big_block():
    result, state = unplug(machine_from(BBM.format(extra="")), "vmem0", 256 * MB)
    assert result.achieved_bytes == 256 * MB and result.stop == "reached"
    assert [(b.block, b.state_after) for b in result.blocks] == [(0, "ADDED"), (1, "UNUSED")]
    assert not state.has_block(34) and not state.has_block(35) and state.has_block(33)


def test_bbm_pass_0_takes_offline_big_blocks_first():
    result, _ = unplug(machine_from(BBM.format(extra='offline_blocks = "32-33"')), "vmem0", 256 * MB)
    assert [(b.block, b.state_after) for b in result.blocks] == [(0, "UNUSED"), (1, "ADDED")]


def test_bbm_rollback_leaves_the_state_unchanged():
    machine = machine_from(BBM.format(extra="") + slab(35) + slab(32))
    state = MachineState(machine)
    free_before = state.free_pages_total()
    pools_before = dict(state.pools)
    result, state = unplug(machine, "vmem0", 256 * MB, state=state)
    assert result.achieved_bytes == 0 and result.plugged_after_bytes == 512 * MB and result.stop == "busy"
    assert [(b.block, b.state_before, b.state_after) for b in result.blocks] == [(0, "ADDED", "ADDED"),
                                                                                 (1, "ADDED", "ADDED")]
    assert all(state.online(state.row_of(b)) for b in range(32, 36))
    assert state.free_pages_total() == free_before and state.pools == pools_before
    assert not any((state.pages(b).kinds == PageKind.FAKE_OFFLINE).any() for b in range(32, 36))
    # BB 1: section 0 (block 34) was fake-offlined (its pages migrated away), section 1 failed.
    assert np.count_nonzero(state.pages(34).kinds) == 0
    (c1,), (c0,) = result.blocks[1].culprits, result.blocks[0].culprits
    assert (c1.unit, c1.kind, c1.step) == (1, PageKind.SLAB, "test_isolated")
    assert (c0.unit, c0.pfn) == (0, BLOCK32 + 100)
    assert [(r.at_seconds, r.trigger) for r in result.runs] == [(0, "request"), (50, "timer")]
    assert result.next_retries == (150, 350, 650, 950)


# ---- both semantics ----------------------------------------------------------------------------

# Blocks 32 and 33 are MOVABLE_PARTIAL (sub-blocks 0-31 plugged); block 33 has a fake-offline page
# someone else holds a reference to (spec §5.2 row 20).
FOREIGN = SBM.format(online="movable", extra="").replace('"0-127"', '"0-31", "64-95"') + f"""
[[pages]]
pfn = "{BLOCK32 + 32768 + 40 * SB:#x}"
kind = "fake_offline"
refcount = 2
"""


def test_semantics_agree_except_where_the_spec_says_they_differ():
    machine = machine_from(FOREIGN)
    r, _ = unplug(machine, "vmem0", 0, "refcount")
    s, _ = unplug(machine, "vmem0", 0, "skippable")
    # Same unplug result: every sub-block is unplugged and QEMU sees plugged size 0.
    assert r.plugged_after_bytes == s.plugged_after_bytes == 0
    assert [(b.block, b.unplugged_units, b.plugged_units_left) for b in r.blocks] == \
        [(b.block, b.unplugged_units, b.plugged_units_left) for b in s.blocks]
    assert r.blocks[0].state_after == s.blocks[0].state_after == "UNUSED"
    # Row 20: mainline drops virtio-mem's reference, the page keeps the foreign one: SCAN -EBUSY
    # "unmovable page", the block stays added (fully unplugged) and the driver keeps retrying.
    (removal,) = r.blocks[1].removal
    assert (removal.result.value, removal.errno, removal.reason.value) == ("fails", Errno.EBUSY, "unmovable page")
    assert ("dump_page", "fake-offline page referenced") in [(e.level.value, e.text) for e in removal.kernel_log]
    assert (r.blocks[1].state_after, r.stop) == ("MOVABLE_PARTIAL", "busy")
    # The posted patch skips it (WARN_ON_ONCE(page_count != 1)) and removes the block.
    (removal,) = s.blocks[1].removal
    assert removal.result.value == "offlined" and ("warn_once", "WARN_ON_ONCE(page_count(page) != 1)") in \
        [(e.level.value, e.text) for e in removal.kernel_log]
    assert (s.blocks[1].state_after, s.stop) == ("UNUSED", "reached")


@pytest.mark.parametrize("text", [sbm(pages=SLAB), BBM.format(extra="") + slab(35)])
def test_semantics_agree_without_foreign_references(text):
    machine = machine_from(text)
    r, _ = unplug(machine, "vmem0", 0, "refcount")
    s, _ = unplug(machine, "vmem0", 0, "skippable")
    assert r.plugged_after_bytes == s.plugged_after_bytes and r.stop == s.stop
    assert [(b.state_after, b.plugged_units_left, b.culprits) for b in r.blocks] == \
        [(b.state_after, b.plugged_units_left, b.culprits) for b in s.blocks]


# ---- requests, sweep -------------------------------------------------------------------------------

def test_bad_requests():
    machine = machine_from(sbm())
    with pytest.raises(UsageError, match="not a multiple of the device block size"):
        unplug(machine, "vmem0", 3 * MB)
    with pytest.raises(UsageError, match="plug request"):
        unplug(machine, "vmem0", 512 * MB)
    with pytest.raises(UsageError, match="did you mean 'vmem0'"):
        unplug(machine, "vmem1", 0)
    with pytest.raises(UsageError, match="has no virtio-mem device"):
        unplug(machine_from(""), None, 0)


def test_sweep_is_monotone_and_finds_the_floor():
    result = sweep(machine_from(sbm(pages=SLAB)), "vmem0")
    assert [p.requested_bytes for p in result.points] == [0, 128 * MB, 256 * MB]
    assert [p.plugged_after_bytes for p in result.points] == [2 * MB, 128 * MB, 256 * MB]
    assert result.floor_bytes == 2 * MB
    with pytest.raises(UsageError, match="--step"):
        sweep(machine_from(sbm()), "vmem0", 3 * MB)
