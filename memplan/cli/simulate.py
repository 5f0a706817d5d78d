"""``memplan simulate``."""

from __future__ import annotations

import sys

import click

from memplan.cli.app import main
from memplan.cli.common import (
    blocks_option, load_machine, machine_argument, parse_blocks, print_warnings, semantics_option,
    stdout_console,
)
from memplan.cli.progress import block_progress
from memplan.cli.progress import wanted as progress_wanted
from memplan.render import json as render_json
from memplan.render import table as render_table
from memplan.results import Outcome
from memplan.simulation import simulate as run_simulation
from memplan.status import ExitStatus, check_status


@main.command("simulate")
@machine_argument
@semantics_option
@blocks_option
@click.option("--json", "as_json", is_flag=True, help="Write one JSON document to stdout.")
@click.option("--check", is_flag=True,
              help="Exit 0 if every selected block offlines, 64 if some do, 1 if none does.")
def simulate_command(profile: str, semantics: str, blocks: str, as_json: bool, check: bool) -> None:
    """Predict, block by block, what writing "offline" to memoryN/state would do.

    Each selected block is judged on its own against the profile's state: the result
    (offlined / fails / hangs), the errno and the kernel's own reason string, the step of
    offline_pages() that decides it, the culprit page, and what the kernel would print.

    \b
    Example:
      memplan simulate profiles/sbm-guest.toml --semantics skippable --blocks 32-47
    """
    machine = load_machine(profile)
    selected = parse_blocks(blocks)
    with block_progress(progress_wanted(as_json), machine.geometry.pages_per_block) as progress:
        result = run_simulation(machine, semantics, selected, progress=progress)
    print_warnings(result.warnings)
    if as_json:
        render_json.write_simulation(result, sys.stdout)
    else:
        render_table.print_simulation(stdout_console(), result)
    if check:
        ok = sum(1 for b in result.blocks if b.result is Outcome.OFFLINED)
        raise SystemExit(int(check_status(ok, len(result.blocks))))
    raise SystemExit(int(ExitStatus.SUCCESS))
