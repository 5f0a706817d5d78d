"""Per-step trace of one offline attempt: what each step of ``offline_pages()`` decided.

``memplan.kernel.offline.offline_block_traced`` fills a ``TraceRecorder`` while it runs the
ordinary pipeline, so ``memplan explain`` tells the story of a block from the same code that
``simulate`` uses. The steps are those of spec §3 (``memplan.core.results.PIPELINE``, re-exported
here as ``PipelineStep``), in the kernel's order; every step that the attempt never reached is
``not_reached``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Dict, List, Optional, Tuple

import numpy as np

from memplan.core.geometry import Geometry
from memplan.core.machine import VirtioMemDevice
from memplan.core.model import DEFAULT_REFCOUNT, IS_PINNED, DriverState, PageKind
from memplan.core.results import PIPELINE, Cause, PipelineStep
from memplan.kernel import hugetlb
from memplan.kernel.isolation import IsolationFailure, isolation_order
from memplan.kernel.migration import MigrationTargets
from memplan.kernel.notifier import Notified
from memplan.kernel.pages import RangeView
from memplan.kernel.semantics import OfflineSemantics

__all__ = ["PipelineStep", "StepRecord", "StepStatus", "TraceRecorder"]


class StepStatus(str, Enum):
    PASSED = "passed"
    FAILED = "failed"
    #: the step repeats until a signal arrives
    HANGS = "hangs"
    NOT_REACHED = "not_reached"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


@dataclass(frozen=True)
class StepRecord:
    """What one step did: its status, one line of detail and the page it is about, if any."""

    step: PipelineStep
    status: StepStatus
    detail: str
    pfn: Optional[int] = None
    #: how many pages or folios the detail is about, where one number matters (e.g. the free
    #: hugetlb folios DISSOLVE met)
    count: Optional[int] = None


class TraceRecorder:
    """Collects ``StepRecord``s in pipeline order; ``steps()`` adds the steps never reached."""

    def __init__(self) -> None:
        self._records: List[StepRecord] = []

    def record(self, step: PipelineStep, status: StepStatus, detail: str, pfn: Optional[int] = None,
               count: Optional[int] = None) -> None:
        self._records.append(StepRecord(step, status, detail, pfn, count))

    def steps(self) -> Tuple[StepRecord, ...]:
        seen = {r.step for r in self._records}
        out = list(self._records)
        stopped = any(r.status is not StepStatus.PASSED for r in self._records)
        for step in (info.step for info in PIPELINE):
            if step not in seen:
                out.append(StepRecord(step, StepStatus.NOT_REACHED if stopped else StepStatus.PASSED, ""))
        return tuple(sorted(out, key=lambda r: r.step.rank))


# --- step details for offline_block_traced() (memplan explain) -----------------------------

def isolation_detail(pageblocks: int, failure: Optional[IsolationFailure], view: RangeView) -> str:
    """The walk of ``start_isolate_page_range()``: first, last, then the middle pageblocks."""
    order = isolation_order(pageblocks)
    walk = "pageblock 0" if pageblocks == 1 else (
        f"pageblock 0, then {pageblocks - 1}, then 1-{pageblocks - 2} ascending" if pageblocks > 2
        else "pageblock 0, then 1")
    if failure is None:
        return f"{pageblocks} pageblocks isolated in order: {walk}"
    failed = failure.pageblock
    position = order.index(failed) + 1
    start = view.pfn + failed * view.geometry.pageblock_pages
    if failure.cause is Cause.PAGEBLOCK_ISOLATED:
        why = "is already isolated by someone else (no dump)"
    elif failure.cause is Cause.CMA_PAGEBLOCK:
        why = "is a CMA pageblock"
    else:
        why = f"holds an unmovable {PageKind(int(view.kinds[failure.index])).label} page"
    return (f"order {walk}; pageblock {failed} (pfn {start:#x}, walked {_ordinal(position)}) {why}: -EBUSY, "
            "the pageblocks isolated before it are undone")


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def node_notifier_detail(node_notifiers: bool, node: int, last_memory: bool) -> str:
    if not node_notifiers:
        return "this kernel has no node notifiers (before 6.17)"
    if last_memory:
        return f"node {node}'s last memory: NODE_REMOVING_LAST_MEMORY, nobody vetoes"
    return f"node {node} keeps other memory: not sent"


def notifier_detail(view: RangeView, notified: Notified, device: Optional[VirtioMemDevice]) -> str:
    """What the MEM_GOING_OFFLINE handlers did to this block's pages."""
    parts: List[str] = []
    fake = int(np.count_nonzero(view.kinds == PageKind.FAKE_OFFLINE))
    dropped = int(np.count_nonzero(notified.dropped))
    if device is None:
        parts.append("no virtio-mem device covers the block")
    elif device.driver is not DriverState.LOADED:
        parts.append(f"virtio-mem {device.id} is {device.driver.value}: nobody handles its "
                     f"{fake} fake-offline pages" if fake else f"virtio-mem {device.id} is {device.driver.value}")
    elif not fake:
        parts.append(f"virtio-mem {device.id}: the block has no fake-offline page")
    elif dropped:
        still = int(np.count_nonzero(notified.dropped & (notified.refcount != 0)))
        text = f"virtio-mem {device.id} drops its reference on {dropped} fake-offline pages (refcount 1 -> 0)"
        if still:
            text += f"; {still} still referenced: WARN_ON + dump_page \"fake-offline page referenced\""
        parts.append(text)
    else:
        parts.append(f"virtio-mem {device.id} leaves its {fake} fake-offline pages alone (PG_offline_skippable)")
    driver = int(np.count_nonzero(view.kinds == PageKind.OFFLINE_REFCOUNT_DRIVER))
    if driver:
        parts.append(f"the refcount-protocol driver drops its reference on {driver} pages")
    freed = int(np.count_nonzero(notified.freed))
    if freed:
        parts.append(f"the foreign reference is dropped: put_page() frees {freed} fake-offline pages to the buddy")
    return "; ".join(parts)


def scan_busy_detail(view: RangeView, index: int, semantics: OfflineSemantics) -> str:
    kind = PageKind(int(view.kinds[index]))
    why = semantics.scan_busy_why(int(view.refcount[index]))
    return (f"SCAN stops at pfn {view.pfn + index:#x}: a PageOffline {kind.label} page without movable_ops, {why}: "
            "definitely unmovable, -EBUSY")


def folio_size_text(geometry: Geometry, order: int) -> str:
    """``2 MiB`` / ``1 GiB``: the size of a folio of ``order``."""
    size = geometry.page_size << order
    return f"{size >> 30} GiB" if size >= 1 << 30 and not size % (1 << 30) else f"{size >> 20} MiB"


def scan_loop_detail(view: RangeView, index: int, cause: Cause, targets: MigrationTargets) -> str:
    kind = PageKind(int(view.kinds[index]))
    ref = int(view.refcount[index])
    default = int(DEFAULT_REFCOUNT[int(kind)])
    if cause is Cause.FOLIO_REFCOUNT_ZERO:
        why = "refcount 0: folio_try_get() fails, it is never isolated"
    elif cause is Cause.EXTRA_REFERENCES and IS_PINNED[int(kind)]:
        why = "a long-term pin (FOLL_LONGTERM) keeps an extra reference"
    elif cause is Cause.EXTRA_REFERENCES:
        why = f"refcount {ref} where migration expects {default}: extra references"
    elif cause is Cause.GIGANTIC_NO_POOL_FOLIO:
        size = folio_size_text(view.geometry, view.order_at(index))
        why = f"no free {size} pool page outside the block and gigantic pages cannot be allocated fresh"
    else:
        capacity = targets.capacity
        why = "no migration target: migrate_pages() ran out of targets (-ENOMEM) before it migrated"
        if capacity is not None:
            why += (f"; the allowed nodes have {capacity.kernel} free pages in kernel zones and {capacity.movable} in "
                    "ZONE_MOVABLE outside the block")
    return (f"MIGRATE fails on the {kind.label} folio at pfn {view.pfn + index:#x} every round ({why}); SCAN finds "
            "it again: the loop runs until a signal")


def dissolve_detail(view: RangeView, index: int, cause: Cause, headroom: Dict[int, int]) -> str:
    kind = PageKind(int(view.kinds[index]))
    pfn = view.pfn + index
    if cause is Cause.HUGETLB_IN_USE:
        return (f"the in-use {kind.label} folio at pfn {pfn:#x} is not marked migratable (SCAN skipped it): "
                "dissolve_free_hugetlb_folio() returns -EBUSY")
    order = view.order_at(index)
    heads = hugetlb.free_folio_heads(view.kinds, view.pfn, order, view.geometry)
    return (f"the block holds {heads} free {folio_size_text(view.geometry, order)} hugetlb folios but the pool's "
            f"headroom (free - resv) is {headroom.get(order, 0)}: dissolving the one at pfn {pfn:#x} returns -EBUSY")
