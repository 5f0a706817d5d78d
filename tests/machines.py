"""Random machines for the property tests, as profile documents (they go through ``build_machine``).

A machine has up to four parts, all drawn independently:

* 1 GiB of boot memory at 0 (blocks 0-7): one range (which may hold a 1 GiB hugetlb folio,
  in use or free, and CMA pageblocks) or two ranges of different zones and nodes;
* blocks 8-11, each its own layout: plain, a [[ram]] gap at its end (a hole), a hole inside,
  two kernel zones (``valid_zones`` none), offline, memmap_on_memory, or absent;
* a virtio-mem device at 2 GiB: SBM with a random plugged bitmap, or BBM (128 MiB device blocks,
  or 256 MiB big blocks) with fake-offline big blocks; online movable or kernel; driver loaded,
  unloaded or being removed; some of its blocks offlined again;
* pages: explicit runs (order-0 kinds with refcounts, 2 MiB folios, fake-offline pages with
  foreign references), fills (sometimes nearly full, so migration targets run short), and an
  environment: hugetlb pools, signal, notifier vetoes, isolated pageblocks, foreign-reference
  timing, a kernel release before or after NUMA node notifiers.

``ram_machines`` and ``sbm_machines`` are smaller machines with one block under test (``BLOCK``).
Boot memory may split inside a block: the block then spans two zones and, on two nodes, two
nodes (``BlockTable.spans`` says how many of its pages each node has).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from memplan.core.model import ForeignRefTiming

MiB = 1 << 20
PPB = 32768  # pages per 128 MiB block
PB = 512  # pages per pageblock
ZONES = ["Normal", "Movable", "DMA32"]
ORDER0 = ["anon", "file", "movable", "balloon_movable", "hwpoison", "pinned", "slab", "pagetable", "kernel",
          "reserved", "balloon", "offline_refcount_driver", "offline_orphan"]
WITH_REFCOUNT = ("anon", "file", "movable", "balloon", "offline_refcount_driver", "offline_orphan", "kernel")
FOLIOS = ["thp", "hugetlb", "hugetlb_free", "hugetlb_unmigratable"]
DEVICE_BASE = 16  # the virtio-mem device sits at 2 GiB
#: every [environment] foreign_ref_dropped value
TIMINGS = [t.value for t in ForeignRefTiming]

Interval = Tuple[int, int]


class Layout:
    """What the drawing so far left room for: pfn intervals for pages, and fake-offline intervals."""

    def __init__(self) -> None:
        self.doc: dict = {"format": 1, "ram": [], "pages": []}
        self.usable: List[Interval] = []
        self.fake: List[Interval] = []
        self.blocks: List[int] = []  # online blocks that exist
        self.nodes = 1

    def ram(self, start_pfn: int, pages: int, zone: str, node: int, **extra) -> dict:
        table = {"start": hex(start_pfn * 4096), "size": hex(pages * 4096), "zone": zone, "node": node, **extra}
        self.doc["ram"].append(table)
        return table


@st.composite
def boot_memory(draw, layout: Layout) -> bool:
    """Blocks 0-7; returns whether they are one plain range (room for a 1 GiB folio)."""
    if draw(st.booleans()):
        table = layout.ram(0, 8 * PPB, draw(st.sampled_from(ZONES)), 0)
        if draw(st.integers(0, 3)) == 0:
            first = draw(st.integers(0, 8 * 64 - 2)) * PB
            table["cma"] = [f"{first * 4096:#x}-{(first + PB * draw(st.integers(1, 2))) * 4096 - 1:#x}"]
        layout.usable.append((0, 8 * PPB))
        layout.blocks += list(range(8))
        return True
    # A split inside a block makes a block spanning both ranges' zones and nodes (mem->zone NULL;
    # node_present_pages counts each part towards its node).
    split = draw(st.integers(1, 7)) * PPB - draw(st.sampled_from([0, 0, PPB // 2]))
    layout.ram(0, split, draw(st.sampled_from(ZONES)), 0)
    layout.ram(split, 8 * PPB - split, draw(st.sampled_from(ZONES)), draw(st.integers(0, layout.nodes - 1)))
    layout.usable.append((0, 8 * PPB))
    layout.blocks += list(range(8))
    return False


@st.composite
def extra_block(draw, layout: Layout, block: int) -> None:
    """One of blocks 8-11 with its own layout."""
    start = block * PPB
    zone, node = draw(st.sampled_from(ZONES)), draw(st.integers(0, layout.nodes - 1))
    shape = draw(st.sampled_from(["plain", "plain", "gap", "hole", "two-zones", "offline", "memmap", "absent"]))
    if shape == "absent":
        return
    layout.blocks.append(block)
    if shape == "plain":
        layout.ram(start, PPB, zone, node)
        layout.usable.append((start, start + PPB))
    elif shape == "gap":  # the [[ram]] range ends early: the rest of the block is a hole
        pages = PPB - draw(st.integers(1, 16)) * PB
        layout.ram(start, pages, zone, node)
        layout.usable.append((start, start + pages))
    elif shape == "hole":
        hole = start + draw(st.integers(1, PPB - 64))
        size = draw(st.integers(1, 32))
        layout.ram(start, PPB, zone, node, holes=[{"start": hex(hole * 4096), "size": hex(size * 4096)}])
        layout.usable += [(start, hole), (hole + size, start + PPB)]
    elif shape == "two-zones":  # spans DMA32 and Normal on one node: mem->zone is NULL
        layout.ram(start, PPB // 2, "DMA32", node)
        layout.ram(start + PPB // 2, PPB // 2, "Normal", node)
        layout.usable.append((start, start + PPB))
    elif shape == "offline":
        layout.ram(start, PPB, zone, node, state="offline")
        layout.blocks.remove(block)
    else:  # memmap_on_memory: the first pageblock hosts the block's memmap
        layout.ram(start, PPB, zone, node, memmap_on_memory=True)
        layout.usable.append((start + PB, start + PPB))


@st.composite
def virtio_mem(draw, layout: Layout) -> None:
    """A virtio-mem device at 2 GiB, SBM or BBM."""
    base = DEVICE_BASE * PPB
    device = {"id": "vmem0", "addr": "2GiB", "online": draw(st.sampled_from(["movable", "movable", "kernel"])),
              "driver": draw(st.sampled_from(["loaded", "loaded", "unloaded", "removing"])),
              "node": draw(st.integers(0, layout.nodes - 1))}
    mode = draw(st.sampled_from(["sbm", "sbm", "bbm", "bbm-256"]))
    if mode == "sbm":
        plugged = draw(st.lists(st.booleans(), min_size=128, max_size=128))
        plugged[0] = True
        device.update(region_size="256MiB", block_size="2MiB", plugged=[str(i) for i, p in enumerate(plugged) if p])
        blocks = [DEVICE_BASE + b for b in range(2) if any(plugged[b * 64:(b + 1) * 64])]
        units = [(base + i * PB, base + (i + 1) * PB, p) for i, p in enumerate(plugged)]
    else:
        per = 1 if mode == "bbm" else 2  # memory blocks per big block
        bbs = 4 // per
        plugged = draw(st.lists(st.booleans(), min_size=bbs, max_size=bbs))
        plugged[0] = True
        fake = [i for i, p in enumerate(plugged) if p and draw(st.integers(0, 2)) == 0]
        device.update(region_size="512MiB", block_size="128MiB" if per == 1 else "2MiB", mode="bbm",
                      plugged=[f"{i * (64 * per if per > 1 else 1)}-{(i + 1) * (64 * per if per > 1 else 1) - 1}"
                               for i, p in enumerate(plugged) if p],
                      fake_offline_big_blocks=",".join(str(i) for i in fake) or None)
        if per > 1:
            device["bbm_block_size"] = "256MiB"
        if device["fake_offline_big_blocks"] is None:
            del device["fake_offline_big_blocks"]
        blocks = [DEVICE_BASE + i * per + j for i, p in enumerate(plugged) if p for j in range(per)]
        units = [(base + (i * per + j) * PPB, base + (i * per + j + 1) * PPB, i not in fake)
                 for i, p in enumerate(plugged) if p for j in range(per)]
    offline = [b for b in blocks if draw(st.integers(0, 5)) == 0]
    if offline:
        device["offline_blocks"] = ",".join(str(b) for b in offline)
    layout.doc["virtio_mem"] = [device]
    online = [b for b in blocks if b not in offline]
    layout.blocks += online
    for lo, hi, plugged_unit in units:
        if lo // PPB in online:
            (layout.usable if plugged_unit else layout.fake).append((lo, hi))


def _free_of(placed: List[Interval], lo: int, hi: int) -> bool:
    return all(hi <= a or b <= lo for a, b in placed)


@st.composite
def page_runs(draw, layout: Layout, placed: List[Interval]) -> None:
    """Explicit [[pages]]: order-0 runs, 2 MiB folios, fake-offline pages with references."""
    for _ in range(draw(st.integers(0, 8))):
        what = draw(st.sampled_from(["order0", "order0", "folio", "fake"]))
        pool = layout.fake if what == "fake" else layout.usable
        if not pool:
            continue
        lo, hi = draw(st.sampled_from(pool))
        if what == "folio":
            first = -(-lo // PB) * PB
            if first + PB > hi:
                continue
            pfn = first + draw(st.integers(0, (hi - first) // PB - 1)) * PB
            count = PB * (2 if pfn + 2 * PB <= hi and draw(st.booleans()) else 1)
            run = {"kind": draw(st.sampled_from(FOLIOS))}
            if run["kind"] in ("hugetlb", "thp") and draw(st.integers(0, 3)) == 0:
                run["refcount"] = 2
        else:
            pfn = draw(st.integers(lo, hi - 1))
            count = min(draw(st.integers(1, 64 if what == "order0" else 8)), hi - pfn)
            run = {"kind": "fake_offline" if what == "fake" else draw(st.sampled_from(ORDER0))}
            if what == "fake" or (run["kind"] in WITH_REFCOUNT and draw(st.integers(0, 3)) == 0):
                run["refcount"] = draw(st.integers(0, 3))
        if not _free_of(placed, pfn, pfn + count):
            continue
        placed.append((pfn, pfn + count))
        layout.doc["pages"].append({"pfn": hex(pfn), "count": count, **run})


FRACTIONS = {"anon": st.floats(0, 0.4), "file": st.floats(0, 0.3), "thp": st.floats(0, 0.2),
             "movable": st.floats(0, 0.01), "balloon_movable": st.sampled_from([0, 0.001]),
             "hugetlb": st.sampled_from([0, 0, 0.05]), "hugetlb_free": st.sampled_from([0, 0, 0.02]),
             "slab": st.sampled_from([0, 0, 0.00002]), "pinned": st.sampled_from([0, 0, 0.00002]),
             "hwpoison": st.sampled_from([0, 0.0001]), "balloon": st.sampled_from([0, 0, 0.00002])}


@st.composite
def fills(draw, layout: Layout, taken: List[int]) -> None:
    """Up to two fills on disjoint block sets; a nearly full one leaves few migration targets."""
    left = [b for b in layout.blocks if b not in taken]
    out = []
    for _ in range(draw(st.integers(0, 2))):
        if not left:
            break
        blocks = sorted(set(draw(st.lists(st.sampled_from(left), min_size=1, max_size=6))))
        left = [b for b in left if b not in blocks]
        if draw(st.integers(0, 3)) == 0:
            fractions = {"anon": draw(st.floats(0.9, 1.0)), "thp": draw(st.sampled_from([0, 0.0]))}
        else:
            fractions = draw(st.fixed_dictionaries({}, optional=FRACTIONS))
        out.append({"blocks": ",".join(str(b) for b in blocks), "seed": draw(st.integers(0, 99)), **fractions})
    if out:
        layout.doc["fill"] = out


@st.composite
def environment(draw, layout: Layout) -> None:
    env: Dict[str, object] = {}
    ram_pages = sum(int(t["size"], 16) // 4096 for t in layout.doc["ram"])
    for key, order in (("hugetlb_2m", 9), ("hugetlb_1g", 18)):
        if draw(st.integers(0, 2)) == 0:
            # the reader refuses counters no kernel can have: more folios than the memory holds,
            # or resv_huge_pages above free_huge_pages
            free: Optional[int] = draw(st.one_of(st.none(), st.integers(0, min(4, ram_pages >> order))))
            pool: Dict[str, int] = {"resv": draw(st.integers(0, min(2, free or 0)))}
            if free is not None:
                pool["free"] = free
            env[key] = pool
    if draw(st.integers(0, 9)) == 0:
        env["signal_pending"] = True
    if draw(st.integers(0, 7)) == 0:
        env["notifier_veto"] = draw(st.sampled_from(["EBUSY", "EPERM", "ENOMEM"]))
    if draw(st.integers(0, 4)) == 0:
        env["node_notifier_veto"] = draw(st.sampled_from(["EBUSY", "ENOMEM"]))
    env["foreign_ref_dropped"] = draw(st.sampled_from(TIMINGS))
    if layout.blocks and draw(st.integers(0, 4)) == 0:
        block = draw(st.sampled_from(layout.blocks))
        first = block * PPB + draw(st.integers(0, 63)) * PB
        env["isolated"] = [f"{first * 4096:#x}-{(first + PB) * 4096 - 1:#x}"]
    layout.doc["environment"] = env


@st.composite
def machines(draw) -> dict:
    """A random machine as a profile document."""
    layout = Layout()
    layout.nodes = draw(st.integers(1, 3))
    plain_boot = draw(boot_memory(layout))
    for block in range(8, 12):
        draw(extra_block(layout, block))
    if draw(st.integers(0, 3)):
        draw(virtio_mem(layout))
    placed: List[Interval] = []
    taken: List[int] = []
    if plain_boot and draw(st.integers(0, 3)) == 0:
        kind = draw(st.sampled_from(["gigantic", "gigantic_free"]))
        layout.doc["pages"].append({"pfn": "0", "count": 8 * PPB, "kind": kind})
        placed.append((0, 8 * PPB))
        taken += list(range(8))
    draw(page_runs(layout, placed))
    draw(fills(layout, taken))
    draw(environment(layout))
    layout.doc["machine"] = {"nodes": layout.nodes}
    release = draw(st.sampled_from([None, None, "6.1.0", "6.18.0"]))
    if release:
        layout.doc["machine"]["kernel"] = release
    return layout.doc


# --- one block under test -------------------------------------------------------------------------
# Smaller machines whose block 8 (1 GiB) is the one under test: boot memory with random pages,
# fills and environment, or a partially plugged SBM virtio-mem block (used by test_trace and
# test_diff, which look at one block at a time).

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BLOCK = 8
BASE = BLOCK * PPB

@st.composite
def block_page_runs(draw):
    runs = []
    used = np.zeros(32768, dtype=bool)
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            kind = draw(st.sampled_from(FOLIOS))
            start = draw(st.integers(0, 63)) * 512
            count = 512
        else:
            kind = draw(st.sampled_from(ORDER0))
            start = draw(st.integers(0, 32767))
            count = draw(st.integers(1, 64))
        count = min(count, 32768 - start)
        if used[start:start + count].any():
            continue
        used[start:start + count] = True
        run = {"pfn": BASE + start, "count": count, "kind": kind}
        if kind in ("anon", "file", "balloon", "offline_refcount_driver") and draw(st.integers(0, 4)) == 0:
            run["refcount"] = draw(st.integers(0, 3))
        runs.append(run)
    return runs


@st.composite
def ram_machines(draw):
    doc = {
        "format": 1,
        "ram": [{"start": 0, "size": "1GiB", "zone": "Normal"},
                {"start": "1GiB", "size": "128MiB", "zone": draw(st.sampled_from(["Normal", "Movable", "DMA32"]))}],
        "pages": draw(block_page_runs()),
    }
    if draw(st.booleans()):
        fractions = draw(st.fixed_dictionaries({}, optional={
            "anon": st.floats(0, 0.4), "file": st.floats(0, 0.3), "slab": st.floats(0, 0.0005),
            "thp": st.floats(0, 0.1), "pinned": st.floats(0, 0.0002), "kernel": st.floats(0, 0.0002)}))
        doc["fill"] = [{"blocks": str(BLOCK), "seed": draw(st.integers(0, 1000)), **fractions}]
    env = {}
    if draw(st.integers(0, 3)) == 0:
        free = draw(st.integers(0, 4))
        env["hugetlb_2m"] = {"free": free, "resv": draw(st.integers(0, min(2, free)))}
    if draw(st.integers(0, 8)) == 0:
        env["signal_pending"] = True
    if env:
        doc["environment"] = env
    return doc


@st.composite
def sbm_machines(draw):
    plugged = draw(st.lists(st.booleans(), min_size=64, max_size=64))
    if not any(plugged):
        plugged[0] = True
    indexes = [str(i) for i, p in enumerate(plugged) if p]
    doc = {
        "format": 1,
        "ram": [{"start": 0, "size": "1GiB", "zone": "Normal"}],
        "virtio_mem": [{"id": "vmem0", "addr": "1GiB", "region_size": "128MiB", "block_size": "2MiB",
                        "plugged": indexes, "online": draw(st.sampled_from(["movable", "kernel"])),
                        "driver": draw(st.sampled_from(["loaded", "loaded", "unloaded", "removing"]))}],
        "pages": [],
        "environment": {"foreign_ref_dropped": draw(st.sampled_from(TIMINGS))},
    }
    unplugged = [i for i, p in enumerate(plugged) if not p]
    if unplugged and draw(st.booleans()):
        sb = draw(st.sampled_from(unplugged))
        doc["pages"].append({"pfn": BASE + sb * 512 + draw(st.integers(0, 511)), "kind": "fake_offline",
                             "refcount": draw(st.integers(0, 3))})
    plugged_sbs = [i for i, p in enumerate(plugged) if p]
    for _ in range(draw(st.integers(0, 3))):
        sb = draw(st.sampled_from(plugged_sbs))
        pfn = BASE + sb * 512 + draw(st.integers(0, 500))
        if any(p["pfn"] <= pfn + 8 and pfn <= p["pfn"] + p.get("count", 1) for p in doc["pages"]):
            continue
        doc["pages"].append({"pfn": pfn, "count": 8, "kind": draw(st.sampled_from(ORDER0[:9] + ["balloon"]))})
    return doc
