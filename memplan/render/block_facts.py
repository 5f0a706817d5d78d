"""What lsmem reads from ``/sys/devices/system/memory/memoryN`` for each block, from a ``Machine``.

The lsmem columns of the listings (``RANGE SIZE STATE REMOVABLE BLOCK NODE ZONES CONFIGURED
MEMMAP-ON-MEMORY``) come from here, the verdict columns from the engine. Block ids, states and
sizes come from the machine's ``BlockTable`` (for a snapshot: what the snapshot reader read).

For a tree (``--sysroot DIR``, ``--live``) the other facts are read from the tree the way
util-linux's lsmem reads them (sys-utils/lsmem.c ``memory_block_read_attrs()``), block by
block as the listing reaches it and only when a listed column needs them, so the listing is
lsmem's row for row:

* ``removable``: ``memoryN/removable`` read as an integer, ``== 1``; 0 when it cannot be read;
* ``valid_zones``: its words (an offline block lists the zones it may be onlined to, default
  first; an online s390 block may list two; lsmem names them ``DMA``, ..., ``None``);
* the node of the first ``nodeX`` entry of ``memoryN``; lsmem prints NODE only when the first
  block has one (``have_nodes``);
* ``/sys/firmware/memory/memoryN/{config,memmap_on_memory}`` (s390: CONFIGURED and
  MEMMAP-ON-MEMORY, shown only when ``/sys/firmware/memory/memory0`` exists).

Every file is opened with ``memplan.core.files.open_regular`` (a FIFO or device planted in a
tree is an error, never a hang) and read up to a small bound. For a profile the facts are what
the kernel would show for its blocks: ``removable`` reads 1 (``removable_show()`` prints
``IS_ENABLED(CONFIG_MEMORY_HOTREMOVE)`` since 5.8; memplan models hot-remove kernels),
``valid_zones`` the block's zone, or ``none`` for an online block spanning zones. Block ids
need not start at 0 (arm64 trees start at 8192; util-linux#4055: lsmem before 2.41 looked for
``memory0/valid_zones``).
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np

from memplan.core.errors import InputError
from memplan.core.files import open_regular
from memplan.core.geometry import PAGE_SIZES
from memplan.core.machine import BlockTable, Machine
from memplan.core.model import BlockState, Zone
from memplan.core.units import format_size

MEMORY_DIR = os.path.join("sys", "devices", "system", "memory")
FIRMWARE_DIR = os.path.join("sys", "firmware", "memory")
#: sysfs attributes are a page at most (the machine's PAGE_SIZE: the largest one covers all)
_ATTRIBUTE_BYTES = max(PAGE_SIZES)


class BlockFacts(NamedTuple):
    """One ``memoryN`` directory as lsmem reads it (a tuple: one is made per listed block)."""

    block: int
    start: int
    #: inclusive, like lsmem's RANGE
    end: int
    state: BlockState
    removable: bool
    #: from the ``nodeX`` entry (``None``: none, or lsmem shows no nodes)
    node: Optional[int]
    #: ``valid_zones`` words as sysfs spells them (``()``: no such file)
    zones: Tuple[str, ...]
    #: s390 ``/sys/firmware/memory`` facts (``None``: not on this machine)
    configured: Optional[bool] = None
    memmap_on_memory: Optional[bool] = None

    @property
    def size(self) -> int:
        return self.end - self.start + 1


def _attribute(path: str) -> Optional[str]:
    """A sysfs attribute's text; ``None`` when it is missing or unreadable (lsmem ignores
    those); a FIFO or device where it belongs is an ``InputError``."""
    if not os.path.lexists(path):
        return None
    try:
        with open_regular(path, "sysfs attribute") as handle:
            data = handle.read(_ATTRIBUTE_BYTES)
    except OSError:
        return None
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file (corrupt?)") from None


def _is_one(text: Optional[str]) -> bool:
    """lsmem's ``ul_path_readf_s32(...) == 0 && x == 1``."""
    return text is not None and re.fullmatch(r"[+]?0*1", text) is not None


class SysfsTree:
    """lsmem's reading of a tree's memory blocks (see the module docstring)."""

    def __init__(self, root: str) -> None:
        self.memory = os.path.join(root, MEMORY_DIR)
        self.firmware = os.path.join(root, FIRMWARE_DIR)
        self.have_memconfig = os.path.isdir(os.path.join(self.firmware, "memory0"))

    def node(self, block: int) -> Optional[int]:
        try:
            entries = os.listdir(os.path.join(self.memory, f"memory{block}"))
        except OSError:
            return None
        nodes = sorted(int(e[4:]) for e in entries if e.startswith("node") and e[4:].isdigit())
        return nodes[0] if nodes else None

    def read(self, block: int) -> Tuple[bool, Optional[int], Tuple[str, ...], Optional[bool], Optional[bool]]:
        """``(removable, node, valid_zones, configured, memmap_on_memory)`` of one block."""
        path = os.path.join(self.memory, f"memory{block}")
        zones = _attribute(os.path.join(path, "valid_zones"))
        configured = memmap = None
        if self.have_memconfig:
            firmware = os.path.join(self.firmware, f"memory{block}")
            configured = _is_one(_attribute(os.path.join(firmware, "config")))
            memmap = _is_one(_attribute(os.path.join(firmware, "memmap_on_memory")))
        return (_is_one(_attribute(os.path.join(path, "removable"))), self.node(block),
                tuple(zones.split()) if zones is not None else (), configured, memmap)


class MachineFacts:
    """``BlockFacts`` of the blocks of a machine, by block id or in block order; ``tree`` reads
    them from a sysroot as lsmem does, ``read_tree`` says whether the listing needs them."""

    def __init__(self, machine: Machine, tree: Optional[SysfsTree] = None, read_tree: bool = True) -> None:
        table = machine.blocks
        self.block_size = machine.geometry.memory_block_size
        self.ids, self.state, self.zone, self.node = table.ids, table.state, table.zone, table.node
        self.tree = tree if read_tree else None
        self.memconfig = tree is not None and tree.have_memconfig
        #: lsmem's ``have_nodes``: the first block has a ``nodeX`` entry
        self.have_nodes = self.tree is None or (len(self.ids) > 0 and self.tree.node(int(self.ids[0])) is not None)
        self._cursor = 0

    @property
    def has_memconfig(self) -> bool:
        """lsmem's ``have_memconfig``: CONFIGURED and MEMMAP-ON-MEMORY can be shown."""
        return self.memconfig

    def _row(self, block: int) -> int:
        """The row of a block: the next one when blocks come in order, else a binary search."""
        ids = self.ids
        for cursor in (self._cursor, self._cursor + 1):
            if cursor < len(ids) and ids[cursor] == block:
                self._cursor = cursor
                return cursor
        cursor = int(np.searchsorted(ids, block))
        if cursor >= len(ids) or ids[cursor] != block:
            raise KeyError(block)
        self._cursor = cursor
        return cursor

    def facts(self, block: int) -> BlockFacts:
        row = self._row(block)
        state = BlockTable.STATES[int(self.state[row])]
        start = block * self.block_size
        end = start + self.block_size - 1
        if self.tree is not None:
            removable, node, zones, configured, memmap = self.tree.read(block)
            return BlockFacts(block, start, end, state, removable, node if self.have_nodes else None, zones,
                              configured, memmap)
        zone = Zone.from_code(int(self.zone[row]))
        node = int(self.node[row])
        return BlockFacts(block, start, end, state, True, node if node >= 0 else None,
                          (zone.value,) if zone is not None else ("none",))

    def blocks(self, ids: Optional[Iterable[int]] = None) -> Iterator[BlockFacts]:
        """The given blocks (default: every present block, what lsmem lists), in order."""
        for block in (self.ids.tolist() if ids is None else ids):
            yield self.facts(int(block))

    def totals(self) -> Tuple[int, int]:
        """lsmem's ``mem_online`` and ``mem_offline`` (going-offline counts as offline)."""
        online = int(np.count_nonzero(self.state == 0))
        return online * self.block_size, (len(self.ids) - online) * self.block_size

    def summary_lines(self, in_bytes: bool) -> List[str]:
        """lsmem's summary, formatted as lsmem prints it (``%-23s %5s``, or ``%15d`` with ``--bytes``)."""
        online, offline = self.totals()
        lines = []
        for label, value in (("Memory block size:", self.block_size), ("Total online memory:", online),
                             ("Total offline memory:", offline)):
            lines.append(f"{label:<23} {value:>15}" if in_bytes else f"{label:<23} {format_size(value):>5}")
        return lines
