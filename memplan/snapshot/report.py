"""What ``memplan snapshot`` reports: frozen data both the rich renderer and the JSON writer use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class BlockGroup:
    """Memory blocks of one state and zone."""

    state: str
    zone: str  # zone name or "none"
    blocks: int
    bytes: int


@dataclass(frozen=True)
class ClassCount:
    """Pages of one evidence class (``memplan.snapshot.evidence.PageClass``)."""

    label: str
    meaning: str
    pages: int
    #: memplan's reading: the page kind the primary prediction uses
    kind: str


@dataclass(frozen=True)
class FlagsCount:
    """One row of the page-types summary (default view)."""

    flags: int
    pages: int
    symbolic: str
    long_symbolic: str


@dataclass(frozen=True)
class ZoneCount:
    """One zone of ``/proc/zoneinfo`` next to what kpageflags showed in it."""

    node: int
    zone: str
    present: int
    managed: int
    free: int
    pcp: int
    cma: Optional[int]
    #: pages of the zone's online blocks with no flag at all (kpageflags)
    unflagged: int


@dataclass(frozen=True)
class DeviceSummary:
    """A virtio-mem device reconstructed from ``/proc/iomem`` and fake-offline pages."""

    id: str
    start: int
    size: int
    mode: str
    unit_size: int
    #: the mode/unit could not be fully seen and is an assumption
    assumed: bool
    #: upper bound of the unit: the alignment of the fake-offline runs (``None``: no runs)
    unit_max: Optional[int]
    plugged_bytes: int
    blocks: Tuple[int, ...]
    fake_offline_pages: int
    #: fake-offline pages with KPF_DIRTY: kept back when the block was onlined
    kept_back_pages: int
    skippable_pages: int


@dataclass(frozen=True)
class SnapshotReport:
    source: str
    machine: str
    kernel: Optional[str]
    block_size: int
    #: pfns of /proc/kpageflags read: up to the end of the last memory block, or where the
    #: file ends before it (0: no page flags saved)
    pfns: int
    page_size: int
    block_groups: Tuple[BlockGroup, ...]
    classes: Tuple[ClassCount, ...]
    flags: Tuple[FlagsCount, ...]
    zones: Tuple[ZoneCount, ...]
    devices: Tuple[DeviceSummary, ...]
    semantics: str
    semantics_reason: str
    blind_spots: Tuple[str, ...]
    warnings: Tuple[str, ...]
    #: the exact text ``page-types -F kpageflags`` prints
    page_types: str
    saved_to: Optional[str] = None
    #: how the page size was found (``memplan.snapshot.pagesize``)
    page_size_source: str = ""
    #: the snapshot has page flags (False: a sysfs-only tree; every page verdict is unknown)
    flags_saved: bool = True
