"""offline_block_traced(): the same verdict as offline_block(), and a trace that tells it."""

from __future__ import annotations

import copy

import numpy as np
from hypothesis import given

from memplan.profile.reader import build_machine
from memplan.kernel.offline import offline_block, offline_block_traced
from memplan.kernel.semantics import SEMANTICS, get_semantics
from memplan.core.results import Outcome
from memplan.engine.simulation import Simulator
from memplan.kernel.trace import PipelineStep, StepStatus, TraceRecorder
from machines import BLOCK, SETTINGS, ram_machines, sbm_machines


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
            assert all(s.status is StepStatus.PASSED for s in steps)
            continue
        stops = [i for i, s in enumerate(steps) if s.status in (StepStatus.FAILED, StepStatus.HANGS)]
        assert len(stops) == 1
        stop = steps[stops[0]]
        assert all(s.status is StepStatus.PASSED and s.detail for s in steps[:stops[0]])
        assert all(s.status is StepStatus.NOT_REACHED for s in steps[stops[0] + 1:])
        assert stop.step.verdict_step is verdict.step
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
