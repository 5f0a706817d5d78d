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
    DEFAULT_REFCOUNT, BlockState, DriverState, Environment, Errno, ForeignRefTiming,
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


@dataclass(frozen=True)
class BlockStats:
    """By-products other blocks' verdicts depend on (migration targets, hugetlb pools)."""

    free_pages: int
    demand: int
    free_hugetlb: Dict[int, int]


#: ``DEFAULT_REFCOUNT`` widened once (the pipeline works on int64 refcounts)
_DEFAULT_REFCOUNT64 = DEFAULT_REFCOUNT.astype(np.int64)


def pr_debug_entry(start_pfn: int, end_pfn: int, reason: Reason, page_shift: int) -> LogEntry:
    """``offline_pages()``'s ``pr_debug("memory offlining [mem %#010llx-%#010llx] failed due to %s")``."""
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
    free_pages = int(np.count_nonzero(kinds == PageKind.FREE.value))

    # Step 0: memory_block_change_state(): only an online block can go offline (state_store()
    # turns device_offline()'s "already offline" into -EINVAL).
    if ctx.state is not BlockState.ONLINE:
        return (BlockVerdict(**common, result=Outcome.FAILS, errno=Errno.EINVAL, reason=None, step=Step.STATE,
                             culprit=None, pages=PageCounts(total=ppb)), BlockStats(0, 0, {}))

    nr_vmemmap = ctx.vmemmap
    lo = ctx.start_pfn + nr_vmemmap
    k = kinds[nr_vmemmap:]
    ref = np.take(_DEFAULT_REFCOUNT64, k) if refcount is None else refcount[nr_vmemmap:].astype(np.int64)
    skippable = np.zeros(len(k), dtype=bool)
    if ctx.device is not None:
        if fake_offline_skippable(ctx.device, ctx.device_state, sem.virtio_mem_marks_skippable,
                                  sem.virtio_mem_unload_clears_skippable):
            skippable = k == PageKind.FAKE_OFFLINE.value
    view = RangeView(lo, k, ref, skippable)
    log: List[LogEntry] = []
    hazards: List[Hazard] = []

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
    folio_first = RangeView(lo, moved.kinds_after, moved.refcount_after, skippable).folio_first()
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

    def verdict(result: Outcome, errno: Optional[Errno], reason: Optional[Reason], step: Step,
                culprit_index: Optional[int] = None, culprit_view: RangeView = view) -> Tuple[BlockVerdict, BlockStats]:
        culprit = None
        if culprit_index is not None:
            culprit = Culprit(pfn=lo + culprit_index, kind=PageKind(int(culprit_view.kinds[culprit_index])),
                              refcount=int(culprit_view.refcount[culprit_index]))
        entries = list(log)
        if reason is not None:
            entries.append(pr_debug_entry(lo, block_end_pfn, reason, geo.page_shift))
        return (BlockVerdict(**common, result=result, errno=errno, reason=reason, step=step, culprit=culprit,
                             pages=counts, kernel_log=tuple(entries), hazards=tuple(hazards)), stats)

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
    if env.notifier_veto is not None:
        # Another notifier vetoes; MEM_CANCEL_OFFLINE lets virtio-mem re-take its references.
        return verdict(Outcome.FAILS, env.notifier_veto, Reason.NOTIFIER_FAILURE, Step.NOTIFIER)

    # Step 9: the retry loops.
    if env.signal_pending:
        return verdict(Outcome.FAILS, Errno.EINTR, Reason.SIGNAL_BACKOFF, Step.SCAN)
    log.extend(moved.log)
    if moved.result == "busy":
        return verdict(Outcome.FAILS, Errno.EBUSY, Reason.UNMOVABLE_PAGE, Step.SCAN, moved.index, after_notifier)
    if moved.result == "loops":
        return verdict(Outcome.HANGS, Errno.EINTR, Reason.SIGNAL_BACKOFF, Step.SCAN, moved.index, after_notifier)
    if dis.failure is not None:
        return verdict(Outcome.FAILS, Errno.EBUSY, Reason.FAILURE_TO_DISSOLVE_HUGE_PAGES, Step.DISSOLVE,
                       dis.failure, RangeView(lo, moved.kinds_after, moved.refcount_after, skippable))
    final_kinds = moved.kinds_after.copy()
    final_kinds[dis.dissolved] = PageKind.FREE
    final = RangeView(lo, final_kinds, moved.refcount_after, skippable)
    passes = final.buddy | final.hwpoison | (final.offline & sem.test_passes(final.refcount, skippable))
    stuck = first_index(~passes)
    if stuck is not None:
        # test_pages_isolated() fails every round: the outer loop never ends.
        return verdict(Outcome.HANGS, Errno.EINTR, Reason.SIGNAL_BACKOFF, Step.TEST_ISOLATED, stuck, final)

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
        return verdict(Outcome.FAILS, None, None, Step.COMMIT, int(offline_idx[0]) if len(offline_idx) else None, final)
    hazards.extend(_after_success_hazards(view, after_notifier, sem, env))
    return (BlockVerdict(**common, result=Outcome.OFFLINED, errno=None, reason=None, step=None, culprit=None,
                         pages=counts, kernel_log=tuple(log), hazards=tuple(hazards)), stats)


@dataclass
class _Notified:
    kinds: np.ndarray
    refcount: np.ndarray
    log: List[LogEntry]
    hazards: List[Hazard]


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
    if has_fake and device is not None and device.driver is DriverState.LOADED and sem.virtio_mem_drops_refs:
        ref[fake] -= 1
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
        freed = foreign & (ref == 0)
        if freed.any():
            kinds = kinds.copy()
            kinds[freed] = PageKind.FREE
            pfn = view.pfn + int(np.flatnonzero(freed)[0])
            hazards.append(Hazard(HazardKind.FREED_TO_BUDDY,
                                  f"{int(freed.sum())} fake-offline page(s) freed to the buddy by put_page() while "
                                  "offlining (unplugged memory on the isolated free list; managed page count skew; "
                                  "a MEM_CANCEL_OFFLINE would raise the refcount of a free page)", pfn))
    return _Notified(kinds, ref, log, hazards)


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


def fast_verdicts(setup: OfflineSetup, contexts: Sequence[BlockContext], kinds: np.ndarray,
                  has_refcount: np.ndarray) -> List[Optional[Tuple[BlockVerdict, BlockStats]]]:
    """Verdicts for blocks that need no per-page pass (``None`` marks blocks that need
    ``offline_block()``); see ``memplan.kernel.shortcut.chunk_verdicts``, which this wraps for
    callers holding ``BlockContext`` objects. The verdicts are identical to what
    ``offline_block()`` returns for the same pages (tests compare them).
    """
    from memplan.kernel.shortcut import BlockColumns, chunk_verdicts  # shortcut builds on this module
    return chunk_verdicts(setup, BlockColumns.from_contexts(contexts), kinds, has_refcount)
