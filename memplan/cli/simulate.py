"""``memplan simulate``."""

from __future__ import annotations

import sys
from typing import Optional

import click

from memplan.cli.app import main
from memplan.cli.columns import columns_epilog, exclusive_formats, pop_table_options, table_options, used_table_options
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
from memplan.cli.progress import block_progress
from memplan.cli.progress import wanted as progress_wanted
from memplan.core.errors import UsageError
from memplan.core.results import Outcome
from memplan.core.status import ExitStatus, check_status
from memplan.diff.compute import with_foreign_ref_timing
from memplan.engine.simulation import simulate as run_simulation
from memplan.render import csv as render_csv
from memplan.render import json as render_json
from memplan.render import table as render_table
from memplan.render.block_columns import verdict_columns


@main.command("simulate", epilog=columns_epilog(verdict_columns()))
@machine_argument
@semantics_option
@blocks_option
@foreign_ref_dropped_option
@click.option("--json", "as_json", is_flag=True, help="Write one JSON document to stdout.")
@click.option("--csv", "as_csv", is_flag=True, help="Write CSV to stdout: one row per block, with a header.")
@table_options
@click.option("--check", is_flag=True,
              help="Exit 0 if every selected block offlines, 64 if some do, 1 if none does.")
def simulate_command(profile: str, semantics: str, blocks: str, foreign_ref_dropped: Optional[str], as_json: bool,
                     as_csv: bool, check: bool, **table: object) -> None:
    """Predict, block by block, what writing "offline" to memoryN/state would do.

    Each selected block is judged on its own against the profile's state: the result
    (offlined / fails / hangs), the errno and the kernel's own reason string, the step of
    offline_pages() that decides it, the culprit page, and what the kernel would print.

    The table follows lsmem: contiguous blocks with equal values in the printed columns merge
    into one row (BLOCK shows N-M, RANGE and SIZE cover the run, page counts are summed);
    -o/--output, --split, --all, --bytes, --noheadings and --raw work as in lsmem. --json and
    --csv always have one entry per block.

    \b
    Example:
      memplan simulate profiles/sbm-guest.toml --semantics skippable --blocks 32-47
      memplan simulate profiles/boot-vm.toml -o +NODE,HOLES --split RESULT,REASON
    """
    options = pop_table_options(table)
    exclusive_formats(json=as_json, csv=as_csv, raw=options.raw)
    if as_json or as_csv:
        used = used_table_options(options)
        if used:
            raise UsageError(f"{used} applies to the table, not to --{'json' if as_json else 'csv'}",
                             hint="--json and --csv always have one entry per block")
    columns = verdict_columns(confidence=True)
    columns.splits(options, columns.select(options))  # bad column names fail before the simulation
    machine = with_foreign_ref_timing(load_machine(profile), foreign_ref_dropped)
    selected = parse_blocks(blocks)
    with block_progress(progress_wanted(as_json or as_csv), machine.geometry.pages_per_block) as progress:
        result = run_simulation(machine, semantics, selected, progress=progress)
    print_warnings(result.warnings)
    if as_json:
        render_json.write_simulation(result, sys.stdout)
    elif as_csv:
        render_csv.write_simulation(result, sys.stdout, noheader=options.noheadings)
    else:
        render_table.print_simulation(stdout_console(), result, options)
    if check:
        ok = sum(1 for b in result.blocks if b.result is Outcome.OFFLINED)
        raise SystemExit(int(check_status(ok, len(result.blocks))))
    raise SystemExit(int(ExitStatus.SUCCESS))
