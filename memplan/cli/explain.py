"""``memplan explain``."""

from __future__ import annotations

import sys
from typing import Optional

import click

from memplan.cli.app import main
from memplan.cli.common import load_machine, machine_argument, print_warnings, semantics_option, stdout_console
from memplan.cli.diff import foreign_ref_dropped_option
from memplan.core.errors import UsageError
from memplan.core.status import ExitStatus
from memplan.diff.compute import with_foreign_ref_timing
from memplan.explain.compute import explain_block
from memplan.render import explain as render_explain
from memplan.render import json as render_json


def parse_block(value: str) -> int:
    """``36`` or ``memory36`` (the sysfs directory name)."""
    text = value.strip()
    if text.startswith("memory"):
        text = text[len("memory"):]
    if not (text.isascii() and text.isdigit()):
        raise UsageError(f"BLOCK: {value!r} is not a memory block number", hint="e.g. 36 or memory36")
    block = int(text)
    if block >= 1 << 63:  # no machine has it (block ids are below 2^52 / 128 MiB)
        raise UsageError(f"BLOCK: {value!r} is not a memory block of any machine", hint="e.g. 36 or memory36")
    return block


@main.command("explain")
@machine_argument
@click.argument("block", metavar="BLOCK")
@semantics_option
@foreign_ref_dropped_option
@click.option("--json", "as_json", is_flag=True, help="Write one JSON document to stdout.")
def explain_command(profile: str, block: str, semantics: str, foreign_ref_dropped: Optional[str],
                    as_json: bool) -> None:
    """Tell the story of one memory block through every step of offline_pages().

    For each step in the kernel's order (state, zone, alignment, holes, multizone, pageblock
    isolation, node notifier, MEM_GOING_OFFLINE, pending signal, SCAN/MIGRATE, DISSOLVE,
    TEST_ISOLATED, commit): passed, failed, hangs or not reached, and why. Then the block's
    pages with the kpageflags a live host would show (page-types style), the culprit page,
    what the kernel would print, and one sentence on how to make the block offlinable.
    BLOCK is a block number (36) or its sysfs name (memory36).

    \b
    Example:
      memplan explain profiles/sbm-guest.toml 36
      memplan explain profiles/skippable-review.toml 42 --semantics skippable --json
    """
    machine = with_foreign_ref_timing(load_machine(profile), foreign_ref_dropped)
    story = explain_block(machine, parse_block(block), semantics)
    print_warnings(machine.warnings)
    if as_json:
        render_json.write(render_explain.story_dict(story, machine.geometry.page_size), sys.stdout)
    else:
        render_explain.print_story(stdout_console(), story, machine.geometry.page_size)
    raise SystemExit(int(ExitStatus.SUCCESS))
