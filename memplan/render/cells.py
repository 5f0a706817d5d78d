"""Cell formatters shared by every table renderer."""

from __future__ import annotations

from typing import Iterable, Optional

from memplan.core.results import BlockVerdict, Confidence, Outcome

RESULT_STYLE = {Outcome.OFFLINED: "green", Outcome.FAILS: "red", Outcome.HANGS: "yellow"}
_RANK = {Confidence.CERTAIN: 0, Confidence.LIKELY: 1, Confidence.UNKNOWN: 2}


def lsmem_range(v: BlockVerdict) -> str:
    """lsmem's RANGE cell: ``0x%016x-0x%016x`` with an inclusive end."""
    return f"0x{v.start:016x}-0x{v.end:016x}"


def culprit_text(v: BlockVerdict) -> str:
    if v.culprit is None:
        return ""
    return f"{v.culprit.kind.label}@{v.culprit.pfn:#x}"


def confidence_text(confidence: Optional[Confidence]) -> str:
    """A verdict's confidence (a verdict without one is about an exact input: certain)."""
    return (confidence or Confidence.CERTAIN).value


def worst_confidence(confidences: Iterable[Optional[Confidence]]) -> Confidence:
    """The least certain of some verdicts' confidences (``certain`` for none)."""
    return max((c or Confidence.CERTAIN for c in confidences), key=_RANK.__getitem__, default=Confidence.CERTAIN)
