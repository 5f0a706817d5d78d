"""``memplan map``."""

from __future__ import annotations

import sys
from typing import Optional

import click

from memplan.cli.app import main
from memplan.cli.common import (
    blocks_option,
    foreign_ref_dropped_option,
    input_source,
    load_machine,
    machine_argument,
    parse_blocks,
    print_warnings,
    semantics_option,
    stdout_console,
    with_foreign_ref_timing,
)
from memplan.cli.names import DEFAULT_LEFT, DEFAULT_RIGHT, SEMANTICS_NAMES
from memplan.core.errors import UsageError
from memplan.core.status import ExitStatus


@main.command("map")
@machine_argument
@semantics_option
@blocks_option
@click.option("--diff", "diff", is_flag=True,
              help="Mark the blocks whose verdict differs between --left and --right (as diff-semantics).")
@click.option("--left", type=click.Choice(list(SEMANTICS_NAMES)), default=None,
              help=f"Left semantics for --diff (default: {DEFAULT_LEFT}); implies --diff.")
@click.option("--right", type=click.Choice(list(SEMANTICS_NAMES)), default=None,
              help=f"Right semantics for --diff (default: {DEFAULT_RIGHT}); implies --diff.")
@foreign_ref_dropped_option
@click.option("--svg", "svg", metavar="FILE", type=click.Path(dir_okay=False), default=None,
              help="Also save the picture as SVG.")
@click.option("--html", "html", metavar="FILE", type=click.Path(dir_okay=False), default=None,
              help="Also save the picture as HTML.")
@click.option("--json", "as_json", is_flag=True,
              help="Write the map as one JSON document instead: every cell with its kind and confidence, "
                   "the segments, the counts and the judged memory split by confidence.")
def map_command(profile: str, semantics: Optional[str], blocks: Optional[str], diff: bool, left: Optional[str],
                right: Optional[str], foreign_ref_dropped: Optional[str], svg: Optional[str],
                html: Optional[str], as_json: bool) -> None:
    """Draw the machine as a grid of memory blocks, coloured by what offlining would do.

    One cell per memory block, wrapping at the terminal width (COLUMNS, else the terminal's,
    else 80): o offlines, X fails, H hangs until a signal, ? a verdict memplan cannot be
    sure of (unknown; likely ones are underlined on a terminal), - already offline, . a
    virtio-mem device slot with nothing plugged, _ not judged (outside --blocks). Every zone,
    node and virtio-mem device region starts its own line; stretches without memory are one
    line. A legend counts every kind of cell, and the judged ones per confidence. The
    characters carry the meaning without colour (NO_COLOR, pipes).

    With --diff (or --left/--right) the map shows where two semantics disagree: < offlines
    only under the left one, > only under the right one, * differs otherwise; the other
    cells are dimmed. --svg/--html save the same picture in colour, self-contained (no
    external font or file). --json writes every cell with its kind and confidence, and the
    judged memory split by confidence.

    \b
    Example:
      memplan map profiles/sbm-guest.toml
      memplan map profiles/skippable-review.toml --diff --svg review.svg
    """
    from memplan.engine.simulation import stream
    from memplan.map.compute import diff_map, machine_map
    from memplan.render.map_json import write_map

    diff = diff or left is not None or right is not None
    if diff and semantics is not None:
        raise UsageError("--semantics cannot be combined with --diff", hint="use --left and --right")
    machine = with_foreign_ref_timing(load_machine(profile), foreign_ref_dropped)
    selected = parse_blocks(blocks, machine)
    if diff:
        lsem, rsem = left or DEFAULT_LEFT, right or DEFAULT_RIGHT
        # Both semantics judged side by side as the map is built: no verdict is held.
        lresult = stream(machine, lsem, selected)
        rresult = stream(machine, rsem, selected)
        bmap = diff_map(machine, lresult, rresult, selected)
        warnings = tuple(dict.fromkeys(tuple(lresult.warnings) + tuple(rresult.warnings)))
        title = f"memplan map {machine.name}: {lsem} vs {rsem}"
    else:
        result = stream(machine, semantics, selected)
        bmap = machine_map(machine, result, selected)
        warnings = result.warnings
        title = f"memplan map {machine.name}: {result.semantics}"
    print_warnings(warnings)
    if svg or html or not as_json:  # the pictures and the map are drawn with rich (--json alone needs none)
        from memplan.render.export import export_pictures
        from memplan.render.map import map_renderable, print_map

        console = stdout_console()
        if svg or html:  # first: a file that cannot be written is an error before any output
            export_pictures(map_renderable(bmap, console.width), console.width, title, svg, html)
        if not as_json:
            print_map(console, bmap)
    if as_json:
        write_map(bmap, input_source(profile), warnings, sys.stdout)
    raise SystemExit(int(ExitStatus.SUCCESS))
