"""The fleet parent's work per host (issue 12.4): what it folds, what it receives, the garbage
collector it keeps off the imported modules. Each shortcut must give the answers of the plain way."""

from __future__ import annotations

import gc
import itertools
import json
import pickle

import pytest
from click.testing import CliRunner

from fleet_hosts import write_fleet
from memplan.cli.app import main
from memplan.core.results import Confidence
from memplan.fleet.aggregate import SUMMED, FleetAggregate
from memplan.fleet.compute import FleetOptions, make_tasks, run_host
from memplan.fleet.executors import Backend, FleetRun, gc_frozen
from memplan.fleet.types import (
    CauseCount,
    ConfidenceBytes,
    DeviceSummary,
    FleetMode,
    FleetTotals,
    HostSummary,
    InputKind,
    ZoneSummary,
    trusts,
)
from memplan.fleet.worker import answers_of, run_batch

GiB = 1 << 30


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> str:
    return write_fleet(str(tmp_path_factory.mktemp("fleet")), hosts=3, fixtures=("qemu-6.1-pre",))


def _hosts(mode: FleetMode):
    """Hosts whose every summed figure differs (primes times the host number), confidence splits
    on all three levels, causes shared and not, an error row."""
    out = []
    for i in range(1, 6):
        figures = {name: (i * p) << 20 for name, p in zip(SUMMED, (2, 3, 5, 7, 11, 13, 17))}
        split = ConfidenceBytes(certain=i % 2 * GiB, likely=(i % 3) * GiB, unknown=(i % 4) * GiB)
        zones = (ZoneSummary("Normal", 8, i, 8 - i, 0, i * GiB, (8 - i) * GiB,
                             (CauseCount("slab", 8 - i, (8 - i) * GiB),)),
                 ZoneSummary("Movable", 8, 8, 0, 0, 8 * GiB, 0,
                             (CauseCount(f"cause-{i % 2}", i, i * GiB),) if i > 2 else ()))
        out.append(HostSummary(host=f"h{i}", input=InputKind.PROFILE, mode=mode, machine=f"m{i}",
                               offlinable_by_confidence=split, zones=zones,
                               warnings=("w",) if i == 3 else (), **figures))
    out.append(HostSummary(host="bad", input=InputKind.INVALID, mode=mode, error="unreadable", asked_bytes=GiB))
    return out


@pytest.mark.parametrize("mode", list(FleetMode))
def test_the_fold_sums_every_figure_and_counts_reaching_hosts_as_reaches_does(mode):
    hosts = _hosts(mode)
    judged = [h for h in hosts if h.error is None]
    for trust in Confidence:
        aggregate = FleetAggregate(FleetOptions(mode, size=None if mode is FleetMode.SIMULATE else GiB), trust)
        for h in hosts:
            aggregate.add(h)
        report = aggregate.report()
        totals = report.totals
        # every FleetTotals field the hosts carry is their sum: no field forgotten in add()
        for name in SUMMED:
            assert getattr(totals, name) == sum(getattr(h, name) for h in judged), name
        assert set(SUMMED) | {"hosts", "errors", "succeeded", "warned", "offlinable_by_confidence"} == \
            set(FleetTotals.__dataclass_fields__)
        assert totals.offlinable_by_confidence == ConfidenceBytes.total_of(h.offlinable_by_confidence for h in judged)
        assert (totals.hosts, totals.errors, totals.warned) == (6, 1, 1)
        assert totals.succeeded == sum(h.reaches(trust) for h in hosts)
        counted = [sum(getattr(h.offlinable_by_confidence, level.value) for level in Confidence
                       if trusts(trust, level)) for h in judged]
        assert [h.offlinable_by_confidence.trusted(trust) for h in judged] == counted
        zones = {z.zone: (z.hosts, z.blocks, z.offlinable_bytes, z.blocked_bytes) for z in report.zones}
        assert zones == {"Normal": (5, 40, 15 * GiB, 25 * GiB), "Movable": (5, 40, 40 * GiB, 0)}
        causes = {(c.cause, c.zone): (c.hosts, c.blocks, c.bytes) for c in report.causes}
        assert causes == {("slab", "Normal"): (5, 25, 25 * GiB), ("cause-1", "Movable"): (2, 8, 8 * GiB),
                          ("cause-0", "Movable"): (1, 4, 4 * GiB)}


def test_the_trusted_memory_of_every_split_and_level():
    for certain, likely, unknown in itertools.product((0, 1, 2), repeat=3):
        split = ConfidenceBytes(certain, likely, unknown)
        assert split.trusted(Confidence.CERTAIN) == certain
        assert split.trusted(Confidence.LIKELY) == certain + likely
        assert split.trusted(Confidence.UNKNOWN) == certain + likely + unknown


def test_a_dask_batch_travels_as_one_bytes_object_with_the_same_answers(fleet):
    tasks = make_tasks([fleet], FleetOptions())
    blob = run_batch(run_host, tasks, None)
    assert isinstance(blob, bytes)
    answers = answers_of(blob)
    assert [h for h, _ in answers] == [run_host(t) for t in tasks]
    assert all(cpu_s > 0 for _, cpu_s in answers)
    device = DeviceSummary("virtio-mem0", "sbm", 2 * GiB, GiB, GiB, "reached", None)
    unplug = HostSummary(host="u", input=InputKind.SYSROOT, mode=FleetMode.UNPLUG, devices=(device,),
                         warnings=("x",), asked_bytes=GiB, achieved_bytes=GiB)
    assert answers_of(pickle.dumps([(unplug, 0.5)])) == [(unplug, 0.5)]


def test_the_garbage_collector_skips_older_objects_during_a_run_and_nothing_stays_frozen(fleet):
    tasks = make_tasks([fleet], FleetOptions())
    assert gc.get_freeze_count() == 0
    with FleetRun(tasks, Backend(workers=1)) as run:
        assert gc.get_freeze_count() > 0
        answered = list(run.results())
    assert gc.get_freeze_count() == 0 and len(answered) == len(tasks)
    with gc_frozen():
        with FleetRun(tasks, Backend(workers=1)) as run:
            list(run.results())
        assert gc.get_freeze_count() > 0  # the outer block still holds
    assert gc.get_freeze_count() == 0
    with pytest.raises(KeyError):
        with FleetRun(tasks, Backend(workers=1)):
            raise KeyError("x")
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("args", [[], ["--json"], ["--jsonl"], ["--plan-size", "256M", "--check"]])
def test_the_fleet_command_leaves_nothing_frozen(fleet, args):
    result = CliRunner().invoke(main, ["fleet", fleet, "--workers", "1", *args])
    assert result.exit_code in (0, 1, 64), result.output
    assert gc.get_freeze_count() == 0
    if "--json" in args:
        assert json.loads(result.stdout)["summary"]["hosts"] == 4
