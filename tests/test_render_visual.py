"""Golden snapshots of the rendered output (map, explain, the simulate listing) and the pictures
(SVG, HTML): self-contained, and the same text as the terminal's."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import defaultdict

import pytest
from click.testing import CliRunner
from rich.console import Console

import golden
from memplan.cli import main
from memplan.engine.simulation import simulate
from memplan.map.compute import machine_map
from memplan.render.export import html_text, recording_console, svg_text
from memplan.render.map import map_renderable


@pytest.fixture(scope="module")
def sbm():
    return golden._load("sbm-guest.toml")


@pytest.mark.parametrize("name", sorted(golden.GOLDEN))
def test_golden(name):
    golden.assert_golden(name)


def test_raw_listing_escapes_blanks(sbm):
    from memplan.render.block_facts import MachineFacts
    from memplan.render.lsmem import TableOptions
    from memplan.render.table import print_simulation

    console = plain(180)
    print_simulation(console, simulate(sbm, blocks=[35, 36, 37]), MachineFacts(sbm),
                     TableOptions(raw=True, output="BLOCK,RESULT,REASON"))
    assert console.export_text().splitlines() == ["BLOCK RESULT REASON", "35 offlined -",
                                                  "36 hangs signal\\x20backoff", "37 offlined -"]


def plain(width: int) -> Console:
    return Console(width=width, record=True, color_system=None, file=io.StringIO())


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


def _svg_lines(svg: str):
    """The text of every terminal line of an SVG export, by line, with the style classes."""
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


def test_svg_export_has_the_text_and_the_colours_and_nothing_external(sbm):
    renderable = map_renderable(machine_map(sbm, simulate(sbm)), 100)
    text_console = plain(100)
    text_console.print(renderable, soft_wrap=True)
    console = recording_console(100)
    console.print(renderable, soft_wrap=True)
    svg = svg_text(console, "memplan map sbm-guest", unique_id="memplan")
    assert svg == svg_text(console, "memplan map sbm-guest", unique_id="memplan")
    assert "memplan&#160;map&#160;sbm-guest" in svg
    # self-contained: the only URL is the SVG namespace; no @font-face, no CDN
    assert re.findall(r"https?://[^\"' )]+", svg) == ["http://www.w3.org/2000/svg"]
    assert "@font-face" not in svg and re.findall(r"url\((?!#)", svg) == []  # only references inside the file
    assert 'xml:space="preserve"' in svg and "white-space: pre" in svg
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


def test_html_export_is_self_contained(sbm):
    console = recording_console(100)
    console.print(map_renderable(machine_map(sbm, simulate(sbm)), 100), soft_wrap=True)
    html = html_text(console, "memplan map <sbm-guest> {x}")
    assert re.findall(r"(?:src|href)=|https?://|@import|url\(", html) == []
    assert "<title>memplan map &lt;sbm-guest&gt; {x}</title>" in html and "white-space: pre" in html
    assert "offlines" in html and "vmem0&#160;SBM" in html or "vmem0 SBM" in html


def test_sweep_svg_is_a_chart_with_axes_and_labels(tmp_path):
    path = tmp_path / "curve.svg"
    result = CliRunner().invoke(main, ["unplug", os.path.join(golden.ROOT, "profiles", "bbm-guest.toml"),
                                       "--sweep", "--svg", str(path)])
    assert result.exit_code == 0, result.output
    svg = path.read_text()
    root = ET.fromstring(svg)
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "requested size (virtio-mem requested-size)" in texts
    assert "plugged after the request (achievable size)" in texts
    assert {"0B", "1G", "3G", "6G"} <= set(texts) and "floor 3G" in texts
    assert len(list(root.iter("{http://www.w3.org/2000/svg}polyline"))) == 1
    assert re.findall(r"https?://[^\"' )]+", svg) == ["http://www.w3.org/2000/svg"]
    assert list(tmp_path.iterdir()) == [path]  # written atomically: no temporary file left


RSVG = shutil.which("rsvg-convert")


@pytest.mark.skipif(RSVG is None, reason="rsvg-convert is not installed (apt-get install librsvg2-bin)")
def test_pictures_render_under_rsvg_convert(tmp_path, sbm):
    from memplan.plans.unplug import sweep
    from memplan.render.sweep_svg import sweep_svg

    console = recording_console(100)
    console.print(map_renderable(machine_map(sbm, simulate(sbm)), 100), soft_wrap=True)
    pictures = {"map.svg": svg_text(console, "memplan map"),
                "sweep.svg": sweep_svg(sweep(golden._load("bbm-guest.toml"), None, None, None), "sweep")}
    for name, text in pictures.items():
        (tmp_path / name).write_text(text)
        png = tmp_path / (name + ".png")
        result = subprocess.run([RSVG, str(tmp_path / name), "-o", str(png)], capture_output=True, text=True)
        assert result.returncode == 0 and not result.stderr, result.stderr
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _three_confidences_map():
    from memplan.core.results import Confidence
    from memplan.map.types import BlockMap, Cell, CellKind, Segment
    cells = tuple(Cell(b, CellKind.OFFLINES, confidence=c) for b, c in enumerate(Confidence))
    return BlockMap("m", "s", 128 << 20, ("refcount",), (Segment(0, 2, "Normal", None, cells=cells),),
                    {CellKind.OFFLINES: 3})


def test_likely_and_unknown_cells_are_distinct_in_every_picture():
    """certain o, likely o underlined, unknown ? in reverse video: in the SVG, the HTML and the text,
    and the legend shows each with the same style."""
    renderable = map_renderable(_three_confidences_map(), 100)
    console = recording_console(100)
    console.print(renderable, soft_wrap=True)
    text = console.export_text(clear=False)
    assert re.search(r"^ +0 +0x0 +Normal +oo\?$", text, re.M)
    svg = svg_text(console, "m", unique_id="u")
    styles = dict(re.findall(r"\.(u-r\d+) \{ ([^}]*)\}", svg))
    grid = re.search(r"Normal.*?</text>((?:<text[^>]*>[o?]</text>)+)", svg).group(1)
    classes = re.findall(r'class="(u-r\d+)"[^>]*>([o?])<', grid)
    assert [g for _, g in classes] == ["o", "o", "?"] and len({c for c, _ in classes}) == 3
    certain, likely, unknown = (styles[c] for c, _ in classes)
    assert "underline" not in certain and "underline" in likely and "underline" not in unknown
    html = html_text(console, "m")
    spans = re.findall(r'<span style="([^"]*)">([o?])</span>', html)
    assert [g for _, g in spans[:3]] == ["o", "o", "?"]
    assert "underline" in spans[1][0] and "underline" not in spans[0][0] and "background-color" in spans[2][0]
    # the legend entries use the same styles as the cells
    assert re.search(r'text-decoration: underline">o</span> +likely', html)
    assert re.search(r'background-color[^"]*">\?</span> +unknown', html)


def _read_png(data: bytes):
    """The RGBA pixels of an 8-bit, non-interlaced RGBA PNG (what rsvg-convert writes): a few
    lines of zlib, so the test needs no imaging library."""
    import struct
    import zlib

    import numpy as np

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", data[pos + 8:pos + 8 + n])
        elif kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + n]
        pos += 12 + n
    width, height, depth, colour, _, _, interlace = header
    assert (depth, colour, interlace) == (8, 6, 0)
    raw, stride = zlib.decompress(idat), width * 4
    rows, prev = [], [0] * stride
    for y in range(height):
        kind, line = raw[y * (stride + 1)], raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)]
        cur = [0] * stride
        for i in range(stride):
            a, b, c = (cur[i - 4] if i >= 4 else 0), prev[i], (prev[i - 4] if i >= 4 else 0)
            if kind == 0:
                p = 0
            elif kind == 1:
                p = a
            elif kind == 2:
                p = b
            elif kind == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[i] = (line[i] + p) & 255
        rows.append(cur)
        prev = cur
    return np.asarray(rows, dtype=np.uint8).reshape(height, width, 4)


@pytest.mark.skipif(RSVG is None, reason="rsvg-convert is not installed (apt-get install librsvg2-bin)")
def test_rsvg_convert_keeps_every_blank(tmp_path):
    """rsvg-convert draws a run of blanks as wide as the terminal does: the second X of "X<n blanks>X"
    moves one cell per blank (a collapsed run would put it one cell after the first)."""
    from rich.text import Text

    def pixels(text):
        console = recording_console(30)
        console.print(Text(text, style="bold"), soft_wrap=True)
        path = tmp_path / "t.svg"
        path.write_text(svg_text(console, "t", unique_id="t"))
        return _read_png(subprocess.run([RSVG, str(path)], capture_output=True, check=True).stdout)

    def second_x(blanks):
        text = "X" + " " * blanks + "X"
        ink = (pixels(text) != pixels(" " * len(text))).any(axis=(0, 2)).nonzero()[0]
        return ink[(ink[1:] - ink[:-1] > 1).nonzero()[0][0] + 1] - ink[0]

    one, two, twenty = second_x(1), second_x(2), second_x(20)
    cell = two - one
    assert cell > 5 and abs(twenty - one - 19 * cell) <= 2, (one, two, twenty)
