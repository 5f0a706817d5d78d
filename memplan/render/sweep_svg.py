"""``memplan unplug --sweep --svg``: the sweep as a chart with axes, ticks and labels.

x is the requested size given to the device, y the size that stays plugged once the driver
has done what it can (``SweepPoint.plugged_after_bytes``). The dashed diagonal is "plugged as
requested"; wherever the curve lies above it the guest could not give the memory back; the
floor is the smallest plugged size any request reaches. The picture is plain SVG: no script,
no external font or image, blanks preserved.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple
from xml.sax.saxutils import escape, quoteattr

from memplan.core.units import format_size
from memplan.plans.types import SweepResult

WIDTH, HEIGHT = 760, 500
LEFT, RIGHT, TOP, BOTTOM = 90, 30, 60, 70
FONT = "font-family='DejaVu Sans, Liberation Sans, Arial, sans-serif'"
MiB = 1 << 20


def tick_step(top: int, most: int = 8) -> int:
    """The smallest power-of-two size from 1 MiB up giving at most ``most`` ticks from 0 to
    ``top`` (binary sizes print exactly: 256M, 512M, 1G)."""
    step = MiB
    while top // step > most:
        step *= 2
    return step


def _x(value: int, top: int) -> float:
    return LEFT + (WIDTH - LEFT - RIGHT) * value / top


def _y(value: int, top: int) -> float:
    return HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * value / top


def _text(x: float, y: float, text: str, anchor: str = "middle", size: int = 12, extra: str = "") -> str:
    return (f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' font-size='{size}' {FONT} "
            f"xml:space='preserve' {extra}>{escape(text)}</text>")


def _axes(top: int) -> List[str]:
    out = [f"<line x1='{LEFT}' y1='{HEIGHT - BOTTOM}' x2='{WIDTH - RIGHT}' y2='{HEIGHT - BOTTOM}' stroke='#333'/>",
           f"<line x1='{LEFT}' y1='{HEIGHT - BOTTOM}' x2='{LEFT}' y2='{TOP}' stroke='#333'/>"]
    step = tick_step(top)
    value = 0
    while value <= top:
        x, y = _x(value, top), _y(value, top)
        out.append(f"<line x1='{x:.1f}' y1='{HEIGHT - BOTTOM}' x2='{x:.1f}' y2='{HEIGHT - BOTTOM + 5}' "
                   "stroke='#333'/>")
        out.append(_text(x, HEIGHT - BOTTOM + 20, format_size(value)))
        out.append(f"<line x1='{LEFT - 5}' y1='{y:.1f}' x2='{LEFT}' y2='{y:.1f}' stroke='#333'/>")
        out.append(f"<line x1='{LEFT}' y1='{y:.1f}' x2='{WIDTH - RIGHT}' y2='{y:.1f}' stroke='#eee'/>")
        out.append(_text(LEFT - 9, y + 4, format_size(value), anchor="end"))
        value += step
    out.append(_text((LEFT + WIDTH - RIGHT) / 2, HEIGHT - 25, "requested size (virtio-mem requested-size)"))
    middle = (TOP + HEIGHT - BOTTOM) / 2
    out.append(_text(22, middle, "plugged after the request (achievable size)",
                     extra=f"transform='rotate(-90 22 {middle:.1f})'"))
    return out


def _curve(points: Sequence[Tuple[int, int]], top: int) -> str:
    coords = " ".join(f"{_x(r, top):.1f},{_y(a, top):.1f}" for r, a in points)
    return f"<polyline points='{coords}' fill='none' stroke='#2e7d32' stroke-width='2.5'/>"


def sweep_svg(result: SweepResult, title: str) -> str:
    """The chart as an SVG document."""
    top = max(result.plugged_before_bytes, 1)
    points = [(p.requested_bytes, p.plugged_after_bytes) for p in result.points]
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
             f"viewBox='0 0 {WIDTH} {HEIGHT}' xml:space='preserve'>",
             f"<title>{escape(title)}</title>",
             f"<rect width='{WIDTH}' height='{HEIGHT}' fill='white'/>",
             _text(WIDTH / 2, 24, title, size=15, extra="font-weight='bold'"),
             _text(WIDTH / 2, 44, f"device {result.device} ({result.mode.value.upper()}, "
                                  f"{format_size(result.unit_size)} units), plugged {format_size(top)}, "
                                  f"floor {format_size(result.floor_bytes)}, semantics {result.semantics}", size=12)]
    parts += _axes(top)
    parts.append(f"<line x1='{_x(0, top):.1f}' y1='{_y(0, top):.1f}' x2='{_x(top, top):.1f}' y2='{_y(top, top):.1f}' "
                 "stroke='#888' stroke-dasharray='6 4'/>")
    floor = _y(result.floor_bytes, top)
    parts.append(f"<line x1='{LEFT}' y1='{floor:.1f}' x2='{WIDTH - RIGHT}' y2='{floor:.1f}' stroke='#c62828' "
                 "stroke-dasharray='2 3'/>")
    parts.append(_text(WIDTH - RIGHT - 4, floor - 6, f"floor {format_size(result.floor_bytes)}", anchor="end",
                       extra="fill='#c62828'"))
    if points:
        parts.append(_curve(points, top))
        for r, a in points:
            colour = "#2e7d32" if a <= r else "#c62828"
            parts.append(f"<circle cx='{_x(r, top):.1f}' cy='{_y(a, top):.1f}' r='3' fill={quoteattr(colour)}>"
                         f"<title>{escape(f'requested {format_size(r)}: plugged {format_size(a)}')}</title></circle>")
    legend_y = TOP + 14
    parts += [f"<line x1='{LEFT + 12}' y1='{legend_y}' x2='{LEFT + 40}' y2='{legend_y}' stroke='#2e7d32' "
              "stroke-width='2.5'/>",
              _text(LEFT + 46, legend_y + 4, "achievable (plugged after the request)", anchor="start"),
              f"<line x1='{LEFT + 12}' y1='{legend_y + 18}' x2='{LEFT + 40}' y2='{legend_y + 18}' stroke='#888' "
              "stroke-dasharray='6 4'/>",
              _text(LEFT + 46, legend_y + 22, "plugged as requested (red points: could not go that low)",
                    anchor="start")]
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
