"""``memplan plan``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import click

from memplan.cli.app import main
from memplan.cli.common import (
    finish_capacity_command,
    load_machine,
    machine_argument,
    print_plan_table,
    semantics_option,
    trust_option,
)
from memplan.cli.names import CHMEM_ZONES

if TYPE_CHECKING:  # the planner and the renderers: imported when the command runs (--help needs none)
    from memplan.core.results import Confidence


@main.command("plan")
@machine_argument
@click.option("--size", required=True, metavar="SIZE",
              help="Memory to take away, as chmem reads it: 512M, 1G, 1.5G, 4GiB (powers of 1024), 512MB "
                   "(powers of 1000); a SIZE ending in a digit means MiB. Must be a multiple of the memory "
                   "block size.")
@click.option("--blocks", "blocks", metavar="RANGE", default=None,
              help="Only these memory blocks are candidates, lsmem syntax: 7, 32-63, 1,4,8-9 (blocks the "
                   "machine does not have are skipped with a note).")
@click.option("--zone", type=click.Choice(CHMEM_ZONES, case_sensitive=False), default=None,
              help="Only blocks of this zone (chmem -z: valid_zones must start with the name).")
@click.option("--skip-hangs", is_flag=True,
              help="Model a tool that interrupts each hanging write with a signal and goes on (chmem itself "
                   "blocks in the first one: the plan stops there by default).")
@semantics_option
@click.option("--json", "as_json", is_flag=True, help="Write one JSON document to stdout.")
@click.option("--check", is_flag=True,
              help="Exit 0 if SIZE is fully achieved, 64 if partly, 1 if not at all (chmem's codes); only "
                   "memory that --trust accepts counts.")
@trust_option
@click.option("--write-profile", "out", type=click.Path(dir_okay=False), default=None, metavar="OUT.toml",
              help="Write the machine the plan leaves behind as a format-1 profile.")
def plan_command(profile: str, size: str, blocks: Optional[str], zone: Optional[str], skip_hangs: bool,
                 semantics: Optional[str], as_json: bool, check: bool, trust: Confidence, out: Optional[str]) -> None:
    """Predict what "chmem -d SIZE" would do: offline memory blocks from the highest down.

    Every write goes through the offline pipeline against the state the earlier ones left:
    migrated pages fill free memory elsewhere, so later blocks may find no room. Blocks
    that fail are skipped (chmem continues) until SIZE is reached. A write that would hang
    blocks chmem (offline_pages() retries until a signal): the plan stops there and says
    what Ctrl-C leaves, unless --skip-hangs. Short of SIZE, it ends with chmem's
    "Could only disable ..." line.

    \b
    Example:
      memplan plan profiles/sbm-guest.toml --size 1G --zone Movable --check
    """
    from memplan.plans.plan import parse_plan_size, plan
    from memplan.render import capacity_json

    machine = load_machine(profile)
    wanted = parse_plan_size(size, machine.geometry.memory_block_size)
    result, state = plan(machine, wanted, semantics, blocks, zone, skip_hangs)
    finish_capacity_command(result, state, profile, out, f"written by memplan plan {profile} --size {size}",
                            list(result.warnings), as_json, check, capacity_json.plan_dict,
                            print_plan_table, trust)
