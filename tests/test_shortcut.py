"""The block-level shortcut (memplan.engine.shortcut) against the full pipeline and the reference.

* on random machines, ``simulate()`` with the shortcut gives exactly the result it gives when
  every block goes through ``offline_block()`` (verdicts, page counts, kernel log), in both
  semantics;
* on random page rows (including THP runs that are not whole folios, which snapshots can
  produce), every verdict the shortcut decides equals ``offline_block()``'s, ``BlockStats``
  included, with and without the page source's hints;
* the shortcut does decide the common cases (every random row made only of the kinds it is
  meant for), and agrees with the per-page oracle there.
"""

from __future__ import annotations

import copy
import dataclasses
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import machine_from
from memplan.core.geometry import Geometry
from memplan.core.model import KIND_INFO, LOOK_CLOSER, FolioSize, PageKind
from memplan.core.results import BlockVerdict, Cause, Outcome, PageCounts, Zone
from memplan.engine import shortcut, simulation
from memplan.engine.simulation import Simulator, simulate
from memplan.kernel.isolation import unmovable_kinds
from memplan.kernel.offline import BlockStats, offline_block
from memplan.kernel.pages import KindSet, RangeView, folio_heads
from memplan.kernel.semantics import SEMANTICS, get_semantics
from memplan.kernel.verdict import VerdictBuilder
from memplan.profile.reader import build_machine
from oracle import Oracle

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PPB = 32768
FRACTIONS = {"anon": st.floats(0, 0.4), "file": st.floats(0, 0.3), "thp": st.floats(0, 0.2),
             "movable": st.floats(0, 0.01), "balloon_movable": st.floats(0, 0.001),
             "slab": st.sampled_from([0, 0.00002, 0.001]), "pagetable": st.sampled_from([0, 0.00002]),
             "kernel": st.sampled_from([0, 0.00002]), "reserved": st.sampled_from([0, 0.00002]),
             "hwpoison": st.sampled_from([0, 0.0001]), "pinned": st.sampled_from([0, 0, 0.00002]),
             "hugetlb": st.sampled_from([0, 0, 0.05])}


@st.composite
def machines(draw):
    """Blocks 0-7 free Normal memory, 8-11 boot memory of a random zone, 16-17 a virtio-mem
    device (random plugged map, online type and driver state), random fills, pages, environment."""
    plugged = draw(st.lists(st.booleans(), min_size=128, max_size=128))
    plugged[0] = plugged[64] = True
    doc = {
        "format": 1,
        "ram": [{"start": 0, "size": "1GiB", "zone": "Normal"},
                {"start": "1GiB", "size": "512MiB", "zone": draw(st.sampled_from(["Normal", "DMA32", "Movable"]))}],
        "virtio_mem": [{"id": "vmem0", "addr": "2GiB", "region_size": "256MiB", "block_size": "2MiB",
                        "plugged": [str(i) for i, p in enumerate(plugged) if p],
                        "online": draw(st.sampled_from(["movable", "movable", "kernel"])),
                        "driver": draw(st.sampled_from(["loaded", "loaded", "unloaded", "removing"]))}],
        "fill": [{"blocks": "8-11", "seed": draw(st.integers(0, 99)),
                  **draw(st.fixed_dictionaries({}, optional=FRACTIONS))},
                 {"blocks": "vmem0", "seed": draw(st.integers(0, 99)),
                  **draw(st.fixed_dictionaries({}, optional={k: FRACTIONS[k] for k in ("anon", "file", "thp", "slab",
                                                                                        "hwpoison")}))}],
        "pages": [],
    }
    for _ in range(draw(st.integers(0, 2))):
        block = draw(st.sampled_from([8, 9, 10, 11]))
        pfn = block * PPB + draw(st.integers(0, 63)) * 512 + draw(st.integers(0, 500))
        if any(abs(p["pfn"] - pfn) < 16 for p in doc["pages"]):
            continue
        page = {"pfn": pfn, "count": 4, "kind": draw(st.sampled_from(["anon", "file", "slab", "reserved", "balloon"]))}
        if page["kind"] in ("anon", "file") and draw(st.booleans()):
            page["refcount"] = draw(st.integers(0, 3))
        doc["pages"].append(page)
    env = {}
    if draw(st.integers(0, 5)) == 0:
        env["signal_pending"] = True
    if draw(st.integers(0, 5)) == 0:
        env["notifier_veto"] = "EBUSY"
    if draw(st.integers(0, 5)) == 0:
        env["node_notifier_veto"] = "EBUSY"
    if env:
        doc["environment"] = env
    return doc


def _without_shortcut(*args, **kwargs):
    kinds = args[2]
    return [None] * len(kinds)


@SETTINGS
@given(machines())
def test_simulate_is_the_same_with_and_without_the_shortcut(doc):
    for name in SEMANTICS:
        fast = simulate(build_machine(copy.deepcopy(doc), "<hypothesis>"), name)
        with mock.patch.object(simulation, "chunk_verdicts", _without_shortcut):
            slow = simulate(build_machine(copy.deepcopy(doc), "<hypothesis>"), name)
        assert fast == slow, name


ROW_KINDS = [PageKind.FREE, PageKind.ANON, PageKind.FILE, PageKind.THP, PageKind.MOVABLE, PageKind.BALLOON_MOVABLE,
             PageKind.HWPOISON, PageKind.SLAB, PageKind.PAGETABLE, PageKind.KERNEL, PageKind.RESERVED,
             PageKind.FAKE_OFFLINE, PageKind.PINNED, PageKind.HUGETLB, PageKind.VMEMMAP]


@st.composite
def page_rows(draw):
    """A block's page kinds: a random order-0 base plus runs of any kind at any offset (THP runs
    need not be whole aligned folios)."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    base = [int(k) for k in draw(st.lists(st.sampled_from(ROW_KINDS[:3] + ROW_KINDS[4:6]), min_size=1, max_size=4))]
    row = rng.choice(np.array(base, dtype=np.uint8), size=PPB)
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(ROW_KINDS))
        start = draw(st.integers(0, PPB - 1))
        length = draw(st.sampled_from([1, 7, 512, 700, 1024]))
        if kind is PageKind.HUGETLB:
            start -= start % 512
            length = 512
        row[start:start + length] = int(kind)
    return row


MACHINE = """
[[ram]]
start = "1GiB"
size = "128MiB"
zone = "{zone}"

[[virtio_mem]]
id = "vmem0"
addr = "2GiB"
region_size = "128MiB"
block_size = "2MiB"
plugged = ["0-31"]
online = "{online}"
"""


#: kinds the shortcut judges on its own: free, LRU and movable_ops pages, HWPoison
DECIDED_EVERYWHERE = {int(k) for k in ROW_KINDS if int(k) < int(PageKind.HWPOISON)} | {int(PageKind.HWPOISON)}
#: order-0 pages with a reference that nothing makes movable: page_is_unmovable() in a kernel zone
PLAIN_UNMOVABLE = {int(k) for k, info in KIND_INFO.items()
                   if info.folio is FolioSize.BASE and info.default_refcount > 0 and info.profile
                   and not (info.lru or info.movable_ops or info.page_offline or k is PageKind.HWPOISON)}


def meant_to_decide(row: np.ndarray, zone: Zone, on_device: bool) -> bool:
    """Whether the shortcut promises a verdict for this row: only kinds it accounts for (in a
    kernel zone the plain unmovable kinds, in ZONE_MOVABLE PG_reserved; on the loaded virtio-mem
    device fake-offline pages, which both semantics skip)."""
    allowed = set(DECIDED_EVERYWHERE)
    allowed |= {int(PageKind.RESERVED)} if zone is Zone.MOVABLE else PLAIN_UNMOVABLE
    if on_device:
        allowed.add(int(PageKind.FAKE_OFFLINE))
    return set(np.unique(row).tolist()) <= allowed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(page_rows(), st.sampled_from(["Normal", "DMA32", "Movable"]), st.sampled_from(["movable", "kernel"]),
       st.sampled_from(list(SEMANTICS)), st.booleans())
def test_shortcut_verdicts_equal_offline_block(row, zone, online, semantics, on_device):
    machine = machine_from(MACHINE.format(zone=zone, online=online))
    sim = Simulator(machine, get_semantics(semantics))
    block = 16 if on_device else 8
    rows = machine.blocks.rows([block])
    kinds = row[None, :]
    expected = offline_block(sim.setup, sim.context(int(rows[0])), row, None)
    decides = meant_to_decide(row, machine.blocks.zone_of(int(rows[0])), on_device)
    for special_rows in (None, np.array([True])):
        got = shortcut.chunk_verdicts(sim.setup, sim.columns(rows), kinds, np.array([False]), False, special_rows)[0]
        assert (got is not None) == decides
        if got is not None:
            assert got == expected


@pytest.mark.parametrize("semantics", list(SEMANTICS))
def test_common_blocks_are_decided_and_agree_with_the_reference(semantics):
    machine = machine_from("""
        [[ram]]
        start = "1GiB"
        size = "256MiB"
        zone = "Normal"

        [[virtio_mem]]
        id = "vmem0"
        addr = "2GiB"
        region_size = "256MiB"
        block_size = "2MiB"
        plugged = ["0-47", "64-127"]
        online = "movable"

        [[fill]]
        blocks = "8-9"
        seed = 3
        anon = 0.3
        thp = 0.1
        slab = 0.001

        [[fill]]
        blocks = "vmem0"
        seed = 4
        anon = 0.3
        file = 0.2
        thp = 0.2
        """)
    sim = Simulator(machine, get_semantics(semantics))
    ids = np.array([0, 8, 9, 16, 17])
    rows = machine.blocks.rows(ids)
    batch = machine.pages.materialize(ids)
    got = shortcut.chunk_verdicts(sim.setup, sim.columns(rows), batch.kinds, batch.rows_with_refcount(),
                                  batch.whole_folios, batch.special_rows)
    assert all(g is not None for g in got)
    outcomes = [v.result for v, _ in got]
    assert outcomes == [Outcome.OFFLINED, Outcome.FAILS, Outcome.FAILS, Outcome.OFFLINED, Outcome.OFFLINED]
    assert [v.cause for v, _ in got] == [None, Cause.UNMOVABLE_PAGE, Cause.UNMOVABLE_PAGE, None, None]
    assert got[3][0].pages.skipped_offline == 16 * 512  # the unplugged quarter of block 16
    for verdict, stats in got:  # plain Python ints: the JSON writer and equality rely on them
        values = [verdict.block, verdict.start, verdict.end, verdict.node, stats.free_pages, stats.demand]
        values += [getattr(verdict.pages, f) for f in ("total", "free", "migrated", "skipped_offline", "hwpoison")]
        values += [verdict.culprit.pfn, verdict.culprit.refcount] if verdict.culprit else []
        assert all(type(v) is int for v in values), values
    for r, (verdict, stats) in zip(rows, got):
        ctx = sim.context(int(r))
        j = int(np.flatnonzero(ids == ctx.block)[0])
        assert (verdict, stats) == offline_block(sim.setup, ctx, batch.kinds[j], None)
        ref = Oracle(machine, semantics).offline(ctx.block)
        assert (verdict.result, verdict.errno, verdict.reason, verdict.step, verdict.pages,
                (verdict.culprit.pfn, verdict.culprit.kind) if verdict.culprit else None) == (
            ref.result, ref.errno, ref.reason, ref.step, ref.pages, ref.culprit[:2] if ref.culprit else None)


@pytest.mark.parametrize("env,driver,causes", [
    ("signal_pending = true", "loaded", [Cause.SIGNAL_PENDING] * 2),
    ('notifier_veto = "EPERM"', "loaded", [Cause.MEMORY_NOTIFIER_VETO] * 2),
    # node notifiers hear of the node's last memory only: the device's block is node 1's
    ('node_notifier_veto = "EBUSY"', "loaded", [None, Cause.NODE_NOTIFIER_VETO]),
    ("", "removing", [None, Cause.VIRTIO_MEM_REMOVING]),
])
@pytest.mark.parametrize("semantics", list(SEMANTICS))
def test_stops_before_scan_are_decided_by_the_kernels_conditions(env, driver, causes, semantics):
    machine = machine_from(f"""
        [machine]
        nodes = 2

        [[ram]]
        start = "1GiB"
        size = "128MiB"
        zone = "Movable"

        [[virtio_mem]]
        id = "vmem0"
        addr = "2GiB"
        region_size = "128MiB"
        block_size = "2MiB"
        plugged = ["0-63"]
        online = "movable"
        driver = "{driver}"
        node = 1

        [[fill]]
        blocks = "8,16"
        seed = 5
        anon = 0.3
        thp = 0.1

        [environment]
        {env}
        """)
    sim = Simulator(machine, get_semantics(semantics))
    ids = np.array([8, 16])
    rows = machine.blocks.rows(ids)
    batch = machine.pages.materialize(ids)
    got = shortcut.chunk_verdicts(sim.setup, sim.columns(rows), batch.kinds, batch.rows_with_refcount(),
                                  batch.whole_folios, batch.special_rows)
    for j, r in enumerate(rows.tolist()):
        assert got[j] is not None
        assert got[j] == offline_block(sim.setup, sim.context(r), batch.kinds[j], None)
    assert [v.cause for v, _ in got] == causes


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4095), st.integers(1, 1500)), max_size=6), st.integers(0, 4095))
def test_folio_heads_counts_what_folio_first_marks(runs, base):
    kinds = np.zeros(4096, dtype=np.uint8)
    for start, length in runs:
        kinds[start:start + length] = int(PageKind.THP)
    geo = Geometry()
    order = int(geo.folio_order[int(PageKind.THP)])
    pfn = base << order  # the range starts on a folio boundary, like a memory block
    view = RangeView(pfn, kinds, np.ones(len(kinds), np.int32), np.zeros(len(kinds), bool), geo)
    thp = kinds == PageKind.THP
    assert folio_heads(thp, order) == int(np.count_nonzero(view.first & thp))


def test_fast_constructors_build_the_same_objects():
    counts = shortcut._counts(total=8, free=1, migrated=2, skipped_offline=3, hwpoison=1)
    assert counts == PageCounts(total=8, free=1, migrated=2, skipped_offline=3, hwpoison=1) and counts.blocking == 1
    builder = VerdictBuilder(Geometry())
    template = builder.template(Zone.NORMAL, 0, None, None, **builder.outcome(None, 0, 0))
    verdict = builder.stamp(template, 1, 0, counts)
    assert "block" not in template  # the shared template is not touched
    assert verdict == BlockVerdict(block=1, start=0, end=(128 << 20) - 1, zone=Zone.NORMAL, node=0,
                                   result=Outcome.OFFLINED, errno=None, reason=None, step=None, culprit=None,
                                   pages=counts)
    assert shortcut._stats(free_pages=1, demand=2, free_hugetlb={}) == BlockStats(1, 2, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.block = 2  # still frozen


@pytest.mark.parametrize("semantics", list(SEMANTICS))
def test_blocking_kinds_come_from_the_isolation_predicate(semantics):
    sem, geo = get_semantics(semantics), Geometry()
    kernel = shortcut.blocking_kinds(False, sem, geo)
    every = np.arange(256, dtype=np.uint8)
    assert [PageKind(int(k)) for k in np.flatnonzero(kernel.mask(every))] == [
        PageKind.SLAB, PageKind.PAGETABLE, PageKind.KERNEL, PageKind.RESERVED, PageKind.VMEMMAP]
    assert [PageKind(int(k)) for k in np.flatnonzero(shortcut.blocking_kinds(True, sem, geo).mask(every))] == [
        PageKind.RESERVED]
    # the kinds below LOOK_CLOSER are the ones the shortcut lets migrate: never unmovable
    for movable in (False, True):
        assert not unmovable_kinds(movable, sem, False, geo)[:LOOK_CLOSER].any()


def test_kind_set_tests_runs_of_codes():
    table = np.zeros(256, dtype=bool)
    table[[3, 4, 5, 9, 255]] = True
    kinds = KindSet.of(table)
    assert kinds.runs == ((3, 6), (9, 10), (255, 256))
    every = np.arange(256, dtype=np.uint8)
    assert (kinds.mask(every) == table).all()
    assert not KindSet.of(np.zeros(256, bool)).mask(every).any()
