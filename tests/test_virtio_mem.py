import pytest

from memplan.core.geometry import Geometry, GiB, MiB
from memplan.core.model import DriverState, OnlineType, VirtioMemMode, Zone
from memplan.kernel import virtio_mem as vm
from memplan.kernel.semantics import MAINLINE, PROPOSED, get_semantics

G = Geometry()


def make(**kw):
    args = dict(id="v", addr=4 * GiB, region_size=1 * GiB, device_block_size=2 * MiB)
    args.update(kw)
    return vm.configure(G, **args)


def test_subblock_size_is_at_least_a_pageblock():
    assert vm.subblock_size(G, 1 * MiB) == 2 * MiB
    assert vm.subblock_size(G, 4 * MiB) == 4 * MiB


@pytest.mark.parametrize("dbs,mode", [(2 * MiB, VirtioMemMode.SBM), (64 * MiB, VirtioMemMode.SBM),
                                      (128 * MiB, VirtioMemMode.BBM), (1 * GiB, VirtioMemMode.BBM)])
def test_mode_selection(dbs, mode):
    assert vm.select_mode(G, dbs) is mode
    assert vm.select_mode(G, 2 * MiB, force_bbm=True) is VirtioMemMode.BBM


def test_big_block_size_parameter():
    assert vm.big_block_size(G, 128 * MiB) == (128 * MiB, None)
    assert vm.big_block_size(G, 128 * MiB, 1 * GiB) == (1 * GiB, None)
    assert vm.big_block_size(G, 128 * MiB, 3 * 128 * MiB)[1] == "bbm_block_size is not a power of 2"
    assert vm.big_block_size(G, 1 * GiB, 128 * MiB)[1] == "bbm_block_size is too small"


def test_sbm_states_and_fake_offline_ranges():
    dev, warnings = make(plugged_blocks=list(range(0, 96)), online=OnlineType.KERNEL)
    assert not warnings and dev.mode is VirtioMemMode.SBM and dev.units == 512
    added = vm.added_blocks(dev, G)
    assert [(a.block, a.state, a.zone) for a in added] == [(32, "KERNEL", Zone.NORMAL),
                                                          (33, "KERNEL_PARTIAL", Zone.NORMAL)]
    assert vm.fake_offline_ranges(dev, G) == [(0x108000 + 32 * 512, 0x110000)]


def test_offline_device_has_no_fake_offline_pages():
    dev, _ = make(plugged_blocks=[0], online=OnlineType.OFFLINE)
    assert vm.added_blocks(dev, G)[0].state == "OFFLINE_PARTIAL"
    assert vm.fake_offline_ranges(dev, G) == []


def test_bbm_states():
    dev, _ = make(device_block_size=128 * MiB, plugged_size=384 * MiB, fake_offline_big_blocks=[1])
    assert dev.mode is VirtioMemMode.BBM
    assert [(a.block, a.state) for a in vm.added_blocks(dev, G)] == [(32, "ADDED"), (33, "FAKE_OFFLINE"),
                                                                     (34, "ADDED")]
    assert vm.fake_offline_ranges(dev, G) == [(0x108000, 0x110000)]


@pytest.mark.parametrize("kwargs,key", [
    (dict(plugged_blocks=[1]), None),
    (dict(device_block_size=1 * MiB, plugged_blocks=[1]), "plugged"),  # half of a 2 MiB sub-block
    (dict(plugged_blocks=[9999]), "plugged"),
    (dict(plugged_size=3 * MiB), "plugged_size"),
    (dict(addr=4 * GiB + 2 * MiB), "addr"),
    (dict(device_block_size=3 * MiB), "block_size"),
    (dict(mode="sbm", device_block_size=128 * MiB), "mode"),
    (dict(fake_offline_big_blocks=[0]), "fake_offline_big_blocks"),
])
def test_configuration_errors(kwargs, key):
    if key is None:
        make(**kwargs)
        return
    with pytest.raises(vm.DeviceConfigError) as info:
        make(**kwargs)
    assert info.value.key == key


def test_skippable_flag_cleared_on_unload_for_partial_blocks():
    skippable, refcount = get_semantics(PROPOSED), get_semantics(MAINLINE)
    assert skippable.fake_offline_skippable(DriverState.UNLOADED, "MOVABLE_PARTIAL") is False
    assert skippable.fake_offline_skippable(DriverState.UNLOADED, "MOVABLE") is True
    assert skippable.fake_offline_skippable(DriverState.LOADED, "MOVABLE_PARTIAL") is True
    assert refcount.fake_offline_skippable(DriverState.UNLOADED, "MOVABLE_PARTIAL") is False
    assert refcount.fake_offline_skippable(DriverState.LOADED, "MOVABLE") is False


def test_default_kernel_zone():
    assert vm.default_kernel_zone(G, 0x800) == Zone.DMA
    assert vm.default_kernel_zone(G, 0x40000) == Zone.DMA32
    assert vm.default_kernel_zone(G, 0x100000) == Zone.NORMAL
