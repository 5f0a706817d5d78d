"""memplan.render.fleet: stable JSON keys and types, the table, cause lines, the progress bar."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from memplan.core.model import VirtioMemMode
from memplan.fleet.aggregate import fleet_report
from memplan.fleet.compute import FleetOptions
from memplan.fleet.types import (
    CauseCount,
    ConfidenceBytes,
    DeviceSummary,
    FleetMode,
    HostSummary,
    InputKind,
    ZoneSummary,
)
from memplan.plans.types import UnplugStop
from memplan.render import fleet as render_fleet

GiB = 1 << 30

HOST_KEYS = {"host": str, "source_kind": (str, type(None)), "mode": str, "machine": (str, type(None)),
             "semantics": (str, type(None)), "error": (str, type(None)), "blocks": int, "offlined": int, "fails": int,
             "hangs": int,
             "memory_bytes": int, "offlinable_bytes": int, "offlinable_bytes_by_confidence": dict,
             "unreclaimable_bytes": int, "blocked_bytes": int, "asked_bytes": int, "achieved_bytes": int,
             "achieved_bytes_by_confidence": dict, "unknown_blocks": int, "zones": list, "devices": list,
             "warnings": list}


def _hosts():
    normal = ZoneSummary("Normal", 8, 4, 3, 1, 4 * (128 << 20), 4 * (128 << 20),
                         (CauseCount("slab", 3, 3 * (128 << 20)), CauseCount("pinned", 1, 128 << 20)))
    good = HostSummary(host="h1.toml", input=InputKind.PROFILE, mode=FleetMode.UNPLUG, machine="h1",
                       semantics="refcount", blocks=8, offlined=4, fails=3, hangs=1, memory_bytes=GiB,
                       offlinable_bytes=GiB // 2, offlinable_by_confidence=ConfidenceBytes(GiB // 4, GiB // 4, 0),
                       unreclaimable_bytes=GiB // 2, blocked_bytes=GiB // 2, unknown_blocks=1,
                       asked_bytes=GiB, achieved_bytes=GiB // 2, zones=(normal,),
                       devices=(DeviceSummary("vmem0", VirtioMemMode.SBM, GiB, GiB // 2, GiB, UnplugStop.BUSY,
                                              "EBUSY"),))
    bad = HostSummary(host="snap/h2", input=InputKind.SYSROOT, mode=FleetMode.UNPLUG,
                      error="snap/h2/sys/devices/system/memory/block_size_bytes: missing")
    return [good, bad]


def _unreadable():
    """An INPUT that is neither a profile nor a tree."""
    return HostSummary(host="nowhere", input=InputKind.INVALID, mode=FleetMode.UNPLUG, asked_bytes=GiB,
                       error="nowhere: no such file or directory")


def test_host_lines_have_stable_keys_and_types():
    for host in [*_hosts(), _unreadable()]:
        stream = io.StringIO()
        render_fleet.write_line(host, stream)
        text = stream.getvalue()
        assert text.endswith("\n") and text.count("\n") == 1
        doc = json.loads(text)
        assert set(doc) == set(HOST_KEYS)
        for key, kind in HOST_KEYS.items():
            assert isinstance(doc[key], kind) and not isinstance(doc[key], bool), key
        for key in ("offlinable_bytes_by_confidence", "achieved_bytes_by_confidence"):
            assert list(doc[key]) == ["certain", "likely", "unknown"]
            assert all(type(v) is int for v in doc[key].values())
    kinds = [json.loads(json.dumps(render_fleet.host_dict(h)))["source_kind"] for h in [*_hosts(), _unreadable()]]
    assert kinds == ["profile", "sysroot", None]  # an INPUT that is neither: null, as every unknown
    good = json.loads(json.dumps(render_fleet.host_dict(_hosts()[0])))
    assert good["zones"][0]["causes"] == [{"cause": "slab", "blocks": 3, "bytes": 3 * (128 << 20)},
                                          {"cause": "pinned", "blocks": 1, "bytes": 128 << 20}]
    assert good["devices"] == [{"device": "vmem0", "mode": "sbm", "plugged_before_bytes": GiB,
                                "plugged_after_bytes": GiB // 2, "asked_bytes": GiB, "achieved_bytes": GiB // 2,
                                "stop": "busy", "errno": "EBUSY"}]


def test_fleet_document_and_cause_lines():
    report = fleet_report(_hosts(), FleetOptions(FleetMode.UNPLUG, size=GiB))
    doc = render_fleet.fleet_dict(report)
    assert [h["host"] for h in doc["hosts"]] == ["h1.toml", "snap/h2"]
    assert doc["summary"]["errors"] == 1 and doc["summary"]["asked_bytes"] == GiB
    assert doc["causes"][0] == {"cause": "slab", "zone": "Normal", "hosts": 1, "blocks": 3,
                                "bytes": 3 * (128 << 20), "share": 0.75}
    assert render_fleet.cause_text(report.causes[0]) == "1 host: slab in ZONE_NORMAL"


def test_table_lists_hosts_error_rows_totals_and_causes():
    report = fleet_report(_hosts(), FleetOptions(FleetMode.UNPLUG, size=GiB))
    console = Console(file=io.StringIO(), width=220, color_system=None)
    render_fleet.print_fleet(console, report, "this process: 2 hosts in 0.1 s (20.0 hosts/s)")
    out = console.file.getvalue()
    assert "error: snap/h2/sys/devices/system/memory/block_size_bytes: missing" in out
    assert "slab in Normal (384M)" in out
    assert "Hosts:              2 (1 judged, 1 error)" in out
    assert "Asked:              1G (unplug by 1G from every virtio-mem device on 1 host)" in out
    assert "Hosts reaching it:  0 of 2 (counting certain or likely memory)" in out
    assert "  by confidence:    certain 256M, likely 256M, unknown 0B" in out
    assert "Unknown blocks:     1 (verdicts the inputs cannot decide)" in out
    assert "slab in ZONE_NORMAL" in out and "75.0%" in out


def test_progress_bar_shows_done_total_rate_and_eta():
    console = Console(file=io.StringIO(), width=120, force_terminal=True, color_system=None)
    with render_fleet.progress_bar(console) as bar:
        task = bar.add_task("fleet", total=5)
        bar.advance(task)
        bar.advance(task)
        bar.refresh()
        out = console.file.getvalue()
    assert "2/5" in out and "hosts/s" in out and "ETA" in out


@pytest.mark.parametrize("mode, size", [(FleetMode.SIMULATE, None), (FleetMode.PLAN, GiB), (FleetMode.UNPLUG, GiB)])
def test_summary_has_the_confidence_split_and_unknown_blocks_in_every_mode(mode, size):
    """Every mode's summary splits the memory by confidence and counts unknown blocks, 0 too."""
    zone = ZoneSummary("Movable", 8, 8, 0, 0, GiB, 0)
    host = HostSummary(host="p.toml", input=InputKind.PROFILE, mode=mode, machine="p", semantics="refcount",
                       blocks=8, offlined=8, memory_bytes=GiB, offlinable_bytes=GiB,
                       offlinable_by_confidence=ConfidenceBytes(GiB, 0, 0), asked_bytes=size or 0,
                       achieved_bytes=GiB if size else 0, zones=(zone,))
    lines = render_fleet.summary_lines(fleet_report([host], FleetOptions(mode, size=size)))
    assert "  by confidence:    certain 1G, likely 0B, unknown 0B" in lines
    assert "Unknown blocks:     0 (verdicts the inputs cannot decide)" in lines

