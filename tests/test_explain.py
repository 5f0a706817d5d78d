"""memplan explain: the story ends in simulate's verdict, and the advice fits the culprit."""

from __future__ import annotations

import pytest

from conftest import bundled, machine_from
from memplan.core.errors import UsageError
from memplan.engine.simulation import simulate
from memplan.explain.compute import explain_block, kind_counts
from memplan.kernel.trace import PipelineStep, StepStatus
from memplan.profile.reader import load_profile


@pytest.fixture(scope="module")
def sbm():
    return load_profile(bundled("sbm-guest.toml"))


@pytest.fixture(scope="module")
def review():
    return load_profile(bundled("skippable-review.toml"))


@pytest.mark.parametrize("semantics", ["refcount", "skippable"])
def test_story_verdict_is_simulates_verdict(review, semantics):
    result = simulate(review, semantics)
    for v in result.blocks:
        story = explain_block(review, v.block, semantics)
        assert story.verdict == v
        assert sum(r.pages for r in story.population) == v.pages.total


def test_migration_capacity_is_the_one_simulate_uses():
    # Block 8 needs targets; the other blocks of its node have fewer free pages than it has to move.
    machine = machine_from("""
    [[fill]]
    blocks = "0-7"
    seed = 1
    anon = 0.99
    [[ram]]
    start = "1GiB"
    size = "128MiB"
    zone = "Movable"
    [[fill]]
    blocks = "8"
    seed = 2
    anon = 0.9
    """)
    verdict = simulate(machine, blocks=[8]).blocks[0]
    story = explain_block(machine, 8)
    assert story.verdict == verdict and verdict.result.value == "hangs"
    assert "no migration target" in story.steps[9].detail
    assert story.advice.startswith("Free memory on the nodes migration may use")


def test_hanging_block_tells_each_step(sbm):
    story = explain_block(sbm, 36)
    statuses = {s.step: s.status for s in story.steps}
    assert statuses[PipelineStep.ISOLATE] is StepStatus.PASSED
    assert statuses[PipelineStep.SCAN] is StepStatus.HANGS
    assert statuses[PipelineStep.DISSOLVE] is StepStatus.NOT_REACHED
    scan = story.steps[9]
    assert scan.pfn == 0x123000 and "refcount 3 where migration expects 1" in scan.detail
    assert story.culprit.pfn == 0x123000 and story.culprit.refcount == 3
    assert story.culprit.flags == 0x5828  # uptodate,lru,mmap,anonymous,swapbacked
    assert story.advice.startswith("Release the extra references on 3 pages")


@pytest.mark.parametrize("profile,block,semantics,advice", [
    ("sbm-guest.toml", 43, None, "Unpin the VFIO/RDMA buffer: 16 long-term pinned pages"),
    ("sbm-guest.toml", 15, None, "Memory holes: this block can never be offlined."),
    ("sbm-guest.toml", 0, None, "spans two zones or two nodes"),
    ("sbm-guest.toml", 5, None, "PG_reserved memory (13312 pages"),
    ("boot-vm.toml", 34, None, "online the block as movable"),
    ("hugetlb-cma-host.toml", 8, None, "overlaps a CMA area"),
    ("hugetlb-cma-host.toml", 64, None, "Raise the 2 MiB hugetlb pool's headroom by 11"),
    ("hugetlb-cma-host.toml", 88, None, "Free 1 in-use hugetlb page that cannot migrate"),
    ("skippable-review.toml", 34, "refcount", "Deflate the balloon: 512 balloon pages"),
    ("skippable-review.toml", 42, "refcount",
     "Someone else holds a reference on the fake-offline page at pfn 0x155123"),
    ("skippable-review.toml", 35, "skippable", "isolation fails before its MEM_GOING_OFFLINE handler"),
    ("skippable-review.toml", 42, "skippable", "Nothing to do: the block offlines, but mind the hazard"),
    ("sbm-guest.toml", 40, None, "Nothing to do: the block offlines."),
])
def test_advice(profile, block, semantics, advice):
    story = explain_block(load_profile(bundled(profile)), block, semantics)
    assert advice in story.advice


def test_dissolve_reports_the_folios_it_meets():
    story = explain_block(load_profile(bundled("hugetlb-cma-host.toml")), 64)
    dissolve = story.steps[10]
    assert dissolve.status is StepStatus.FAILED and dissolve.count == 22
    assert "headroom (free - resv) is 11" in dissolve.detail


def test_pending_signal_and_offline_block():
    machine = machine_from("""
    [[ram]]
    start = "1GiB"
    size = "256MiB"
    zone = "Movable"
    [[ram]]
    start = "2GiB"
    size = "128MiB"
    zone = "Movable"
    state = "offline"
    [environment]
    signal_pending = true
    """)
    story = explain_block(machine, 8)
    assert story.steps[8].step is PipelineStep.SIGNAL and story.steps[8].status is StepStatus.FAILED
    assert story.advice.startswith("Wait: a signal is pending")
    offline = explain_block(machine, 16)
    assert offline.steps[0].status is StepStatus.FAILED and offline.population == ()
    assert offline.advice == "Nothing to offline: the block is already offline."


def test_isolation_detail_names_the_pageblock_and_its_turn():
    machine = machine_from("""
    [[ram]]
    start = "1GiB"
    size = "128MiB"
    zone = "Normal"
    [[pages]]
    pfn = "0x40a00"
    kind = "slab"
    [[pages]]
    pfn = "0x47e00"
    kind = "slab"
    """)
    story = explain_block(machine, 8)
    isolate = story.steps[5]
    # The last pageblock (63) is isolated second, before the middle ones: its page is the one dumped.
    assert isolate.pfn == 0x47e00 and "pageblock 63 (pfn 0x47e00, walked 2nd)" in isolate.detail
    assert story.culprit.pfn == 0x47e00 and story.culprit.flags == 1 << 7  # KPF_SLAB
    assert kind_counts(story)[story.culprit.kind] == 2


def test_unknown_blocks_say_what_exists(sbm):
    with pytest.raises(UsageError, match=r"did you mean 57\?"):
        explain_block(sbm, 400)
    with pytest.raises(UsageError, match="in virtio-mem vmem0's region but was never added"):
        explain_block(sbm, 60)
