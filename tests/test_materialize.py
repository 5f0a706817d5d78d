"""Materialising a profile's pages (issue 12 §3): the same pages for the same seeds, whatever
the order and grouping of the blocks asked for (the engine's chunks are sorted; fixed runs are
found by binary search there)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import bundled
from memplan.core.model import PageKind
from memplan.profile.reader import load_profile


@pytest.mark.parametrize("name", ["sbm-guest.toml", "hugetlb-cma-host.toml", "boot-vm.toml", "bbm-guest.toml"])
def test_pages_do_not_depend_on_the_order_blocks_are_asked_for(name):
    machine = load_profile(bundled(name))
    ids = machine.blocks.ids
    whole = machine.pages.materialize(ids)
    perm = np.random.default_rng(0).permutation(len(ids))
    shuffled = machine.pages.materialize(ids[perm])
    assert np.array_equal(whole.kinds[perm], shuffled.kinds)
    assert (whole.refcount is None) == (shuffled.refcount is None)
    if whole.refcount is not None:
        assert np.array_equal(whole.refcount[perm], shuffled.refcount)
        assert np.array_equal(whole.refcount_rows[perm], shuffled.refcount_rows)
    for block in ids[:: max(1, len(ids) // 7)].tolist():
        alone = machine.pages.materialize(np.array([block]))
        assert np.array_equal(alone.kinds[0], whole.kinds[int(np.searchsorted(ids, block))])


def test_fixed_runs_land_on_their_blocks():
    machine = load_profile(bundled("sbm-guest.toml"))
    ids = machine.blocks.ids
    kinds = machine.pages.materialize(ids).kinds
    # every fake-offline, hole and vmemmap page: in one chunk as block by block
    for kind in (PageKind.FAKE_OFFLINE, PageKind.HOLE, PageKind.VMEMMAP):
        counted = sum(int(np.count_nonzero(machine.pages.materialize(np.array([b])).kinds == int(kind)))
                      for b in ids.tolist())
        assert int(np.count_nonzero(kinds == int(kind))) == counted
        assert counted > 0 or kind is not PageKind.FAKE_OFFLINE
