"""Small generated fleets for the ``memplan fleet`` tests: profiles of 2-3 GiB machines that
differ by seed (fills, slab, pinned pages, a virtio-mem device on every other host), plus
copies of the real-kernel fixtures."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from typing import Iterator, Sequence

import pytest

from conftest import FIXTURES

#: Real-kernel snapshot trees copied into generated fleets (the fast ones, all with virtio-mem).
FLEET_FIXTURES = ("qemu-6.1-pre", "qemu-6.1-post1", "qemu-6.1-bbm-post1")


def host_profile(i: int) -> str:
    """Host ``i``: 1 GiB ZONE_NORMAL (blocks 0-7) and 1 GiB ZONE_MOVABLE (8-15); slab in
    ZONE_NORMAL on most hosts, pinned pages in ZONE_MOVABLE on every third, a pending signal on
    host 5 (every block fails with -EINTR), a 1 GiB virtio-mem SBM region (512 MiB plugged, a
    few pinned pages in it) on even hosts."""
    slab = 0.0 if i % 4 == 3 else 0.0002 * (1 + i % 3)
    text = f"""
format = 1
[machine]
name = "gen-{i}"
memory_block_size = "128MiB"

[[ram]]
start = "0"
size = "1GiB"
zone = "Normal"

[[ram]]
start = "1GiB"
size = "1GiB"
zone = "Movable"

[[fill]]
blocks = "0-7"
seed = {100 + i}
anon = 0.{2 + i % 3}
file = 0.2
slab = {slab}

[[fill]]
blocks = "8-15"
seed = {200 + i}
anon = 0.3
file = 0.{1 + i % 4}
"""
    if i % 3 == 0:
        text += """
[[pages]]
pfn = "0x{:x}"
count = 8
kind = "pinned"
""".format(0x48000 + 0x8000 * (i % 5))
    if i == 5:
        text += """
[environment]
signal_pending = true
"""
    if i % 2 == 0:
        text += f"""
[[virtio_mem]]
id = "vmem0"
addr = "0x80000000"
region_size = "1GiB"
block_size = "2MiB"
plugged_size = "512MiB"
online = "movable"

[[fill]]
blocks = "vmem0"
seed = {300 + i}
anon = 0.4

[[pages]]
pfn = "0x{0x8c000 + 0x1000 * (i % 3):x}"
count = 4
kind = "pinned"
"""
    return text


def big_host_profile(i: int, size_gib: int = 1024) -> str:
    """A ``size_gib`` GiB host (one 128 MiB block per GiB... times 8) that takes about a CPU
    second per TiB to judge: for runs that must still be going when a signal arrives."""
    blocks = size_gib * 8
    return f"""
format = 1
[machine]
name = "big-{i}"
memory_block_size = "128MiB"

[[ram]]
start = "0"
size = "{size_gib}GiB"
zone = "Movable"

[[fill]]
blocks = "0-{blocks - 1}"
seed = {i}
anon = 0.3
file = 0.2
"""


def write_big_fleet(root: str, hosts: int = 8, size_gib: int = 1024) -> str:
    os.makedirs(root, exist_ok=True)
    for i in range(hosts):
        with open(os.path.join(root, f"big-{i}.toml"), "w") as handle:
            handle.write(big_host_profile(i, size_gib))
    return root


def write_fleet(root: str, hosts: int = 6, fixtures: Sequence[str] = FLEET_FIXTURES) -> str:
    """``root/profiles/gen-N.toml`` and ``root/snapshots/<fixture>`` (copied trees)."""
    os.makedirs(os.path.join(root, "profiles"), exist_ok=True)
    for i in range(hosts):
        with open(os.path.join(root, "profiles", f"gen-{i}.toml"), "w") as handle:
            handle.write(host_profile(i))
    for name in fixtures:
        shutil.copytree(os.path.join(FIXTURES, name), os.path.join(root, "snapshots", name))
    return root


def _gen_1(task) -> bool:
    return os.path.basename(task.host) == "gen-1.toml"


def die_on_gen_1(task):
    """A task function whose worker process dies on host gen-1 (``os._exit``, like the OOM
    killer), and that runs ``run_host`` on every other host."""
    from memplan.fleet.compute import run_host
    if _gen_1(task):
        os._exit(9)
    return run_host(task)


def sleep_on_gen_1(task):
    """Host gen-1 sleeps for an hour (a host stuck in a blocking call); the others run."""
    from memplan.fleet.compute import run_host
    if _gen_1(task):
        time.sleep(3600)
    return run_host(task)


def deaf_on_gen_1(task):
    """Host gen-1 blocks SIGALRM, then sleeps for an hour: stuck where no signal handler of
    its own process runs (inside C code, in the kernel); only the parent can end it."""
    from memplan.fleet.compute import run_host
    if _gen_1(task):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(3600)
    return run_host(task)


def spin_on_gen_1(task):
    """Host gen-1 computes forever in Python (a huge host, on a Dask worker thread)."""
    from memplan.fleet.compute import run_host
    if _gen_1(task):
        while True:
            sum(range(1000))
    return run_host(task)


#: What ``stuck_on_gen_1`` waits for (tests set it when done, to free the worker thread).
RELEASE = threading.Event()


def stuck_on_gen_1(task):
    """Host gen-1 waits on a lock inside C code until ``RELEASE`` is set: nothing in its thread
    can interrupt it (an in-process Dask worker thread; only the parent can give it up)."""
    from memplan.fleet.compute import run_host
    if _gen_1(task):
        RELEASE.wait()
    return run_host(task)


def dask_cluster() -> Iterator[str]:
    """A dask.distributed LocalCluster on loopback (2 single-threaded workers in this process,
    reached over TCP); yields its scheduler address (a fixture body: ``yield from``)."""
    distributed = pytest.importorskip(
        "distributed", reason="dask.distributed is not installed (pip install 'memplan[fleet]' or '.[test]')")
    import logging
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, host="127.0.0.1",
                                       protocol="tcp://", dashboard_address=":0", silence_logs=logging.ERROR)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()
