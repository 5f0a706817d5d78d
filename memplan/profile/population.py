"""Page populations of a profile: seeded fills plus fixed runs, materialised block by block.

A fill draws from a PCG64 stream that belongs to the fill's seed: block ``b`` always consumes
the same slice of that stream (``PCG64.advance``), so the same profile gives the same pages on
every machine, whatever blocks are asked for and in what chunks. Bit-generator output is
stable across NumPy versions (only ``random_raw`` is used).

Per memory block the stream supplies one 16-bit draw per *draw group* (order-0 kinds) and one
per PMD-sized slot (compound kinds: THP and hugetlb, ``Geometry.pmd_order``: 2 MiB with 4 KiB
pages). Fractions are applied with a resolution of 1/65536; a non-zero fraction never rounds
to zero. The draw group is the fill's ``group_order``:

* profile format 1: every page is drawn on its own (order 0);
* profile format 2: one kind per naturally aligned group of 8 pages (order 3,
  ``PAGE_ALLOC_COSTLY_ORDER``: the largest order the per-CPU lists and SLUB's slabs use, so
  pages of one kind come in runs as the allocator hands them out). Eight times fewer draws,
  and the kind of a group is written as one 64-bit word: materialising costs a fraction of
  judging the pages (benchmarks/materialize.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from memplan.core.arrays import BoolArray, IntArray, KindArray
from memplan.core.geometry import Geometry
from memplan.core.machine import Fill, PageBatch, PageRun
from memplan.core.model import DEFAULT_REFCOUNT, LOOK_CLOSER, PageKind
from memplan.kernel import hugetlb as hugetlb_mod

RESOLUTION = 1 << 16
_NO_COMPOUND = 0xFF
#: draw groups per lookup-table pass in ``_fill_rows`` (bounded intp temporaries): four blocks
#: of single pages, or 32 blocks of 8-page groups
_TAKE_GROUPS = 4 << 15
#: the integer type that holds one draw group's page kinds (one byte per page)
_GROUP_TYPES = {0: np.uint8, 1: np.uint16, 2: np.uint32, 3: np.uint64}


def _thresholds(weights: Sequence[Tuple[PageKind, float]], scale: float) -> np.ndarray:
    """A 65536-entry lookup table mapping a uniform u16 draw to a kind code (0xFF = none)."""
    table = np.full(RESOLUTION, _NO_COMPOUND, dtype=np.uint8)
    cursor = 0
    for kind, fraction in weights:
        if fraction <= 0:
            continue
        width = max(int(round(fraction * scale * RESOLUTION)), 1)
        width = min(width, RESOLUTION - cursor)
        table[cursor:cursor + width] = int(kind)
        cursor += width
    return table


@dataclass(frozen=True)
class FillPlan:
    """A fill compiled into lookup tables and a stream position per block."""

    fill: Fill
    #: u16 draw -> the kind of a whole draw group, the kind byte repeated once per page
    order0: np.ndarray
    compound: np.ndarray
    has_compound: bool
    #: ``PCG64.state`` of the fill's seed (numpy types it as its private ``_PCG64State``)
    state: Any
    #: the fill may draw a kind code ``LOOK_CLOSER`` or above
    draws_special: bool = True
    #: the u16 draw that is the first to mean a free page (draws from here up are free)
    free_from: int = RESOLUTION

    @classmethod
    def compile(cls, fill: Fill, geometry: Geometry) -> "FillPlan":
        order = geometry.folio_order
        compound = sorted((k, f) for k, f in fill.fractions.items() if order[int(k)] == geometry.pmd_order)
        small = sorted((k, f) for k, f in fill.fractions.items() if order[int(k)] == 0)
        p_compound = sum(f for _, f in compound)
        order0 = _thresholds(small, 1.0 / (1.0 - p_compound) if p_compound < 1.0 else 0.0)
        drawn = np.flatnonzero(order0 != _NO_COMPOUND)
        free_from = int(drawn[-1]) + 1 if len(drawn) else 0
        order0[order0 == _NO_COMPOUND] = int(PageKind.FREE)
        group_type = _GROUP_TYPES[fill.group_order]
        # the kind byte in every byte of the group's word (little- or big-endian alike)
        repeated = order0.astype(group_type) * group_type(int.from_bytes(b"\x01" * np.dtype(group_type).itemsize,
                                                                           "little"))
        bitgen = np.random.PCG64(np.random.SeedSequence(fill.seed))
        special = any(int(k) >= LOOK_CLOSER for k, f in fill.fractions.items() if f > 0)
        return cls(fill, repeated, _thresholds(compound, 1.0), p_compound > 0, bitgen.state, special, free_from)


class ProfilePageSource:
    """Pages of a profile: fills first, then fixed runs (holes, vmemmap, virtio-mem
    fake-offline pages, explicit ``[[pages]]``) on top, in that order.

    ``fill_ids``/``fill_index``: the sorted ids of the blocks a fill populates and the index of
    its fill in ``fills`` (a block has at most one)."""

    def __init__(self, geometry: Geometry, fills: Sequence[Fill], fill_ids: IntArray, fill_index: IntArray,
                 fixed: Sequence[PageRun]) -> None:
        self.geometry = geometry
        self.plans = [FillPlan.compile(f, geometry) for f in fills]
        self._fill_ids = np.asarray(fill_ids, dtype=np.int64)
        self._fill_index = np.asarray(fill_index, dtype=np.int32)
        runs = sorted(fixed, key=lambda r: (r.pfn, r.count))
        self._start = np.array([r.pfn for r in runs], dtype=np.int64)
        self._end = np.array([r.pfn + r.count for r in runs], dtype=np.int64)
        self._runs = runs
        # Runs may overlap only when a later layer overrides an earlier one (explicit pages over
        # fake-offline ranges); apply them in their original layer order.
        self._layer = {id(r): i for i, r in enumerate(fixed)}
        self._max_end = np.maximum.accumulate(self._end) if len(runs) else self._end

    def possible_kinds(self) -> Set[PageKind]:
        """Every kind that can appear in a materialised page (for skipping needless censuses)."""
        kinds = {PageKind.FREE} | {r.kind for r in self._runs}
        for plan in self.plans:
            kinds |= {k for k, f in plan.fill.fractions.items() if f > 0}
        return kinds

    def fill_of(self, block_ids: IntArray) -> IntArray:
        """Per block: the index of the fill that populates it, -1 for none."""
        ids = np.asarray(block_ids, dtype=np.int64)
        if not len(self._fill_ids):
            return np.full(len(ids), -1, dtype=np.int32)
        at = np.minimum(np.searchsorted(self._fill_ids, ids), len(self._fill_ids) - 1)
        return np.where(self._fill_ids[at] == ids, self._fill_index[at], -1).astype(np.int32)

    def _fill_runs(self, block_ids: IntArray) -> List[Tuple[int, int, int]]:
        """``(row, end, fill index)`` of the runs of consecutive blocks that share a fill."""
        index = self.fill_of(block_ids)
        cuts = np.flatnonzero((np.diff(block_ids) != 1) | (np.diff(index) != 0)) + 1
        starts = [0] + cuts.tolist()
        ends = cuts.tolist() + [len(block_ids)]
        return [(s, e, int(index[s])) for s, e in zip(starts, ends) if len(block_ids) and index[s] >= 0]

    def _runs_in(self, lo_pfn: int, hi_pfn: int) -> List[PageRun]:
        if not self._runs:
            return []
        first = int(np.searchsorted(self._max_end, lo_pfn, side="right"))
        last = int(np.searchsorted(self._start, hi_pfn, side="left"))
        hits = [r for r in self._runs[first:last] if r.pfn + r.count > lo_pfn]
        hits.sort(key=lambda r: self._layer[id(r)])
        return hits

    def _draw(self, plan: FillPlan, first_block: int, nblocks: int) -> Tuple[np.ndarray, np.ndarray]:
        """The u16 draws of ``nblocks`` blocks from ``first_block`` on: per draw group, per slot."""
        ppb = self.geometry.pages_per_block
        groups = ppb >> plan.fill.group_order
        slots = ppb >> self.geometry.pmd_order
        per_block = (groups + slots + 3) // 4  # u64 draws per block
        bitgen = np.random.PCG64()
        bitgen.state = plan.state
        bitgen.advance(first_block * per_block)
        raw = bitgen.random_raw(nblocks * per_block)
        u16 = raw.astype("<u8", copy=False).view("<u2").reshape(nblocks, per_block * 4)
        return u16[:, :groups], u16[:, groups:groups + slots]

    def materialize(self, block_ids: IntArray) -> PageBatch:
        ppb = self.geometry.pages_per_block
        block_ids = np.asarray(block_ids, dtype=np.int64)
        kinds = np.zeros((len(block_ids), ppb), dtype=np.uint8)
        fixed_runs = self._runs_in(int(block_ids.min()) * ppb if len(block_ids) else 0,
                                   (int(block_ids.max()) + 1) * ppb if len(block_ids) else 0)
        special_rows = np.zeros(len(block_ids), dtype=bool)
        for row, end, plan_index in self._fill_runs(block_ids):
            self._fill_rows(kinds, row, end, block_ids, self.plans[plan_index], fixed_runs)
            special_rows[row:end] = self.plans[plan_index].draws_special
        refcount, refcount_rows = self._place_fixed(kinds, block_ids, fixed_runs, special_rows)
        # Fills place compound folios in whole free slots and [[pages]] must cover whole,
        # aligned folios (validated by the profile loader): every folio is whole.
        return PageBatch(block_ids=block_ids, kinds=kinds, refcount=refcount, refcount_rows=refcount_rows,
                         whole_folios=True, special_rows=special_rows)

    def _place_fixed(self, kinds: KindArray, block_ids: IntArray, fixed_runs: List[PageRun],
                     special_rows: BoolArray) -> Tuple[Optional[np.ndarray], np.ndarray]:
        """Fixed runs on top of the fills; the refcounts when a run sets one."""
        ppb = self.geometry.pages_per_block
        refcount: Optional[np.ndarray] = None
        refcount_rows = np.zeros(len(block_ids), dtype=bool)
        ordered = len(block_ids) < 2 or bool(np.all(block_ids[1:] > block_ids[:-1]))
        for run in fixed_runs:
            lo, hi = run.pfn, run.pfn + run.count
            if ordered:  # the engine's chunks: a binary search, not a pass over the chunk per run
                rows = np.arange(int(np.searchsorted(block_ids, lo // ppb, side="left")),
                                 int(np.searchsorted(block_ids, (hi - 1) // ppb, side="right")))
            else:
                rows = np.flatnonzero((block_ids >= lo // ppb) & (block_ids <= (hi - 1) // ppb))
            if int(run.kind) >= LOOK_CLOSER:
                special_rows[rows] = True
            for r in rows.tolist():
                base = int(block_ids[r]) * ppb
                s, e = max(lo - base, 0), min(hi - base, ppb)
                kinds[r, s:e] = int(run.kind)
                if run.refcount is not None:
                    if refcount is None:
                        refcount = DEFAULT_REFCOUNT[kinds]
                    refcount[r, s:e] = run.refcount
                    refcount_rows[r] = True
                elif refcount is not None:
                    refcount[r, s:e] = DEFAULT_REFCOUNT[int(run.kind)]
        return refcount, refcount_rows

    def _fill_rows(self, kinds: KindArray, row: int, end: int, block_ids: IntArray, plan: FillPlan,
                   fixed_runs: List[PageRun]) -> None:
        geo = self.geometry
        groups_u16, slot_u16 = self._draw(plan, int(block_ids[row]), end - row)
        groups = kinds[row:end].view(plan.order0.dtype)
        # A few blocks per take(): it converts the u16 draws to intp indexes first, and a
        # cache-sized temporary makes that twice as fast as one take over the whole chunk.
        # The draws are below 65536 = len(order0), so "wrap" never wraps (and skips the check).
        step = max(_TAKE_GROUPS // groups.shape[1], 1)
        for first in range(0, end - row, step):
            np.take(plan.order0, groups_u16[first:first + step], out=groups[first:first + step], mode="wrap")
        if plan.has_compound:
            chosen, slot_kind = self._compound_slots(plan, slot_u16, int(block_ids[row]) * geo.pages_per_block,
                                                     fixed_runs)
            view = kinds[row:end].reshape(end - row, -1, 1 << geo.pmd_order)
            view[chosen] = slot_kind[chosen][:, None]

    def _compound_slots(self, plan: FillPlan, slot_u16: np.ndarray, first_pfn: int,
                        fixed_runs: List[PageRun]) -> Tuple[np.ndarray, np.ndarray]:
        """Which PMD-sized slots hold a compound folio, and its kind: a compound folio only
        fits into a slot that no fixed page touches."""
        slot_pages = 1 << self.geometry.pmd_order
        slot_kind = np.take(plan.compound, slot_u16)
        chosen = slot_kind != _NO_COMPOUND
        total = slot_u16.size * slot_pages
        flat = chosen.reshape(-1)
        for run in fixed_runs:
            lo = max(run.pfn - first_pfn, 0)
            hi = min(run.pfn + run.count - first_pfn, total)
            if hi > 0 and lo < total:
                flat[lo // slot_pages:(hi - 1) // slot_pages + 1] = False
        return chosen, slot_kind

    def census(self, block_ids: IntArray) -> Tuple[IntArray, Dict[int, int]]:
        """Free pages per block and free hugetlb folios (by order) of the given blocks, exactly
        as counting the materialised pages would give them, without materialising filled
        blocks that no fixed run touches: their free pages are the draws in the free part of
        the lookup table, outside the slots that hold a compound folio."""
        geo = self.geometry
        ppb = geo.pages_per_block
        block_ids = np.asarray(block_ids, dtype=np.int64)
        free = np.zeros(len(block_ids), dtype=np.int64)
        folios = {order: 0 for order in geo.hugetlb_orders}
        touched = self._touched_by_fixed(block_ids)
        index = self.fill_of(block_ids)
        pmd_free = int(PageKind.HUGETLB_FREE)
        for row, end, plan_index in self._fill_runs(block_ids):
            plan = self.plans[plan_index]
            groups_u16, slot_u16 = self._draw(plan, int(block_ids[row]), end - row)
            is_free = (groups_u16 >= plan.free_from).reshape(end - row, slot_u16.shape[1], -1)
            chosen = np.take(plan.compound, slot_u16) if plan.has_compound else None
            compound = (chosen != _NO_COMPOUND) if chosen is not None else np.zeros(slot_u16.shape, dtype=bool)
            per_group = 1 << plan.fill.group_order
            free[row:end] = np.count_nonzero(is_free & ~compound[:, :, None], axis=(1, 2)) * per_group
            if chosen is not None:
                keep = ~touched[row:end]
                folios[geo.pmd_order] += int(np.count_nonzero(chosen[keep] == pmd_free))
        free[index < 0] = ppb  # no fill: every page is free until fixed runs say otherwise
        exact = np.flatnonzero(touched)
        for chunk in np.array_split(exact, max(1, -(-len(exact) * ppb // (1 << 22)))):
            if not len(chunk):
                continue
            batch = self.materialize(block_ids[chunk])
            free[chunk] = np.count_nonzero(batch.kinds == int(PageKind.FREE), axis=1)
            for r, block in enumerate(block_ids[chunk].tolist()):
                for order in geo.hugetlb_orders:
                    folios[order] += hugetlb_mod.free_folio_heads(batch.kinds[r], block * ppb, order, geo)
        return free, folios

    def _touched_by_fixed(self, block_ids: IntArray) -> np.ndarray:
        """Per block: some fixed run (hole, vmemmap, fake-offline range, [[pages]]) lies in it."""
        ppb = self.geometry.pages_per_block
        if not len(self._start):
            return np.zeros(len(block_ids), dtype=bool)
        first_block, last_block = self._start // ppb, (self._end - 1) // ppb
        # a block is touched when some run's [first_block, last_block] contains it
        order = np.argsort(first_block, kind="stable")
        reach = np.maximum.accumulate(last_block[order])
        at = np.searchsorted(first_block[order], block_ids, side="right") - 1
        return (at >= 0) & (reach[np.maximum(at, 0)] >= block_ids)
