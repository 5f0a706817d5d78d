import hashlib

import numpy as np
import pytest

from conftest import machine_from
from memplan.core.model import PageKind

FILLED = """
[[ram]]
start = "1GiB"
size = "1GiB"
zone = "Movable"
[[fill]]
blocks = "8-15"
seed = 5
anon = 0.3
file = 0.2
thp = 0.1
hugetlb_free = 0.05
slab = 0.001
"""


def test_same_pages_whatever_the_chunking():
    m = machine_from(FILLED)
    whole = m.pages.materialize(np.arange(8, 16)).kinds
    for b in range(8, 16):
        assert np.array_equal(m.pages.materialize(np.array([b])).kinds[0], whole[b - 8])
    assert np.array_equal(m.pages.materialize(np.array([9, 12])).kinds, whole[[1, 4]])


def test_same_pages_on_a_second_load():
    a = machine_from(FILLED).pages.materialize(np.arange(8, 16)).kinds
    b = machine_from(FILLED).pages.materialize(np.arange(8, 16)).kinds
    assert np.array_equal(a, b)


#: sha256 of the kinds and refcounts (little-endian int32) of blocks 8-15, as memplan drew them
#: before the profile package was split by section: the same seed gives the same pages.
GOLDEN = {
    "plain": ("543c60344f133f6a20ec4fa02cc5d8d6f0a6cbfda141495f2ab244a6ac60ade5",
              "90b624499dfbdcd0f1b01f544e76406c0002c3c297b19bf760fe14ebdb3cf2c3"),
    "with pages": ("c0996ec5503cb24b5ab4922e866d01240872a4a209ecf7559934799cabbb0637",
                   "7757772a583fae616626b437c4234f9d5bcd582935cdbf6d7c8362e3a9cdd330"),
}
WITH_PAGES = FILLED + """
[[pages]]
pfn = "0x40a00"
count = 3
kind = "anon"
refcount = 5
[[pages]]
pfn = "0x4c000"
count = 512
kind = "hugetlb"
"""


@pytest.mark.parametrize("name,text", [("plain", FILLED), ("with pages", WITH_PAGES)])
def test_seeded_population_is_byte_identical(name, text):
    batch = machine_from(text).pages.materialize(np.arange(8, 16))
    kinds = hashlib.sha256(batch.kinds.tobytes()).hexdigest()
    refcounts = hashlib.sha256(batch.refcounts().astype("<i4").tobytes()).hexdigest()
    assert (kinds, refcounts) == GOLDEN[name]


def test_seed_changes_pages():
    a = machine_from(FILLED).pages.materialize(np.array([8])).kinds
    b = machine_from(FILLED.replace("seed = 5", "seed = 6")).pages.materialize(np.array([8])).kinds
    assert not np.array_equal(a, b)


def test_fractions_are_respected_on_average():
    kinds = machine_from(FILLED).pages.materialize(np.arange(8, 16)).kinds
    n = kinds.size
    for kind, fraction in ((PageKind.ANON, 0.3), (PageKind.FILE, 0.2), (PageKind.THP, 0.1),
                           (PageKind.HUGETLB_FREE, 0.05), (PageKind.SLAB, 0.001)):
        assert abs(np.count_nonzero(kinds == kind) / n - fraction) < 0.02


def test_compound_kinds_fill_whole_aligned_folios():
    kinds = machine_from(FILLED).pages.materialize(np.arange(8, 16)).kinds.reshape(-1, 512)
    for kind in (PageKind.THP, PageKind.HUGETLB_FREE):
        slots = (kinds == kind)
        assert np.all(slots.all(axis=1) | ~slots.any(axis=1))


def test_fixed_pages_win_and_break_compound_slots():
    m = machine_from(FILLED + '\n[[pages]]\npfn = "0x40003"\nkind = "kernel"\nrefcount = 4\n')
    batch = m.pages.materialize(np.array([8]))
    assert batch.kinds[0, 3] == PageKind.KERNEL
    assert batch.refcount is not None and batch.refcount[0, 3] == 4
    first_slot = batch.kinds[0, :512]
    assert not np.isin(first_slot, [PageKind.THP, PageKind.HUGETLB_FREE]).any()


def test_refcount_array_only_when_needed():
    assert machine_from(FILLED).pages.materialize(np.array([8])).refcount is None


def test_holes_and_fake_offline_are_fixed():
    m = machine_from("""
[[ram]]
start = "1GiB"
size = "64MiB"
zone = "Normal"
[[virtio_mem]]
id = "v"
addr = "4GiB"
region_size = "128MiB"
plugged = ["0-3"]
online = "movable"
""")
    hole_block = m.pages.materialize(np.array([8])).kinds[0]
    assert (hole_block[16384:] == PageKind.HOLE).all() and (hole_block[:16384] == PageKind.FREE).all()
    vm = m.pages.materialize(np.array([32])).kinds[0]
    assert (vm[:2048] == PageKind.FREE).all() and (vm[2048:] == PageKind.FAKE_OFFLINE).all()


# ---- hints the page source gives the block-level shortcut -----------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from memplan.core.model import DEFAULT_REFCOUNT, FOLIO_SIZE, LOOK_CLOSER, FolioSize  # noqa: E402

HINTED = """
[[ram]]
start = "1GiB"
size = "512MiB"
zone = "Normal"
holes = [{{ start = "0x50000000", size = "0x3000" }}]

[[virtio_mem]]
id = "vmem0"
addr = "2GiB"
region_size = "256MiB"
plugged = ["0-40", "64-70", "100-127"]

[[fill]]
blocks = "8-10"
seed = {seed}
anon = 0.3
thp = {thp}
hugetlb = {hugetlb}
slab = {slab}

[[fill]]
blocks = "vmem0"
seed = {seed}
file = 0.3
thp = {thp}

[[pages]]
pfn = "{pfn}"
count = 2
kind = "{kind}"
refcount = 3
"""


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 50), st.sampled_from([0, 0.2]), st.sampled_from([0, 0.1]), st.sampled_from([0, 0.001]),
       st.integers(8 * 32768, 12 * 32768 - 2), st.sampled_from(["anon", "slab"]))
def test_hints_cover_what_the_pages_hold(seed, thp, hugetlb, slab, pfn, kind):
    machine = machine_from(HINTED.format(seed=seed, thp=thp, hugetlb=hugetlb, slab=slab, pfn=hex(pfn), kind=kind))
    ids = machine.blocks.ids
    batch = machine.pages.materialize(ids)
    kinds = batch.kinds
    assert batch.special_rows is not None and batch.whole_folios
    # special_rows: every row holding a kind from LOOK_CLOSER up is marked
    assert not ((kinds >= LOOK_CLOSER).any(axis=1) & ~batch.special_rows).any()
    # refcount_rows: every row with a non-default refcount is marked
    if batch.refcount is not None:
        assert not ((batch.refcount != DEFAULT_REFCOUNT[kinds]).any(axis=1) & ~batch.refcount_rows).any()
    assert batch.rows_with_refcount().any() == (batch.refcount is not None)
    # whole_folios: 2 MiB kinds fill whole aligned slots
    slots = kinds.reshape(len(ids), -1, 512)
    compound = FOLIO_SIZE[slots] == FolioSize.PMD
    assert (compound.all(axis=2) | ~compound.any(axis=2)).all()
    assert ((slots == slots[:, :, :1]) | ~compound).all()


def test_consecutive_runs():
    from memplan.core.machine import consecutive_runs
    ids = np.array([1, 2, 3, 4, 5, 8, 9, 20])
    assert consecutive_runs(ids) == [(0, 5), (5, 7), (7, 8)]
    assert consecutive_runs(ids, 2) == [(0, 2), (2, 4), (4, 5), (5, 7), (7, 8)]
    assert consecutive_runs(ids, key=lambda b: b >= 4) == [(0, 3), (3, 5), (5, 7), (7, 8)]
    assert consecutive_runs(np.array([], dtype=np.int64)) == []


# ---- format 2: one kind per aligned group of 8 pages ------------------------------------------

def machine_v2(text: str, spare: bool = True):
    """``machine_from`` for a format-2 profile (the same text, ``format = 2``)."""
    from conftest import SPARE
    from memplan.profile import toml
    from memplan.profile.reader import build_machine
    doc = toml.loads((SPARE if spare else "format = 1\n") + text)
    doc["format"] = 2
    return build_machine(doc, "<test>")


#: sha256 of the kinds and refcounts of blocks 8-15 of FILLED / WITH_PAGES in format 2, as the
#: format-2 draw first gave them: the same seed gives the same pages, on every machine and later
GOLDEN_V2 = {
    "plain": ("df2dc287273b6978e9d7ecd5d9f9089e6f35bf27210a745bb20d99b55861c809",
              "40b2d4db7d68c88f3e29add03c7644c81856dbc373d8b4fe727c51188dd1cf16"),
    "with pages": ("9ddf12e651da0fd49e7ce843f4f0ce8c4032a2d7cd291bb59bd05752fd92e59f",
                   "8e8e16df7d6deadcd56ed6437c1430c7b9f0b177d2a3e9355d7da1217b45c630"),
}


@pytest.mark.parametrize("name,text", [("plain", FILLED), ("with pages", WITH_PAGES)])
def test_format2_population_is_byte_identical(name, text):
    batch = machine_v2(text).pages.materialize(np.arange(8, 16))
    kinds = hashlib.sha256(batch.kinds.tobytes()).hexdigest()
    refcounts = hashlib.sha256(batch.refcounts().astype("<i4").tobytes()).hexdigest()
    assert (kinds, refcounts) == GOLDEN_V2[name]


def test_format2_draws_whole_groups_and_keeps_the_fractions():
    m = machine_v2(FILLED)
    kinds = m.pages.materialize(np.arange(8, 16)).kinds
    groups = kinds.reshape(-1, 8)
    assert (groups == groups[:, :1]).all()  # no fixed page here: every group is one kind
    n = kinds.size
    # within three standard deviations: 32768 groups of 8 pages, 512 slots of 2 MiB
    for kind, fraction, within in ((PageKind.ANON, 0.3, 0.01), (PageKind.FILE, 0.2, 0.01), (PageKind.THP, 0.1, 0.04),
                                   (PageKind.HUGETLB_FREE, 0.05, 0.03), (PageKind.SLAB, 0.001, 0.001)):
        assert abs(np.count_nonzero(kinds == kind) / n - fraction) < within
    slots = kinds.reshape(-1, 512)
    for kind in (PageKind.THP, PageKind.HUGETLB_FREE):
        assert np.all((slots == kind).all(axis=1) | ~(slots == kind).any(axis=1))


def test_format2_same_pages_whatever_the_chunking_and_differs_from_format1():
    m = machine_v2(FILLED)
    whole = m.pages.materialize(np.arange(8, 16)).kinds
    for b in (8, 11, 15):
        assert np.array_equal(m.pages.materialize(np.array([b])).kinds[0], whole[b - 8])
    assert not np.array_equal(whole, machine_from(FILLED).pages.materialize(np.arange(8, 16)).kinds)


def test_format2_fixed_pages_win():
    m = machine_v2(WITH_PAGES)
    batch = m.pages.materialize(np.arange(8, 16))
    assert (batch.kinds[0, 0xa00:0xa03] == PageKind.ANON).all() and (batch.refcount[0, 0xa00:0xa03] == 5).all()
    assert (batch.kinds.reshape(-1)[0x4c000 - 0x40000:0x4c000 - 0x40000 + 512] == PageKind.HUGETLB).all()


# ---- census without materialising ---------------------------------------------------------------

@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("text", [FILLED, WITH_PAGES, HINTED.format(seed=3, thp=0.2, hugetlb=0.1, slab=0.001,
                                                                    pfn="0x42000", kind="anon")])
def test_census_counts_what_materialising_counts(v2, text):
    from memplan.kernel import hugetlb as hugetlb_mod
    m = machine_v2(text) if v2 else machine_from(text)
    ids = m.blocks.ids[m.blocks.online]
    free, folios = m.pages.census(ids)
    batch = m.pages.materialize(ids)
    geo = m.geometry
    assert free.tolist() == np.count_nonzero(batch.kinds == PageKind.FREE, axis=1).tolist()
    for order in geo.hugetlb_orders:
        want = sum(hugetlb_mod.free_folio_heads(batch.kinds[r], int(b) * geo.pages_per_block, order, geo)
                   for r, b in enumerate(ids.tolist()))
        assert folios[order] == want
