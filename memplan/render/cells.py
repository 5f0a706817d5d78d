"""Cell formatters shared by every table renderer (no layout here)."""

from __future__ import annotations

from memplan.core.results import BlockVerdict, Outcome

RESULT_STYLE = {Outcome.OFFLINED: "green", Outcome.FAILS: "red", Outcome.HANGS: "yellow"}


def lsmem_range(v: BlockVerdict) -> str:
    """lsmem's RANGE cell: ``0x%016x-0x%016x`` with an inclusive end."""
    return f"0x{v.start:016x}-0x{v.end:016x}"


def culprit_text(v: BlockVerdict) -> str:
    if v.culprit is None:
        return ""
    return f"{v.culprit.kind.label}@{v.culprit.pfn:#x}"
