"""``memplan map``."""

from __future__ import annotations

import io
from typing import Optional

import click
from rich.console import Console, RenderableType

from memplan.cli.app import main
from memplan.cli.common import (
    blocks_option,
    load_machine,
    machine_argument,
    parse_blocks,
    print_warnings,
    semantics_option,
    stdout_console,
)
from memplan.cli.diff import foreign_ref_dropped_option
from memplan.core.errors import UsageError
from memplan.core.status import ExitStatus
from memplan.diff.compute import DEFAULT_LEFT, DEFAULT_RIGHT, with_foreign_ref_timing
from memplan.engine.simulation import simulate
from memplan.kernel.semantics import SEMANTICS
from memplan.map.compute import diff_map, machine_map
from memplan.render.map import map_renderable


def _export(renderable: RenderableType, width: int, svg: Optional[str], html: Optional[str], title: str) -> None:
    """Render once more on a recording console with colours and save it (rich's export)."""
    recorder = Console(record=True, width=width, file=io.StringIO(), force_terminal=True, color_system="truecolor",
                       highlight=False)
    recorder.print(renderable)
    for option, path, export in (("--svg", svg, lambda: recorder.export_svg(title=title, clear=False)),
                                 ("--html", html, lambda: recorder.export_html(clear=False))):
        if not path:
            continue
        try:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(export())
        except OSError as exc:
            raise UsageError(f"{option}: cannot write {path!r}: {exc.strerror or exc}") from None


@main.command("map")
@machine_argument
@semantics_option
@blocks_option
@click.option("--diff", "diff", is_flag=True,
              help="Mark the blocks whose verdict differs between --left and --right (as diff-semantics).")
@click.option("--left", type=click.Choice(list(SEMANTICS)), default=None,
              help=f"Left semantics for --diff (default: {DEFAULT_LEFT}); implies --diff.")
@click.option("--right", type=click.Choice(list(SEMANTICS)), default=None,
              help=f"Right semantics for --diff (default: {DEFAULT_RIGHT}); implies --diff.")
@foreign_ref_dropped_option
@click.option("--svg", "svg", metavar="FILE", type=click.Path(dir_okay=False), default=None,
              help="Also save the picture as SVG.")
@click.option("--html", "html", metavar="FILE", type=click.Path(dir_okay=False), default=None,
              help="Also save the picture as HTML.")
def map_command(profile: str, semantics: Optional[str], blocks: Optional[str], diff: bool, left: Optional[str],
                right: Optional[str], foreign_ref_dropped: Optional[str], svg: Optional[str],
                html: Optional[str]) -> None:
    """Draw the machine as a grid of memory blocks, coloured by what offlining would do.

    One cell per memory block, wrapping at the terminal width: o offlines, X fails, H hangs
    until a signal, - already offline, . a virtio-mem device slot with nothing plugged, ?
    not judged (outside --blocks). Every zone, node and virtio-mem device region starts its
    own line; stretches without memory are one line. A legend counts every kind of cell.
    The characters carry the meaning without colour (NO_COLOR, pipes).

    With --diff (or --left/--right) the map shows where two semantics disagree: < offlines
    only under the left one, > only under the right one, * differs otherwise; the other
    cells are dimmed. --svg/--html save the same picture in colour.

    \b
    Example:
      memplan map profiles/sbm-guest.toml
      memplan map profiles/skippable-review.toml --diff --svg review.svg
    """
    diff = diff or left is not None or right is not None
    if diff and semantics is not None:
        raise UsageError("--semantics cannot be combined with --diff", hint="use --left and --right")
    machine = with_foreign_ref_timing(load_machine(profile), foreign_ref_dropped)
    selected = parse_blocks(blocks)
    if diff:
        lsem, rsem = left or DEFAULT_LEFT, right or DEFAULT_RIGHT
        lresult = simulate(machine, lsem, selected)
        rresult = simulate(machine, rsem, selected)
        bmap = diff_map(machine, lresult, rresult, selected)
        warnings = tuple(dict.fromkeys(lresult.warnings + rresult.warnings))
        title = f"memplan map {machine.name}: {lsem} vs {rsem}"
    else:
        result = simulate(machine, semantics, selected)
        bmap = machine_map(machine, result, selected)
        warnings = result.warnings
        title = f"memplan map {machine.name}: {result.semantics}"
    print_warnings(warnings)
    console = stdout_console()
    renderable = map_renderable(bmap, console.width)
    if svg or html:  # first: a file that cannot be written is an error before any output
        _export(renderable, console.width, svg, html, title)
    console.print(renderable)
    raise SystemExit(int(ExitStatus.SUCCESS))
