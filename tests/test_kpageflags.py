"""kpageflags: page-types names and masking, the chunked reader, the summary, classification."""

import lzma
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memplan.core.errors import InputError
from memplan.core.model import PageKind
from memplan.snapshot import kpageflags as kpf
from memplan.snapshot.evidence import PageClass
from memplan.snapshot.kpageflags import KPF, FlagsHistogram, KpageFile, bit, classify

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
HOST = os.path.join(FIXTURES, "host-6.18-24g")


def parse_summary(text):
    """page-types summary rows -> {flags: pages}, plus the total."""
    rows, total = {}, None
    for line in text.splitlines()[1:]:
        if line.strip().startswith("total"):
            total = int(line.split()[1])
            continue
        value, pages = line.split("\t")[0], int(line.split("\t")[1].split()[0])
        rows[int(value, 16)] = pages
    return rows, total


@pytest.fixture(scope="module")
def host_histogram():
    reader = KpageFile.find(os.path.join(HOST, "proc", "kpageflags"), "kpageflags")
    histogram = FlagsHistogram()
    for start, flags in reader.chunks(1 << 18):
        histogram.add(start, flags)
    reader.close()
    return histogram


def test_host_histogram_matches_the_kernels_page_types_for_every_flags_value(host_histogram):
    with open(os.path.join(HOST, "page-types-summary.txt")) as handle:
        expected_text = handle.read()
    expected, total = parse_summary(expected_text)
    assert host_histogram.pages == expected
    assert host_histogram.total == total == 6553600


def test_host_summary_text_is_byte_identical_to_page_types(host_histogram):
    with open(os.path.join(HOST, "page-types-summary.txt")) as handle:
        assert host_histogram.summary() == handle.read()


def test_default_masking_hides_hacker_bits_and_non_hugetlb_compound():
    raw = np.array([
        bit(KPF.RESERVED) | bit(KPF.BUDDY),  # reserved hidden
        bit(KPF.THP) | bit(KPF.COMPOUND_HEAD) | bit(KPF.LRU),  # THP head: compound hidden
        bit(KPF.HUGE) | bit(KPF.COMPOUND_TAIL),  # hugetlb tail: compound kept
        bit(KPF.OFFLINE) | bit(KPF.OWNER_2),  # owner_2 (bit 34) hidden
    ], dtype=np.uint64)
    assert kpf.well_known_flags(raw).tolist() == [
        bit(KPF.BUDDY), bit(KPF.THP) | bit(KPF.LRU), bit(KPF.HUGE) | bit(KPF.COMPOUND_TAIL), bit(KPF.OFFLINE)]


def test_symbolic_names_follow_page_types():
    value = bit(KPF.REFERENCED, KPF.PGTABLE)
    assert kpf.long_symbolic_flags(value) == "referenced,pgtable"
    symbolic = kpf.symbolic_flags(value)
    assert len(symbolic) == 43 and symbolic[2] == "R" and symbolic[26] == "g"
    assert kpf.symbolic_flags(bit(KPF.OWNER_2))[29] == "d"


def test_summary_rows_use_page_types_hash_order():
    histogram = FlagsHistogram()
    # 0x2001 and 0x1 share hash key 1: the one seen first takes slot 1, the other probes to 2.
    histogram.add(0, np.array([0x2001, 0x1, 0x0, 0x2], dtype=np.uint64))
    assert [r.flags for r in histogram.rows()] == [0x0, 0x2001, 0x1, 0x2]
    assert "total\t         4        0" in histogram.summary()


def write_u64(path, values, compress):
    data = np.asarray(values, dtype="<u8").tobytes()
    if compress:
        with lzma.open(path + ".xz", "wb") as handle:
            handle.write(data)
    else:
        with open(path, "wb") as handle:
            handle.write(data)


@pytest.mark.parametrize("compress", [False, True])
def test_reader_reads_ranges_chunks_and_seeks_back(tmp_path, compress):
    values = np.arange(10_000, dtype=np.uint64) * 3
    base = str(tmp_path / "kpageflags")
    write_u64(base, values, compress)
    reader = KpageFile.find(base, "kpageflags")
    assert reader.compressed == compress
    assert reader.read(5000, 10).tolist() == values[5000:5010].tolist()
    assert reader.read(100, 3).tolist() == values[100:103].tolist()  # backward seek
    assert reader.read(9_998, 10).tolist() == values[9_998:].tolist()  # short at the end
    assert len(reader.read(20_000, 5)) == 0
    chunks = list(reader.chunks(4096))
    assert [s for s, _ in chunks] == [0, 4096, 8192]
    assert np.array_equal(np.concatenate([c for _, c in chunks]), values)


@pytest.mark.parametrize("compress", [False, True])
def test_reader_rejects_partial_entries(tmp_path, compress):
    base = str(tmp_path / "kpageflags")
    data = np.arange(10, dtype="<u8").tobytes()[:-3]
    if compress:
        with lzma.open(base + ".xz", "wb") as handle:
            handle.write(data)
    else:
        with open(base, "wb") as handle:
            handle.write(data)
    reader = KpageFile.find(base, "kpageflags")
    with pytest.raises(InputError, match="8-byte"):
        if reader.size_hint() is None:
            reader.read(0, 10)


def test_reader_reports_corrupt_xz(tmp_path):
    base = str(tmp_path / "kpageflags")
    write_u64(base, np.arange(100_000), True)
    with open(base + ".xz", "r+b") as handle:
        handle.seek(200)
        handle.write(b"garbage!" * 8)
    with pytest.raises(InputError, match="corrupt xz"):
        KpageFile.find(base, "kpageflags").read(0, 100_000)


def folio(head_flags, tail_flags, pages=512):
    return [head_flags | bit(KPF.COMPOUND_HEAD)] + [tail_flags | bit(KPF.COMPOUND_TAIL)] * (pages - 1)


def test_classify_page_kinds():
    thp = folio(bit(KPF.THP, KPF.LRU, KPF.ANON), bit(KPF.THP, KPF.ANON))  # 6.1: tails lack KPF_LRU
    hugetlb = folio(bit(KPF.HUGE), bit(KPF.HUGE))
    singles = [
        0, bit(KPF.BUDDY), bit(KPF.BUDDY, KPF.UPTODATE), bit(KPF.LRU, KPF.ANON), bit(KPF.LRU),
        bit(KPF.SLAB), bit(KPF.PGTABLE, KPF.REFERENCED), bit(KPF.RESERVED), bit(KPF.HWPOISON),
        bit(KPF.OFFLINE), bit(KPF.NOPAGE), bit(KPF.MMAP, KPF.ANON), bit(KPF.PRIVATE), bit(KPF.COMPOUND_TAIL),
        bit(KPF.ZERO_PAGE, KPF.THP), bit(KPF.IDLE), bit(KPF.THP, KPF.LRU),
    ]
    flags = np.array(thp + hugetlb + hugetlb + singles + [0] * (512 - len(singles)), dtype=np.uint64)
    mapcount = np.zeros(len(flags), dtype=np.uint64)
    mapcount[512:1024] = 1
    cls = classify(flags, mapcount, 0, movable_ops_visible=False)
    assert set(cls[:512]) == {PageClass.THP}
    assert set(cls[512:1024]) == {PageClass.HUGETLB_MAPPED}
    assert set(cls[1024:1536]) == {PageClass.HUGETLB_UNMAPPED}
    got = [PageClass(c) for c in cls[1536:1536 + len(singles)]]
    assert got == [
        PageClass.UNFLAGGED, PageClass.FREE, PageClass.FREE, PageClass.LRU_ANON, PageClass.LRU_FILE,
        PageClass.SLAB, PageClass.PGTABLE, PageClass.RESERVED, PageClass.HWPOISON, PageClass.BALLOON_UNKNOWN,
        PageClass.NOPAGE, PageClass.USER_UNTYPED, PageClass.UNTYPED, PageClass.KERNEL, PageClass.KERNEL,
        PageClass.UNFLAGGED, PageClass.LRU_FILE,
    ]


def test_hugetlb_mapcount_decides_in_use():
    flags = np.array(folio(bit(KPF.HUGE), bit(KPF.HUGE)) * 2, dtype=np.uint64)
    mapcount = np.zeros(1024, dtype=np.uint64)
    mapcount[600] = 1
    cls = classify(flags, mapcount, 0, False)
    assert set(cls[:512]) == {PageClass.HUGETLB_UNMAPPED} and set(cls[512:]) == {PageClass.HUGETLB_MAPPED}
    assert set(classify(flags, None, 0, False)) == {PageClass.HUGETLB_UNMAPPED}


def test_gigantic_folio_is_recognised_in_any_aligned_window():
    pages = 1 << 18
    flags = np.array(folio(bit(KPF.HUGE), bit(KPF.HUGE), pages), dtype=np.uint64)
    assert set(classify(flags, None, 0, False)) == {PageClass.GIGANTIC_UNMAPPED}
    # a later 128 MiB block of the same folio: only tails
    window = flags[32768:65536]
    assert set(classify(window, np.ones(32768, dtype=np.uint64), 32768, False)) == {PageClass.GIGANTIC_MAPPED}


def test_partial_thp_folio_is_order0_lru():
    flags = np.array(folio(bit(KPF.THP, KPF.LRU), bit(KPF.THP, KPF.LRU), 16) + [0] * 496, dtype=np.uint64)
    cls = classify(flags, None, 0, False)
    assert set(cls[:16]) == {PageClass.LRU_FILE}


def test_movable_ops_visible_from_617():
    flags = np.array([bit(KPF.OFFLINE, KPF.UPTODATE), bit(KPF.OFFLINE)], dtype=np.uint64)
    assert classify(flags, None, 1, True).tolist() == [PageClass.BALLOON_MOVABLE, PageClass.BALLOON]
    assert classify(flags, None, 1, False).tolist() == [PageClass.BALLOON_UNKNOWN] * 2


def test_kind_tables_differ_only_on_ambiguous_classes():
    from memplan.snapshot.evidence import AMBIGUOUS
    for cls in PageClass:
        same = kpf.PRIMARY_KINDS[cls] == kpf.PESSIMISTIC_KINDS[cls]
        assert same == (cls not in AMBIGUOUS), cls
    assert kpf.PRIMARY_KINDS[PageClass.UNFLAGGED] == PageKind.FREE
    assert kpf.PESSIMISTIC_KINDS[PageClass.UNFLAGGED] == PageKind.KERNEL


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=(1 << 43) - 1), min_size=512, max_size=512))
def test_every_pfn_gets_exactly_one_known_class(values):
    flags = np.array(values, dtype=np.uint64)
    cls = classify(flags, None, 0, True)
    assert len(cls) == 512 and set(cls.tolist()) <= {int(c) for c in PageClass}
    reserved = (flags & np.uint64(bit(KPF.RESERVED))) != 0
    nopage = (flags & np.uint64(bit(KPF.NOPAGE))) != 0
    assert (cls[reserved & ~nopage] == PageClass.RESERVED).all()
    assert (cls[nopage] == PageClass.NOPAGE).all()
