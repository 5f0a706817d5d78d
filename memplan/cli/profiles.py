"""``memplan profiles``."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, List

import click

from memplan.cli.app import main
from memplan.cli.common import stdout_console
from memplan.core.status import ExitStatus

if TYPE_CHECKING:  # imported when the command runs (--help needs none)
    from memplan.profile.bundled import BundledProfile


def _shown_path(path: str) -> str:
    """Relative to the current directory when it is below it (``profiles/sbm-guest.toml``)."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _row(p: BundledProfile) -> List[str]:
    return [p.name, _shown_path(p.path), p.description or ""]


@main.command("profiles")
@click.option("--json", "as_json", is_flag=True, help="Write one JSON document to stdout.")
def profiles_command(as_json: bool) -> None:
    """List the bundled machine profiles with the one-line description of each.

    Pass a profile's PATH to any command. The profiles live in profiles/ of a checkout and
    are installed with the package.

    \b
    Example:
      memplan profiles
      memplan simulate profiles/sbm-guest.toml
    """
    from memplan.profile.bundled import bundled_profiles
    from memplan.render import json as render_json

    profiles = bundled_profiles()
    if as_json:
        render_json.write({"profiles": [{"name": p.name, "description": p.description, "path": p.path}
                                        for p in profiles]}, sys.stdout)
    else:
        from memplan.render.grid import print_grid  # rich: only for the table

        print_grid(stdout_console(), (("NAME", "left"), ("PATH", "left"), ("DESCRIPTION", "left")),
                   [_row(p) for p in profiles])
    raise SystemExit(int(ExitStatus.SUCCESS))
