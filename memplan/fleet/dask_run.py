"""``memplan fleet`` on Dask: a running scheduler (``--scheduler``) or a LocalCluster that memplan
starts and stops (``--dask-local N``).

Hosts go to the workers in batches (one Dask task each, ``memplan.fleet.worker.run_batch``), a
few per worker thread at a time, sized from the CPU time of the hosts done so far so that
Dask's cost per task stays a small share of the work. Each host is bounded by
``--host-timeout`` inside its task (a watchdog raises in the worker thread); a batch that
outlives its hosts' limits anyway (stuck inside C code or the kernel) is given up by the
parent: its hosts run again one per task, and a host that runs out of time alone is an error
row. When no worker takes any of the remaining hosts for a whole time limit, they become error
rows too: the run never waits forever.

On Ctrl-C, SIGTERM or any exception the tasks still queued are cancelled (the workers of
someone else's scheduler stop working for memplan), and a LocalCluster memplan started is
shut down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence

from memplan.core.errors import UsageError
from memplan.fleet.backends import Backend, Batcher, FleetStats, cpu_count, signals_deferred
from memplan.fleet.cluster import ClusterProcess
from memplan.fleet.compute import HostTask, error_row
from memplan.fleet.types import HostSummary
from memplan.fleet.worker import Answer, HostFunc, answers_of, failed_error, run_batch, timed_out_error

#: How to install the optional Dask support.
DASK_HINT = "pip install 'memplan[fleet]'"
#: How long a Dask run waits for its first worker.
WORKER_WAIT_S = 60
#: CPU seconds of work per Dask task: Dask costs 3-8 ms of CPU per task (client, scheduler,
#: worker; ``benchmarks/fleet_bench.py`` measures it), under 1 % of this; the client's share
#: (1.5 ms per task) is most of what the parent spends per small host besides the table.
DASK_BATCH_S = 1.0
#: Most hosts in one Dask task.
DASK_MAX_BATCH = 1024
#: Tasks submitted at a time per worker thread.
IN_FLIGHT_PER_THREAD = 2
#: How often the parent looks at what the workers are doing (one scheduler request).
POLL_S = 1.0
#: A batch is given up this long after its hosts' limits (plus a tenth of them).
GRACE_S = 2.0


def require_dask(option: str) -> None:
    """One clear line when Dask is missing (exit status 2 via ``UsageError``)."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise UsageError(f"{option} needs Dask, which is not installed: {DASK_HINT}") from None


@contextlib.contextmanager
def _quiet_asyncio() -> Iterator[None]:
    """Dask's client leaves asyncio tasks behind when it is closed in the middle of a run
    (Ctrl-C): asyncio would log each one ("Task exception was never retrieved") with a traceback."""
    # Nor do Dask's own loggers speak (the client logs "Batched Comm Closed" with a traceback when
    # SIGTERM reached the whole process group and the cluster went first): memplan reports.
    logs = [logging.getLogger(name) for name in ("asyncio", "distributed", "tornado")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)


def _connect(address: str, timeout: float) -> Any:
    from distributed import Client
    try:
        return Client(address, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - whatever answers there, it is not a scheduler memplan can use
        # (a port that speaks another protocol: Dask reads a frame length of exabytes -> MemoryError)
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        if isinstance(exc, MemoryError):
            detail = "what answers there does not speak Dask's protocol (its first message claims an impossible size)"
        raise UsageError(f"cannot connect to the Dask scheduler {address}: {detail}") from None


class DaskSession:
    """A client on the Dask cluster ``backend`` names: ``open()`` connects (starting a
    LocalCluster for ``--dask-local``), ``results()`` runs a fleet on it, ``close()`` cancels
    what is still queued and shuts down the cluster memplan started."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.client: Any = None
        self.cluster: Optional[ClusterProcess] = None
        self.run: Optional[_DaskRun] = None
        self._quiet = contextlib.ExitStack()

    def open(self) -> "DaskSession":
        require_dask("--scheduler" if self.backend.scheduler else "--dask-local")
        self._quiet.enter_context(_quiet_asyncio())
        try:
            address = self.backend.scheduler
            if address is None:
                self.cluster = ClusterProcess(self.backend.workers or cpu_count())
                address = self.cluster.start()
            with signals_deferred():
                self.client = _connect(address, self.backend.connect_timeout)
            _wait_for_workers(self.client, self.backend)
        except BaseException:
            self.close()
            raise
        return self

    def results(self, tasks: Sequence[HostTask], func: HostFunc, timeout: Optional[float],
                stats: FleetStats) -> Iterator[HostSummary]:
        self.run = _DaskRun(self.client, tasks, func, timeout, stats, restart=self.cluster is not None)
        yield from self.run.results()

    def close(self) -> None:
        try:
            if self.run is not None:
                self.run.cancel()
            if self.client is not None:
                self.client.close()
        finally:
            try:
                if self.cluster is not None:
                    self.cluster.close()
            finally:
                self.run = self.client = self.cluster = None
                self._quiet.close()


def _wait_for_workers(client: Any, backend: Backend) -> None:
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError:
        where = backend.scheduler or "the LocalCluster"
        raise UsageError(f"no Dask worker joined the scheduler {where} within {WORKER_WAIT_S} s "
                         f"(start some: dask worker {where})") from None


@dataclass
class _Batch:
    future: Any
    tasks: List[HostTask]
    #: when the parent first saw a worker processing it
    started: Optional[float] = None
    worker: Optional[str] = None


class _DaskRun:
    """One fleet on one client: submits batches, receives them, gives up the stuck ones."""

    def __init__(self, client: Any, tasks: Sequence[HostTask], func: HostFunc, timeout: Optional[float],
                 stats: FleetStats, restart: bool) -> None:
        self.client = client
        self.func = func
        self.timeout = timeout
        self.stats = stats
        #: restart a worker whose thread is stuck (only on a cluster memplan started)
        self.restart = restart
        self.threads = max(1, sum(client.nthreads().values()))
        self.batcher = Batcher(deque(tasks), self.threads, DASK_BATCH_S, DASK_MAX_BATCH)
        self.inflight: Dict[str, _Batch] = {}
        self.done: "queue.Queue[Any]" = queue.Queue()
        self.progress = self.polled = time.monotonic()

    def results(self) -> Iterator[HostSummary]:
        while self.batcher or self.inflight:
            self._submit()
            done = self._done()
            if done:
                self.progress = time.monotonic()
                yield from self._receive(done)
            if self.timeout is not None and time.monotonic() - self.polled >= POLL_S:
                yield from self._watch()

    def _submit(self) -> None:
        # Until a host's CPU time is known, one single-host batch per thread: more of them would
        # be tasks of one host each, whose cost is a large share of small hosts' work.
        inflight = IN_FLIGHT_PER_THREAD * self.threads if self.batcher.observed else self.threads
        while self.batcher and len(self.inflight) < inflight:
            batch = self.batcher.take()
            future = self.client.submit(run_batch, self.func, batch, self.timeout, pure=False)
            self.inflight[future.key] = _Batch(future, batch)
            future.add_done_callback(self.done.put)
            self.stats.batches += 1

    def _done(self) -> List[_Batch]:
        """The batches done by now (waiting up to ``POLL_S`` for the first), out of ``inflight``."""
        futures = []
        try:
            futures.append(self.done.get(timeout=POLL_S))
            while True:
                futures.append(self.done.get_nowait())
        except queue.Empty:
            pass
        return [self.inflight.pop(f.key) for f in futures if f.key in self.inflight]

    def _receive(self, done: List[_Batch]) -> Iterator[HostSummary]:
        """The answers of finished batches (fetched together: one round trip), error rows for the
        hosts of batches that failed or were lost."""
        finished = [b for b in done if b.future.status == "finished"]
        try:
            results: List[Optional[bytes]] = self.client.gather([b.future for b in finished])
        except (Exception, asyncio.CancelledError):  # noqa: BLE001 - lost meanwhile: one at a time
            results = [None] * len(finished)
        answers = dict(zip((id(b) for b in finished), results))
        for batch in done:
            yield from self._answers(batch, answers.get(id(batch)))

    def _answers(self, batch: _Batch, blob: Optional[bytes]) -> Iterator[HostSummary]:
        future = batch.future
        error: Optional[BaseException] = None
        if blob is None:
            try:
                blob = future.result()
            except (Exception, asyncio.CancelledError) as lost:  # noqa: BLE001 - a failed, cancelled or lost task
                error = lost
        future.release()
        answers: Optional[List[Answer]] = answers_of(blob) if blob is not None else None
        if answers is None:
            yield from (error_row(t, failed_error(error or RuntimeError(future.status))) for t in batch.tasks)
            return
        for summary, cpu_s in answers:
            self.batcher.observe(cpu_s)
            yield self.stats.answered(summary, cpu_s)

    def _watch(self) -> Iterator[HostSummary]:
        """Note which batches the workers started; give up those past their hosts' limits,
        and every host when no worker has taken any for a whole limit."""
        assert self.timeout is not None
        now = self.polled = time.monotonic()
        for worker, keys in self.client.processing().items():
            for key in keys:
                batch = self.inflight.get(key)
                if batch is not None and batch.started is None:
                    batch.started, batch.worker, self.progress = now, worker, now
        for key, batch in list(self.inflight.items()):
            # "processing" may still mean queued on the worker behind one batch: twice the limit.
            limit = 2 * len(batch.tasks) * self.timeout * 1.1 + GRACE_S
            if batch.started is not None and now - batch.started > limit:
                yield from self._give_up(key, batch)
        running = any(b.started is not None for b in self.inflight.values())
        if not running and now - self.progress > self.timeout * 1.1 + GRACE_S:
            yield from self._abandon()

    def _give_up(self, key: str, batch: _Batch) -> Iterator[HostSummary]:
        del self.inflight[key]
        self.client.cancel([batch.future], force=True)
        if self.restart and batch.worker is not None:
            with contextlib.suppress(Exception):
                self.client.restart_workers([batch.worker], raise_for_error=False)
        if len(batch.tasks) > 1:
            self.batcher.give_back(batch.tasks, alone=True)
            return
        self.stats.timeouts += 1
        yield error_row(batch.tasks[0], timed_out_error(self.timeout or 0))

    def _abandon(self) -> Iterator[HostSummary]:
        error = f"no Dask worker took this host within {self.timeout:g} s (every worker busy or stuck)"
        tasks = [t for b in self.inflight.values() for t in b.tasks]
        self.cancel()
        while self.batcher:
            tasks.extend(self.batcher.take())
        yield from (error_row(t, error) for t in tasks)

    def cancel(self) -> None:
        """Cancel every batch still queued or running (Ctrl-C, an exception, giving up)."""
        futures = [b.future for b in self.inflight.values()]
        self.inflight.clear()
        if futures:
            with contextlib.suppress(Exception):
                self.client.cancel(futures, force=True)
