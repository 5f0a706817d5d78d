"""alloc_contig_range() as virtio-mem calls it: PB_ISOLATE_MODE_OTHER, 5 attempts in ZONE_MOVABLE."""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
import pytest

from memplan.core.geometry import Geometry
from memplan.core.model import DEFAULT_REFCOUNT, Errno, PageKind
from memplan.kernel.contig import ContigStep, Request, alloc_contig_range, unmovable_pages_other
from memplan.kernel.pages import RangeView

PB = 512
START = 0x100000


class Targets:
    """A stand-in for the machine: ``capacity`` free pages, ``pool`` free hugetlb folios."""

    def __init__(self, capacity: int = 1 << 30, pool: int = 0) -> None:
        self.capacity = capacity
        self.pool = pool
        self.calls: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def allocate(self, pfns, kinds, requests):
        self.calls.append((pfns, kinds, requests))
        pool = np.zeros(len(kinds), dtype=bool)
        for i, kind in enumerate(kinds):
            if kind == PageKind.HUGETLB and requests[i] == Request.MIGRATE and self.pool:
                self.pool -= 1
                pool[i] = True
                continue
            need = 512 if kind in (PageKind.THP, PageKind.HUGETLB, PageKind.HUGETLB_FREE) else 1
            if need > self.capacity:
                return i, pool
            self.capacity -= need
        return len(kinds), pool


def pages(n: int = PB, **placed) -> Tuple[np.ndarray, np.ndarray]:
    kinds = np.zeros(n, dtype=np.uint8)
    for spec, kind in placed.items():
        lo, _, hi = spec.lstrip("p").partition("_")
        kinds[int(lo):int(hi or int(lo) + 1)] = int(PageKind.from_label(kind))
    return kinds, DEFAULT_REFCOUNT[kinds].astype(np.int32)


def run(kinds, ref, movable=True, targets=None, cma=None, isolated=None):
    blocks = len(kinds) // PB
    return alloc_contig_range(kinds, ref, START, movable, np.zeros(blocks, bool) if cma is None else cma,
                              np.zeros(blocks, bool) if isolated is None else isolated, Geometry(),
                              targets or Targets())


def test_free_and_lru_pages_are_allocated_after_migrating_the_lru_ones():
    kinds, ref = pages(p0_100="anon", p200_300="file")
    targets = Targets()
    result = run(kinds, ref, targets=targets)
    assert result.errno is None and result.attempts == 1
    assert int(result.vacated.sum()) == 200 and len(targets.calls[0][0]) == 200


@pytest.mark.parametrize("kind,movable,step,attempts", [
    ("slab", False, ContigStep.ISOLATE, 1),          # unmovable in a kernel zone
    ("slab", True, ContigStep.TEST_ISOLATED, 5),     # ZONE_MOVABLE: isolation does not look; the test fails
    ("hwpoison", False, ContigStep.ISOLATE, 1),      # no HWPoison exemption outside MEM_OFFLINE
    ("hwpoison", True, ContigStep.TEST_ISOLATED, 5),
    ("balloon", False, ContigStep.ISOLATE, 1),       # no PageOffline exemption outside MEM_OFFLINE
    ("offline_orphan", False, ContigStep.TEST_ISOLATED, 1),  # refcount 0 passes isolation, never buddy
    ("pinned", True, ContigStep.TEST_ISOLATED, 5),   # not isolated for migration: stays in use
    ("reserved", True, ContigStep.ISOLATE, 5),       # PG_reserved is unmovable in every zone
])
def test_busy_pages(kind, movable, step, attempts):
    kinds, ref = pages(p0_10="anon", p300=kind)
    result = run(kinds, ref, movable=movable)
    assert (result.errno, result.step, result.culprit, result.attempts) == (Errno.EBUSY, step, 300, attempts)


def test_migration_still_happens_when_the_final_test_fails():
    # ZONE_MOVABLE: the anon pages are migrated away even though the slab page keeps the range busy.
    kinds, ref = pages(p0_10="anon", p300="slab")
    result = run(kinds, ref, movable=True)
    assert result.errno is Errno.EBUSY and int(result.vacated.sum()) == 10


def test_balloon_with_movable_ops_migrates():
    kinds, ref = pages(p5="balloon_movable")
    assert run(kinds, ref, movable=False).errno is None


def test_extra_reference_keeps_a_page():
    kinds, ref = pages(p7="anon")
    ref[7] = 3
    result = run(kinds, ref)
    assert (result.errno, result.culprit) == (Errno.EBUSY, 7)


def test_no_target_is_enomem_at_the_first_folio_that_does_not_fit():
    kinds, ref = pages(p10_20="anon")
    result = run(kinds, ref, targets=Targets(capacity=4))
    assert (result.errno, result.step, result.culprit, result.attempts) == (Errno.ENOMEM, ContigStep.MIGRATE, 14, 1)
    assert int(result.vacated.sum()) == 4


def test_cma_and_isolated_pageblocks_fail_isolation():
    kinds, ref = pages(n=2 * PB)
    assert run(kinds, ref, cma=np.array([False, True])).step is ContigStep.ISOLATE
    result = run(kinds, ref, isolated=np.array([False, True]))
    assert (result.errno, result.culprit) == (Errno.EBUSY, PB)


def test_gigantic_folio_bails_out_with_enomem():
    kinds, ref = pages(n=PB, p0_512="gigantic")  # a piece of a 1 GiB folio
    result = run(kinds, ref)
    assert (result.errno, result.step) == (Errno.ENOMEM, ContigStep.MIGRATE)


def test_free_hugetlb_is_replaced_and_in_use_goes_to_the_pool_then_replaced():
    kinds, ref = pages(n=2 * PB, p0_512="hugetlb_free", p512_1024="hugetlb")
    targets = Targets(pool=1)
    result = run(kinds, ref, targets=targets)
    assert result.errno is None and result.vacated.all()
    # isolate: replace the free folio, migrate the in-use one (pool), then replace its source.
    assert [list(c[2]) for c in targets.calls] == [[Request.REPLACE, Request.MIGRATE], [Request.REPLACE]]


def test_pool_source_stays_in_the_pool_when_its_replacement_fails():
    kinds, ref = pages(n=PB, p0_512="hugetlb")
    targets = Targets(capacity=0, pool=1)
    result = run(kinds, ref, targets=targets)
    assert result.errno is Errno.ENOMEM and result.pooled.all() and not result.vacated.any()


def test_isolation_predicate_other_mode():
    kinds, ref = pages(p1="hwpoison", p2="fake_offline", p3="anon", p4="thp", p5="slab")
    view = RangeView(START, kinds, ref.astype(np.int64), np.zeros(len(kinds), bool), Geometry())
    assert list(np.flatnonzero(unmovable_pages_other(view, False))[:3]) == [1, 2, 5]
    assert not unmovable_pages_other(view, True).any()
