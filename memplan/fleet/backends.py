"""Where ``memplan fleet`` runs (``Backend``), the batches of hosts its workers get, and what
the workers did.

A task has a fixed cost besides its hosts' work: submitting it, the scheduler (Dask), sending
the answer back. ``Batcher`` puts as many hosts in one task as keeps that cost a small share of
the work, from the CPU time the hosts done so far took.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import signal
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from multiprocessing import forkserver
from multiprocessing.context import BaseContext
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence

from memplan.fleet.compute import HostTask
from memplan.fleet.types import HostSummary

#: Batches still to hand out per worker before batches shrink (the tail keeps every worker busy).
TAIL_BATCHES = 4
#: Most hosts in one batch (a batch is one message to a local worker: it must fit a pipe).
MAX_BATCH = 64
#: What a fork server imports once for every worker it forks: what judging a host needs.
WORKER_MODULES = ("memplan.fleet.worker", "memplan.engine.simulation", "memplan.profile.reader",
                  "memplan.snapshot.reader", "memplan.plans.plan", "memplan.plans.unplug")


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C (and SIGTERM, when a Python handler is installed for it) wait for the end of the
    block, then act as they would have: starting worker processes or a Dask cluster, cut short
    half-way, would leave processes and tracebacks behind. A second Ctrl-C acts at once.
    Off the main thread (where Python runs signal handlers), nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: List[int] = []

    def hold(signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and signal.SIGINT in caught:
            raise KeyboardInterrupt()
        caught.append(signum)

    saved: Dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if sig == signal.SIGINT or callable(signal.getsignal(sig)):
            saved[sig] = signal.signal(sig, hold)
    try:
        yield
    finally:
        for number, previous in saved.items():
            signal.signal(number, previous)
        for signum in dict.fromkeys(caught):
            handler = saved[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)


_QUIET_TRACKER = "ignore:resource_tracker:UserWarning"


def start_forkserver(preload: Sequence[str]) -> BaseContext:
    """The ``forkserver`` multiprocessing context, its server started with SIGINT ignored.

    Ctrl-C reaches every process of the terminal's foreground group: a worker process would
    print its own ``KeyboardInterrupt`` traceback (and a Dask worker restarts). ``SIG_IGN``
    survives ``exec()``, and the fork server hands its disposition on to every process it forks,
    so worker processes ignore SIGINT from their first instruction on and only memplan handles
    Ctrl-C. memplan ignores SIGINT itself only while it spawns the server (milliseconds; a
    Ctrl-C exactly then is lost, never half-handled). ``preload``: modules the server imports
    once for all its children (used when this call starts it). Platforms without fork servers:
    ``spawn`` (workers then ignore SIGINT from their first Python instruction on)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(preload))
    # The resource tracker (started with the server, passed this interpreter's -W options) warns
    # about "leaked semaphore objects" when SIGTERM reached the whole process group and killed
    # Dask's workers: it removes them all the same; the warning would only add lines to memplan's one.
    if _QUIET_TRACKER not in sys.warnoptions:
        sys.warnoptions.append(_QUIET_TRACKER)
    main = threading.current_thread() is threading.main_thread()
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        forkserver.ensure_running()
    finally:
        if main:
            signal.signal(signal.SIGINT, handler)
    return ctx


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Backend:
    """Where to run: ``kind`` is ``local`` or ``dask``."""

    kind: str = "local"
    #: local: worker processes (``None``: one per CPU); dask-local: LocalCluster workers
    workers: Optional[int] = None
    #: dask: a running scheduler's address; ``None`` with ``kind == "dask"`` starts a LocalCluster
    scheduler: Optional[str] = None
    #: dask: seconds to reach the scheduler
    connect_timeout: float = 10.0

    def describe(self, tasks: int) -> str:
        if self.kind == "local":
            n = self.local_workers(tasks)
            return "this process" if n <= 1 else f"local pool, {n} workers"
        if self.scheduler:
            return f"Dask scheduler {self.scheduler}"
        return f"Dask LocalCluster, {self.workers or cpu_count()} workers"

    def local_workers(self, tasks: int) -> int:
        return max(1, min(self.workers or cpu_count(), tasks))


@dataclass
class FleetStats:
    """What the workers did, as the parent saw it (benchmarks, the "Ran on" line)."""

    #: hosts answered by a worker (input errors answered at once are not counted)
    hosts: int = 0
    #: CPU seconds the workers spent judging those hosts (measured around each host)
    host_cpu_s: float = 0.0
    #: batches handed to workers
    batches: int = 0
    #: hosts past ``--host-timeout``, and hosts whose worker died
    timeouts: int = 0
    deaths: int = 0

    def answered(self, summary: HostSummary, cpu_s: float) -> HostSummary:
        self.hosts += 1
        self.host_cpu_s += cpu_s
        return summary


@dataclass
class Batcher:
    """Hands out the pending tasks in batches of about ``target_s`` CPU seconds each.

    The size follows the mean CPU time of the hosts answered so far (one host a batch until
    there is one), never above ``max_batch``. Towards the end batches shrink so that
    ``TAIL_BATCHES`` batches per worker remain (guided self-scheduling: the fleet's last
    seconds stay parallel), but not below a ``TAIL_BATCHES``-th of ``target_s`` of work: the
    last workers wait for one another at most that long, and the tail costs a few tasks only.
    Tasks given back (a worker died, a batch ran out of time) come first, one per batch.
    """

    pending: Deque[HostTask]
    workers: int
    target_s: float
    max_batch: int = MAX_BATCH
    solo: Deque[HostTask] = field(default_factory=deque)
    _hosts: int = 0
    _seconds: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.pending or self.solo)

    @property
    def observed(self) -> bool:
        """Whether a host's CPU time is known yet (batches are sized from it)."""
        return self._hosts > 0

    def observe(self, cpu_s: float) -> None:
        self._hosts += 1
        self._seconds += cpu_s

    def size(self) -> int:
        if not self._hosts:
            return 1
        mean = max(self._seconds / self._hosts, 1e-6)
        full = math.ceil(self.target_s / mean)
        tail = max(len(self.pending) // (TAIL_BATCHES * self.workers), math.ceil(full / TAIL_BATCHES))
        return max(1, min(full, self.max_batch, tail))

    def take(self) -> List[HostTask]:
        if self.solo:
            return [self.solo.popleft()]
        n = self.size()
        return [self.pending.popleft() for _ in range(min(n, len(self.pending)))]

    def give_back(self, tasks: Sequence[HostTask], alone: bool = False) -> None:
        """Tasks to run again: first, and one a batch when ``alone``."""
        if alone:
            self.solo.extend(tasks)
        else:
            self.pending.extendleft(reversed(tasks))


__all__ = ["Backend", "Batcher", "FleetStats", "MAX_BATCH", "TAIL_BATCHES", "WORKER_MODULES", "cpu_count",
           "signals_deferred", "start_forkserver"]
