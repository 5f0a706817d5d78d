"""Confidence and blind spots of snapshot verdicts."""

import dataclasses
import json

import numpy as np
import pytest

from conftest import build_sysroot
from memplan.core.model import Errno, Zone
from memplan.core.results import BlockVerdict, Confidence, ForeignRefEffect, Outcome, PageCounts, Reason, Step
from memplan.core.source import InputSource
from memplan.core.units import format_size
from memplan.engine.simulation import simulate
from memplan.snapshot.confidence import assess, needs_second_reading
from memplan.snapshot.evidence import CLASSES, BlockEvidence, PageClass
from memplan.snapshot.kpageflags import KPF, bit
from memplan.snapshot.reader import load_snapshot

PPB = 32768


def evidence(zone=Zone.NORMAL, cma=0, **counts):
    values = [0] * CLASSES
    for name, n in counts.items():
        values[int(PageClass[name.upper()])] = n
    return BlockEvidence(block=1, zone=zone, counts=tuple(values), zone_cma_pages=cma)


def verdict(result=Outcome.OFFLINED, errno=None, reason=None, step=None, zone=Zone.NORMAL, **pages):
    return BlockVerdict(block=1, start=0, end=(128 << 20) - 1, zone=zone, node=0, result=result, errno=errno,
                        reason=reason, step=step, culprit=None, pages=PageCounts(total=PPB, **pages))


ISOLATION_FAILS = dict(result=Outcome.FAILS, errno=Errno.EBUSY, reason=Reason.FAILURE_TO_ISOLATE_RANGE,
                       step=Step.ISOLATE)


def test_page_free_steps_are_certain():
    v = verdict(Outcome.FAILS, Errno.EINVAL, Reason.MEMORY_HOLES, Step.HOLES)
    assert assess(v, None, evidence(unflagged=9), ForeignRefEffect.BLOCKS) == ("certain", ())
    assert not needs_second_reading(v, evidence(unflagged=9))


def test_only_free_pages_is_certain():
    assert assess(verdict(free=PPB), None, evidence(free=PPB), ForeignRefEffect.BLOCKS) == ("certain", ())


def test_no_flag_pages_in_a_kernel_zone_that_decide_the_verdict_are_unknown():
    ev = evidence(unflagged=3, free=PPB - 3)
    primary = verdict(free=PPB)
    assert needs_second_reading(primary, ev)
    level, spots = assess(primary, verdict(**ISOLATION_FAILS), ev, ForeignRefEffect.BLOCKS)
    assert level == "unknown" and spots == ("3 pages with no flags could be unmovable kernel allocations",)


def test_no_flag_pages_in_zone_movable_are_likely():
    ev = evidence(zone=Zone.MOVABLE, unflagged=5, free=PPB - 5)
    hang = verdict(Outcome.HANGS, Errno.EINTR, Reason.SIGNAL_BACKOFF, Step.TEST_ISOLATED, zone=Zone.MOVABLE)
    level, spots = assess(verdict(zone=Zone.MOVABLE, free=PPB), hang, ev, ForeignRefEffect.BLOCKS)
    assert level == "likely" and "ZONE_MOVABLE" in spots[0]


def test_visible_unmovable_page_makes_isolation_failure_certain():
    ev = evidence(slab=1, unflagged=10, untyped=2, free=PPB - 13)
    fails = verdict(**ISOLATION_FAILS)
    assert assess(fails, fails, ev, ForeignRefEffect.BLOCKS) == ("certain", ())


def test_isolation_failure_resting_on_an_assumed_kernel_page_is_likely():
    ev = evidence(untyped=2, free=PPB - 2)
    level, spots = assess(verdict(**ISOLATION_FAILS), None, ev, ForeignRefEffect.BLOCKS)
    assert level == "likely" and "assumed unmovable" in spots[0]


def test_lru_pages_and_fake_offline_pages_are_blind_spots():
    ev = evidence(zone=Zone.MOVABLE, lru_anon=100, fake_offline=512, free=PPB - 612)
    v = verdict(zone=Zone.MOVABLE, free=PPB - 612, migrated=100, skipped_offline=512)
    level, spots = assess(v, None, ev, ForeignRefEffect.BLOCKS)
    assert level == "likely" and len(spots) == 2
    assert "extra references" in spots[0] and "512 fake-offline pages" in spots[1]
    # under skippable an extra reference on a fake-offline page does not stop offlining: it WARNs
    # at commit and is lost when the block is onlined again (spec §9.1)
    level, spots = assess(v, None, ev, ForeignRefEffect.WARNS)
    assert level == "likely" and len(spots) == 2 and "extra references" in spots[0]
    assert spots[1].startswith("512 fake-offline pages: an extra reference on one (refcounts are not exported) "
                               "would not stop offlining under PG_offline_skippable, but trip the page_count() "
                               "WARN_ON_ONCE in __offline_isolated_pages()")
    assert "onlined again" in spots[1]


def test_skippable_fake_offline_blind_spot_only_when_the_commit_is_reached():
    # a block that fails anyway never reaches __offline_isolated_pages(): the reference changes nothing
    ev = evidence(zone=Zone.MOVABLE, fake_offline=512, free=PPB - 512)
    fails = verdict(Outcome.FAILS, Errno.EBUSY, Reason.UNMOVABLE_PAGE, Step.SCAN, zone=Zone.MOVABLE,
                    free=PPB - 512, skipped_offline=512)
    assert assess(fails, None, ev, ForeignRefEffect.WARNS) == ("certain", ())
    offlined = verdict(zone=Zone.MOVABLE, free=PPB - 512, skipped_offline=512)
    level, spots = assess(offlined, None, ev, ForeignRefEffect.WARNS)
    assert level == "likely" and len(spots) == 1 and "__offline_isolated_pages()" in spots[0]
    assert assess(offlined, None, ev, ForeignRefEffect.NONE) == ("certain", ())


def test_cma_in_the_zone_is_a_blind_spot_once_isolation_passes():
    ev = evidence(free=PPB, cma=4096)
    level, spots = assess(verdict(free=PPB), None, ev, ForeignRefEffect.BLOCKS)
    assert level == "likely" and "CMA" in spots[0]
    reserved = evidence(reserved=1, cma=4096)
    assert assess(verdict(**ISOLATION_FAILS), None, reserved, ForeignRefEffect.BLOCKS)[0] == "certain"


def test_unmapped_hugetlb_that_matters_is_unknown():
    ev = evidence(hugetlb_unmapped=512, free=PPB - 512)
    dissolve = verdict(Outcome.FAILS, Errno.EBUSY, Reason.FAILURE_TO_DISSOLVE_HUGE_PAGES, Step.DISSOLVE)
    level, spots = assess(verdict(free=PPB - 512, dissolved=512), dissolve, ev, ForeignRefEffect.BLOCKS)
    assert level == "unknown" and "hugetlb" in spots[0]


@pytest.fixture
def kernel_zone_machine(tmp_path):
    """Block 1: free + 3 no-flag pages; block 2: free + one slab page; block 3: free only."""
    flags = np.full(4 * PPB, bit(KPF.BUDDY), dtype=np.uint64)
    flags[PPB + 100:PPB + 103] = 0
    flags[2 * PPB + 7] = bit(KPF.SLAB)
    root = build_sysroot(str(tmp_path / "t"), {b: ("online", "Normal") for b in (1, 2, 3)}, flags,
                         "00000000-00000fff : Reserved\n08000000-1fffffff : System RAM\n")
    return load_snapshot(root)


def test_simulate_attaches_confidence_from_both_readings(kernel_zone_machine):
    result = simulate(kernel_zone_machine)
    by_block = {v.block: v for v in result.blocks}
    assert (by_block[1].result, by_block[1].confidence) == (Outcome.OFFLINED, Confidence.UNKNOWN)
    assert by_block[1].blind_spots == ("3 pages with no flags could be unmovable kernel allocations",)
    assert (by_block[2].result, by_block[2].confidence, by_block[2].culprit.pfn) == (Outcome.FAILS, Confidence.CERTAIN,
                                                                                     2 * PPB + 7)
    assert (by_block[3].result, by_block[3].confidence, by_block[3].blind_spots) == (
        Outcome.OFFLINED, Confidence.CERTAIN, ())


def test_profile_verdicts_are_certain():
    from conftest import bundled
    from memplan.profile.reader import load_profile
    result = simulate(load_profile(bundled("sbm-guest.toml")), blocks=[36, 40])
    assert [(v.confidence, v.blind_spots) for v in result.blocks] == [(Confidence.CERTAIN, ())] * 2
    assert result.semantics_reason is None
    split = result.summary.offlinable_bytes_by_confidence
    assert split[Confidence.CERTAIN] == result.summary.offlinable_bytes
    assert split[Confidence.LIKELY] == split[Confidence.UNKNOWN] == 0


def test_verdicts_stay_frozen_dataclasses(kernel_zone_machine):
    v = simulate(kernel_zone_machine, blocks=[3]).blocks[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.confidence = "likely"


def run(*args):
    from click.testing import CliRunner

    from memplan.cli import main
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def kernel_zone_tree(tmp_path):
    """The tree of ``kernel_zone_machine``: block 1 offlines (unknown), 2 fails (certain), 3 offlines (certain)."""
    flags = np.full(4 * PPB, bit(KPF.BUDDY), dtype=np.uint64)
    flags[PPB + 100:PPB + 103] = 0
    flags[2 * PPB + 7] = bit(KPF.SLAB)
    return build_sysroot(str(tmp_path / "t"), {b: ("online", "Normal") for b in (1, 2, 3)}, flags,
                         "00000000-00000fff : Reserved\n08000000-1fffffff : System RAM\n")


def test_simulate_json_splits_offlinable_memory_by_confidence(kernel_zone_tree):
    from conftest import bundled
    result = run("simulate", "--sysroot", kernel_zone_tree, "--json")
    assert result.exit_code == 0, result.output
    import json
    doc = json.loads(result.stdout)
    summary = doc["summary"]
    assert summary["offlinable_bytes_by_confidence"] == {"certain": 128 << 20, "likely": 0, "unknown": 128 << 20}
    assert sum(summary["offlinable_bytes_by_confidence"].values()) == summary["offlinable_bytes"]
    assert summary["unknown_blocks"] == 1
    assert [b["confidence"] for b in doc["blocks"]] == ["unknown", "certain", "certain"]
    # the same keys whatever the input: a profile's verdicts are certain, with no blind spot
    profile = json.loads(run("simulate", bundled("sbm-guest.toml"), "--json").stdout)
    assert set(profile) - {"semantics_reason"} == set(doc) - {"semantics_reason"}
    assert set(profile["summary"]) == set(summary)
    assert set(profile["blocks"][0]) == set(doc["blocks"][0])
    assert profile["summary"]["offlinable_bytes_by_confidence"] == {
        "certain": profile["summary"]["offlinable_bytes"], "likely": 0, "unknown": 0}


def test_simulate_table_prints_the_split(kernel_zone_tree):
    result = run("simulate", "--sysroot", kernel_zone_tree)
    assert result.exit_code == 0, result.output
    assert "By confidence:          certain 128M, likely 0B, unknown 128M" in result.stdout.splitlines()


@pytest.mark.parametrize("blocks, trust, status", [
    ("1-3", None, 64), ("1-3", "likely", 64), ("1,3", "unknown", 0), ("1", None, 1), ("1", "unknown", 0),
    ("3", None, 0), ("2", "unknown", 1),
])
def test_check_counts_only_trusted_successes(kernel_zone_tree, blocks, trust, status):
    extra = ["--trust", trust] if trust else []
    for listing in ([], ["--json"], ["-o", "BLOCK,STATE"]):
        result = run("simulate", "--sysroot", kernel_zone_tree, "--blocks", blocks, "--check", *extra, *listing)
        assert result.exit_code == status, (blocks, trust, listing, result.output)


def test_trust_is_one_option_for_every_command():
    import click

    from memplan.cli import main
    helps = {}
    for name in ("simulate", "fleet"):
        (option,) = [p for p in main.get_command(click.Context(main), name).params if p.name == "trust"]
        helps[name] = (option.help, option.default, tuple(option.type.choices))
    assert len(set(helps.values())) == 1 and helps["simulate"][1:] == ("likely", ("likely", "unknown"))
    assert run("simulate", "--trust", "certain", "x.toml").exit_code == 2


def test_explain_and_diff_json_carry_the_snapshot_confidence(kernel_zone_tree):
    import json

    from memplan.explain.compute import explain_block
    from memplan.render.explain import story_dict
    machine = load_snapshot(kernel_zone_tree)
    # (explain takes the block after --sysroot once issue 13 section 6 is done: the API here)
    tree = InputSource.of(kernel_zone_tree, sysroot=True)
    doc = story_dict(explain_block(machine, 1), tree, machine.geometry, machine.warnings)
    assert (doc["source"], doc["source_kind"]) == (kernel_zone_tree, "sysroot")
    # the same confidence and blind spots simulate gives the block
    assert doc["block"]["confidence"] == "unknown"
    assert doc["block"]["blind_spots"] == ["3 pages with no flags could be unmovable kernel allocations"]
    assert doc["warnings"] == list(machine.warnings)
    assert story_dict(explain_block(machine, 3), tree, machine.geometry)["block"]["confidence"] == "certain"
    diff = json.loads(run("diff-semantics", "--sysroot", kernel_zone_tree, "--json").stdout)
    assert diff["summary"]["left"]["offlinable_bytes_by_confidence"] == {
        "certain": 128 << 20, "likely": 0, "unknown": 128 << 20}
    assert diff["summary"]["right"]["offlinable_bytes_by_confidence"] == diff["summary"]["left"][
        "offlinable_bytes_by_confidence"]


def test_diff_summary_splits_by_confidence_on_every_input(kernel_zone_tree):
    # as simulate's summary does (issue 13 section 1: every table summary prints the split),
    # and the headline names the unknown part as simulate's "Would offline" does
    from conftest import bundled
    lines = run("diff-semantics", "--sysroot", kernel_zone_tree).stdout.splitlines()
    assert "Offlinable (refcount):      2 (256M, 128M of it unknown)" in lines
    assert "By confidence (refcount):   certain 128M, likely 0B, unknown 128M" in lines
    assert "By confidence (skippable):  certain 128M, likely 0B, unknown 128M" in lines
    profile = run("diff-semantics", bundled("sbm-guest.toml"))
    doc = json.loads(run("diff-semantics", bundled("sbm-guest.toml"), "--json").stdout)
    left = doc["summary"]["left"]
    assert left["offlinable_bytes_by_confidence"] == {"certain": left["offlinable_bytes"], "likely": 0, "unknown": 0}
    split = [line for line in profile.stdout.splitlines() if line.startswith("By confidence")]
    assert split == [f"By confidence (refcount):   certain {format_size(left['offlinable_bytes'])}, likely 0B, "
                     "unknown 0B", f"By confidence (skippable):  certain "
                     f"{format_size(doc['summary']['right']['offlinable_bytes'])}, likely 0B, unknown 0B"]
    assert not [line for line in profile.stdout.splitlines() if "of it unknown" in line]
