import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from memplan.core.geometry import DEFAULT_GEOMETRY
from memplan.core.model import IS_HUGETLB, IS_LRU, IS_PAGE_OFFLINE, PageKind
from memplan.snapshot import kpf


def test_symbolic_has_page_types_width_and_letters():
    # page_flag_name(): one character per named bit (27 uapi + 9 kernel-hacker + 7 page-types bits;
    # the kernel's page-types has no c:uncached, as its summary of the real host shows).
    assert len(kpf.symbolic_flags(0)) == 43 == len(kpf.PAGE_TYPES_NAMES)
    assert kpf.symbolic_flags(0) == "_" * 43
    s = kpf.symbolic_flags(1 << kpf.KPF.BUDDY | 1 << kpf.KPF.RESERVED)
    assert s[10] == "B" and s[27] == "r" and s.count("_") == 41


@given(st.integers(0, (1 << 42) - 1))
def test_long_names_list_exactly_the_set_named_bits(flags):
    flags &= sum(1 << b for b, _, _ in kpf.PAGE_TYPES_NAMES)
    names = kpf.long_symbolic_flags(flags).split(",") if flags else []
    assert len(names) == bin(flags).count("1")
    assert len(kpf.symbolic_flags(flags)) - kpf.symbolic_flags(flags).count("_") == len(names)


def test_kind_flags_follow_the_kernel_predicates():
    for kind in PageKind:
        flags = kpf.KIND_FLAGS[kind]
        assert bool(flags >> kpf.KPF.OFFLINE & 1) == bool(IS_PAGE_OFFLINE[int(kind)]), kind
        assert bool(flags >> kpf.KPF.LRU & 1) == bool(IS_LRU[int(kind)]), kind
        assert bool(flags >> kpf.KPF.HUGE & 1) == bool(IS_HUGETLB[int(kind)]), kind
    assert kpf.KIND_FLAGS[PageKind.FREE] == 1 << kpf.KPF.BUDDY
    assert kpf.KIND_FLAGS[PageKind.PINNED] == kpf.KIND_FLAGS[PageKind.ANON]  # pins are invisible
    assert kpf.KIND_FLAGS[PageKind.KERNEL] == 0


def test_compound_head_and_tail_bits():
    kinds = np.full(1024, int(PageKind.THP), dtype=np.uint8)
    flags = kpf.page_flags(kinds, np.arange(0x200000, 0x200000 + 1024))
    head = flags & (1 << kpf.KPF.COMPOUND_HEAD) != 0
    tail = flags & (1 << kpf.KPF.COMPOUND_TAIL) != 0
    assert list(np.flatnonzero(head)) == [0, 512] and int(tail.sum()) == 1022
    assert DEFAULT_GEOMETRY.folio_order[int(PageKind.THP)] == 9


def test_skippable_fake_offline_shows_owner_2():
    assert kpf.kind_page_flags(PageKind.FAKE_OFFLINE, 7) == 0x800000  # what 6.1-7.2 kernels report (spec §9)
    assert kpf.kind_page_flags(PageKind.FAKE_OFFLINE, 7, skippable=True) == 0x800000 | 1 << 34
