"""``memplan map`` flat in the block count: the map built from ``stream()`` keeps its cells as runs,
and the streamed JSON and line-by-line grid are the held ones byte for byte."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from conftest import bundled, fixture_tree
from memplan.core.source import InputSource
from memplan.engine.simulation import simulate, stream
from memplan.map.compute import diff_map, machine_map
from memplan.map.types import CellKind, CellRun, Segment
from memplan.profile.reader import load_profile
from memplan.render import json as render_json
from memplan.render.map import map_renderable, print_map
from memplan.render.map_json import map_dict, write_map
from memplan.snapshot.reader import load_snapshot

SOURCE = InputSource.of("machine.toml")
PROFILES = ["sbm-guest.toml", "bbm-guest.toml", "skippable-review.toml", "hugetlb-cma-host.toml", "boot-vm.toml"]


def _machine(name):
    return load_profile(bundled(name)) if name.endswith(".toml") else load_snapshot(fixture_tree(name))


@pytest.mark.parametrize("name", PROFILES + ["qemu-6.1-post1"])
def test_a_map_from_the_stream_is_the_map_from_the_held_result(name):
    machine = _machine(name)
    held, streamed = machine_map(machine, simulate(machine)), machine_map(machine, stream(machine))
    assert streamed == held
    assert [c.block for c in held.cells] == sorted(c.block for c in held.cells)
    # runs: fewer objects than cells wherever neighbours look the same
    assert sum(len(s.runs) for s in held.segments) < len(held.cells)
    assert sum(r.count for r in held.runs()) == len(held.cells)


def test_a_diff_map_from_two_streams_is_the_held_one():
    machine = load_profile(bundled("skippable-review.toml"))
    held = diff_map(machine, simulate(machine, "refcount"), simulate(machine, "skippable"))
    assert diff_map(machine, stream(machine, "refcount"), stream(machine, "skippable")) == held
    assert held.changes and sum(held.changes.values()) == sum(
        held.counts[k] for k in (CellKind.OFFLINES, CellKind.FAILS, CellKind.HANGS))


@pytest.mark.parametrize("name", PROFILES + ["qemu-6.1-post1", "host-6.18-24g"])
def test_the_streamed_json_is_the_held_document_byte_for_byte(name):
    machine = _machine(name)
    bmap = machine_map(machine, stream(machine))
    held, streamed = io.StringIO(), io.StringIO()
    render_json.write(map_dict(bmap, SOURCE, ("a warning",)), held)
    write_map(bmap, SOURCE, ("a warning",), streamed)
    assert streamed.getvalue() == held.getvalue()
    assert len(json.loads(streamed.getvalue())["cells"]) == len(bmap.cells)


def test_the_streamed_json_of_a_map_without_cells():
    from memplan.map.types import BlockMap
    bmap = BlockMap("m", "s", 128 << 20, ("refcount",), (Segment(0, 3, None, None),), {k: 0 for k in CellKind})
    held, streamed = io.StringIO(), io.StringIO()
    render_json.write(map_dict(bmap, SOURCE), held)
    write_map(bmap, SOURCE, (), streamed)
    assert streamed.getvalue() == held.getvalue() and '"cells": []' in held.getvalue()


@pytest.mark.parametrize("width", [40, 100, 200])
def test_the_grid_printed_line_by_line_is_the_group_printed_at_once(width):
    machine = load_profile(bundled("skippable-review.toml"))
    bmap = diff_map(machine, stream(machine, "refcount"), stream(machine, "skippable"))
    outputs = []
    for by_line in (False, True):
        console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system="truecolor")
        if by_line:
            print_map(console, bmap)
        else:
            console.print(map_renderable(bmap, width), soft_wrap=True)
        outputs.append(console.file.getvalue())
    assert outputs[0] == outputs[1] and "\x1b[" in outputs[0]


def test_a_segment_made_of_cells_keeps_them_as_runs():
    from memplan.map.types import Cell
    cells = [Cell(b, CellKind.OFFLINES) for b in range(4, 10)] + [Cell(10, CellKind.FAILS)]
    segment = Segment(4, 10, "Movable", None, cells=cells)
    assert segment.runs == (CellRun(4, 6, CellKind.OFFLINES), CellRun(10, 1, CellKind.FAILS))
    assert segment.cells == tuple(cells)
    assert list(segment.cells_between(9, 10)) == cells[5:]
