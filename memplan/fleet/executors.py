"""Where ``memplan fleet``'s host tasks run: in this process, a local process pool, or Dask.

Every backend receives ``HostTask``s (paths plus options) and yields ``HostSummary``s as
they complete, in completion order, each host exactly once. Nothing a host does stops the
run: a host past ``--host-timeout`` and a host whose worker dies (killed, out of memory, a lost
Dask worker) become error rows.

* ``local`` (default, nothing to install): one worker process per CPU (``--workers N``;
  ``memplan.fleet.pool``); one worker runs the tasks in this process.
* ``dask``: a ``distributed.Client`` on a running scheduler (``--scheduler tcp://HOST:PORT``;
  every worker needs memplan installed and the INPUT paths readable) or on a ``LocalCluster``
  of N single-threaded worker processes that memplan starts and stops (``--dask-local N``;
  ``memplan.fleet.dask_run``). Dask is the optional extra ``memplan[fleet]``.

Hosts travel in batches (``Batcher``) sized from the CPU time the hosts done so far took, so
that the cost of a task (submitting it, the scheduler, receiving its answer) stays a small
share of the work however small the hosts are, while the last batches stay small enough to
keep every worker busy to the end. On Ctrl-C, SIGTERM or any other exception every backend
stops its workers (a LocalCluster memplan started is shut down; tasks on someone else's
scheduler are cancelled) and lets the exception propagate.
"""

from __future__ import annotations

from typing import Generator, Optional, Sequence

from memplan.fleet.backends import Backend, FleetStats, cpu_count
from memplan.fleet.compute import HostTask, error_row, run_host
from memplan.fleet.dask_run import DASK_HINT, require_dask, run_dask
from memplan.fleet.pool import run_pool
from memplan.fleet.types import HostSummary
from memplan.fleet.worker import HostFunc, judge

#: ``--host-timeout`` default, seconds: about 6x the 52 s a 64 TiB host takes to simulate on one
#: core of the 16-core machine of issue 12, so only a stuck host reaches it.
DEFAULT_HOST_TIMEOUT_S = 300.0


def run_tasks(tasks: Sequence[HostTask], backend: Optional[Backend] = None, func: HostFunc = run_host,
              host_timeout: Optional[float] = DEFAULT_HOST_TIMEOUT_S,
              stats: Optional[FleetStats] = None) -> Generator[HostSummary, None, None]:
    """Run every task and yield its summary as soon as it is done.

    The backend is set up first (a Dask scheduler that cannot be reached is a ``UsageError``
    before any row); tasks that carry an input error are then answered at once, without a
    worker. ``host_timeout`` (seconds, ``None``: no limit) bounds each host. Closing the
    generator early, or an exception in the consumer, stops every worker.
    """
    backend = backend or Backend()
    stats = stats if stats is not None else FleetStats()
    runnable = [t for t in tasks if t.error is None]
    answered = [error_row(t, t.error) for t in tasks if t.error is not None]
    if backend.kind == "dask" and runnable:
        yield from run_dask(runnable, answered, backend, func, host_timeout, stats)
        return
    yield from answered
    workers = backend.local_workers(len(runnable))
    if workers > 1:
        yield from run_pool(runnable, workers, func, host_timeout, stats)
        return
    for task in runnable:
        summary, cpu_s = judge(func, task, host_timeout)
        stats.batches += 1
        yield stats.answered(summary, cpu_s)


__all__ = ["Backend", "DASK_HINT", "DEFAULT_HOST_TIMEOUT_S", "FleetStats", "cpu_count", "require_dask", "run_tasks"]
