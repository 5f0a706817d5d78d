"""``memplan fleet``."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from typing import TYPE_CHECKING, Any, Optional, Tuple

import click

from memplan.cli.app import main
from memplan.cli.common import (
    print_warnings,
    semantics_option,
    size_value,
    stderr_console,
    stdout_console,
    trust_option,
)
from memplan.cli.names import DEFAULT_HOST_TIMEOUT_S
from memplan.cli.signals import one_line
from memplan.core.errors import UsageError

if TYPE_CHECKING:  # the fleet runner and the renderers: imported when the command runs (--help needs none)
    from rich.progress import Progress

    from memplan.core.results import Confidence
    from memplan.fleet.compute import FleetOptions
    from memplan.fleet.executors import Backend
    from memplan.fleet.types import FleetReport


def _options(semantics: Optional[str], unplug_by: Optional[str], device: Optional[str],
             plan_size: Optional[str]) -> FleetOptions:
    from memplan.fleet.compute import FleetOptions
    from memplan.fleet.types import FleetMode

    if unplug_by is not None and plan_size is not None:
        raise UsageError("--unplug-by and --plan-size exclude each other: ask one question of the fleet")
    if device is not None and unplug_by is None:
        raise UsageError("--device only applies to --unplug-by")
    if unplug_by is not None:
        return FleetOptions(FleetMode.UNPLUG, semantics, size_value("--unplug-by", unplug_by, positive=True), device)
    if plan_size is not None:
        return FleetOptions(FleetMode.PLAN, semantics, size_value("--plan-size", plan_size, chmem=True, positive=True))
    return FleetOptions(FleetMode.SIMULATE, semantics)


class _AsciiIntRange(click.IntRange):
    """``click.IntRange`` that reads only ASCII digits (Python's ``int()`` also takes full-width
    and other Unicode digits, ``_`` and blanks, which no number on a command line means)."""

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> int:
        if isinstance(value, str):
            digits = value[1:] if value.startswith("-") else value
            if not (digits.isascii() and digits.isdigit()):
                self.fail(f"{value!r} is not a valid integer.", param, ctx)
            if len(digits.lstrip("0")) > 20:  # past any 64-bit count
                self.fail(f"{one_line(value, 60)!r} is not a count any machine has.", param, ctx)
        return super().convert(value, param, ctx)


class _AsciiFloat(click.types.FloatParamType):
    """A float written with ASCII characters only, and no ``_`` (see ``_AsciiIntRange``)."""

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> float:
        if isinstance(value, str) and (not value.isascii() or "_" in value or value != value.strip()):
            self.fail(f"{value!r} is not a valid float.", param, ctx)
        return super().convert(value, param, ctx)


#: ``--host-timeout`` at most a week (``setitimer`` and the parent's deadlines stay exact)
MAX_HOST_TIMEOUT_S = 7 * 24 * 3600.0


def _host_timeout(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not math.isfinite(value) or not 0 < value <= MAX_HOST_TIMEOUT_S:
        raise click.BadParameter(f"{value:g} is not a number of seconds in (0, {MAX_HOST_TIMEOUT_S:g}]")
    return value


def _check_scheduler(url: str) -> None:
    """``--scheduler``: an address Dask can dial (``[PROTOCOL://]HOST[:PORT]``, a port from 1 to
    65535, printable ASCII); checked before Dask sees it (a port of 2^64 is an ``OverflowError``
    deep in ``getaddrinfo``)."""
    shown = one_line(url, 200)
    if not url or not url.isascii() or not url.isprintable() or " " in url or len(url) > 1024:
        raise UsageError(f"--scheduler: {shown!r} is not an address (tcp://HOST:PORT)")
    rest = url.split("://", 1)[1] if "://" in url else url
    host, sep, port = rest.rpartition(":")
    if sep and not host.endswith("]") and ":" in host:  # an IPv6 address without brackets, no port
        return
    if sep and port and (not port.isdigit() or not 1 <= int(port[:6]) <= 65535 or len(port) > 5):
        raise UsageError(f"--scheduler: {shown!r}: port {one_line(port, 40)!r} is not a port from 1 to 65535")


def _check_dask_local(workers: int) -> None:
    """``--dask-local N``: N worker processes (each with its nanny) must fit in this machine's memory."""
    from memplan.core.limits import DASK_WORKER_BYTES, MAX_DASK_LOCAL_WORKERS, memory_budget
    from memplan.core.units import format_size

    budget = memory_budget()
    need = workers * DASK_WORKER_BYTES
    if workers > MAX_DASK_LOCAL_WORKERS or (budget is not None and need > budget):
        room = f"; this machine has {format_size(budget)} to spare" if budget is not None else ""
        raise UsageError(f"--dask-local: {workers} worker processes would need about {format_size(min(need, 1 << 62))} "
                         f"of memory (at most {MAX_DASK_LOCAL_WORKERS} workers{room})")


def _backend(workers: Optional[int], scheduler: Optional[str], dask_local: Optional[int]) -> Backend:
    from memplan.fleet.executors import Backend, require_dask

    given = [name for name, value in (("--workers", workers), ("--scheduler", scheduler),
                                      ("--dask-local", dask_local)) if value is not None]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} exclude each other: choose where the fleet runs")
    if scheduler is not None:
        _check_scheduler(scheduler)
        require_dask("--scheduler")
        return Backend("dask", scheduler=scheduler)
    if dask_local is not None:
        _check_dask_local(dask_local)
        require_dask("--dask-local")
        return Backend("dask", workers=dask_local)
    return Backend("local", workers=workers)


@main.command("fleet")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@semantics_option
@click.option("--unplug-by", metavar="SIZE", default=None,
              help="Lower every virtio-mem device's requested-size by SIZE (memplan unplug --by) on every host.")
@click.option("--device", metavar="ID", default=None, help="With --unplug-by: only this virtio-mem device.")
@click.option("--plan-size", metavar="SIZE", default=None,
              help="Offline SIZE the way chmem -d does (memplan plan --size) on every host; a bare number means MiB.")
@click.option("--workers", type=_AsciiIntRange(min=1), default=None, metavar="N",
              help="Local worker processes (default: one per CPU; 1 runs in this process).")
@click.option("--scheduler", metavar="URL", default=None,
              help="Run on a Dask cluster: tcp://HOST:PORT of its scheduler (needs memplan[fleet]).")
@click.option("--dask-local", type=_AsciiIntRange(min=1), default=None, metavar="N",
              help="Start a Dask LocalCluster of N worker processes and run on it (needs memplan[fleet]).")
@click.option("--host-timeout", type=_AsciiFloat(), default=DEFAULT_HOST_TIMEOUT_S, metavar="SECONDS",
              show_default=True, callback=_host_timeout,
              help="Time limit per host: a host still being judged after SECONDS (a huge or stuck input) becomes "
                   "an error row and the fleet goes on.")
@trust_option
@click.option("--json", "as_json", is_flag=True, help="Write one JSON document to stdout when the fleet is done.")
@click.option("--jsonl", is_flag=True, help="Write one JSON line per host to stdout as soon as it is done.")
@click.option("--check", is_flag=True,
              help="Exit 0 if every host reaches the asked size (has offlinable memory without --plan-size/"
                   "--unplug-by), 64 if some do, 1 if none does, 2 if a host could not be judged.")
def fleet_command(inputs: Tuple[str, ...], semantics: Optional[str], unplug_by: Optional[str],
                  device: Optional[str], plan_size: Optional[str], workers: Optional[int], scheduler: Optional[str],
                  dask_local: Optional[int], host_timeout: float, trust: Confidence, as_json: bool, jsonl: bool,
                  check: bool) -> None:
    """Ask every host of a fleet the same question and aggregate the answers.

    Each INPUT is a profile, a saved sysroot (memplan snapshot --save DIR) or a folder or glob
    of them. Every host gets the per-block simulation of memplan simulate, or with
    --plan-size / --unplug-by the capacity plan of memplan plan / memplan unplug. Prints per
    host the offlinable and unreclaimable memory (split by how sure the verdicts are: certain,
    likely, unknown), failing, hanging and unknown blocks and what blocks them, hosts sorted by
    unreclaimable memory; then fleet totals and the top blocking causes with their share of the
    blocked memory. A host that cannot be read or judged in time is an error row; it never
    stops the run. Exit status 0 (with --check: 0, 64 or 1 as chmem), 2 when no host could be
    judged (with --check: when any could not).

    \b
    Examples:
      memplan fleet snapshots/ --jsonl | jq -c 'select(.unreclaimable_bytes > 0)'
      memplan fleet 'snapshots/*' --plan-size 8G --check
      memplan fleet profiles/ --unplug-by 1G --scheduler tcp://10.0.0.5:8786
    """
    from memplan.fleet.aggregate import FleetAggregate
    from memplan.fleet.compute import make_tasks
    from memplan.fleet.executors import FleetRun
    from memplan.render.fleet_json import write_line

    if as_json and jsonl:
        raise UsageError("--json and --jsonl exclude each other")
    options = _options(semantics, unplug_by, device, plan_size)
    backend = _backend(workers, scheduler, dask_local)
    tasks = make_tasks(inputs, options)
    # --jsonl streams the rows: only the totals are kept, memory stays flat in the fleet's size.
    aggregate = FleetAggregate(options, trust, keep_hosts=not jsonl)
    show_progress = not (as_json or jsonl) and sys.stderr.isatty()
    started = time.perf_counter()
    # The backend starts first (a Dask LocalCluster, the worker processes), then the progress bar.
    with FleetRun(tasks, backend, host_timeout=host_timeout) as run, contextlib.ExitStack() as stack:
        bar = stack.enter_context(_progress_bar()) if show_progress else None
        progress_task = bar.add_task("fleet", total=len(tasks)) if bar is not None else None
        for host in run.results():
            aggregate.add(host)
            if jsonl:
                write_line(host, sys.stdout)
            if bar is not None and progress_task is not None:
                bar.advance(progress_task)
    elapsed = time.perf_counter() - started
    report = aggregate.report()
    with FleetRun.gc_frozen():  # a row is many small objects: collections skip the imported modules' ones
        _finish(report, backend.describe(len(tasks)), elapsed, as_json, jsonl, check)


def _progress_bar() -> Progress:
    """The progress bar on stderr (a terminal, no --json/--jsonl: rich is imported only here)."""
    from memplan.render.fleet import progress_bar

    return progress_bar(stderr_console())


def _finish(report: FleetReport, where: str, elapsed: float, as_json: bool, jsonl: bool, check: bool) -> None:
    """Warnings, the document or the table, then the exit status (2 when no host was judged)."""
    from memplan.fleet.aggregate import fleet_status, nothing_judged
    from memplan.render import json as render_json
    from memplan.render.fleet_json import fleet_dict

    problem = nothing_judged(report.totals)
    print_warnings(w for w in report.warnings if problem is None or not w.endswith("(error rows)"))
    if as_json:
        render_json.write(fleet_dict(report), sys.stdout)
    elif not jsonl:
        n = report.totals.hosts
        rate = n / elapsed if elapsed > 0 else 0.0
        ran = f"{where}: {n} host{'s' if n != 1 else ''} in {elapsed:.1f} s ({rate:.1f} hosts/s)"
        from memplan.render.fleet import print_fleet  # rich: only for the table

        print_fleet(stdout_console(), report, ran)
    if problem is not None:
        click.echo(f"memplan: error: {problem}", err=True)
    raise SystemExit(int(fleet_status(report.totals, check)))
