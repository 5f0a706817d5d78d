"""offline_block_traced(): the same verdict as offline_block(), and a trace that tells it."""

from __future__ import annotations

import copy

import numpy as np
from hypothesis import given

from machines import BLOCK, SETTINGS, ram_machines, sbm_machines
from memplan.core.results import PAGE_FREE_STEPS, PIPELINE, Cause, Outcome, Reason, Step
from memplan.engine.simulation import Simulator
from memplan.kernel.offline import offline_block, offline_block_traced
from memplan.kernel.semantics import SEMANTICS, get_semantics
from memplan.kernel.trace import PipelineStep, StepStatus, TraceRecorder
from memplan.profile.reader import build_machine


def check_trace(doc) -> None:
    machine = build_machine(copy.deepcopy(doc), "<hypothesis>")
    batch = machine.pages.materialize(np.array([BLOCK]))
    ref = None if batch.refcount is None else batch.refcount[0]
    for name in SEMANTICS:
        sim = Simulator(machine, get_semantics(name))
        ctx = sim.context(int(machine.blocks.rows([BLOCK])[0]))
        verdict, stats = offline_block(sim.setup, ctx, batch.kinds[0], ref)
        traced, traced_stats, steps = offline_block_traced(sim.setup, ctx, batch.kinds[0], ref)
        assert traced == verdict and traced_stats == stats
        assert [s.step for s in steps] == list(PipelineStep)
        if verdict.result is Outcome.OFFLINED:
            assert all(s.status is StepStatus.PASSED for s in steps) and verdict.cause is None
            continue
        stops = [i for i, s in enumerate(steps) if s.status in (StepStatus.FAILED, StepStatus.HANGS)]
        assert len(stops) == 1
        stop = steps[stops[0]]
        assert all(s.status is StepStatus.PASSED and s.detail for s in steps[:stops[0]])
        assert all(s.status is StepStatus.NOT_REACHED for s in steps[stops[0] + 1:])
        assert stop.step.verdict_step is verdict.step
        assert stop.step is verdict.cause.step  # the step that stops is the one the cause names
        assert (stop.status is StepStatus.HANGS) == (verdict.result is Outcome.HANGS)
        if verdict.culprit is not None:
            assert stop.pfn == verdict.culprit.pfn


@SETTINGS
@given(ram_machines())
def test_trace_of_boot_memory(doc):
    check_trace(doc)


@SETTINGS
@given(sbm_machines())
def test_trace_of_virtio_mem(doc):
    check_trace(doc)


def test_recorder_fills_unreached_steps():
    rec = TraceRecorder()
    rec.record(PipelineStep.STATE, StepStatus.PASSED, "online")
    rec.record(PipelineStep.ZONE, StepStatus.FAILED, "spans zones")
    steps = rec.steps()
    assert [s.status for s in steps[:2]] == [StepStatus.PASSED, StepStatus.FAILED]
    assert {s.status for s in steps[2:]} == {StepStatus.NOT_REACHED}
    assert StepStatus.NOT_REACHED.label == "not reached"


def test_the_step_table_is_the_kernels_order():
    assert [info.step for info in PIPELINE] == list(PipelineStep) and len(PIPELINE) == 13
    assert [info.rank for info in PIPELINE] == list(range(13))
    assert [info.function for info in PIPELINE] == [
        "memory_block_change_state()", "memory_block_offline()", "offline_pages()", "walk_system_ram_range()",
        "offline_pages()", "start_isolate_page_range()", "node_notify(NODE_REMOVING_LAST_MEMORY)",
        "memory_notify(MEM_GOING_OFFLINE)", "signal_pending()", "scan_movable_pages() + do_migrate_range()",
        "dissolve_free_hugetlb_folios()", "test_pages_isolated()", "__offline_isolated_pages()"]
    # Verdict steps follow the same order, each first reached where Step declares it.
    verdict_steps = [info.verdict_step for info in PIPELINE]
    assert list(dict.fromkeys(verdict_steps)) == list(Step)
    assert [s.rank for s in Step] == sorted(s.rank for s in Step)
    assert (PipelineStep.NODE_NOTIFIER.verdict_step, PipelineStep.GOING_OFFLINE.verdict_step,
            PipelineStep.SIGNAL.verdict_step) == (Step.NOTIFIER, Step.NOTIFIER, Step.SCAN)
    # JSON values of results.Step are a contract.
    assert [s.value for s in Step] == ["state", "zone", "alignment", "holes", "multizone", "isolate", "notifier",
                                       "scan", "dissolve", "test_isolated", "commit"]


def test_confidence_and_diff_read_the_step_table():
    assert PAGE_FREE_STEPS == {Step.STATE, Step.ZONE, Step.ALIGNMENT, Step.HOLES, Step.MULTIZONE}
    assert Step.SCAN.and_later() == {Step.SCAN, Step.DISSOLVE, Step.TEST_ISOLATED, Step.COMMIT}
    assert Step.ISOLATE.rank < Step.NOTIFIER.rank < Step.SCAN.rank < Step.DISSOLVE.rank


def test_every_cause_belongs_to_one_step():
    for cause in Cause:
        assert cause.step in PipelineStep
        assert (cause.result is Outcome.HANGS) == (cause.step in (PipelineStep.SCAN, PipelineStep.TEST_ISOLATED)
                                                   and cause is not Cause.PAGE_OFFLINE_BUSY)
    isolation = {c for c in Cause if c.step is PipelineStep.ISOLATE}
    assert isolation == {Cause.UNMOVABLE_PAGE, Cause.CMA_PAGEBLOCK, Cause.PAGEBLOCK_ISOLATED}
    assert {c.reason for c in isolation} == {Reason.FAILURE_TO_ISOLATE_RANGE}
    loops = {c for c in Cause if c.step is PipelineStep.SCAN and c.result is Outcome.HANGS}
    assert loops == {Cause.EXTRA_REFERENCES, Cause.NO_MIGRATION_TARGET, Cause.GIGANTIC_NO_POOL_FOLIO,
                     Cause.FOLIO_REFCOUNT_ZERO, Cause.HWPOISONED_LARGE_FOLIO}
    assert [c.step for c in Cause][:5] == [PipelineStep.STATE, PipelineStep.ZONE, PipelineStep.ALIGNMENT,
                                           PipelineStep.HOLES, PipelineStep.MULTIZONE]
    assert sorted(Cause, key=lambda c: c.step.rank) == list(Cause)  # declared in the kernel's order
    # a vetoing notifier chooses the errno
    assert {c for c in Cause if c.errno is None and c.reason is not None} == {
        Cause.NODE_NOTIFIER_VETO, Cause.MEMORY_NOTIFIER_VETO}
