"""The worker side of ``memplan fleet``: judging hosts within a time limit, in any process.

The same code runs a host in this process (``--workers 1``), in a local worker process and on a
Dask worker that memplan may not have started:

* ``time_limit()`` ends a host that takes longer than ``--host-timeout``: ``SIGALRM`` on a
  process's main thread (it also interrupts a blocking ``open()`` or ``read()``), otherwise (a
  Dask worker thread) the process's one watchdog thread, which raises ``HostTimeout`` in the
  judging thread at its next Python instruction. The parent enforces the limit too, for a host stuck where neither
  reaches (``memplan.fleet.executors``).
* ``tune_malloc()`` gives glibc's allocator fixed, large thresholds, once per worker process,
  before its first host: ``dask worker`` exports ``MALLOC_TRIM_THRESHOLD_=65536``, and any
  explicit trim threshold turns off glibc's dynamic mmap threshold (mallopt(3)), so every numpy
  temporary above 128 KiB becomes a fresh ``mmap()`` whose pages fault in zeroed: twice the CPU
  time per host (measured by ``benchmarks/fleet_bench.py``).
* ``serve()`` is the loop of a local worker process: it reads batches of tasks from its pipe and
  answers every host as soon as it is done.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import os
import pickle
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from memplan.fleet.compute import HostTask, error_row
from memplan.fleet.types import HostSummary

#: What a task function turns a host into.
HostFunc = Callable[[HostTask], HostSummary]
#: A host's answer and the CPU seconds its worker spent on it.
Answer = Tuple[HostSummary, float]


class HostTimeout(BaseException):
    """A host ran past ``--host-timeout`` (a ``BaseException``: no ``except Exception`` on the
    way swallows it)."""


def timed_out_error(seconds: float) -> str:
    return f"timed out after {seconds:g} s (--host-timeout)"


def failed_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"worker failed: {type(exc).__name__}{': ' + text if text else ''}"


# ---- time limit -------------------------------------------------------------------------


@dataclass
class _Limit:
    """One host's time limit; ``disarm()`` is idempotent and safe to call after it fired."""

    seconds: float
    fired: bool = False
    armed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    old_handler: Any = None
    #: off the main thread: the process's watchdog holds this limit (``_WATCHDOG``)
    watched: bool = False
    thread_id: int = 0

    def arm(self) -> None:
        self.armed = True
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
            self.old_handler = signal.signal(signal.SIGALRM, self._on_alarm)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        else:
            self.thread_id = threading.get_ident()
            self.watched = True
            _WATCHDOG.arm(self)

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if self.armed:
            self.armed, self.fired = False, True
            raise HostTimeout()

    def on_deadline(self) -> None:
        """The watchdog's call at the deadline (from its own thread)."""
        with self.lock:
            if self.armed:
                self.armed, self.fired = False, True
                _set_async_exc(self.thread_id, HostTimeout)

    def disarm(self) -> None:
        with self.lock:
            self.armed = False
            if self.watched and self.fired:  # not raised yet: withdraw it
                _set_async_exc(self.thread_id, None)
        if self.watched:
            _WATCHDOG.disarm(self)
        if self.old_handler is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.old_handler)
            self.old_handler = None


class _Watchdog:
    """One thread per process that ends the hosts of other threads (Dask worker threads) at
    their deadlines. A thread of its own per host (``threading.Timer``) would cost more CPU
    than a small host's judging: starting and ending it is ~0.1 ms of CPU per host."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        #: judging thread -> (deadline, its limit)
        self.limits: Dict[int, Tuple[float, _Limit]] = {}
        #: when the watchdog wakes up next (``inf``: when woken)
        self.wake_at = math.inf
        self.pid = 0

    def arm(self, limit: _Limit) -> None:
        deadline = time.monotonic() + limit.seconds
        with self.cond:
            if self.pid != os.getpid():  # first use in this process (or a forked child): start it
                self.limits.clear()
                self.wake_at = math.inf
                self.pid = os.getpid()
                threading.Thread(target=self._run, name="memplan host time limits", daemon=True).start()
            self.limits[limit.thread_id] = (deadline, limit)
            if deadline < self.wake_at:
                self.cond.notify()

    def disarm(self, limit: _Limit) -> None:
        """Forget the limit; the watchdog is not woken (it finds nothing due when it wakes)."""
        with self.cond:
            entry = self.limits.get(limit.thread_id)
            if entry is not None and entry[1] is limit:
                del self.limits[limit.thread_id]

    def _run(self) -> None:
        with self.cond:
            while True:
                now = time.monotonic()
                for thread_id, (deadline, limit) in list(self.limits.items()):
                    if deadline <= now:
                        del self.limits[thread_id]
                        limit.on_deadline()
                self.wake_at = min((d for d, _ in self.limits.values()), default=math.inf)
                self.cond.wait(None if self.wake_at == math.inf else self.wake_at - now)


_WATCHDOG = _Watchdog()


def _set_async_exc(thread_id: int, exc: Optional[type]) -> None:
    """``PyThreadState_SetAsyncExc``: raise ``exc`` in the thread at its next instruction
    (``None``: withdraw what was set and not raised yet)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


@contextlib.contextmanager
def time_limit(seconds: Optional[float]) -> Iterator[None]:
    """Raise ``HostTimeout`` in this thread when the block runs longer than ``seconds``."""
    if seconds is None:
        yield
        return
    limit = _Limit(seconds)
    try:
        limit.arm()
        try:
            yield
        finally:
            limit.disarm()
    except HostTimeout:
        limit.disarm()
        raise


# ---- the allocator ----------------------------------------------------------------------

#: mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: glibc's own maxima for its dynamic thresholds (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit, and
#: twice that for trimming): what an untuned process converges to on memplan's work
TUNED_MMAP_THRESHOLD = 32 << 20
TUNED_TRIM_THRESHOLD = 64 << 20


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") else None


_LIBC = _libc()


#: the process whose allocator ``tune_malloc()`` tuned (a forked child inherits the tuning)
_tuned_pid: Optional[int] = None


def tune_malloc() -> bool:
    """Fixed, large glibc malloc thresholds for the rest of this process, set once per process
    (later calls return at once). ``False`` where there is nothing to tune (not glibc).

    ``dask worker`` exports ``MALLOC_TRIM_THRESHOLD_=65536``; an explicit threshold turns off
    glibc's dynamic mmap threshold, so every numpy temporary above 128 KiB is a fresh ``mmap()``
    whose pages fault in zeroed, and freed heap memory goes back to the system at once: twice
    memplan's CPU time per host. The tuned values are what the dynamic thresholds of an untuned
    process grow to on memplan's work, so a process without the variable is not changed in
    effect; a worker keeps at most ``TUNED_TRIM_THRESHOLD`` of free heap, and blocks above
    ``TUNED_MMAP_THRESHOLD`` still go back to the system as soon as they are freed.
    """
    global _tuned_pid
    if _LIBC is None:
        return False
    pid = os.getpid()
    if _tuned_pid != pid:
        _LIBC.mallopt(M_MMAP_THRESHOLD, TUNED_MMAP_THRESHOLD)
        _LIBC.mallopt(M_TRIM_THRESHOLD, TUNED_TRIM_THRESHOLD)
        _tuned_pid = pid
    return True


# ---- judging hosts ----------------------------------------------------------------------


def judge(func: HostFunc, task: HostTask, timeout: Optional[float]) -> Answer:
    """``func(task)`` within ``timeout`` seconds, and the CPU seconds it took this thread.

    Past the limit the host is its error row; an exception ``func`` lets out (``run_host``
    lets none out but with ``MEMPLAN_TRACEBACK``) is an error row too. Other
    ``BaseException``s (Ctrl-C, SIGTERM) propagate."""
    tune_malloc()
    start = time.thread_time()
    try:
        with time_limit(timeout):
            summary = func(task)
    except HostTimeout:
        summary = error_row(task, timed_out_error(timeout or 0))
    except Exception as exc:  # noqa: BLE001 - a failing task is its host's error row
        summary = error_row(task, failed_error(exc))
    return summary, time.thread_time() - start


def run_batch(func: HostFunc, tasks: Sequence[HostTask], timeout: Optional[float]) -> bytes:
    """A batch of hosts (one Dask task): every host's answer, in order, pickled here into one
    ``bytes`` object (``answers_of()`` reads it). Dask passes bytes through as they are; a list
    of answers it would pickle and unpickle itself, in its own messages, on the client's
    event-loop thread: 4-5 times the parent's CPU per host of one ``pickle.loads``
    (``benchmarks/fleet_bench.py``, small hosts on Dask)."""
    return pickle.dumps([judge(func, task, timeout) for task in tasks], protocol=pickle.HIGHEST_PROTOCOL)


def answers_of(blob: bytes) -> List[Answer]:
    """The answers ``run_batch()`` returned."""
    answers: List[Answer] = pickle.loads(blob)
    return answers


#: A local worker sends the answers it has once this long has passed since its previous message
#: (and at the end of every batch): one pipe message per host cost the parent 1/12 of a small
#: (2 ms) host's CPU time, the target being under 1/32. Every message wakes the parent, whose
#: caches the workers' page arrays have emptied meanwhile: 0.1-0.3 ms of its CPU on this
#: 2-vCPU VM whatever the message holds, so answers travel at most four times a second.
FLUSH_S = 0.25


def serve(conn: Any) -> None:
    """A local worker process: ``(func, tasks, timeout)`` batches in, lists of answers
    out, in task order: the answers of the hosts done since the last message, sent once
    ``FLUSH_S`` has passed since then and at the end of every batch, until the pipe closes or
    ``None`` arrives.

    Ctrl-C is the parent's to handle (the terminal sends SIGINT to the whole process group):
    the worker ignores it and is ended by its parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):
            return
        if batch is None:
            return
        func, tasks, timeout = batch
        answers: List[Answer] = []
        sent = time.monotonic()
        for i, task in enumerate(tasks):
            answers.append(judge(func, task, timeout))
            now = time.monotonic()
            if now - sent < FLUSH_S and i + 1 < len(tasks):
                continue
            try:
                conn.send(answers)
            except (BrokenPipeError, EOFError, OSError):
                return
            answers, sent = [], now


__all__ = ["Answer", "HostFunc", "HostTimeout", "FLUSH_S", "answers_of", "judge", "run_batch", "serve", "time_limit",
           "timed_out_error", "tune_malloc"]
