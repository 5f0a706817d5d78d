"""Block-level shortcuts: verdicts for a whole chunk of memory blocks without the per-page pipeline.

On a real machine almost every memory block is one of two kinds: a ZONE_MOVABLE (or empty
kernel-zone) block of free, LRU and movable_ops pages, possibly with virtio-mem fake-offline
pages, which offlines; or a kernel-zone block holding slab, page-table or other unmovable
kernel pages, which fails in ``start_isolate_page_range()``. Both verdicts follow from a few
per-block reductions over the page-kind bytes (one count of the non-free pages; for blocks
holding kinds from ``LOOK_CLOSER`` up, a handful of counts and the first unmovable page of the
first failing pageblock), so a 16 TiB machine needs no per-page pipeline for them. Every other
block (hugetlb, pins, extra references, holes, vmemmap, CMA, capacity shortage...) returns
``None`` and goes through ``offline_block()``.

The shortcut is not a second model: each fact it relies on is read from the same kind tables
and the same ``OfflineSemantics`` predicate sites ``offline_block()`` uses (see
``fake_offline_is_skipped``), and tests compare both on random machines, page counts,
kernel log and ``BlockStats`` included.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from types import MappingProxyType
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from memplan.kernel.offline import BlockContext, BlockStats, OfflineSetup, pr_debug_entry
from memplan.kernel.semantics import OfflineSemantics
from memplan.kernel.virtio_mem import fake_offline_skippable
from memplan.core.model import (
    DEFAULT_REFCOUNT, FOLIO_ORDER, IS_HUGETLB, IS_LRU, IS_MOVABLE_OPS, IS_PAGE_OFFLINE, IS_PINNED, IS_RESERVED, LOOK_CLOSER, SPECIAL_BIT, ZONE_NONE, DriverState, Errno, PageKind, Zone,
)
from memplan.core.machine import BlockTable, VirtioMemDevice
from memplan.core.results import BlockVerdict, Culprit, LogEntry, LogLevel, Outcome, PageCounts, Reason, Step

Verdict = Tuple[BlockVerdict, BlockStats]



def _plain_unmovable_kinds() -> Tuple[int, ...]:
    """Order-0 kinds that ``page_is_unmovable()`` reports in a kernel zone whatever the
    semantics: not LRU, not movable_ops, not PageOffline, not hugetlb, not HWPoison, with a
    reference (slab, page tables, other kernel allocations, PG_reserved)."""
    kinds = []
    for kind in PageKind:
        k = int(kind)
        if (k & SPECIAL_BIT and FOLIO_ORDER[k] == 0 and not IS_LRU[k] and not IS_MOVABLE_OPS[k]
                and not IS_PAGE_OFFLINE[k] and not IS_HUGETLB[k] and not IS_PINNED[k] and DEFAULT_REFCOUNT[k] > 0
                and kind not in (PageKind.VMEMMAP, PageKind.HOLE)):
            kinds.append(k)
    return tuple(kinds)


#: slab, page tables, other kernel allocations, PG_reserved: one contiguous run of kind codes
UNMOVABLE_KINDS = _plain_unmovable_kinds()
_UNMOVABLE_LO, _UNMOVABLE_N = UNMOVABLE_KINDS[0], len(UNMOVABLE_KINDS)
assert UNMOVABLE_KINDS == tuple(range(_UNMOVABLE_LO, _UNMOVABLE_LO + _UNMOVABLE_N)), UNMOVABLE_KINDS
#: kinds unmovable in every zone (``PageReserved`` comes before the ZONE_MOVABLE shortcut)
RESERVED_KINDS = tuple(k for k in UNMOVABLE_KINDS if IS_RESERVED[k])
assert RESERVED_KINDS == (int(PageKind.RESERVED),), RESERVED_KINDS
#: kinds below this code are free, LRU or movable_ops order-0/THP pages (``SPECIAL_BIT`` clear)
_TRIVIAL_BELOW = LOOK_CLOSER
_THP = int(PageKind.THP)
_THP_PAGES = 1 << int(FOLIO_ORDER[_THP])
_FAKE = int(PageKind.FAKE_OFFLINE)
_POISON = int(PageKind.HWPOISON)
_SPECIAL_BITS = np.uint8(SPECIAL_BIT | LOOK_CLOSER)
assert LOOK_CLOSER == int(PageKind.HWPOISON) and all((int(k) >= LOOK_CLOSER) == bool(int(k) & 0xC0) for k in PageKind)
_ZONES = {code: Zone.from_code(code) for code in (z.code for z in Zone)}
_KINDS = {int(k): k for k in PageKind}
_MOVABLE = Zone.MOVABLE.code
_OFFLINED = (Outcome.OFFLINED, None, None, None, None, ())
# Page counts and stats are immutable values that most blocks of a big machine share (the free
# page count of a block takes a few hundred values): intern them instead of building one pair
# per block (time and memory).
_INTERNED: dict = {}
_INTERN_LIMIT = 4096
_NO_FREE_HUGETLB = MappingProxyType({9: 0, 18: 0})


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
    131072 verdicts. Only for plain dataclasses: no ``__post_init__``, no ``__slots__``, no
    default factories; the caller passes every field without a default."""
    assert not hasattr(cls, "__post_init__") and not hasattr(cls, "__slots__"), cls
    assert all(f.init and f.default_factory is MISSING for f in fields(cls)), cls
    defaults = {f.name: f.default for f in fields(cls) if f.default is not MISSING}

    def make(**values: Any) -> Any:
        obj = object.__new__(cls)
        obj.__dict__.update(defaults)
        obj.__dict__.update(values)
        return obj

    return make


_VERDICT_DEFAULTS = {f.name: f.default for f in fields(BlockVerdict) if f.default is not MISSING}


def _verdict_from(template: dict, **fields_: Any) -> BlockVerdict:
    """A ``BlockVerdict`` whose fields are ``template`` updated with ``fields_`` (the template
    holds what the verdicts of a chunk share; BlockVerdict is a plain frozen dataclass whose
    instance dict is all there is, and a 16 TiB run builds 131072 of them)."""
    values = dict(template)
    values.update(fields_)
    verdict = object.__new__(BlockVerdict)
    object.__setattr__(verdict, "__dict__", values)
    return verdict
_counts = _factory(PageCounts)
_stats = _factory(BlockStats)


@dataclass(frozen=True)
class BlockColumns:
    """The ``BlockContext`` facts of a run of memory blocks, as one column per fact."""

    block: np.ndarray
    start_pfn: np.ndarray
    #: ``BlockTable.STATES`` index (0 = online)
    state: np.ndarray
    #: ``Zone.code`` or ``ZONE_NONE``
    zone: np.ndarray
    node: np.ndarray
    vmemmap: np.ndarray
    #: some pageblock of the block is CMA or already isolated by someone else
    special_pageblocks: np.ndarray
    #: free pages migration may use (``-1``: plenty)
    capacity: np.ndarray
    device: Tuple[Optional[VirtioMemDevice], ...]
    device_state: Tuple[Optional[str], ...]

    def __len__(self) -> int:
        return len(self.block)

    @classmethod
    def from_contexts(cls, contexts: Sequence[BlockContext]) -> "BlockColumns":
        return cls(
            block=np.array([c.block for c in contexts], dtype=np.int64),
            start_pfn=np.array([c.start_pfn for c in contexts], dtype=np.int64),
            state=np.array([BlockTable.STATES.index(c.state) for c in contexts], dtype=np.int8),
            zone=np.array([c.zone.code if c.zone is not None else ZONE_NONE for c in contexts], dtype=np.int8),
            node=np.array([c.node for c in contexts], dtype=np.int32),
            vmemmap=np.array([c.vmemmap for c in contexts], dtype=np.int64),
            special_pageblocks=np.array([bool(c.cma.any() or c.isolated.any()) for c in contexts], dtype=bool),
            capacity=np.array([-1 if c.targets.capacity is None else c.targets.capacity for c in contexts],
                              dtype=np.int64),
            device=tuple(c.device for c in contexts),
            device_state=tuple(c.device_state for c in contexts),
        )


def fake_offline_is_skipped(sem: OfflineSemantics, device: Optional[VirtioMemDevice], state: Optional[str]) -> bool:
    """Whether this block's fake-offline pages (default refcount) pass every step untouched.

    Asks the semantics' own predicate sites what ``offline_block()`` would: isolation lets them
    through in a kernel zone (site 1, refcount before the notifier), SCAN does not stop on
    them (site 2) and MIGRATE never tries them (site 3, or refcount 0 after virtio-mem's
    MEM_GOING_OFFLINE handler), TEST_ISOLATED accepts them (site 4), and no commit assertion
    fires (site 5). Only for a loaded driver: a removing driver vetoes, an unloaded one keeps
    its references.
    """
    if device is None or device.driver is not DriverState.LOADED:
        return False
    skippable = np.bool_(fake_offline_skippable(device, state, sem.virtio_mem_marks_skippable,
                                                sem.virtio_mem_unload_clears_skippable))
    before = np.int64(DEFAULT_REFCOUNT[_FAKE])
    after = before - 1 if sem.virtio_mem_drops_refs else before
    migrate_leaves = bool(sem.migrate_skips(skippable)) or after == 0
    checks = sem.commit_checks(np.array([after]), np.array([skippable]))
    commit_quiet = not any(bool(np.any(mask)) for *_, mask in checks)
    return (bool(sem.isolation_treats_as_movable(skippable)) and not bool(sem.scan_busy(after, skippable))
            and migrate_leaves and bool(sem.test_passes(after, skippable)) and commit_quiet)


def _thp_heads(row: np.ndarray, thp: np.ndarray) -> int:
    """Folio heads among THP pages as ``RangeView.folio_first()`` counts them: the first page,
    every 2 MiB-aligned page and every page whose predecessor is of another kind (block starts
    are 2 MiB aligned, so indexes stand for pfns)."""
    aligned = int(np.count_nonzero(thp[::_THP_PAGES]))
    starts = int(np.count_nonzero(thp[1:] > thp[:-1]))
    # run starts on an aligned index are already counted as aligned pages
    aligned_starts = int(np.count_nonzero(thp[_THP_PAGES::_THP_PAGES] > thp[_THP_PAGES - 1:-1:_THP_PAGES]))
    return aligned + starts - aligned_starts


def chunk_verdicts(setup: OfflineSetup, blocks: BlockColumns, kinds: np.ndarray, has_refcount: np.ndarray,
                   whole_folios: bool = False, special_rows: Optional[np.ndarray] = None) -> List[Optional[Verdict]]:
    """Verdicts for the blocks of a chunk that need no per-page pipeline (``None`` for the others).

    ``kinds`` holds one row of page-kind bytes per block; ``has_refcount`` marks rows that may
    hold a page whose refcount is not its kind's default; ``whole_folios`` promises that every
    THP page belongs to a whole, aligned 2 MiB folio (else the folio heads are counted the way
    ``RangeView.folio_first()`` does); ``special_rows`` (optional) marks the rows that may hold
    a page of kind ``LOOK_CLOSER`` or above (else one OR over the bytes finds them). The result
    equals ``offline_block()``'s for every block it decides.
    """
    geo, sem, env = setup.geometry, setup.semantics, setup.environment
    n, ppb = kinds.shape
    out: List[Optional[Verdict]] = [None] * n
    eligible = ((blocks.state == 0) & (blocks.zone != ZONE_NONE) & (blocks.vmemmap == 0)
                & ~blocks.special_pageblocks & ~np.asarray(has_refcount, dtype=bool))
    if not eligible.any() or ppb % 8:
        return out
    kinds = np.ascontiguousarray(kinds)
    if special_rows is not None:
        special = np.asarray(special_rows, dtype=bool)
    else:
        # One OR over each block's bytes: which kind bits occur at all (``SPECIAL_BIT`` or HWPoison).
        words = np.bitwise_or.reduce(kinds.view(np.uint64), axis=1)
        special = (np.bitwise_or.reduce(words.view(np.uint8).reshape(n, 8), axis=1) & _SPECIAL_BITS) != 0
    # Conditions under which an isolated block goes on to offline (offline_block() steps 7-10).
    env_stops = env.signal_pending or env.notifier_veto is not None
    node_veto = setup.node_notifier and env.node_notifier_veto is not None
    page_shift, pb = geo.page_shift, geo.pageblock_pages
    rows = np.flatnonzero(eligible).tolist()
    if len(rows) == n:
        used = list(map(_count_nonzero, kinds))  # pages that are not free
    else:
        used = [_count_nonzero(kinds[r]) for r in rows]
    no_free_hugetlb = _NO_FREE_HUGETLB
    block_col, start_col = blocks.block.tolist(), blocks.start_pfn.tolist()
    zone_col, node_col, capacity_col = blocks.zone.tolist(), blocks.node.tolist(), blocks.capacity.tolist()
    devices, device_states = blocks.device, blocks.device_state
    special_col = special.tolist()
    skipped_cache: dict = {}
    # Verdicts of one chunk share everything but block, addresses and counts.
    templates: dict = {}

    def emit(r: int, result: tuple, n_used: int, migrated: int, fake: int, poison: int, demand: int) -> None:
        key = (ppb, n_used, migrated, fake, poison, demand)
        shared = _INTERNED.get(key)
        if shared is None:
            if len(_INTERNED) >= _INTERN_LIMIT:
                _INTERNED.clear()
            shared = _INTERNED[key] = (
                _counts(total=ppb, free=ppb - n_used, migrated=migrated, skipped_offline=fake, hwpoison=poison),
                _stats(free_pages=ppb - n_used, demand=demand, free_hugetlb=no_free_hugetlb))
        device = devices[r]
        template_key = (result, zone_col[r], node_col[r], id(device), device_states[r])
        template = templates.get(template_key)
        if template is None:
            template = templates[template_key] = dict(
                _VERDICT_DEFAULTS, zone=_ZONES[zone_col[r]], node=node_col[r], result=result[0], errno=result[1],
                reason=result[2], step=result[3], culprit=result[4], kernel_log=result[5],
                device=device.id if device is not None else None, device_state=device_states[r])
        start_pfn = start_col[r]
        out[r] = (_verdict_from(template, block=block_col[r], start=start_pfn << page_shift,
                                end=((start_pfn + ppb) << page_shift) - 1, pages=shared[0]), shared[1])

    for r, n_used in zip(rows, used):
        migrated, poison, fake, blocking = n_used, 0, 0, 0
        device = devices[r]
        culprit = None
        if special_col[r]:
            # Count the pages from LOOK_CLOSER up, then account for them kind by kind (most
            # likely first); anything left over is a kind only the full pipeline judges.
            row = kinds[r]
            left = _count_nonzero(row >= LOOK_CLOSER)
            key = (id(device), device_states[r])
            if key not in skipped_cache:
                skipped_cache[key] = fake_offline_is_skipped(sem, device, device_states[r])
            if left and skipped_cache[key]:
                fake = _count_nonzero(row == _FAKE)
                left -= fake
            movable = zone_col[r] == _MOVABLE
            unmovable = None
            if left:
                unmovable = (row == RESERVED_KINDS[0] if movable
                             else (row - np.uint8(_UNMOVABLE_LO)) < _UNMOVABLE_N)
                blocking = _count_nonzero(unmovable)
                left -= blocking
            if left:
                poison = _count_nonzero(row == _POISON)
                left -= poison
            if left:
                continue  # some other kind: the full pipeline decides
            migrated = n_used - poison - fake - blocking
            if blocking:
                # start_isolate_page_range(): first, last, then the middle pageblocks; within
                # the failing pageblock has_unmovable_pages() reports its lowest unmovable page.
                for lo, hi in ((0, pb), (ppb - pb, ppb), (pb, ppb - pb)):
                    part = unmovable[lo:hi]
                    hit = int(np.argmax(part))
                    if part[hit]:
                        culprit = lo + hit
                        break
        demand = migrated
        if not whole_folios:
            thp_mask = kinds[r] == _THP
            thp = _count_nonzero(thp_mask)
            if thp:
                demand = migrated - thp + _THP_PAGES * _thp_heads(kinds[r], thp_mask)
        if 0 <= capacity_col[r] < demand:
            continue  # not every folio finds a target: do_migrate_range() fails some
        start_pfn = start_col[r]
        if culprit is not None:
            kind = int(kinds[r, culprit])
            pfn = start_pfn + culprit
            result = (Outcome.FAILS, Errno.EBUSY, Reason.FAILURE_TO_ISOLATE_RANGE, Step.ISOLATE,
                      Culprit(pfn, _KINDS[kind], int(DEFAULT_REFCOUNT[kind])),
                      (LogEntry(LogLevel.DUMP_PAGE, "unmovable page", pfn, "set_migratetype_isolate"),
                       pr_debug_entry(start_pfn, start_pfn + ppb, Reason.FAILURE_TO_ISOLATE_RANGE, page_shift)))
        elif (env_stops or (device is not None and device.driver is DriverState.REMOVING)
              or (node_veto and ppb >= setup.node_present_pages.get(node_col[r], 0))):
            continue
        else:
            result = _OFFLINED
        emit(r, result, n_used, migrated, fake, poison, demand)
    return out
