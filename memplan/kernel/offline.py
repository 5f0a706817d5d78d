"""``offline_pages()`` for one memory block at a time, over numpy page arrays (spec §3).

One function per step, in the kernel's order (``memory_block_offline()`` in
drivers/base/memory.c, ``offline_pages()`` in mm/memory_hotplug.c, ML-NEW torvalds/linux @
c17ee635; ``memplan.core.results.PIPELINE``): state -> zone -> alignment -> holes ->
multizone -> isolation -> node notifier -> MEM_GOING_OFFLINE -> signal -> SCAN/MIGRATE ->
DISSOLVE -> TEST_ISOLATED -> commit. Each returns ``None`` to go on or the ``Stop`` that ends
the attempt; ``offline_block()`` and ``offline_block_traced()`` compose them. The conditions
that need no page (``node_notifier_stop()``, ``going_offline_stop()``, ``signal_stop()``) are
public so that block-level shortcuts ask them too. The semantics-specific predicates come from
``OfflineSemantics``; nothing else differs between the semantics.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from memplan.core.arrays import AnyArray, BoolArray, KindArray
from memplan.core.geometry import Geometry
from memplan.core.machine import Environment, HugetlbPool, VirtioMemDevice
from memplan.core.model import DEFAULT_REFCOUNT, BlockState, DriverState, PageKind, Zone
from memplan.core.results import (
    BlockVerdict,
    Cause,
    Culprit,
    Hazard,
    LogEntry,
    LogLevel,
    PageCounts,
    PipelineStep,
)
from memplan.kernel import hugetlb as hugetlb_mod
from memplan.kernel import trace as details
from memplan.kernel.isolation import isolate_range, unmovable_pages
from memplan.kernel.migrate_pages import free_target_pages
from memplan.kernel.migration import MigrationOutcome, MigrationTargets, ScanResult, migrate, migrate_leaves
from memplan.kernel.notifier import (
    Notified,
    after_success_hazards,
    cancel_hazards,
    going_offline,
    skippable_pages,
)
from memplan.kernel.pages import RangeView, first_index
from memplan.kernel.semantics import OfflineSemantics
from memplan.kernel.trace import StepRecord, StepStatus, TraceRecorder
from memplan.kernel.verdict import Stop, VerdictBuilder, page_culprit, pr_debug_entry

__all__ = [
    "BlockContext",
    "BlockStats",
    "OfflineEffects",
    "OfflineSetup",
    "PredicateInputs",
    "Stop",
    "fake_offline_passes",
    "going_offline_stop",
    "node_notifier_stop",
    "offline_block",
    "offline_block_traced",
    "pr_debug_entry",
    "predicate_inputs",
    "signal_stop",
]


@dataclass(frozen=True)
class OfflineSetup:
    """What every block of one run shares."""

    geometry: Geometry
    semantics: OfflineSemantics
    environment: Environment
    #: resolved pool counters by folio order (``Geometry.hugetlb_orders``)
    pools: Dict[int, HugetlbPool]
    #: present pages per node (``pgdat->node_present_pages``, vmemmap of online blocks included)
    node_present_pages: Dict[int, int] = field(default_factory=dict)
    #: NUMA node notifiers exist (v6.17+)
    node_notifier: bool = True
    #: builds this run's verdicts (derived)
    verdicts: VerdictBuilder = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdicts", VerdictBuilder(self.geometry))

    @property
    def headroom(self) -> Dict[int, int]:
        """Free folios each hstate may lose (``free_huge_pages - resv_huge_pages``)."""
        return {order: self.pools[order].headroom for order in self.geometry.hugetlb_orders}


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
    cma: BoolArray
    isolated: BoolArray
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
    migrated: BoolArray
    #: pages of hugetlb folios migrated to a free pool folio outside the block (their source
    #: went back to the pool as a free folio)
    pool_migrated: np.ndarray
    #: pages of free hugetlb folios dissolved (``dissolve_free_hugetlb_folios()``)
    dissolved: BoolArray
    #: pages of THPs migrate_pages() split for want of a target: order-0 anonymous pages now
    #: (those not in ``migrated``); ``None``: none
    split: Optional[BoolArray] = None


@dataclass(frozen=True)
class BlockStats:
    """By-products other blocks' verdicts depend on (migration targets, hugetlb pools)."""

    #: free pages migration targets of other blocks may come from (outside pageblocks someone
    #: else isolated)
    free_pages: int
    #: pages of the folios on the migration source list that need a target outside the hugetlb
    #: pool (``MigrationOutcome.demand``)
    demand: int
    #: free hugetlb folios per order whose head lies in the block
    free_hugetlb: Dict[int, int]
    #: page-level effects (``offline_block()`` only; ``None`` when nothing was migrated or dissolved)
    effects: Optional[OfflineEffects] = field(default=None, compare=False)
    #: those of them the pool may hand out while another block is offlined (head outside
    #: pageblocks someone else isolated); ``None``: all of them
    pool_hugetlb: Optional[Dict[int, int]] = None
    #: hugetlb folios per order on the block's migration source list (``None``: none)
    hugetlb_folios: Optional[Dict[int, int]] = None


#: The pipeline works on int32 refcounts (``DEFAULT_REFCOUNT``'s type; the kernel's is an atomic_t).
_DEFAULT_REFCOUNT32 = DEFAULT_REFCOUNT.astype(np.int32)


# --- conditions that need no page (shared with block-level shortcuts) ------------------------

def node_notifier_stop(setup: OfflineSetup, node: int, nr_pages: int, nr_vmemmap: int) -> Optional[Stop]:
    """``node_notify(NODE_REMOVING_LAST_MEMORY)`` (v6.17+) when offlining ``nr_pages`` would empty
    the node (``nr_pages >= pgdat->node_present_pages``; memory_block_offline() took the
    block's vmemmap pages out of the present count first), and a node notifier vetoes."""
    veto = setup.environment.node_notifier_veto
    if setup.node_notifier and veto is not None and is_last_memory(setup, node, nr_pages, nr_vmemmap):
        return Stop(Cause.NODE_NOTIFIER_VETO, notifier_errno=veto)
    return None


def is_last_memory(setup: OfflineSetup, node: int, nr_pages: int, nr_vmemmap: int) -> bool:
    """Whether offlining ``nr_pages`` empties the node (``NODE_REMOVING_LAST_MEMORY`` is sent)."""
    return nr_pages >= setup.node_present_pages.get(node, 0) - nr_vmemmap


def going_offline_stop(env: Environment, device: Optional[VirtioMemDevice]) -> Optional[Stop]:
    """``memory_notify(MEM_GOING_OFFLINE)`` vetoed: virtio-mem being removed (``vm->removing``:
    notifier_from_errno(-EBUSY)), or another notifier."""
    if device is not None and device.driver is DriverState.REMOVING:
        return Stop(Cause.VIRTIO_MEM_REMOVING)
    if env.notifier_veto is not None:
        return Stop(Cause.MEMORY_NOTIFIER_VETO, notifier_errno=env.notifier_veto)
    return None


def signal_stop(env: Environment) -> Optional[Stop]:
    """``signal_pending(current)`` at the top of the first SCAN round: -EINTR."""
    return Stop(Cause.SIGNAL_PENDING) if env.signal_pending else None


def fake_offline_passes(semantics: OfflineSemantics, device: Optional[VirtioMemDevice], device_state: Optional[str],
                        geometry: Geometry) -> bool:
    """Whether a block's virtio-mem fake-offline pages at their default refcount pass every step
    untouched, asked from the kernel's own functions on one such page: isolation lets it through
    in a kernel zone (site 1), MEM_GOING_OFFLINE, SCAN does not stop on it (site 2), MIGRATE
    leaves it alone (site 3), TEST_ISOLATED accepts it (site 4) and no commit assertion fires
    (site 5). Only a loaded driver's pages can: a removing driver vetoes, an unloaded one keeps
    its references."""
    if device is None or device.driver is not DriverState.LOADED:
        return False
    return _fake_offline_passes(semantics, semantics.fake_offline_skippable(device.driver, device_state), geometry)


@lru_cache(maxsize=64)
def _fake_offline_passes(semantics: OfflineSemantics, skippable: bool, geometry: Geometry) -> bool:
    kinds = np.array([PageKind.FAKE_OFFLINE.value], dtype=np.uint8)
    view = RangeView(0, kinds, np.take(_DEFAULT_REFCOUNT32, kinds), np.array([skippable]), geometry)
    after = view.with_refcount(going_offline(view, DriverState.LOADED, semantics, Environment()).refcount)
    checks = semantics.commit_checks(after.refcount, after.skippable)
    return (not unmovable_pages(view, False, semantics)[0]
            and not semantics.scan_busy(after.refcount, after.skippable)[0]
            and bool(migrate_leaves(after, semantics)[0])
            and bool(semantics.test_passes(after.refcount, after.skippable)[0])
            and not any(bool(mask.any()) for *_, mask in checks))


# --- one attempt ---------------------------------------------------------------------------

Detail = Union[str, Callable[[], str]]


class _Attempt:
    """One offline attempt on one block: its pages, what the steps found, the log so far."""

    # Set by notify() and classify() (once the block is online), and by TEST_ISOLATED.
    view: RangeView
    notified: Notified
    after_notifier: RangeView
    targets: MigrationTargets
    moved: MigrationOutcome
    after_migration: RangeView
    dis: hugetlb_mod.DissolveOutcome
    final: RangeView

    def __init__(self, setup: OfflineSetup, ctx: BlockContext, kinds: KindArray, refcount: Optional[AnyArray],
                 trace: Optional[TraceRecorder]) -> None:
        self.setup, self.ctx, self.trace = setup, ctx, trace
        self.geometry, self.semantics, self.env = setup.geometry, setup.semantics, setup.environment
        self.block_kinds, self.block_refcount = kinds, refcount
        self.range_pfn = ctx.start_pfn + ctx.vmemmap
        self.end_pfn = ctx.start_pfn + setup.geometry.pages_per_block
        self.log: List[LogEntry] = []
        self.hazards: List[Hazard] = []
        #: hazards of MEM_CANCEL_OFFLINE, which runs when offlining fails after MEM_GOING_OFFLINE
        self.on_cancel: List[Hazard] = []
        self.counts = PageCounts(total=setup.geometry.pages_per_block)
        self.stats = BlockStats(0, 0, {})

    def record(self, step: PipelineStep, status: StepStatus, detail: Detail, pfn: Optional[int] = None,
               count: Optional[int] = None) -> None:
        if self.trace is not None:
            self.trace.record(step, status, detail() if callable(detail) else detail, pfn, count)

    def stop(self, step: PipelineStep, stop: Stop, detail: Detail, status: StepStatus = StepStatus.FAILED,
             count: Optional[int] = None) -> Stop:
        """Record the step that ends the attempt (at its culprit page)."""
        self.record(step, status, detail, stop.culprit.pfn if stop.culprit else None, count)
        return stop

    def notify(self) -> None:
        """The pages ``offline_pages()`` gets (vmemmap excluded), with ``PageOfflineSkippable``,
        and what the MEM_GOING_OFFLINE handlers make of them."""
        sem, ctx = self.semantics, self.ctx
        k = self.block_kinds[ctx.vmemmap:]
        ref = (np.take(_DEFAULT_REFCOUNT32, k) if self.block_refcount is None
               else self.block_refcount[ctx.vmemmap:].astype(np.int32))
        view = self.view = RangeView(self.range_pfn, k, ref, skippable_pages(sem, ctx.device, ctx.device_state, k),
                                     self.geometry)
        notified = self.notified = going_offline(view, ctx.device.driver if ctx.device else None, sem, self.env)
        self.after_notifier = (view.with_refcount(notified.refcount) if notified.kinds is view.kinds
                               else view.with_pages(notified.kinds, notified.refcount))

    def classify(self) -> None:
        """Every page, whatever step decides the verdict: MEM_GOING_OFFLINE, the migration and
        dissolve fixed points, and the page counts."""
        geo, sem, setup, ctx = self.geometry, self.semantics, self.setup, self.ctx
        self.notify()
        view, after = self.view, self.after_notifier
        k = view.kinds
        in_block_free = {o: hugetlb_mod.free_folio_heads(k, view.pfn, o, geo) for o in geo.hugetlb_orders}
        self.targets = ctx.targets
        # A block spanning zones (mem->zone NULL) never migrates; its pages count as a kernel zone's.
        moved = self.moved = migrate(after, sem, ctx.targets, ctx.zone or Zone.NORMAL, setup.headroom)
        # Migration frees whole folios or returns hugetlb sources to the pool in place: the
        # hugetlb folio boundaries dissolve walks are the ones before migration.
        self.after_migration = after.with_pages(moved.kinds_after, moved.refcount_after)
        dis = self.dis = hugetlb_mod.dissolve(moved.kinds_after, moved.refcount_after, after.first, setup.headroom,
                                              geo)
        self.counts = self._page_counts(view, after, moved, dis)
        pool_free = None
        if ctx.isolated.any():
            pool_free = {o: hugetlb_mod.free_folio_heads(self.block_kinds, ctx.start_pfn, o, geo, ctx.isolated)
                         for o in geo.hugetlb_orders}
        self.stats = BlockStats(free_target_pages(self.block_kinds, ctx.isolated, geo.pageblock_pages), moved.demand,
                                in_block_free, pool_hugetlb=pool_free, hugetlb_folios=moved.hugetlb_folios)

    def _page_counts(self, view: RangeView, after: RangeView, moved: MigrationOutcome,
                     dis: hugetlb_mod.DissolveOutcome) -> PageCounts:
        k = view.kinds
        originally_free_huge = np.zeros(len(k), dtype=bool)
        for kind in hugetlb_mod.FREE_KINDS.values():
            originally_free_huge |= k == kind.value
        skipped = after.offline & ~after.movable_ops & self.semantics.test_passes(after.refcount, after.skippable)
        return PageCounts(
            total=self.geometry.pages_per_block,
            free=int(np.count_nonzero(after.buddy)),
            migrated=int(np.count_nonzero(moved.migrated if moved.counted is None else moved.counted)),
            skipped_offline=int(np.count_nonzero(skipped)),
            dissolved=int(np.count_nonzero(dis.dissolvable & originally_free_huge)),
            hwpoison=int(np.count_nonzero(view.hwpoison)),
            vmemmap=self.ctx.vmemmap,
            holes=int(np.count_nonzero(k == PageKind.HOLE.value)),
        )

    def effects(self) -> BlockStats:
        """The stats with what the retry loops changed: migration (and dissolving, once SCAN
        found nothing left) already happened."""
        moved, k = self.moved, self.view.kinds
        none = np.zeros(len(k), dtype=bool)
        pool = moved.pool if moved.pool is not None else none
        return replace(self.stats, effects=OfflineEffects(
            offset=self.ctx.vmemmap,
            migrated=(moved.migrated & ~pool) if moved.ran else none,
            pool_migrated=pool if moved.ran else none,
            dissolved=self.dis.dissolved if moved.result is ScanResult.NONE_LEFT else none,
            split=moved.split if moved.ran else None,
        ))

    def verdict(self, stop: Optional[Stop]) -> Tuple[BlockVerdict, BlockStats]:
        ctx, builder = self.ctx, self.setup.verdicts
        hazards = list(self.hazards)
        # Every failure after MEM_GOING_OFFLINE sends MEM_CANCEL_OFFLINE; a BUG does not return.
        if stop is not None and stop.cause is not Cause.COMMIT_BUG:
            hazards += self.on_cancel
        template = builder.template(ctx.zone, ctx.node, ctx.device.id if ctx.device else None, ctx.device_state)
        verdict = builder.stamp(template, ctx.block, ctx.start_pfn, self.counts, tuple(hazards),
                                **builder.outcome(stop, self.range_pfn, self.end_pfn, self.log))
        ran = stop is None or stop.cause.step.rank >= PipelineStep.SCAN.rank
        return verdict, self.effects() if ran else self.stats



def _culprit(view: RangeView, index: Optional[int]) -> Optional[Culprit]:
    """The page at ``index`` of a view, as the verdict names it."""
    return None if index is None else page_culprit(view.pfn, view.kinds, view.refcount, int(index))


# --- the steps, in the kernel's order ------------------------------------------------------

def _memory_block_change_state(a: _Attempt) -> Optional[Stop]:
    """Only an online block can go offline (state_store() turns device_offline()'s "already
    offline" into -EINVAL)."""
    if a.ctx.state is not BlockState.ONLINE:
        return a.stop(PipelineStep.STATE, Stop(Cause.NOT_ONLINE), f"the block is {a.ctx.state.value}: only an "
                      "online block can go offline (state_store() returns -EINVAL)")
    a.record(PipelineStep.STATE, StepStatus.PASSED, "online; mem->state becomes MEM_GOING_OFFLINE")
    return None


def _memory_block_offline(a: _Attempt) -> Optional[Stop]:
    """mem->zone is NULL for early blocks spanning zones or nodes."""
    ctx = a.ctx
    if ctx.zone is None:
        return a.stop(PipelineStep.ZONE, Stop(Cause.ZONE_NULL), "mem->zone is NULL (valid_zones: none): the block "
                      "spans two zones or two nodes")
    a.record(PipelineStep.ZONE, StepStatus.PASSED, f"mem->zone is ZONE_{ctx.zone.value.upper()}, node {ctx.node}"
             + (f"; {ctx.vmemmap} self-hosted memmap pages stay out of the range" if ctx.vmemmap else ""))
    return None


def _check_alignment(a: _Attempt) -> Optional[Stop]:
    """offline_pages()'s sanity check (memmap_on_memory shifts the start)."""
    geo, lo, end, n = a.geometry, a.range_pfn, a.end_pfn, len(a.view)
    if not n or lo % geo.pageblock_pages or end % geo.pages_per_section:
        a.log.append(LogEntry(LogLevel.WARN_ONCE, "WARN_ON_ONCE(!nr_pages || !pageblock_aligned(start_pfn) || "
                              "!IS_ALIGNED(start_pfn + nr_pages, PAGES_PER_SECTION))", lo, "offline_pages"))
        a.record(PipelineStep.ALIGNMENT, StepStatus.FAILED, f"[{lo:#x}, {end:#x}) is not pageblock-aligned "
                 "or does not end on a section boundary: WARN_ON_ONCE", lo)
        return Stop(Cause.MISALIGNED)
    a.record(PipelineStep.ALIGNMENT, StepStatus.PASSED, lambda: f"pfn {lo:#x}-{end - 1:#x} ({n} pages): "
             "pageblock-aligned start, section-aligned end")
    return None


def _check_holes(a: _Attempt) -> Optional[Stop]:
    """walk_system_ram_range() must count every page."""
    holes, n = a.counts.holes, len(a.view)
    if holes:
        a.record(PipelineStep.HOLES, StepStatus.FAILED, f"{holes} of {n} pages are not System RAM",
                 a.range_pfn + int(np.argmax(a.view.kinds == PageKind.HOLE)))
        return Stop(Cause.MEMORY_HOLES)
    a.record(PipelineStep.HOLES, StepStatus.PASSED, lambda: f"all {n} pages are System RAM")
    return None


def _check_multizone(a: _Attempt) -> Optional[Stop]:
    """"multizone range" cannot happen here: a block spanning zones has mem->zone NULL and
    stopped at the zone step (the kernel keeps the check as a WARN_ON_ONCE sanity test)."""
    zone = a.ctx.zone
    assert zone is not None
    a.record(PipelineStep.MULTIZONE, StepStatus.PASSED, lambda: f"first and last page are in "
             f"ZONE_{zone.value.upper()}")
    return None


def _start_isolate_page_range(a: _Attempt) -> Optional[Stop]:
    """start_isolate_page_range(PB_ISOLATE_MODE_MEM_OFFLINE)."""
    geo, ctx, view = a.geometry, a.ctx, a.view
    unmovable = unmovable_pages(view, ctx.zone is Zone.MOVABLE, a.semantics)
    pb_skip = ctx.vmemmap // geo.pageblock_pages
    failure = isolate_range(unmovable, geo.pageblock_pages, ctx.cma[pb_skip:], ctx.isolated[pb_skip:])
    pageblocks = len(unmovable) // geo.pageblock_pages
    if failure is not None:
        a.log.extend(failure.log(view.pfn))
        return a.stop(PipelineStep.ISOLATE, Stop(failure.cause, _culprit(view, failure.index)),
                      lambda: details.isolation_detail(pageblocks, failure, view))
    a.record(PipelineStep.ISOLATE, StepStatus.PASSED, lambda: details.isolation_detail(pageblocks, None, view)
             + ("; ZONE_MOVABLE: only PG_reserved pages count as unmovable" if ctx.zone is Zone.MOVABLE else ""))
    return None


def _node_notify(a: _Attempt) -> Optional[Stop]:
    """node_notify(NODE_REMOVING_LAST_MEMORY) (v6.17+) when this offline would empty the node."""
    ctx, setup = a.ctx, a.setup
    stop = node_notifier_stop(setup, ctx.node, len(a.view), ctx.vmemmap)
    if stop is not None:
        return a.stop(PipelineStep.NODE_NOTIFIER, stop, f"the block is node {ctx.node}'s last memory and a node "
                      f"notifier vetoes NODE_REMOVING_LAST_MEMORY with -{stop.errno.value if stop.errno else '?'}")
    a.record(PipelineStep.NODE_NOTIFIER, StepStatus.PASSED,
             lambda: details.node_notifier_detail(setup.node_notifier, ctx.node,
                                                  is_last_memory(setup, ctx.node, len(a.view), ctx.vmemmap)))
    return None


def _memory_notify_going_offline(a: _Attempt) -> Optional[Stop]:
    """memory_notify(MEM_GOING_OFFLINE); virtio-mem's handler runs for its own blocks."""
    device, notified = a.ctx.device, a.notified
    stop = going_offline_stop(a.env, device)
    if stop is not None and stop.cause is Cause.VIRTIO_MEM_REMOVING:
        assert device is not None  # its MEM_CANCEL_OFFLINE is ignored (hotplug_active stays false)
        return a.stop(PipelineStep.GOING_OFFLINE, stop, f"virtio-mem {device.id} is being removed "
                      "(vm->removing): its notifier returns -EBUSY")
    a.log.extend(notified.log)
    a.hazards.extend(notified.hazards)
    a.on_cancel.extend(cancel_hazards(notified, a.view.pfn))

    def notes() -> str:
        return details.notifier_detail(a.view, notified, device)

    if stop is not None:
        # MEM_CANCEL_OFFLINE lets virtio-mem re-take its references.
        return a.stop(PipelineStep.GOING_OFFLINE, stop, lambda: f"{notes()}; another memory notifier vetoes with "
                      f"-{stop.errno.value if stop.errno else '?'} (MEM_CANCEL_OFFLINE follows)")
    a.record(PipelineStep.GOING_OFFLINE, StepStatus.PASSED, notes)
    return None


def _check_signal(a: _Attempt) -> Optional[Stop]:
    """The retry loops start: a pending signal ends them before the first SCAN."""
    stop = signal_stop(a.env)
    if stop is not None:
        return a.stop(PipelineStep.SIGNAL, stop, "a signal is pending on the writing task: -EINTR before the "
                      "first SCAN")
    a.record(PipelineStep.SIGNAL, StepStatus.PASSED, "no signal pending")
    return None


def _scan_and_migrate(a: _Attempt) -> Optional[Stop]:
    """scan_movable_pages() + do_migrate_range() until SCAN finds nothing, fails, or loops."""
    # The page SCAN stops at as MIGRATE left it (a split THP's pages are order-0 pages now).
    moved, after = a.moved, a.after_migration
    a.log.extend(moved.log)
    if moved.result is not ScanResult.NONE_LEFT:
        assert moved.cause is not None and moved.index is not None
        index, cause = moved.index, moved.cause
        stop = Stop(cause, _culprit(after, index))
        if moved.result is ScanResult.BUSY:
            return a.stop(PipelineStep.SCAN, stop, lambda: details.scan_busy_detail(after, index, a.semantics))
        return a.stop(PipelineStep.SCAN, stop, lambda: details.scan_loop_detail(after, index, cause, a.targets),
                      StepStatus.HANGS)
    migrated = a.counts.migrated
    a.record(PipelineStep.SCAN, StepStatus.PASSED, lambda: f"MIGRATE moved {migrated} pages; SCAN then finds "
             "nothing (-ENOENT)" if migrated else "SCAN finds nothing to migrate (-ENOENT)")
    return None


def _dissolve_free_hugetlb_folios(a: _Attempt) -> Optional[Stop]:
    """dissolve_free_hugetlb_folios() over the range (mm/hugetlb.c, v6.10+)."""
    dis, after = a.dis, a.after_migration
    if dis.failure is not None:
        assert dis.cause is not None
        failure, cause = dis.failure, dis.cause
        heads = hugetlb_mod.free_folio_heads(after.kinds, after.pfn, after.order_at(failure), a.geometry)
        return a.stop(PipelineStep.DISSOLVE, Stop(cause, _culprit(after, failure)),
                      lambda: details.dissolve_detail(after, failure, cause, a.setup.headroom), count=heads)
    n = int(np.count_nonzero(dis.dissolved))
    a.record(PipelineStep.DISSOLVE, StepStatus.PASSED, f"{n} pages of free hugetlb folios dissolved" if n
             else "no free hugetlb folio in the range")
    return None


def _test_pages_isolated(a: _Attempt) -> Optional[Stop]:
    """test_pages_isolated(PB_ISOLATE_MODE_MEM_OFFLINE) (predicate site 4); failing it every
    round means the outer loop never ends."""
    kinds = a.moved.kinds_after.copy()
    kinds[a.dis.dissolved] = PageKind.FREE
    final = a.final = a.after_migration.with_pages(kinds, a.moved.refcount_after)
    passes = final.buddy | final.hwpoison | (final.offline & a.semantics.test_passes(final.refcount, final.skippable))
    stuck = first_index(~passes)
    if stuck is not None:
        culprit = page_culprit(final.pfn, final.kinds, final.refcount, stuck)
        return a.stop(PipelineStep.TEST_ISOLATED, Stop(Cause.PAGE_NOT_ISOLATED, culprit), lambda: (
            f"pfn {culprit.pfn:#x} ({culprit.kind.label}, refcount {culprit.refcount}) is not free, not hwpoisoned "
            "and not an accepted PageOffline page: -EBUSY every round"), StepStatus.HANGS)
    a.record(PipelineStep.TEST_ISOLATED, StepStatus.PASSED, "every page is free, hwpoisoned or accepted PageOffline")
    return None


def _offline_isolated_pages(a: _Attempt) -> Optional[Stop]:
    """__offline_isolated_pages() (predicate site 5): a BUG_ON crashes the kernel."""
    final = a.final
    offline_idx = np.flatnonzero(final.offline)
    bugged: List[str] = []
    for level, text, function, hazard, mask in a.semantics.commit_checks(final.refcount[offline_idx],
                                                                          final.skippable[offline_idx]):
        hits = offline_idx[mask]
        if len(hits):
            pfn = final.pfn + int(hits[0])
            a.log.append(LogEntry(level, text, pfn, function))
            a.hazards.append(Hazard(hazard, f"{text} at commit ({len(hits)} page(s))", pfn))
            if level is LogLevel.BUG:
                bugged.append(text)
    if bugged:
        first = int(offline_idx[0]) if len(offline_idx) else None
        return a.stop(PipelineStep.COMMIT, Stop(Cause.COMMIT_BUG, _culprit(final, first)),
                      "; ".join(bugged) + ": the kernel crashes")
    a.hazards.extend(after_success_hazards(a.view, a.after_notifier, a.semantics, a.env))
    warned = [e.text for e in a.log if e.function == "__offline_isolated_pages"]
    a.record(PipelineStep.COMMIT, StepStatus.PASSED, lambda: f"{len(offline_idx)} PageOffline pages counted as "
             "already offline, the rest taken off the free lists" + (f"; {'; '.join(warned)}" if warned else ""))
    return None


#: Every step after ``memory_block_change_state()``, in the kernel's order.
_STEPS: Tuple[Callable[[_Attempt], Optional[Stop]], ...] = (
    _memory_block_offline, _check_alignment, _check_holes, _check_multizone, _start_isolate_page_range,
    _node_notify, _memory_notify_going_offline, _check_signal, _scan_and_migrate, _dissolve_free_hugetlb_folios,
    _test_pages_isolated, _offline_isolated_pages,
)


def _offline_block(setup: OfflineSetup, ctx: BlockContext, kinds: KindArray, refcount: Optional[AnyArray],
                   trace: Optional[TraceRecorder]) -> Tuple[BlockVerdict, BlockStats]:
    attempt = _Attempt(setup, ctx, kinds, refcount, trace)
    stop = _memory_block_change_state(attempt)
    if stop is None:
        attempt.classify()
        for step in _STEPS:
            stop = step(attempt)
            if stop is not None:
                break
    return attempt.verdict(stop)


def offline_block(setup: OfflineSetup, ctx: BlockContext, kinds: KindArray,
                  refcount: Optional[AnyArray]) -> Tuple[BlockVerdict, BlockStats]:
    """Predict writing ``offline`` to ``memoryN/state`` for one block (its pages in ``kinds``)."""
    return _offline_block(setup, ctx, kinds, refcount, None)


def offline_block_traced(setup: OfflineSetup, ctx: BlockContext, kinds: KindArray,
                         refcount: Optional[AnyArray]) -> Tuple[BlockVerdict, BlockStats, Tuple[StepRecord, ...]]:
    """``offline_block()`` plus what every step of the pipeline decided (``memplan explain``).

    The verdict and stats are exactly ``offline_block()``'s: the same code runs, it only
    records each step's outcome on the way.
    """
    recorder = TraceRecorder()
    verdict, stats = _offline_block(setup, ctx, kinds, refcount, recorder)
    return verdict, stats, recorder.steps()


# --- what the predicate sites see (diff-semantics) -----------------------------------------

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
    dropped: BoolArray
    freed: BoolArray


def predicate_inputs(setup: OfflineSetup, ctx: BlockContext, kinds: KindArray,
                     refcount: Optional[AnyArray]) -> PredicateInputs:
    """What ``offline_block()`` feeds the semantics' predicate sites for this block."""
    attempt = _Attempt(setup, ctx, kinds, refcount, None)
    attempt.notify()
    notified: Notified = attempt.notified
    after = attempt.view.with_pages(notified.kinds, notified.refcount)
    return PredicateInputs(attempt.view, after, notified.dropped, notified.freed)
