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

import contextlib
import gc
from typing import Any, ContextManager, Generator, Iterator, Optional, Sequence

from memplan.fleet.backends import Backend, FleetStats, cpu_count
from memplan.fleet.compute import HostTask, error_row, run_host
from memplan.fleet.dask_run import DASK_HINT, DaskSession, require_dask
from memplan.fleet.pool import LocalPool
from memplan.fleet.types import HostSummary
from memplan.fleet.worker import HostFunc, judge

#: ``--host-timeout`` default, seconds: about 6x the 52 s a 64 TiB host takes to simulate on one
#: core of the 16-core machine of issue 12, so only a stuck host reaches it.
DEFAULT_HOST_TIMEOUT_S = 300.0


#: How many ``gc_frozen()`` blocks are open (the outermost one unfreezes).
_frozen_depth = 0


@contextlib.contextmanager
def gc_frozen() -> Iterator[None]:
    """Every object alive at the start of the block (and at the start of every inner block) left
    out of the cyclic garbage collector's scans until the outermost block ends (``gc.freeze()``).

    The parent of a fleet allocates a few objects per host (its answer, the table row) while the
    modules it imported (numpy, rich, Dask's client) hold hundreds of thousands: every full
    collection the answers trigger scans all of them. Frozen, a collection scans the fleet's own
    objects only: a quarter of the parent's CPU per host on Dask (``benchmarks/fleet_bench.py``).
    Reference counting frees objects as ever; cycles among the frozen ones wait for the end."""
    global _frozen_depth
    gc.freeze()
    _frozen_depth += 1
    try:
        yield
    finally:
        _frozen_depth -= 1
        if _frozen_depth == 0:
            gc.unfreeze()


class FleetRun:
    """One fleet run, as a context manager: entering starts the backend (a Dask connection or
    LocalCluster, the local worker processes) so that start-up comes before any output;
    ``results()`` yields every host's summary as soon as it is done, each host once; leaving
    stops every worker, whatever the reason (the end, an exception, Ctrl-C, SIGTERM).

    Tasks that carry an input error are answered at once, without a worker. ``host_timeout``
    (seconds, ``None``: no limit) bounds each host.
    """

    #: ``gc_frozen()``, for the output that follows a run (its rows)
    gc_frozen = staticmethod(gc_frozen)

    def __init__(self, tasks: Sequence[HostTask], backend: Optional[Backend] = None, func: HostFunc = run_host,
                 host_timeout: Optional[float] = DEFAULT_HOST_TIMEOUT_S, stats: Optional[FleetStats] = None) -> None:
        self.backend = backend or Backend()
        self.func = func
        self.host_timeout = host_timeout
        self.stats = stats if stats is not None else FleetStats()
        self.runnable = [t for t in tasks if t.error is None]
        self.answered = [error_row(t, t.error) for t in tasks if t.error is not None]
        self.session: Optional[DaskSession] = None
        self.pool: Optional[LocalPool] = None
        self._frozen: Optional[ContextManager[None]] = None

    def __enter__(self) -> "FleetRun":
        if self.backend.kind == "dask" and self.runnable:
            self.session = DaskSession(self.backend).open()
        elif self.backend.local_workers(len(self.runnable)) > 1:
            self.pool = LocalPool(self.backend.local_workers(len(self.runnable))).start()
        self._frozen = gc_frozen()
        self._frozen.__enter__()
        return self

    def __exit__(self, kind: Optional[type], exc: Optional[BaseException], tb: Any) -> None:
        if self._frozen is not None:
            self._frozen.__exit__(None, None, None)
            self._frozen = None
        try:
            if self.pool is not None:
                self.pool.close(graceful=kind is None)
        finally:
            self.pool = None
            if self.session is not None:
                self.session.close()
            self.session = None

    def results(self) -> Iterator[HostSummary]:
        yield from self.answered
        if self.session is not None:
            yield from self.session.results(self.runnable, self.func, self.host_timeout, self.stats)
        elif self.pool is not None:
            yield from self.pool.results(self.runnable, self.func, self.host_timeout, self.stats)
        else:
            for task in self.runnable:
                summary, cpu_s = judge(self.func, task, self.host_timeout)
                self.stats.batches += 1
                yield self.stats.answered(summary, cpu_s)


def run_tasks(tasks: Sequence[HostTask], backend: Optional[Backend] = None, func: HostFunc = run_host,
              host_timeout: Optional[float] = DEFAULT_HOST_TIMEOUT_S,
              stats: Optional[FleetStats] = None) -> Generator[HostSummary, None, None]:
    """``FleetRun`` as one generator: every task's summary as soon as it is done (closing the
    generator early stops every worker)."""
    with FleetRun(tasks, backend, func, host_timeout, stats) as run:
        yield from run.results()


__all__ = ["Backend", "DASK_HINT", "DEFAULT_HOST_TIMEOUT_S", "FleetRun", "FleetStats", "cpu_count", "gc_frozen",
           "require_dask", "run_tasks"]
