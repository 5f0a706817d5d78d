"""Frozen result types of ``memplan diff-semantics`` (consumed by the renderers).

A ``SemanticsDiff`` holds only the blocks whose verdicts differ between two kernel semantics,
each with both verdicts, the predicate sites of ``offline_pages()`` that explain it, and the
hazards of both sides; plus the per-owner answer to Zi Yan's review question and a summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, Optional, Tuple

from memplan.core.model import ForeignRefTiming, PageKind, Zone
from memplan.core.results import BlockVerdict, Confidence, Hazard, HazardKind, Outcome, Step


class Site(str, Enum):
    """Where the semantics can differ (spec §5.1), in the order offlining reaches them."""

    ISOLATION = "isolation"
    GOING_OFFLINE = "virtio-mem MEM_GOING_OFFLINE"
    SCAN_MOVABLE_PAGES = "scan_movable_pages"
    DO_MIGRATE_RANGE = "do_migrate_range"
    TEST_PAGES_ISOLATED = "test_pages_isolated"
    OFFLINE_ISOLATED_PAGES = "__offline_isolated_pages"
    CANCEL_OFFLINE = "virtio-mem MEM_CANCEL_OFFLINE"


SITE_ORDER: Tuple[Site, ...] = tuple(Site)

#: The verdict fields whose difference makes a block a difference.
VERDICT_FIELDS: Tuple[str, ...] = ("result", "errno", "reason", "step", "culprit", "kernel_log", "hazards")


class Side(str, Enum):
    LEFT = "left"
    RIGHT = "right"


@dataclass(frozen=True)
class SidedHazard:
    """A hazard of one side's verdict."""

    side: Side
    semantics: str
    hazard: Hazard


@dataclass(frozen=True)
class SiteFinding:
    """How one predicate site answers differently on a block's pages.

    ``left``/``right`` say what each side's site does (e.g. ``"-EBUSY on 1 fake_offline
    page"``); ``pages`` counts the pages where the answers differ (0 when the site shows up
    only through the kernel log or a hazard); ``pfn`` is the first of them.
    """

    site: Site
    left: str
    right: str
    pages: int = 0
    kinds: Tuple[str, ...] = ()
    pfn: Optional[int] = None


@dataclass(frozen=True)
class BlockDifference:
    block: int
    left: BlockVerdict
    right: BlockVerdict
    #: the ``VERDICT_FIELDS`` that differ
    changed: Tuple[str, ...]
    #: the findings, one per site, in ``SITE_ORDER``
    findings: Tuple[SiteFinding, ...]
    explanation: str
    hazards: Tuple[SidedHazard, ...]

    @property
    def sites(self) -> Tuple[Site, ...]:
        return tuple(f.site for f in self.findings)

    @property
    def zone(self) -> Optional[Zone]:
        return self.left.zone


@dataclass(frozen=True)
class OwnerOutcome:
    """Blocks holding one PageOffline owner kind in one zone, under one semantics."""

    blocks: int
    offlinable: int
    #: blocks whose verdict names a page of this kind as the culprit
    blocked_by_kind: int
    #: (result, errno, reason, step) of the blocks this kind blocks, most frequent first
    failures: Tuple[Tuple[Outcome, Optional[str], Optional[str], Optional[Step]], ...] = ()

    @property
    def answer(self) -> str:
        """``yes`` (every such block offlines), ``no`` (none does) or ``partly``."""
        if self.offlinable == self.blocks:
            return "yes"
        return "no" if self.offlinable == 0 else "partly"


@dataclass(frozen=True)
class OwnerZone:
    zone: Optional[Zone]
    left: OwnerOutcome
    right: OwnerOutcome
    #: blocks with this kind whose offlinability differs between the sides
    changed_blocks: int
    #: blocks with this kind whose failure (step, reason, errno) differs although both fail
    step_changed_blocks: int

    @property
    def blocks(self) -> int:
        return self.left.blocks

    @property
    def changes(self) -> bool:
        return self.changed_blocks > 0


@dataclass(frozen=True)
class OwnerHazard:
    """The blocks holding one PageOffline owner kind whose verdict carries one hazard kind on a
    page of that owner, under each side (e.g. ``reference_lost_on_online``: the blocks that
    would lose a foreign reference when onlined again)."""

    kind: HazardKind
    left: Tuple[int, ...]
    right: Tuple[int, ...]


@dataclass(frozen=True)
class OwnerAnswer:
    """Zi Yan's question for one PageOffline owner kind: can its blocks still be offlined?"""

    kind: PageKind
    owner: str
    pages: int
    zones: Tuple[OwnerZone, ...]
    note: str
    #: the hazards its pages carry, per hazard kind in ``HazardKind`` order
    hazards: Tuple[OwnerHazard, ...] = ()

    @property
    def changes_in(self) -> Tuple[Optional[Zone], ...]:
        return tuple(z.zone for z in self.zones if z.changes)


@dataclass(frozen=True)
class DiffSummary:
    blocks: int
    differ: int
    left_offlined: int
    right_offlined: int
    left_offlinable_bytes: int
    right_offlinable_bytes: int
    #: ``*_offlinable_bytes`` split by the verdicts' confidence (every level present)
    left_offlinable_by_confidence: Dict[Confidence, int] = field(default_factory=dict)
    right_offlinable_by_confidence: Dict[Confidence, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SemanticsDiff:
    """``memplan diff-semantics``: the same simulation under two semantics, compared."""

    profile: str
    machine: str
    left: str
    right: str
    foreign_ref_dropped: ForeignRefTiming
    differences: Tuple[BlockDifference, ...]
    owners: Tuple[OwnerAnswer, ...]
    summary: DiffSummary
    warnings: Tuple[str, ...] = ()
