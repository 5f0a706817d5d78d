"""``memplan diff-semantics``."""

from __future__ import annotations

import sys

import click

from memplan.cli.app import main
from memplan.cli.columns import ListingCommand, columns_epilog, listing_request, table_options
from memplan.cli.common import (
    blocks_option,
    foreign_ref_dropped_option,
    input_source,
    load_machine,
    machine_argument,
    parse_blocks,
    print_warnings,
    stdout_console,
)
from memplan.cli.names import DEFAULT_LEFT, DEFAULT_RIGHT, DIFF_COLUMNS, SEMANTICS_NAMES
from memplan.core.status import ExitStatus


@main.command("diff-semantics", cls=ListingCommand, epilog=columns_epilog(DIFF_COLUMNS))
@machine_argument
@click.option("--left", type=click.Choice(list(SEMANTICS_NAMES)), default=DEFAULT_LEFT, show_default=True,
              help="Semantics on the left side.")
@click.option("--right", type=click.Choice(list(SEMANTICS_NAMES)), default=DEFAULT_RIGHT, show_default=True,
              help="Semantics on the right side.")
@blocks_option
@foreign_ref_dropped_option
@click.option("-J", "--json", "as_json", is_flag=True,
              help="Write one JSON document to stdout; with -o, --output-all, -a, -S or -b the differing "
                   "blocks as lsmem -J prints a listing.")
@click.option("--csv", "as_csv", is_flag=True, help="Write CSV to stdout: one row per differing block.")
@table_options
def diff_semantics_command(profile: str, left: str, right: str, blocks: str, foreign_ref_dropped: str,
                           as_json: bool, as_csv: bool, **table: object) -> None:
    """Show every block whose offline verdict differs between two kernel semantics.

    Runs the same simulation under LEFT (default: refcount, mainline) and RIGHT (default:
    skippable, the posted PG_offline_skippable patch) and reports only the blocks whose result,
    errno, reason, step, culprit, kernel log or hazards differ, with the predicate sites that
    explain each difference; then, for every PageOffline owner in the profile, whether its
    blocks can still be offlined under each side, per zone. Exit status as diff(1): 0 no
    difference, 1 differences, 2 bad input.

    The group tables take lsmem's controls (-o with the columns BLOCK, RANGE, SIZE, ZONE,
    NODE, the two semantics' names, CHANGED, SITES, CULPRIT, CONFIDENCE; --split, --all,
    --bytes, -n, --summary); --raw, --pairs or --json with -o print one listing of every
    differing block instead of the report.

    \b
    Example:
      memplan diff-semantics profiles/skippable-review.toml --foreign-ref-dropped during-offline
      memplan diff-semantics profiles/skippable-review.toml --raw -o BLOCK,ZONE,SITES
    """
    from memplan.diff.compute import diff_semantics, with_foreign_ref_timing
    from memplan.kernel.semantics import SEMANTICS
    from memplan.render import csv as render_csv
    from memplan.render import json as render_json
    from memplan.render.block_columns import difference_columns
    from memplan.render.diff_json import diff_dict

    options, document = listing_request(table, as_json, difference_columns(left, right), csv=as_csv)
    machine = with_foreign_ref_timing(load_machine(profile), foreign_ref_dropped)
    result = diff_semantics(machine, left, right, parse_blocks(blocks, machine))
    print_warnings(result.warnings)
    if document:
        render_json.write(diff_dict(result, input_source(profile)), sys.stdout)
    elif as_csv:
        render_csv.write_diff(result, sys.stdout, noheader=options.noheadings)
    else:
        from memplan.render.diff import print_diff  # rich: only for the table

        print_diff(stdout_console(), result, {name: SEMANTICS[name].title for name in (left, right)}, options)
    raise SystemExit(int(ExitStatus.FAILURE if result.differences else ExitStatus.SUCCESS))
