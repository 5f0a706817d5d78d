"""memplan.fleet.executors: the local process pool and Dask give exactly the in-process answers."""

from __future__ import annotations

import os
import sys

import pytest

from fleet_hosts import dask_scheduler, die_on_gen_1, write_fleet  # noqa: F401  (fixture)
from memplan.core.errors import UsageError
from memplan.fleet.executors import Backend, require_dask, run_tasks
from memplan.fleet.compute import FleetOptions, make_tasks
from memplan.fleet.types import FleetMode


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
    got = by_host(run_tasks(tasks, Backend("dask", workers=1, processes=False)))
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
