"""``memplan snapshot``."""

from __future__ import annotations

import sys
from typing import Optional

import click

from memplan.cli.app import main
from memplan.cli.columns import ListingCommand, columns_epilog, listing_request, sysfs_tree, table_options
from memplan.cli.common import (
    input_source,
    load_machine,
    machine_source,
    print_warnings,
    snapshot_options,
    stdout_console,
)
from memplan.cli.names import SNAPSHOT_COLUMNS
from memplan.core.status import ExitStatus


@main.command("snapshot", cls=ListingCommand, epilog=columns_epilog(SNAPSHOT_COLUMNS))
@snapshot_options
@click.option("-J", "--json", "as_json", is_flag=True,
              help="Write one JSON document to stdout; with -o, --output-all, -a, -S or -b the block listing "
                   "as lsmem -J prints it.")
@click.option("--page-types", "page_types", is_flag=True,
              help="Print the page-flags summary exactly as the kernel's tools/mm/page-types prints it.")
@click.option("--save", metavar="DIR", type=click.Path(file_okay=False), default=None,
              help="Also write the snapshot as a tree under DIR (a new or empty directory): the sysfs/procfs "
                   "files read, kpageflags and kpagecount xz-compressed. Ship it; read it with --sysroot.")
@table_options
def snapshot_command(sysroot: Optional[str], live: bool, as_json: bool, page_types: bool,
                     save: Optional[str], **table: object) -> None:
    """Show what a snapshot of a machine captures, and what it cannot see.

    Reads /sys/devices/system/memory, /proc/kpageflags, /proc/kpagecount, /proc/iomem,
    /proc/zoneinfo, hugepage and memory-hotplug parameters (--live: this machine, read-only;
    --sysroot DIR: a saved tree). Prints memory blocks per state and zone, pages per class
    (page-types style), the zones, virtio-mem devices, the detected PageOffline semantics and
    the blind spots. Every command that takes a PROFILE accepts --sysroot/--live instead.

    The memory blocks are listed as lsmem lists them (-o, --output-all, -S, -a, -b, -n, -r,
    -P, -J and --summary as in lsmem): memplan snapshot -s DIR -o RANGE,SIZE,STATE,REMOVABLE,BLOCK
    prints the rows lsmem --sysroot DIR prints.

    \b
    Examples:
      memplan snapshot --live
      memplan snapshot --live --save /tmp/myhost    # then: memplan simulate --sysroot /tmp/myhost
    """
    from memplan.render import json as render_json
    from memplan.render.block_columns import lsmem_columns, reads_tree
    from memplan.render.block_facts import MachineFacts
    from memplan.render.snapshot_json import SNAPSHOT_DEFAULT, snapshot_dict
    from memplan.snapshot.reader import describe

    options, document = listing_request(table, as_json, lsmem_columns(True, SNAPSHOT_DEFAULT),
                                        page_types=page_types)
    source = machine_source(None, sysroot, live)
    machine = load_machine(source)
    report = describe(machine, save_to=save)
    print_warnings(report.warnings)
    if document:
        render_json.write(snapshot_dict(report, input_source(source)), sys.stdout)
    elif page_types:
        click.echo(report.page_types, nl=False)
    else:
        from memplan.render.snapshot import print_snapshot  # rich: only for the table

        columns = lsmem_columns(True, SNAPSHOT_DEFAULT)
        facts = MachineFacts(machine, sysfs_tree(source), read_tree=reads_tree(columns, options))
        print_snapshot(stdout_console(), report, facts, options)
    raise SystemExit(int(ExitStatus.SUCCESS))
