"""Sysfs-only trees, the layout ``lsmem --sysroot`` reads (and util-linux's own lsmem test dumps
hold): ``sys/devices/system/memory/{block_size_bytes,memoryN/{state,removable,valid_zones,
phys_index,phys_device,nodeX}}`` and nothing else -- no ``/proc``.

Three machines, modelled on util-linux's tests/expected/lsmem outputs:

* ``x86_64``: 128 MiB blocks 0-23 and 32-47 (a hole below 4 GiB), block 0 spanning DMA and
  DMA32 (``valid_zones`` ``none``), two NUMA nodes, removable 0 on some blocks (kernels before
  5.8 computed it), offline blocks listing the zones they may be onlined to, and one block
  going offline;
* ``arm64_16k``: 16 KiB pages, 128 MiB blocks with ids from 8192 (8192-8316 and 8319), zone
  DMA (util-linux#4055: lsmem before 2.41 looked for ``memory0/valid_zones``);
* ``s390``: 256 MiB blocks 0-23 with offline standby blocks and online blocks whose
  ``valid_zones`` lists two zones (``DMA Normal``, ``Normal Movable``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

MiB = 1 << 20


@dataclass(frozen=True)
class TreeBlock:
    id: int
    state: str = "online"
    zones: str = "Normal"
    removable: int = 1
    node: Optional[int] = 0


@dataclass(frozen=True)
class Tree:
    name: str
    block_size: int
    page_size: int
    blocks: Tuple[TreeBlock, ...]
    #: ``sys/kernel/mm/hugepages/hugepages-<kB>kB`` directories (the sizes tell the page size)
    hugepages_kb: Tuple[int, ...] = ()

    def write(self, root: str) -> str:
        """Write the tree under ``root``; returns the sysroot."""
        memory = os.path.join(root, "sys", "devices", "system", "memory")
        os.makedirs(memory, exist_ok=True)
        with open(os.path.join(memory, "block_size_bytes"), "w") as handle:
            handle.write(f"{self.block_size:x}\n")
        for b in self.blocks:
            path = os.path.join(memory, f"memory{b.id}")
            os.makedirs(path, exist_ok=True)
            for name, value in (("state", b.state), ("removable", str(b.removable)), ("valid_zones", b.zones),
                                ("phys_index", f"{b.id:08x}"), ("phys_device", "0"), ("online", str(int(
                                    b.state == "online")))):
                with open(os.path.join(path, name), "w") as handle:
                    handle.write(value + "\n")
            if b.node is not None:
                os.symlink(f"../../node/node{b.node}", os.path.join(path, f"node{b.node}"))
        for kb in self.hugepages_kb:
            os.makedirs(os.path.join(root, "sys", "kernel", "mm", "hugepages", f"hugepages-{kb}kB"))
        return root


def _x86_64() -> Tree:
    blocks: List[TreeBlock] = [TreeBlock(0, zones="none", removable=0)]
    blocks += [TreeBlock(i, zones="DMA32", removable=0 if i in (7, 15, 22, 23) else 1) for i in range(1, 24)]
    for i in range(32, 48):
        zone = "Normal" if i < 40 else "Movable"
        if i in (44, 45):
            blocks.append(TreeBlock(i, state="offline", zones="Movable Normal", node=1))
        elif i == 46:
            blocks.append(TreeBlock(i, state="going-offline", zones="Movable", node=1))
        else:
            blocks.append(TreeBlock(i, zones=zone, removable=0 if i < 35 else 1, node=1))
    return Tree("x86_64", 128 * MiB, 4096, tuple(blocks))


def _arm64_16k() -> Tree:
    ids = list(range(8192, 8317)) + [8319]
    # arm64 with 16 KiB pages offers CONT_PTE (2 MiB), PMD (32 MiB) and CONT_PMD (1 GiB) hugetlb sizes
    return Tree("arm64_16k", 128 * MiB, 16384, tuple(TreeBlock(i, zones="DMA") for i in ids), (2048, 32768, 1048576))


#: util-linux's s390-zvm-6g dump: (state, removable, valid_zones) of blocks 0-23
_S390: Dict[int, Tuple[str, int, str]] = {
    **{i: ("online", 1, "DMA") for i in range(0, 7)},
    7: ("online", 0, "DMA Normal"),
    8: ("online", 1, "Normal"), 9: ("online", 1, "Normal"),
    10: ("online", 0, "Normal"), 11: ("online", 0, "Normal"),
    12: ("online", 1, "Normal"), 13: ("online", 1, "Normal"),
    14: ("offline", 0, "Normal"),
    15: ("online", 1, "Normal"),
    16: ("online", 0, "Normal"), 17: ("online", 0, "Normal Movable"),
    18: ("online", 1, "Movable Normal"), 19: ("online", 1, "Movable"),
    **{i: ("offline", 0, "Movable") for i in range(20, 24)},
}


def _s390() -> Tree:
    return Tree("s390", 256 * MiB, 4096, tuple(TreeBlock(i, state=s, removable=r, zones=z)
                                               for i, (s, r, z) in sorted(_S390.items())))


TREES: Dict[str, Tree] = {t.name: t for t in (_x86_64(), _arm64_16k(), _s390())}


def tree_facts(root: str, read_tree: bool = True):
    """The tree as the listing sees it: the block table (ids, states) a snapshot reader would
    build and ``SysfsTree`` for the rest -- the rendering layer on its own, without the
    snapshot reader."""
    from memplan.core.geometry import Geometry
    from memplan.core.machine import BlockTable, Machine
    from memplan.render.block_facts import MachineFacts, SysfsTree

    memory = os.path.join(root, "sys", "devices", "system", "memory")
    with open(os.path.join(memory, "block_size_bytes")) as handle:
        block_size = int(handle.read(), 16)
    states = {"online": 0, "offline": 1, "going-offline": 2}
    rows = []
    for name in os.listdir(memory):
        if name.startswith("memory") and name[6:].isdigit():
            with open(os.path.join(memory, name, "state")) as handle:
                rows.append((int(name[6:]), states[handle.read().strip()]))
    rows.sort()
    n = len(rows)
    table = BlockTable([r[0] for r in rows], [r[1] for r in rows], [0] * n, [0] * n, [block_size // 4096] * n,
                       [0] * n, [-1] * n)
    geometry = Geometry(memory_block_size=block_size, section_size=min(block_size, 128 * MiB))
    machine = Machine(os.path.basename(root), root, geometry, table, pages=None)  # type: ignore[arg-type]
    return MachineFacts(machine, SysfsTree(root), read_tree=read_tree)
