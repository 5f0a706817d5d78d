"""Profile format 1: what loads, and one clear error (file, key, value) for what does not."""

import textwrap

import pytest

from conftest import bundled, machine_from
from memplan.core.errors import ProfileError
from memplan.profile.reader import load_profile
from memplan.core.model import BlockState, Zone

OK_RAM = '[[ram]]\nstart = "0"\nsize = "1GiB"\nzone = "Normal"\n'


def load_text(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(textwrap.dedent(text))
    return load_profile(str(path))


@pytest.mark.parametrize("text,needle", [
    ("", "format: is required"),
    ("format = 2\n" + OK_RAM, "format: 2 is not supported"),
    ("format = 1\n", "describes no memory"),
    ("format = 1\nbogus = 1\n" + OK_RAM, "bogus: unknown key"),
    ("format = 1\n[machine]\nnmae = 'x'\n" + OK_RAM, "machine.nmae: unknown key (did you mean 'name'?)"),
    ("format = 1\n[machine]\nmemory_block_size = '96MiB'\n" + OK_RAM, "memory_block_size"),
    ("format = 1\n[[ram]]\nstart = 0\nsize = '1GiB'\nzone = 'Norml'\n", "ram[0].zone: 'Norml' is not a zone"),
    ("format = 1\n[[ram]]\nstart = '1M'\nsize = '1GiB'\nzone = 'Normal'\n", "ram[0].start: 0x100000 is not aligned"),
    ("format = 1\n[[ram]]\nstart = 0\nsize = 'lots'\nzone = 'Normal'\n", "ram[0].size: 'lots' is not a size"),
    ("format = 1\n" + OK_RAM + OK_RAM, "ram[1]: overlaps ram[0]"),
    ("format = 1\n" + OK_RAM + "[[pages]]\npfn = 16\nkind = 'slabb'\n", "pages[0].kind: 'slabb' is not a page kind (did you mean 'slab'?)"),
    ("format = 1\n" + OK_RAM + "[[pages]]\npfn = 16\nkind = 'slab'\n[[pages]]\npfn = 16\nkind = 'anon'\n", "pages[1]: overlaps pages[0]"),
    ("format = 1\n" + OK_RAM + "[[pages]]\npfn = 7\nkind = 'thp'\ncount = 512\n", "whole 2 MiB folios"),
    ("format = 1\n" + OK_RAM + "[[pages]]\npfn = '0x900000'\nkind = 'slab'\n", "not inside an existing memory block"),
    ("format = 1\n" + OK_RAM + "[[pages]]\npfn = 16\nkind = 'fake_offline'\n", "fake_offline pages exist only"),
    ("format = 1\n" + OK_RAM + "[[fill]]\nblocks = '0-3'\nanon = 0.7\nfile = 0.5\n", "fractions add up to 1.2, over 1"),
    ("format = 1\n" + OK_RAM + "[[fill]]\nblocks = '0-3'\nanon = 1.5\n", "fill[0].anon: 1.5 is not a fraction"),
    ("format = 1\n" + OK_RAM + "[[fill]]\nblocks = '0-3'\nanno = 0.1\n", "fill[0].anno: unknown key (did you mean 'anon'?)"),
    ("format = 1\n" + OK_RAM + "[[fill]]\nblocks = '0-3'\ngigantic = 0.1\n", "place it with [[pages]]"),
    ("format = 1\n" + OK_RAM + "[[fill]]\nblocks = '0-99'\n", "memory block 8 does not exist"),
    ("format = 1\n" + OK_RAM + "[[fill]]\nblocks = '0-1'\n[[fill]]\nblocks = '1'\n", "block 1 is already filled by fill[0]"),
    ("format = 1\n" + OK_RAM + "[[fill]]\nblocks = '1-x'\n", "fill[0].blocks"),
    ("format = 1\n" + OK_RAM + "[environment]\nnotifier_veto = 'EBUSSY'\n", "(did you mean 'EBUSY'?)"),
    ("format = 1\n" + OK_RAM + "[environment]\nisolated = ['0x1000-0x1fff']\n", "not aligned to 2 MiB pageblocks"),
    ("format = 1\n" + OK_RAM + "[[virtio_mem]]\nid = 'v'\naddr = '512MiB'\nregion_size = '1GiB'\n", "virtio_mem[0]: overlaps ram[0]"),
    ("format = 1\n[[virtio_mem]]\nid = 'v'\naddr = '4GiB'\nregion_size = '1GiB'\nplugged = ['0-2']\nblock_size = '1MiB'\n", "virtio_mem[0].plugged: unit 1 is partly plugged"),
    ("format = 1\n[[virtio_mem]]\nid = 'v'\naddr = '4GiB'\nregion_size = '1GiB'\nonline = 'maybe'\n", "virtio_mem[0].online: 'maybe' is not one of"),
    ("format = 1\n[[ram]]\nstart = 0\nsize = '128MiB'\nzone = 'Normal'\nholes = [{start = '0x100', size = '0x1000'}]\n", "whole number of pages"),
    ("format = 1\n[[ram]]\nstart = 0\nsize = '64MiB'\nzone = 'Normal'\n[[ram]]\nstart = '64MiB'\nsize = '64MiB'\nzone = 'Normal'\nstate = 'offline'\n", "partly online and partly offline"),
    ("format = 1 [", "invalid TOML"),
])
def test_errors_name_file_key_and_value(tmp_path, text, needle):
    with pytest.raises(ProfileError) as info:
        load_text(tmp_path, text)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "bad.toml"))
    assert needle in message
    assert "\n" not in message


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


@pytest.mark.parametrize("name", ["boot-vm.toml", "sbm-guest.toml", "bbm-guest.toml", "hugetlb-cma-host.toml"])
def test_bundled_profiles_load(name):
    m = load_profile(bundled(name))
    assert len(m.blocks) > 10


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

from memplan.profile.reader import build_machine  # noqa: E402
from memplan.kernel import virtio_mem  # noqa: E402

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
