"""``memplan profiles``."""

from __future__ import annotations

import os
import sys

import click

from memplan.cli.app import main
from memplan.cli.common import stdout_console
from memplan.core.status import ExitStatus
from memplan.profile.bundled import BundledProfile, bundled_profiles
from memplan.render import json as render_json
from memplan.render.lsmem import Column, ColumnSet, TableOptions, print_table


def _shown_path(path: str) -> str:
    """Relative to the current directory when it is below it (``profiles/sbm-guest.toml``)."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


PROFILE_COLUMNS: ColumnSet[BundledProfile] = ColumnSet(
    (Column("NAME", lambda p: p.name), Column("DESCRIPTION", lambda p: p.description or "-", wrap=True),
     Column("PATH", lambda p: _shown_path(p.path))),
    ("NAME", "DESCRIPTION", "PATH"), key=None)


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
    profiles = bundled_profiles()
    if as_json:
        render_json.write({"profiles": [{"name": p.name, "description": p.description, "path": p.path}
                                        for p in profiles]}, sys.stdout)
    else:
        print_table(stdout_console(), PROFILE_COLUMNS, profiles, TableOptions())
    raise SystemExit(int(ExitStatus.SUCCESS))
