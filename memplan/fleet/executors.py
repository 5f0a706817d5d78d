"""Where ``memplan fleet``'s host tasks run: in this process, a local process pool, or Dask.

Every backend receives ``HostTask``s (paths plus options) and yields ``HostSummary``s as
they complete, in completion order. A task whose worker dies (killed, out of memory, a lost
Dask worker) becomes that host's error row; the run goes on.

* ``local`` (default, nothing to install): ``concurrent.futures.ProcessPoolExecutor`` with
  one process per CPU (``--workers N``); one worker runs the tasks in this process. Workers
  start from a fork server that has imported memplan once (``forkserver`` where the
  platform has it, else ``spawn``): never a plain ``fork()`` of a process that may already
  run threads (a progress bar, a Dask client).
* ``dask``: a ``distributed.Client`` on a running scheduler (``--scheduler tcp://HOST:PORT``;
  every worker needs memplan installed and the INPUT paths readable) or on a
  ``LocalCluster`` of N single-threaded worker processes that memplan starts and stops
  (``--dask-local N``). Dask is the optional extra ``memplan[fleet]``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any, Callable, Deque, Dict, Generator, Iterator, Optional, Sequence, Tuple

from memplan.core.errors import UsageError
from memplan.fleet.compute import HostTask, run_host
from memplan.fleet.types import HostSummary

#: How to install the optional Dask support.
DASK_HINT = "pip install 'memplan[fleet]'"
#: Tasks submitted to the local pool at a time, per worker (keeps every worker busy).
IN_FLIGHT_PER_WORKER = 2
#: How long a Dask run waits for its first worker.
WORKER_WAIT_S = 60


@dataclass(frozen=True)
class Backend:
    """Where to run: ``kind`` is ``local`` or ``dask``."""

    kind: str = "local"
    #: local: worker processes (``None``: one per CPU); dask-local: LocalCluster workers
    workers: Optional[int] = None
    #: dask: a running scheduler's address; ``None`` with ``kind == "dask"`` starts a LocalCluster
    scheduler: Optional[str] = None
    #: dask-local: worker processes (the default) or threads of this process (tests)
    processes: bool = True
    #: dask: seconds to reach the scheduler
    connect_timeout: float = 10.0

    def describe(self, tasks: int) -> str:
        if self.kind == "local":
            n = self.local_workers(tasks)
            return "this process" if n <= 1 else f"local pool, {n} workers"
        if self.scheduler:
            return f"Dask scheduler {self.scheduler}"
        return f"Dask LocalCluster, {self.workers} workers"

    def local_workers(self, tasks: int) -> int:
        return max(1, min(self.workers or cpu_count(), tasks))


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def require_dask(option: str) -> None:
    """One clear line when Dask is missing (exit status 2 via ``UsageError``)."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise UsageError(f"{option} needs Dask, which is not installed: {DASK_HINT}") from None


#: Dask's worker environment key that memplan unsets (see ``worker_environ()``).
TRIM_KEY = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


def worker_environ() -> Dict[str, Any]:
    """Dask configuration for the worker processes memplan starts (``--dask-local``).

    Dask's nannies export ``MALLOC_TRIM_THRESHOLD_=65536`` to every worker process
    (``distributed.nanny.pre-spawn-environ``). Any explicit trim threshold turns off glibc's
    dynamic mmap threshold (mallopt(3)), so every numpy temporary above 128 KiB becomes a
    fresh ``mmap()`` whose pages fault in zeroed: a 64 GiB host then takes twice the CPU time
    (measured: 1.0 s instead of 0.5 s). A ``None`` value unsets the variable where the
    installed distributed supports it; otherwise Dask's default stays.
    """
    try:
        import dask
        from distributed.nanny import _get_env_variables
        with dask.config.set({TRIM_KEY: None}):
            supported = "MALLOC_TRIM_THRESHOLD_" not in _get_env_variables("distributed.nanny.pre-spawn-environ")
    except (ImportError, AttributeError, TypeError, ValueError):
        supported = False
    return {TRIM_KEY: None} if supported else {}


def _failed(task: HostTask, exc: BaseException) -> HostSummary:
    text = " ".join(str(exc).split())
    detail = f": {text}" if text else ""
    return HostSummary(host=task.host, input=task.input, mode=task.options.mode,
                       error=f"worker failed: {type(exc).__name__}{detail}")


def run_tasks(tasks: Sequence[HostTask], backend: Backend = Backend(),
              func: Callable[[HostTask], HostSummary] = run_host) -> Generator[HostSummary, None, None]:
    """Run every task and yield its summary as soon as it is done.

    The backend is set up first (a Dask scheduler that cannot be reached is a ``UsageError``
    before any row); tasks that carry an input error are then answered at once, without a
    worker. Closing the generator early cancels what has not started.
    """
    runnable = [t for t in tasks if t.error is None]
    answered = [t for t in tasks if t.error is not None]
    if backend.kind == "dask" and runnable:
        yield from _run_dask(runnable, answered, backend, func)
        return
    workers = backend.local_workers(len(runnable))
    if workers > 1:
        yield from _run_pool(runnable, answered, workers, func)
        return
    for task in answered + runnable:
        yield func(task)


def _mp_context() -> BaseContext:
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        # The server imports memplan (numpy, the pipeline) once; each worker forks from it.
        ctx.set_forkserver_preload(["memplan.fleet.executors"])
        return ctx
    return multiprocessing.get_context("spawn")


def _run_pool(tasks: Sequence[HostTask], answered: Sequence[HostTask], workers: int,
              func: Callable[[HostTask], HostSummary]) -> Iterator[HostSummary]:
    """At most ``IN_FLIGHT_PER_WORKER * workers`` tasks are submitted at a time. When a worker
    process dies the pool is broken and every task in flight fails with it: those tasks run
    again one at a time in a new pool, so the one that kills its worker again gets the error
    row and the others their answers."""
    ctx = _mp_context()
    pending: Deque[HostTask] = deque(tasks)
    suspects: Deque[HostTask] = deque()
    inflight: Dict[Future[HostSummary], Tuple[HostTask, bool]] = {}
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    try:
        yield from (func(task) for task in answered)
        while pending or suspects or inflight:
            broken = False
            try:
                if suspects:
                    if not inflight:
                        task = suspects[0]
                        inflight[pool.submit(func, task)] = (task, True)
                        suspects.popleft()
                else:
                    while pending and len(inflight) < IN_FLIGHT_PER_WORKER * workers:
                        task = pending[0]
                        inflight[pool.submit(func, task)] = (task, False)
                        pending.popleft()
            except BrokenProcessPool:
                broken = True
            if not broken:
                done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for future in done:
                    task, solo = inflight.pop(future)
                    exc = future.exception()
                    if exc is None:
                        yield future.result()
                    elif not isinstance(exc, BrokenProcessPool):
                        yield _failed(task, exc)
                    else:
                        broken = True
                        if solo:
                            yield _died(task)
                        else:
                            suspects.append(task)
            if broken:
                # Every future still in flight fails with the pool: run them again, alone.
                for future, (task, solo) in list(inflight.items()):
                    exc = future.exception()
                    if exc is None:
                        yield future.result()
                    elif solo:
                        yield _died(task)
                    else:
                        suspects.append(task)
                inflight.clear()
                pool.shutdown(wait=True, cancel_futures=True)
                pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _died(task: HostTask) -> HostSummary:
    return HostSummary(host=task.host, input=task.input, mode=task.options.mode,
                       error="worker process died while judging this host (killed, or out of memory)")


def _run_dask(tasks: Sequence[HostTask], answered: Sequence[HostTask], backend: Backend,
              func: Callable[[HostTask], HostSummary]) -> Iterator[HostSummary]:
    require_dask("--scheduler" if backend.scheduler else "--dask-local")
    import dask
    from distributed import Client, LocalCluster
    from distributed import as_completed as dask_as_completed

    cluster = None
    try:
        if backend.scheduler:
            client = Client(backend.scheduler, timeout=backend.connect_timeout)
        else:
            # Loopback only; ":0": any free port for the scheduler's HTTP server.
            with dask.config.set(worker_environ()):
                cluster = LocalCluster(n_workers=backend.workers or cpu_count(), threads_per_worker=1,
                                       processes=backend.processes, host="127.0.0.1", protocol="tcp://",
                                       dashboard_address=":0", silence_logs=logging.ERROR)
            client = Client(cluster)
    except (OSError, TimeoutError, ValueError) as exc:
        if cluster is not None:
            cluster.close()
        where = backend.scheduler or "a LocalCluster"
        raise UsageError(f"cannot connect to the Dask scheduler {where}: {exc}") from None
    try:
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except TimeoutError:
            where = backend.scheduler or "the LocalCluster"
            raise UsageError(f"no Dask worker joined the scheduler {where} within {WORKER_WAIT_S} s "
                             f"(start some: dask worker {where})") from None
        futures = client.map(func, tasks, pure=False)
        yield from (func(task) for task in answered)
        by_key = {f.key: task for f, task in zip(futures, tasks)}
        for future in dask_as_completed(futures):
            task = by_key[future.key]
            if future.status == "finished":
                yield future.result()
            else:
                try:
                    error = future.exception()
                except Exception as lost:  # noqa: BLE001 - a cancelled or lost future
                    error = lost
                yield _failed(task, error)
            future.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


__all__ = ["Backend", "DASK_HINT", "cpu_count", "require_dask", "run_tasks"]
