"""memplan plan: chmem -d over a machine state that every offline changes (hand-computed)."""

from __future__ import annotations

import pytest

from conftest import HALF_FULL, machine_from
from memplan.core.errors import UsageError
from memplan.core.model import Zone
from memplan.core.results import Outcome
from memplan.engine.simulation import simulate
from memplan.plans.plan import parse_plan_size, plan, valid_zones_match
from memplan.plans.types import MemoryLeft, ZoneMemory

MB = 1 << 20
PPB = 32768  # pages per 128 MiB block



def test_free_memory_runs_out_at_the_right_block():
    machine = machine_from(HALF_FULL, spare=False)
    result, state = plan(machine, 384 * MB, skip_hangs=True)
    got = [(a.block, a.result, a.culprit.pfn if a.culprit else None) for a in result.attempts]
    # Block 3: 16384 pages go to the lowest free pages (block 1), 16384 free pages vanish with it.
    # Block 2: the only free pages left are its own: nothing can move (-ENOMEM every round).
    # Block 1 (now full): 16384 of its pages fit into block 2, the rest cannot: migrate_pages()
    # takes the source list from the highest pfn down, so the lowest half stays; block 0 likewise.
    assert got == [(3, Outcome.OFFLINED, None), (2, Outcome.HANGS, 0x10000), (1, Outcome.HANGS, 0x8000),
                   (0, Outcome.HANGS, 0)]
    assert result.attempts[1].kernel_log[0].text == "migrating pfn 13fff failed ret:-12"
    assert result.achieved_bytes == 128 * MB and result.asked_bytes == 384 * MB
    assert state.free_pages_total() == 16384  # migration moves pages, it never creates free ones
    assert [int(state.free[state.row_of(b)]) for b in (0, 1, 2)] == [16384, 0, 0]
    assert result.hang is None and result.end_line == "Could only disable 128M of memory"


def test_chmem_blocks_in_the_first_hanging_write():
    # chmem's write to memoryN/state is synchronous: offline_pages() retries until a signal, so
    # chmem stops at block 2 and Ctrl-C (SIGINT kills chmem) leaves block 3 offlined.
    machine = machine_from(HALF_FULL, spare=False)
    result, state = plan(machine, 384 * MB, skip_hangs=False)
    assert [(a.block, a.result) for a in result.attempts] == [(3, Outcome.OFFLINED), (2, Outcome.HANGS)]
    assert result.hang is result.attempts[1] and not result.skip_hangs
    assert result.end_line == "chmem would hang at block 2 (anon page 0x10000): Ctrl-C ends chmem with 128M offlined"
    # the hanging write's migrations stay made; blocks 1 and 0 were never written
    assert state.online(state.row_of(1)) and state.online(state.row_of(0))
    skipped, _ = plan(machine, 384 * MB, skip_hangs=True)
    assert skipped.attempts[:2] == result.attempts and len(skipped.attempts) == 4

def test_migration_targets_exclude_the_source_node():
    # Node 0 is full; on node 1 block 2 is free but do_migrate_range() only allows other nodes.
    machine = machine_from("""
[machine]
nodes = 2

[[ram]]
start = "0"
size = "256MiB"
zone = "Normal"
node = 0

[[ram]]
start = "256MiB"
size = "256MiB"
zone = "Normal"
node = 1

[[fill]]
blocks = "0-1"
seed = 1
anon = 1.0

[[pages]]
pfn = "0x18000"
count = 100
kind = "anon"
""", spare=False)
    result, _ = plan(machine, 128 * MB, skip_hangs=True)
    assert [(a.block, a.result) for a in result.attempts] == [(3, Outcome.HANGS), (2, Outcome.OFFLINED)]
    assert result.achieved_bytes == 128 * MB


def test_sizes_follow_chmem():
    assert parse_plan_size("256", 128 * MB) == 256 * MB  # a bare number means MiB
    assert parse_plan_size("1G", 128 * MB) == 1 << 30
    assert parse_plan_size("0.5GiB", 128 * MB) == 512 * MB
    assert parse_plan_size("010", MB) == 8 * MB  # strtoumax(..., 0): a leading 0 is octal
    with pytest.raises(UsageError, match=r"^--size 100M is 100M: Size must be aligned to memory block size \(128M\)$"):
        parse_plan_size("100M", 128 * MB)
    # MB is 10^6 bytes, as util-linux reads it
    with pytest.raises(UsageError, match=r"^--size 512MB is 488.3M: Size must be aligned"):
        parse_plan_size("512MB", 128 * MB)
    assert parse_plan_size("1024MB", 1000 * 1000) == 1024 * 1000 * 1000
    with pytest.raises(UsageError, match=r"^--size: 'lots' is not a size \(no number; chmem: Failed to parse size: "
                                         r"'lots'; examples: 512M, 1G"):
        parse_plan_size("lots", 128 * MB)


def test_zone_filter_is_chmems_prefix_match():
    assert valid_zones_match("DMA32", "DMA") and valid_zones_match("Movable", "movable")
    assert not valid_zones_match("Normal", "Movable") and not valid_zones_match("none", "Normal")


def test_zone_and_block_filters_restrict_candidates():
    machine = machine_from("""
[[ram]]
start = "1GiB"
size = "256MiB"
zone = "Movable"
""")
    result, _ = plan(machine, 128 * MB, zone="movable")
    assert [a.block for a in result.attempts] == [9] and result.zone == "Movable" and result.candidates == 2
    result, _ = plan(machine, 256 * MB, blocks=[2, 3, 9])
    assert [a.block for a in result.attempts] == [9, 3]
    assert not any("--blocks" in w for w in result.warnings)


def test_blocks_absent_from_the_machine_are_skipped_with_a_note():
    machine = machine_from("""
[[ram]]
start = "1GiB"
size = "256MiB"
zone = "Movable"
""")  # blocks 0-7 (spare) and 8-9
    result, _ = plan(machine, 256 * MB, blocks="6-20000000000")
    assert [a.block for a in result.attempts] == [9, 8] and result.candidates == 4
    (note,) = [w for w in result.warnings if w.startswith("--blocks")]
    assert note == ("--blocks: 19999999991 blocks not on <test> (10-20000000000): skipped, as chmem only writes to "
                    "the memoryN directories that exist")
    result, _ = plan(machine, 128 * MB, blocks=[99])
    assert result.attempts == () and result.end_line == "Could only disable 0B of memory"


def test_nothing_asked_is_fully_achieved():
    result, _ = plan(machine_from(""), 0)
    assert result.attempts == () and result.achieved_bytes == 0


def test_movable_ratio_warning():
    # 1 GiB Normal (spare) + 4 GiB Movable: 400 % > 301 %; offlining 1 GiB of Movable leaves 300 %.
    machine = machine_from("""
[[ram]]
start = "4GiB"
size = "4GiB"
zone = "Movable"
""")
    result, _ = plan(machine, 128 * MB, zone="Movable")
    assert result.left.movable_ratio_percent == 387 and result.left.ratio_exceeded
    assert any("auto_movable_ratio" in w for w in result.warnings)
    result, _ = plan(machine, 1 << 30, zone="Movable")
    assert result.left.movable_ratio_percent == 300 and not result.left.ratio_exceeded


def test_memory_left_per_zone_and_node():
    left = MemoryLeft((ZoneMemory(0, Zone.NORMAL, 10, 100), ZoneMemory(0, Zone.MOVABLE, 5, 50),
                       ZoneMemory(1, Zone.MOVABLE, 1, 400)))
    assert left.nodes() == {0: (15, 150), 1: (1, 400)}
    assert (left.free_bytes, left.total_bytes, left.movable_ratio_percent) == (16, 550, 450)


def test_simulate_and_the_first_plan_attempt_agree_on_zone_restricted_targets():
    # Block 0 (Normal) may only migrate into kernel zones; the free block 1 is ZONE_MOVABLE.
    machine = machine_from("""
[[ram]]
start = "0"
size = "128MiB"
zone = "Normal"

[[ram]]
start = "128MiB"
size = "128MiB"
zone = "Movable"

[[pages]]
pfn = "0x10"
count = 100
kind = "anon"
""", spare=False)
    (sim,) = simulate(machine, blocks=[0]).blocks
    result, _ = plan(machine, 128 * MB, blocks=[0])
    assert sim.result is result.attempts[0].result is Outcome.HANGS
    assert sim.culprit == result.attempts[0].culprit and sim.culprit.pfn == 0x10
