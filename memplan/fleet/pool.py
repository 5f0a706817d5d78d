"""``memplan fleet``'s local process pool: N worker processes, each fed batches through a pipe.

Not ``concurrent.futures``: a pool that can neither stop one stuck task nor say which task
killed a worker would make one bad host cost the fleet. Here every worker answers the hosts of
its batch as they are done, a few at a time (at most ``FLUSH_S`` late, and at the end of each
batch: ``memplan.fleet.worker.serve``), so the parent knows which hosts a worker may be on and
since when:

* a worker that dies (the OOM killer, a crash) costs exactly the host it was on, which becomes
  an error row: when the parent cannot tell which of its batch's unanswered hosts that was,
  they run again one a task, and the one that kills its worker alone is the error row; the
  rest of its batches go to the other workers;
* a host past ``--host-timeout`` is ended by ``SIGALRM`` in its worker; a host stuck where no
  signal handler runs (inside C code) is ended by the parent, which kills the worker a grace
  period later and starts another;
* Ctrl-C (the workers ignore SIGINT, the parent handles it), SIGTERM turned into an exception,
  or the consumer closing the generator: every worker is killed, none is left behind.

Workers start from a fork server that has imported memplan once and ignores SIGINT
(``memplan.fleet.backends.start_forkserver``; ``spawn`` where the platform has no fork server):
never a plain ``fork()`` of a process that may already run threads (a progress bar, a Dask
client).
"""

from __future__ import annotations

import time
from collections import deque
from multiprocessing.connection import wait as wait_ready
from multiprocessing.context import BaseContext
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

from memplan.fleet.backends import WORKER_MODULES, Batcher, FleetStats, signals_deferred, start_forkserver
from memplan.fleet.compute import HostTask, error_row
from memplan.fleet.types import HostSummary
from memplan.fleet.worker import HostFunc, serve, timed_out_error

#: CPU seconds of work per batch sent to a local worker: with answers sent a few at a time
#: (``FLUSH_S``), the parent's CPU per host of a few milliseconds stays under 1/32 of the host's
#: (``benchmarks/fleet_bench.py``: small hosts, local pool).
LOCAL_BATCH_S = 0.5
#: Batches a worker holds at a time: the one it works on and the next (it never waits for the
#: parent). At most one batch waits in the pipe, which holds it whole (``MAX_BATCH`` tasks).
IN_FLIGHT = 2
#: The parent kills a worker this long after its host's time limit (the worker's own alarm
#: normally ends the host at the limit), plus a tenth of the limit.
GRACE_S = 1.0
DIED = "worker process died while judging this host (killed, or out of memory)"


class _Worker:
    """One worker process, its pipe, and the batches it holds (answered host by host, in order)."""

    def __init__(self, ctx: BaseContext) -> None:
        parent, child = ctx.Pipe(duplex=True)
        self.process: Any = ctx.Process(target=serve, args=(child,), daemon=True)  # type: ignore[attr-defined]
        self.process.start()
        child.close()
        self.conn = parent
        self.batches: Deque[Deque[HostTask]] = deque()
        #: when the host it works on started (as far as the parent knows)
        self.since = time.monotonic()
        self.dead = False

    @property
    def busy(self) -> bool:
        return bool(self.batches)

    def send(self, func: HostFunc, batch: List[HostTask], timeout: Optional[float]) -> bool:
        """Hand it a batch; ``False`` when its pipe is broken: it died since the parent last looked
        (the batch is held as sent, and goes back when the death is seen at the next wait)."""
        if not self.batches:
            self.since = time.monotonic()
        self.batches.append(deque(batch))
        try:
            self.conn.send((func, batch, timeout))
        except OSError:
            return False
        return True

    def answered(self) -> HostTask:
        """The next host answered (the worker went on with the hosts after it by now)."""
        task = self.batches[0].popleft()
        if not self.batches[0]:
            self.batches.popleft()
        self.since = time.monotonic()
        return task

    def lost(self) -> Tuple[List[HostTask], List[HostTask]]:
        """Everything it held: the unanswered hosts of its first batch (the one it was on is
        among them; it is known when there is one), and the batches it had not started; it
        holds nothing afterwards."""
        first = list(self.batches[0]) if self.batches else []
        rest = [t for batch in list(self.batches)[1:] for t in batch]
        self.batches.clear()
        return first, rest

    def kill(self) -> None:
        """SIGKILL, without waiting long for a process stuck in the kernel (D state)."""
        self.dead = True
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=1.0)

    def stop(self) -> None:
        """Ask an idle worker to exit; kill it if it does not."""
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout=1.0)
        self.kill()


class LocalPool:
    """``workers`` worker processes: started by ``start()`` (with SIGINT ignored, so the fork
    server and every worker ignore Ctrl-C from the start), ended by ``close()``."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.ctx: Optional[BaseContext] = None
        self.crew: List[_Worker] = []

    def start(self) -> "LocalPool":
        with signals_deferred():
            ctx = self.ctx = start_forkserver(WORKER_MODULES)
            self.crew = [_Worker(ctx) for _ in range(self.workers)]
        return self

    def results(self, tasks: Sequence[HostTask], func: HostFunc, timeout: Optional[float],
                stats: FleetStats) -> Iterator[HostSummary]:
        """Every task's summary, in completion order."""
        batcher = Batcher(deque(tasks), self.workers, LOCAL_BATCH_S)
        while True:
            assert self.ctx is not None, "start() first"
            _feed(self.crew, self.ctx, batcher, func, timeout, stats)
            busy = [w for w in self.crew if w.busy]
            if not busy:
                return
            yield from _collect(busy, timeout, batcher, stats)

    def close(self, graceful: bool) -> None:
        """Stop every worker: ask idle ones to exit (``graceful``), kill the rest."""
        for w in self.crew:
            w.stop() if graceful and not w.busy else w.kill()
        self.crew = []


def _feed(crew: List[_Worker], ctx: BaseContext, batcher: Batcher, func: HostFunc, timeout: Optional[float],
          stats: FleetStats) -> None:
    """Top up every worker to ``IN_FLIGHT`` batches; replace the dead ones still needed."""
    for i, w in enumerate(crew):
        if not batcher:
            return
        if w.dead and not w.busy:
            with signals_deferred():
                crew[i] = w = _Worker(ctx)
        while batcher and len(w.batches) < IN_FLIGHT:
            stats.batches += 1
            if not w.send(func, batcher.take(), timeout):
                break


def _deadline(w: _Worker, timeout: Optional[float]) -> float:
    return w.since + (timeout or 0) * 1.1 + GRACE_S


def _collect(busy: List[_Worker], timeout: Optional[float], batcher: Batcher,
             stats: FleetStats) -> Iterator[HostSummary]:
    """Wait for answers (or a death, or a deadline) and yield what arrived."""
    by_handle: Dict[Any, _Worker] = {}
    for w in busy:
        by_handle[w.conn] = w
        by_handle[w.process.sentinel] = w
    wait_s = None if timeout is None else max(0.0, min(_deadline(w, timeout) for w in busy) - time.monotonic())
    ready = wait_ready(list(by_handle), timeout=wait_s)
    exited = {id(by_handle[h]) for h in ready if isinstance(h, int)}  # a sentinel: the process ended
    for w in {id(by_handle[h]): by_handle[h] for h in ready}.values():
        yield from _answers(w, id(w) in exited, batcher, stats)
    if timeout is None:
        return
    now = time.monotonic()
    for w in busy:
        if w.busy and now > _deadline(w, timeout):
            yield from _lose(w, batcher, stats, timed_out_error(timeout))


def _answers(w: _Worker, exited: bool, batcher: Batcher, stats: FleetStats) -> Iterator[HostSummary]:
    """The answers in the worker's pipe, which is ready (one message: more are read at the next
    wait, without a ``poll()`` each); a worker that ended first gets every answer it sent read,
    then loses the host it was on."""
    try:
        more = True
        while w.busy and more:
            for summary, cpu_s in w.conn.recv():
                w.answered()
                batcher.observe(cpu_s)
                yield stats.answered(summary, cpu_s)
            more = exited and w.conn.poll()
    except (EOFError, OSError):
        exited = True
    if exited and w.busy:
        yield from _lose(w, batcher, stats, DIED)


def _lose(w: _Worker, batcher: Batcher, stats: FleetStats, error: str) -> Iterator[HostSummary]:
    """The worker's current host becomes an error row, the rest of its batches go back. When
    its batch has more than one unanswered host, any of them may be the one (answers travel a
    few at a time): they run again, one a task."""
    w.kill()
    first, rest = w.lost()
    batcher.give_back(rest)
    if len(first) > 1:
        batcher.give_back(first, alone=True)
        return
    if error == DIED:
        stats.deaths += 1
    else:
        stats.timeouts += 1
    yield from (error_row(task, error) for task in first)
