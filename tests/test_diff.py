"""``memplan.diff.compute``: spec §5.2 rows as differences, Zi Yan's question, foreign-reference timing.

The profiles are the scenario builders of ``test_scenarios`` (block 8 = 128 MiB of boot RAM,
block 32 = a virtio-mem SBM block with sub-blocks 0-15 plugged).
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import bundled, machine_from
from machines import SETTINGS, ram_machines, sbm_machines
from memplan.core.model import ForeignRefTiming, PageKind
from memplan.diff.compute import OWNER_KINDS, diff_semantics, reached_sites, with_foreign_ref_timing
from memplan.diff.types import Site
from memplan.kernel.semantics import SEMANTICS
from memplan.profile.reader import build_machine, load_profile
from test_scenarios import MID, SBM_FAKE_PFN, page, sbm, target

REFERENCED = page(SBM_FAKE_PFN + 5, "fake_offline", refcount=2)


def timing(value: str) -> str:
    return f'\n[environment]\nforeign_ref_dropped = "{value}"\n'


GOING = Site.GOING_OFFLINE
SCAN = Site.SCAN_MOVABLE_PAGES
COMMIT = Site.OFFLINE_ISOLATED_PAGES
ISOLATION = Site.ISOLATION

# row, profile, block, (left result, left step), (right result, right step), sites
# (left = refcount = mainline, right = skippable = the posted patch)
ROWS = [
    (20, sbm("kernel", pages=REFERENCED), 32, ("fails", "scan"), ("offlined", None), [GOING, SCAN, COMMIT]),
    (21, sbm("kernel", pages=REFERENCED, env=timing("during-offline")), 32, ("offlined", None), ("offlined", None),
     [GOING]),
    (22, sbm("kernel", pages=REFERENCED, env=timing("after-offline")), 32, ("fails", "scan"), ("offlined", None),
     [GOING, SCAN, COMMIT]),
    (27, sbm("kernel", driver="unloaded"), 32, ("fails", "scan"), ("fails", "isolate"), [ISOLATION]),
    (30, target("Normal", page(MID, "balloon", 64)), 8, ("fails", "scan"), ("fails", "isolate"), [ISOLATION]),
    (31, target("DMA32", page(MID, "balloon", 512)), 8, ("fails", "scan"), ("fails", "isolate"), [ISOLATION]),
    (33, target("Normal", page(MID, "balloon", 512)), 8, ("fails", "scan"), ("fails", "isolate"), [ISOLATION]),
    (34, target("Movable", page(MID, "offline_refcount_driver", 8)), 8, ("offlined", None), ("fails", "scan"),
     [SCAN]),
    (35, target("Normal", page(MID, "offline_refcount_driver", 8)), 8, ("offlined", None), ("fails", "isolate"),
     [ISOLATION]),
    (36, target("Normal", page(MID, "offline_orphan", 4)), 8, ("offlined", None), ("fails", "scan"), [SCAN]),
]

SAME = [
    (18, sbm("kernel"), 32),
    (19, sbm("movable"), 32),
    (28, sbm("movable", driver="unloaded"), 32),
    (32, target("Movable", page(MID, "balloon", 512)), 8),
    (37, sbm("movable", env="\n[environment]\nsignal_pending = true\n"), 32),
]


def short(v):
    return v.result.value, v.step.value if v.step else None


@pytest.mark.parametrize("row,profile,block,left,right,sites", ROWS, ids=[f"row{r[0]}" for r in ROWS])
def test_spec_row_as_a_difference(row, profile, block, left, right, sites):
    diff = diff_semantics(machine_from(profile), blocks=[block])
    assert [d.block for d in diff.differences] == [block]
    d = diff.differences[0]
    assert (short(d.left), short(d.right)) == (left, right)
    assert list(d.sites) == sites
    assert d.left.block == d.right.block == block
    assert d.explanation and "\n" not in d.explanation
    assert any(s.value in d.explanation for s in sites)


@pytest.mark.parametrize("row,profile,block", SAME, ids=[f"row{r[0]}" for r in SAME])
def test_rows_where_nothing_changes_have_no_difference(row, profile, block):
    diff = diff_semantics(machine_from(profile), blocks=[block])
    assert diff.differences == ()
    assert diff.summary.differ == 0 and diff.summary.blocks == 1
    assert diff.summary.left_offlinable_bytes == diff.summary.right_offlinable_bytes


def test_explanation_names_each_sides_outcome_and_the_deciding_site():
    d = diff_semantics(machine_from(target("Normal", page(MID, "balloon", 64))), blocks=[8]).differences[0]
    assert d.explanation.startswith('refcount fails -EBUSY at scan ("unmovable page"), '
                                    'skippable fails -EBUSY at isolate ("failure to isolate range"): isolation')
    finding = d.findings[0]
    assert (finding.left, finding.right, finding.pages, finding.kinds, finding.pfn) == (
        "movable", "unmovable", 64, ("balloon",), MID)
    assert set(d.changed) == {"reason", "step", "kernel_log"}


def test_referenced_fake_offline_page_hazards_and_logs_on_each_side():
    d = diff_semantics(machine_from(sbm("kernel", pages=REFERENCED)), blocks=[32]).differences[0]
    left_log = {(e.level.value, e.text) for e in d.left.kernel_log}
    right_log = {(e.level.value, e.text) for e in d.right.kernel_log}
    assert ("dump_page", "fake-offline page referenced") in left_log
    assert ("warn_once", "WARN_ON_ONCE(page_count(page) != 1)") in right_log
    assert {(h.side.value, h.hazard.kind.value) for h in d.hazards} == {("left", "warn"), ("right", "warn")}
    going = d.findings[0]
    assert going.site is GOING and "1 still referenced" in going.left and going.right == "virtio-mem does nothing"


def test_foreign_reference_dropped_during_offline_frees_the_page_under_refcount_only():
    diff = diff_semantics(machine_from(sbm("kernel", pages=REFERENCED, env=timing("during-offline"))), blocks=[32])
    d = diff.differences[0]
    assert set(d.changed) == {"kernel_log", "hazards"}
    kinds = {(h.side.value, h.hazard.kind.value) for h in d.hazards}
    assert ("left", "freed_to_buddy") in kinds and not any(side == "right" for side, _ in kinds)
    assert "frees 1 to the buddy" in d.findings[0].left


def test_cancel_after_the_page_was_freed_is_the_cancel_sites_difference():
    # Case 21 with the attempt interrupted: MEM_CANCEL_OFFLINE raises the refcount of a free page.
    profile = sbm("kernel", pages=REFERENCED,
                  env='\n[environment]\nforeign_ref_dropped = "during-offline"\nsignal_pending = true\n')
    d = diff_semantics(machine_from(profile), blocks=[32]).differences[0]
    assert list(d.sites) == [GOING, Site.CANCEL_OFFLINE]
    assert ("left", "refcount_on_free_page") in {(h.side.value, h.hazard.kind.value) for h in d.hazards}
    cancel = d.findings[1]
    assert "1 on page(s) already free in the buddy" in cancel.left and cancel.right == "nothing to undo"


def test_foreign_ref_timing_override_replaces_without_mutating():
    machine = machine_from(sbm("kernel", pages=REFERENCED, env=timing("during-offline")))
    other = with_foreign_ref_timing(machine, "after-offline")
    assert machine.environment.foreign_ref_dropped is ForeignRefTiming.DURING_OFFLINE
    assert other.environment.foreign_ref_dropped is ForeignRefTiming.AFTER_OFFLINE
    assert other.pages is machine.pages and other.blocks is machine.blocks
    assert with_foreign_ref_timing(machine, None) is machine
    assert diff_semantics(other, blocks=[32]).foreign_ref_dropped is ForeignRefTiming.AFTER_OFFLINE
    right = diff_semantics(other, blocks=[32]).differences[0].right
    assert "stale_memmap_reference" in {h.kind.value for h in right.hazards}
    never = with_foreign_ref_timing(machine, ForeignRefTiming.NEVER)
    assert short(diff_semantics(never, blocks=[32]).differences[0].left) == ("fails", "scan")


def test_a_block_that_differs_only_after_one_side_stops_does_not_blame_later_sites():
    # refcount gets to MIGRATE (anon before the balloon page) and prints "failed to isolate pfn";
    # skippable stops at isolation. Only isolation answers differently.
    profile = target("Normal", page(MID - 64, "anon", 8) + page(MID, "balloon", 4))
    d = diff_semantics(machine_from(profile), blocks=[8]).differences[0]
    assert any(e.function == "do_migrate_range" for e in d.left.kernel_log)
    assert list(d.sites) == [ISOLATION]


def test_reached_sites_follow_the_offline_steps():
    diff = diff_semantics(machine_from(sbm("kernel", pages=REFERENCED)), blocks=[32])
    d = diff.differences[0]
    assert reached_sites(d.left) == {ISOLATION, GOING, SCAN, Site.CANCEL_OFFLINE}
    assert reached_sites(d.right) == {ISOLATION, GOING, SCAN, Site.TEST_PAGES_ISOLATED, COMMIT}


def test_skippable_review_profile_reproduces_the_seed_discussion():
    machine = load_profile(bundled("skippable-review.toml"))
    diff = diff_semantics(machine)
    by_block = {d.block: d for d in diff.differences}
    assert sorted(by_block) == [34, 35, 42, 67]
    assert short(by_block[42].left) == ("fails", "scan") and short(by_block[42].right) == ("offlined", None)
    assert by_block[42].left.culprit.kind is PageKind.FAKE_OFFLINE and by_block[42].left.zone.value == "Normal"
    assert list(by_block[34].sites) == [ISOLATION] and list(by_block[35].sites) == [ISOLATION]
    assert list(by_block[67].sites) == [SCAN] and by_block[67].left.zone.value == "Movable"
    owners = {o.kind: o for o in diff.owners}
    assert set(owners) == {PageKind.FAKE_OFFLINE, PageKind.BALLOON, PageKind.BALLOON_MOVABLE,
                           PageKind.OFFLINE_REFCOUNT_DRIVER}
    assert {(z.zone.value, z.left.blocks) for z in owners[PageKind.FAKE_OFFLINE].zones} == {("Normal", 2),
                                                                                            ("Movable", 2)}
    # Zi Yan's answer, computed: the refcount-protocol driver loses offlining in both zones,
    # unmovable balloons only change their failing step (in the kernel zone), movable balloons
    # and virtio-mem keep working (except the referenced fake-offline page, which the patch fixes).
    assert [z.value for z in owners[PageKind.OFFLINE_REFCOUNT_DRIVER].changes_in] == ["Normal", "Movable"]
    driver = {z.zone.value: (z.left.answer, z.right.answer) for z in owners[PageKind.OFFLINE_REFCOUNT_DRIVER].zones}
    assert driver == {"Normal": ("yes", "no"), "Movable": ("yes", "no")}
    balloon = owners[PageKind.BALLOON]
    assert balloon.changes_in == ()
    assert {z.zone.value: z.step_changed_blocks for z in balloon.zones} == {"Normal": 1, "Movable": 0}
    assert "does not change" in balloon.note and "failing step changes in Normal" in balloon.note
    assert owners[PageKind.BALLOON_MOVABLE].changes_in == ()
    fake = owners[PageKind.FAKE_OFFLINE]
    assert [z.value for z in fake.changes_in] == ["Normal"] and "unchanged in Movable" in fake.note
    s = diff.summary
    assert (s.blocks, s.differ) == (42, 4)
    assert s.left_offlinable_bytes - s.right_offlinable_bytes == 128 << 20  # +42, -35, -67


def test_skippable_review_has_partial_blocks_in_both_zones():
    from memplan.engine.simulation import simulate
    result = simulate(load_profile(bundled("skippable-review.toml")), "refcount")
    states = {(v.zone.value, v.device_state) for v in result.blocks if v.device}
    assert ("Normal", "KERNEL_PARTIAL") in states and ("Movable", "MOVABLE_PARTIAL") in states


def test_foreign_reference_timing_reproduces_both_halves_of_davids_argument():
    machine = load_profile(bundled("skippable-review.toml"))
    during = diff_semantics(with_foreign_ref_timing(machine, "during-offline"), blocks=[42]).differences[0]
    after = diff_semantics(with_foreign_ref_timing(machine, "after-offline"), blocks=[42]).differences[0]
    # "once that unexpected reference would get dropped, we would end up freeing that page to the buddy: ouch"
    assert "freed_to_buddy" in {h.kind.value for h in during.left.hazards}
    assert not during.right.hazards
    # "when that unexpected reference would get dropped, we would not end up freeing that page to the buddy"
    assert "stale_memmap_reference" in {h.kind.value for h in after.right.hazards}
    assert "freed_to_buddy" not in {h.kind.value for h in after.right.hazards}


def test_owner_kinds_come_from_the_model():
    assert set(OWNER_KINDS) == {PageKind.FAKE_OFFLINE, PageKind.BALLOON, PageKind.BALLOON_MOVABLE,
                                PageKind.OFFLINE_REFCOUNT_DRIVER, PageKind.OFFLINE_ORPHAN}


def test_orphan_owner_changes_in_its_zone():
    diff = diff_semantics(machine_from(target("Normal", page(MID, "offline_orphan", 4))), blocks=[8])
    (orphan,) = diff.owners
    assert orphan.kind is PageKind.OFFLINE_ORPHAN and orphan.pages == 4
    (zone,) = orphan.zones
    assert (zone.left.answer, zone.right.answer, zone.right.blocked_by_kind) == ("yes", "no", 1)


# --- invariants ---------------------------------------------------------------------------

def _machine(doc):
    return build_machine(copy.deepcopy(doc), "<hypothesis>")


@SETTINGS
@given(st.one_of(ram_machines(), sbm_machines()), st.sampled_from(list(SEMANTICS)))
def test_a_semantics_diffed_with_itself_is_empty(doc, name):
    diff = diff_semantics(_machine(doc), name, name)
    assert diff.differences == ()
    assert all(not z.changes and not z.step_changed_blocks for o in diff.owners for z in o.zones)


@SETTINGS
@given(st.one_of(ram_machines(), sbm_machines()))
def test_swapping_the_sides_mirrors_the_diff_and_every_difference_has_a_site(doc):
    machine = _machine(doc)
    forward = diff_semantics(machine, "refcount", "skippable")
    backward = diff_semantics(machine, "skippable", "refcount")
    assert [d.block for d in forward.differences] == [d.block for d in backward.differences]
    for f, b in zip(forward.differences, backward.differences):
        assert (f.left, f.right) == (b.right, b.left)
        assert f.sites == b.sites
        assert f.sites, f.explanation


class FrozenSemantics(SEMANTICS["skippable"].__class__):
    """A future "frozen PageOffline" kernel: skippable pages have no refcount to check."""

    name = "frozen"
    title = "hypothetical: frozen PageOffline pages"

    def commit_checks(self, refcount, skippable):
        return [check for check in super().commit_checks(refcount, skippable) if "page_count" not in check[1]]


def test_a_third_semantics_needs_no_diff_change(monkeypatch):
    monkeypatch.setitem(SEMANTICS, "frozen", FrozenSemantics())
    machine = machine_from(sbm("kernel", pages=REFERENCED))
    (d,) = diff_semantics(machine, "skippable", "frozen", blocks=[32]).differences
    assert d.changed == ("kernel_log", "hazards")
    assert list(d.sites) == [COMMIT]
    assert d.findings[0].left == "WARN_ON_ONCE(page_count(page) != 1) on 1 page(s)"
    assert d.findings[0].right == "no check fires"
    # Against mainline the commit step is quiet on the frozen side: only the notifier and SCAN differ.
    assert list(diff_semantics(machine, "refcount", "frozen", blocks=[32]).differences[0].sites) == [GOING, SCAN]
