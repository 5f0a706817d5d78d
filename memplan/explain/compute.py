"""``memplan explain``: the story of one memory block through the offline pipeline.

Nothing here models the kernel: the verdict and the per-step trace come from
``memplan.kernel.offline.offline_block_traced`` with exactly the context ``simulate`` uses
(same setup, same migration capacity), so the story always ends in ``simulate``'s verdict.
On top of it: the block's page population with the kpageflags a snapshot would see
(``memplan.snapshot.kpf``), the culprit page in page-types style, and one plain sentence on what would
make the block offlinable.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from memplan.core.errors import UsageError
from memplan.core.geometry import Geometry
from memplan.core.machine import HugetlbPool, Machine
from memplan.core.model import DEFAULT_REFCOUNT, KIND_INFO, BlockState, DriverState, PageKind
from memplan.core.results import BlockVerdict, Cause, Culprit, HazardKind, Outcome, Step
from memplan.core.units import format_block_ranges, format_size
from memplan.engine.simulation import Simulator, migration_capacities, with_confidence
from memplan.explain.types import BlockStory, CulpritPage, PopulationRow
from memplan.kernel.notifier import skippable_pages
from memplan.kernel.offline import BlockContext, offline_block, offline_block_traced
from memplan.kernel.semantics import get_semantics
from memplan.kernel.trace import PipelineStep, StepRecord, folio_size_text
from memplan.snapshot import kpf


def check_block(machine: Machine, block: int) -> None:
    """A ``UsageError`` that says why ``block`` cannot be explained, and what can."""
    table = machine.blocks
    if bool(table.exists([block])[0]):
        return
    geo = machine.geometry
    for device in machine.devices:
        first = device.addr // geo.memory_block_size
        last = (device.addr + device.region_size - 1) // geo.memory_block_size
        if first <= block <= last:
            added = format_block_ranges([int(b) for b in _device_blocks(machine, device.id)])
            raise UsageError(f"memory block {block} is in virtio-mem {device.id}'s region but was never added "
                             "(nothing plugged there): there is nothing to offline", hint=f"its added blocks: {added}")
    ids = table.ids
    nearest = int(ids[np.argmin(np.abs(ids - block))]) if len(ids) else None
    text = format_block_ranges([int(i) for i in ids])
    raise UsageError(f"memory block {block} does not exist on {machine.name} (blocks: "
                     f"{text if len(text) < 60 else text[:57] + '...'})",
                     hint=f"did you mean {nearest}?" if nearest is not None else None)


def _device_blocks(machine: Machine, device_id: str) -> np.ndarray:
    table = machine.blocks
    index = [d.id for d in machine.devices].index(device_id)
    return table.ids[table.device == index]


def explain_block(machine: Machine, block: int, semantics: Optional[str] = None) -> BlockStory:
    """Run the pipeline on one block with a trace and collect everything ``explain`` shows."""
    check_block(machine, block)
    sem = get_semantics(semantics or machine.default_semantics)
    table = machine.blocks
    row = int(table.rows([block])[0])
    sim = Simulator(machine, sem)
    ctx = sim.context(row)
    geo = machine.geometry
    ppb = geo.pages_per_block
    online = ctx.state is BlockState.ONLINE
    if online:
        batch = machine.pages.materialize(np.asarray([block], dtype=np.int64))
        kinds = batch.kinds[0]
        ref = batch.refcount[0] if batch.refcount is not None else None
        # simulate's second pass: the migration capacity the other blocks leave this one.
        _, stats = offline_block(sim.setup, ctx, kinds, ref)
        capacity = migration_capacities(machine, {block: stats}).get(block)
        ctx = sim.context(row, capacity)
    else:
        kinds = np.zeros(ppb, dtype=np.uint8)
        ref = None
    verdict, _, steps = offline_block_traced(sim.setup, ctx, kinds, ref)
    # simulate's confidence and blind spots (a snapshot's verdict may rest on what it cannot see)
    verdict = with_confidence(machine, sem, [verdict])[0]

    population: Tuple[PopulationRow, ...] = ()
    culprit: Optional[CulpritPage] = None
    refcounts = ref if ref is not None else DEFAULT_REFCOUNT[kinds]
    skippable = skippable_pages(sem, ctx.device, ctx.device_state, kinds)
    if online:
        population = _population(kinds, refcounts, ctx.start_pfn, skippable, machine.geometry)
    if verdict.culprit is not None:
        c = verdict.culprit
        index = c.pfn - ctx.start_pfn
        flagged = bool(skippable[index]) and c.kind is PageKind.FAKE_OFFLINE
        culprit = CulpritPage(c.pfn, c.kind, c.refcount, kpf.kind_page_flags(c.kind, c.pfn, flagged, machine.geometry),
                              KIND_INFO[c.kind].description)
    advice = _advice(machine, verdict, ctx, kinds, refcounts, sim.setup.pools, steps)
    return BlockStory(profile=machine.source, machine=machine.name, semantics=sem.name, semantics_title=sem.title,
                      verdict=verdict, steps=steps, population=population, culprit=culprit, advice=advice)


def _population(kinds: np.ndarray, refcounts: np.ndarray, start_pfn: int,
                skippable: np.ndarray, geometry: Geometry) -> Tuple[PopulationRow, ...]:
    pfns = start_pfn + np.arange(len(kinds), dtype=np.int64)
    flags = kpf.page_flags(kinds, pfns, skippable, geometry)
    # One key per (kind, flags): flags use bits < 48, the kind goes above them.
    key = (kinds.astype(np.uint64) << np.uint64(52)) | flags
    values, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    rows = []
    for g, (value, count) in enumerate(zip(values, counts)):
        refs = np.unique(refcounts[inverse == g])
        rows.append(PopulationRow(PageKind(int(value >> np.uint64(52))), int(value & np.uint64((1 << 52) - 1)),
                                  int(count), tuple(int(r) for r in refs)))
    return tuple(rows)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _advice(machine: Machine, v: BlockVerdict, ctx: BlockContext, kinds: np.ndarray, refcounts: np.ndarray,
            pools: Dict[int, HugetlbPool], steps: Tuple[StepRecord, ...]) -> str:
    """One plain sentence: what would make the block offlinable."""
    if v.result is Outcome.OFFLINED:
        return _offlined_advice(v)
    if v.cause is Cause.NOT_ONLINE:
        if ctx.state is BlockState.GOING_OFFLINE:
            return "Wait: another offline of this block is in progress."
        return "Nothing to offline: the block is already offline."
    if v.cause is Cause.MEMORY_NOTIFIER_VETO:
        return (f"Another memory notifier vetoes with -{v.errno.value if v.errno else '?'}: stop the subsystem that "
                "holds this memory.")
    if v.cause is Cause.NODE_NOTIFIER_VETO:
        return (f"This is node {v.node}'s last memory and a node notifier refuses to let it go: stop the user of "
                f"node {v.node}'s memory first.")
    if v.cause in _PAGE_FREE_ADVICE:
        return _PAGE_FREE_ADVICE[v.cause]
    culprit = v.culprit
    if culprit is None:
        return "The kernel would not offline this block."
    if v.cause is Cause.PAGEBLOCK_ISOLATED:
        return ("Wait: someone else (e.g. a concurrent alloc_contig_range()) has isolated the pageblock at pfn "
                f"{culprit.pfn:#x}; retry when it is done.")
    if v.cause is Cause.CMA_PAGEBLOCK:
        return "The block overlaps a CMA area: it cannot be offlined while that CMA reservation exists."
    page = _Pages(machine, ctx, kinds, refcounts)
    if v.step is Step.ISOLATE:
        return _isolation_advice(culprit, page)
    if v.cause is Cause.PAGE_OFFLINE_BUSY:
        return _scan_busy_advice(culprit, page)
    if v.step is Step.SCAN:  # hangs: migration keeps failing
        return _migration_advice(v, culprit, page)
    if v.step is Step.DISSOLVE:
        return _dissolve_advice(v, culprit, page, pools, steps)
    if v.step is Step.TEST_ISOLATED:
        if culprit.kind in _KERNEL_KINDS:
            m = page.count(*_KERNEL_KINDS)
            return (f"{_plural(m, 'stray unmovable kernel page')} in {page.zone} can neither migrate nor be skipped: "
                    "they must be freed; until then the write hangs until a signal.")
        return (f"The {culprit.kind.label} page at pfn {culprit.pfn:#x} is neither free nor skippable: free it; until "
                "then the write hangs until a signal.")
    if v.step is Step.COMMIT:
        return "Do not offline this block: the kernel would BUG() on a PageOffline page still referenced at commit."
    return "The kernel would not offline this block."


#: Hazards of a block that offlines, the one to warn about first: what later corrupts memory
#: before what only prints a splat.
_HAZARD_SEVERITY: Tuple[HazardKind, ...] = (
    HazardKind.REFERENCE_LOST_ON_ONLINE, HazardKind.FREED_TO_BUDDY, HazardKind.UNSAFE_REONLINE,
    HazardKind.REFCOUNT_ON_FREE_PAGE, HazardKind.STALE_MEMMAP_REFERENCE, HazardKind.BUG, HazardKind.WARN,
)
assert set(_HAZARD_SEVERITY) == set(HazardKind)


def _offlined_advice(v: BlockVerdict) -> str:
    if not v.hazards:
        return "Nothing to do: the block offlines."
    worst = min(v.hazards, key=lambda h: _HAZARD_SEVERITY.index(h.kind))
    if worst.kind is HazardKind.REFERENCE_LOST_ON_ONLINE:
        where = f" at pfn {worst.pfn:#x}" if worst.pfn is not None else ""
        return ("The block offlines, but do not online it again while someone else still holds its reference on the "
                f"fake-offline page{where}: onlining re-initialises the memmap (refcount 1), and the holder's "
                "put_page() would then free unplugged memory to the page allocator.")
    return f"Nothing to do: the block offlines, but mind the hazard: {worst.text}."


#: Advice for the causes that do not depend on the block's pages.
_PAGE_FREE_ADVICE: Dict[Cause, str] = {
    Cause.ZONE_NULL: "This block spans two zones or two nodes (valid_zones: none): it can never be offlined.",
    Cause.MISALIGNED: "The block's range is not aligned to pageblocks and sections: it can never be offlined.",
    Cause.MEMORY_HOLES: "Memory holes: this block can never be offlined.",
    Cause.VIRTIO_MEM_REMOVING: "Wait: the virtio-mem driver is being removed; retry once it is gone or loaded again.",
    Cause.SIGNAL_PENDING: "Wait: a signal is pending; retry from a task without a pending signal (e.g. not after a "
                          "timeout expired).",
}
_KERNEL_KINDS = (PageKind.SLAB, PageKind.PAGETABLE, PageKind.KERNEL)


class _Pages:
    """The block's pages, as the advice counts them."""

    def __init__(self, machine: Machine, ctx: BlockContext, kinds: np.ndarray, refcounts: np.ndarray) -> None:
        self.machine, self.ctx, self.kinds, self.refcounts = machine, ctx, kinds, refcounts
        self.zone = f"ZONE_{ctx.zone.value.upper()}" if ctx.zone else "this zone"

    def count(self, *which: PageKind) -> int:
        return int(np.count_nonzero(np.isin(self.kinds, [int(k) for k in which])))


def _isolation_advice(culprit: Culprit, page: _Pages) -> str:
    kind = culprit.kind
    n = page.count(kind)
    if kind is PageKind.RESERVED:
        return (f"PG_reserved memory ({_plural(n, 'page')}, boot allocations or firmware): this block can never be "
                "offlined.")
    if kind in _KERNEL_KINDS:
        m = page.count(*_KERNEL_KINDS)
        return (f"{_plural(m, 'unmovable kernel page')} (slab, page tables, other allocations) sit in {page.zone}: "
                "they must be freed first; online the block as movable (online_movable) so the kernel cannot "
                "place them there.")
    if kind is PageKind.BALLOON:
        return f"Deflate the balloon: {_plural(n, 'balloon page')} without balloon migration pin the block."
    if kind is PageKind.OFFLINE_REFCOUNT_DRIVER:
        return (f"The driver owning {_plural(n, 'PageOffline page')} must release them: they are not "
                "PG_offline_skippable, so isolation fails before its MEM_GOING_OFFLINE handler can drop its "
                "references.")
    if kind is PageKind.FAKE_OFFLINE:
        return ("The virtio-mem driver is gone and cleared PG_offline_skippable on the unplugged memory: this "
                "block cannot be offlined; load virtio-mem again and unplug through it.")
    return f"Free the unmovable {kind.label} page at pfn {culprit.pfn:#x} ({_plural(n, 'page')} of that kind)."


def _scan_busy_advice(culprit: Culprit, page: _Pages) -> str:
    kind = culprit.kind
    n = page.count(kind)
    if kind is PageKind.BALLOON:
        return f"Deflate the balloon: {_plural(n, 'balloon page')} without balloon migration cannot be migrated."
    if kind is PageKind.FAKE_OFFLINE:
        device = page.ctx.device
        if device is not None and device.driver is not DriverState.LOADED:
            return (f"The virtio-mem driver is {device.driver.value}: nobody drops the references of its "
                    f"{_plural(n, 'fake-offline page')}; load virtio-mem again and unplug through it.")
        return (f"Someone else holds a reference on the fake-offline page at pfn {culprit.pfn:#x} (refcount "
                f"{culprit.refcount} after virtio-mem dropped its own): it must drop it first.")
    if kind is PageKind.OFFLINE_REFCOUNT_DRIVER:
        return (f"The driver owning {_plural(n, 'PageOffline page')} must release them: under "
                "PG_offline_skippable only skippable pages are skipped, its refcount protocol no longer helps.")
    if kind is PageKind.OFFLINE_ORPHAN:
        return (f"{_plural(n, 'PageOffline page')} with refcount 0 have no owner: whoever left them must free "
                "them.")
    return f"Free the {kind.label} page at pfn {culprit.pfn:#x}: SCAN treats it as definitely unmovable."


def _migration_advice(v: BlockVerdict, culprit: Culprit, page: _Pages) -> str:
    kind = culprit.kind
    geo = page.machine.geometry
    default = int(DEFAULT_REFCOUNT[int(kind)])
    if v.cause is Cause.EXTRA_REFERENCES and KIND_INFO[kind].pinned:
        return (f"Unpin the VFIO/RDMA buffer: {_plural(page.count(kind), 'long-term pinned page')} cannot migrate; "
                "until then the write hangs until a signal.")
    if v.cause is Cause.EXTRA_REFERENCES:
        extra = int(np.count_nonzero(page.refcounts > DEFAULT_REFCOUNT[page.kinds]))
        return (f"Release the extra references on {_plural(extra, 'page')} (refcount {culprit.refcount}, "
                f"migration expects {default}; e.g. vmspliced pages waiting in a pipe); until then the write "
                "hangs until a signal.")
    if v.cause is Cause.GIGANTIC_NO_POOL_FOLIO:
        size = folio_size_text(geo, int(geo.folio_order[int(kind)]))
        return (f"Free a {size} hugetlb page outside this block (raise the {size} pool's free pages above its "
                "reservations): an in-use gigantic page can only migrate into a free pool page.")
    if v.cause is Cause.FOLIO_REFCOUNT_ZERO:
        return f"The {kind.label} folio at pfn {culprit.pfn:#x} has refcount 0 and can never be isolated."
    movable = int(np.count_nonzero(page.kinds != PageKind.FREE))
    return (f"Free memory on the nodes migration may use: the block's movable pages need targets "
            f"({format_size(movable * geo.page_size)} at most) and there are not enough free pages.")


def _dissolve_advice(v: BlockVerdict, culprit: Culprit, page: _Pages, pools: Dict[int, HugetlbPool],
                     steps: Tuple[StepRecord, ...]) -> str:
    geo = page.machine.geometry
    order = int(geo.folio_order[int(culprit.kind)])
    n = page.count(culprit.kind)
    if v.cause is Cause.HUGETLB_NO_HEADROOM:
        size = folio_size_text(geo, order)
        met = [s.count for s in steps if s.step is PipelineStep.DISSOLVE and s.count is not None]
        folios = met[0] if met else max(1, -(-n // (1 << order)))
        headroom = pools[order].headroom
        short = max(folios - headroom, 1)
        return (f"Raise the {size} hugetlb pool's headroom by {short}: DISSOLVE meets "
                f"{_plural(folios, 'free hugetlb page')} in the block but free - resv is {headroom} (release {short} "
                "reservations, or add free huge pages outside this block).")
    folios = max(1, -(-n // (1 << order)))
    return (f"Free {_plural(max(folios, 1), 'in-use hugetlb page')} that cannot migrate (not marked "
            "migratable, e.g. not mapped yet): stop their user.")


def kind_counts(story: BlockStory) -> Dict[PageKind, int]:
    """Pages per kind (rows of one kind with different flags summed)."""
    out: Dict[PageKind, int] = {}
    for r in story.population:
        out[r.kind] = out.get(r.kind, 0) + r.pages
    return out

