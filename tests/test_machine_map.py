"""The map core: one cell per block, segments at zone/node/device boundaries, diff marks."""

from __future__ import annotations

import pytest

from conftest import bundled, machine_from
from memplan.core.source import InputSource
from memplan.diff.compute import diff_semantics
from memplan.engine.simulation import simulate
from memplan.map.compute import diff_map, machine_map
from memplan.map.types import CellKind, Change
from memplan.profile.reader import load_profile


@pytest.fixture(scope="module")
def sbm():
    return load_profile(bundled("sbm-guest.toml"))


def test_every_block_and_device_slot_is_one_cell(sbm):
    result = simulate(sbm)
    bmap = machine_map(sbm, result)
    cells = {c.block: c for c in bmap.cells}
    assert set(int(b) for b in sbm.blocks.ids) <= set(cells)
    assert set(cells) - set(int(b) for b in sbm.blocks.ids) == set(range(58, 96)) | {56}
    assert all(cells[b].kind is CellKind.UNPLUGGED for b in list(range(58, 96)) + [56])
    assert cells[36].kind is CellKind.HANGS and cells[15].kind is CellKind.FAILS and cells[40].kind is CellKind.OFFLINES
    counts = bmap.counts
    s = result.summary
    assert (counts[CellKind.OFFLINES], counts[CellKind.FAILS], counts[CellKind.HANGS]) == (s.offlined, s.fails, s.hangs)


def test_segments_mark_zones_gaps_and_device_regions(sbm):
    bmap = machine_map(sbm, simulate(sbm))
    shape = [(s.first, s.last, s.zone, s.device, s.gap) for s in bmap.segments]
    assert shape == [(0, 0, "none", None, False), (1, 15, "DMA32", None, False), (16, 31, None, None, True),
                     (32, 95, "Movable", "vmem0", False)]
    assert bmap.segments[3].device_mode == "SBM"


def test_offline_and_not_judged_blocks_and_a_second_node():
    machine = machine_from("""
    [[ram]]
    start = "1GiB"
    size = "256MiB"
    zone = "Movable"
    node = 1
    [[ram]]
    start = "1280MiB"
    size = "128MiB"
    zone = "Movable"
    node = 1
    state = "offline"
    """)
    bmap = machine_map(machine, simulate(machine, blocks=[8]), blocks=[0, 10])
    kinds = {c.block: c.kind for c in bmap.cells}
    assert kinds[8] is CellKind.OFFLINES and kinds[9] is CellKind.NOT_JUDGED and kinds[10] is CellKind.OFFLINE
    assert [(s.first, s.last, s.zone, s.node) for s in bmap.segments] == [(0, 7, "Normal", 0), (8, 10, "Movable", 1)]


def test_diff_map_marks_exactly_the_blocks_diff_semantics_reports():
    machine = load_profile(bundled("skippable-review.toml"))
    left, right = simulate(machine, "refcount"), simulate(machine, "skippable")
    bmap = diff_map(machine, left, right)
    marked = {c.block: c.change for c in bmap.cells if c.change is not Change.SAME}
    report = diff_semantics(machine, "refcount", "skippable")
    assert set(marked) == {d.block for d in report.differences}
    assert marked == {34: Change.OTHER, 35: Change.LEFT_ONLY, 42: Change.RIGHT_ONLY, 67: Change.LEFT_ONLY}
    assert bmap.changes[Change.LEFT_ONLY] == 2 and bmap.is_diff


def test_cells_carry_each_verdicts_confidence_and_the_json_splits_memory_by_it():
    from conftest import fixture_tree
    from memplan.core.results import Confidence
    from memplan.render.map_json import map_dict
    from memplan.snapshot.reader import load_snapshot
    machine = load_snapshot(fixture_tree("qemu-6.1-post1"))
    result = simulate(machine)
    bmap = machine_map(machine, result)
    verdicts = {v.block: v for v in result.blocks}
    cells = {c.block: c for c in bmap.cells}
    assert {b: cells[b].confidence for b in verdicts} == {b: v.confidence for b, v in verdicts.items()}
    assert len({v.confidence for v in verdicts.values()}) > 1  # the tree has certain and likely verdicts
    doc = map_dict(bmap, InputSource.of(fixture_tree("qemu-6.1-post1"), sysroot=True), ("w",))
    by_block = {c["block"]: c for c in doc["cells"]}
    assert all(by_block[b]["confidence"] == v.confidence.value for b, v in verdicts.items())
    assert all(c["confidence"] is None for c in doc["cells"] if c["block"] not in verdicts)
    s = result.summary
    assert doc["summary"]["offlinable_bytes"] == s.offlinable_bytes
    assert doc["summary"]["offlinable_bytes_by_confidence"] == {
        c.value: s.offlinable_bytes_by_confidence[c] for c in Confidence}
    assert doc["summary"]["blocks_by_confidence"] == {
        c.value: sum(1 for v in verdicts.values() if v.confidence is c) for c in Confidence}
    assert doc["diff"] is None and doc["warnings"] == ["w"]
