"""``memplan plan``: what ``chmem -d SIZE`` would do (util-linux sys-utils/chmem.c, ``chmem_size()``).

chmem walks the memory block directories from the highest block down, skips blocks that are
already offline (and, with ``--zone``, blocks whose ``valid_zones`` does not start with the
zone name, compared case-insensitively over the zone name's length), writes ``offline`` to
``memoryN/state`` and counts a block only when the write succeeds, until SIZE is reached.
Each write goes through the offline pipeline against the machine state the earlier writes
left behind. A write that would hang is counted as interrupted (the operator's signal
returns ``-EINTR``); the migrations it made before that stay made, as in the kernel.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from memplan.core.errors import UsageError
from memplan.core.machine import Machine
from memplan.core.results import BlockVerdict, Outcome
from memplan.core.units import format_size, parse_chmem_size
from memplan.engine.simulation import select_blocks
from memplan.plans.state import MachineState
from memplan.plans.types import AUTO_MOVABLE_RATIO, PlanResult

#: chmem's zone names (``zone_names[]``).
CHMEM_ZONES = ("DMA", "DMA32", "Normal", "Highmem", "Movable", "Device")


def parse_plan_size(text: str, block_size: int) -> int:
    """chmem's SIZE: ``<n>[K|M|G|T...]``; a bare number means MiB (``parse_single_param()``)."""
    try:
        size = parse_chmem_size(text)
    except ValueError as exc:
        raise UsageError(f"--size: {exc}") from None
    if size % block_size:
        raise UsageError(f"Size must be aligned to memory block size ({format_size(block_size)})")
    return size


def valid_zones_match(valid_zones: str, zone: str) -> bool:
    """chmem: ``c_strncasecmp(valid_zones, zone_name, strlen(zone_name)) == 0`` (so ``DMA``
    also matches a ``DMA32`` block)."""
    return valid_zones[:len(zone)].lower() == zone.lower()


def candidates(state: MachineState, blocks: Optional[Sequence[int]], zone: Optional[str]) -> List[int]:
    """Online blocks chmem would try, highest first."""
    ids = select_blocks(state.machine, blocks) if blocks is not None else state.ids
    out: List[int] = []
    for block in sorted((int(b) for b in ids), reverse=True):
        row = state.row_of(block)
        if not state.online(row):
            continue
        if zone is not None:
            z = state.zone_of(row)
            if not valid_zones_match(z.value if z else "none", zone):
                continue
        out.append(block)
    return out


def run_plan(state: MachineState, size: int, blocks: Optional[Sequence[int]] = None,
             zone: Optional[str] = None) -> PlanResult:
    """Offline ``size`` bytes the way chmem does (mutates ``state``)."""
    block_size = state.geometry.memory_block_size
    if size % block_size:
        raise UsageError(f"Size must be aligned to memory block size ({format_size(block_size)})")
    if zone is not None:
        matches = [z for z in CHMEM_ZONES if z.lower() == zone.lower()]
        if not matches:
            raise UsageError(f"unknown memory zone: {zone} (chmem knows {', '.join(CHMEM_ZONES)})")
        zone = matches[0]
    todo = size // block_size
    pool = candidates(state, blocks, zone)
    attempts: List[BlockVerdict] = []
    for block in pool:
        if not todo:
            break
        verdict = state.offline(block)
        attempts.append(verdict)
        if verdict.result is Outcome.OFFLINED:
            todo -= 1
    left = state.left()
    warnings: List[str] = list(state.machine.warnings)
    if todo:
        done = size - todo * block_size
        warnings.append(f"Could only disable {format_size(done)} of memory")
    if left.ratio_exceeded:
        ratio = left.movable_ratio_percent
        warnings.append(f"ZONE_MOVABLE is {'all' if ratio is None else f'{ratio}%'} of the online memory left "
                        f"{'' if ratio is None else 'relative to the kernel zones '}(auto_movable_ratio guidance: "
                        f"{AUTO_MOVABLE_RATIO}%): unmovable kernel allocations may run short")
    warnings.extend(state.notes)
    return PlanResult(profile=state.machine.source, machine=state.machine.name, semantics=state.semantics.name,
                      block_size=block_size, asked_bytes=size, attempts=tuple(attempts), left=left,
                      candidates=len(pool), zone=zone, warnings=tuple(warnings))


def plan(machine: Machine, size: int, semantics: Optional[str] = None, blocks: Optional[Sequence[int]] = None,
         zone: Optional[str] = None) -> Tuple[PlanResult, MachineState]:
    """Simulate ``chmem -d SIZE``; returns the result and the machine state afterwards."""
    state = MachineState(machine, semantics)
    return run_plan(state, size, blocks, zone), state


__all__ = ["plan", "run_plan", "parse_plan_size", "candidates", "valid_zones_match", "CHMEM_ZONES"]
