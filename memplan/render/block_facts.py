"""What lsmem reads from ``/sys/devices/system/memory/memoryN`` for each block, from a ``Machine``.

The lsmem columns of the listings (``RANGE SIZE STATE REMOVABLE BLOCK NODE ZONES CONFIGURED
MEMMAP-ON-MEMORY``) come from here, the verdict columns from the engine. The machine's
``BlockTable`` always has ``ids``, ``state``, ``zone`` and ``node``; a snapshot of a real tree
may carry what sysfs showed beyond that as optional ``BlockTable`` attributes (one entry per
row, in row order):

* ``valid_zones``: the words of ``memoryN/valid_zones`` (an offline block lists every zone it
  may be onlined to, default first; an s390 block may list two while online);
* ``removable``: ``memoryN/removable`` as booleans;
* ``node_link``: the node of the ``memoryN/nodeX`` link, -1 where there is none (lsmem's NODE
  is empty then; ``node`` is what the model assumes);
* ``configured``, ``memmap_on_memory``: ``/sys/firmware/memory/memoryN/{config,memmap_on_memory}``
  (s390; absent without that directory, and then lsmem leaves the columns out).

Without them the facts are what the kernel shows for such a block: ``removable`` reads 1
(``removable_show()`` prints ``IS_ENABLED(CONFIG_MEMORY_HOTREMOVE)`` since 5.8; memplan models
hot-remove kernels), ``valid_zones`` the block's zone, or ``none`` for an online block spanning
zones. Block ids need not start at 0 (arm64 trees start at 8192: util-linux#4055).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from memplan.core.machine import BlockTable, Machine
from memplan.core.model import BlockState, Zone
from memplan.core.units import format_size


class BlockFacts(NamedTuple):
    """One ``memoryN`` directory as lsmem reads it (a tuple: one is made per listed block)."""

    block: int
    start: int
    #: inclusive, like lsmem's RANGE
    end: int
    state: BlockState
    removable: bool
    #: from the ``nodeN`` link (``None``: no link)
    node: Optional[int]
    #: ``valid_zones`` words as sysfs spells them (``()``: no such file)
    zones: Tuple[str, ...]
    #: s390 ``/sys/firmware/memory`` facts (``None``: not on this machine)
    configured: Optional[bool] = None
    memmap_on_memory: Optional[bool] = None

    @property
    def size(self) -> int:
        return self.end - self.start + 1


def _optional_column(table: Any, name: str, rows: int) -> Optional[Sequence[Any]]:
    values = getattr(table, name, None)
    if values is None or len(values) != rows:
        return None
    return list(values)


class MachineFacts:
    """``BlockFacts`` of every block of a machine, by block id or in block order."""

    def __init__(self, machine: Machine) -> None:
        table = machine.blocks
        self.block_size = machine.geometry.memory_block_size
        self.ids = table.ids
        self.state = table.state
        self.zone = table.zone
        self.node = table.node
        rows = len(table)
        self.valid_zones = _optional_column(table, "valid_zones", rows)
        self.removable = _optional_column(table, "removable", rows)
        self.node_link = _optional_column(table, "node_link", rows)
        self.configured = _optional_column(table, "configured", rows)
        self.memmap_on_memory = _optional_column(table, "memmap_on_memory", rows)
        self._cursor = 0

    @property
    def has_memconfig(self) -> bool:
        """lsmem's ``have_memconfig``: CONFIGURED and MEMMAP-ON-MEMORY can be shown."""
        return self.configured is not None

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

    def _zones(self, row: int) -> Tuple[str, ...]:
        if self.valid_zones is not None:
            return tuple(str(w) for w in self.valid_zones[row])
        zone = Zone.from_code(int(self.zone[row]))
        return (zone.value,) if zone is not None else ("none",)

    def facts(self, block: int) -> BlockFacts:
        row = self._row(block)
        state = BlockTable.STATES[int(self.state[row])]
        start = block * self.block_size
        node = int(self.node_link[row] if self.node_link is not None else self.node[row])
        return BlockFacts(
            block=block, start=start, end=start + self.block_size - 1, state=state,
            removable=bool(self.removable[row]) if self.removable is not None else True,
            node=node if node >= 0 else None, zones=self._zones(row),
            configured=bool(self.configured[row]) if self.configured is not None else None,
            memmap_on_memory=bool(self.memmap_on_memory[row]) if self.memmap_on_memory is not None else None,
        )

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
