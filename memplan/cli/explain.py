"""``memplan explain``."""

from __future__ import annotations

import dataclasses
import sys
from typing import Optional, Tuple

import click

from memplan.cli.app import main
from memplan.cli.common import (
    foreign_ref_dropped_option,
    input_source,
    load_machine,
    machine_source,
    print_warnings,
    semantics_option,
    snapshot_options,
    stdout_console,
    with_foreign_ref_timing,
)
from memplan.core.errors import UsageError
from memplan.core.limits import ascii_number
from memplan.core.status import ExitStatus


def parse_block(value: str) -> int:
    """``36`` or ``memory36`` (the sysfs directory name)."""
    text = value.strip()
    if text.startswith("memory"):
        text = text[len("memory"):]
    if not (text.isascii() and text.isdigit()):
        raise UsageError(f"BLOCK: {value!r} is not a memory block number", hint="e.g. 36 or memory36")
    block = ascii_number(text, 1 << 63)
    if block is None:  # no machine has it (block ids are below 2^52 / 128 MiB)
        raise UsageError(f"BLOCK: {value!r} is not a memory block of any machine", hint="e.g. 36 or memory36")
    return block


def machine_and_block(words: Tuple[str, ...], sysroot: Optional[str], live: bool) -> Tuple[str, str]:
    """``PROFILE BLOCK``, or ``BLOCK`` alone with ``--sysroot DIR`` / ``--live`` (the machine is
    then the snapshot): the source for ``load_machine()`` and the block word."""
    snapshot = bool(sysroot) or live
    if len(words) == 2:
        return machine_source(words[0], sysroot, live), words[1]
    if len(words) == 1:
        if snapshot:
            return machine_source(None, sysroot, live), words[0]
        raise UsageError(f"give a PROFILE, --sysroot DIR or --live, and a BLOCK (only {words[0]!r} was given)",
                         hint="e.g. memplan explain profiles/sbm-guest.toml 36, or memplan explain --live 36")
    if not words:
        raise UsageError("missing BLOCK: the memory block to explain (e.g. 36 or memory36)")
    raise UsageError(f"too many arguments ({' '.join(words)}): give [PROFILE] BLOCK")


@main.command("explain")
@snapshot_options
@click.argument("words", metavar="[PROFILE] BLOCK", nargs=-1)
@semantics_option
@foreign_ref_dropped_option
@click.option("--json", "as_json", is_flag=True, help="Write one JSON document to stdout.")
def explain_command(words: Tuple[str, ...], sysroot: Optional[str], live: bool, semantics: str,
                    foreign_ref_dropped: Optional[str], as_json: bool) -> None:
    """Tell the story of one memory block through every step of offline_pages().

    For each step in the kernel's order (state, zone, alignment, holes, multizone, pageblock
    isolation, node notifier, MEM_GOING_OFFLINE, pending signal, SCAN/MIGRATE, DISSOLVE,
    TEST_ISOLATED, commit): passed, failed, hangs or not reached, and why. Then the block's
    pages with the kpageflags a live host would show (page-types style), the culprit page,
    what the kernel would print, and one sentence on how to make the block offlinable.
    BLOCK is a block number (36) or its sysfs name (memory36); with --sysroot DIR or --live
    it is the only argument.

    \b
    Example:
      memplan explain profiles/sbm-guest.toml 36
      memplan explain profiles/skippable-review.toml 42 --semantics skippable --json
      memplan explain --sysroot /tmp/myhost 36
      memplan explain --live memory36
    """
    from memplan.engine.simulation import with_confidence
    from memplan.explain.compute import explain_block
    from memplan.kernel.semantics import get_semantics
    from memplan.render import json as render_json
    from memplan.render.explain_json import story_dict

    profile, block = machine_and_block(words, sysroot, live)
    machine = with_foreign_ref_timing(load_machine(profile), foreign_ref_dropped)
    story = explain_block(machine, parse_block(block), semantics)
    if machine.assessor is not None and story.verdict.confidence is None:
        # A snapshot: the verdict's confidence and blind spots, as simulate gives them.
        judged = with_confidence(machine, get_semantics(story.semantics), [story.verdict])[0]
        story = dataclasses.replace(story, verdict=judged)
    print_warnings(machine.warnings)
    if as_json:
        render_json.write(story_dict(story, input_source(profile), machine.geometry, machine.warnings), sys.stdout)
    else:
        from memplan.render.explain import print_story  # rich: only for the table

        print_story(stdout_console(), story, machine.geometry)
    raise SystemExit(int(ExitStatus.SUCCESS))
