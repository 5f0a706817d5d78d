"""memplan.fleet.compute: inputs, per-host summaries (checked against simulate / plan / unplug run on
each host directly), error rows, aggregation and --check."""

from __future__ import annotations

import os
import pickle
from collections import Counter, defaultdict

import pytest

from fleet_hosts import write_fleet
from memplan.core.results import Outcome
from memplan.core.status import ExitStatus
from memplan.engine.simulation import simulate
from memplan.fleet.aggregate import check_fleet, fleet_report
from memplan.fleet.compute import (
    NO_MIGRATION_TARGET,
    FleetOptions,
    HostTask,
    expand_inputs,
    make_tasks,
    run_host,
    verdict_cause,
)
from memplan.fleet.types import CauseCount, ConfidenceBytes, FleetMode, HostSummary, InputKind, ZoneSummary
from memplan.plans.plan import plan
from memplan.plans.unplug import unplug
from memplan.profile.reader import load_profile
from memplan.snapshot.reader import load_snapshot

GiB = 1 << 30
MiB = 1 << 20


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> str:
    return write_fleet(str(tmp_path_factory.mktemp("fleet")))


def _machine(task: HostTask):
    return load_snapshot(task.host) if task.input is InputKind.SYSROOT else load_profile(task.host)


def _zone(v) -> str:
    return v.zone.value if v.zone else "none"


# ---- inputs -----------------------------------------------------------------------------


def test_expand_inputs_detects_profiles_sysroots_folders_and_globs(tmp_path):
    (tmp_path / "a.toml").write_text("format = 1\n")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "dc1" / "host1" / "sys" / "devices" / "system" / "memory").mkdir(parents=True)
    (tmp_path / "dc1" / "host1" / "nested.toml").write_text("")  # inside a sysroot: not a host
    (tmp_path / "dc1" / "host2" / "proc").mkdir(parents=True)
    (tmp_path / "dc1" / "host2" / "proc" / "kpageflags.xz").write_bytes(b"")
    (tmp_path / "dc1" / "b.toml").write_text("")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "c.toml").write_text("")
    (tmp_path / "empty").mkdir()

    got = expand_inputs([str(tmp_path)])
    rel = [(os.path.relpath(p, tmp_path), k) for p, k, e in got]
    assert rel == [("a.toml", InputKind.PROFILE), ("dc1/b.toml", InputKind.PROFILE),
                   ("dc1/host1", InputKind.SYSROOT), ("dc1/host2", InputKind.SYSROOT)]
    assert all(e is None for _, _, e in got)

    # A file is a profile whatever its name; a host named twice counts once; a sysroot given
    # directly is a sysroot; globs are expanded; what names nothing is an error row.
    got = expand_inputs([str(tmp_path / "notes.txt"), str(tmp_path / "a.toml"), str(tmp_path / "dc1" / "host1"),
                         str(tmp_path / "dc1" / "*.toml"), str(tmp_path / "a.toml"), str(tmp_path / "missing"),
                         str(tmp_path / "zz*"), str(tmp_path / "empty")])
    rel = [(os.path.relpath(p, tmp_path), k, e) for p, k, e in got]
    assert rel == [
        ("notes.txt", InputKind.PROFILE, None),
        ("a.toml", InputKind.PROFILE, None),
        ("dc1/host1", InputKind.SYSROOT, None),
        ("dc1/b.toml", InputKind.PROFILE, None),
        ("missing", InputKind.INVALID, "no such file or directory"),
        ("zz*", InputKind.INVALID, "matches no file or directory"),
        ("empty", InputKind.INVALID, "no profile (*.toml) or sysroot in this directory"),
    ]


def test_tasks_ship_paths_and_options_and_summaries_pickle(fleet):
    options = FleetOptions(FleetMode.UNPLUG, "refcount", 512 * MiB, "vmem0")
    tasks = make_tasks([fleet], options)
    assert len(tasks) == 9
    for task in tasks:
        assert os.path.isabs(task.source) and task.options is options
        assert pickle.loads(pickle.dumps(task)) == task
    summary = run_host(tasks[0])
    assert pickle.loads(pickle.dumps(summary)) == summary
    assert len(pickle.dumps(summary)) < 4096  # counters, never page arrays


# ---- one host ---------------------------------------------------------------------------


def test_simulate_summaries_match_simulate_on_each_host(fleet):
    tasks = make_tasks([fleet], FleetOptions())
    seen_causes = set()
    for task in tasks:
        host = run_host(task)
        result = simulate(_machine(task))
        blocks = result.blocks
        s = result.summary
        assert host.error is None
        assert (host.machine, host.semantics) == (result.machine, result.semantics)
        assert (host.blocks, host.offlined, host.fails, host.hangs) == (s.blocks, s.offlined, s.fails, s.hangs)
        assert host.offlinable_bytes == s.offlinable_bytes
        unreclaimable = sum(v.size for v in blocks if v.result is not Outcome.OFFLINED)
        assert host.unreclaimable_bytes == host.blocked_bytes == unreclaimable
        assert host.memory_bytes == s.blocks * 128 * MiB
        assert host.unknown_blocks == sum(1 for v in blocks if v.confidence == "unknown")
        zones = {z.zone: z for z in host.zones}
        per_zone = defaultdict(lambda: Counter())
        for v in blocks:
            c = per_zone[_zone(v)]
            c["blocks"] += 1
            c[v.result.value] += 1
            c["offlinable"] += v.size if v.result is Outcome.OFFLINED else 0
            c["blocked"] += 0 if v.result is Outcome.OFFLINED else v.size
        assert set(zones) == set(per_zone)
        for name, c in per_zone.items():
            z = zones[name]
            assert (z.blocks, z.offlined, z.fails, z.hangs) == (c["blocks"], c["offlined"], c["fails"], c["hangs"])
            assert (z.offlinable_bytes, z.blocked_bytes) == (c["offlinable"], c["blocked"])
            assert sum(x.blocks for x in z.causes) == c["fails"] + c["hangs"]
        # Culprit kinds per zone, straight from the verdicts.
        culprits = {(_zone(v), v.culprit.kind.label) for v in blocks
                    if v.result is not Outcome.OFFLINED and v.culprit is not None}
        causes = {(zone, c.cause) for zone, c in host.causes()}
        assert culprits <= causes | {(z, NO_MIGRATION_TARGET) for z, _ in culprits}
        seen_causes |= {c for _, c in causes}
    # The fleet covers page culprits and reason-only failures.
    assert {"slab", "pinned", "reserved", "memory holes", "spans zones", "signal backoff"} <= seen_causes


def test_plan_summaries_match_plan_on_each_host(fleet):
    size = 512 * MiB  # some hosts reach it, others stop where chmem would hang (measured)
    tasks = make_tasks([os.path.join(fleet, "profiles"), os.path.join(fleet, "snapshots", "qemu-6.1-post1")],
                       FleetOptions(FleetMode.PLAN, size=size))
    statuses = set()
    for task in tasks:
        host = run_host(task)
        result, _ = plan(_machine(task), size)
        assert host.error is None
        assert (host.asked_bytes, host.achieved_bytes) == (size, result.achieved_bytes)
        assert host.unreclaimable_bytes == size - result.achieved_bytes
        assert host.blocks == len(result.attempts)
        assert host.offlined == len(result.offlined)
        assert host.offlinable_bytes == result.achieved_bytes
        assert host.fails == sum(1 for a in result.attempts if a.result is Outcome.FAILS)
        assert host.hangs == sum(1 for a in result.attempts if a.result is Outcome.HANGS)
        assert host.blocked_bytes == sum(a.size for a in result.attempts if a.result is not Outcome.OFFLINED)
        statuses.add(host.succeeded)
    assert statuses == {True, False}


def test_unplug_summaries_match_unplug_on_each_host(fleet):
    by = 512 * MiB
    with_device = {"gen-0.toml", "gen-2.toml", "gen-4.toml"}  # even hosts (fleet_hosts.host_profile)
    tasks = [t for t in make_tasks([fleet], FleetOptions(FleetMode.UNPLUG, size=by))
             if t.input is InputKind.SYSROOT or os.path.basename(t.host) in with_device]
    causes = set()
    for task in tasks:
        host = run_host(task)
        machine = _machine(task)
        (device,) = machine.devices
        result, _ = unplug(machine, None, max(device.plugged_size - by, 0))
        assert host.error is None
        (dev,) = host.devices
        assert (dev.device, dev.mode, dev.stop) == (result.device, result.mode, result.stop)
        assert (dev.plugged_before_bytes, dev.plugged_after_bytes) == (result.plugged_before_bytes,
                                                                       result.plugged_after_bytes)
        assert (host.asked_bytes, host.achieved_bytes) == (by, result.achieved_bytes)
        assert host.offlinable_bytes == result.achieved_bytes
        assert host.unreclaimable_bytes == by - result.achieved_bytes
        plugged_left = sum(len(b.plugged_units_left) for b in result.blocks if b.culprits) * result.unit_size
        assert host.blocked_bytes == plugged_left
        causes |= {c.cause for _, c in host.causes()}
    assert "pinned" in causes  # the pinned pages inside the plugged memory keep sub-blocks plugged


def test_unplug_by_checks_each_device(fleet):
    profile = os.path.join(fleet, "profiles", "gen-0.toml")
    row = run_host(make_tasks([profile], FleetOptions(FleetMode.UNPLUG, size=3 * MiB))[0])
    assert "not a multiple of the device block size of vmem0 (2M)" in row.error
    row = run_host(make_tasks([profile], FleetOptions(FleetMode.UNPLUG, size=2 * MiB, device="vmem9"))[0])
    assert "no virtio-mem device 'vmem9'" in row.error
    row = run_host(make_tasks([os.path.join(fleet, "profiles", "gen-1.toml")],
                              FleetOptions(FleetMode.UNPLUG, size=2 * MiB))[0])
    assert row.error == "gen-1 has no virtio-mem device" and row.machine == "gen-1"


def test_broken_inputs_are_error_rows(tmp_path, fleet):
    bad = tmp_path / "bad.toml"
    bad.write_text("format = 1\n[machine\n")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("format = 1\n[[ram]]\nstart = 0\nsize = '1GiB'\nzone = 'Nowhere'\n")
    tree = tmp_path / "broken-tree" / "sys" / "devices" / "system" / "memory"
    tree.mkdir(parents=True)  # a sysroot without block_size_bytes or kpageflags
    misaligned = make_tasks([os.path.join(fleet, "profiles", "gen-3.toml")],
                            FleetOptions(FleetMode.PLAN, size=100 * MiB))
    tasks = make_tasks([str(bad), str(unknown), str(tmp_path / "broken-tree"), str(tmp_path / "nope")],
                       FleetOptions()) + misaligned
    rows = [run_host(t) for t in tasks]
    errors = [r.error for r in rows]
    assert all(errors), errors
    assert "invalid TOML" in errors[0]
    assert "Nowhere" in errors[1]
    assert "block_size_bytes" in errors[2]
    assert errors[3] == "no such file or directory"
    assert errors[4] == "Size must be aligned to memory block size (128M)"
    assert all(r.blocks == 0 and r.zones == () and not r.succeeded for r in rows)


def test_verdict_cause_names_enomem_migration_failures():
    from memplan.profile import toml
    from memplan.profile.reader import build_machine
    # Two blocks, each 90 % anon: neither has room in the other (simulate judges blocks alone,
    # but the migration targets are the other blocks' free pages).
    doc = toml.loads("""
format = 1
[[ram]]
start = "0"
size = "256MiB"
zone = "Movable"
[[fill]]
blocks = "0-1"
seed = 1
anon = 0.9
""")
    result = simulate(build_machine(doc, "<tight>"))
    assert [v.result for v in result.blocks] == [Outcome.HANGS, Outcome.HANGS]
    assert {verdict_cause(v) for v in result.blocks} == {NO_MIGRATION_TARGET}


# ---- the fleet --------------------------------------------------------------------------


def _host(name: str, unreclaimable: int, causes=(), offlinable: int = 0, error=None, **kw) -> HostSummary:
    zones = tuple(ZoneSummary(zone, 1, 0, 1, 0, 0, sum(b for _, _, b in items),
                              tuple(CauseCount(c, 1, b) for _, c, b in items))
                  for zone, items in _group(causes).items())
    return HostSummary(host=name, input=InputKind.PROFILE, mode=FleetMode.SIMULATE, error=error,
                       unreclaimable_bytes=unreclaimable, blocked_bytes=sum(b for _, _, b in causes),
                       offlinable_bytes=offlinable, offlinable_by_confidence=ConfidenceBytes(certain=offlinable),
                       zones=zones, **kw)


def _group(causes):
    out = defaultdict(list)
    for zone, cause, nbytes in causes:
        out[zone].append((zone, cause, nbytes))
    return out


def test_report_sorts_hosts_and_ranks_causes():
    hosts = [
        _host("a", 1 * GiB, [("Normal", "slab", GiB)], offlinable=GiB),
        _host("b", 3 * GiB, [("Normal", "slab", GiB), ("Movable", "pinned", 2 * GiB)], offlinable=GiB),
        _host("c", 0, error="unreadable"),
        _host("d", 2 * GiB, [("Normal", "slab", 2 * GiB)]),
    ]
    report = fleet_report(hosts, FleetOptions())
    assert [h.host for h in report.hosts] == ["b", "d", "a", "c"]
    assert [(c.cause, c.zone, c.hosts, c.bytes) for c in report.causes] == [
        ("slab", "Normal", 3, 4 * GiB), ("pinned", "Movable", 1, 2 * GiB)]
    assert [round(c.share, 4) for c in report.causes] == [round(4 / 6, 4), round(2 / 6, 4)]
    assert (report.errors, report.unreclaimable_bytes, report.offlinable_bytes) == (1, 6 * GiB, 2 * GiB)
    assert check_fleet(report.totals) is ExitStatus.BAD_INPUT
    ok = fleet_report(hosts[:2], FleetOptions())
    assert check_fleet(ok.totals) is ExitStatus.SUCCESS
    assert check_fleet(fleet_report(hosts[:2] + hosts[3:], FleetOptions()).totals) is ExitStatus.PARTIAL
    assert check_fleet(fleet_report(hosts[3:], FleetOptions()).totals) is ExitStatus.FAILURE


def test_check_counts_hosts_reaching_the_asked_size():
    def host(name, achieved):
        return HostSummary(host=name, input=InputKind.PROFILE, mode=FleetMode.PLAN, asked_bytes=GiB,
                           achieved_bytes=achieved, unreclaimable_bytes=GiB - achieved, offlinable_bytes=achieved,
                           offlinable_by_confidence=ConfidenceBytes(certain=achieved))
    options = FleetOptions(FleetMode.PLAN, size=GiB)
    assert check_fleet(fleet_report([host("a", GiB), host("b", GiB)], options).totals) is ExitStatus.SUCCESS
    # A host that got something but not all counts as not reaching it.
    assert check_fleet(fleet_report([host("a", GiB), host("b", GiB // 2)], options).totals) is ExitStatus.PARTIAL
    assert check_fleet(fleet_report([host("a", GiB // 2), host("b", 0)], options).totals) is ExitStatus.FAILURE
    report = fleet_report([host("a", GiB), host("b", GiB // 2)], options)
    assert (report.asked_bytes, report.achieved_bytes, report.succeeded) == (2 * GiB, GiB + GiB // 2, 1)
