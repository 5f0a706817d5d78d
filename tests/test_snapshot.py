"""Snapshots: loading real-kernel trees, virtio-mem reconstruction, semantics detection,
chunked page reading, the describe() pass and --save round trips."""

import os
import shutil

import numpy as np
import pytest

from conftest import QEMU_FIXTURES, build_sysroot, fixture_tree
from memplan.core.errors import InputError, UsageError
from memplan.core.model import BlockState, VirtioMemMode, Zone
from memplan.engine.simulation import simulate
from memplan.snapshot.evidence import PageClass
from memplan.snapshot.kpageflags import KPF, bit
from memplan.snapshot.reader import describe, detect_semantics, load_snapshot

PPB = 32768


@pytest.mark.parametrize("name", QEMU_FIXTURES + ("host-6.18-24g",))
def test_fixture_semantics_is_refcount_and_says_why(name):
    machine = load_snapshot(fixture_tree(name))
    assert machine.default_semantics == "refcount"
    assert "refcount" in machine.semantics_reason or "KPF_OWNER_2" in machine.semantics_reason
    with open(os.path.join(fixture_tree(name), "proc", "osrelease")) as handle:
        assert machine.kernel == handle.read().strip()


def test_host_blocks_follow_sysfs_not_a_range():
    machine = load_snapshot(fixture_tree("host-6.18-24g"))
    ids = machine.blocks.ids.tolist()
    assert len(ids) == 192 and 24 not in ids and 31 not in ids and ids[-1] == 199
    row = machine.blocks.rows([0])[0]
    assert machine.blocks.zone_of(row) is None  # valid_zones "none": spans DMA and DMA32
    assert machine.blocks.zone_of(machine.blocks.rows([100])[0]) is Zone.NORMAL


def test_virtio_mem_device_from_iomem_and_fake_offline_runs():
    post1 = load_snapshot(fixture_tree("qemu-6.1-post1"))
    (device,) = post1.devices
    assert (device.id, device.mode, device.addr, device.region_size) == ("virtio0", VirtioMemMode.SBM, 4 << 30, 4 << 30)
    assert device.plugged_size == 960 << 20  # "shrunk from 2048 MiB to 960 MiB"
    result = simulate(post1, blocks=[39])
    assert result.blocks[0].device_state == "MOVABLE_PARTIAL"
    assert result.blocks[0].pages.skipped_offline == 16384
    post2 = load_snapshot(fixture_tree("qemu-6.1-post2"))
    assert post2.devices[0].plugged_size == 384 << 20
    assert post2.devices[0].unit_size == 2 << 20
    rows = post2.blocks.rows([32, 36])
    assert post2.blocks.device[rows].tolist() == [0, 0]


def test_materialize_reads_only_the_blocks_asked_for():
    machine = load_snapshot(fixture_tree("qemu-6.1-post2"))
    source = machine.pages
    calls = []
    original = source.flags.read

    def spy(start, count):
        calls.append((start, count))
        return original(start, count)

    source.flags.read = spy
    batch = source.materialize(np.array([33, 34]))
    assert batch.kinds.shape == (2, PPB)
    assert calls and all(33 * PPB <= s and s + c <= 35 * PPB for s, c in calls)
    evidence = machine.assessor.evidence[34]
    assert sum(evidence.counts) == PPB and evidence.count(PageClass.FAKE_OFFLINE) == 2560


def small_machine(tmp_path, fake_flags=0, *, release="6.1.0", counts=True, pfns=3 * PPB):
    """Block 1: boot RAM (Normal, free); block 2: virtio-mem (Movable), half fake-offline."""
    flags = np.zeros(pfns, dtype=np.uint64)
    flags[PPB:2 * PPB] = bit(KPF.BUDDY)
    flags[2 * PPB:2 * PPB + PPB // 2] = bit(KPF.BUDDY)
    flags[2 * PPB + PPB // 2:3 * PPB] = bit(KPF.OFFLINE) | fake_flags
    iomem = ("00000000-07ffffff : Reserved\n08000000-0fffffff : System RAM\n10000000-1fffffff : virtio1\n"
             "  10000000-17ffffff : System RAM (virtio_mem)\n")
    root = build_sysroot(str(tmp_path / "tree"), {1: ("online", "Normal"), 2: ("online", "Movable")},
                         flags[:pfns], iomem, counts=np.zeros(pfns) if counts else None, release=release)
    return load_snapshot(root)


def test_owner_2_on_fake_offline_pages_means_skippable(tmp_path):
    machine = small_machine(tmp_path, bit(KPF.OWNER_2))
    assert machine.default_semantics == "skippable"
    assert "16384 of 16384 fake-offline pages carry KPF_OWNER_2" in machine.semantics_reason
    result = simulate(machine)
    assert result.semantics == "skippable" and result.semantics_reason == machine.semantics_reason
    assert [b.result.value for b in result.blocks] == ["offlined", "offlined"]


def test_fake_offline_without_owner_2_means_refcount(tmp_path):
    machine = small_machine(tmp_path)
    assert machine.default_semantics == "refcount"
    assert "none of the 16384 fake-offline pages" in machine.semantics_reason
    verdict = simulate(machine, blocks=[2]).blocks[0]
    assert verdict.result.value == "offlined" and verdict.device_state == "MOVABLE_PARTIAL"
    assert verdict.confidence == "likely" and "fake-offline" in verdict.blind_spots[0]
    # an explicit --semantics is the user's choice, not a detection
    assert simulate(machine, semantics="skippable").semantics_reason is None


def test_detect_semantics_without_device():
    name, reason = detect_semantics(0, 0, "6.18.1", False)
    assert name == "refcount" and "never merged" in reason and "6.18.1" in reason


def test_truncated_kpageflags_is_one_clear_error(tmp_path):
    # virtio-mem blocks are read while loading (semantics detection), so the error comes early
    with pytest.raises(InputError, match=r"kpageflags.xz: ends at pfn 0x10064, but memory block 2 needs"):
        simulate(small_machine(tmp_path, pfns=2 * PPB + 100))


def test_truncation_outside_virtio_mem_is_found_when_read(tmp_path):
    flags = np.full(2 * PPB - 8, bit(KPF.BUDDY), dtype=np.uint64)
    root = build_sysroot(str(tmp_path / "t"), {0: ("online", "DMA32"), 1: ("online", "DMA32")}, flags,
                         "00000000-0fffffff : System RAM\n", compress=False)
    machine = load_snapshot(root)
    assert simulate(machine, blocks=[0]).blocks[0].result.value == "offlined"
    with pytest.raises(InputError, match="memory block 1 needs"):
        simulate(machine)
    with pytest.raises(InputError, match="online memory block 1"):
        describe(load_snapshot(root))


def test_missing_kpagecount_and_release_are_warnings(tmp_path):
    machine = small_machine(tmp_path, counts=False, release=None)
    assert any("kpagecount" in w for w in machine.warnings)
    assert any("kernel release" in w for w in machine.warnings)
    assert machine.kernel is None


def test_tree_without_memory0(tmp_path):
    root = str(tmp_path / "post2")
    shutil.copytree(fixture_tree("qemu-6.1-post2"), root)
    shutil.rmtree(os.path.join(root, "sys/devices/system/memory/memory0"))
    machine = load_snapshot(root)
    assert 0 not in machine.blocks.ids.tolist()
    assert len(simulate(machine, blocks=[1, 36]).blocks) == 2


def test_offline_block_is_certain_einval(tmp_path):
    root = str(tmp_path / "post2")
    shutil.copytree(fixture_tree("qemu-6.1-post2"), root)
    with open(os.path.join(root, "sys/devices/system/memory/memory4/state"), "w") as handle:
        handle.write("offline\n")
    machine = load_snapshot(root)
    assert machine.blocks.state_of(machine.blocks.rows([4])[0]) is BlockState.OFFLINE
    verdict = simulate(machine, blocks=[4]).blocks[0]
    assert (verdict.errno.value, verdict.step.value, verdict.confidence) == ("EINVAL", "state", "certain")


def test_describe_counts_every_online_page_and_reproduces_page_types():
    machine = load_snapshot(fixture_tree("host-6.18-24g"))
    report = describe(machine)
    online = int(machine.blocks.online.sum())
    assert sum(c.pages for c in report.classes) == online * PPB
    assert report.pfns == 6553600
    with open(os.path.join(fixture_tree("host-6.18-24g"), "page-types-summary.txt")) as handle:
        assert report.page_types == handle.read()
    assert sum(g.blocks for g in report.block_groups) == 192
    normal = next(z for z in report.zones if z.zone == "Normal")
    assert normal.unflagged > normal.pcp
    assert any("not managed by the page allocator" in s for s in report.blind_spots)


def test_save_round_trip(tmp_path):
    machine = load_snapshot(fixture_tree("qemu-6.1-post1"))
    dest = str(tmp_path / "saved")
    first = describe(machine, save_to=dest)
    assert first.saved_to == dest
    for rel in ("proc/kpageflags.xz", "proc/kpagecount.xz", "proc/iomem", "proc/zoneinfo", "proc/osrelease",
                "sys/devices/system/memory/block_size_bytes", "sys/devices/system/memory/memory39/valid_zones",
                "module-params.txt"):
        assert os.path.exists(os.path.join(dest, rel)), rel
    again = describe(load_snapshot(dest))
    assert again.page_types == first.page_types and again.classes == first.classes
    assert again.devices == first.devices and again.semantics_reason == first.semantics_reason
    with pytest.raises(UsageError, match="not an empty directory"):
        describe(machine, save_to=dest)


def test_memmap_on_memory_blocks_keep_their_vmemmap_out(tmp_path):
    flags = np.full(3 * PPB, bit(KPF.BUDDY), dtype=np.uint64)
    flags[2 * PPB:2 * PPB + 512] = bit(KPF.OWNER_PRIVATE)  # SetPageVmemmapSelfHosted()
    root = build_sysroot(str(tmp_path / "t"), {1: ("online", "Normal"), 2: ("online", "Movable")}, flags,
                         "08000000-17ffffff : System RAM\n")
    without = simulate(load_snapshot(root), blocks=[2]).blocks[0]
    assert without.result.value == "hangs"  # read as in-use kernel pages in ZONE_MOVABLE
    with open(os.path.join(root, "module-params.txt"), "w") as handle:
        handle.write("/sys/module/memory_hotplug/parameters/memmap_on_memory=Y\n")
    machine = load_snapshot(root)
    assert machine.blocks.vmemmap.tolist() == [0, 512]
    verdict = simulate(machine, blocks=[2]).blocks[0]
    assert (verdict.result.value, verdict.pages.vmemmap) == ("offlined", 512)
