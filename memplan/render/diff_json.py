"""``memplan diff-semantics --json``: the difference document (no rich: ``diff-semantics --json``
imports none; ``memplan.render.diff`` re-exports its functions)."""

from __future__ import annotations

from typing import Any, Dict, Tuple

from memplan import __version__
from memplan.core.source import InputSource
from memplan.core.units import format_block_ranges
from memplan.diff.types import (
    BlockDifference,
    OwnerAnswer,
    OwnerHazard,
    OwnerOutcome,
    SemanticsDiff,
    SidedHazard,
    SiteFinding,
)
from memplan.render.cells import worst_confidence
from memplan.render.json import block_dict, by_confidence_dict


def finding_dict(f: SiteFinding) -> Dict[str, Any]:
    return {"site": f.site.value, "left": f.left, "right": f.right, "pages": f.pages, "kinds": list(f.kinds),
            "pfn": f.pfn}


def sided_hazard_dict(h: SidedHazard) -> Dict[str, Any]:
    return {"side": h.side.value, "semantics": h.semantics, "kind": h.hazard.kind.value, "text": h.hazard.text,
            "pfn": h.hazard.pfn}


def difference_dict(d: BlockDifference) -> Dict[str, Any]:
    return {
        "block": d.block,
        "zone": d.zone.value if d.zone else "none",
        "left": block_dict(d.left),
        "right": block_dict(d.right),
        "changed": list(d.changed),
        # the less certain side's (each side's own is in its block)
        "confidence": worst_confidence((d.left.confidence, d.right.confidence)).value,
        "sites": [s.value for s in d.sites],
        "findings": [finding_dict(f) for f in d.findings],
        "explanation": d.explanation,
        "hazards": [sided_hazard_dict(h) for h in d.hazards],
    }


def _owner_outcome_dict(o: OwnerOutcome) -> Dict[str, Any]:
    return {
        "answer": o.answer, "blocks": o.blocks, "offlinable": o.offlinable, "blocked_by_kind": o.blocked_by_kind,
        "failures": [{"result": r.value, "errno": e, "reason": why, "step": s.value if s else None}
                     for r, e, why, s in o.failures],
    }


def _owner_hazard_dict(h: OwnerHazard, left: str, right: str) -> Dict[str, Any]:
    def side(name: str, blocks: Tuple[int, ...]) -> Dict[str, Any]:
        return {"semantics": name, "blocks": list(blocks), "ranges": format_block_ranges(list(blocks))}
    return {"kind": h.kind.value, "left": side(left, h.left), "right": side(right, h.right)}


def owner_dict(o: OwnerAnswer, left: str, right: str) -> Dict[str, Any]:
    return {
        "kind": o.kind.label,
        "owner": o.owner,
        "pages": o.pages,
        "changes_in": [z.value if z else "none" for z in o.changes_in],
        "note": o.note,
        "hazards": [_owner_hazard_dict(h, left, right) for h in o.hazards],
        "zones": [{"zone": z.zone.value if z.zone else "none", "blocks": z.blocks, "changes": z.changes,
                   "changed_blocks": z.changed_blocks, "step_changed_blocks": z.step_changed_blocks,
                   "left": _owner_outcome_dict(z.left), "right": _owner_outcome_dict(z.right)} for z in o.zones],
    }


def diff_dict(d: SemanticsDiff, source: InputSource) -> Dict[str, Any]:
    s = d.summary
    return {
        "memplan": __version__,
        **source.fields(),
        "machine": d.machine,
        "left": d.left,
        "right": d.right,
        "foreign_ref_dropped": d.foreign_ref_dropped.value,
        "differences": [difference_dict(x) for x in d.differences],
        "owners": [owner_dict(o, d.left, d.right) for o in d.owners],
        "summary": {
            "blocks": s.blocks,
            "differ": s.differ,
            "left": {"semantics": d.left, "offlined": s.left_offlined, "offlinable_bytes": s.left_offlinable_bytes,
                     "offlinable_bytes_by_confidence": by_confidence_dict(s.left_offlinable_by_confidence)},
            "right": {"semantics": d.right, "offlined": s.right_offlined,
                      "offlinable_bytes": s.right_offlinable_bytes,
                      "offlinable_bytes_by_confidence": by_confidence_dict(s.right_offlinable_by_confidence)},
        },
        "warnings": list(d.warnings),
    }
