"""Plain, frozen result types that the kernel model returns and every renderer consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, List, Optional, Sequence, Tuple

from memplan.core.model import Errno, PageKind, Zone


class Outcome(str, Enum):
    """What writing ``offline`` to ``memoryN/state`` would do."""

    OFFLINED = "offlined"
    FAILS = "fails"
    #: the write never returns until a signal arrives (then -EINTR "signal backoff")
    HANGS = "hangs"


class Reason(str, Enum):
    """``offline_pages()``'s reason strings, verbatim (``pr_debug("... failed due to %s")``)."""

    MEMORY_HOLES = "memory holes"
    MULTIZONE_RANGE = "multizone range"
    FAILURE_TO_ISOLATE_RANGE = "failure to isolate range"
    NODE_NOTIFIER_FAILURE = "node notifier failure"
    NOTIFIER_FAILURE = "notifier failure"
    SIGNAL_BACKOFF = "signal backoff"
    UNMOVABLE_PAGE = "unmovable page"
    FAILURE_TO_DISSOLVE_HUGE_PAGES = "failure to dissolve huge pages"


class Step(str, Enum):
    """Where in the offline path the verdict is decided (spec §3)."""

    STATE = "state"
    ZONE = "zone"
    ALIGNMENT = "alignment"
    HOLES = "holes"
    MULTIZONE = "multizone"
    ISOLATE = "isolate"
    NOTIFIER = "notifier"
    SCAN = "scan"
    DISSOLVE = "dissolve"
    TEST_ISOLATED = "test_isolated"
    COMMIT = "commit"


class LogLevel(str, Enum):
    DUMP_PAGE = "dump_page"
    WARN = "warn"
    WARN_ONCE = "warn_once"
    BUG = "bug"
    PR_WARN = "pr_warn"
    PR_DEBUG = "pr_debug"


@dataclass(frozen=True)
class LogEntry:
    """One thing the kernel would print; ``count`` > 1 merges identical consecutive messages."""

    level: LogLevel
    text: str
    pfn: Optional[int] = None
    function: Optional[str] = None
    count: int = 1
    #: printed again every retry round (rate-limited) while the write hangs
    repeats: bool = False


class Confidence(str, Enum):
    """How sure a verdict is: ``certain`` when nothing the input cannot see could change it."""

    CERTAIN = "certain"
    LIKELY = "likely"
    UNKNOWN = "unknown"


class ForeignRefEffect(str, Enum):
    """What one unexpected reference on a (loaded) virtio-mem fake-offline page does to
    offlining under a semantics (spec rows 20 and 22): a snapshot cannot see refcounts."""

    #: SCAN returns -EBUSY "unmovable page" (refcount semantics)
    BLOCKS = "blocks"
    #: offlining succeeds; the commit prints a WARN_ON_ONCE (skippable semantics)
    WARNS = "warns"
    NONE = "none"


class HazardKind(str, Enum):
    """Dangerous situations beyond the outcome (spec rows 20-22, 36)."""

    BUG = "bug"
    WARN = "warn"
    FREED_TO_BUDDY = "freed_to_buddy"
    STALE_MEMMAP_REFERENCE = "stale_memmap_reference"
    UNSAFE_REONLINE = "unsafe_reonline"
    REFCOUNT_ON_FREE_PAGE = "refcount_on_free_page"


@dataclass(frozen=True)
class Hazard:
    kind: HazardKind
    text: str
    pfn: Optional[int] = None


@dataclass(frozen=True)
class Culprit:
    """The page the kernel itself stops at or names."""

    pfn: int
    kind: PageKind
    refcount: int


@dataclass(frozen=True)
class PageCounts:
    """Every page of the block, classified by what offlining does with it.

    ``free + migrated + skipped_offline + dissolved + hwpoison + vmemmap + holes + blocking
    == total`` always holds.
    """

    total: int
    free: int = 0
    migrated: int = 0
    skipped_offline: int = 0
    dissolved: int = 0
    hwpoison: int = 0
    vmemmap: int = 0
    holes: int = 0

    @property
    def blocking(self) -> int:
        return self.total - (self.free + self.migrated + self.skipped_offline + self.dissolved
                             + self.hwpoison + self.vmemmap + self.holes)


@dataclass(frozen=True)
class BlockVerdict:
    """The predicted outcome of offlining one memory block."""

    block: int
    start: int
    end: int
    zone: Optional[Zone]
    node: int
    result: Outcome
    errno: Optional[Errno]
    reason: Optional[Reason]
    step: Optional[Step]
    culprit: Optional[Culprit]
    pages: PageCounts
    kernel_log: Tuple[LogEntry, ...] = ()
    hazards: Tuple[Hazard, ...] = ()
    #: virtio-mem device id and its per-block state name (``virtio_mem_sbm_mb_state``)
    device: Optional[str] = None
    device_state: Optional[str] = None
    #: snapshot verdicts only: certain | likely | unknown, and what the snapshot could not see
    confidence: Optional[Confidence] = None
    blind_spots: Tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    @property
    def offlinable(self) -> bool:
        return self.result is Outcome.OFFLINED


@dataclass(frozen=True)
class Summary:
    blocks: int
    offlined: int
    fails: int
    hangs: int
    offlinable_bytes: int


@dataclass(frozen=True)
class SimulationResult:
    """``memplan simulate``: one verdict per selected block, in block order."""

    profile: str
    machine: str
    semantics: str
    blocks: Tuple[BlockVerdict, ...]
    warnings: Tuple[str, ...] = field(default=())
    #: where the semantics came from when it was chosen automatically (snapshots)
    semantics_reason: Optional[str] = None

    @property
    def summary(self) -> Summary:
        offlined = sum(1 for b in self.blocks if b.result is Outcome.OFFLINED)
        hangs = sum(1 for b in self.blocks if b.result is Outcome.HANGS)
        return Summary(
            blocks=len(self.blocks),
            offlined=offlined,
            fails=len(self.blocks) - offlined - hangs,
            hangs=hangs,
            offlinable_bytes=sum(b.size for b in self.blocks if b.result is Outcome.OFFLINED),
        )


def log_lines(entries: Sequence[LogEntry]) -> List[str]:
    """The kernel log without the pr_debug reason line; per-page messages merged, the pfn
    shown in the kernel's format: ``pr_warn "failed to isolate pfn %lx" x10``."""
    seen: Dict[Tuple[str, str], int] = {}
    for e in entries:
        if e.level is LogLevel.PR_DEBUG:
            continue
        text = e.text.replace(f"pfn {e.pfn:x}", "pfn %lx") if e.pfn is not None else e.text
        seen[(e.level.value, text)] = seen.get((e.level.value, text), 0) + e.count
    return [f"{level} \"{text}\"" + (f" x{n}" if n > 1 else "") for (level, text), n in seen.items()]
