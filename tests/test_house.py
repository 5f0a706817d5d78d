"""Issue 11 leftovers: page-size facts live in Geometry, kernel rules once (capacity, SBM/BBM states,
the block context plan and simulate build)."""

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import bundled
from machines import machines
from memplan.core.geometry import DEFAULT_GEOMETRY, Geometry, pmd_size
from memplan.core.model import PageKind, Zone
from memplan.engine.context import ContextBuilder, capacities_of, capacity_of
from memplan.kernel.migration import allowed_nodes
from memplan.kernel.virtio_mem import BbmState, SbmState, bbm_state, block_states, sbm_state
from memplan.plans.state import MachineState
from memplan.profile.reader import build_machine, load_profile
from memplan.snapshot import kpf

MiB = 1 << 20


@pytest.mark.parametrize("page_size, pmd_order, max_order, section", [
    # x86-64 / arm64 4K: HPAGE_PMD_ORDER 9, MAX_PAGE_ORDER 10, SECTION_SIZE_BITS 27
    (4096, 9, 10, 128 * MiB),
    # arm64 16K: PMD 32 MiB (order 11), ARCH_FORCE_MAX_ORDER 11, SECTION_SIZE_BITS 27
    (16384, 11, 11, 128 * MiB),
    # arm64 64K: PMD 512 MiB (order 13), ARCH_FORCE_MAX_ORDER 13, SECTION_SIZE_BITS 29
    (65536, 13, 13, 512 * MiB),
])
def test_geometry_for_page_size(page_size, pmd_order, max_order, section):
    geo = Geometry.for_page_size(1 << 30, page_size)
    assert (geo.pmd_order, geo.max_page_order, geo.section_size) == (pmd_order, max_order, section)
    assert geo.pageblock_order == min(pmd_order, max_order)
    assert geo.pmd_pages * page_size == pmd_size(page_size)
    assert geo.hugetlb_orders == (pmd_order, 2 * pmd_order)
    # hstate_is_gigantic(): the PUD size always, the PMD size never on these configurations
    assert geo.gigantic(np.asarray(geo.hugetlb_orders)).tolist() == [False, True]
    # sections are at most a memory block
    assert Geometry.for_page_size(128 * MiB, page_size).section_size == 128 * MiB


def test_page_flags_follow_the_page_size():
    """A THP is a PMD folio: its compound head repeats every PMD's worth of pages."""
    geo = Geometry.for_page_size(1 << 30, 16384)
    kinds = np.full(2 * geo.pmd_pages, int(PageKind.THP), dtype=np.uint8)
    for g in (geo, DEFAULT_GEOMETRY):
        flags = kpf.page_flags(kinds, np.arange(len(kinds)), None, g)
        heads = np.flatnonzero(flags & (1 << kpf.KPF.COMPOUND_HEAD))
        assert heads.tolist() == list(range(0, len(kinds), g.pmd_pages))


def _capacity_by_definition(row, node, zone, online, present, free):
    """do_migrate_range()'s targets spelled out row by row: the online blocks (not spanning
    nodes) on the allowed nodes, the block itself left out, split kernel / ZONE_MOVABLE."""
    allowed = allowed_nodes(present, int(node[row]))
    kernel = movable = 0
    for r in range(len(node)):
        if r == row or not online[r] or node[r] < 0 or int(node[r]) not in allowed:
            continue
        if zone[r] == Zone.MOVABLE.code:
            movable += int(free[r])
        else:
            kernel += int(free[r])
    return kernel, movable


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-1, 2), st.sampled_from([Zone.MOVABLE.code, Zone.NORMAL.code, -1]),
                          st.booleans(), st.integers(0, 1000)), min_size=1, max_size=12),
       st.dictionaries(st.integers(0, 2), st.integers(0, 5), max_size=3))
def test_capacities_of_is_the_per_row_rule(rows, present):
    node = np.asarray([r[0] for r in rows], dtype=np.int64)
    zone = np.asarray([r[1] for r in rows], dtype=np.int8)
    online = np.asarray([r[2] for r in rows], dtype=bool)
    free = np.asarray([r[3] for r in rows], dtype=np.int64)
    kernel, movable = capacities_of(np.arange(len(rows)), node, zone, online, present, free)
    for row in range(len(rows)):
        want = _capacity_by_definition(row, node, zone, online, present, free)
        assert (int(kernel[row]), int(movable[row])) == want
        one = capacity_of(row, node, zone, online, present, free)
        assert (one.kernel, one.movable) == want


def test_sbm_and_bbm_states():
    assert sbm_state(False, False, False, False) is SbmState.UNUSED
    assert sbm_state(True, False, True, True) is SbmState.OFFLINE
    assert sbm_state(True, False, False, False) is SbmState.OFFLINE_PARTIAL
    assert sbm_state(True, True, True, False) is SbmState.MOVABLE_PARTIAL
    assert sbm_state(True, True, False, True) is SbmState.KERNEL
    assert bbm_state(False, True) is BbmState.UNUSED
    assert bbm_state(True, False) is BbmState.ADDED
    assert bbm_state(True, True) is BbmState.FAKE_OFFLINE


@pytest.mark.parametrize("profile", ["sbm-guest.toml", "bbm-guest.toml"])
def test_plan_state_names_blocks_as_the_kernel_model_does(profile):
    machine = load_profile(bundled(profile))
    state = MachineState(machine)
    kernel = {}
    for device in machine.devices:
        kernel.update(block_states(device, machine.geometry))
    named = {int(state.ids[row]): state.block_state_name(row) for row in range(len(state.ids))
             if state.device_of(row) is not None}
    assert kernel and {b: named[b] for b in kernel} == kernel


def test_a_capacity_plan_counts_hugetlb_folios_at_the_machines_page_size(tmp_path):
    """16 KiB pages: the PMD hugetlb size is 32 MiB (order 11), not order 9."""
    from conftest import build_sysroot
    from memplan.snapshot.reader import load_snapshot

    page, block = 16384, 128 * MiB
    ppb = block // page
    geo = Geometry.for_page_size(block, page)
    flags = np.zeros(2 * ppb, dtype=np.uint64)
    flags[ppb:] = 1 << kpf.KPF.BUDDY
    folio = slice(ppb, ppb + geo.pmd_pages)  # one free 32 MiB hugetlb folio at the start of block 1
    flags[folio] = (1 << kpf.KPF.HUGE) | (1 << kpf.KPF.COMPOUND_TAIL)
    flags[ppb] = (1 << kpf.KPF.HUGE) | (1 << kpf.KPF.COMPOUND_HEAD)
    root = build_sysroot(str(tmp_path), {1: ("online", "Normal")}, flags,
                         f"{block:08x}-{2 * block - 1:08x} : System RAM\n", counts=np.zeros(2 * ppb),
                         block_size=block, hugepages=False)
    (tmp_path / "memplan-page-size").write_text(f"{page}\n")
    hstate = tmp_path / "sys/kernel/mm/hugepages" / f"hugepages-{pmd_size(page) >> 10}kB"
    hstate.mkdir(parents=True)
    for key, value in (("nr", 1), ("free", 1), ("resv", 0), ("surplus", 0)):
        (hstate / f"{key}_hugepages").write_text(f"{value}\n")
    machine = load_snapshot(root)
    assert machine.geometry.hugetlb_orders == (11, 22)
    state = MachineState(machine)
    assert {order: int(counts.sum()) for order, counts in state.free_huge.items()} == {11: 1, 22: 0}
    assert state.pools[11].free == 1


@settings(max_examples=30, deadline=None)
@given(machines())
def test_plan_and_simulate_build_the_same_block_context(doc):
    """``MachineState.context()`` (plan, unplug) and ``ContextBuilder.context()`` (simulate)
    give every block of an unchanged machine the same facts and the same migration targets."""
    machine = build_machine(copy.deepcopy(doc), "<hypothesis>")
    state = MachineState(machine)
    builder = ContextBuilder(machine, state.semantics)
    for row in range(len(machine.blocks)):
        planned, simulated = state.context(row), builder.context(row)
        for name in ("block", "start_pfn", "state", "zone", "node", "vmemmap", "device_state"):
            assert getattr(planned, name) == getattr(simulated, name), (row, name)
        assert (planned.device is None) == (simulated.device is None)
        if planned.device is not None:
            assert (planned.device.id, planned.device.plugged.tolist()) == (simulated.device.id,
                                                                           simulated.device.plugged.tolist())
        assert planned.cma.tolist() == simulated.cma.tolist()
        assert planned.isolated.tolist() == simulated.isolated.tolist()
        if machine.blocks.online[row]:
            assert dict(planned.targets.pool) == dict(simulated.targets.pool), row
