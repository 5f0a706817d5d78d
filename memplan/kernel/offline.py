"""``offline_pages()`` for one memory block at a time, over numpy page arrays (spec §3).

Step order follows ``memory_block_offline()`` (drivers/base/memory.c) and ``offline_pages()``
(mm/memory_hotplug.c, ML-NEW torvalds/linux @ c17ee635): state -> zone -> alignment ->
holes -> multizone -> isolation -> node notifier -> MEM_GOING_OFFLINE -> signal ->
SCAN/MIGRATE -> DISSOLVE -> TEST_ISOLATED -> commit. The variant-specific predicates come
from ``OfflineSemantics``; nothing else differs between the variants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from memplan.core.geometry import Geometry
from memplan.kernel import hugetlb as hugetlb_mod
from memplan.kernel.isolation import isolate_range, isolation_order, unmovable_pages
from memplan.kernel.migration import MigrationTargets, migrate
from memplan.kernel.pages import RangeView, first_index, per_page_entries
from memplan.kernel.semantics import OfflineSemantics
from memplan.kernel.virtio_mem import fake_offline_skippable
from memplan.core.model import (
    DEFAULT_REFCOUNT, BlockState, DriverState, Errno, ForeignRefTiming, PageKind, Zone,
)
from memplan.core.machine import Environment, HugetlbPool, VirtioMemDevice
from memplan.core.results import (
    BlockVerdict, Culprit, Hazard, HazardKind, LogEntry, LogLevel, Outcome, PageCounts, Reason, Step,
)
from memplan.kernel.trace import PipelineStep, StepRecord, StepStatus, TraceRecorder


@dataclass(frozen=True)
class OfflineSetup:
    """What every block of one run shares."""

    geometry: Geometry
    semantics: OfflineSemantics
    environment: Environment
    #: resolved pool counters by folio order
    pools: Dict[int, HugetlbPool]
    #: present pages per node (``pgdat->node_present_pages``, vmemmap of online blocks included)
    node_present_pages: Dict[int, int] = field(default_factory=dict)
    #: NUMA node notifiers exist (v6.17+)
    node_notifier: bool = True


@dataclass(frozen=True)
class BlockContext:
    """One memory block's static facts."""

    block: int
    start_pfn: int
    state: BlockState
    zone: Optional[Zone]
    node: int
    vmemmap: int
    device: Optional[VirtioMemDevice]
    device_state: Optional[str]
    #: per pageblock of the block: CMA, already isolated by someone else
    cma: np.ndarray
    isolated: np.ndarray
    targets: MigrationTargets = field(default_factory=MigrationTargets)


@dataclass(frozen=True, eq=False)
class OfflineEffects:
    """What an attempt changed in the machine, whatever its verdict.

    ``offline_pages()`` never undoes a migration or a dissolve: after a failure (or a signal
    ending a hang) the folios migrated so far live elsewhere and their source pages are free
    in the block. Masks cover the offlined range (the block minus its vmemmap pages, which
    start ``offset`` pages into the block).
    """

    offset: int
    #: pages of folios migrated to a freshly allocated target
    migrated: np.ndarray
    #: pages of hugetlb folios migrated to a free pool folio outside the block (their source
    #: went back to the pool as a free folio)
    pool_migrated: np.ndarray
    #: pages of free hugetlb folios dissolved (``dissolve_free_hugetlb_folios()``)
    dissolved: np.ndarray


@dataclass(frozen=True)
class BlockStats:
    """By-products other blocks' verdicts depend on (migration targets, hugetlb pools)."""

    free_pages: int
    demand: int
    free_hugetlb: Dict[int, int]
    #: page-level effects (``offline_block()`` only; ``None`` when nothing was migrated or dissolved)
    effects: Optional[OfflineEffects] = field(default=None, compare=False)


#: The pipeline works on int32 refcounts (``DEFAULT_REFCOUNT``'s type; the kernel's is an atomic_t).
_DEFAULT_REFCOUNT32 = DEFAULT_REFCOUNT.astype(np.int32)


def pr_debug_entry(start_pfn: int, end_pfn: int, reason: Reason, page_shift: int) -> LogEntry:
    """``offline_pages()``'s ``pr_debug("memory offlining [mem %#010llx-%#010llx] failed due to %s")``."""
    start = start_pfn << page_shift
    end = (end_pfn << page_shift) - 1
    return LogEntry(LogLevel.PR_DEBUG, f"memory offlining [mem {start:#010x}-{end:#010x}] failed due to "
                    f"{reason.value}", None, "offline_pages")


def offline_block(setup: OfflineSetup, ctx: BlockContext, kinds: np.ndarray,
                  refcount: Optional[np.ndarray]) -> Tuple[BlockVerdict, BlockStats]:
    """Predict writing ``offline`` to ``memoryN/state`` for one block (its pages in ``kinds``)."""
    return _offline_block(setup, ctx, kinds, refcount, None)


def offline_block_traced(setup: OfflineSetup, ctx: BlockContext, kinds: np.ndarray,
                         refcount: Optional[np.ndarray]) -> Tuple[BlockVerdict, BlockStats, Tuple[StepRecord, ...]]:
    """``offline_block()`` plus what every step of the pipeline decided (``memplan explain``).

    The verdict and stats are exactly ``offline_block()``'s: the same code runs, it only
    records each step's outcome on the way.
    """
    recorder = TraceRecorder()
    verdict, stats = _offline_block(setup, ctx, kinds, refcount, recorder)
    return verdict, stats, recorder.steps()


def _offline_block(setup: OfflineSetup, ctx: BlockContext, kinds: np.ndarray, refcount: Optional[np.ndarray],
                   trace: Optional[TraceRecorder]) -> Tuple[BlockVerdict, BlockStats]:
    geo, sem, env = setup.geometry, setup.semantics, setup.environment

    def record(step: PipelineStep, status: StepStatus, detail: str, pfn: Optional[int] = None,
               count: Optional[int] = None) -> None:
        if trace is not None:
            trace.record(step, status, detail, pfn, count)

    ppb = geo.pages_per_block
    block_end_pfn = ctx.start_pfn + ppb
    common = dict(block=ctx.block, start=ctx.start_pfn << geo.page_shift,
                  end=(block_end_pfn << geo.page_shift) - 1, zone=ctx.zone, node=ctx.node,
                  device=ctx.device.id if ctx.device else None, device_state=ctx.device_state)
    free_pages = int(np.count_nonzero(kinds == PageKind.FREE.value))

    # Step 0: memory_block_change_state(): only an online block can go offline (state_store()
    # turns device_offline()'s "already offline" into -EINVAL).
    if ctx.state is not BlockState.ONLINE:
        record(PipelineStep.STATE, StepStatus.FAILED, f"the block is {ctx.state.value}: only an online block can go "
               "offline (state_store() returns -EINVAL)")
        return (BlockVerdict(**common, result=Outcome.FAILS, errno=Errno.EINVAL, reason=None, step=Step.STATE,
                             culprit=None, pages=PageCounts(total=ppb)), BlockStats(0, 0, {}))

    record(PipelineStep.STATE, StepStatus.PASSED, "online; mem->state becomes MEM_GOING_OFFLINE")
    nr_vmemmap = ctx.vmemmap
    view = _range_view(sem, ctx, kinds, refcount)
    lo, k, skippable = view.pfn, view.kinds, view.skippable
    log: List[LogEntry] = []
    hazards: List[Hazard] = []
    #: hazards of MEM_CANCEL_OFFLINE, which runs when offlining fails after MEM_GOING_OFFLINE
    on_cancel: List[Hazard] = []

    # Classification of every page, whatever step decides the verdict.
    pools = setup.pools
    in_block_free = {o: hugetlb_mod.free_folio_heads(k, lo, o) for o in (9, 18)}
    targets = MigrationTargets(
        capacity=ctx.targets.capacity,
        pool={o: (max(pools[o].free - in_block_free[o], 0) if pools[o].headroom > 0 else 0) for o in (9, 18)},
    )
    notified = _going_offline_refcounts(view, ctx, sem, env)
    after_notifier = (view.with_refcount(notified.refcount) if notified.kinds is view.kinds
                      else RangeView(lo, notified.kinds, notified.refcount, skippable))
    moved = migrate(after_notifier, sem, targets)
    # Migration frees whole folios or returns hugetlb sources to the pool in place: the hugetlb
    # folio boundaries dissolve walks are the ones before migration.
    folio_first = after_notifier.first
    dis = hugetlb_mod.dissolve(moved.kinds_after, moved.refcount_after, folio_first,
                               {o: pools[o].headroom for o in (9, 18)})
    originally_free_huge = (k == PageKind.HUGETLB_FREE.value) | (k == PageKind.GIGANTIC_FREE.value)
    offline_pages_mask = after_notifier.offline & ~after_notifier.movable_ops
    skipped = offline_pages_mask & sem.test_passes(after_notifier.refcount, skippable)
    counts = PageCounts(
        total=ppb,
        free=int(np.count_nonzero(after_notifier.buddy)),
        migrated=int(np.count_nonzero(moved.migrated)),
        skipped_offline=int(np.count_nonzero(skipped)),
        dissolved=int(np.count_nonzero(dis.dissolvable & originally_free_huge)),
        hwpoison=int(np.count_nonzero(view.hwpoison)),
        vmemmap=nr_vmemmap,
        holes=int(np.count_nonzero(k == PageKind.HOLE.value)),
    )
    stats = BlockStats(free_pages, moved.demand, in_block_free)

    def effects() -> BlockStats:
        # Reached only after the retry loops started: migration (and dissolving, once SCAN
        # found nothing left) already happened.
        none = np.zeros(len(k), dtype=bool)
        pool = moved.pool if moved.pool is not None else none
        return BlockStats(stats.free_pages, stats.demand, stats.free_hugetlb, OfflineEffects(
            offset=nr_vmemmap,
            migrated=(moved.migrated & ~pool) if moved.ran else none,
            pool_migrated=pool if moved.ran else none,
            dissolved=dis.dissolved if moved.result == "none_left" else none,
        ))

    def verdict(result: Outcome, errno: Optional[Errno], reason: Optional[Reason], step: Step,
                culprit_index: Optional[int] = None, culprit_view: RangeView = view,
                ran: bool = False) -> Tuple[BlockVerdict, BlockStats]:
        culprit = None
        if culprit_index is not None:
            culprit = Culprit(pfn=lo + culprit_index, kind=PageKind(int(culprit_view.kinds[culprit_index])),
                              refcount=int(culprit_view.refcount[culprit_index]))
        entries = list(log)
        if reason is not None:
            entries.append(pr_debug_entry(lo, block_end_pfn, reason, geo.page_shift))
        found = tuple(hazards) + (tuple(on_cancel) if step is not Step.COMMIT else ())
        return (BlockVerdict(**common, result=result, errno=errno, reason=reason, step=step, culprit=culprit,
                             pages=counts, kernel_log=tuple(entries), hazards=found),
                effects() if ran else stats)

    # Step 1: memory_block_offline(): mem->zone is NULL for early blocks spanning zones/nodes.
    if ctx.zone is None:
        record(PipelineStep.ZONE, StepStatus.FAILED, "mem->zone is NULL (valid_zones: none): the block spans two "
               "zones or two nodes")
        return verdict(Outcome.FAILS, Errno.EINVAL, None, Step.ZONE)
    record(PipelineStep.ZONE, StepStatus.PASSED, f"mem->zone is ZONE_{ctx.zone.value.upper()}, node {ctx.node}"
           + (f"; {nr_vmemmap} self-hosted memmap pages stay out of the range" if nr_vmemmap else ""))

    # Step 2: offline_pages() alignment sanity check (memmap_on_memory shifts the start).
    if not len(k) or lo % geo.pageblock_pages or block_end_pfn % geo.pages_per_section:
        log.append(LogEntry(LogLevel.WARN_ONCE, "WARN_ON_ONCE(!nr_pages || !pageblock_aligned(start_pfn) || "
                            "!IS_ALIGNED(start_pfn + nr_pages, PAGES_PER_SECTION))", lo, "offline_pages"))
        record(PipelineStep.ALIGNMENT, StepStatus.FAILED, f"[{lo:#x}, {block_end_pfn:#x}) is not pageblock-aligned "
               "or does not end on a section boundary: WARN_ON_ONCE", lo)
        return verdict(Outcome.FAILS, Errno.EINVAL, None, Step.ALIGNMENT)
    record(PipelineStep.ALIGNMENT, StepStatus.PASSED, f"pfn {lo:#x}-{block_end_pfn - 1:#x} ({len(k)} pages): "
           "pageblock-aligned start, section-aligned end")

    # Step 3: walk_system_ram_range() must count every page.
    if counts.holes:
        record(PipelineStep.HOLES, StepStatus.FAILED, f"{counts.holes} of {len(k)} pages are not System RAM",
               lo + int(np.argmax(k == PageKind.HOLE)))
        return verdict(Outcome.FAILS, Errno.EINVAL, Reason.MEMORY_HOLES, Step.HOLES)
    record(PipelineStep.HOLES, StepStatus.PASSED, f"all {len(k)} pages are System RAM")

    # Step 4: "multizone range" cannot happen here: a block spanning zones has mem->zone NULL
    # and was rejected in step 1 (the kernel keeps the check as a WARN_ON_ONCE sanity test).
    record(PipelineStep.MULTIZONE, StepStatus.PASSED, f"first and last page are in ZONE_{ctx.zone.value.upper()}")

    # Step 6: start_isolate_page_range(PB_ISOLATE_MODE_MEM_OFFLINE).
    unmovable = unmovable_pages(view, ctx.zone is Zone.MOVABLE, sem)
    pb_skip = nr_vmemmap // geo.pageblock_pages
    failure = isolate_range(unmovable, geo.pageblock_pages, ctx.cma[pb_skip:], ctx.isolated[pb_skip:])
    if failure is not None:
        if failure.dumped:
            log.append(LogEntry(LogLevel.DUMP_PAGE, "unmovable page", lo + failure.index, "set_migratetype_isolate"))
        if trace is not None:
            record(PipelineStep.ISOLATE, StepStatus.FAILED,
                   _isolation_detail(len(unmovable) // geo.pageblock_pages, failure.pageblock, failure.cause,
                                     PageKind(int(k[failure.index])), lo, geo.pageblock_pages),
                   lo + failure.index)
        return verdict(Outcome.FAILS, Errno.EBUSY, Reason.FAILURE_TO_ISOLATE_RANGE, Step.ISOLATE, failure.index)
    if trace is not None:
        record(PipelineStep.ISOLATE, StepStatus.PASSED,
               _isolation_detail(len(unmovable) // geo.pageblock_pages, None, "", None, lo, geo.pageblock_pages)
               + ("; ZONE_MOVABLE: only PG_reserved pages count as unmovable" if ctx.zone is Zone.MOVABLE else ""))

    # Step 7: node notifier (v6.17+) when this offline would empty the node.
    last_memory = len(k) >= setup.node_present_pages.get(ctx.node, 0) - nr_vmemmap
    if setup.node_notifier and env.node_notifier_veto is not None and last_memory:
        record(PipelineStep.NODE_NOTIFIER, StepStatus.FAILED, f"the block is node {ctx.node}'s last memory and a node "
               f"notifier vetoes NODE_REMOVING_LAST_MEMORY with -{env.node_notifier_veto.value}")
        return verdict(Outcome.FAILS, env.node_notifier_veto, Reason.NODE_NOTIFIER_FAILURE, Step.NOTIFIER)
    if not setup.node_notifier:
        record(PipelineStep.NODE_NOTIFIER, StepStatus.PASSED, "this kernel has no node notifiers (before 6.17)")
    elif last_memory:
        record(PipelineStep.NODE_NOTIFIER, StepStatus.PASSED, f"node {ctx.node}'s last memory: "
               "NODE_REMOVING_LAST_MEMORY, nobody vetoes")
    else:
        record(PipelineStep.NODE_NOTIFIER, StepStatus.PASSED, f"node {ctx.node} keeps other memory: not sent")

    # Step 8: memory_notify(MEM_GOING_OFFLINE). virtio-mem's handler runs for its own blocks.
    device = ctx.device
    if device is not None and device.driver is DriverState.REMOVING:
        # vm->removing: notifier_from_errno(-EBUSY); its MEM_CANCEL_OFFLINE is ignored.
        record(PipelineStep.GOING_OFFLINE, StepStatus.FAILED, f"virtio-mem {device.id} is being removed "
               "(vm->removing): its notifier returns -EBUSY")
        return verdict(Outcome.FAILS, Errno.EBUSY, Reason.NOTIFIER_FAILURE, Step.NOTIFIER)
    log.extend(notified.log)
    hazards.extend(notified.hazards)
    taken_back = notified.dropped & notified.freed
    if taken_back.any():
        # Every failure from here on sends MEM_CANCEL_OFFLINE: virtio_mem_fake_offline_cancel_offline()
        # does page_ref_inc() on every page whose reference it dropped (drivers/virtio/virtio_mem.c,
        # ML-NEW), including the ones put_page() freed meanwhile; undo_isolate_page_range() then
        # returns them to the ordinary free lists with refcount 1 (spec row 21).
        pfn = lo + int(np.flatnonzero(taken_back)[0])
        on_cancel.append(Hazard(HazardKind.REFCOUNT_ON_FREE_PAGE,
                                f"MEM_CANCEL_OFFLINE: page_ref_inc() on {int(taken_back.sum())} fake-offline page(s) "
                                "already freed to the buddy: unplugged memory back on the free lists with refcount "
                                "1", pfn))
    notes = _notifier_detail(view, notified, device, sem) if trace is not None else ""
    if env.notifier_veto is not None:
        # Another notifier vetoes; MEM_CANCEL_OFFLINE lets virtio-mem re-take its references.
        record(PipelineStep.GOING_OFFLINE, StepStatus.FAILED, f"{notes}; another memory notifier vetoes with "
               f"-{env.notifier_veto.value} (MEM_CANCEL_OFFLINE follows)")
        return verdict(Outcome.FAILS, env.notifier_veto, Reason.NOTIFIER_FAILURE, Step.NOTIFIER)
    record(PipelineStep.GOING_OFFLINE, StepStatus.PASSED, notes)

    # Step 9: the retry loops.
    if env.signal_pending:
        record(PipelineStep.SIGNAL, StepStatus.FAILED, "a signal is pending on the writing task: -EINTR before the "
               "first SCAN")
        return verdict(Outcome.FAILS, Errno.EINTR, Reason.SIGNAL_BACKOFF, Step.SCAN)
    record(PipelineStep.SIGNAL, StepStatus.PASSED, "no signal pending")
    log.extend(moved.log)
    if moved.result == "busy":
        record(PipelineStep.SCAN, StepStatus.FAILED, _scan_busy_detail(after_notifier, moved.index, sem)
               if trace is not None else "", lo + int(moved.index))
        return verdict(Outcome.FAILS, Errno.EBUSY, Reason.UNMOVABLE_PAGE, Step.SCAN, moved.index, after_notifier,
                       ran=True)
    if moved.result == "loops":
        record(PipelineStep.SCAN, StepStatus.HANGS, _scan_loop_detail(after_notifier, moved.index, targets)
               if trace is not None else "", lo + int(moved.index))
        return verdict(Outcome.HANGS, Errno.EINTR, Reason.SIGNAL_BACKOFF, Step.SCAN, moved.index, after_notifier,
                       ran=True)
    record(PipelineStep.SCAN, StepStatus.PASSED, f"MIGRATE moved {counts.migrated} pages; SCAN then finds nothing "
           "(-ENOENT)" if counts.migrated else "SCAN finds nothing to migrate (-ENOENT)")
    if dis.failure is not None:
        if trace is not None:
            after_migration = RangeView(lo, moved.kinds_after, moved.refcount_after, skippable)
            failed_kind = PageKind(int(moved.kinds_after[dis.failure]))
            record(PipelineStep.DISSOLVE, StepStatus.FAILED,
                   _dissolve_detail(after_migration, dis.failure, {o: pools[o].headroom for o in (9, 18)}),
                   lo + int(dis.failure), hugetlb_mod.free_folio_heads(
                       moved.kinds_after, lo, 18 if failed_kind is PageKind.GIGANTIC_FREE else 9))
        return verdict(Outcome.FAILS, Errno.EBUSY, Reason.FAILURE_TO_DISSOLVE_HUGE_PAGES, Step.DISSOLVE,
                       dis.failure, RangeView(lo, moved.kinds_after, moved.refcount_after, skippable), ran=True)
    if trace is not None:
        n_dissolved = int(np.count_nonzero(dis.dissolved))
        record(PipelineStep.DISSOLVE, StepStatus.PASSED, f"{n_dissolved} pages of free hugetlb folios dissolved"
               if n_dissolved else "no free hugetlb folio in the range")
    final_kinds = moved.kinds_after.copy()
    final_kinds[dis.dissolved] = PageKind.FREE
    final = RangeView(lo, final_kinds, moved.refcount_after, skippable)
    passes = final.buddy | final.hwpoison | (final.offline & sem.test_passes(final.refcount, skippable))
    stuck = first_index(~passes)
    if stuck is not None:
        # test_pages_isolated() fails every round: the outer loop never ends.
        record(PipelineStep.TEST_ISOLATED, StepStatus.HANGS,
               f"pfn {lo + stuck:#x} ({PageKind(int(final.kinds[stuck])).label}, refcount {int(final.refcount[stuck])}) "
               "is not free, not hwpoisoned and not an accepted PageOffline page: -EBUSY every round",
               lo + stuck)
        return verdict(Outcome.HANGS, Errno.EINTR, Reason.SIGNAL_BACKOFF, Step.TEST_ISOLATED, stuck, final,
                       ran=True)

    # Step 10: __offline_isolated_pages() (predicate site 5).
    offline_idx = np.flatnonzero(final.offline)
    bugged = False
    for level, text, function, hazard, mask in sem.commit_checks(final.refcount[offline_idx],
                                                                 final.skippable[offline_idx]):
        hits = offline_idx[mask]
        if len(hits):
            pfn = lo + int(hits[0])
            log.append(LogEntry(level, text, pfn, function))
            hazards.append(Hazard(hazard, f"{text} at commit ({len(hits)} page(s))", pfn))
            bugged |= level is LogLevel.BUG
    if bugged:
        record(PipelineStep.TEST_ISOLATED, StepStatus.PASSED, "every page is free, hwpoisoned or accepted PageOffline")
        record(PipelineStep.COMMIT, StepStatus.FAILED, "; ".join(e.text for e in log if e.level is LogLevel.BUG)
               + ": the kernel crashes", lo + int(offline_idx[0]) if len(offline_idx) else None)
        return verdict(Outcome.FAILS, None, None, Step.COMMIT, int(offline_idx[0]) if len(offline_idx) else None, final,
                       ran=True)
    hazards.extend(_after_success_hazards(view, after_notifier, sem, env))
    if trace is not None:
        record(PipelineStep.TEST_ISOLATED, StepStatus.PASSED, "every page is free, hwpoisoned or accepted PageOffline")
        warned = [e.text for e in log if e.function == "__offline_isolated_pages"]
        record(PipelineStep.COMMIT, StepStatus.PASSED, f"{len(offline_idx)} PageOffline pages counted as already "
               "offline, the rest taken off the free lists" + (f"; {'; '.join(warned)}" if warned else ""))
    return (BlockVerdict(**common, result=Outcome.OFFLINED, errno=None, reason=None, step=None, culprit=None,
                         pages=counts, kernel_log=tuple(log), hazards=tuple(hazards)), effects())


def _range_view(sem: OfflineSemantics, ctx: BlockContext, kinds: np.ndarray,
                refcount: Optional[np.ndarray]) -> RangeView:
    """The pages ``offline_pages()`` gets (vmemmap excluded) with ``PageOfflineSkippable``."""
    lo = ctx.start_pfn + ctx.vmemmap
    k = kinds[ctx.vmemmap:]
    ref = np.take(_DEFAULT_REFCOUNT32, k) if refcount is None else refcount[ctx.vmemmap:].astype(np.int32)
    skippable = np.zeros(len(k), dtype=bool)
    if ctx.device is not None and fake_offline_skippable(ctx.device, ctx.device_state,
                                                         sem.virtio_mem_marks_skippable,
                                                         sem.virtio_mem_unload_clears_skippable):
        skippable = k == PageKind.FAKE_OFFLINE.value
    return RangeView(lo, k, ref, skippable)


@dataclass(frozen=True)
class PredicateInputs:
    """One block's pages as the predicate sites of one semantics see them.

    ``before``: at isolation (site 1); ``after``: once every MEM_GOING_OFFLINE handler ran and
    the foreign-reference timing applied (sites 2-5); ``dropped``: pages whose reference
    virtio-mem dropped in MEM_GOING_OFFLINE (MEM_CANCEL_OFFLINE re-takes it); ``freed``: pages
    ``put_page()`` freed to the buddy meanwhile. ``diff-semantics`` compares these per site.
    """

    before: RangeView
    after: RangeView
    dropped: np.ndarray
    freed: np.ndarray


def predicate_inputs(setup: OfflineSetup, ctx: BlockContext, kinds: np.ndarray,
                     refcount: Optional[np.ndarray]) -> PredicateInputs:
    """What ``offline_block()`` feeds the semantics' predicate sites for this block."""
    view = _range_view(setup.semantics, ctx, kinds, refcount)
    notified = _going_offline_refcounts(view, ctx, setup.semantics, setup.environment)
    after = RangeView(view.pfn, notified.kinds, notified.refcount, view.skippable)
    return PredicateInputs(view, after, notified.dropped, notified.freed)


@dataclass
class _Notified:
    kinds: np.ndarray
    refcount: np.ndarray
    log: List[LogEntry]
    hazards: List[Hazard]
    #: pages whose reference virtio-mem dropped
    dropped: np.ndarray
    #: pages put_page() freed to the buddy while offlining
    freed: np.ndarray


def _going_offline_refcounts(view: RangeView, ctx: BlockContext, sem: OfflineSemantics,
                             env: Environment) -> _Notified:
    """Refcounts after every MEM_GOING_OFFLINE handler ran (and the foreign-reference timing).

    virtio-mem (R): ``virtio_mem_fake_offline_going_offline()`` does ``page_ref_dec_and_test()``
    on every page of its unplugged sub-blocks (SBM) or FAKE_OFFLINE big block (BBM) and
    ``WARN_ON`` + ``dump_page(page, "fake-offline page referenced")`` when the count is not 0.
    An out-of-tree driver using the same protocol drops its reference in both variants.
    """
    kinds, ref = view.kinds, view.refcount.copy()
    log: List[LogEntry] = []
    hazards: List[Hazard] = []
    device = ctx.device
    fake = kinds == PageKind.FAKE_OFFLINE.value
    has_fake = bool(fake.any())
    foreign = fake & (ref > 1) if has_fake else fake
    dropped = np.zeros(len(kinds), dtype=bool)
    freed = np.zeros(len(kinds), dtype=bool)
    if has_fake and device is not None and device.driver is DriverState.LOADED and sem.virtio_mem_drops_refs:
        ref[fake] -= 1
        dropped = fake
        referenced = np.flatnonzero(fake & (ref != 0))
        if len(referenced):
            pfns = view.pfn + referenced
            for entry in zip(per_page_entries(LogLevel.WARN, "WARN_ON(!page_ref_dec_and_test(page))",
                                              "virtio_mem_fake_offline_going_offline", pfns),
                             per_page_entries(LogLevel.DUMP_PAGE, "fake-offline page referenced",
                                              "virtio_mem_fake_offline_going_offline", pfns)):
                log.extend(entry)
            hazards.append(Hazard(HazardKind.WARN, f"{len(referenced)} fake-offline page(s) referenced by someone "
                                  "else when virtio-mem dropped its reference", int(pfns[0])))
    driver_pages = kinds == PageKind.OFFLINE_REFCOUNT_DRIVER.value
    if driver_pages.any():
        ref[driver_pages] -= 1
    if env.foreign_ref_dropped is ForeignRefTiming.DURING_OFFLINE and foreign.any():
        # The foreign holder drops its references while the block is isolated.
        ref[foreign] -= view.refcount[foreign] - 1
        # Under refcount virtio-mem already dropped its own reference: put_page() frees the
        # page. mm/page_alloc.c free_pages_prepare() resets the page type of a typed page
        # ("Reset the page_type (which overlays _mapcount)", since the 2025 movable_ops series),
        # so it lands silently on the isolated free list (seed mail: "ouch").
        freed = foreign & (ref == 0)
        if freed.any():
            kinds = kinds.copy()
            kinds[freed] = PageKind.FREE
            pfn = view.pfn + int(np.flatnonzero(freed)[0])
            hazards.append(Hazard(HazardKind.FREED_TO_BUDDY,
                                  f"{int(freed.sum())} fake-offline page(s) freed to the buddy by put_page() while "
                                  "offlining (unplugged memory on the isolated free list; managed page count skew; "
                                  "a MEM_CANCEL_OFFLINE would raise the refcount of a free page)", pfn))
    return _Notified(kinds, ref, log, hazards, dropped, freed)


def _after_success_hazards(view: RangeView, after: RangeView, sem: OfflineSemantics,
                           env: Environment) -> List[Hazard]:
    hazards: List[Hazard] = []
    foreign = ((view.kinds == PageKind.FAKE_OFFLINE.value) & (view.refcount > 1)
               if env.foreign_ref_dropped is ForeignRefTiming.AFTER_OFFLINE else None)
    if foreign is not None and foreign.any():
        hazards.append(Hazard(HazardKind.STALE_MEMMAP_REFERENCE,
                              f"{int(foreign.sum())} foreign reference(s) on fake-offline pages dropped after the "
                              "block went offline: put_page() on a stale (possibly poisoned) memmap, not freed to "
                              "the buddy", view.pfn + int(np.flatnonzero(foreign)[0])))
    orphans = after.kinds == PageKind.OFFLINE_ORPHAN.value
    if orphans.any():
        orphans &= (after.refcount == 0) & sem.test_passes(after.refcount, after.skippable)
    if orphans.any():
        hazards.append(Hazard(HazardKind.UNSAFE_REONLINE,
                              f"{int(orphans.sum())} PageOffline page(s) with refcount 0 and no owner were skipped "
                              "as already offline; onlining the block again hands them to the buddy",
                              view.pfn + int(np.flatnonzero(orphans)[0])))
    return hazards


# --- step details for offline_block_traced() (memplan explain) -----------------------------

def _isolation_detail(pageblocks: int, failed: Optional[int], cause: str, kind: Optional[PageKind], pfn: int,
                      pageblock_pages: int) -> str:
    """The walk of ``start_isolate_page_range()``: first, last, then the middle pageblocks."""
    order = isolation_order(pageblocks)
    walk = "pageblock 0" if pageblocks == 1 else (
        f"pageblock 0, then {pageblocks - 1}, then 1-{pageblocks - 2} ascending" if pageblocks > 2
        else "pageblock 0, then 1")
    if failed is None:
        return f"{pageblocks} pageblocks isolated in order: {walk}"
    position = order.index(failed) + 1
    start = pfn + failed * pageblock_pages
    why = {"isolated": "is already isolated by someone else (no dump)",
           "cma": "is a CMA pageblock",
           "unmovable": f"holds an unmovable {kind.label if kind else ''} page"}[cause]
    return (f"order {walk}; pageblock {failed} (pfn {start:#x}, walked {_ordinal(position)}) {why}: -EBUSY, "
            "the pageblocks isolated before it are undone")


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _notifier_detail(view: RangeView, notified: "_Notified", device: Optional[VirtioMemDevice],
                     sem: OfflineSemantics) -> str:
    """What the MEM_GOING_OFFLINE handlers did to this block's pages."""
    parts: List[str] = []
    fake = int(np.count_nonzero(view.kinds == PageKind.FAKE_OFFLINE))
    if device is None:
        parts.append("no virtio-mem device covers the block")
    elif device.driver is not DriverState.LOADED:
        parts.append(f"virtio-mem {device.id} is {device.driver.value}: nobody handles its "
                     f"{fake} fake-offline pages" if fake else f"virtio-mem {device.id} is {device.driver.value}")
    elif not fake:
        parts.append(f"virtio-mem {device.id}: the block has no fake-offline page")
    elif sem.virtio_mem_drops_refs:
        dropped = int(np.count_nonzero(notified.dropped))
        still = int(np.count_nonzero(notified.dropped & (notified.refcount != 0)))
        text = f"virtio-mem {device.id} drops its reference on {dropped} fake-offline pages (refcount 1 -> 0)"
        if still:
            text += f"; {still} still referenced: WARN_ON + dump_page \"fake-offline page referenced\""
        parts.append(text)
    else:
        parts.append(f"virtio-mem {device.id} leaves its {fake} fake-offline pages alone (PG_offline_skippable)")
    driver = int(np.count_nonzero(view.kinds == PageKind.OFFLINE_REFCOUNT_DRIVER))
    if driver:
        parts.append(f"the refcount-protocol driver drops its reference on {driver} pages")
    freed = int(np.count_nonzero(notified.freed))
    if freed:
        parts.append(f"the foreign reference is dropped: put_page() frees {freed} fake-offline pages to the buddy")
    return "; ".join(parts)


def _scan_busy_detail(view: RangeView, index: int, sem: OfflineSemantics) -> str:
    kind = PageKind(int(view.kinds[index]))
    why = ("not PG_offline_skippable" if sem.virtio_mem_marks_skippable
           else f"refcount {int(view.refcount[index])} after MEM_GOING_OFFLINE")
    return (f"SCAN stops at pfn {view.pfn + index:#x}: a PageOffline {kind.label} page without movable_ops, {why}: "
            "definitely unmovable, -EBUSY")


def _scan_loop_detail(view: RangeView, index: int, targets: MigrationTargets) -> str:
    kind = PageKind(int(view.kinds[index]))
    ref = int(view.refcount[index])
    default = int(DEFAULT_REFCOUNT[int(kind)])
    if kind is PageKind.PINNED:
        why = "a long-term pin (FOLL_LONGTERM) keeps an extra reference"
    elif ref == 0:
        why = "refcount 0: folio_try_get() fails, it is never isolated"
    elif ref > default:
        why = f"refcount {ref} where migration expects {default}: extra references"
    elif kind is PageKind.GIGANTIC:
        why = "no free 1 GiB pool page outside the block and gigantic pages cannot be allocated fresh"
    else:
        why = (f"no migration target: the allowed nodes have {targets.capacity} free pages for the block's movable "
               "pages (-ENOMEM)" if targets.capacity is not None else "no migration target (-ENOMEM)")
    return (f"MIGRATE fails on the {kind.label} folio at pfn {view.pfn + index:#x} every round ({why}); SCAN finds "
            "it again: the loop runs until a signal")


def _dissolve_detail(view: RangeView, index: int, headroom: Dict[int, int]) -> str:
    kind = PageKind(int(view.kinds[index]))
    pfn = view.pfn + index
    if int(view.refcount[index]) > 0:
        return (f"the in-use {kind.label} folio at pfn {pfn:#x} is not marked migratable (SCAN skipped it): "
                "dissolve_free_hugetlb_folio() returns -EBUSY")
    order = 18 if kind is PageKind.GIGANTIC_FREE else 9
    heads = hugetlb_mod.free_folio_heads(view.kinds, view.pfn, order)
    return (f"the block holds {heads} free {'1 GiB' if order == 18 else '2 MiB'} hugetlb folios but the pool's "
            f"headroom (free - resv) is {headroom.get(order, 0)}: dissolving the one at pfn {pfn:#x} returns -EBUSY")
