"""Block-level shortcut: verdicts for a whole chunk of memory blocks without the per-page pipeline.

On a real machine almost every memory block is one of two kinds: a ZONE_MOVABLE (or empty
kernel-zone) block of free, LRU and movable_ops pages, possibly with virtio-mem fake-offline
pages, which offlines; or a kernel-zone block holding slab, page-table or other unmovable
kernel pages, which fails in ``start_isolate_page_range()``. Which of them a block is follows
from a few per-block reductions over the page-kind bytes (one count of the non-free pages; for
blocks holding kinds from ``LOOK_CLOSER`` up, a handful of counts), so a 16 TiB machine needs
no per-page pipeline for them. Every other block (hugetlb, pins, extra references, holes,
vmemmap, CMA, capacity shortage...) returns ``None`` and goes through ``offline_block()``.

The shortcut only decides which blocks can skip the per-page work; it never restates why a
block fails. The verdicts it emits come from the kernel model's own functions:
``memplan.kernel.isolation`` (the unmovable predicate, as a per-kind table, and the isolation
walk with its failure and culprit), ``memplan.kernel.offline`` (the stop and veto conditions
that need no page, and whether fake-offline pages pass every step), ``memplan.kernel.pages``
(folio heads) and ``memplan.kernel.verdict`` (the log entries and the verdict itself). Tests
compare it with ``offline_block()`` on random machines and page rows, ``BlockStats`` included.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from memplan.core.arrays import BoolArray, KindArray
from memplan.core.geometry import Geometry
from memplan.core.model import (
    FOLIO_SIZE,
    IS_PAGE_OFFLINE,
    LOOK_CLOSER,
    SPECIAL_BIT,
    ZONE_NONE,
    FolioSize,
    PageKind,
    Zone,
)
from memplan.core.results import BlockVerdict, PageCounts
from memplan.engine.context import BlockColumns
from memplan.kernel.isolation import isolate_range, unmovable_kinds
from memplan.kernel.migration import targets_suffice
from memplan.kernel.offline import (
    BlockStats,
    OfflineSetup,
    Stop,
    fake_offline_passes,
    going_offline_stop,
    node_notifier_stop,
    signal_stop,
)
from memplan.kernel.pages import KindSet, folio_heads
from memplan.kernel.semantics import OfflineSemantics
from memplan.kernel.verdict import page_culprit

__all__ = ["BlockColumns", "blocking_kinds", "chunk_verdicts"]

Verdict = Tuple[BlockVerdict, BlockStats]

#: Kinds the shortcut counts as blocking when the kernel's isolation predicate calls them
#: unmovable: order-0 pages that nothing later skips or counts apart (not PageOffline, which a
#: semantics may skip at TEST_ISOLATED; not memory holes, which stop offlining before isolation).
_BLOCKING_CANDIDATES = np.zeros(256, dtype=bool)
_BLOCKING_CANDIDATES[[int(k) for k in PageKind if FOLIO_SIZE[int(k)] == FolioSize.BASE
                      and not IS_PAGE_OFFLINE[int(k)] and k is not PageKind.HOLE]] = True
_THP = int(PageKind.THP)
_FAKE = int(PageKind.FAKE_OFFLINE)
_POISON = int(PageKind.HWPOISON)
_SPECIAL_BITS = np.uint8(SPECIAL_BIT | LOOK_CLOSER)
assert LOOK_CLOSER == int(PageKind.HWPOISON) and all((int(k) >= LOOK_CLOSER) == bool(int(k) & 0xC0) for k in PageKind)
_ZONES = {code: Zone.from_code(code) for code in (z.code for z in Zone)}
_MOVABLE = Zone.MOVABLE.code
# Page counts and stats are immutable values that most blocks of a big machine share (the free
# page count of a block takes a few hundred values): intern them instead of building one pair
# per block (time and memory).
_INTERNED: Dict[tuple, Tuple[PageCounts, BlockStats]] = {}
_INTERN_LIMIT = 4096
_UNKNOWN = object()


# numpy's C implementation: the public np.count_nonzero() adds a Python wrapper (axis handling)
# that costs as much as counting a 128 MiB block's bytes.
try:
    from numpy._core.multiarray import count_nonzero as _c_count_nonzero
except ImportError:  # pragma: no cover - older numpy
    _c_count_nonzero = np.count_nonzero


def _count_nonzero(a: np.ndarray) -> int:
    return int(_c_count_nonzero(a))


def _factory(cls: type) -> Callable[..., Any]:
    """Build instances of a frozen dataclass from keyword fields without its generated
    ``__init__`` (which sets every field through ``object.__setattr__``): a 16 TiB run creates
    131072 of them. Only for plain dataclasses: no ``__post_init__``, no ``__slots__``, no
    default factories; the caller passes every field without a default."""
    assert not hasattr(cls, "__post_init__") and not hasattr(cls, "__slots__"), cls
    assert all(f.init and f.default_factory is MISSING for f in fields(cls)), cls
    defaults = {f.name: f.default for f in fields(cls) if f.default is not MISSING}

    def make(**values: Any) -> Any:
        obj: Any = object.__new__(cls)
        obj.__dict__.update(defaults)
        obj.__dict__.update(values)
        return obj

    return make


_counts = _factory(PageCounts)
_stats = _factory(BlockStats)


@lru_cache(maxsize=16)
def blocking_kinds(zone_movable: bool, semantics: OfflineSemantics, geometry: Geometry) -> KindSet:
    """The kinds whose pages fail isolation in a zone (``page_is_unmovable()``, asked per kind)
    and that the full pipeline counts as blocking."""
    return KindSet.of(unmovable_kinds(zone_movable, semantics, False, geometry) & _BLOCKING_CANDIDATES)


class _Chunk:
    """The per-chunk state of ``chunk_verdicts()``: shared templates, cached kernel answers."""

    def __init__(self, setup: OfflineSetup, blocks: BlockColumns) -> None:
        self.setup, self.blocks = setup, blocks
        geo = setup.geometry
        self.ppb, self.pageblock_pages = geo.pages_per_block, geo.pageblock_pages
        self.no_pageblocks = np.zeros(geo.pageblocks_per_block, dtype=bool)
        self.no_free_hugetlb = MappingProxyType({order: 0 for order in geo.hugetlb_orders})
        self.thp_order = int(geo.folio_order[_THP])
        self.blocking = {movable: blocking_kinds(movable, setup.semantics, geo) for movable in (False, True)}
        self.block_col, self.start_col = blocks.block.tolist(), blocks.start_pfn.tolist()
        self.zone_col, self.node_col = blocks.zone.tolist(), blocks.node.tolist()
        self.capacity_col, self.movable_col = blocks.capacity.tolist(), blocks.movable.tolist()
        self.devices, self.device_states = blocks.device, blocks.device_state
        self.offlined = setup.verdicts.outcome(None, 0, 0)
        self._passes: Dict[tuple, bool] = {}
        self.stops: Dict[tuple, Optional[Stop]] = {}
        self.templates: Dict[tuple, Dict[str, Any]] = {}

    def fake_offline_skipped(self, r: int) -> bool:
        key = (id(self.devices[r]), self.device_states[r])
        if key not in self._passes:
            self._passes[key] = fake_offline_passes(self.setup.semantics, self.devices[r], self.device_states[r],
                                                    self.setup.geometry)
        return self._passes[key]

    def targets_suffice(self, r: int, row: KindArray, migrated: int, demand: int) -> bool:
        """Every folio of a block with a known capacity finds a target (``targets_suffice()``:
        THPs may take ZONE_MOVABLE pages where order-0 folios may not)."""
        thp = _count_nonzero(row == _THP)
        return bool(targets_suffice(self.capacity_col[r], self.movable_col[r], self.zone_col[r] == _MOVABLE,
                                    migrated - thp, demand - (migrated - thp)))

    def pre_scan_stop(self, r: int) -> Optional[Stop]:
        """What ends an isolated block's attempt before SCAN: the node notifier, the memory
        notifier, a pending signal (``memplan.kernel.offline``), once per node and device."""
        node, device = self.node_col[r], self.devices[r]
        key = (node, id(device))
        if key not in self.stops:
            env = self.setup.environment
            self.stops[key] = (node_notifier_stop(self.setup, node, self.ppb, 0)
                               or going_offline_stop(env, device) or signal_stop(env))
        return self.stops[key]

    def template(self, r: int, offlined: bool) -> Dict[str, Any]:
        """The verdict fields blocks of one zone, node and device state share (and the outcome,
        when they offline)."""
        device = self.devices[r]
        key = (offlined, self.zone_col[r], self.node_col[r], id(device), self.device_states[r])
        template = self.templates.get(key)
        if template is None:
            outcome = self.offlined if offlined else {}
            template = self.templates[key] = self.setup.verdicts.template(
                _ZONES[self.zone_col[r]], self.node_col[r], device.id if device is not None else None,
                self.device_states[r], **outcome)
        return template

    def shared(self, n_used: int, migrated: int, fake: int, poison: int, demand: int) -> Tuple[PageCounts, BlockStats]:
        """Interned page counts and stats."""
        ppb = self.ppb
        key = (ppb, n_used, migrated, fake, poison, demand)
        shared = _INTERNED.get(key)
        if shared is None:
            if len(_INTERNED) >= _INTERN_LIMIT:
                _INTERNED.clear()
            shared = _INTERNED[key] = (
                _counts(total=ppb, free=ppb - n_used, migrated=migrated, skipped_offline=fake, hwpoison=poison),
                _stats(free_pages=ppb - n_used, demand=demand, free_hugetlb=self.no_free_hugetlb))
        return shared

    def stopped(self, r: int, row: KindArray, unmovable: Optional[BoolArray],
                counts: PageCounts) -> Optional[BlockVerdict]:
        """The verdict of a block whose attempt ends before SCAN: isolation fails on an
        unmovable page, or a notifier or a signal stops it (``None``: it offlines)."""
        start_pfn = self.start_col[r]
        end_pfn = start_pfn + self.ppb
        builder = self.setup.verdicts
        if unmovable is not None:
            failure = isolate_range(unmovable, self.pageblock_pages, self.no_pageblocks, self.no_pageblocks)
            if failure is not None:
                isolation = Stop(failure.cause, page_culprit(start_pfn, row, None, failure.index))
                return builder.stamp(self.template(r, False), self.block_col[r], start_pfn, counts,
                                     **builder.outcome(isolation, start_pfn, end_pfn, failure.log(start_pfn)))
        stop = self.pre_scan_stop(r)
        if stop is None:
            return None
        return builder.stamp(self.template(r, False), self.block_col[r], start_pfn, counts,
                             **builder.outcome(stop, start_pfn, end_pfn))


def _special_rows(kinds: KindArray, special_rows: Optional[BoolArray]) -> np.ndarray:
    """Rows that may hold a page of kind ``LOOK_CLOSER`` or above."""
    if special_rows is not None:
        return np.asarray(special_rows, dtype=bool)
    # One OR over each block's bytes: which kind bits occur at all (``SPECIAL_BIT`` or HWPoison).
    n = len(kinds)
    words = np.bitwise_or.reduce(kinds.view(np.uint64), axis=1)
    return (np.bitwise_or.reduce(words.view(np.uint8).reshape(n, 8), axis=1) & _SPECIAL_BITS) != 0


def chunk_verdicts(setup: OfflineSetup, blocks: BlockColumns, kinds: KindArray, has_refcount: BoolArray,
                   whole_folios: bool = False, special_rows: Optional[BoolArray] = None) -> List[Optional[Verdict]]:
    """Verdicts for the blocks of a chunk that need no per-page pipeline (``None`` for the others).

    ``kinds`` holds one row of page-kind bytes per block; ``has_refcount`` marks rows that may
    hold a page whose refcount is not its kind's default; ``whole_folios`` promises that every
    THP page belongs to a whole, aligned folio (else the folio heads are counted the way
    ``RangeView.folio_first()`` does); ``special_rows`` (optional) marks the rows that may hold
    a page of kind ``LOOK_CLOSER`` or above (else one OR over the bytes finds them). The result
    equals ``offline_block()``'s for every block it decides.
    """
    n, ppb = kinds.shape
    out: List[Optional[Verdict]] = [None] * n
    # Blocks that pass the state, zone, alignment and holes steps whatever their pages, with
    # nothing but the pages deciding isolation: no vmemmap, no CMA or isolated pageblock.
    eligible = ((blocks.state == 0) & (blocks.zone != ZONE_NONE) & (blocks.vmemmap == 0)
                & ~blocks.special_pageblocks & ~np.asarray(has_refcount, dtype=bool))
    if not eligible.any() or ppb % 8:
        return out
    kinds = np.ascontiguousarray(kinds)
    special_col = _special_rows(kinds, special_rows).tolist()
    chunk = _Chunk(setup, blocks)
    stops, templates, stamp = chunk.stops, chunk.templates, setup.verdicts.stamp
    block_col, start_col, zone_col, node_col = chunk.block_col, chunk.start_col, chunk.zone_col, chunk.node_col
    capacity_col, devices, device_states = chunk.capacity_col, chunk.devices, chunk.device_states
    rows = np.flatnonzero(eligible).tolist()
    used = list(map(_count_nonzero, kinds)) if len(rows) == n else [_count_nonzero(kinds[r]) for r in rows]
    for r, n_used in zip(rows, used):
        poison = fake = blocking = 0
        unmovable = None
        if special_col[r]:
            # Count the pages from LOOK_CLOSER up, then account for them kind by kind (most
            # likely first); anything left over is a kind only the full pipeline judges.
            row = kinds[r]
            left = _count_nonzero(row >= LOOK_CLOSER)
            if left and chunk.fake_offline_skipped(r):
                fake = _count_nonzero(row == _FAKE)
                left -= fake
            if left:
                unmovable = chunk.blocking[zone_col[r] == _MOVABLE].mask(row)
                blocking = _count_nonzero(unmovable)
                left -= blocking
            if left:
                poison = _count_nonzero(row == _POISON)
                left -= poison
            if left:
                continue  # some other kind: the full pipeline decides
        migrated = n_used - poison - fake - blocking
        # do_migrate_range() needs one target page per page of every folio it migrates.
        demand = migrated
        if not whole_folios:
            thp_mask = kinds[r] == _THP
            thp = _count_nonzero(thp_mask)
            if thp:
                demand = migrated - thp + (1 << chunk.thp_order) * folio_heads(thp_mask, chunk.thp_order)
        if capacity_col[r] >= 0 and not chunk.targets_suffice(r, kinds[r], migrated, demand):
            continue  # not every folio finds a target: migrate_pages() fails some
        counts, stats = chunk.shared(n_used, migrated, fake, poison, demand)
        verdict = None
        if blocking or stops.get((node_col[r], id(devices[r])), _UNKNOWN) is not None:
            verdict = chunk.stopped(r, kinds[r], unmovable if blocking else None, counts)
        if verdict is None:  # it offlines
            template = templates.get((True, zone_col[r], node_col[r], id(devices[r]), device_states[r]))
            if template is None:
                template = chunk.template(r, True)
            verdict = stamp(template, block_col[r], start_col[r], counts)
        out[r] = (verdict, stats)
    return out
