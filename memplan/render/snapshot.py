"""``memplan snapshot``: the report as rich tables and as one JSON document."""

from __future__ import annotations

from typing import Optional, Tuple

from rich.console import Console

from memplan.core.units import format_size
from memplan.render.block_columns import BlockRow, lsmem_columns
from memplan.render.block_facts import MachineFacts
from memplan.render.console import print_line
from memplan.render.escape import safe
from memplan.render.grid import Justify, grid_of
from memplan.render.lsmem import Format, TableOptions, print_listing
from memplan.render.snapshot_json import SNAPSHOT_DEFAULT, snapshot_dict  # noqa: F401  (re-exported)
from memplan.snapshot.report import SnapshotReport

#: The block groups (without the machine's blocks), the page classes and the zones.
BLOCK_COLUMNS: Tuple[Tuple[str, Justify], ...] = (
    ("STATE", "left"), ("ZONE", "left"), ("BLOCKS", "right"), ("SIZE", "right"))
CLASS_COLUMNS: Tuple[Tuple[str, Justify], ...] = (
    ("PAGES", "right"), ("MB", "right"), ("CLASS", "left"), ("READ AS", "left"), ("WHAT KPAGEFLAGS SHOWS", "left"))
ZONE_COLUMNS: Tuple[Tuple[str, Justify], ...] = tuple(
    (name, "left" if name == "ZONE" else "right")
    for name in ("NODE", "ZONE", "PRESENT", "MANAGED", "FREE", "PER-CPU FREE", "CMA", "NO FLAGS"))
def _mb(pages: int, page_size: int) -> int:
    return (pages * page_size) >> 20


def print_block_listing(console: Console, facts: MachineFacts, options: TableOptions) -> None:
    """The machine's memory blocks as lsmem lists them, with lsmem's summary."""
    columns = lsmem_columns(facts.has_memconfig, SNAPSHOT_DEFAULT)
    print_listing(console, columns, (BlockRow(f) for f in facts.blocks()), options)
    if options.want_summary:
        if options.want_table:
            print_line(console)
        for text in facts.summary_lines(options.in_bytes):
            print_line(console, text)


def _groups(console: Console, report: SnapshotReport) -> None:
    grid = grid_of(BLOCK_COLUMNS)
    for g in report.block_groups:
        grid.add_row([g.state, g.zone, str(g.blocks), format_size(g.bytes)])
    grid.print(console)


def print_snapshot(console: Console, report: SnapshotReport, facts: Optional[MachineFacts] = None,
                   options: Optional[TableOptions] = None) -> None:
    """The report; with ``facts`` its block table is lsmem's listing of every block (``options``:
    lsmem's controls; ``--raw``, ``--pairs``, ``--json`` with a listing option and
    ``--summary=only`` print the listing or its summary alone)."""
    options = options or TableOptions()
    if facts is not None and (options.format is not Format.TABLE or not options.want_table):
        print_block_listing(console, facts, options)
        return

    def line(text: str = "") -> None:
        print_line(console, safe(text))

    if not report.flags_saved and facts is not None:
        # A sysfs-only tree: the listing is all there is to show first (as lsmem shows it).
        print_block_listing(console, facts, options)
        line()
    line(f"Snapshot:   {report.machine} ({report.source})")
    line(f"Kernel:     {report.kernel or 'unknown'}")
    pages = f"{report.pfns} pfns in /proc/kpageflags" if report.flags_saved else "no page flags saved"
    line(f"Memory:     {pages}, {format_size(report.block_size)} memory blocks, "
         f"{format_size(report.page_size)} pages ({report.page_size_source})")
    if not report.flags_saved:
        if facts is None:
            line()
            _groups(console, report)
    else:
        line()
        if facts is not None:
            print_block_listing(console, facts, options)
        else:
            _groups(console, report)
        line()
        classes = grid_of(CLASS_COLUMNS)
        for c in report.classes:
            classes.add_row([str(c.pages), str(_mb(c.pages, report.page_size)), c.label, c.kind, c.meaning])
        classes.print(console)
        line("(pages of online memory blocks; `--page-types` prints the kernel's page-types summary)")
    if report.zones:
        line()
        zones = grid_of(ZONE_COLUMNS)
        for z in report.zones:
            zones.add_row([str(z.node), z.zone, str(z.present), str(z.managed), str(z.free), str(z.pcp),
                           "" if z.cma is None else str(z.cma), str(z.unflagged)])
        zones.print(console)
    for d in report.devices:
        line()
        unit = "sub-block" if d.mode == "sbm" else "big block"
        bound = ""
        if d.assumed:
            bound = (f" (assumed; fake-offline runs are aligned to {format_size(d.unit_max)})" if d.unit_max
                     else " (assumed: no fake-offline pages show it)")
        line(f"virtio-mem {d.id}: {format_size(d.size)} region at {d.start:#x}, {d.mode.upper()}, "
             f"{format_size(d.unit_size)} {unit}s{bound}, {format_size(d.plugged_bytes)} plugged, "
             f"{d.fake_offline_pages} fake-offline pages ({d.kept_back_pages} kept back at onlining, "
             f"{d.skippable_pages} with KPF_OWNER_2)")
    line()
    line(f"Semantics:  {report.semantics} ({report.semantics_reason})")
    line()
    line("Blind spots (what this snapshot cannot see):")
    for spot in report.blind_spots:
        line(f"  - {spot}")
    if report.saved_to:
        line()
        line(f"Saved to:   {report.saved_to}")
