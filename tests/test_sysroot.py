"""Reading a sysroot's text files: memory blocks, /proc/iomem, /proc/zoneinfo, hugepages, params."""

import os

import pytest

from memplan.core.errors import InputError
from memplan.core.model import BlockState, Zone
from memplan.snapshot.sysroot import (
    Tree,
    ram_ranges,
    read_hugepages,
    read_iomem,
    read_memory,
    read_params,
    read_release,
    read_zoneinfo,
)


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


@pytest.fixture
def tree(tmp_path):
    root = str(tmp_path)
    write(root, "sys/devices/system/memory/block_size_bytes", "8000000\n")
    write(root, "sys/devices/system/memory/memory5/state", "online\n")
    write(root, "sys/devices/system/memory/memory5/valid_zones", "DMA32\n")
    write(root, "sys/devices/system/memory/memory5/phys_index", "00000005\n")
    write(root, "sys/devices/system/memory/memory40/state", "offline\n")
    write(root, "sys/devices/system/memory/memory40/valid_zones", "Normal Movable\n")
    os.makedirs(os.path.join(root, "sys/devices/system/node/node1"))
    os.symlink("../../memory/memory40", os.path.join(root, "sys/devices/system/node/node1/memory40"))
    os.symlink("../../node/node0", os.path.join(root, "sys/devices/system/memory/memory5/node0"))
    return Tree(root)


def test_memory_blocks_without_memory0(tree):
    layout = read_memory(tree)
    assert layout.block_size == 128 << 20
    assert [(b.id, b.state, b.zone, b.node) for b in layout.blocks] == [
        (5, BlockState.ONLINE, Zone.DMA32, 0), (40, BlockState.OFFLINE, Zone.NORMAL, 1)]
    assert layout.blocks[1].valid_zones == ("Normal", "Movable")
    assert "sys/devices/system/memory/memory5/node0" in tree.links


@pytest.mark.parametrize("rel,text,needle", [
    ("sys/devices/system/memory/block_size_bytes", "zz\n", "hexadecimal block size"),
    ("sys/devices/system/memory/block_size_bytes", "c000000\n", "power of two"),
    ("sys/devices/system/memory/memory5/state", "onlin\n", "online, offline or going-offline"),
    ("sys/devices/system/memory/memory5/valid_zones", "none Normal\n", "one zone"),
    ("sys/devices/system/memory/memory5/valid_zones", "Normal Movable " * 3 + "\n", "one zone"),
    ("sys/devices/system/memory/memory5/valid_zones", "Highmem\n", "one zone"),
    ("sys/devices/system/memory/memory5/phys_index", "00000007\n", "the block's own index"),
])
def test_bad_memory_files_name_file_and_value(tree, rel, text, needle):
    write(tree.root, rel, text)
    with pytest.raises(InputError, match=needle) as info:
        read_memory(tree)
    assert rel in str(info.value)


def test_an_online_block_listing_two_zones_is_in_the_first(tree):
    """Kernels before 4.13 (util-linux's s390 dumps): an online block's own zone, then the zone
    it could move to; lsmem prints them "Normal/Movable"."""
    write(tree.root, "sys/devices/system/memory/memory5/valid_zones", "Normal Movable\n")
    block = read_memory(tree).blocks[0]
    assert (block.state, block.zone, block.valid_zones) == (BlockState.ONLINE, Zone.NORMAL, ("Normal", "Movable"))


def test_missing_iomem_is_no_iomem(tmp_path):
    assert read_iomem(Tree(str(tmp_path))) is None


def test_missing_state_is_an_error(tree):
    os.unlink(os.path.join(tree.root, "sys/devices/system/memory/memory40/state"))
    with pytest.raises(InputError, match="memory40/state: missing"):
        read_memory(tree)


IOMEM = """00000000-00000fff : Reserved
00001000-0009fbff : System RAM
00100000-3ffdcfff : System RAM
  28200000-29001d31 : Kernel code
100000000-1ffffffff : virtio0
  100000000-117ffffff : System RAM (virtio_mem)
  120000000-127ffffff : System RAM (virtio_mem)
"""


def test_iomem_tree_and_ram_ranges(tmp_path):
    write(str(tmp_path), "proc/iomem", IOMEM)
    resources = read_iomem(Tree(str(tmp_path)))
    virtio = [r for r in resources if r.name == "System RAM (virtio_mem)"]
    assert [resources[r.parent].name for r in virtio] == ["virtio0", "virtio0"]
    # walk_system_ram_range(): PFN_UP(start), PFN_DOWN(end + 1)
    assert ram_ranges(resources, 12)[:2] == [(0x1, 0x9f, "System RAM"), (0x100, 0x3ffdd, "System RAM")]


@pytest.mark.parametrize("text,needle", [
    ("00000000-00000fff Reserved\n", "not 'start-end : name'"),
    ("00001000-00000fff : System RAM\n", "not a valid resource"),
    ("00000000-00000000 : System RAM\n00000000-00000000 : Reserved\n", "without root"),
    ("00000000-00000fff : Reserved\n", "no System RAM"),
])
def test_bad_iomem(tmp_path, text, needle):
    write(str(tmp_path), "proc/iomem", text)
    with pytest.raises(InputError, match=needle):
        read_iomem(Tree(str(tmp_path)))


def test_zoneinfo_counts_per_cpu_free_pages():
    tree = Tree(os.path.join(os.path.dirname(__file__), "fixtures", "qemu-6.1-pre"))
    zones = {(z.node, z.zone): z for z in read_zoneinfo(tree)}
    movable = zones[(0, "Movable")]
    assert (movable.start_pfn, movable.spanned, movable.present, movable.cma) == (1048576, 524288, 524288, 0)
    assert movable.pcp == 76 + 286 and movable.free == 309786


def test_hugepages_params_release(tmp_path):
    root = str(tmp_path)
    for key, value in (("nr", 4), ("free", 3), ("resv", 1), ("surplus", 0)):
        write(root, f"sys/kernel/mm/hugepages/hugepages-2048kB/{key}_hugepages", f"{value}\n")
    write(root, "sys/module/virtio_mem/parameters/force_bbm", "N\n")
    write(root, "module-params.txt", "auto_online_blocks=online_movable\n"
                                     "/sys/module/virtio_mem/parameters/unplug_online=Y\n")
    write(root, "proc/osrelease", "6.1.0-56-amd64\n")
    tree = Tree(root)
    pools = read_hugepages(tree, 12)
    assert pools[9].free == 3 and pools[9].resv == 1
    assert read_params(tree) == {"virtio_mem.force_bbm": "N", "virtio_mem.unplug_online": "Y",
                                 "memory.auto_online_blocks": "online_movable"}
    assert read_release(tree) == "6.1.0-56-amd64"
    write(root, "proc/osrelease", "\x01garbage\n")
    tree = Tree(root)
    with pytest.raises(InputError, match="kernel release"):
        read_release(tree)
