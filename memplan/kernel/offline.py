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

from memplan.geometry import Geometry
from memplan.kernel import hugetlb as hugetlb_mod
from memplan.kernel.isolation import isolate_range, unmovable_pages
from memplan.kernel.migration import MigrationTargets, migrate
from memplan.kernel.pages import RangeView, first_index, per_page_entries
from memplan.kernel.semantics import OfflineSemantics
from memplan.kernel.virtio_mem import fake_offline_skippable
from memplan.model import (
    DEFAULT_REFCOUNT, SPECIAL_BIT, BlockState, DriverState, Environment, Errno, ForeignRefTiming,
    HugetlbPool, PageKind, VirtioMemDevice, Zone,
)
from memplan.results import (
    BlockVerdict, Culprit, Hazard, HazardKind, LogEntry, LogLevel, Outcome, PageCounts, Reason, Step,
)


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


def _pr_debug(start_pfn: int, end_pfn: int, reason: Reason, page_shift: int) -> LogEntry:
    start = start_pfn << page_shift
    end = (end_pfn << page_shift) - 1
    return LogEntry(LogLevel.PR_DEBUG, f"memory offlining [mem {start:#010x}-{end:#010x}] failed due to "
                    f"{reason.value}", None, "offline_pages")


def offline_block(setup: OfflineSetup, ctx: BlockContext, kinds: np.ndarray,
                  refcount: Optional[np.ndarray]) -> Tuple[BlockVerdict, BlockStats]:
    """Predict writing ``offline`` to ``memoryN/state`` for one block (its pages in ``kinds``)."""
    geo, sem, env = setup.geometry, setup.semantics, setup.environment
    ppb = geo.pages_per_block
    block_end_pfn = ctx.start_pfn + ppb
    common = dict(block=ctx.block, start=ctx.start_pfn << geo.page_shift,
                  end=(block_end_pfn << geo.page_shift) - 1, zone=ctx.zone, node=ctx.node,
                  device=ctx.device.id if ctx.device else None, device_state=ctx.device_state)
    free_pages = int(np.count_nonzero(kinds == PageKind.FREE))

    # Step 0: memory_block_change_state(): only an online block can go offline (state_store()
    # turns device_offline()'s "already offline" into -EINVAL).
    if ctx.state is not BlockState.ONLINE:
        return (BlockVerdict(**common, result=Outcome.FAILS, errno=Errno.EINVAL, reason=None, step=Step.STATE,
                             culprit=None, pages=PageCounts(total=ppb)), BlockStats(0, 0, {}))

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
    after_notifier = RangeView(lo, notified.kinds, notified.refcount, skippable)
    moved = migrate(after_notifier, sem, targets)
    folio_first = RangeView(lo, moved.kinds_after, moved.refcount_after, skippable).folio_first()
    dis = hugetlb_mod.dissolve(moved.kinds_after, moved.refcount_after, folio_first,
                               {o: pools[o].headroom for o in (9, 18)})
    originally_free_huge = (k == PageKind.HUGETLB_FREE) | (k == PageKind.GIGANTIC_FREE)
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
        holes=int(np.count_nonzero(k == PageKind.HOLE)),
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
            entries.append(_pr_debug(lo, block_end_pfn, reason, geo.page_shift))
        found = tuple(hazards) + (tuple(on_cancel) if step is not Step.COMMIT else ())
        return (BlockVerdict(**common, result=result, errno=errno, reason=reason, step=step, culprit=culprit,
                             pages=counts, kernel_log=tuple(entries), hazards=found),
                effects() if ran else stats)

    # Step 1: memory_block_offline(): mem->zone is NULL for early blocks spanning zones/nodes.
    if ctx.zone is None:
        return verdict(Outcome.FAILS, Errno.EINVAL, None, Step.ZONE)

    # Step 2: offline_pages() alignment sanity check (memmap_on_memory shifts the start).
    if not len(k) or lo % geo.pageblock_pages or block_end_pfn % geo.pages_per_section:
        log.append(LogEntry(LogLevel.WARN_ONCE, "WARN_ON_ONCE(!nr_pages || !pageblock_aligned(start_pfn) || "
                            "!IS_ALIGNED(start_pfn + nr_pages, PAGES_PER_SECTION))", lo, "offline_pages"))
        return verdict(Outcome.FAILS, Errno.EINVAL, None, Step.ALIGNMENT)

    # Step 3: walk_system_ram_range() must count every page.
    if counts.holes:
        return verdict(Outcome.FAILS, Errno.EINVAL, Reason.MEMORY_HOLES, Step.HOLES)

    # Step 4: "multizone range" cannot happen here: a block spanning zones has mem->zone NULL
    # and was rejected in step 1 (the kernel keeps the check as a WARN_ON_ONCE sanity test).

    # Step 6: start_isolate_page_range(PB_ISOLATE_MODE_MEM_OFFLINE).
    unmovable = unmovable_pages(view, ctx.zone is Zone.MOVABLE, sem)
    pb_skip = nr_vmemmap // geo.pageblock_pages
    failure = isolate_range(unmovable, geo.pageblock_pages, ctx.cma[pb_skip:], ctx.isolated[pb_skip:])
    if failure is not None:
        if failure.dumped:
            log.append(LogEntry(LogLevel.DUMP_PAGE, "unmovable page", lo + failure.index, "set_migratetype_isolate"))
        return verdict(Outcome.FAILS, Errno.EBUSY, Reason.FAILURE_TO_ISOLATE_RANGE, Step.ISOLATE, failure.index)

    # Step 7: node notifier (v6.17+) when this offline would empty the node.
    if (setup.node_notifier and env.node_notifier_veto is not None
            and len(k) >= setup.node_present_pages.get(ctx.node, 0) - nr_vmemmap):
        return verdict(Outcome.FAILS, env.node_notifier_veto, Reason.NODE_NOTIFIER_FAILURE, Step.NOTIFIER)

    # Step 8: memory_notify(MEM_GOING_OFFLINE). virtio-mem's handler runs for its own blocks.
    device = ctx.device
    if device is not None and device.driver is DriverState.REMOVING:
        # vm->removing: notifier_from_errno(-EBUSY); its MEM_CANCEL_OFFLINE is ignored.
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
    if env.notifier_veto is not None:
        # Another notifier vetoes; MEM_CANCEL_OFFLINE lets virtio-mem re-take its references.
        return verdict(Outcome.FAILS, env.notifier_veto, Reason.NOTIFIER_FAILURE, Step.NOTIFIER)

    # Step 9: the retry loops.
    if env.signal_pending:
        return verdict(Outcome.FAILS, Errno.EINTR, Reason.SIGNAL_BACKOFF, Step.SCAN)
    log.extend(moved.log)
    if moved.result == "busy":
        return verdict(Outcome.FAILS, Errno.EBUSY, Reason.UNMOVABLE_PAGE, Step.SCAN, moved.index, after_notifier,
                       ran=True)
    if moved.result == "loops":
        return verdict(Outcome.HANGS, Errno.EINTR, Reason.SIGNAL_BACKOFF, Step.SCAN, moved.index, after_notifier,
                       ran=True)
    if dis.failure is not None:
        return verdict(Outcome.FAILS, Errno.EBUSY, Reason.FAILURE_TO_DISSOLVE_HUGE_PAGES, Step.DISSOLVE,
                       dis.failure, RangeView(lo, moved.kinds_after, moved.refcount_after, skippable), ran=True)
    final_kinds = moved.kinds_after.copy()
    final_kinds[dis.dissolved] = PageKind.FREE
    final = RangeView(lo, final_kinds, moved.refcount_after, skippable)
    passes = final.buddy | final.hwpoison | (final.offline & sem.test_passes(final.refcount, skippable))
    stuck = first_index(~passes)
    if stuck is not None:
        # test_pages_isolated() fails every round: the outer loop never ends.
        return verdict(Outcome.HANGS, Errno.EINTR, Reason.SIGNAL_BACKOFF, Step.TEST_ISOLATED, stuck, final, ran=True)

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
        return verdict(Outcome.FAILS, None, None, Step.COMMIT, int(offline_idx[0]) if len(offline_idx) else None, final,
                       ran=True)
    hazards.extend(_after_success_hazards(view, after_notifier, sem, env))
    return (BlockVerdict(**common, result=Outcome.OFFLINED, errno=None, reason=None, step=None, culprit=None,
                         pages=counts, kernel_log=tuple(log), hazards=tuple(hazards)), effects())


def _range_view(sem: OfflineSemantics, ctx: BlockContext, kinds: np.ndarray,
                refcount: Optional[np.ndarray]) -> RangeView:
    """The pages ``offline_pages()`` gets (vmemmap excluded) with ``PageOfflineSkippable``."""
    lo = ctx.start_pfn + ctx.vmemmap
    k = kinds[ctx.vmemmap:]
    ref_all = refcount if refcount is not None else DEFAULT_REFCOUNT[kinds]
    ref = ref_all[ctx.vmemmap:].astype(np.int64)
    skippable = np.zeros(len(k), dtype=bool)
    if ctx.device is not None and fake_offline_skippable(ctx.device, ctx.device_state,
                                                         sem.virtio_mem_marks_skippable,
                                                         sem.virtio_mem_unload_clears_skippable):
        skippable = k == PageKind.FAKE_OFFLINE
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
    fake = kinds == PageKind.FAKE_OFFLINE
    foreign = fake & (ref > 1)
    dropped = np.zeros(len(kinds), dtype=bool)
    freed = np.zeros(len(kinds), dtype=bool)
    if device is not None and device.driver is DriverState.LOADED and sem.virtio_mem_drops_refs:
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
    ref[kinds == PageKind.OFFLINE_REFCOUNT_DRIVER] -= 1
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
    foreign = (view.kinds == PageKind.FAKE_OFFLINE) & (view.refcount > 1)
    if foreign.any() and env.foreign_ref_dropped is ForeignRefTiming.AFTER_OFFLINE:
        hazards.append(Hazard(HazardKind.STALE_MEMMAP_REFERENCE,
                              f"{int(foreign.sum())} foreign reference(s) on fake-offline pages dropped after the "
                              "block went offline: put_page() on a stale (possibly poisoned) memmap, not freed to "
                              "the buddy", view.pfn + int(np.flatnonzero(foreign)[0])))
    orphans = (after.kinds == PageKind.OFFLINE_ORPHAN) & (after.refcount == 0) & sem.test_passes(
        after.refcount, after.skippable)
    if orphans.any():
        hazards.append(Hazard(HazardKind.UNSAFE_REONLINE,
                              f"{int(orphans.sum())} PageOffline page(s) with refcount 0 and no owner were skipped "
                              "as already offline; onlining the block again hands them to the buddy",
                              view.pfn + int(np.flatnonzero(orphans)[0])))
    return hazards


def fast_verdicts(setup: OfflineSetup, contexts: Sequence[BlockContext], kinds: np.ndarray,
                  has_refcount: np.ndarray) -> List[Optional[Tuple[BlockVerdict, BlockStats]]]:
    """Verdicts for blocks that need no per-page pass: online, single zone, no vmemmap, no CMA or
    isolated pageblocks, only free / LRU / movable_ops / hwpoison pages with default refcounts,
    migration targets for all of them, and nothing in the environment that stops offlining.

    Such a block always offlines (every step passes); its counts come from two reductions.
    ``None`` marks blocks that need ``offline_block()``. The verdicts are identical to what
    ``offline_block()`` returns for the same pages (tests compare them).
    """
    env = setup.environment
    if env.signal_pending or env.notifier_veto is not None:
        return [None] * len(contexts)
    geo = setup.geometry
    words = kinds.view(np.uint64)
    special = np.bitwise_or.reduce(words, axis=1) & np.uint64(int.from_bytes(bytes([SPECIAL_BIT]) * 8, "little"))
    out: List[Optional[Tuple[BlockVerdict, BlockStats]]] = []
    candidates = (special == 0) & ~has_refcount
    free = np.count_nonzero(kinds == PageKind.FREE, axis=1) if candidates.any() else None
    for row, ctx in enumerate(contexts):
        if (not candidates[row] or ctx.state is not BlockState.ONLINE or ctx.zone is None or ctx.vmemmap
                or ctx.cma.any() or ctx.isolated.any()
                or (ctx.device is not None and ctx.device.driver is DriverState.REMOVING)
                or (setup.node_notifier and env.node_notifier_veto is not None
                    and geo.pages_per_block >= setup.node_present_pages.get(ctx.node, 0))):
            out.append(None)
            continue
        n_free = int(free[row])
        n_poison = int(np.count_nonzero(kinds[row] == PageKind.HWPOISON)) if kinds[row].max() >= PageKind.HWPOISON else 0
        migrated = geo.pages_per_block - n_free - n_poison
        if ctx.targets.capacity is not None and migrated > ctx.targets.capacity:
            out.append(None)
            continue
        counts = PageCounts(total=geo.pages_per_block, free=n_free, migrated=migrated, hwpoison=n_poison)
        verdict = BlockVerdict(
            block=ctx.block, start=ctx.start_pfn << geo.page_shift,
            end=((ctx.start_pfn + geo.pages_per_block) << geo.page_shift) - 1, zone=ctx.zone, node=ctx.node,
            result=Outcome.OFFLINED, errno=None, reason=None, step=None, culprit=None, pages=counts,
            device=ctx.device.id if ctx.device else None, device_state=ctx.device_state)
        out.append((verdict, BlockStats(n_free, migrated, {9: 0, 18: 0})))
    return out
