"""Options and helpers shared by the commands."""

from __future__ import annotations

import os
import sys
from typing import Callable, List, Optional

import click
from rich.console import Console

from memplan.errors import ProfileError, UsageError
from memplan.kernel.semantics import SEMANTICS
from memplan.model import Machine
from memplan.units import parse_block_ranges


def stdout_console() -> Console:
    """stdout for results; no colour unless stdout is a terminal (rich honours NO_COLOR)."""
    tty = sys.stdout.isatty()
    width = None if tty else int(os.environ.get("COLUMNS", "200"))
    return Console(width=width, soft_wrap=False, highlight=False)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def load_machine(profile: str) -> Machine:
    """A machine from a profile path (snapshot sources plug in here)."""
    from memplan.inputs.profile import load_profile
    try:
        return load_profile(profile)
    except ProfileError as exc:
        from memplan.inputs.bundled import missing_profile_hint
        hint = None if exc.hint or exc.key else missing_profile_hint(profile)
        if hint is None:
            raise
        raise ProfileError(exc.path, "", exc.message[len(exc.path) + 2:], hint=hint) from None


def machine_argument(func: Callable) -> Callable:
    return click.argument("profile", metavar="PROFILE", type=click.Path(dir_okay=False))(func)


def semantics_option(func: Callable) -> Callable:
    return click.option("--semantics", type=click.Choice(list(SEMANTICS)), default=None,
                        help="Kernel semantics (default: the profile's, else refcount = mainline).")(func)


def parse_blocks(value: Optional[str]) -> Optional[List[int]]:
    if value is None:
        return None
    try:
        return parse_block_ranges(value)
    except ValueError as exc:
        raise UsageError(f"--blocks: {exc}") from None


def blocks_option(func: Callable) -> Callable:
    return click.option("--blocks", "blocks", metavar="RANGE", default=None,
                        help="Memory blocks to judge, lsmem syntax: 7, 32-63, 1,4,8-9 (default: every online block).")(func)


def print_warnings(warnings) -> None:
    for warning in warnings:
        click.echo(f"memplan: warning: {warning}", err=True)
