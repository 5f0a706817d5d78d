"""``memplan fleet``: where the CPU goes per host, on every backend, measured in one run.

A fleet keeps N workers busy only while the parent (submitting, receiving, aggregating,
printing) needs less than 1/N of a worker's CPU time per host. This benchmark generates N
profiles (default 200) of 64 GiB machines — 16 GiB ZONE_NORMAL with page cache, anonymous
memory and a little slab in every block, 48 GiB ZONE_MOVABLE with THP, and on every fourth host a
few long-term pinned pages — and runs the same simulation of every host

* in this process (``--workers 1``: the reference answers),
* on the local process pool (``--workers 2``),
* on a Dask LocalCluster memplan starts (``--dask-local 2``),
* on an external scheduler with ``dask worker`` processes this benchmark starts
  (``--scheduler``): workers memplan did not start, which export ``MALLOC_TRIM_THRESHOLD_``,

and reports per backend, in CPU milliseconds per host: the hosts' own work (measured inside
each task), every worker-side process (from /proc; for the LocalCluster this includes the
process memplan runs its scheduler and nannies in), the parent (this process: submitting,
receiving, aggregating and printing the table as ``memplan fleet`` does; all of it, and its main
thread alone, memplan's own work, the rest being Dask's client threads) and the external
scheduler; raw, and "busy" (minus the background CPU each backend spends per second when idle,
measured before the run: on a loaded machine it inflates per-host figures). Then the parent's
share of the workers' CPU (the fleet stays worker-bound up to 1 / share workers; the target is
under 1/32) and whether the answers are identical to the in-process ones. Start-up (pool,
cluster) is measured apart from the per-host work.

Then two ratios, each measured in the same run:

* ``dask worker`` with and without memplan's malloc tuning (done once per worker process by its
  first task; without: each task sets back the thresholds ``MALLOC_TRIM_THRESHOLD_`` gives for
  its host), against the local pool;
* the parent's CPU per host for small (1 GiB, a few ms) hosts, on the local pool and on Dask;
* Dask's cost per task, by process, from small (1 GiB) hosts run with memplan's batches and
  with one host per task, and that cost as a share of the hosts' work (target: under 5 %);
  also every busy CPU second beyond the hosts' work (the parent's table rows included).

This machine's core count bounds wall-clock speed-ups; the CPU split per host is what predicts
scaling. Run from the repository root:  python benchmarks/fleet_bench.py [--hosts 200]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import io
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from rich.console import Console  # noqa: E402

from memplan.fleet import dask_run, worker  # noqa: E402
from memplan.fleet.aggregate import FleetAggregate  # noqa: E402
from memplan.fleet.compute import FleetOptions, HostTask, make_tasks, run_host  # noqa: E402
from memplan.fleet.executors import Backend, FleetRun, FleetStats, cpu_count, run_tasks  # noqa: E402
from memplan.fleet.types import HostSummary  # noqa: E402
from memplan.render import fleet as render_fleet  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def host_profile(i: int) -> str:
    text = f"""format = 1
[machine]
name = "bench-{i}"
memory_block_size = "128MiB"

[[ram]]
start = "0"
size = "16GiB"
zone = "Normal"

[[ram]]
start = "16GiB"
size = "48GiB"
zone = "Movable"

[[fill]]
blocks = "0-127"
seed = {2 * i}
anon = 0.{2 + i % 3}
file = 0.3
slab = 0.000{1 + i % 5}

[[fill]]
blocks = "128-511"
seed = {2 * i + 1}
anon = 0.4
file = 0.{1 + i % 3}
thp = 0.1
"""
    if i % 4 == 0:
        text += f"""
[[pages]]
pfn = "0x{0x500000 + 0x10000 * (i % 7):x}"
count = 16
kind = "pinned"
"""
    return text


def small_profile(i: int) -> str:
    """A 1 GiB host (8 blocks): a few milliseconds of work, where a task's cost shows."""
    return f"""format = 1
[machine]
name = "small-{i}"
memory_block_size = "128MiB"

[[ram]]
start = "0"
size = "1GiB"
zone = "Normal"

[[fill]]
blocks = "0-7"
seed = {i}
anon = 0.3
file = 0.2
slab = 0.0002
"""


# ---- CPU accounting ---------------------------------------------------------------------


def _proc_table() -> Dict[int, Tuple[int, float]]:
    """pid -> (parent pid, CPU seconds) of every process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK)
    return out


def descendants_cpu(exclude: Tuple[int, ...] = ()) -> Dict[int, float]:
    """CPU seconds of every live descendant of this process (and of theirs), but ``exclude``."""
    table = _proc_table()
    children: Dict[int, List[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        if pid not in exclude:
            out[pid] = table[pid][1]
        todo.extend(children.get(pid, []))
    return out


def cpu_of(pid: int) -> float:
    return _proc_table().get(pid, (0, 0.0))[1]


def delta(after: Dict[int, float], before: Dict[int, float]) -> float:
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


# ---- one measured run -------------------------------------------------------------------


#: Seconds the benchmark watches a started backend do nothing, for its background CPU rate.
IDLE_S = 2.0


@dataclass
class Measured:
    name: str
    hosts: int
    wall_s: float
    startup_cpu_s: float
    parent_cpu_s: float
    worker_cpu_s: float
    scheduler_cpu_s: float
    host_cpu_s: float
    batches: int
    answers: Dict[str, HostSummary]
    #: the parent's main thread: memplan's own work (submitting, receiving, aggregating, printing);
    #: the rest of ``parent_cpu_s`` is Dask's threads in this process (its client, and for a
    #: LocalCluster its scheduler and nannies)
    main_cpu_s: float = 0.0
    #: CPU seconds per second of the idle backend: parent, workers, scheduler (heartbeats, timers)
    idle_rates: Tuple[float, float, float] = (0.0, 0.0, 0.0)

    def per_host_ms(self, seconds: float) -> float:
        return seconds / self.hosts * 1000

    def busy(self, which: int) -> float:
        """CPU seconds of parent (0), workers (1), scheduler (2) minus what the idle backend
        spends in as long (what the hosts cost, whatever the wall-clock time)."""
        total = (self.parent_cpu_s, self.worker_cpu_s, self.scheduler_cpu_s)[which]
        return max(total - self.idle_rates[which] * self.wall_s, 0.0)


def _cpu(exclude: Tuple[int, ...], scheduler_pid: Optional[int],
         start: bool = False) -> Tuple[float, Dict[int, float], float]:
    """This process's CPU seconds, every descendant's, the scheduler's. Reading /proc costs this
    process tens of milliseconds: at the ``start`` of a window its own time is read after the
    scan, at the end before it, so that no window counts the benchmark's own accounting."""
    own = time.process_time()
    others = descendants_cpu(exclude), cpu_of(scheduler_pid) if scheduler_pid else 0.0
    return (time.process_time() if start else own), others[0], others[1]


def _spent(before: Tuple[float, Dict[int, float], float], exclude: Tuple[int, ...],
           scheduler_pid: Optional[int]) -> Tuple[float, float, float]:
    now = _cpu(exclude, scheduler_pid)
    return now[0] - before[0], delta(now[1], before[1]), now[2] - before[2]


def measure(name: str, tasks: List[HostTask], backend: Backend, func: Callable[[HostTask], HostSummary] = run_host,
            scheduler_pid: Optional[int] = None) -> Measured:
    """Run the fleet as ``memplan fleet`` does (aggregate every host, then print the table and
    totals) and account CPU by process: this one (the parent), every other descendant (workers,
    their nannies, a fork server) but the external scheduler, and the scheduler. Before the
    run, the started backend idles for ``IDLE_S``: its background CPU rate."""
    stats = FleetStats()
    exclude = (scheduler_pid,) if scheduler_pid else ()
    sink = io.StringIO()
    start_cpu = time.process_time()
    with FleetRun(tasks, backend, func=func, stats=stats) as run:
        idle0, idle_wall = _cpu(exclude, scheduler_pid, start=True), time.perf_counter()
        time.sleep(IDLE_S)
        idle = _spent(idle0, exclude, scheduler_pid)
        rates = tuple(x / (time.perf_counter() - idle_wall) for x in idle)
        before, start_wall, main0 = _cpu(exclude, scheduler_pid, start=True), time.perf_counter(), time.thread_time()
        aggregate = FleetAggregate(tasks[0].options)
        answers = {}
        for host in run.results():
            aggregate.add(host)
            answers[host.host] = host
        render_fleet.print_fleet(Console(file=sink, width=200), aggregate.report())
        parent, workers, scheduler = _spent(before, exclude, scheduler_pid)
        main = time.thread_time() - main0
        wall = time.perf_counter() - start_wall
    setup = (time.process_time() - start_cpu) - parent - idle[0]
    if backend.kind == "local" and backend.local_workers(len(tasks)) == 1:
        workers, parent, main = stats.host_cpu_s, parent - stats.host_cpu_s, main - stats.host_cpu_s
    return Measured(name, len(tasks), wall, setup, parent, workers, scheduler, stats.host_cpu_s, stats.batches,
                    answers, main, (rates[0], rates[1], rates[2]))


# ---- an external Dask cluster -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def external_cluster(workers: int) -> Iterator[Tuple[str, int]]:
    """``dask scheduler`` and ``dask worker --nworkers N --nthreads 1`` as an operator starts them
    (with nannies, and Dask's default environment for workers); (address, scheduler pid)."""
    dask = shutil.which("dask", path=os.path.dirname(sys.executable)) or shutil.which("dask")
    if dask is None:
        raise RuntimeError("the dask command is not installed")
    address = f"tcp://127.0.0.1:{_free_port()}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    env = dict(os.environ, PYTHONPATH=ROOT)
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                               "--no-dashboard"], env=env, **quiet)]
    try:
        procs.append(subprocess.Popen([dask, "worker", address, "--nworkers", str(workers), "--nthreads", "1",
                                       "--no-dashboard"], env=env, **quiet))
        from distributed import Client
        with Client(address, timeout=30) as client:
            client.wait_for_workers(workers, timeout=60)
        yield address, procs[0].pid
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def untuned_run_host(task: HostTask) -> HostSummary:
    """``run_host`` as it runs in a ``dask worker`` process without memplan's tuning: the task
    sets back the malloc thresholds the worker's ``MALLOC_TRIM_THRESHOLD_`` gives for its host,
    and memplan's tuning afterwards (the worker process stays tuned for the runs that follow)."""
    libc = ctypes.CDLL(None)
    libc.mallopt(worker.M_MMAP_THRESHOLD, 128 << 10)  # glibc's default, no longer dynamic
    libc.mallopt(worker.M_TRIM_THRESHOLD, int(os.environ.get("MALLOC_TRIM_THRESHOLD_", 128 << 10)))
    try:
        return run_host(task)
    finally:
        libc.mallopt(worker.M_MMAP_THRESHOLD, worker.TUNED_MMAP_THRESHOLD)
        libc.mallopt(worker.M_TRIM_THRESHOLD, worker.TUNED_TRIM_THRESHOLD)


def worker_trim_threshold(address: str) -> Optional[str]:
    from distributed import Client
    with Client(address, timeout=30) as client:
        values = set(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values())
    return ", ".join(sorted(str(v) for v in values))


# ---- report -----------------------------------------------------------------------------


def print_table(runs: List[Measured], reference: Dict[str, HostSummary]) -> None:
    """CPU milliseconds per host: in the task (the host's own work), by the worker-side
    processes, by the parent, by the external scheduler; raw, and minus the backend's idle
    background (``busy``: what more hosts cost; the background is per second, not per host)."""
    print(f"{'backend':38} {'wall s':>6} {'task':>6} {'workers':>8} {'parent':>7} {'main':>6} {'sched':>6} "
          f"{'workers':>8} {'parent':>7} {'sched':>6} {'idle cpu/s':>17} {'tasks':>6} {'set-up':>7}  answers")
    print(f"{'':38} {'':>6} {'ms/host, raw':>37} {'ms/host, busy':>23} {'par/wrk/sch':>17} {'':>6} "
          f"{'cpu s':>7}")
    for m in runs:
        ms = [m.per_host_ms(x) for x in (m.host_cpu_s, m.worker_cpu_s, m.parent_cpu_s, m.main_cpu_s,
                                          m.scheduler_cpu_s, m.busy(1), m.busy(0), m.busy(2))]
        rates = "/".join(f"{r:.2f}" for r in m.idle_rates)
        same = "identical" if m.answers == reference else "DIFFERENT"
        print(f"{m.name:38} {m.wall_s:6.1f} {ms[0]:6.1f} {ms[1]:8.1f} {ms[2]:7.2f} {ms[3]:6.2f} {ms[4]:6.2f} "
              f"{ms[5]:8.1f} {ms[6]:7.2f} {ms[7]:6.2f} {rates:>17} {m.batches:6} {m.startup_cpu_s:7.2f}  {same}")


def print_task_costs(batched: Measured, single: Measured, hosts: int) -> None:
    """Dask's cost per task, by process: the difference between one host per task and memplan's
    batches over the difference in tasks (the hosts' work is the same in both runs); then that
    cost as a share of the hosts' work, with batches and without."""
    tasks = single.batches - batched.batches
    names = ("parent", "workers", "scheduler")
    costs = [(single.busy(i) - batched.busy(i) - (single.host_cpu_s - batched.host_cpu_s) * (i == 1)) / tasks
             for i in range(3)]
    print(f"Dask cost per task ({hosts} 1 GiB hosts, {single.batches} tasks of 1 host vs {batched.batches} "
          f"batches): " + ", ".join(f"{n} {c * 1000:.2f} ms" for n, c in zip(names, costs)))
    for m in (batched, single):
        share = sum(costs) * m.batches / m.host_cpu_s
        print(f"  {m.name.split(', ')[1]:18}: {m.batches:5} tasks, {m.per_host_ms(m.host_cpu_s):.2f} ms of work per "
              f"host, task cost {share * 100:5.1f} % of the work (target < 5 %); everything beyond the work, "
              f"busy: {overhead(m) * 100:.1f} %")


def print_parent_split(reference: Measured) -> None:
    """The parent's work per host, piece by piece, on the reference answers (same run)."""
    hosts = list(reference.answers.values())
    blobs = [pickle.dumps(h) for h in hosts]
    sink = io.StringIO()
    gc.collect()  # the collection the earlier runs owe would land in one of the pieces

    def per_host(work: Callable[[], object], repeat: int = 5) -> float:
        start = time.process_time()
        for _ in range(repeat):
            work()
        return (time.process_time() - start) / repeat / len(hosts) * 1000

    def aggregate() -> FleetAggregate:
        agg = FleetAggregate(FleetOptions())
        for h in hosts:
            agg.add(h)
        return agg

    report = aggregate().report()
    parts = {"unpickle an answer": per_host(lambda: [pickle.loads(b) for b in blobs]),
             "aggregate": per_host(aggregate),
             "--jsonl line": per_host(lambda: [render_fleet.write_line(h, sink) for h in hosts]),
             "table row": per_host(lambda: render_fleet.print_fleet(Console(file=sink, width=200), report), 2)}
    work = reference.per_host_ms(reference.host_cpu_s)
    print("parent work per host: " + ", ".join(f"{name} {ms:.3f} ms (1/{work / ms:.0f} of a host)"
                                               for name, ms in parts.items()))


def overhead(m: Measured) -> float:
    """Every busy CPU second beyond the hosts' own work, as a share of that work."""
    return (m.busy(0) + m.busy(1) + m.busy(2) - m.host_cpu_s) / m.host_cpu_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--small-hosts", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    try:
        import distributed  # noqa: F401
        has_dask = True
    except ImportError:
        has_dask = False
        print("dask.distributed not installed: local backends only (pip install 'memplan[fleet]')")
    with tempfile.TemporaryDirectory(prefix="memplan-fleet-bench-") as root:
        big, small = os.path.join(root, "big"), os.path.join(root, "small")
        os.makedirs(big)
        os.makedirs(small)
        for i in range(args.hosts):
            with open(os.path.join(big, f"bench-{i:04d}.toml"), "w") as handle:
                handle.write(host_profile(i))
        for i in range(args.small_hosts):
            with open(os.path.join(small, f"small-{i:04d}.toml"), "w") as handle:
                handle.write(small_profile(i))
        tasks = make_tasks([big], FleetOptions())
        small_tasks = make_tasks([small], FleetOptions())
        n = args.workers
        print(f"{args.hosts} generated 64 GiB hosts (512 memory blocks each), {cpu_count()} CPUs, "
              f"python {sys.version.split()[0]}, {os.getloadavg()[0]:.1f} load average")
        reference_run = measure("this process (reference)", tasks, Backend(workers=1))
        reference = reference_run.answers
        runs = [reference_run, measure(f"local pool, {n} workers", tasks, Backend(workers=n))]
        small_runs = [measure(f"small hosts, local pool, {n} workers", small_tasks, Backend(workers=n))]
        if has_dask:
            runs.append(measure(f"Dask LocalCluster, {n} workers", tasks, Backend("dask", workers=n)))
            with external_cluster(n) as (address, scheduler_pid):
                runs.append(measure(f"dask worker x{n} (external scheduler)", tasks,
                                    Backend("dask", scheduler=address), scheduler_pid=scheduler_pid))
                untuned = measure("  same, without malloc tuning", tasks, Backend("dask", scheduler=address),
                                  func=untuned_run_host, scheduler_pid=scheduler_pid)
                runs.append(untuned)
                trim = worker_trim_threshold(address)
                batched = measure("small hosts, batched", small_tasks, Backend("dask", scheduler=address),
                                  scheduler_pid=scheduler_pid)
                dask_run.DASK_BATCH_S, target = 0.0, dask_run.DASK_BATCH_S  # one host per task
                try:
                    single = measure("small hosts, one per task", small_tasks, Backend("dask", scheduler=address),
                                     scheduler_pid=scheduler_pid)
                finally:
                    dask_run.DASK_BATCH_S = target
                small_runs.append(batched)
        print()
        print_table(runs, reference)
        errors = sum(1 for h in reference.values() if h.error)
        print(f"errors: {errors}")
        print_parent_split(reference_run)
        pool = runs[1]
        print(f"small hosts ({args.small_hosts} x 1 GiB, a few ms each): " + "; ".join(
            f"{m.name.split(', ', 1)[1] if ', ' in m.name else m.name}: {m.per_host_ms(m.host_cpu_s):.2f} ms of work, "
            f"parent {m.per_host_ms(m.busy(0)):.3f} ms busy per host, {m.batches} tasks" for m in small_runs))
        for m in runs + small_runs:
            own = m.main_cpu_s / m.busy(1) if m.busy(1) else 0.0
            share = m.busy(0) / m.busy(1) if m.busy(1) else 0.0
            raw = m.parent_cpu_s / m.worker_cpu_s if m.worker_cpu_s else 0.0
            print(f"parent/worker CPU per host, {m.name.strip()}: memplan's own work {own:.4f} "
                  f"(1/{1 / own if own else float('inf'):.0f}); whole parent process {share:.4f} busy "
                  f"(1/{1 / share if share else float('inf'):.0f}), {raw:.4f} raw; target < 1/32 = {1 / 32:.4f}: "
                  f"{'met' if max(own, share) < 1 / 32 else 'NOT met'}")
        if has_dask:
            small_reference = {h.host: h for h in run_tasks(small_tasks, Backend(workers=1))}
            external, untuned = runs[3], runs[4]
            print(f"dask worker processes export MALLOC_TRIM_THRESHOLD_={trim}")
            print(f"CPU per host in the task, external dask worker / local pool: "
                  f"{external.host_cpu_s / pool.host_cpu_s:.2f} with malloc tuning, "
                  f"{untuned.host_cpu_s / pool.host_cpu_s:.2f} without "
                  f"(worker processes, busy: {external.busy(1) / pool.busy(1):.2f} and "
                  f"{untuned.busy(1) / pool.busy(1):.2f})")
            print_task_costs(batched, single, args.small_hosts)
            same = batched.answers == single.answers == small_reference
            print(f"small hosts: answers {'identical' if same else 'DIFFERENT'} to the in-process ones")

if __name__ == "__main__":
    main()
