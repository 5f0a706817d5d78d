"""JSON documents of ``memplan plan`` and ``memplan unplug`` (stable keys, integer bytes)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

from memplan import __version__
from memplan.core.model import VirtioMemMode
from memplan.core.results import Confidence
from memplan.core.source import InputSource
from memplan.plans.types import (
    AUTO_MOVABLE_RATIO,
    RETRY_MAX_S,
    MemoryLeft,
    PlanResult,
    SweepResult,
    UnitCulprit,
    UnplugBlock,
    UnplugResult,
)
from memplan.render.json import block_dict


def _by_confidence(split: Dict[Confidence, int]) -> Dict[str, int]:
    """``{"certain": N, "likely": N, "unknown": N}`` (every level, summing to the total)."""
    return {level.value: split.get(level, 0) for level in Confidence}


def left_dict(left: MemoryLeft) -> Dict[str, Any]:
    """Free and present memory of the online blocks, per zone and node and in total; every
    ``free_bytes`` is null when the input holds no page data (``MemoryLeft.free_known``)."""
    def free(n: int) -> Optional[int]:
        return n if left.free_known else None

    return {
        "free_bytes": free(left.free_bytes),
        "total_bytes": left.total_bytes,
        "nodes": [{"node": node, "free_bytes": free(nfree), "total_bytes": total}
                  for node, (nfree, total) in left.nodes().items()],
        "zones": [{"node": z.node, "zone": z.zone.value if z.zone else "none", "free_bytes": free(z.free_bytes),
                   "total_bytes": z.total_bytes} for z in left.zones],
        "movable_bytes": left.movable_bytes,
        "kernel_bytes": left.kernel_bytes,
        "movable_ratio_percent": left.movable_ratio_percent,
        "auto_movable_ratio": AUTO_MOVABLE_RATIO,
        "ratio_exceeded": left.ratio_exceeded,
    }


def plan_dict(result: PlanResult, source: InputSource) -> Dict[str, Any]:
    return {
        "memplan": __version__,
        **source.fields(),
        "machine": result.machine,
        "semantics": result.semantics,
        "block_size": result.block_size,
        "asked_bytes": result.asked_bytes,
        "achieved_bytes": result.achieved_bytes,
        "achieved_bytes_by_confidence": _by_confidence(result.achieved_bytes_by_confidence),
        "zone": result.zone,
        "candidates": result.candidates,
        "attempts": [block_dict(a) for a in result.attempts],
        "offlined": list(result.offlined),
        "skip_hangs": result.skip_hangs,
        "hang_block": result.hang.block if result.hang is not None else None,
        "end": result.end_line,
        "left": left_dict(result.left),
        "warnings": list(result.warnings),
    }


def culprit_dict(c: UnitCulprit, unit_key: str) -> Dict[str, Any]:
    return {
        unit_key: c.unit,
        "errno": c.errno.value,
        "step": c.step,
        "pfn": c.pfn,
        "kind": c.kind.label if c.kind is not None else None,
        "refcount": c.refcount,
        "attempts": c.attempts,
    }


def unplug_block_dict(b: UnplugBlock, mode: VirtioMemMode) -> Dict[str, Any]:
    out: Dict[str, Any] = {
        "block": b.block,
        "memory_blocks": list(b.memory_blocks),
        "zone": b.zone.value if b.zone else None,
        "state_before": b.state_before,
        "state_after": b.state_after,
        "visited": b.visited,
    }
    if mode is VirtioMemMode.SBM:
        out["unplugged_subblocks"] = list(b.unplugged_units)
        out["plugged_subblocks_left"] = list(b.plugged_units_left)
        out["culprits"] = [culprit_dict(c, "subblock") for c in b.culprits]
    else:
        out["big_block"] = b.block
        out["unplugged"] = bool(b.unplugged_units)
        out["culprits"] = [culprit_dict(c, "section") for c in b.culprits]
    out["removal"] = [block_dict(v) for v in b.removal]
    out["confidence"] = b.confidence.value
    out["blind_spots"] = list(b.blind_spots)
    return out


def _device_header(result: Union[UnplugResult, SweepResult], source: InputSource) -> Dict[str, Any]:
    """The keys ``unplug`` and ``unplug --sweep`` documents start with."""
    return {
        "memplan": __version__,
        **source.fields(),
        "machine": result.machine,
        "semantics": result.semantics,
        "device": result.device,
        "mode": result.mode.value,
        "unit_bytes": result.unit_size,
    }


def unplug_dict(result: UnplugResult, source: InputSource) -> Dict[str, Any]:
    return {
        **_device_header(result, source),
        "device_block_bytes": result.device_block_size,
        "requested_bytes": result.requested_bytes,
        "plugged_before_bytes": result.plugged_before_bytes,
        "plugged_after_bytes": result.plugged_after_bytes,
        "asked_bytes": result.asked_bytes,
        "achieved_bytes": result.achieved_bytes,
        "achieved_bytes_by_confidence": _by_confidence(result.achieved_bytes_by_confidence),
        "stop": result.stop.value,
        "errno": result.errno.value if result.errno else None,
        "blocks": [unplug_block_dict(b, result.mode) for b in result.blocks],
        "runs": [{"run": r.run, "at_seconds": r.at_seconds, "trigger": r.trigger.value,
                  "errno": r.errno.value if r.errno else None, "unplugged_bytes": r.unplugged_bytes}
                 for r in result.runs],
        "next_retries_seconds": list(result.next_retries),
        "retry_every_seconds": RETRY_MAX_S if result.next_retries else None,
        "left": left_dict(result.left),
        "caveats": list(result.caveats),
        "warnings": list(result.warnings),
    }


def sweep_dict(result: SweepResult, source: InputSource) -> Dict[str, Any]:
    points: List[Dict[str, Any]] = [
        {"requested_bytes": p.requested_bytes, "plugged_after_bytes": p.plugged_after_bytes,
         "achieved_bytes": result.plugged_before_bytes - p.plugged_after_bytes, "stop": p.stop.value,
         "errno": p.errno.value if p.errno else None}
        for p in result.points
    ]
    return {
        **_device_header(result, source),
        "step_bytes": result.step,
        "plugged_before_bytes": result.plugged_before_bytes,
        "floor_bytes": result.floor_bytes,
        "points": points,
        "warnings": list(result.warnings),
    }
