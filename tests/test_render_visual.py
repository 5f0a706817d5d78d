"""Fixed-width snapshots of the rendered output (map, explain, lsmem table) and the SVG export."""

from __future__ import annotations

import dataclasses
import io
import re
import xml.etree.ElementTree as ET
from collections import defaultdict

import pytest
from rich.console import Console

from conftest import bundled
from golden import assert_golden
from memplan.engine.simulation import simulate
from memplan.map.compute import machine_map
from memplan.profile.reader import load_profile
from memplan.render import table as render_table
from memplan.render.lsmem import TableOptions
from memplan.render.map import map_renderable


def load(name: str):
    """A bundled profile, named as the README does (the snapshots must not contain the checkout path)."""
    return dataclasses.replace(load_profile(bundled(name)), source=f"profiles/{name}")


@pytest.fixture(scope="module")
def sbm():
    return load("sbm-guest.toml")


def plain(width: int) -> Console:
    return Console(width=width, record=True, color_system=None, file=io.StringIO())


def colour(width: int) -> Console:
    return Console(width=width, record=True, force_terminal=True, color_system="truecolor", file=io.StringIO())


def test_map_snapshot():
    assert_golden("map-sbm-guest-w100.txt")


def test_map_wraps_at_the_width(sbm):
    console = plain(40)
    console.print(map_renderable(machine_map(sbm, simulate(sbm)), 40))
    lines = console.export_text().splitlines()
    header = next(line for line in lines if line.lstrip().startswith("BLOCK"))
    assert header.split()[:4] == ["BLOCK", "ZONE", "DEVICE", "CELLS"]  # ADDRESS left out to fit
    grid = [line.rstrip() for line in lines if "vmem0 SBM" in line]
    # 64 slots of the region, 8 per row at this width; the last 4 rows hold only unplugged
    # slots and collapse into one line.
    assert [line.split()[0] for line in grid] == ["32", "40", "48", "56", "64"]
    assert grid[3].endswith("vmem0 SBM  .o......") and grid[4].startswith("   64  Movable  vmem0 SBM  ........ x4")
    assert all(len(line) <= 40 for line in grid)


def test_diff_map_snapshot():
    assert_golden("map-diff-skippable-review-w80.txt")


def test_explain_snapshot():
    assert_golden("explain-sbm-guest-36-w140.txt")


def test_simulate_table_snapshot(sbm):
    assert_golden("simulate-sbm-guest-w180.txt")
    console = plain(180)
    render_table.print_simulation(console, simulate(sbm, blocks=[35, 36, 37]), TableOptions(raw=True,
                                                                                           output="BLOCK,RESULT,REASON"))
    assert console.export_text().splitlines() == ["BLOCK RESULT REASON", "35 offlined -",
                                                  "36 hangs signal\\x20backoff", "37 offlined -"]


def _svg_lines(svg: str):
    """The text of every terminal line of a rich SVG export, by line, with the style classes."""
    root = ET.fromstring(svg)
    ns = {"s": "http://www.w3.org/2000/svg"}
    matrix = next(g for g in root.iter("{http://www.w3.org/2000/svg}g") if (g.get("class") or "").endswith("-matrix"))
    rows = defaultdict(list)
    char_width = None
    for text in matrix.findall("s:text", ns):
        content = (text.text or "").replace("\xa0", " ").rstrip("\n")
        if content and char_width is None:
            char_width = float(text.get("textLength")) / len(content)
        rows[float(text.get("y"))].append((float(text.get("x")), content, text.get("class")))
    lines = []
    for y in sorted(rows):
        spans = sorted(rows[y])
        line = ""
        for x, content, _ in spans:  # rich leaves out unstyled blanks: place each span at its column
            column = round(x / char_width)
            line = line.ljust(column) + content
        lines.append((line.rstrip(), spans))
    return lines


def test_svg_export_has_the_text_and_the_colours(sbm):
    renderable = map_renderable(machine_map(sbm, simulate(sbm)), 100)
    text_console = plain(100)
    text_console.print(renderable)
    console = colour(100)
    console.print(renderable)
    svg = console.export_svg(title="memplan map sbm-guest", unique_id="memplan", clear=False)
    assert svg == console.export_svg(title="memplan map sbm-guest", unique_id="memplan", clear=False)
    assert "memplan&#160;map&#160;sbm-guest" in svg
    lines = _svg_lines(svg)
    expected = [line.rstrip() for line in text_console.export_text().splitlines()]
    assert [line for line, _ in lines] == expected
    # Every kind of cell in the grid has its own colour class, and the classes carry different fills.
    fills = dict(re.findall(r"\.(memplan-r\d+) \{ fill: (#[0-9a-f]{6})", svg))
    cell_fill = {}
    for line, spans in lines:
        if "vmem0 SBM" in line or "DMA32" in line:
            for _, text, cls in spans:
                if text and len(set(text)) == 1 and text[0] in "oXH.":  # a run of equal cells
                    cell_fill.setdefault(text[0], set()).add(fills.get(cls))
    assert set(cell_fill) == set("oXH.")
    assert len({next(iter(v)) for v in cell_fill.values()}) == 4
    assert all(len(v) == 1 for v in cell_fill.values())
