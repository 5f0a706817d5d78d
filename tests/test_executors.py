"""memplan.fleet.executors: the local process pool and Dask give exactly the in-process answers."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections import deque

import pytest

from fleet_hosts import (
    RELEASE,
    dask_cluster,
    deaf_on_gen_1,
    die_on_gen_1,
    sleep_on_gen_1,
    spin_on_gen_1,
    stuck_on_gen_1,
    write_fleet,
)
from memplan.core.errors import UsageError
from memplan.fleet.backends import MAX_BATCH, TAIL_BATCHES, Batcher
from memplan.fleet.compute import FleetOptions, HostTask, error_row, make_tasks, run_host
from memplan.fleet.executors import Backend, FleetStats, require_dask, run_tasks
from memplan.fleet.types import FleetMode, InputKind
from memplan.fleet.worker import judge


@pytest.fixture(scope="module")
def dask_scheduler():
    yield from dask_cluster()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> str:
    root = write_fleet(str(tmp_path_factory.mktemp("fleet")))
    with open(os.path.join(root, "profiles", "broken.toml"), "w") as handle:
        handle.write("format = 1\n[[ram]]\nstart = 0\n")
    return root


@pytest.fixture(scope="module")
def tasks(fleet):
    return make_tasks([fleet, os.path.join(fleet, "missing")], FleetOptions())


@pytest.fixture(scope="module")
def in_process(tasks):
    return {h.host: h for h in run_tasks(tasks, Backend(workers=1))}


def by_host(summaries):
    out = {}
    for h in summaries:
        assert h.host not in out, f"{h.host} answered twice"
        out[h.host] = h
    return out


def test_in_process_answers_every_host_once(tasks, in_process):
    assert set(in_process) == {t.host for t in tasks}
    errors = {os.path.basename(h): s.error for h, s in in_process.items() if s.error}
    assert set(errors) == {"broken.toml", "missing"}
    assert "ram[0]" in errors["broken.toml"]


def test_local_pool_gives_identical_summaries(tasks, in_process):
    assert by_host(run_tasks(tasks, Backend(workers=2))) == in_process


def test_a_dying_worker_costs_only_its_host(fleet):
    tasks = make_tasks([os.path.join(fleet, "profiles")], FleetOptions())
    got = by_host(run_tasks(tasks, Backend(workers=2), func=die_on_gen_1))
    expected = by_host(run_tasks(tasks, Backend(workers=1)))
    dead = [h for h in got if os.path.basename(h) == "gen-1.toml"]
    assert got[dead[0]].error == "worker process died while judging this host (killed, or out of memory)"
    assert {h: s for h, s in got.items() if h not in dead} == {h: s for h, s in expected.items() if h not in dead}


def test_a_worker_dying_in_a_batch_of_unsent_answers_costs_only_its_host(fleet, monkeypatch):
    """Answers travel a few at a time: when a worker dies the parent cannot tell which of its
    batch's unanswered hosts killed it. They run again one a task; only the culprit is an
    error row, the others are answered as anywhere else."""
    from memplan.fleet.pool import DIED, LocalPool
    monkeypatch.setattr(Batcher, "size", lambda self: 3)  # gen-0..2, then gen-3..5
    tasks = make_tasks([os.path.join(fleet, "profiles")], FleetOptions())
    expected = by_host(run_tasks(tasks, Backend(workers=1)))
    stats = FleetStats()
    pool = LocalPool(1).start()
    try:
        got = by_host(pool.results(tasks, die_on_gen_1, None, stats))
    finally:
        pool.close(graceful=True)
    dead = [h for h in got if os.path.basename(h) == "gen-1.toml"]
    assert [got[h].error for h in dead] == [DIED] and stats.deaths == 1
    assert {h: s for h, s in got.items() if h not in dead} == {h: s for h, s in expected.items() if h not in dead}
    assert stats.batches > 2  # the first batch's hosts ran again, one a task


# ---- time limits --------------------------------------------------------------------------


#: The time limit of the tests' hosts: the stuck one reaches it, the others (milliseconds of work)
#: never do, even on a loaded machine.
LIMIT = 2.0


def _timed_out(got, seconds):
    slow = [h for h in got if os.path.basename(h) == "gen-1.toml"]
    assert got[slow[0]].error == f"timed out after {seconds:g} s (--host-timeout)"
    return slow[0]


@pytest.fixture(scope="module")
def profile_tasks(fleet):
    return make_tasks([os.path.join(fleet, "profiles")], FleetOptions())


@pytest.fixture(scope="module")
def expected(profile_tasks):
    return by_host(run_tasks(profile_tasks, Backend(workers=1)))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stuck_host_times_out_and_the_others_are_answered(profile_tasks, expected, workers):
    """SIGALRM in the process judging the host (this one, or a worker) ends a blocking call."""
    stats = FleetStats()
    started = time.monotonic()
    got = by_host(run_tasks(profile_tasks, Backend(workers=workers), func=sleep_on_gen_1, host_timeout=LIMIT,
                            stats=stats))
    assert time.monotonic() - started < 30
    slow = _timed_out(got, LIMIT)
    assert {h: s for h, s in got.items() if h != slow} == {h: s for h, s in expected.items() if h != slow}
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_worker_deaf_to_its_alarm_is_killed_by_the_parent(profile_tasks, expected):
    stats = FleetStats()
    started = time.monotonic()
    got = by_host(run_tasks(profile_tasks, Backend(workers=2), func=deaf_on_gen_1, host_timeout=LIMIT, stats=stats))
    assert time.monotonic() - started < 30
    slow = _timed_out(got, LIMIT)
    assert {h: s for h, s in got.items() if h != slow} == {h: s for h, s in expected.items() if h != slow}
    assert (stats.timeouts, stats.deaths) == (1, 0)


def test_a_host_spinning_on_a_dask_worker_thread_times_out(profile_tasks, expected, dask_scheduler):
    """A Dask worker thread gets no signals: a watchdog raises in it."""
    got = by_host(run_tasks(profile_tasks, Backend("dask", scheduler=dask_scheduler), func=spin_on_gen_1,
                            host_timeout=LIMIT))
    slow = _timed_out(got, LIMIT)
    assert {h: s for h, s in got.items() if h != slow} == {h: s for h, s in expected.items() if h != slow}


def test_a_host_stuck_on_a_dask_worker_is_given_up_by_the_parent(profile_tasks, expected, dask_scheduler,
                                                                  monkeypatch):
    """Stuck inside C code, nothing in the worker thread can end the host: the parent gives its
    batch up, and the stuck host times out (one host per task here, to keep the test short: a
    batch's hosts would first run again one per task)."""
    from memplan.fleet import dask_run
    monkeypatch.setattr(dask_run, "DASK_BATCH_S", 0.0)
    RELEASE.clear()
    stats = FleetStats()
    try:
        started = time.monotonic()
        got = by_host(run_tasks(profile_tasks, Backend("dask", scheduler=dask_scheduler), func=stuck_on_gen_1,
                                host_timeout=LIMIT, stats=stats))
        assert time.monotonic() - started < 60
    finally:
        RELEASE.set()
    slow = _timed_out(got, LIMIT)
    assert {h: s for h, s in got.items() if h != slow} == {h: s for h, s in expected.items() if h != slow}
    assert stats.timeouts == 1


class _FakeClient:
    """What ``_DaskRun`` asks of a client when it gives a batch up."""

    def __init__(self):
        self.cancelled, self.restarted = [], []

    def nthreads(self):
        return {"tcp://w1": 1, "tcp://w2": 1}

    def cancel(self, futures, force=False):
        self.cancelled.extend(futures)

    def restart_workers(self, workers, raise_for_error=True):
        self.restarted.extend(workers)


@pytest.mark.parametrize("restart", [False, True])
def test_a_batch_given_up_runs_again_one_host_per_task(profile_tasks, restart):
    from memplan.fleet.dask_run import _Batch, _DaskRun
    client = _FakeClient()
    run = _DaskRun(client, [], run_host, 1.0, FleetStats(), restart=restart)
    three = _Batch("future-3", profile_tasks[:3], started=0.0, worker="tcp://w1")
    run.inflight["k3"] = three
    assert list(run._give_up("k3", three)) == []  # nobody knows which host is stuck: each alone
    assert [run.batcher.take() for _ in range(3)] == [[t] for t in profile_tasks[:3]]
    one = _Batch("future-1", profile_tasks[:1], started=0.0, worker="tcp://w2")
    run.inflight["k1"] = one
    (row,) = run._give_up("k1", one)
    assert row.host == profile_tasks[0].host and row.error == "timed out after 1 s (--host-timeout)"
    assert client.cancelled == ["future-3", "future-1"] and run.inflight == {}
    # Only a cluster memplan started gets its stuck workers restarted.
    assert client.restarted == (["tcp://w1", "tcp://w2"] if restart else [])


def test_judge_turns_failures_into_error_rows_and_measures_cpu(profile_tasks):
    (task,) = [t for t in profile_tasks if os.path.basename(t.host) == "gen-0.toml"]

    def boom(task):
        raise ValueError("bad\n  host")
    summary, cpu = judge(boom, task, 5.0)
    assert summary.error == "worker failed: ValueError: bad host" and summary.host == task.host
    summary, cpu = judge(run_host, task, 5.0)
    assert summary.error is None and summary.machine == "gen-0" and cpu > 0


# ---- batches ----------------------------------------------------------------------------


def test_batches_follow_the_measured_cost_and_shrink_at_the_tail(profile_tasks):
    task = profile_tasks[0]
    batcher = Batcher(deque([task] * 10000), workers=4, target_s=0.25)
    assert len(batcher.take()) == 1  # nothing measured yet
    batcher.observe(0.01)
    assert len(batcher.take()) == 25  # 0.25 s of 10 ms hosts
    batcher.observe(0.0)
    assert len(batcher.take()) == 50  # the mean of what was measured: 5 ms
    for _ in range(8):
        batcher.observe(0.0)
    assert len(batcher.take()) == MAX_BATCH  # 1 ms hosts: as many as a batch may hold
    sizes = []
    while batcher:
        sizes.append(len(batcher.take()))
    # Guided towards the end (a quarter of the remaining work per worker), never below a quarter
    # of the target's work, so the tail costs few batches.
    floor = math.ceil(250 / TAIL_BATCHES)
    assert sizes[-2] == floor and sizes[-1] <= floor
    tail = [n for n in sizes if n < MAX_BATCH]
    assert sorted(tail, reverse=True) == tail and len(tail) < 4 * TAIL_BATCHES * 2
    batcher.give_back([profile_tasks[1], profile_tasks[2]], alone=True)
    assert batcher.take() == [profile_tasks[1]] and batcher.take() == [profile_tasks[2]]
    batcher.give_back([profile_tasks[3], profile_tasks[4]])
    assert batcher.pending[0] == profile_tasks[3] and batcher.pending[1] == profile_tasks[4]


def test_dask_cluster_gives_identical_summaries(tasks, in_process, dask_scheduler):
    assert by_host(run_tasks(tasks, Backend("dask", scheduler=dask_scheduler))) == in_process


def test_dask_capacity_plans_match_in_process(fleet, dask_scheduler):
    tasks = make_tasks([os.path.join(fleet, "profiles", "gen-0.toml"), os.path.join(fleet, "profiles", "gen-2.toml"),
                        os.path.join(fleet, "snapshots", "qemu-6.1-post1")],
                       FleetOptions(FleetMode.UNPLUG, size=512 << 20))
    local = by_host(run_tasks(tasks, Backend(workers=1)))
    assert by_host(run_tasks(tasks, Backend("dask", scheduler=dask_scheduler))) == local
    assert all(s.error is None and s.achieved_bytes for s in local.values())


def test_dask_local_cluster_started_by_memplan(fleet):
    pytest.importorskip("distributed", reason="dask.distributed is not installed")
    tasks = make_tasks([os.path.join(fleet, "profiles", "gen-3.toml"), os.path.join(fleet, "nope")],
                       FleetOptions())
    got = by_host(run_tasks(tasks, Backend("dask", workers=1)))
    assert got == by_host(run_tasks(tasks, Backend(workers=1)))


def test_unreachable_scheduler_is_a_usage_error(fleet):
    pytest.importorskip("distributed", reason="dask.distributed is not installed")
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tasks = make_tasks([os.path.join(fleet, "profiles", "gen-3.toml")], FleetOptions())
    with pytest.raises(UsageError, match=f"cannot connect to the Dask scheduler tcp://127.0.0.1:{port}"):
        list(run_tasks(tasks, Backend("dask", scheduler=f"tcp://127.0.0.1:{port}", connect_timeout=0.5)))


def test_without_dask_the_dask_options_say_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    hint = r"--scheduler needs Dask, which is not installed: pip install 'memplan\[fleet\]'"
    with pytest.raises(UsageError, match=hint):
        require_dask("--scheduler")


def test_backend_sizes_the_local_pool():
    assert Backend(workers=8).local_workers(3) == 3
    assert Backend(workers=2).local_workers(100) == 2
    assert Backend().local_workers(1) == 1
    assert Backend(workers=1).describe(10) == "this process"
    assert Backend("dask", scheduler="tcp://h:8786").describe(10) == "Dask scheduler tcp://h:8786"


# ---- the allocator ----------------------------------------------------------------------

MALLOC_PROBE = """
import ctypes, resource, sys
import numpy as np
from memplan.fleet import worker
from memplan.fleet.compute import FleetOptions, HostTask
from memplan.fleet.types import InputKind

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        a = np.ones(1 << 19)  # 4 MiB, above the 128 KiB mmap threshold an explicit trim threshold pins
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def host(task):
    global during
    faults()
    during = faults()
    return worker.error_row(task, "probe")

task = HostTask("h", InputKind.PROFILE, FleetOptions())
outside = faults()
worker.judge(host, task, None)
first = during
after = faults()
# a task that sets the environment's thresholds back (as Dask's would) is not undone again:
# the tuning happens once per process, before its first host
libc = ctypes.CDLL(None)
libc.mallopt(worker.M_MMAP_THRESHOLD, 128 << 10)
libc.mallopt(worker.M_TRIM_THRESHOLD, 65536)
worker.judge(host, task, None)
print(outside, first, after, during)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_malloc_tuning_undoes_dasks_trim_threshold_once_per_worker_process():
    """``dask worker`` exports MALLOC_TRIM_THRESHOLD_: every large numpy temporary is then a fresh
    mmap() whose pages fault in again (twice memplan's CPU per host). The first host a worker
    process judges tunes its allocator for good: from then on they come from the heap; the
    tuning is not repeated per host."""
    from conftest import ROOT
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", MALLOC_PROBE], capture_output=True, text=True, env=env, check=True)
    outside, first, after, reset = map(int, out.stdout.split())
    assert outside > 5000, out.stdout  # 20 x 4 MiB faulted in, each time
    assert first < outside / 20 and after < outside / 20, out.stdout
    assert reset > 5000, out.stdout  # set once: a later judge() does not set it again


# ---- time limits off the main thread ----------------------------------------------------


def _spin(task):
    while True:
        sum(range(1000))


def _quick(task):
    return error_row(task, "quick")


def test_one_watchdog_ends_the_hosts_of_several_threads_and_no_other():
    """Off the main thread (Dask worker threads) one watchdog thread per process keeps every
    thread's deadline: spinning hosts end at their limit, hosts done in time are never hit
    afterwards, and no thread is started per host."""
    import threading
    task = HostTask("h", InputKind.PROFILE, FleetOptions())
    answers = {}

    def work(name, func, timeout, repeat=1):
        for _ in range(repeat):
            answers[name] = judge(func, task, timeout)[0].error

    warm = threading.Thread(target=work, args=("warm", _quick, 0.05))  # the watchdog is up
    warm.start()
    warm.join()
    threads_before = threading.active_count()
    crew = [threading.Thread(target=work, args=("spin-1", _spin, 0.3)),
            threading.Thread(target=work, args=("spin-2", _spin, 0.6)),
            threading.Thread(target=work, args=("quick", _quick, 0.2, 500))]
    start = time.monotonic()
    for t in crew:
        t.start()
    assert threading.active_count() <= threads_before + len(crew)
    for t in crew:
        t.join(10)
    assert not any(t.is_alive() for t in crew)
    assert answers == {"warm": "quick", "spin-1": "timed out after 0.3 s (--host-timeout)",
                       "spin-2": "timed out after 0.6 s (--host-timeout)", "quick": "quick"}
    assert 0.6 <= time.monotonic() - start < 8
    # a limit disarmed in time never fires later
    done = threading.Thread(target=work, args=("late", _quick, 0.1))
    done.start()
    done.join()
    time.sleep(0.3)
    assert answers["late"] == "quick"
