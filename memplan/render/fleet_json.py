"""``memplan fleet --json`` and ``--jsonl``: the fleet document and its rows (no rich: the JSON
paths import none; ``memplan.render.fleet`` re-exports these names)."""


from __future__ import annotations

import json
from typing import IO, Any, Dict

from memplan import __version__
from memplan.fleet.types import FleetCause, FleetReport, HostSummary, InputKind


def zone_label(zone: str) -> str:
    """``Normal`` -> ``ZONE_NORMAL``; ``none`` (a block spanning zones) -> ``no single zone``."""
    return "no single zone" if zone == "none" else f"ZONE_{zone.upper()}"


def where(cause: str, zone: str, label: bool = True) -> str:
    """``slab in ZONE_NORMAL``; a cause of a block spanning zones stands alone."""
    if zone == "none":
        return cause
    return f"{cause} in {zone_label(zone) if label else zone}"


def cause_text(cause: FleetCause) -> str:
    """``412 hosts: slab in ZONE_NORMAL``."""
    return f"{cause.hosts} host{'s' if cause.hosts != 1 else ''}: {where(cause.cause, cause.zone)}"


# ---- JSON -------------------------------------------------------------------------------


def host_dict(h: HostSummary) -> Dict[str, Any]:
    """One host (a ``--jsonl`` line; an element of ``--json``'s ``hosts``). The same keys and
    types in every row and mode: byte figures and counts are integers (0 in an error row and
    where the mode asks nothing, e.g. ``asked_bytes`` in simulate mode); ``machine``,
    ``semantics`` and ``error`` are strings or null. ``host`` is the INPUT as named and
    ``source_kind`` what it holds, as every command's ``source_kind`` (``profile`` or
    ``sysroot``; null when the INPUT is neither: the row is an error row)."""
    return {
        "host": h.host,
        "source_kind": None if h.input is InputKind.INVALID else h.input.value,
        "mode": h.mode.value,
        "machine": h.machine,
        "semantics": h.semantics,
        "error": h.error,
        "blocks": h.blocks,
        "offlined": h.offlined,
        "fails": h.fails,
        "hangs": h.hangs,
        "memory_bytes": h.memory_bytes,
        "offlinable_bytes": h.offlinable_bytes,
        "offlinable_bytes_by_confidence": h.offlinable_by_confidence.as_dict(),
        "unreclaimable_bytes": h.unreclaimable_bytes,
        "blocked_bytes": h.blocked_bytes,
        "asked_bytes": h.asked_bytes,
        "achieved_bytes": h.achieved_bytes,
        "achieved_bytes_by_confidence": h.achieved_by_confidence.as_dict(),
        "unknown_blocks": h.unknown_blocks,
        "zones": [{"zone": z.zone, "blocks": z.blocks, "offlined": z.offlined, "fails": z.fails, "hangs": z.hangs,
                   "offlinable_bytes": z.offlinable_bytes, "blocked_bytes": z.blocked_bytes,
                   "causes": [{"cause": c.cause, "blocks": c.blocks, "bytes": c.bytes} for c in z.causes]}
                  for z in h.zones],
        "devices": [{"device": d.device, "mode": d.mode.value, "plugged_before_bytes": d.plugged_before_bytes,
                     "plugged_after_bytes": d.plugged_after_bytes, "asked_bytes": d.asked_bytes,
                     "achieved_bytes": d.achieved_bytes, "stop": d.stop.value, "errno": d.errno} for d in h.devices],
        "warnings": list(h.warnings),
    }


def fleet_dict(report: FleetReport) -> Dict[str, Any]:
    """``memplan fleet --json``: ``size_bytes`` and ``device`` echo the options (null when not given)."""
    return {
        "memplan": __version__,
        "mode": report.mode.value,
        "semantics": report.semantics,
        "size_bytes": report.size_bytes,
        "device": report.device,
        "trust": report.trust.value,
        "warnings": list(report.warnings),
        "summary": {
            "hosts": report.totals.hosts,
            "errors": report.errors,
            "succeeded": report.succeeded,
            "memory_bytes": report.memory_bytes,
            "offlinable_bytes": report.offlinable_bytes,
            "offlinable_bytes_by_confidence": report.offlinable_by_confidence.as_dict(),
            "unreclaimable_bytes": report.unreclaimable_bytes,
            "blocked_bytes": report.blocked_bytes,
            "asked_bytes": report.asked_bytes,
            "achieved_bytes": report.achieved_bytes,
            "achieved_bytes_by_confidence": report.achieved_by_confidence.as_dict(),
            "unknown_blocks": report.unknown_blocks,
            "zones": [{"zone": z.zone, "hosts": z.hosts, "blocks": z.blocks, "offlinable_bytes": z.offlinable_bytes,
                       "blocked_bytes": z.blocked_bytes} for z in report.zones],
        },
        "causes": [{"cause": c.cause, "zone": c.zone, "hosts": c.hosts, "blocks": c.blocks, "bytes": c.bytes,
                    "share": round(c.share, 6)} for c in report.causes],
        "hosts": [host_dict(h) for h in report.hosts],
    }


def write_line(host: HostSummary, stream: IO[str]) -> None:
    """One ``--jsonl`` line, flushed at once so a pipeline sees it while the fleet still runs."""
    stream.write(json.dumps(host_dict(host), separators=(",", ":")) + "\n")
    stream.flush()
