"""``memplan unplug``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Optional

import click

from memplan.cli.app import main
from memplan.cli.common import (
    finish_capacity_command,
    input_source,
    load_machine,
    machine_argument,
    print_unplug_table,
    print_warnings,
    semantics_option,
    size_value,
    stdout_console,
    trust_option,
)
from memplan.core.errors import UsageError
from memplan.core.status import ExitStatus

if TYPE_CHECKING:  # the driver model and the renderers: imported when the command runs (--help needs none)
    from memplan.core.results import Confidence


@main.command("unplug")
@machine_argument
@click.option("--device", metavar="ID", default=None, help="virtio-mem device id (required with several devices).")
@click.option("--to", "to_size", metavar="SIZE", default=None, help="New requested-size, e.g. 1G.")
@click.option("--by", "by_size", metavar="SIZE", default=None,
              help="Lower requested-size by SIZE from the plugged size.")
@click.option("--sweep", "do_sweep", is_flag=True,
              help="Achievable size for every requested size from 0 to the plugged size (table and curve).")
@click.option("--step", metavar="SIZE", default=None,
              help="Sweep step (default: the larger of the memory block size and the unplug unit).")
@click.option("--svg", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="With --sweep: also save the table and curve as SVG.")
@semantics_option
@click.option("--json", "as_json", is_flag=True, help="Write one JSON document to stdout.")
@click.option("--check", is_flag=True,
              help="Exit 0 if the requested size is reached, 64 if partly, 1 if nothing was unplugged; only "
                   "memory that --trust accepts counts.")
@trust_option
@click.option("--write-profile", "out", type=click.Path(dir_okay=False), default=None, metavar="OUT.toml",
              help="Write the machine the driver leaves behind as a format-1 profile.")
def unplug_command(profile: str, device: Optional[str], to_size: Optional[str], by_size: Optional[str],
                   do_sweep: bool, step: Optional[str], svg: Optional[str], semantics: Optional[str], as_json: bool,
                   check: bool, trust: Confidence, out: Optional[str]) -> None:
    """Predict the virtio-mem driver's response to a lower requested-size.

    SBM: blocks in the kernel's state order (OFFLINE_PARTIAL, OFFLINE, MOVABLE_PARTIAL,
    KERNEL_PARTIAL, MOVABLE, KERNEL), highest first; sub-blocks are fake-offlined with
    alloc_contig_range(), busy ones skipped; fully unplugged blocks are offlined and
    removed. BBM: big blocks in three passes, fake-offlined section by section with
    rollback. Reports the plugged size QEMU would show, per block the new state, the
    sub-blocks that stayed plugged with the page that pinned each, and the retry timeline.

    \b
    Examples:
      memplan unplug profiles/sbm-guest.toml --device vmem0 --to 2G
      memplan unplug profiles/bbm-guest.toml --sweep --svg curve.svg
    """
    from memplan.plans.state import MachineState
    from memplan.plans.unplug import find_device, run_unplug, sweep
    from memplan.render import capacity_json
    from memplan.render import json as render_json

    if do_sweep:
        if to_size or by_size:
            raise UsageError("--sweep tries every size itself; drop --to/--by")
        if check or out:
            raise UsageError("--check and --write-profile need one request (--to or --by), not --sweep")
    elif (to_size is None) == (by_size is None):
        raise UsageError("give exactly one of --to SIZE and --by SIZE (or --sweep)")
    elif svg or step:
        raise UsageError("--svg and --step only apply to --sweep")
    machine = load_machine(profile)
    if do_sweep:
        curve = sweep(machine, device, size_value("--step", step) if step else None, semantics)
        print_warnings(list(machine.warnings) + list(curve.warnings))
        if as_json:
            render_json.write(capacity_json.sweep_dict(curve, input_source(profile)), sys.stdout)
        if svg:
            from memplan.render.export import write_text
            from memplan.render.sweep_svg import sweep_svg

            write_text("--svg", svg, sweep_svg(curve, f"memplan unplug --sweep {profile}"))
        if not as_json:
            from memplan.render.capacity_table import print_sweep  # rich: only for the table

            print_sweep(stdout_console(), curve)
        raise SystemExit(int(ExitStatus.SUCCESS))

    state = MachineState(machine, semantics)
    dev = find_device(state, device)
    if to_size is not None:
        requested = size_value("--to", to_size)
    else:
        by = size_value("--by", by_size or "0")
        if by > dev.plugged_bytes:
            raise UsageError(f"--by {by_size} is more than the plugged size of {dev.device.id}")
        requested = dev.plugged_bytes - by
    result = run_unplug(state, dev.device.id, requested)
    finish_capacity_command(result, state, profile, out,
                            f"written by memplan unplug {profile} (requested-size {requested})",
                            list(machine.warnings) + list(result.warnings), as_json, check,
                            capacity_json.unplug_dict, print_unplug_table, trust)
