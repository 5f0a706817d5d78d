"""``memplan fleet`` throughput: hosts per second on generated 64 GiB hosts.

Generates N profiles (default 200) of 64 GiB machines — 16 GiB ZONE_NORMAL with page cache,
anonymous memory and a little slab in every block, 48 GiB ZONE_MOVABLE with THP, and on every
fourth host a few long-term pinned pages — then runs the same simulation of every host

* in this process (``--workers 1``),
* on the local process pool with 2 workers (``--workers 2``),
* on a 2-worker Dask LocalCluster (``--dask-local 2``; skipped without dask.distributed),

and prints wall time (pool / cluster start-up included, as a user sees it), hosts per second
and the speed-up over one worker, and checks that every backend gave identical summaries.

Run from the repository root:  python benchmarks/fleet_bench.py [--hosts 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from memplan.fleet.compute import FleetOptions, make_tasks  # noqa: E402
from memplan.fleet.executors import Backend, cpu_count, run_tasks  # noqa: E402
from memplan.fleet.types import HostSummary  # noqa: E402


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


def timed(tasks, backend: Backend) -> Tuple[float, Dict[str, HostSummary]]:
    start = time.perf_counter()
    out = {h.host: h for h in run_tasks(tasks, backend)}
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memplan-fleet-bench-") as root:
        for i in range(args.hosts):
            with open(os.path.join(root, f"bench-{i:04d}.toml"), "w") as handle:
                handle.write(host_profile(i))
        tasks = make_tasks([root], FleetOptions())
        runs: List[Tuple[str, Backend]] = [("local, 1 worker (in process)", Backend(workers=1)),
                                           ("local pool, 2 workers", Backend(workers=2))]
        try:
            import distributed  # noqa: F401
            runs.append(("Dask LocalCluster, 2 workers", Backend("dask", workers=2)))
        except ImportError:
            print("dask.distributed not installed: no LocalCluster run (pip install 'memplan[fleet]')")
        print(f"{args.hosts} generated 64 GiB hosts (512 memory blocks each), {cpu_count()} CPUs, "
              f"python {sys.version.split()[0]}")
        print(f"{'backend':34} {'seconds':>8} {'hosts/s':>8} {'speed-up':>9}")
        base: Optional[float] = None
        reference: Optional[Dict[str, HostSummary]] = None
        for name, backend in runs:
            seconds, out = timed(tasks, backend)
            rate = len(out) / seconds
            base = base or rate
            same = "" if reference is None else ("  identical" if out == reference else "  DIFFERENT")
            reference = reference or out
            print(f"{name:34} {seconds:8.1f} {rate:8.2f} {rate / base:8.2f}x{same}")
        errors = sum(1 for h in (reference or {}).values() if h.error)
        print(f"errors: {errors}")


if __name__ == "__main__":
    main()
