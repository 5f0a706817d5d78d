import numpy as np
import pytest

from conftest import bundled, machine_from
from memplan.core import machine as machine_module
from memplan.core.errors import UsageError
from memplan.engine import simulation
from memplan.engine.simulation import simulate
from memplan.profile.reader import load_profile


def test_default_is_every_online_block():
    m = load_profile(bundled("boot-vm.toml"))
    r = simulate(m)
    assert [b.block for b in r.blocks] == list(m.blocks.ids[m.blocks.online])
    assert r.semantics == "refcount"


def test_unknown_block_is_a_usage_error():
    with pytest.raises(UsageError, match="memory block 99 does not exist"):
        simulate(load_profile(bundled("boot-vm.toml")), blocks=[99])


def test_results_do_not_depend_on_chunk_size(monkeypatch):
    m = load_profile(bundled("sbm-guest.toml"))
    whole = simulate(m)
    monkeypatch.setattr(machine_module, "CHUNK_PAGES", 32768)
    assert simulate(load_profile(bundled("sbm-guest.toml"))) == whole


def test_selected_blocks_match_a_full_run():
    m = load_profile(bundled("bbm-guest.toml"))
    full = {b.block: b for b in simulate(m, "skippable").blocks}
    for b in simulate(m, "skippable", [33, 64, 100]).blocks:
        assert b == full[b.block]


def test_offline_blocks_can_be_selected():
    m = machine_from('[[ram]]\nstart = "1GiB"\nsize = "128MiB"\nzone = "Movable"\nstate = "offline"\n')
    assert simulate(m).blocks[-1].block == 7  # default: online blocks only
    v = simulate(m, blocks=[8]).blocks[0]
    assert (v.errno.value, v.step.value) == ("EINVAL", "state")
    assert v.pages.blocking == v.pages.total


def test_capacity_needs_a_census_only_when_short():
    # Blocks 0-7 are free: the lower bound from the selected blocks is enough.
    m = machine_from('[[ram]]\nstart = "1GiB"\nsize = "128MiB"\nzone = "Movable"\n[[fill]]\nblocks = "8"\nanon = 1\n')
    assert simulate(m, blocks=[8]).blocks[0].result.value == "offlined"
    # Selecting only block 8 of a full machine: the census finds no room.
    full = machine_from('[[ram]]\nstart = "1GiB"\nsize = "128MiB"\nzone = "Movable"\n'
                        '[[fill]]\nblocks = "0-8"\nanon = 1\n')
    v = simulate(full, blocks=[8]).blocks[0]
    assert (v.result.value, v.step.value) == ("hangs", "scan")


def test_summary():
    r = simulate(load_profile(bundled("sbm-guest.toml")))
    s = r.summary
    assert s.blocks == s.offlined + s.fails + s.hangs
    assert s.offlinable_bytes == s.offlined * 128 * 2 ** 20


def test_chunks_are_consecutive_and_bounded(monkeypatch):
    monkeypatch.setattr(machine_module, "CHUNK_PAGES", 3 * 32768)
    ids = np.array([0, 1, 2, 3, 4, 7, 8, 20], dtype=np.int64)
    assert [c.tolist() for c in simulation.chunks(ids, 32768)] == [[0, 1, 2], [3, 4], [7, 8], [20]]
    assert simulation.chunks(np.array([], dtype=np.int64), 32768) == []


def test_capacity_redo_uses_the_shortcut_columns():
    # Block 8 needs more targets than the rest of the machine has: the redo pass passes the
    # capacity to the shortcut, which must leave the block to the full pipeline (it hangs).
    full = machine_from('[[ram]]\nstart = "1GiB"\nsize = "256MiB"\nzone = "Movable"\n'
                        '[[fill]]\nblocks = "0-7,9"\nanon = 0.999\n[[fill]]\nblocks = "8"\nanon = 0.5\n')
    verdicts = {v.block: v for v in simulate(full).blocks}
    assert verdicts[8].result.value == "hangs" and verdicts[8].step.value == "scan"
