"""How an offline attempt ends, and the one builder of ``BlockVerdict``s.

Every step of ``memplan.kernel.offline`` that stops an attempt returns a ``Stop``: the
``Cause`` (which fixes result, errno, reason and step, ``memplan.core.results``) and the page
the kernel stops at. ``VerdictBuilder`` turns a stop (or none: offlined) plus the kernel log
into verdict fields, appending ``offline_pages()``'s ``pr_debug`` reason line, and stamps
verdicts; the full pipeline and the block-level shortcut (``memplan.engine.shortcut``) both
build through it, so a verdict never depends on which of them judged the block.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any, Dict, Optional, Sequence, Tuple

from memplan.core.arrays import AnyArray, KindArray
from memplan.core.geometry import Geometry
from memplan.core.model import DEFAULT_REFCOUNT, Errno, PageKind, Zone
from memplan.core.results import (
    BlockVerdict,
    Cause,
    Culprit,
    Hazard,
    LogEntry,
    LogLevel,
    Outcome,
    PageCounts,
    Reason,
    Step,
)

_KINDS = {int(k): k for k in PageKind}


@dataclass(frozen=True)
class Stop:
    """Where and why an offline attempt ends without offlining the block."""

    cause: Cause
    #: the page the kernel stops at or names
    culprit: Optional[Culprit] = None
    #: the errno a vetoing notifier returns (the cause fixes every other errno)
    notifier_errno: Optional[Errno] = None

    @property
    def result(self) -> Outcome:
        return self.cause.result

    @property
    def errno(self) -> Optional[Errno]:
        return self.notifier_errno if self.notifier_errno is not None else self.cause.errno

    @property
    def reason(self) -> Optional[Reason]:
        return self.cause.reason

    @property
    def step(self) -> Step:
        return self.cause.step.verdict_step


def page_culprit(pfn: int, kinds: KindArray, refcount: Optional[AnyArray], index: int) -> Culprit:
    """The page ``index`` of a range starting at ``pfn`` (``refcount`` ``None``: every page has
    its kind's default refcount)."""
    kind = int(kinds[index])
    ref = int(refcount[index]) if refcount is not None else int(DEFAULT_REFCOUNT[kind])
    return Culprit(pfn=pfn + index, kind=_KINDS[kind], refcount=ref)


def pr_debug_entry(start_pfn: int, end_pfn: int, reason: Reason, page_shift: int) -> LogEntry:
    """``offline_pages()``'s ``pr_debug("memory offlining [mem %#010llx-%#010llx] failed due to %s")``."""
    start = start_pfn << page_shift
    end = (end_pfn << page_shift) - 1
    return LogEntry(LogLevel.PR_DEBUG, f"memory offlining [mem {start:#010x}-{end:#010x}] failed due to "
                    f"{reason.value}", None, "offline_pages")


_VERDICT_DEFAULTS = {f.name: f.default for f in fields(BlockVerdict) if f.default is not MISSING}
_OFFLINED: Dict[str, Any] = {"result": Outcome.OFFLINED, "errno": None, "reason": None, "step": None,
                              "cause": None, "culprit": None}


class VerdictBuilder:
    """Builds the verdicts of one geometry.

    ``outcome()`` gives the fields an attempt's end decides, ``template()`` what every verdict
    of a block (or of many blocks alike) shares, ``stamp()`` the verdict itself. ``stamp()``
    fills the instance dict of the frozen dataclass directly (``BlockVerdict`` is a plain
    dataclass without ``__post_init__`` or slots): a 16 TiB run builds 131072 verdicts.
    """

    def __init__(self, geometry: Geometry) -> None:
        self.page_shift = geometry.page_shift
        self.pages_per_block = geometry.pages_per_block

    def outcome(self, stop: Optional[Stop], range_pfn: int, end_pfn: int,
                log: Sequence[LogEntry] = ()) -> Dict[str, Any]:
        """result, errno, reason, step, cause, culprit and kernel log of an attempt on the pages
        ``[range_pfn, end_pfn)`` that ended at ``stop`` (``None``: offlined) after printing ``log``."""
        if stop is None:
            return dict(_OFFLINED, kernel_log=tuple(log))
        entries = tuple(log)
        if stop.reason is not None:
            entries += (pr_debug_entry(range_pfn, end_pfn, stop.reason, self.page_shift),)
        return {"result": stop.result, "errno": stop.errno, "reason": stop.reason, "step": stop.step,
                "cause": stop.cause, "culprit": stop.culprit, "kernel_log": entries}

    def template(self, zone: Optional[Zone], node: int, device: Optional[str], device_state: Optional[str],
                 **outcome: Any) -> Dict[str, Any]:
        """The fields verdicts share: everything but the block, its addresses and its pages."""
        return dict(_VERDICT_DEFAULTS, zone=zone, node=node, device=device, device_state=device_state, **outcome)

    def stamp(self, template: Dict[str, Any], block: int, start_pfn: int, pages: PageCounts,
              hazards: Tuple[Hazard, ...] = (), **outcome: Any) -> BlockVerdict:
        """The verdict of memory block ``block`` (first pfn ``start_pfn``)."""
        values = dict(template)
        values.update(outcome)
        values["block"] = block
        values["start"] = start_pfn << self.page_shift
        values["end"] = ((start_pfn + self.pages_per_block) << self.page_shift) - 1
        values["pages"] = pages
        if hazards:
            values["hazards"] = hazards
        verdict = object.__new__(BlockVerdict)
        object.__setattr__(verdict, "__dict__", values)
        return verdict
