"""``memplan simulate``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Optional

import click

from memplan.cli.app import main
from memplan.cli.columns import ListingCommand, columns_epilog, listing_request, sysfs_tree, table_options
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
    trust_option,
    trusted,
    with_foreign_ref_timing,
)
from memplan.cli.names import SIMULATE_COLUMNS
from memplan.cli.progress import block_progress
from memplan.cli.progress import wanted as progress_wanted
from memplan.core.status import ExitStatus, check_status

if TYPE_CHECKING:  # the engine and the renderers: imported when the command runs (--help needs none)
    from memplan.core.results import Confidence, Verdicts
    from memplan.render.block_columns import BlockRow
    from memplan.render.lsmem import ColumnSet


@main.command("simulate", cls=ListingCommand, epilog=columns_epilog(SIMULATE_COLUMNS))
@machine_argument
@semantics_option
@blocks_option
@foreign_ref_dropped_option
@click.option("-J", "--json", "as_json", is_flag=True,
              help="Write one JSON document to stdout; with -o, --output-all, -a, -S or -b the listing "
                   "as lsmem -J prints it.")
@click.option("--jsonl", "as_jsonl", is_flag=True,
              help="Write JSON Lines to stdout: one object per judged block (as --json lists them), then "
                   "one object with the rest of the --json document (its \"summary\" key marks the last line).")
@click.option("--csv", "as_csv", is_flag=True, help="Write CSV to stdout: one row per block, with a header.")
@table_options
@click.option("--check", is_flag=True,
              help="Exit 0 if every selected block offlines, 64 if some do, 1 if none does (a block counts "
                   "when its verdict is as sure as --trust asks).")
@trust_option
def simulate_command(profile: str, semantics: str, blocks: str, foreign_ref_dropped: Optional[str], as_json: bool,
                     as_jsonl: bool, as_csv: bool, check: bool, trust: Confidence, **table: object) -> None:
    """Predict, block by block, what writing "offline" to memoryN/state would do.

    Each selected block is judged on its own against the machine's state: the result
    (offlined / fails / hangs), the errno and the kernel's own reason string, the step of
    offline_pages() that decides it, the culprit page, and what the kernel would print.

    The listing is lsmem's: contiguous blocks with equal values in the printed columns merge
    into one row (BLOCK shows N-M, RANGE and SIZE cover the run, page counts are summed);
    -o, --output-all, -S/--split, -a, -b, -n, -r, -P, -J and --summary work as in lsmem, and
    lsmem's columns (RANGE SIZE STATE REMOVABLE BLOCK NODE ZONES) can be mixed with memplan's.
    With only lsmem's columns every present block is listed, online or not, exactly as
    lsmem --sysroot lists it, and nothing is judged. --json (alone), --jsonl and --csv have
    one entry per judged block.

    Every format is written as the blocks are judged, a chunk at a time: memory does not
    grow with the number of blocks.

    \b
    Example:
      memplan simulate profiles/sbm-guest.toml --semantics skippable --blocks 32-47
      memplan simulate profiles/boot-vm.toml -o +NODE,HOLES --split RESULT,REASON
      memplan simulate --sysroot DIR -o RANGE,SIZE,STATE,REMOVABLE,BLOCK,ZONES
    """
    from memplan.engine.simulation import select_blocks, stream
    from memplan.render import json as render_json
    from memplan.render.table_options import Format

    options, document = listing_request(table, as_json, _all_columns, csv=as_csv, jsonl=as_jsonl)
    listing = not (document or as_jsonl or as_csv)
    if listing:  # only a listing needs the columns, the blocks' facts and the table renderer (rich)
        from memplan.render import table as render_table
        from memplan.render.block_columns import needs_verdicts, reads_tree, verdict_columns
        from memplan.render.block_facts import MachineFacts
    elif as_csv:
        from memplan.render import csv as render_csv
    machine = with_foreign_ref_timing(load_machine(profile), foreign_ref_dropped)
    if listing:
        tree = sysfs_tree(profile)
        columns = verdict_columns(tree is not None and tree.have_memconfig)
        facts = MachineFacts(machine, tree, read_tree=reads_tree(columns, options))
    selected = parse_blocks(blocks, machine)
    if listing and not needs_verdicts(columns, options):
        # lsmem's listing: every present block (or the selected ones), as lsmem lists them
        print_warnings(machine.warnings)
        ids = select_blocks(machine, selected) if selected is not None else machine.blocks.ids
        render_table.print_simulation(stdout_console(), None, facts, options, columns, ids)
        if check:  # the verdicts are judged for the exit status only
            verdicts = stream(machine, semantics, selected)
            for _ in verdicts:
                pass
            _exit_checked(verdicts, trust)
        raise SystemExit(int(ExitStatus.SUCCESS))
    # A bar only for the table, which prints once every block is judged (the other formats
    # print as the blocks are judged).
    printed_at_end = not (document or as_jsonl or as_csv) and options.format is Format.TABLE
    with block_progress(progress_wanted(not printed_at_end), machine.geometry.pages_per_block) as progress:
        # judged while written: unknown blocks fail here, before any output
        verdicts = stream(machine, semantics, selected, progress=progress)
        print_warnings(verdicts.warnings)
        if document:
            render_json.write_simulation(verdicts, sys.stdout, input_source(profile))
        elif as_jsonl:
            render_json.write_simulation_lines(verdicts, sys.stdout, input_source(profile))
        elif as_csv:
            render_csv.write_simulation(verdicts, sys.stdout, noheader=options.noheadings)
        else:
            render_table.print_simulation(stdout_console(), verdicts, facts, options, columns)
    if check:
        _exit_checked(verdicts, trust)
    raise SystemExit(int(ExitStatus.SUCCESS))


def _all_columns() -> ColumnSet[BlockRow]:
    """Every column a listing can show (what ``-o`` and ``--split`` are checked against)."""
    from memplan.render.block_columns import verdict_columns

    return verdict_columns(has_memconfig=True)


def _exit_checked(result: Verdicts, trust: Confidence) -> None:
    """``--check``: 0 if every judged block offlines, 64 if some do, 1 if none does; a block
    counts only when its verdict is as sure as ``--trust`` asks (default: certain or likely).
    From the summary: the verdicts have streamed by already."""
    summary = result.summary
    achieved = sum(n for level, n in summary.offlined_by_confidence.items() if trusted(trust, level))
    raise SystemExit(int(check_status(achieved, summary.blocks)))
