"""Per-step trace of one offline attempt: what each step of ``offline_pages()`` decided.

``memplan.kernel.offline.offline_block_traced`` fills a ``TraceRecorder`` while it runs the
ordinary pipeline, so ``memplan explain`` tells the story of a block from the same code that
``simulate`` uses. The steps are those of spec §3, in the kernel's order; every step that the
attempt never reached is ``not_reached``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Dict, List, Optional, Tuple

from memplan.core.results import Step


class PipelineStep(str, Enum):
    """The steps of ``memory_block_offline()`` / ``offline_pages()`` in order (spec §3)."""

    STATE = "state"
    ZONE = "zone"
    ALIGNMENT = "alignment"
    HOLES = "holes"
    MULTIZONE = "multizone"
    ISOLATE = "isolate"
    NODE_NOTIFIER = "node_notifier"
    GOING_OFFLINE = "going_offline"
    SIGNAL = "signal"
    SCAN = "scan"
    DISSOLVE = "dissolve"
    TEST_ISOLATED = "test_isolated"
    COMMIT = "commit"

    @property
    def function(self) -> str:
        """The kernel function (or call) that implements the step."""
        return _FUNCTIONS[self]

    @property
    def label(self) -> str:
        """A short human name (``SCAN/MIGRATE``, ``pageblock isolation``)."""
        return _TITLES[self]

    @property
    def verdict_step(self) -> Step:
        """The ``results.Step`` a verdict decided here reports."""
        return _VERDICT_STEP[self]


_FUNCTIONS: Dict[PipelineStep, str] = {
    PipelineStep.STATE: "memory_block_change_state()",
    PipelineStep.ZONE: "memory_block_offline()",
    PipelineStep.ALIGNMENT: "offline_pages()",
    PipelineStep.HOLES: "walk_system_ram_range()",
    PipelineStep.MULTIZONE: "offline_pages()",
    PipelineStep.ISOLATE: "start_isolate_page_range()",
    PipelineStep.NODE_NOTIFIER: "node_notify(NODE_REMOVING_LAST_MEMORY)",
    PipelineStep.GOING_OFFLINE: "memory_notify(MEM_GOING_OFFLINE)",
    PipelineStep.SIGNAL: "signal_pending()",
    PipelineStep.SCAN: "scan_movable_pages() + do_migrate_range()",
    PipelineStep.DISSOLVE: "dissolve_free_hugetlb_folios()",
    PipelineStep.TEST_ISOLATED: "test_pages_isolated()",
    PipelineStep.COMMIT: "__offline_isolated_pages()",
}

_TITLES: Dict[PipelineStep, str] = {
    PipelineStep.STATE: "block state",
    PipelineStep.ZONE: "single zone and node",
    PipelineStep.ALIGNMENT: "alignment",
    PipelineStep.HOLES: "memory holes",
    PipelineStep.MULTIZONE: "multizone range",
    PipelineStep.ISOLATE: "pageblock isolation",
    PipelineStep.NODE_NOTIFIER: "node notifier",
    PipelineStep.GOING_OFFLINE: "MEM_GOING_OFFLINE",
    PipelineStep.SIGNAL: "pending signal",
    PipelineStep.SCAN: "SCAN/MIGRATE",
    PipelineStep.DISSOLVE: "DISSOLVE",
    PipelineStep.TEST_ISOLATED: "TEST_ISOLATED",
    PipelineStep.COMMIT: "commit",
}

_VERDICT_STEP: Dict[PipelineStep, Step] = {
    PipelineStep.STATE: Step.STATE, PipelineStep.ZONE: Step.ZONE, PipelineStep.ALIGNMENT: Step.ALIGNMENT,
    PipelineStep.HOLES: Step.HOLES, PipelineStep.MULTIZONE: Step.MULTIZONE, PipelineStep.ISOLATE: Step.ISOLATE,
    PipelineStep.NODE_NOTIFIER: Step.NOTIFIER, PipelineStep.GOING_OFFLINE: Step.NOTIFIER,
    PipelineStep.SIGNAL: Step.SCAN, PipelineStep.SCAN: Step.SCAN, PipelineStep.DISSOLVE: Step.DISSOLVE,
    PipelineStep.TEST_ISOLATED: Step.TEST_ISOLATED, PipelineStep.COMMIT: Step.COMMIT,
}


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
        for step in PipelineStep:
            if step not in seen:
                out.append(StepRecord(step, StepStatus.NOT_REACHED if stopped else StepStatus.PASSED, ""))
        order = {s: i for i, s in enumerate(PipelineStep)}
        return tuple(sorted(out, key=lambda r: order[r.step]))
