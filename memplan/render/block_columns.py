"""The lsmem-style column sets of ``simulate`` (per ``BlockVerdict``) and ``diff-semantics``
(per ``BlockDifference``), for ``memplan.render.lsmem``."""

from __future__ import annotations

from typing import Any, Optional, Tuple

from memplan.core.model import Errno
from memplan.core.results import BlockVerdict, Outcome, Reason, Step
from memplan.diff.types import BlockDifference
from memplan.render.cells import RESULT_STYLE, culprit_text
from memplan.render.lsmem import Column, ColumnSet, Merge


def _dash(value: Any) -> str:
    if value is None:
        return "-"
    return str(getattr(value, "value", value))


def _result_style(value: Outcome) -> Optional[str]:
    return RESULT_STYLE.get(value)


def _count(name: str, attr: str, help: str, aliases: Tuple[str, ...] = ()) -> Column[BlockVerdict]:
    return Column(name, lambda v: getattr(v.pages, attr), Merge.SUM, help, justify="right", aliases=aliases)


VERDICT_COLUMNS: Tuple[Column[BlockVerdict], ...] = (
    Column("BLOCK", lambda v: v.block, Merge.KEY, "memory block number (N-M when merged)", justify="right"),
    Column("RANGE", lambda v: (v.start, v.end), Merge.RANGE, "physical address range, inclusive end"),
    Column("SIZE", lambda v: v.size, Merge.SUM, "size (lsmem style; integers with --bytes)", justify="right",
           size=True),
    Column("ZONE", lambda v: v.zone.value if v.zone else "none", Merge.SPLIT, "zone (valid_zones; none: spans zones)"),
    Column("NODE", lambda v: v.node, Merge.SPLIT, "NUMA node", justify="right"),
    Column("RESULT", lambda v: v.result, Merge.SPLIT, "offlined, fails or hangs", fmt=_dash, style=_result_style),
    Column("ERRNO", lambda v: v.errno, Merge.SPLIT, "errno the write returns", fmt=_dash),
    Column("REASON", lambda v: v.reason, Merge.SPLIT, "the kernel's reason string (pr_debug)", fmt=_dash, wrap=True),
    Column("STEP", lambda v: v.step, Merge.SPLIT, "offline_pages() step that decides", fmt=_dash),
    _count("FREE", "free", "free (buddy) pages"),
    _count("TO-MIGRATE", "migrated", "pages migrated away", ("MIGRATED",)),
    _count("SKIPPED", "skipped_offline", "PageOffline pages offlining skips"),
    _count("DISSOLVED", "dissolved", "free hugetlb pages dissolved"),
    _count("HWPOISON", "hwpoison", "hwpoisoned pages"),
    _count("VMEMMAP", "vmemmap", "self-hosted memmap pages"),
    _count("HOLES", "holes", "pages that are not System RAM"),
    _count("BLOCKING", "blocking", "pages that keep the block from going offline"),
    _count("PAGES", "total", "pages in the block"),
    Column("CULPRIT", culprit_text, Merge.SPLIT, "the page the kernel names or stops at (kind@pfn)", wrap=True),
    Column("DEVICE", lambda v: v.device, Merge.SPLIT, "virtio-mem device", fmt=_dash),
    Column("DEVICE-STATE", lambda v: v.device_state, Merge.SPLIT, "virtio-mem block state", fmt=_dash),
    Column("HAZARDS", lambda v: ",".join(h.kind.value for h in v.hazards), Merge.SPLIT,
           "hazard kinds beyond the outcome", fmt=lambda s: s or "-"),
    Column("CONFIDENCE", lambda v: v.confidence.value if v.confidence else None, Merge.SPLIT,
           "snapshot verdicts: certain, likely, unknown", fmt=_dash),
)

VERDICT_DEFAULT = ("BLOCK", "RANGE", "SIZE", "ZONE", "RESULT", "ERRNO", "REASON", "STEP", "FREE", "TO-MIGRATE",
                   "SKIPPED", "DISSOLVED", "CULPRIT")


def verdict_columns(confidence: bool = False) -> ColumnSet[BlockVerdict]:
    """``simulate``'s columns; ``CONFIDENCE`` is a default column for snapshot verdicts."""
    return ColumnSet(VERDICT_COLUMNS, VERDICT_DEFAULT + (("CONFIDENCE",) if confidence else ()))


def verdict_text(v: BlockVerdict) -> str:
    """``fails EBUSY isolate "failure to isolate range"``."""
    text = v.result.value
    if v.result is not Outcome.OFFLINED:
        parts = [p for p in (v.errno.value if v.errno else None, v.step.value if v.step else None) if p]
        if parts:
            text += " " + " ".join(parts)
        if v.reason:
            text += f' "{v.reason.value}"'
    return text


#: the verdict fields a diff column shows (outcome, errno, step, reason)
VerdictKey = Tuple[Outcome, Optional[Errno], Optional[Step], Optional[Reason]]


def _verdict_key(v: BlockVerdict) -> VerdictKey:
    return (v.result, v.errno, v.step, v.reason)


def _verdict_fmt(key: VerdictKey) -> str:
    result, errno, step, reason = key
    if result is Outcome.OFFLINED:
        return result.value
    parts = [p.value for p in (errno, step) if p is not None]
    return " ".join([result.value] + parts) + (f' "{reason.value}"' if reason else "")


def difference_columns(left: str, right: str) -> ColumnSet[BlockDifference]:
    """``diff-semantics``' columns: the two verdict columns are named after the semantics
    (``REFCOUNT``, ``SKIPPABLE``; also ``LEFT``/``RIGHT``)."""
    columns: Tuple[Column[BlockDifference], ...] = (
        Column("BLOCK", lambda d: d.block, Merge.KEY, "memory block number", justify="right"),
        Column("RANGE", lambda d: (d.left.start, d.left.end), Merge.RANGE, "physical address range"),
        Column("SIZE", lambda d: d.left.size, Merge.SUM, "size", justify="right", size=True),
        Column("ZONE", lambda d: d.zone.value if d.zone else "none", Merge.SPLIT, "zone"),
        Column("NODE", lambda d: d.left.node, Merge.SPLIT, "NUMA node", justify="right"),
        Column(left.upper(), lambda d: _verdict_key(d.left), Merge.SPLIT,
               f"verdict under {left} (the --left side; also LEFT)", fmt=_verdict_fmt,
               style=lambda k: RESULT_STYLE.get(k[0]), aliases=("LEFT",)),
        Column(right.upper(), lambda d: _verdict_key(d.right), Merge.SPLIT,
               f"verdict under {right} (the --right side; also RIGHT)", fmt=_verdict_fmt,
               style=lambda k: RESULT_STYLE.get(k[0]), aliases=("RIGHT",)),
        Column("CHANGED", lambda d: ",".join(d.changed), Merge.SPLIT, "verdict fields that differ"),
        Column("SITES", lambda d: " + ".join(s.value for s in d.sites), Merge.SPLIT,
               "predicate sites that explain the difference", fmt=lambda s: s or "-", wrap=True),
        Column("CULPRIT", lambda d: " / ".join(sorted({culprit_text(d.left), culprit_text(d.right)} - {""})),
               Merge.SPLIT, "culprit page(s) of either side", wrap=True),
    )
    return ColumnSet(columns, ("BLOCK", "RANGE", "SIZE", "ZONE", left.upper(), right.upper(), "CULPRIT"))
