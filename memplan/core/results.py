"""Plain, frozen result types that the kernel model returns and every renderer consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, FrozenSet, Iterator, List, Optional, Protocol, Sequence, Tuple

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
    """Where in the offline path the verdict is decided (spec §3); ``PIPELINE`` orders them."""

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

    @property
    def rank(self) -> int:
        """Position in the kernel's order: the rank of the first ``PipelineStep`` deciding here."""
        return _STEP_RANK[self]

    def and_later(self) -> FrozenSet[Step]:
        """This step and every step after it."""
        return frozenset(s for s in Step if s.rank >= self.rank)


class PipelineStep(str, Enum):
    """The steps of ``memory_block_offline()`` / ``offline_pages()`` (spec §3); ``PIPELINE``
    gives their order, kernel function, label and the ``Step`` a verdict decided there reports."""

    STATE = "state"
    ZONE = "zone"
    ALIGNMENT = "alignment"
    HOLES = "holes"
    MULTIZONE = "multizone"
    ISOLATE = "isolate"
    NODE_NOTIFIER = "node_notifier"
    GOING_OFFLINE = "going_offline"
    SIGNAL = "signal"
    SCAN = "scan"
    DISSOLVE = "dissolve"
    TEST_ISOLATED = "test_isolated"
    COMMIT = "commit"

    @property
    def info(self) -> StepInfo:
        return _PIPELINE_INFO[self]

    @property
    def rank(self) -> int:
        """Position in ``PIPELINE`` (0 = the first step)."""
        return self.info.rank

    @property
    def function(self) -> str:
        """The kernel function (or call) that implements the step."""
        return self.info.function

    @property
    def label(self) -> str:
        """A short human name (``SCAN/MIGRATE``, ``pageblock isolation``)."""
        return self.info.label

    @property
    def verdict_step(self) -> Step:
        """The ``Step`` a verdict decided here reports."""
        return self.info.verdict_step


@dataclass(frozen=True)
class StepInfo:
    """One row of ``PIPELINE``."""

    step: PipelineStep
    function: str
    label: str
    verdict_step: Step
    #: the step reads struct pages (``False``: decided from the block's sysfs facts, the
    #: resource tree or the environment alone)
    reads_pages: bool
    rank: int = 0


#: The offline path in the kernel's order: ``memory_block_change_state()`` ->
#: ``memory_block_offline()`` -> ``offline_pages()`` (mm/memory_hotplug.c, ML-NEW torvalds/linux
#: @ c17ee635). The one table of the pipeline's steps: results, the trace, diff and confidence
#: all take their order from here.
PIPELINE: Tuple[StepInfo, ...] = tuple(
    StepInfo(step, function, label, verdict, reads, rank)
    for rank, (step, function, label, verdict, reads) in enumerate((
        (PipelineStep.STATE, "memory_block_change_state()", "block state", Step.STATE, False),
        (PipelineStep.ZONE, "memory_block_offline()", "single zone and node", Step.ZONE, False),
        (PipelineStep.ALIGNMENT, "offline_pages()", "alignment", Step.ALIGNMENT, False),
        (PipelineStep.HOLES, "walk_system_ram_range()", "memory holes", Step.HOLES, False),
        (PipelineStep.MULTIZONE, "offline_pages()", "multizone range", Step.MULTIZONE, False),
        (PipelineStep.ISOLATE, "start_isolate_page_range()", "pageblock isolation", Step.ISOLATE, True),
        (PipelineStep.NODE_NOTIFIER, "node_notify(NODE_REMOVING_LAST_MEMORY)", "node notifier", Step.NOTIFIER,
         False),
        (PipelineStep.GOING_OFFLINE, "memory_notify(MEM_GOING_OFFLINE)", "MEM_GOING_OFFLINE", Step.NOTIFIER, True),
        (PipelineStep.SIGNAL, "signal_pending()", "pending signal", Step.SCAN, False),
        (PipelineStep.SCAN, "scan_movable_pages() + do_migrate_range()", "SCAN/MIGRATE", Step.SCAN, True),
        (PipelineStep.DISSOLVE, "dissolve_free_hugetlb_folios()", "DISSOLVE", Step.DISSOLVE, True),
        (PipelineStep.TEST_ISOLATED, "test_pages_isolated()", "TEST_ISOLATED", Step.TEST_ISOLATED, True),
        (PipelineStep.COMMIT, "__offline_isolated_pages()", "commit", Step.COMMIT, True),
    )))
_PIPELINE_INFO: Dict[PipelineStep, StepInfo] = {info.step: info for info in PIPELINE}
_STEP_RANK: Dict[Step, int] = {}
for _info in PIPELINE:
    _STEP_RANK.setdefault(_info.verdict_step, _info.rank)
assert list(PipelineStep) == [i.step for i in PIPELINE] and list(_STEP_RANK) == list(Step)

#: Steps decided before ``offline_pages()`` looks at a single struct page.
PAGE_FREE_STEPS: FrozenSet[Step] = frozenset(
    i.verdict_step for i in PIPELINE[:next(i.rank for i in PIPELINE if i.reads_pages)])


class Cause(str, Enum):
    """Why an offline attempt does not offline the block: one member per distinct way the
    pipeline stops, named after what the kernel meets. ``cause.step`` is the pipeline step
    deciding it; ``result``, ``errno`` and ``reason`` follow from the cause (the errno of a
    notifier veto is the notifier's)."""

    #: memory_block_change_state(): ``mem->state != MEM_ONLINE``
    NOT_ONLINE = "not_online"
    #: memory_block_offline(): ``mem->zone == NULL`` (the block spans zones or nodes)
    ZONE_NULL = "zone_null"
    #: offline_pages(): range not pageblock-aligned or not ending on a section boundary
    MISALIGNED = "misaligned"
    #: walk_system_ram_range() counts fewer pages than the range holds
    MEMORY_HOLES = "memory_holes"
    #: offline_pages(): first and last page in another zone (WARN_ON_ONCE; unreachable while a
    #: block spanning zones has ``mem->zone == NULL``)
    MULTIZONE_RANGE = "multizone_range"
    #: set_migratetype_isolate(): has_unmovable_pages() found an unmovable page
    UNMOVABLE_PAGE = "unmovable_page"
    #: set_migratetype_isolate(): a MIGRATE_CMA pageblock
    CMA_PAGEBLOCK = "cma_pageblock"
    #: set_migratetype_isolate(): the pageblock is already isolated by someone else
    PAGEBLOCK_ISOLATED = "pageblock_isolated"
    #: node_notify(NODE_REMOVING_LAST_MEMORY) vetoed
    NODE_NOTIFIER_VETO = "node_notifier_veto"
    #: memory_notify(MEM_GOING_OFFLINE) vetoed by a notifier other than virtio-mem
    MEMORY_NOTIFIER_VETO = "memory_notifier_veto"
    #: virtio_mem_memory_notifier_cb(): ``vm->removing``, notifier_from_errno(-EBUSY)
    VIRTIO_MEM_REMOVING = "virtio_mem_removing"
    #: signal_pending() before the first SCAN
    SIGNAL_PENDING = "signal_pending"
    #: scan_movable_pages(): a PageOffline page without movable_ops that is referenced
    #: (refcount) / not PG_offline_skippable (skippable)
    PAGE_OFFLINE_BUSY = "page_offline_busy"
    #: do_migrate_range(): migrate_pages() fails every round on a folio with references
    #: beyond its mapping's (a long-term pin, vmsplice, ...)
    EXTRA_REFERENCES = "extra_references"
    #: do_migrate_range(): no migration target can be allocated (-ENOMEM)
    NO_MIGRATION_TARGET = "no_migration_target"
    #: do_migrate_range(): an in-use gigantic hugetlb folio and no free pool folio of its
    #: hstate outside the range (alloc_migrate_hugetlb_folio() returns NULL for gigantic hstates)
    GIGANTIC_NO_POOL_FOLIO = "gigantic_no_pool_folio"
    #: do_migrate_range(): SCAN finds a folio with refcount 0 that folio_try_get() never gets
    FOLIO_REFCOUNT_ZERO = "folio_refcount_zero"
    #: do_migrate_range(): a large non-hugetlb LRU folio holding a hwpoisoned page is unmapped,
    #: never migrated, and found again by SCAN (no page kind models it yet)
    HWPOISONED_LARGE_FOLIO = "hwpoisoned_large_folio"
    #: dissolve_free_hugetlb_folio(): a free hugetlb folio whose hstate has no headroom
    #: (free_huge_pages <= resv_huge_pages)
    HUGETLB_NO_HEADROOM = "hugetlb_no_headroom"
    #: dissolve_free_hugetlb_folio(): an in-use hugetlb folio SCAN skipped (not migratable)
    HUGETLB_IN_USE = "hugetlb_in_use"
    #: test_pages_isolated(): a page neither free, hwpoisoned nor an accepted PageOffline page,
    #: every round
    PAGE_NOT_ISOLATED = "page_not_isolated"
    #: __offline_isolated_pages(): a BUG_ON fires (the kernel crashes)
    COMMIT_BUG = "commit_bug"

    @property
    def step(self) -> PipelineStep:
        return _CAUSES[self][0]

    @property
    def result(self) -> Outcome:
        return _CAUSES[self][1]

    @property
    def errno(self) -> Optional[Errno]:
        """The errno ``write(2)`` returns (``None``: a vetoing notifier chooses it, or the kernel crashes)."""
        return _CAUSES[self][2]

    @property
    def reason(self) -> Optional[Reason]:
        return _CAUSES[self][3]


_FAILS, _HANGS = Outcome.FAILS, Outcome.HANGS
_ISOLATE = (PipelineStep.ISOLATE, _FAILS, Errno.EBUSY, Reason.FAILURE_TO_ISOLATE_RANGE)
_LOOPS = (PipelineStep.SCAN, _HANGS, Errno.EINTR, Reason.SIGNAL_BACKOFF)
_DISSOLVE = (PipelineStep.DISSOLVE, _FAILS, Errno.EBUSY, Reason.FAILURE_TO_DISSOLVE_HUGE_PAGES)
_CAUSES: Dict[Cause, Tuple[PipelineStep, Outcome, Optional[Errno], Optional[Reason]]] = {
    Cause.NOT_ONLINE: (PipelineStep.STATE, _FAILS, Errno.EINVAL, None),
    Cause.ZONE_NULL: (PipelineStep.ZONE, _FAILS, Errno.EINVAL, None),
    Cause.MISALIGNED: (PipelineStep.ALIGNMENT, _FAILS, Errno.EINVAL, None),
    Cause.MEMORY_HOLES: (PipelineStep.HOLES, _FAILS, Errno.EINVAL, Reason.MEMORY_HOLES),
    Cause.MULTIZONE_RANGE: (PipelineStep.MULTIZONE, _FAILS, Errno.EINVAL, Reason.MULTIZONE_RANGE),
    Cause.UNMOVABLE_PAGE: _ISOLATE,
    Cause.CMA_PAGEBLOCK: _ISOLATE,
    Cause.PAGEBLOCK_ISOLATED: _ISOLATE,
    Cause.NODE_NOTIFIER_VETO: (PipelineStep.NODE_NOTIFIER, _FAILS, None, Reason.NODE_NOTIFIER_FAILURE),
    Cause.MEMORY_NOTIFIER_VETO: (PipelineStep.GOING_OFFLINE, _FAILS, None, Reason.NOTIFIER_FAILURE),
    Cause.VIRTIO_MEM_REMOVING: (PipelineStep.GOING_OFFLINE, _FAILS, Errno.EBUSY, Reason.NOTIFIER_FAILURE),
    Cause.SIGNAL_PENDING: (PipelineStep.SIGNAL, _FAILS, Errno.EINTR, Reason.SIGNAL_BACKOFF),
    Cause.PAGE_OFFLINE_BUSY: (PipelineStep.SCAN, _FAILS, Errno.EBUSY, Reason.UNMOVABLE_PAGE),
    Cause.EXTRA_REFERENCES: _LOOPS,
    Cause.NO_MIGRATION_TARGET: _LOOPS,
    Cause.GIGANTIC_NO_POOL_FOLIO: _LOOPS,
    Cause.FOLIO_REFCOUNT_ZERO: _LOOPS,
    Cause.HWPOISONED_LARGE_FOLIO: _LOOPS,
    Cause.HUGETLB_NO_HEADROOM: _DISSOLVE,
    Cause.HUGETLB_IN_USE: _DISSOLVE,
    Cause.PAGE_NOT_ISOLATED: (PipelineStep.TEST_ISOLATED, _HANGS, Errno.EINTR, Reason.SIGNAL_BACKOFF),
    Cause.COMMIT_BUG: (PipelineStep.COMMIT, _FAILS, None, None),
}
assert set(_CAUSES) == set(Cause)


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
    #: printed again every retry round while the write hangs
    repeats: bool = False
    #: printed through a printk rate limit shared with other call sites (and every other
    #: block's offline attempts): it may be missing from dmesg, counted only in a later
    #: "N callbacks suppressed" line (do_migrate_range()'s ``migrate_rs``)
    ratelimited: bool = False


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
    """Dangerous situations beyond the outcome (spec rows 20-22, 36, §9.1)."""

    BUG = "bug"
    WARN = "warn"
    FREED_TO_BUDDY = "freed_to_buddy"
    STALE_MEMMAP_REFERENCE = "stale_memmap_reference"
    UNSAFE_REONLINE = "unsafe_reonline"
    REFCOUNT_ON_FREE_PAGE = "refcount_on_free_page"
    #: online_pages() re-initialises the memmap (memmap_init_range() -> __init_single_page() ->
    #: init_page_count()): a foreign reference held on a fake-offline page across offlining is
    #: lost, and the holder's later put_page() frees an unplugged page to the buddy (spec §9.1)
    REFERENCE_LOST_ON_ONLINE = "reference_lost_on_online"


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
    #: certain | likely | unknown, and what the input could not see: a profile describes its
    #: machine exactly, so its verdicts are certain (the default, free for the 131072 verdicts
    #: of a 16 TiB machine); snapshot verdicts get theirs from ``Machine.assessor``
    confidence: Optional[Confidence] = Confidence.CERTAIN
    blind_spots: Tuple[str, ...] = ()
    #: why the block does not offline (``None`` when it does)
    cause: Optional[Cause] = None
    #: ``False``: the input holds no page data for the block (a tree without kpageflags, a live
    #: machine read without root), so ``pages`` beyond ``total`` is a stand-in the verdict was
    #: judged with, not a count: renderers show it as unknown (``-``, empty, ``null``)
    pages_known: bool = True

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
    #: ``offlinable_bytes`` split by the verdicts' confidence (every member present)
    offlinable_bytes_by_confidence: Dict[Confidence, int] = field(default_factory=dict)
    #: verdicts rated ``unknown``
    unknown_blocks: int = 0
    #: ``offlined`` split by the verdicts' confidence (``--check`` with ``--trust``)
    offlined_by_confidence: Dict[Confidence, int] = field(default_factory=dict)


class Verdicts(Protocol):
    """What renderers consume (interface I1): the run's facts, then the verdicts in block
    order, once; ``summary`` is valid after iteration."""

    @property
    def profile(self) -> str: ...

    @property
    def machine(self) -> str: ...

    @property
    def semantics(self) -> str: ...

    @property
    def semantics_reason(self) -> Optional[str]: ...

    @property
    def warnings(self) -> Tuple[str, ...]: ...

    def __iter__(self) -> Iterator[BlockVerdict]: ...

    @property
    def summary(self) -> Summary: ...


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

    def __iter__(self) -> Iterator[BlockVerdict]:
        return iter(self.blocks)

    @property
    def summary(self) -> Summary:
        offlined = sum(1 for b in self.blocks if b.result is Outcome.OFFLINED)
        hangs = sum(1 for b in self.blocks if b.result is Outcome.HANGS)
        by_confidence = {c: 0 for c in Confidence}
        offlined_by_confidence = {c: 0 for c in Confidence}
        for b in self.blocks:
            if b.result is Outcome.OFFLINED:
                by_confidence[b.confidence or Confidence.CERTAIN] += b.size
                offlined_by_confidence[b.confidence or Confidence.CERTAIN] += 1
        return Summary(
            blocks=len(self.blocks),
            offlined=offlined,
            fails=len(self.blocks) - offlined - hangs,
            hangs=hangs,
            offlinable_bytes=sum(by_confidence.values()),
            offlinable_bytes_by_confidence=by_confidence,
            unknown_blocks=sum(1 for b in self.blocks if b.confidence is Confidence.UNKNOWN),
            offlined_by_confidence=offlined_by_confidence,
        )


#: The mark ``log_lines()`` puts on a line printed through a shared printk rate limit.
RATELIMITED_MARK = "(rate-limited)"


def log_lines(entries: Sequence[LogEntry]) -> List[str]:
    """The kernel log without the pr_debug reason line; per-page messages merged, the pfn
    shown in the kernel's format, rate-limited lines marked (they may be missing from dmesg):
    ``pr_warn "failed to isolate pfn %lx" x10 (rate-limited)``."""
    seen: Dict[Tuple[str, str, bool], int] = {}
    for e in entries:
        if e.level is LogLevel.PR_DEBUG:
            continue
        text = e.text.replace(f"pfn {e.pfn:x}", "pfn %lx") if e.pfn is not None else e.text
        key = (e.level.value, text, e.ratelimited)
        seen[key] = seen.get(key, 0) + e.count
    return [f"{level} \"{text}\"" + (f" x{n}" if n > 1 else "") + (f" {RATELIMITED_MARK}" if limited else "")
            for (level, text, limited), n in seen.items()]
