"""How sure a verdict made from a snapshot is, and which blind spots it rests on (spec §6.3, §8.5).

A snapshot cannot see refcounts, pins, pageblock types or (before 6.17) movable_ops. Every
block is judged twice: with each ambiguous page read as its most likely kind (the verdict
shown) and read as its worst plausible kind. Then:

* ``certain``: no invisible quantity can change the verdict — it is decided before any page
  is looked at (state, zone, holes), or by a page that is visibly unmovable, or the block holds
  nothing a snapshot has to guess about;
* ``likely``: both readings agree, but the verdict rests on something not exported (extra
  references on LRU or fake-offline pages, CMA pageblocks, pages assumed to be kernel
  allocations) — or they disagree only over pages that are hardly ever unmovable (no-flag
  pages in ZONE_MOVABLE, user pages in a per-CPU LRU batch);
* ``unknown``: the readings disagree over pages that may well be unmovable (no-flag pages in
  a kernel zone, unmapped hugetlb folios, balloon pages of unknown movability).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from memplan.core.machine import PageSource
from memplan.core.model import Zone
from memplan.core.results import PAGE_FREE_STEPS, BlockVerdict, Confidence, ForeignRefEffect, Outcome, Step
from memplan.snapshot.evidence import VISIBLY_UNMOVABLE_KERNEL_ZONE, BlockEvidence, PageClass

#: the blind spot of every verdict that needed the pages of a tree without kpageflags
NO_PAGE_FLAGS = ("no page flags saved (proc/kpageflags): what the block's pages hold is not known; "
                 "`memplan snapshot --save DIR` on the machine saves a tree that has them")

#: the blind spot of every verdict that needed the pages of a live machine read without root
NO_PAGE_FLAGS_ROOT = ("page flags not readable (/proc/kpageflags needs root): what the block's pages hold is not "
                      "known; run memplan as root to read them")

#: the blind spot of every page verdict about a block whose zone no file tells
ZONE_ASSUMED = ("zone not known (no valid_zones, no /proc/zoneinfo span): judged as ZONE_NORMAL; in "
                "ZONE_MOVABLE or spanning zones the verdict could differ")

#: the blind spot of a page verdict without page data about a block the kernel itself rated not
#: removable (drivers/base/memory.c removable_show(): before 5.8 is_mem_section_removable() of
#: every section, false on an unmovable page in a pageblock outside ZONE_MOVABLE; since 5.8
#: IS_ENABLED(CONFIG_MEMORY_HOTREMOVE))
REMOVABLE_ZERO = ("the kernel rated the block not removable when the tree was saved (memoryN/removable read zero): "
                  "kernels before 5.8 compute it "
                  "(is_mem_section_removable(): an unmovable page in a pageblock outside ZONE_MOVABLE), so "
                  "offlining would most likely fail -EBUSY \"failure to isolate range\"; since 5.8 it reads zero "
                  "only without CONFIG_MEMORY_HOTREMOVE")

#: the blind spot of a block caught going offline (``MEM_GOING_OFFLINE``: another
#: offline_pages() held device_hotplug_lock when the input was read). A write to its ``state``
#: waits for that lock (lock_device_hotplug_sysfs() restarts the syscall), then meets the
#: other attempt's result: offline (device_offline() returns 1, -EINVAL) or online again
#: (offlined or refused on its pages).
GOING_OFFLINE = ("the block was going offline when the input was read (another offline_pages() in progress): "
                 "the write waits for device_hotplug_lock, then fails -EINVAL if that attempt offlined the block, "
                 "or, if it failed, finds the block online again and succeeds or fails on its pages")

CERTAIN, LIKELY, UNKNOWN = Confidence.CERTAIN, Confidence.LIKELY, Confidence.UNKNOWN
LEVELS = tuple(Confidence)

#: steps at or after SCAN/MIGRATE: the verdict passed isolation and the memory notifier
_MIGRATION_REACHED = Step.SCAN.and_later()


def _key(v: BlockVerdict) -> tuple:
    return (v.result, v.errno, v.reason)


def needs_second_reading(verdict: BlockVerdict, evidence: Optional[BlockEvidence]) -> bool:
    """Whether the pessimistic reading could say something else."""
    return (evidence is not None and evidence.ambiguous > 0 and verdict.step not in PAGE_FREE_STEPS)


def assess(verdict: BlockVerdict, alternative: Optional[BlockVerdict], evidence: Optional[BlockEvidence],
           foreign_reference: ForeignRefEffect,
           no_page_spot: str = NO_PAGE_FLAGS) -> Tuple[Confidence, Tuple[str, ...]]:
    """``(confidence, blind_spots)`` of one snapshot verdict; ``no_page_spot`` is the blind
    spot of a verdict that needed pages the input does not hold."""
    if evidence is None or verdict.step in PAGE_FREE_STEPS:
        return CERTAIN, ()
    if evidence.no_page_data:
        return UNKNOWN, ((no_page_spot,) + ((ZONE_ASSUMED,) if evidence.zone_assumed else ())
                         + ((REMOVABLE_ZERO,) if evidence.removable_zero and verdict.result is Outcome.OFFLINED
                            else ()))
    if evidence.zone_assumed:
        _, spots = _assess_pages(verdict, alternative, evidence, foreign_reference)
        return UNKNOWN, (ZONE_ASSUMED,) + spots
    return _assess_pages(verdict, alternative, evidence, foreign_reference)


def _assess_pages(verdict: BlockVerdict, alternative: Optional[BlockVerdict], evidence: BlockEvidence,
                  foreign_reference: ForeignRefEffect) -> Tuple[Confidence, Tuple[str, ...]]:
    spots: List[str] = []
    n = evidence.count
    movable_zone = verdict.zone is Zone.MOVABLE
    differs = alternative is not None and _key(alternative) != _key(verdict)
    plausible = False
    if differs:
        if n(PageClass.UNFLAGGED):
            if movable_zone:
                spots.append(f"{n(PageClass.UNFLAGGED)} pages with no flags in ZONE_MOVABLE: free per-CPU pages "
                             "or movable pages in transit (a stray unmovable allocation would make offlining hang)")
            else:
                plausible = True
                spots.append(f"{n(PageClass.UNFLAGGED)} pages with no flags could be unmovable kernel allocations")
        if n(PageClass.USER_UNTYPED):
            spots.append(f"{n(PageClass.USER_UNTYPED)} user pages off the LRU (per-CPU LRU batches, drained before "
                         "offlining) are assumed movable")
        unmapped = n(PageClass.HUGETLB_UNMAPPED) + n(PageClass.GIGANTIC_UNMAPPED)
        if unmapped:
            plausible = True
            spots.append(f"{unmapped} hugetlb pages not mapped: free in the pool, or in use but not migratable yet")
        if n(PageClass.BALLOON_UNKNOWN):
            plausible = True
            spots.append(f"{n(PageClass.BALLOON_UNKNOWN)} PageOffline pages outside virtio-mem: balloon pages "
                         "migrate only with balloon compaction, which this kernel does not export")

    visible_cause = (verdict.step is Step.ISOLATE and (
        n(PageClass.RESERVED) > 0 or (not movable_zone and evidence.total(VISIBLY_UNMOVABLE_KERNEL_ZONE) > 0)))
    if n(PageClass.UNTYPED) and not visible_cause:
        spots.append(f"{n(PageClass.UNTYPED)} pages in use without a page type are assumed unmovable kernel "
                     "allocations")

    passed_isolation = verdict.result is Outcome.OFFLINED or verdict.step not in (Step.ISOLATE,)
    reached_migration = verdict.result is Outcome.OFFLINED or verdict.step in _MIGRATION_REACHED
    stuck_at_scan = verdict.result is Outcome.HANGS and verdict.step is Step.SCAN
    if verdict.pages.migrated and reached_migration and not stuck_at_scan:
        spots.append("LRU pages may carry extra references (vmsplice, pins) a snapshot cannot see")
    spot = _foreign_reference_spot(verdict, foreign_reference, reached_migration)
    if spot:
        spots.append(spot)
    if evidence.zone_cma_pages and passed_isolation:
        spots.append(f"the zone has {evidence.zone_cma_pages} CMA pages and CMA pageblocks cannot be located: "
                     "one in this block would fail isolation")

    if differs and plausible:
        return UNKNOWN, tuple(spots)
    if spots or differs:
        return LIKELY, tuple(spots)
    return CERTAIN, ()


def _foreign_reference_spot(verdict: BlockVerdict, effect: ForeignRefEffect, reached_migration: bool) -> Optional[str]:
    """What an invisible extra reference on one of the block's skipped fake-offline pages would
    change (spec rows 20 and 22, §9.1; ``OfflineSemantics.foreign_reference_effect()``).

    ``BLOCKS`` (refcount): SCAN fails -EBUSY, once the attempt gets that far (and had not failed
    there already). ``WARNS`` (skippable): offlining still succeeds, but
    __offline_isolated_pages() prints WARN_ON_ONCE(page_count(page) != 1), and onlining the block
    again loses the reference (``HazardKind.REFERENCE_LOST_ON_ONLINE``): only a block that
    reaches the commit is affected.
    """
    n = verdict.pages.skipped_offline
    if not n:
        return None
    if (effect is ForeignRefEffect.BLOCKS and reached_migration
            and not (verdict.step is Step.SCAN and verdict.result is Outcome.FAILS)):
        return (f"{n} fake-offline pages: an extra reference on one (refcounts are not exported) would fail "
                "offlining with EBUSY")
    if effect is ForeignRefEffect.WARNS and verdict.result is Outcome.OFFLINED:
        # No digit but the count: tables merge blocks whose blind spots differ only in numbers.
        return (f"{n} fake-offline pages: an extra reference on one (refcounts are not exported) would not stop "
                "offlining under PG_offline_skippable, but trip the page_count() WARN_ON_ONCE in "
                "__offline_isolated_pages() and be lost when the block is onlined again (its holder's put_page() "
                "would then free unplugged memory)")
    return None


class SnapshotAssessor:
    """``VerdictAssessor`` of a snapshot machine: the evidence its primary reading recorded per
    block, and the pessimistic reading of the same pages."""

    def __init__(self, evidence: Dict[int, BlockEvidence], alternative: Optional[PageSource],
                 no_page_spot: str = NO_PAGE_FLAGS) -> None:
        #: filled by the primary reading as blocks are materialised
        self.evidence = evidence
        self._alternative = alternative
        #: the blind spot of a verdict that needed pages the input does not hold
        self.no_page_spot = no_page_spot
        #: blocks read in state ``going-offline``
        self.going_offline: frozenset = frozenset()

    def second_reading(self) -> Optional[PageSource]:
        return self._alternative

    def needs_second_reading(self, verdict: BlockVerdict) -> bool:
        return needs_second_reading(verdict, self.evidence.get(verdict.block))

    def assess(self, verdict: BlockVerdict, second: Optional[BlockVerdict],
               foreign_reference: ForeignRefEffect) -> Tuple[Confidence, Tuple[str, ...]]:
        if verdict.block in self.going_offline:
            return UNKNOWN, (GOING_OFFLINE,)
        return assess(verdict, second, self.evidence.get(verdict.block), foreign_reference, self.no_page_spot)
