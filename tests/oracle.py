"""A literal, page-at-a-time transcription of ``offline_pages()`` — the oracle.

This module deliberately shares nothing with the vectorised pipeline except the model's
kind tables and the semantics' predicate sites: it walks pfns one by one and repeats the
SCAN/MIGRATE and TEST loops round after round like the kernel (a loop that makes no
progress is a hang). Tests check that ``memplan.kernel.offline`` reaches the same verdict;
``benchmarks/`` measures how much faster the vectorised pipeline is. Never used on a hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from memplan.kernel.offline import BlockContext, OfflineSetup
from memplan.core.model import (
    DEFAULT_REFCOUNT, FOLIO_ORDER, IS_HUGETLB, IS_HUGETLB_MIGRATABLE, IS_LRU, IS_MOVABLE_OPS, IS_PAGE_OFFLINE, IS_PINNED, IS_RESERVED, BlockState, DriverState, Errno, ForeignRefTiming, PageKind, Zone,
)
from memplan.core.results import Outcome, Reason, Step

FREE, HOLE, HWPOISON = int(PageKind.FREE), int(PageKind.HOLE), int(PageKind.HWPOISON)


@dataclass(frozen=True)
class ReferenceVerdict:
    result: Outcome
    errno: Optional[Errno]
    reason: Optional[Reason]
    step: Optional[Step]
    culprit_pfn: Optional[int]


def _b(table: np.ndarray, kind: int) -> bool:
    return bool(table[kind])


def reference_offline(setup: OfflineSetup, ctx: BlockContext, kinds: np.ndarray,
                      refcount: Optional[np.ndarray], max_rounds: int = 64) -> ReferenceVerdict:
    geo, sem, env = setup.geometry, setup.semantics, setup.environment
    ppb = geo.pages_per_block

    def verdict(result, errno=None, reason=None, step=None, index=None):
        return ReferenceVerdict(result, errno, reason, step, None if index is None else lo + index)

    lo = ctx.start_pfn + ctx.vmemmap
    if ctx.state is not BlockState.ONLINE:
        return verdict(Outcome.FAILS, Errno.EINVAL, None, Step.STATE)
    if ctx.zone is None:
        return verdict(Outcome.FAILS, Errno.EINVAL, None, Step.ZONE)
    n = ppb - ctx.vmemmap
    if n == 0 or lo % geo.pageblock_pages or (ctx.start_pfn + ppb) % geo.pages_per_section:
        return verdict(Outcome.FAILS, Errno.EINVAL, None, Step.ALIGNMENT)
    k: List[int] = [int(x) for x in kinds[ctx.vmemmap:]]
    base_ref = refcount if refcount is not None else DEFAULT_REFCOUNT[kinds]
    ref: List[int] = [int(x) for x in base_ref[ctx.vmemmap:]]
    if HOLE in k:
        return verdict(Outcome.FAILS, Errno.EINVAL, Reason.MEMORY_HOLES, Step.HOLES)
    skip_flag = False
    if ctx.device is not None:
        skip_flag = sem.fake_offline_skippable(ctx.device.driver, ctx.device_state)
    skippable = [skip_flag and x == int(PageKind.FAKE_OFFLINE) for x in k]
    movable_zone = ctx.zone is Zone.MOVABLE

    def folio_end(i: int) -> int:
        size = 1 << int(FOLIO_ORDER[k[i]])
        return min(((lo + i) // size + 1) * size - lo, n)

    # --- start_isolate_page_range(): first, last, then middle pageblocks -----------------
    def page_is_unmovable(i: int):
        kind = k[i]
        if _b(IS_RESERVED, kind):
            return True, 1
        if movable_zone:
            return False, 1
        if FOLIO_ORDER[kind] > 0:
            if _b(IS_HUGETLB, kind):
                return False, folio_end(i) - i
            if not _b(IS_LRU, kind):
                return True, 1
            return False, folio_end(i) - i
        if ref[i] == 0:
            return False, 1
        if kind == HWPOISON:
            return False, 1
        if _b(IS_PAGE_OFFLINE, kind) and bool(sem.isolation_treats_as_movable(np.bool_(skippable[i]))):
            return False, 1
        if _b(IS_LRU, kind) or _b(IS_MOVABLE_OPS, kind):
            return False, 1
        return True, 1

    pbs = n // geo.pageblock_pages
    skip_pb = ctx.vmemmap // geo.pageblock_pages
    order = [0] if pbs == 1 else [0, pbs - 1] + list(range(1, pbs - 1))
    for pb in order:
        start = pb * geo.pageblock_pages
        if ctx.isolated[skip_pb + pb]:
            return verdict(Outcome.FAILS, Errno.EBUSY, Reason.FAILURE_TO_ISOLATE_RANGE, Step.ISOLATE, start)
        if ctx.cma[skip_pb + pb]:
            return verdict(Outcome.FAILS, Errno.EBUSY, Reason.FAILURE_TO_ISOLATE_RANGE, Step.ISOLATE, start)
        i = start
        while i < start + geo.pageblock_pages:
            bad, step = page_is_unmovable(i)
            if bad:
                return verdict(Outcome.FAILS, Errno.EBUSY, Reason.FAILURE_TO_ISOLATE_RANGE, Step.ISOLATE, i)
            i += max(step, 1)

    # --- notifiers -------------------------------------------------------------------------
    if (setup.node_notifier and env.node_notifier_veto is not None
            and n >= setup.node_present_pages.get(ctx.node, 0) - ctx.vmemmap):
        return verdict(Outcome.FAILS, env.node_notifier_veto, Reason.NODE_NOTIFIER_FAILURE, Step.NOTIFIER)
    device = ctx.device
    if device is not None and device.driver is DriverState.REMOVING:
        return verdict(Outcome.FAILS, Errno.EBUSY, Reason.NOTIFIER_FAILURE, Step.NOTIFIER)
    original = list(ref)
    for i in range(n):
        if k[i] == int(PageKind.FAKE_OFFLINE) and device is not None and device.driver is DriverState.LOADED:
            ref[i] = int(sem.virtio_mem_going_offline(np.int64(ref[i])))
        if k[i] == int(PageKind.OFFLINE_REFCOUNT_DRIVER):
            ref[i] -= 1
    if env.foreign_ref_dropped is ForeignRefTiming.DURING_OFFLINE:
        for i in range(n):
            if k[i] == int(PageKind.FAKE_OFFLINE) and original[i] > 1:
                ref[i] -= original[i] - 1
                if ref[i] == 0:
                    k[i] = FREE
    if env.notifier_veto is not None:
        return verdict(Outcome.FAILS, env.notifier_veto, Reason.NOTIFIER_FAILURE, Step.NOTIFIER)
    if env.signal_pending:
        return verdict(Outcome.FAILS, Errno.EINTR, Reason.SIGNAL_BACKOFF, Step.SCAN)

    capacity = ctx.targets.capacity
    headroom = {o: setup.pools[o].headroom for o in (9, 18)}
    pool_outside = {}
    for o, kind in ((9, int(PageKind.HUGETLB_FREE)), (18, int(PageKind.GIGANTIC_FREE))):
        size = 1 << o
        heads = sum(1 for i in range(n) if k[i] == kind and (lo + i) % size == 0)
        pool_outside[o] = max((setup.pools[o].free or 0) - heads, 0) if headroom[o] > 0 else 0

    def is_offline(i: int) -> bool:
        return _b(IS_PAGE_OFFLINE, k[i])

    def scan(pfn: int):
        i = pfn
        while i < n:
            kind = k[i]
            if _b(IS_LRU, kind) or _b(IS_MOVABLE_OPS, kind):
                return "found", i
            if is_offline(i) and bool(sem.scan_busy(np.int64(ref[i]), np.bool_(skippable[i]))):
                return "busy", i
            if not _b(IS_HUGETLB, kind):
                i += 1
                continue
            if _b(IS_HUGETLB_MIGRATABLE, kind) and ref[i] > 0:
                return "found", i
            i = folio_end(i)
        return "none", n

    def migrate_range(pfn: int) -> bool:
        nonlocal capacity
        changed = False
        i = pfn
        folios = []
        while i < n:
            kind = k[i]
            if is_offline(i) and bool(sem.migrate_skips(np.bool_(skippable[i]))):
                i += 1
                continue
            if ref[i] == 0:
                i += 1
                continue
            end = folio_end(i) if FOLIO_ORDER[kind] else i + 1
            if kind == HWPOISON:
                i = end
                continue
            if _b(IS_LRU, kind) or _b(IS_MOVABLE_OPS, kind) or (_b(IS_HUGETLB_MIGRATABLE, kind) and ref[i] > 0):
                folios.append((i, end))
            i = end
        for start, end in folios:
            kind = k[start]
            if _b(IS_PINNED, kind) or ref[start] > DEFAULT_REFCOUNT[kind]:
                continue
            size = 1 << int(FOLIO_ORDER[kind])
            if kind in (int(PageKind.HUGETLB), int(PageKind.GIGANTIC)):
                order_ = int(FOLIO_ORDER[kind])
                if pool_outside[order_] > 0:
                    pool_outside[order_] -= 1
                    for j in range(start, end):
                        k[j] = int(PageKind.HUGETLB_FREE if order_ == 9 else PageKind.GIGANTIC_FREE)
                        ref[j] = 0
                    changed = True
                    continue
                if kind == int(PageKind.GIGANTIC):
                    continue
            if capacity is not None and capacity < size:
                capacity = -1  # exhausted: every later allocation fails too
                continue
            if capacity is not None:
                capacity -= size
            for j in range(start, end):
                k[j] = FREE
                ref[j] = 0
            changed = True
        return changed

    for _outer in range(max_rounds):
        pfn = 0
        progress = False
        for _inner in range(max_rounds):
            what, pfn = scan(pfn)
            if what != "found":
                break
            if not migrate_range(pfn):
                # Nothing changed: the next SCAN finds the same folio again, forever.
                return verdict(Outcome.HANGS, Errno.EINTR, Reason.SIGNAL_BACKOFF, Step.SCAN, pfn)
            progress = True
        if what == "busy":
            return verdict(Outcome.FAILS, Errno.EBUSY, Reason.UNMOVABLE_PAGE, Step.SCAN, pfn)
        for i in range(0, n, geo.pageblock_pages):
            kind = k[i]
            if not _b(IS_HUGETLB, kind):
                continue
            order_ = int(FOLIO_ORDER[kind])
            if ref[i] > 0 or headroom[order_] <= 0:
                return verdict(Outcome.FAILS, Errno.EBUSY, Reason.FAILURE_TO_DISSOLVE_HUGE_PAGES, Step.DISSOLVE, i)
            headroom[order_] -= 1
            for j in range(i, folio_end(i)):
                k[j] = FREE
            progress = True
        i = 0
        while i < n:
            if k[i] == FREE or k[i] == HWPOISON:
                i += 1
            elif is_offline(i) and bool(sem.test_passes(np.int64(ref[i]), np.bool_(skippable[i]))):
                i += 1
            else:
                break
        if i == n:
            break
        if not progress:
            return verdict(Outcome.HANGS, Errno.EINTR, Reason.SIGNAL_BACKOFF, Step.TEST_ISOLATED, i)
    else:  # pragma: no cover
        raise RuntimeError("reference offline did not converge")

    for i in range(n):
        if is_offline(i):
            for level, _text, _fn, _hazard, mask in sem.commit_checks(np.array([ref[i]]), np.array([skippable[i]])):
                if level.value == "bug" and bool(mask[0]):
                    return verdict(Outcome.FAILS, None, None, Step.COMMIT, i)
    return verdict(Outcome.OFFLINED)
