"""Profile format 1: what loads, and one clear error (file, key, value) for what does not."""

import os
import textwrap

import pytest

from conftest import bundled, machine_from
from memplan.core.errors import ProfileError
from memplan.core.model import BlockState, Zone
from memplan.profile.reader import load_profile

OK_RAM = '[[ram]]\nstart = "0"\nsize = "1GiB"\nzone = "Normal"\n'


def load_text(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(textwrap.dedent(text))
    return load_profile(str(path))


@pytest.mark.parametrize("text,needle", [
    ("", "format: is required"),
    ("format = 3\n" + OK_RAM, "format: 3 is not supported"),
    ("format = 1\n", "describes no memory"),
    ("format = 1\nbogus = 1\n" + OK_RAM, "bogus: unknown key"),
    ("format = 1\n[machine]\nnmae = 'x'\n" + OK_RAM, "machine.nmae: unknown key (did you mean 'name'?)"),
    ("format = 1\n[machine]\nmemory_block_size = '96MiB'\n" + OK_RAM, "memory_block_size"),
    ("format = 1\n[[ram]]\nstart = 0\nsize = '1GiB'\nzone = 'Norml'\n", "ram[0].zone: 'Norml' is not a zone"),
    ("format = 1\n[[ram]]\nstart = '1M'\nsize = '1GiB'\nzone = 'Normal'\n", "ram[0].start: 0x100000 is not aligned"),
    ("format = 1\n[[ram]]\nstart = 0\nsize = 'lots'\nzone = 'Normal'\n", "ram[0].size: 'lots' is not a size"),
    ("format = 1\n" + OK_RAM + OK_RAM, "ram[1]: overlaps ram[0]"),
    ("format = 1\n" + OK_RAM + "[[pages]]\npfn = 16\nkind = 'slabb'\n",
     "pages[0].kind: 'slabb' is not a page kind (did you mean 'slab'?)"),
    ("format = 1\n" + OK_RAM + "[[pages]]\npfn = 16\nkind = 'slab'\n[[pages]]\npfn = 16\nkind = 'anon'\n",
     "pages[1]: overlaps pages[0]"),
    ("format = 1\n" + OK_RAM + "[[pages]]\npfn = 7\nkind = 'thp'\ncount = 512\n", "whole 2 MiB folios"),
    ("format = 1\n" + OK_RAM + "[[pages]]\npfn = '0x900000'\nkind = 'slab'\n", "not inside an existing memory block"),
    ("format = 1\n" + OK_RAM + "[[pages]]\npfn = 16\nkind = 'fake_offline'\n", "fake_offline pages exist only"),
    ("format = 1\n" + OK_RAM + "[[fill]]\nblocks = '0-3'\nanon = 0.7\nfile = 0.5\n", "fractions add up to 1.2, over 1"),
    ("format = 1\n" + OK_RAM + "[[fill]]\nblocks = '0-3'\nanon = 1.5\n", "fill[0].anon: 1.5 is not a fraction"),
    ("format = 1\n" + OK_RAM + "[[fill]]\nblocks = '0-3'\nanno = 0.1\n",
     "fill[0].anno: unknown key (did you mean 'anon'?)"),
    ("format = 1\n" + OK_RAM + "[[fill]]\nblocks = '0-3'\ngigantic = 0.1\n", "place it with [[pages]]"),
    ("format = 1\n" + OK_RAM + "[[fill]]\nblocks = '0-99'\n", "memory block 8 does not exist"),
    ("format = 1\n" + OK_RAM + "[[fill]]\nblocks = '0-1'\n[[fill]]\nblocks = '1'\n",
     "block 1 is already filled by fill[0]"),
    ("format = 1\n" + OK_RAM + "[[fill]]\nblocks = '1-x'\n", "fill[0].blocks"),
    ("format = 1\n" + OK_RAM + "[environment]\nnotifier_veto = 'EBUSSY'\n", "(did you mean 'EBUSY'?)"),
    ("format = 1\n" + OK_RAM + "[environment]\nisolated = ['0x1000-0x1fff']\n", "not aligned to 2 MiB pageblocks"),
    ("format = 1\n" + OK_RAM + "[[virtio_mem]]\nid = 'v'\naddr = '512MiB'\nregion_size = '1GiB'\n",
     "virtio_mem[0]: overlaps ram[0]"),
    ("format = 1\n[[virtio_mem]]\nid = 'v'\naddr = '4GiB'\nregion_size = '1GiB'\nplugged = ['0-2']\nblock_size = "
    "'1MiB'\n",
     "virtio_mem[0].plugged: unit 1 is partly plugged"),
    ("format = 1\n[[virtio_mem]]\nid = 'v'\naddr = '4GiB'\nregion_size = '1GiB'\nonline = 'maybe'\n",
     "virtio_mem[0].online: 'maybe' is not one of"),
    ("format = 1\n[[ram]]\nstart = 0\nsize = '128MiB'\nzone = 'Normal'\nholes = [{start = '0x100', size = '0x1000'}]\n",
     "whole number of pages"),
    ("format = 1\n[[ram]]\nstart = 0\nsize = '64MiB'\nzone = 'Normal'\n[[ram]]\nstart = '64MiB'\nsize = '64MiB'\nzone "
    "= 'Normal'\nstate = 'offline'\n",
     "partly online and partly offline"),
    ("format = 1 [", "invalid TOML"),
])
def test_errors_name_file_key_and_value(tmp_path, text, needle):
    with pytest.raises(ProfileError) as info:
        load_text(tmp_path, text)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "bad.toml"))
    assert needle in message
    assert "\n" not in message


F = "format = 1\n"
VMEM = "[[virtio_mem]]\nid = 'v'\naddr = '4GiB'\nregion_size = '1GiB'\n"


#: Every check of the reader, with its message word for word (after "<file>: ").
@pytest.mark.parametrize("text,message", [
    (F + 'machine = 3\n' + OK_RAM,
     'machine: must be a table, not int'),
    (F + 'ram = 3\n',
     'ram: must be an array of tables ([[ram]])'),
    (F + "[[ram]]\nsize = '1GiB'\nzone = 'Normal'\n",
     'ram[0].start: is required'),
    (F + "[[ram]]\nstart = 0\nzone = 'Normal'\n",
     'ram[0].size: is required'),
    (F + "[[ram]]\nstart = 0\nsize = '1GiB'\n",
     'ram[0].zone: is required'),
    (F + "[[ram]]\nstart = 0\nsize = '1GiB'\nzone = 'Normal'\nnode = -1\n",
     'ram[0].node: -1 is below 0'),
    (F + "[[ram]]\nstart = 0\nsize = '1GiB'\nzone = 'Normal'\nnode = 'a'\n",
     "ram[0].node: 'a' is not an integer"),
    (F + "[[ram]]\nstart = 0\nsize = '1GiB'\nzone = 'Normal'\nnode = true\n",
     'ram[0].node: True is not an integer'),
    (F + "[[ram]]\nstart = 0\nsize = '1GiB'\nzone = 'Normal'\nstate = 'gone'\n",
     "ram[0].state: 'gone' is not one of online, offline (did you mean 'online'?)"),
    (F + "[[ram]]\nstart = 0\nsize = 0\nzone = 'Normal'\n",
     'ram[0].size: must not be 0'),
    (F + "[[ram]]\nstart = 0\nsize = '1GiB'\nzone = 'Normal'\nholes = 3\n",
     'ram[0].holes: must be an array of { start, size } tables'),
    (F + "[[ram]]\nstart = 0\nsize = '1GiB'\nzone = 'Normal'\nholes = [3]\n",
     'ram[0].holes[0]: must be a table, not int'),
    (F + "[[ram]]\nstart = 0\nsize = '1GiB'\nzone = 'Normal'\nholes = [{start = 0, sise = 1}]\n",
     "ram[0].holes[0].sise: unknown key (did you mean 'size'?)"),
    (F + "[[ram]]\nstart = 0\nsize = '1GiB'\nzone = 'Normal'\nholes = [{start = '2GiB', size = '4KiB'}]\n",
     'ram[0].holes[0].start: 0x80000000-0x80000fff is outside the range'),
    (F + "[[ram]]\nstart = 0\nsize = '1GiB'\nzone = 'Normal'\nholes = [{start = '1MiB', size = '8KiB'}, {start = "
    "'0x101000', size = '4KiB'}]\n",
     'ram[0].holes[1]: overlaps ram[0].holes[0]'),
    (F + "[[ram]]\nstart = 0\nsize = '1GiB'\nzone = 'Normal'\ncma = 3\n",
     'ram[0].cma: must be an array of inclusive ranges like "0x20000000-0x21ffffff"'),
    (F + "[[ram]]\nstart = 0\nsize = '1GiB'\nzone = 'Normal'\ncma = ['x']\n",
     "ram[0].cma[0]: 'x' is not a range like 0x20000000-0x21ffffff"),
    (F + "[[ram]]\nstart = 0\nsize = '1GiB'\nzone = 'Normal'\ncma = ['0x1000-0x1fffff']\n",
     "ram[0].cma[0]: '0x1000-0x1fffff' is not aligned to 2 MiB pageblocks"),
    (F + "[[ram]]\nstart = 0\nsize = '1GiB'\nzone = 'Normal'\ncma = ['0x40000000-0x401fffff']\n",
     "ram[0].cma[0]: '0x40000000-0x401fffff' is outside the range (0x0-0x3fffffff)"),
    (F + "[[ram]]\nstart = '2MiB'\nsize = '126MiB'\nzone = 'Normal'\nmemmap_on_memory = true\n",
     'ram[0].memmap_on_memory: needs a range aligned to whole memory blocks (hot-added memory)'),
    (F + "[[ram]]\nstart = 0\nsize = '128MiB'\nzone = 'Normal'\nmemmap_on_memory = true\nholes = [{start = '1MiB', "
    "size = '4KiB'}]\n",
     'ram[0].memmap_on_memory: hot-added memory has no holes'),
    (F + "[[ram]]\nstart = 0\nsize = '128MiB'\nzone = 'Normal'\nmemmap_on_memory = 1\n",
     'ram[0].memmap_on_memory: 1 is not true or false'),
    (F + '[machine]\nname = 3\n' + OK_RAM,
     'machine.name: 3 is not a string'),
    (F + "[machine]\nsemantics = 'refcnt'\n" + OK_RAM,
     "machine.semantics: 'refcnt' is not one of refcount, skippable (did you mean 'refcount'?)"),
    (F + '[machine]\nkernel = 6\n' + OK_RAM,
     'machine.kernel: 6 is not a string'),
    (F + '[machine]\ndescription = 6\n' + OK_RAM,
     'machine.description: 6 is not a string'),
    (F + '[machine]\nnodes = 0\n' + OK_RAM,
     'machine.nodes: 0 is below 1'),
    (F + '[machine]\nnodes = 1\n' + OK_RAM + "[[ram]]\nstart = '1GiB'\nsize = '1GiB'\nzone = 'Normal'\nnode = 1\n",
     'machine.nodes: 1 is too small: node 1 is used'),
    (F + "[machine]\nmemory_block_size = 'big'\n" + OK_RAM,
     "machine.memory_block_size: 'big' is not a size (no number; examples: 4096, 0x1000, 128MiB, 2M, 1.5G, 4GiB; "
     "KB, MB, GB are powers of 1000)"),
    (F + "[machine]\nmemory_block_size = '64MiB'\n" + OK_RAM,
     'machine.memory_block_size: memory block size 0x4000000 is smaller than the section size 0x8000000'),
    (F + "[[virtio_mem]]\naddr = '4GiB'\nregion_size = '1GiB'\n",
     'virtio_mem[0].id: is required'),
    (F + VMEM + VMEM,
     "virtio_mem[1].id: 'v' is used twice"),
    (F + VMEM + "plugged = '0-3'\n",
     'virtio_mem[0].plugged: must be a list of device-block ranges like ["0-1535"]'),
    (F + VMEM + "plugged = ['0-x']\n",
     "virtio_mem[0].plugged[0]: '0-x' is not a block range (examples: 7, 32-63, 1,4,8-9)"),
    (F + VMEM + "fake_offline_big_blocks = 'x'\n",
     "virtio_mem[0].fake_offline_big_blocks: 'x' is not a block range (examples: 7, 32-63, 1,4,8-9)"),
    (F + VMEM + "offline_blocks = 'x'\n",
     "virtio_mem[0].offline_blocks: 'x' is not a block range (examples: 7, 32-63, 1,4,8-9)"),
    (F + "[[virtio_mem]]\nid = 'v'\nregion_size = '1GiB'\n",
     'virtio_mem[0].addr: is required'),
    (F + "[[virtio_mem]]\nid = 'v'\naddr = '4GiB'\n",
     'virtio_mem[0].region_size: is required'),
    (F + VMEM + "mode = 'xbm'\n",
     "virtio_mem[0].mode: 'xbm' is not one of auto, sbm, bbm (did you mean 'sbm'?)"),
    (F + VMEM + "driver = 'gone'\n",
     "virtio_mem[0].driver: 'gone' is not one of loaded, removing, unloaded"),
    (F + VMEM + "unplug_online = 'yes'\n",
     "virtio_mem[0].unplug_online: 'yes' is not true or false"),
    (F + VMEM + "block_size = '3MiB'\n",
     'virtio_mem[0].block_size: 0x300000 is not a power of two'),
    (F + VMEM + "plugged = ['0-3']\noffline_blocks = '40'\n",
     "virtio_mem[0].offline_blocks: memory block 40 is outside the device's region (memory blocks 32-39)"),
    (F + VMEM + "plugged = ['0-3']\noffline_blocks = '33'\n",
     "virtio_mem[0].offline_blocks: memory block 33 is not an added memory block of this device "
     "(blocks with plugged memory: 32)"),
    (F + VMEM + "plugged = ['0-3']\nfake_offline_big_blocks = '0'\n",
     'virtio_mem[0].fake_offline_big_blocks: only applies to Big Block Mode'),
    (F + VMEM + "plugged_size = '1GiB'\nplugged = ['0']\n",
     'virtio_mem[0].plugged: give either plugged or plugged_size, not both'),
    (F + OK_RAM + "[[pages]]\nkind = 'slab'\n",
     'pages[0].pfn: is required'),
    (F + OK_RAM + '[[pages]]\npfn = 16\n',
     'pages[0].kind: None is not a page kind'),
    (F + OK_RAM + "[[pages]]\npfn = 16\nkind = 'slab'\ncount = 0\n",
     'pages[0].count: 0 is below 1'),
    (F + OK_RAM + "[[pages]]\npfn = 16\nkind = 'slab'\nrefcount = -1\n",
     'pages[0].refcount: -1 is below 0'),
    (F + OK_RAM + "[[pages]]\npfn = 16\nkind = 'hole'\n",
     "pages[0].kind: 'hole' is not a page kind"),
    (F + "[[ram]]\nstart = 0\nsize = '128MiB'\nzone = 'Normal'\n[[ram]]\nstart = '256MiB'\nsize = '128MiB'\nzone = "
    "'Normal'\n[[pages]]\npfn = '0x7fff'\ncount = 2\nkind = 'slab'\n",
     'pages[0].pfn: 0x7fff+2 is not inside an existing memory block (block 1)'),
    (F + "[[ram]]\nstart = 0\nsize = '128MiB'\nzone = 'Normal'\n[[ram]]\nstart = '256MiB'\nsize = '128MiB'\nzone = "
    "'Normal'\n[[pages]]\npfn = '0x7fff'\ncount = 32770\nkind = 'slab'\n",
     'pages[0].pfn: 0x7fff+32770 crosses block 1, which does not exist'),
    (F + "[[ram]]\nstart = 0\nsize = '128MiB'\nzone = 'Normal'\nstate = 'offline'\n"
     "[[pages]]\npfn = 16\nkind = 'slab'\n",
     'pages[0].pfn: memory block 0 is offline; its memmap is stale'),
    (F + OK_RAM + "[[pages]]\npfn = 0\nkind = 'gigantic'\ncount = 512\n",
     'pages[0].pfn: gigantic occupies whole 1024 MiB folios: pfn and count must be multiples of 262144'),
    (F + "[[ram]]\nstart = 0\nsize = '128MiB'\nzone = 'Normal'\nholes = [{start = '1MiB', size = '4KiB'}]\n[[pages]]\n"
    "pfn = '0x100'\ncount = 1\nkind = 'slab'\n",
     'pages[0].pfn: 0x100+1 overlaps a memory hole at pfn 0x100'),
    (F + VMEM + "plugged = ['0-3']\n[[pages]]\npfn = '0x100000'\nkind = 'fake_offline'\ncount=1024\n",
     "pages[0].kind: fake_offline pages exist only in unplugged virtio-mem sub-blocks (or fake-offline big blocks) of "
     "online blocks; use 'balloon' for other unmovable PageOffline pages"),
    (F + OK_RAM + "[[pages]]\npfn = 16\nkind = 'vmemmap'\n",
     'pages[0].pfn: vmemmap pages sit at the start of a memory block (memmap_on_memory)'),
    (F + OK_RAM + "[[pages]]\npfn = 0\ncount = 40000\nkind = 'vmemmap'\n",
     'pages[0].count: vmemmap pages stay inside one memory block'),
    (F + "[[ram]]\nstart = 0\nsize = '128MiB'\nzone = 'Normal'\nmemmap_on_memory = true\n[[pages]]\npfn = 0\ncount = "
    "4\nkind = 'vmemmap'\n",
     'pages[0].kind: this block already has memmap_on_memory pages from its [[ram]] range'),
    (F + OK_RAM + "[[pages]]\npfn = 'x'\nkind = 'slab'\n",
     "pages[0].pfn: 'x' is not a size (no number; examples: 4096, 0x1000, 128MiB, 2M, 1.5G, 4GiB; KB, MB, GB are "
     "powers of 1000)"),
    (F + OK_RAM + 'pages = 3\n',
     'ram[0].pages: unknown key'),
    (F + OK_RAM + '[[fill]]\nanon = 0.1\n',
     'fill[0].blocks: is required ("all", a block range like "32-63", or a virtio_mem id)'),
    (F + OK_RAM + "[[fill]]\nblocks = 'vmem1'\n",
     "fill[0].blocks: 'vmem1' is not a block range (examples: 7, 32-63, 1,4,8-9)"),
    (F + OK_RAM + VMEM + "[[fill]]\nblocks = 'vmem'\n",
     "fill[0].blocks: 'vmem' is not a block range (examples: 7, 32-63, 1,4,8-9)"),
    (F + OK_RAM + "[[fill]]\nblocks = 'all'\nanon = true\n",
     'fill[0].anon: True is not a fraction between 0 and 1'),
    (F + OK_RAM + "[[fill]]\nblocks = 'all'\nanon = '0.1'\n",
     "fill[0].anon: '0.1' is not a fraction between 0 and 1"),
    (F + OK_RAM + "[[fill]]\nblocks = 'all'\nseed = -4\n",
     'fill[0].seed: -4 is below 0'),
    (F + OK_RAM + "[[fill]]\nblocks = 'all'\nfake_offline = 0.1\n",
     'fill[0].fake_offline: fake_offline cannot be drawn by a fill; place it with [[pages]]'),
    (F + OK_RAM + "[[fill]]\nblocks = 'all'\nvmemmap = 0.1\n",
     'fill[0].vmemmap: vmemmap cannot be drawn by a fill; place it with [[pages]]'),
    (F + OK_RAM + "[[fill]]\nblocks = 'all'\n[[fill]]\nblocks = '3'\n",
     'fill[1].blocks: memory block 3 is already filled by fill[0]'),
    (F + OK_RAM + VMEM + "plugged=['0-63']\n[[fill]]\nblocks = 'v'\n[[fill]]\nblocks = '32'\n",
     'fill[1].blocks: memory block 32 is already filled by fill[0]'),
    (F + OK_RAM + 'environment = 3\n',
     'ram[0].environment: unknown key'),
    (F + OK_RAM + "[environment]\nsignal_pending = 'yes'\n",
     "environment.signal_pending: 'yes' is not true or false"),
    (F + OK_RAM + "[environment]\nnode_notifier_veto = 'EBUSSY'\n",
     "environment.node_notifier_veto: 'EBUSSY' is not an errno name (EPERM, EINTR, EAGAIN, ENOMEM, EBUSY, EINVAL, "
     "ENOSPC, ETXTBSY, EHWPOISON) (did you mean 'EBUSY'?)"),
    (F + OK_RAM + "[environment]\nforeign_ref_dropped = 'later'\n",
     "environment.foreign_ref_dropped: 'later' is not one of never, during-offline, after-offline, "
     "after-online"),
    (F + OK_RAM + '[environment]\nhugetlb_2m = 3\n',
     'environment.hugetlb_2m: must be a table, not int'),
    (F + OK_RAM + '[environment]\nhugetlb_2m = { free = -1 }\n',
     'environment.hugetlb_2m.free: -1 is below 0'),
    (F + OK_RAM + '[environment]\nhugetlb_1g = { fre = 1 }\n',
     "environment.hugetlb_1g.fre: unknown key (did you mean 'free'?)"),
    (F + OK_RAM + "[environment]\nhugetlb_1g = { resv = 'a' }\n",
     "environment.hugetlb_1g.resv: 'a' is not an integer"),
    (F + OK_RAM + '[environment]\nisolated = 3\n',
     'environment.isolated: must be an array of inclusive ranges like "0x20000000-0x21ffffff"'),
    (F + OK_RAM + "[environment]\nisolated = ['junk']\n",
     "environment.isolated[0]: 'junk' is not a range like 0x20000000-0x21ffffff"),
    (F + OK_RAM + '[environment]\nhugetlb_4m = {}\n',
     "environment.hugetlb_4m: unknown key (did you mean 'hugetlb_2m'?)"),
    (F + OK_RAM + '[environment]\nisolatd = []\n',
     "environment.isolatd: unknown key (did you mean 'isolated'?)"),
    (F + OK_RAM + '[pages]\npfn = 1\n',
     'pages: must be an array of tables ([[pages]])'),
    ("format = '1'\n" + OK_RAM,
     "format: '1' is not supported (this memplan reads formats 1 and 2)"),
])
def test_error_messages_word_for_word(tmp_path, text, message):
    with pytest.raises(ProfileError) as info:
        load_text(tmp_path, text)
    assert str(info.value) == f"{tmp_path / 'bad.toml'}: {message}"


def test_missing_file():
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile("/nonexistent/profile.toml")


def test_blocks_zones_and_holes():
    m = machine_from("""
[[ram]]
start = "1GiB"
size = "64MiB"
zone = "DMA32"
[[ram]]
start = "0x44000000"
size = "64MiB"
zone = "Normal"
[[ram]]
start = "2GiB"
size = "100MiB"
zone = "Movable"
state = "offline"
""")
    t = m.blocks
    assert list(t.ids) == list(range(0, 9)) + [16]
    assert t.zone_of(int(t.rows([8])[0])) is None  # two zones: valid_zones "none"
    row16 = int(t.rows([16])[0])
    assert t.state_of(row16) is BlockState.OFFLINE and t.ram_pages[row16] == 25600
    assert t.zone_of(int(t.rows([3])[0])) is Zone.NORMAL


def test_virtio_mem_fill_by_device_id_and_modes():
    m = machine_from("""
[[virtio_mem]]
id = "vmem0"
addr = "4GiB"
region_size = "1GiB"
plugged_size = "256MiB"
online = "kernel"
[[fill]]
blocks = "vmem0"
anon = 0.5
""")
    assert m.devices[0].mode.value == "sbm"
    rows = m.blocks.rows([32, 33])
    assert list(m.blocks.zone[rows]) == [Zone.NORMAL.code] * 2


@pytest.mark.parametrize("name,blocks", [("boot-vm.toml", 64), ("sbm-guest.toml", 41), ("bbm-guest.toml", 80),
                                         ("hugetlb-cma-host.toml", 128)])
def test_bundled_profiles_load(name, blocks):
    m = load_profile(bundled(name))
    assert len(m.blocks) == blocks


def test_virtio_mem_offline_blocks():
    m = machine_from("""
[[virtio_mem]]
id = "vmem0"
addr = "4GiB"
region_size = "512MiB"
block_size = "2MiB"
plugged = ["0-100"]
online = "movable"
offline_blocks = "33"
""")
    t = m.blocks
    assert [t.state_of(int(r)).value for r in t.rows([32, 33])] == ["online", "offline"]
    from memplan.kernel.virtio_mem import block_states, fake_offline_ranges
    assert block_states(m.devices[0], m.geometry) == {32: "MOVABLE", 33: "OFFLINE_PARTIAL"}
    assert fake_offline_ranges(m.devices[0], m.geometry) == []  # block 33's unplugged part has no memmap
    with pytest.raises(ProfileError, match=r"virtio_mem\[0\]\.offline_blocks: memory block 34 is not an added"):
        machine_from("""
[[virtio_mem]]
id = "vmem0"
addr = "4GiB"
region_size = "512MiB"
plugged = ["0-100"]
offline_blocks = "34"
""")


# ---- the block table is built with numpy: compare it with a per-block construction ----------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from memplan.kernel import virtio_mem  # noqa: E402
from memplan.profile.reader import build_machine  # noqa: E402

PAGE, PB, BLOCK_BYTES = 4096, 2 << 20, 128 << 20


@st.composite
def layouts(draw):
    """Random [[ram]] ranges (pageblock aligned, some spanning blocks, holes, mixed zones,
    nodes and states, memmap_on_memory) and one SBM virtio-mem device above them."""
    rams, cursor = [], 0
    for _ in range(draw(st.integers(1, 5))):
        cursor += draw(st.integers(0, 80)) * PB
        size = draw(st.integers(1, 130)) * PB
        hotplugged = draw(st.integers(0, 4)) == 0
        if hotplugged:  # a hot-added DIMM: whole blocks that host their own memmap
            cursor = -(-cursor // BLOCK_BYTES) * BLOCK_BYTES
            size = draw(st.integers(1, 2)) * BLOCK_BYTES
        ram = {"start": cursor, "size": size, "zone": draw(st.sampled_from(["DMA32", "Normal", "Movable"])),
               "node": draw(st.integers(0, 2)), "state": draw(st.sampled_from(["online", "online", "offline"]))}
        if hotplugged:
            ram["memmap_on_memory"] = True
        elif draw(st.integers(0, 3)) == 0:
            offset = draw(st.integers(0, size // PAGE - 1))
            ram["holes"] = [{"start": cursor + offset * PAGE,
                             "size": min(draw(st.integers(1, 40000)), size // PAGE - offset) * PAGE}]
        rams.append(ram)
        cursor += size
    plugged = draw(st.lists(st.booleans(), min_size=128, max_size=128))
    plugged[0] = True
    addr = (cursor // BLOCK_BYTES + 1) * BLOCK_BYTES
    device = {"id": "vmem0", "addr": addr, "region_size": "256MiB", "block_size": "2MiB",
              "plugged": [str(i) for i, p in enumerate(plugged) if p], "node": draw(st.integers(0, 2)),
              "online": draw(st.sampled_from(["movable", "kernel", "offline"]))}
    return {"format": 1, "ram": rams, "virtio_mem": [device]}


def reference_blocks(doc):
    """One Python dict entry per memory block, the obvious way (None: partly online/offline)."""
    ppb = BLOCK_BYTES // PAGE
    pages, zones, nodes, states, memmap = {}, {}, {}, {}, {}
    for ram in doc["ram"]:
        lo, hi = ram["start"] // PAGE, (ram["start"] + ram["size"]) // PAGE
        covered = [(lo, hi, 1)] + [(h["start"] // PAGE, (h["start"] + h["size"]) // PAGE, -1)
                                   for h in ram.get("holes", [])]
        for a, b, sign in covered:
            for block in range(a // ppb, (b - 1) // ppb + 1):
                pages[block] = pages.get(block, 0) + sign * (min(b, (block + 1) * ppb) - max(a, block * ppb))
        for block in range(lo // ppb, (hi - 1) // ppb + 1):
            zones.setdefault(block, set()).add(Zone(ram["zone"]).code)
            nodes.setdefault(block, set()).add(ram["node"])
            states.setdefault(block, set()).add(ram["state"])
            if ram.get("memmap_on_memory"):
                memmap[block] = ppb * 64 // PAGE
    machine_geo = build_machine({"format": 1, "ram": [{"start": 0, "size": "128MiB", "zone": "Normal"}]}).geometry
    dev = doc["virtio_mem"][0]
    device, _ = virtio_mem.configure(machine_geo, id="vmem0", addr=dev["addr"], region_size=256 << 20,
                                     device_block_size=2 << 20, plugged_blocks=[int(i) for i in dev["plugged"]],
                                     online=virtio_mem.OnlineType(dev["online"]), node=dev["node"])
    device_of = {}
    for added in virtio_mem.added_blocks(device, machine_geo):
        pages[added.block], zones[added.block], nodes[added.block] = ppb, {added.zone.code}, {dev["node"]}
        states[added.block] = {"online" if added.online else "offline"}
        device_of[added.block] = 0
    ids = sorted(b for b, n in pages.items() if n > 0)
    if any(len(states[b]) > 1 for b in ids):
        return None
    return {
        "ids": ids, "ram_pages": [pages[b] for b in ids],
        "state": [0 if "online" in states[b] else 1 for b in ids],
        "zone": [next(iter(zones[b])) if len(zones[b]) == 1 and len(nodes[b]) == 1 else -1 for b in ids],
        "node": [next(iter(nodes[b])) if len(nodes[b]) == 1 else -1 for b in ids],
        "vmemmap": [memmap.get(b, 0) for b in ids], "device": [device_of.get(b, -1) for b in ids],
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts())
def test_block_table_matches_a_per_block_construction(doc):
    expected = reference_blocks(doc)
    if expected is None:
        with pytest.raises(ProfileError, match="partly online and partly offline"):
            build_machine(doc, "<hypothesis>")
        return
    table = build_machine(doc, "<hypothesis>").blocks
    for column, values in expected.items():
        assert getattr(table, column).tolist() == values, column


def test_plugged_ranges_stay_ranges(tmp_path):
    # A range far outside the region is reported without building a map that large.
    text = """
        format = 1
        [[virtio_mem]]
        id = "vmem0"
        addr = "4GiB"
        region_size = "1GiB"
        plugged = ["0-511", "1000000000000-1000000000001"]
        """
    with pytest.raises(ProfileError, match="virtio_mem\\[0\\].plugged: device block 1000000000001 is outside"):
        load_text(tmp_path, text)
    m = load_text(tmp_path, text.replace(', "1000000000000-1000000000001"', ""))
    assert m.blocks.ids.tolist() == list(range(32, 40)) and m.devices[0].plugged_size == 1 << 30


# ---- what the sections mean -------------------------------------------------------------------

def test_semantics_default_to_mainline_without_spelling_it(tmp_path):
    from memplan.kernel.semantics import MAINLINE, get_semantics
    plain = load_text(tmp_path, F + OK_RAM)
    assert plain.default_semantics is None
    assert get_semantics(plain.default_semantics).name == MAINLINE
    chosen = load_text(tmp_path, F + "[machine]\nsemantics = 'skippable'\n" + OK_RAM)
    assert chosen.default_semantics == "skippable"


def test_fill_kinds_leave_out_fixed_kinds_and_gigantic_folios():
    from memplan.profile.reader import FILL_KINDS
    assert FILL_KINDS == (
        "free", "anon", "file", "thp", "movable", "balloon_movable", "hwpoison", "pinned", "slab", "pagetable",
        "kernel", "reserved", "hugetlb_free", "hugetlb", "hugetlb_unmigratable", "balloon",
        "offline_refcount_driver", "offline_orphan",
    )


def test_hugetlb_pools_are_keyed_by_the_geometry_orders(tmp_path):
    m = load_text(tmp_path, F + OK_RAM + "[environment]\nhugetlb_2m = { free = 3, resv = 1 }\n"
                  "hugetlb_1g = { resv = 0 }\n")
    pmd, pud = m.geometry.hugetlb_orders
    assert (pmd, pud) == (9, 18)  # format 1: x86-64 with 4 KiB pages
    pools = m.environment.hugetlb
    assert set(pools) == {pmd, pud}
    assert (pools[pmd].free, pools[pmd].resv) == (3, 1)
    assert (pools[pud].free, pools[pud].resv) == (None, 0)


def test_virtio_mem_block_size_defaults_to_a_pmd_folio(tmp_path):
    m = load_text(tmp_path, F + VMEM + "plugged = ['0-3']\n")
    device = m.devices[0]
    assert device.device_block_size == m.geometry.page_size << m.geometry.pmd_order == 2 << 20
    assert device.plugged_size == 8 << 20


# ---- validated at the edge against what a machine can have (issue 14) --------------------------

@pytest.mark.parametrize("text,message", [
    ("format = true\n" + OK_RAM, "format: True is not supported (this memplan reads formats 1 and 2)"),
    ("format = 1.0\n" + OK_RAM, "format: 1.0 is not supported (this memplan reads formats 1 and 2)"),
    (F + "[machine]\nkernel = 'garbage'\n" + OK_RAM,
     "machine.kernel: 'garbage' is not a kernel release (like \"6.18\" or \"6.1.0-56-amd64\", as uname -r prints it)"),
    (F + "[machine]\nkernel = '６.１'\n" + OK_RAM,
     "machine.kernel: '６.１' is not a kernel release (like \"6.18\" or \"6.1.0-56-amd64\", as uname -r prints it)"),
    (F + "[machine]\nmemory_block_size = '4GiB'\n" + OK_RAM,
     "machine.memory_block_size: '4GiB' is above 0x80000000 (x86-64's largest memory block, MAX_BLOCK_SIZE, is "
     "2 GiB)"),
    (F + "[machine]\nnodes = 1025\n" + OK_RAM, "machine.nodes: 1025 is above 1024 (MAX_NUMNODES is 1024)"),
    (F + "[[ram]]\nstart = 0\nsize = '1GiB'\nzone = 'Normal'\nnode = 1024\n",
     "ram[0].node: 1024 is above 1023 (MAX_NUMNODES is 1024)"),
    (F + f"[[ram]]\nstart = 0\nsize = {2**60}\nzone = 'Normal'\n",
     "ram[0].size: 1152921504606846976 is above 0x10000000000000 (x86-64's MAX_PHYSMEM_BITS is 52: physical "
     "addresses stay below 0x10000000000000 (4P))"),
    (F + "[[ram]]\nstart = '0xfffffffe00000'\nsize = '4MiB'\nzone = 'Normal'\n",
     "ram[0].size: 0xfffffffe00000+0x400000 ends past 0x10000000000000 (x86-64's MAX_PHYSMEM_BITS is 52: physical "
     "addresses stay below 0x10000000000000 (4P))"),
    (F + "[[ram]]\nstart = 0\nsize = '" + "9" * 400 + ".5G'\nzone = 'Normal'\n",
     "ram[0].size: '999999999999999999999999999...9999.5G' (403 characters) is out of range: sizes end at "
     "2^64 - 1 bytes (16E)"),
    (F + "[[ram]]\nstart = 0\nsize = '１GiB'\nzone = 'Normal'\n",
     "ram[0].size: '１GiB' is not a size (no number; examples: 4096, 0x1000, 128MiB, 2M, 1.5G, 4GiB; KB, MB, GB "
     "are powers of 1000)"),
    (F + OK_RAM + "[[pages]]\npfn = 16\nkind = 'slab'\nrefcount = 2147483648\n",
     "pages[0].refcount: 2147483648 is above 2147483647 (a page's _refcount is an atomic_t, a C int)"),
    (F + OK_RAM + f"[[pages]]\npfn = 0\ncount = {2**28 * 32768}\nkind = 'slab'\n",
     "pages[0].count: 8796093022208 is above 1099511627776 (x86-64's MAX_PHYSMEM_BITS is 52: physical addresses "
     "stay below 0x10000000000000 (4P))"),
    (F + OK_RAM + f"[[pages]]\npfn = 0\ncount = {2**20 * 32768}\nkind = 'slab'\n",
     "pages[0].pfn: 0x0+34359738368 crosses block 8, which does not exist"),
    (F + OK_RAM + "[[pages]]\npfn = 0\ncount = 1048576\nkind = 'slab'\n",
     "pages[0].pfn: 0x0+1048576 crosses block 8, which does not exist"),
    (F + OK_RAM + "[[fill]]\nblocks = '0-3000000000'\n", "fill[0].blocks: memory block 8 does not exist"),
    (F + OK_RAM + "[[fill]]\nblocks = '３'\n",
     "fill[0].blocks: '３' is not a block range (ASCII digits, like 7, 32-63, 1,4,8-9)"),
    (F + VMEM + "plugged = ['0-63']\noffline_blocks = '0-3000000000'\n",
     "virtio_mem[0].offline_blocks: memory block 0 is outside the device's region (memory blocks 32-39)"),
    (F + VMEM + "plugged = ['0-999999999999']\n",
     "virtio_mem[0].plugged: device block 999999999999 is outside the region (512 blocks of 2M)"),
    (F + OK_RAM + "[environment]\nisolated = ['0x0-0xffffffffffffffff']\n",
     "environment.isolated[0]: '0x0-0xffffffffffffffff' is outside physical memory (0x0-0xfffffffffffff)"),
    (F + OK_RAM + "[environment]\nisolated = ['0x40000000-0x401fffff']\n",
     "environment.isolated[0]: '0x40000000-0x401fffff' is outside memory: memory block 8 does not exist"),
    (F + OK_RAM + "[environment]\nhugetlb_2m = { free = 1, resv = 2 }\n",
     "environment.hugetlb_2m.resv: 2 is more than the 1 free folios: resv_huge_pages never exceeds free_huge_pages"),
    (F + OK_RAM + "[environment]\nhugetlb_2m = { resv = 1 }\n",
     "environment.hugetlb_2m.resv: 1 is more than the 0 free folios the profile holds: resv_huge_pages never "
     "exceeds free_huge_pages"),
    (F + OK_RAM + "[environment]\nhugetlb_2m = { free = 1000 }\n",
     "environment.hugetlb_2m.free: 1000 is above 512 (1G of memory holds 512 such folios)"),
    (F + OK_RAM + "[[fill]]\nblocks = 'all'\nseed = 18446744073709551616\n",
     "fill[0].seed: 18446744073709551616 is above 18446744073709551615 (a seed is an unsigned 64-bit number)"),
    ("x = " + "[" * 5000 + "]" * 5000 + "\n",
     "invalid TOML: arrays or tables nested too deeply"),
    ("x = " + "9" * 5000 + "\n",
     "invalid TOML: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits"),
])
def test_values_no_machine_has_are_refused_word_for_word(tmp_path, text, message):
    with pytest.raises(ProfileError) as info:
        load_text(tmp_path, text)
    assert str(info.value) == f"{tmp_path / 'bad.toml'}: {message}"


def test_a_machine_too_big_to_judge_here_is_refused_up_front(tmp_path, monkeypatch):
    import memplan.profile.reader as reader
    monkeypatch.setattr(reader, "memory_budget", lambda: 1 << 30)
    with pytest.raises(ProfileError) as info:
        load_text(tmp_path, F + "[[ram]]\nstart = 0\nsize = '64TiB'\nzone = 'Normal'\n")
    assert str(info.value) == (f"{tmp_path / 'bad.toml'}: describes 64T of memory in 524288 memory blocks; judging "
                               "it needs about 1.2G of memory and 1G is available here")
    monkeypatch.setattr(reader, "memory_budget", lambda: 4 << 30)
    assert len(load_text(tmp_path, F + "[[ram]]\nstart = 0\nsize = '64TiB'\nzone = 'Normal'\n").blocks) == 524288


@pytest.mark.parametrize("make,message", [
    (lambda p: os.mkfifo(p), "profile is a FIFO, not a regular file"),
    (lambda p: os.symlink("/dev/zero", p), "profile is a character device, not a regular file"),
    (lambda p: os.mkdir(p), "profile is a directory, not a regular file"),
    (lambda p: open(p, "wb").truncate(100 << 20), "is larger than 64M; a profile is a short TOML file"),
    (lambda p: open(p, "wb").write(b"format = 1\n\xff\n"), "is not UTF-8 text (byte 11)"),
])
def test_a_profile_is_a_regular_file(tmp_path, make, message):
    path = str(tmp_path / "p.toml")
    make(path)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert str(info.value) == f"{path}: {message}"


def test_ranges_stay_spans(tmp_path):
    """Block lists that name the same blocks many times, and isolated ranges that repeat, cost
    what the blocks cost (they are merged), not what the text says."""
    import time
    text = (F + OK_RAM + "[[fill]]\nblocks = '" + ",".join(["0-7"] * 50000) + "'\nanon = 0.1\n"
            "[environment]\nisolated = [" + ", ".join(["'0x0-0x3fffffff'"] * 20000) + "]\n")
    start = time.perf_counter()
    m = load_text(tmp_path, text)
    assert time.perf_counter() - start < 5
    assert m.environment.isolated == ((0, 0x40000),)
