"""Stable JSON documents (the scripting contract): snake_case keys, integer bytes, fixed types."""

from __future__ import annotations

import json
from typing import Any, Dict, IO

from memplan import __version__
from memplan.results import BlockVerdict, Culprit, Hazard, LogEntry, PageCounts, SimulationResult


def culprit_dict(culprit: Culprit) -> Dict[str, Any]:
    return {"pfn": culprit.pfn, "kind": culprit.kind.label, "refcount": culprit.refcount}


def pages_dict(pages: PageCounts) -> Dict[str, int]:
    return {
        "total": pages.total, "free": pages.free, "migrated": pages.migrated,
        "skipped_offline": pages.skipped_offline, "dissolved": pages.dissolved, "hwpoison": pages.hwpoison,
        "vmemmap": pages.vmemmap, "holes": pages.holes, "blocking": pages.blocking,
    }


def log_dict(entry: LogEntry) -> Dict[str, Any]:
    return {"level": entry.level.value, "text": entry.text, "pfn": entry.pfn, "function": entry.function,
            "count": entry.count, "repeats": entry.repeats}


def hazard_dict(hazard: Hazard) -> Dict[str, Any]:
    return {"kind": hazard.kind.value, "text": hazard.text, "pfn": hazard.pfn}


def block_dict(v: BlockVerdict) -> Dict[str, Any]:
    """One block of ``simulate --json`` (also embedded by ``diff-semantics``)."""
    out: Dict[str, Any] = {
        "block": v.block,
        "start": v.start,
        "end": v.end,
        "zone": v.zone.value if v.zone else "none",
        "node": v.node,
        "result": v.result.value,
        "errno": v.errno.value if v.errno else None,
        "reason": v.reason.value if v.reason else None,
        "step": v.step.value if v.step else None,
        "culprit": culprit_dict(v.culprit) if v.culprit else None,
        "pages": pages_dict(v.pages),
        "kernel_log": [log_dict(e) for e in v.kernel_log],
        "hazards": [hazard_dict(h) for h in v.hazards],
        "device": v.device,
        "device_state": v.device_state,
    }
    if v.confidence is not None:
        out["confidence"] = v.confidence
        out["blind_spots"] = list(v.blind_spots)
    return out


def simulation_dict(result: SimulationResult) -> Dict[str, Any]:
    s = result.summary
    doc: Dict[str, Any] = {
        "memplan": __version__,
        "profile": result.profile,
        "machine": result.machine,
        "semantics": result.semantics,
        "blocks": [block_dict(b) for b in result.blocks],
        "summary": {"blocks": s.blocks, "offlined": s.offlined, "fails": s.fails, "hangs": s.hangs,
                    "offlinable_bytes": s.offlinable_bytes},
        "warnings": list(result.warnings),
    }
    if result.semantics_reason:
        doc["semantics_reason"] = result.semantics_reason
    return doc


def write(doc: Dict[str, Any], stream: IO[str]) -> None:
    json.dump(doc, stream, indent=1)
    stream.write("\n")
