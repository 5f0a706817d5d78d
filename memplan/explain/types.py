"""Frozen result types of ``memplan explain`` (consumed by the renderers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from memplan.core.model import PageKind
from memplan.core.results import BlockVerdict
from memplan.kernel.trace import StepRecord


@dataclass(frozen=True)
class PopulationRow:
    """Pages of one kind with one kpageflags value (page-types groups by flags; memplan also
    knows the kind, which kpageflags cannot always tell: ``pinned`` looks like ``anon``)."""

    kind: PageKind
    flags: int
    pages: int
    #: the distinct refcounts of these pages, ascending
    refcounts: Tuple[int, ...]


@dataclass(frozen=True)
class CulpritPage:
    """The verdict's culprit, as page-types would list it."""

    pfn: int
    kind: PageKind
    refcount: int
    flags: int
    description: str


@dataclass(frozen=True)
class BlockStory:
    profile: str
    machine: str
    semantics: str
    semantics_title: str
    verdict: BlockVerdict
    steps: Tuple[StepRecord, ...]
    population: Tuple[PopulationRow, ...]
    culprit: Optional[CulpritPage]
    advice: str
