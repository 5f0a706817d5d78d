"""Page populations of a profile: seeded fills plus fixed runs, materialised block by block.

A fill draws every page independently from a PCG64 stream that belongs to the fill's seed:
block ``b`` always consumes the same slice of that stream (``PCG64.advance``), so the same
profile gives the same pages on every machine, whatever blocks are asked for and in what
chunks. Bit-generator output is stable across NumPy versions (only ``random_raw`` is used).

Per memory block the stream supplies one 16-bit draw per page (order-0 kinds) and one per
PMD-sized slot (compound kinds: THP and hugetlb, ``Geometry.pmd_order``: 2 MiB with 4 KiB
pages). Fractions are applied with a resolution of 1/65536; a non-zero fraction never rounds
to zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from memplan.core.geometry import Geometry
from memplan.core.machine import Fill, PageBatch, PageRun, consecutive_runs
from memplan.core.model import DEFAULT_REFCOUNT, LOOK_CLOSER, PageKind

RESOLUTION = 1 << 16
_NO_COMPOUND = 0xFF
#: memory blocks per lookup-table pass in ``_fill_rows`` (bounded intp temporaries)
_TAKE_ROWS = 4


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
    order0: np.ndarray
    compound: np.ndarray
    has_compound: bool
    #: ``PCG64.state`` of the fill's seed (numpy types it as its private ``_PCG64State``)
    state: Any
    #: the fill may draw a kind code ``LOOK_CLOSER`` or above
    draws_special: bool = True

    @classmethod
    def compile(cls, fill: Fill, geometry: Geometry) -> "FillPlan":
        order = geometry.folio_order
        compound = sorted((k, f) for k, f in fill.fractions.items() if order[int(k)] == geometry.pmd_order)
        small = sorted((k, f) for k, f in fill.fractions.items() if order[int(k)] == 0)
        p_compound = sum(f for _, f in compound)
        order0 = _thresholds(small, 1.0 / (1.0 - p_compound) if p_compound < 1.0 else 0.0)
        order0[order0 == _NO_COMPOUND] = int(PageKind.FREE)
        bitgen = np.random.PCG64(np.random.SeedSequence(fill.seed))
        special = any(int(k) >= LOOK_CLOSER for k, f in fill.fractions.items() if f > 0)
        return cls(fill, order0, _thresholds(compound, 1.0), p_compound > 0, bitgen.state, special)


class ProfilePageSource:
    """Pages of a profile: fills first, then fixed runs (holes, vmemmap, virtio-mem
    fake-offline pages, explicit ``[[pages]]``) on top, in that order."""

    def __init__(self, geometry: Geometry, fills: Sequence[Fill], fill_of_block: Dict[int, int],
                 fixed: Sequence[PageRun]) -> None:
        self.geometry = geometry
        self.plans = [FillPlan.compile(f, geometry) for f in fills]
        self.fill_of_block = dict(fill_of_block)
        runs = sorted(fixed, key=lambda r: (r.pfn, r.count))
        self._start = np.array([r.pfn for r in runs], dtype=np.int64)
        self._end = np.array([r.pfn + r.count for r in runs], dtype=np.int64)
        self._runs = runs
        # Runs may overlap only when a later layer overrides an earlier one (explicit pages over
        # fake-offline ranges); apply them in their original layer order.
        self._layer = {id(r): i for i, r in enumerate(fixed)}
        self._max_end = np.maximum.accumulate(self._end) if len(runs) else self._end

    def possible_kinds(self) -> set:
        """Every kind that can appear in a materialised page (for skipping needless censuses)."""
        kinds = {PageKind.FREE} | {r.kind for r in self._runs}
        for plan in self.plans:
            kinds |= {k for k, f in plan.fill.fractions.items() if f > 0}
        return kinds

    def _runs_in(self, lo_pfn: int, hi_pfn: int) -> List[PageRun]:
        if not self._runs:
            return []
        first = int(np.searchsorted(self._max_end, lo_pfn, side="right"))
        last = int(np.searchsorted(self._start, hi_pfn, side="left"))
        hits = [r for r in self._runs[first:last] if r.pfn + r.count > lo_pfn]
        hits.sort(key=lambda r: self._layer[id(r)])
        return hits

    def _draw(self, plan: FillPlan, first_block: int, nblocks: int) -> Tuple[np.ndarray, np.ndarray]:
        ppb = self.geometry.pages_per_block
        slots = ppb >> self.geometry.pmd_order
        per_block = (ppb + slots + 3) // 4  # u64 draws per block
        bitgen = np.random.PCG64()
        bitgen.state = plan.state
        bitgen.advance(first_block * per_block)
        raw = bitgen.random_raw(nblocks * per_block)
        u16 = raw.astype("<u8", copy=False).view("<u2").reshape(nblocks, per_block * 4)
        return u16[:, :ppb], u16[:, ppb:ppb + slots]

    def materialize(self, block_ids: np.ndarray) -> PageBatch:
        geo = self.geometry
        ppb = geo.pages_per_block
        block_ids = np.asarray(block_ids, dtype=np.int64)
        kinds = np.zeros((len(block_ids), ppb), dtype=np.uint8)
        fixed_runs = self._runs_in(int(block_ids.min()) * ppb if len(block_ids) else 0,
                                   (int(block_ids.max()) + 1) * ppb if len(block_ids) else 0)
        special_rows = np.zeros(len(block_ids), dtype=bool)
        # Fills, in runs of consecutive blocks that share a fill.
        for row, end in consecutive_runs(block_ids, key=self.fill_of_block.get):
            plan_index = self.fill_of_block.get(int(block_ids[row]))
            if plan_index is not None:
                self._fill_rows(kinds, row, end, block_ids, self.plans[plan_index], fixed_runs)
                special_rows[row:end] = self.plans[plan_index].draws_special
        # Fixed runs on top.
        refcount: Optional[np.ndarray] = None
        refcount_rows = np.zeros(len(block_ids), dtype=bool)
        for run in fixed_runs:
            lo, hi = run.pfn, run.pfn + run.count
            b_lo, b_hi = lo // ppb, (hi - 1) // ppb
            rows = np.flatnonzero((block_ids >= b_lo) & (block_ids <= b_hi))
            if int(run.kind) >= LOOK_CLOSER:
                special_rows[rows] = True
            for r in rows:
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
        # Fills place compound folios in whole free slots and [[pages]] must cover whole,
        # aligned folios (validated by the profile loader): every folio is whole.
        return PageBatch(block_ids=block_ids, kinds=kinds, refcount=refcount, refcount_rows=refcount_rows,
                         whole_folios=True, special_rows=special_rows)

    def _fill_rows(self, kinds: np.ndarray, row: int, end: int, block_ids: np.ndarray, plan: FillPlan,
                   fixed_runs: List[PageRun]) -> None:
        geo = self.geometry
        ppb, slot_pages = geo.pages_per_block, 1 << geo.pmd_order
        pages_u16, slot_u16 = self._draw(plan, int(block_ids[row]), end - row)
        # A few blocks per take(): it converts the u16 draws to intp indexes first, and a
        # cache-sized temporary makes that twice as fast as one take over the whole chunk.
        # The draws are below 65536 = len(order0), so "wrap" never wraps (and skips the check).
        step = _TAKE_ROWS
        for first in range(0, end - row, step):
            np.take(plan.order0, pages_u16[first:first + step], out=kinds[row + first:min(row + first + step, end)],
                    mode="wrap")
        if not plan.has_compound:
            return
        slot_kind = np.take(plan.compound, slot_u16)
        chosen = slot_kind != _NO_COMPOUND
        if fixed_runs:
            # A compound folio only fits into a slot that no fixed page touches.
            first_pfn = int(block_ids[row]) * ppb
            for run in fixed_runs:
                lo = max(run.pfn - first_pfn, 0)
                hi = min(run.pfn + run.count - first_pfn, (end - row) * ppb)
                if hi <= 0 or lo >= (end - row) * ppb:
                    continue
                flat = chosen.reshape(-1)
                flat[lo // slot_pages:(hi - 1) // slot_pages + 1] = False
        view = kinds[row:end].reshape(end - row, -1, slot_pages)
        view[chosen] = slot_kind[chosen][:, None]
