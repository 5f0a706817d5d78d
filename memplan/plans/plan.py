"""``memplan plan``: what ``chmem -d SIZE`` would do (util-linux sys-utils/chmem.c, ``chmem_size()``).

chmem walks the memory block directories from the highest block down, skips blocks that are
already offline (and, with ``--zone``, blocks whose ``valid_zones`` does not start with the
zone name, compared case-insensitively over the zone name's length), writes ``offline`` to
``memoryN/state`` and counts a block only when the write succeeds, until SIZE is reached.
Each write goes through the offline pipeline against the machine state the earlier writes
left behind. The write is synchronous: ``offline_pages()`` retries until a signal arrives, so
a write that would hang blocks chmem there; the plan stops at it and says what Ctrl-C leaves
(SIGINT ends the write with ``-EINTR`` and kills chmem: no "Could only disable" line). With
``skip_hangs`` it models a tool that interrupts each hanging write with a signal and goes on.
The migrations a failing or interrupted write made stay made, as in the kernel.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from memplan.core.errors import UsageError
from memplan.core.machine import Machine
from memplan.core.results import BlockVerdict, Outcome
from memplan.core.units import format_size, parse_block_spans, parse_chmem_size
from memplan.plans.confidence import WriteAssessor
from memplan.plans.state import MachineState
from memplan.plans.types import AUTO_MOVABLE_RATIO, PlanResult

#: chmem's zone names (``zone_names[]``).
CHMEM_ZONES = ("DMA", "DMA32", "Normal", "Highmem", "Movable", "Device")


#: a ``--blocks`` value: lsmem/chmem range text, or block ids
BlockSpec = Union[str, Sequence[int]]


def parse_plan_size(text: str, block_size: int) -> int:
    """chmem's SIZE (``parse_single_param()``): util-linux ``strtosize()``, a SIZE ending in a
    digit is MiB, and it must be a multiple of the memory block size."""
    try:
        size = parse_chmem_size(text)
    except ValueError as exc:
        raise UsageError(f"--size: {exc}") from None
    check_aligned(size, block_size, text)
    return size


def check_aligned(size: int, block_size: int, text: Optional[str] = None) -> None:
    """chmem's ``Size must be aligned to memory block size (128M)``."""
    if size % block_size:
        what = f"--size {text} is {format_size(size)}: " if text is not None else ""
        raise UsageError(f"{what}Size must be aligned to memory block size ({format_size(block_size)})")


def block_spans(blocks: BlockSpec) -> List[Tuple[int, int]]:
    """``--blocks`` as inclusive spans (a range stays two numbers, whatever its length)."""
    if isinstance(blocks, str):
        try:
            return parse_block_spans(blocks)
        except ValueError as exc:
            raise UsageError(f"--blocks: {exc}") from None
    return [(int(b), int(b)) for b in blocks]


def blocks_in_spans(ids: np.ndarray, spans: Sequence[Tuple[int, int]]) -> Tuple[np.ndarray, List[Tuple[int, int]]]:
    """The ids (sorted) inside the spans, and the parts of the spans no id covers: chmem only
    writes to the ``memoryN`` directories that exist. Costs O(spans + ids), never the spans' length."""
    top = np.iinfo(np.int64).max
    inside = np.zeros(len(ids), dtype=bool)
    absent: List[Tuple[int, int]] = []
    for lo, hi in spans:
        a = int(np.searchsorted(ids, min(lo, top), side="left"))
        b = int(np.searchsorted(ids, min(hi, top), side="right"))
        inside[a:b] = True
        here = [int(x) for x in ids[a:b]]
        edge = lo
        for block in here:
            if block > edge:
                absent.append((edge, block - 1))
            edge = block + 1
        if edge <= hi:
            absent.append((edge, hi))
    return ids[inside], absent


def spans_text(spans: Sequence[Tuple[int, int]], limit: int = 6) -> str:
    parts = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in spans[:limit]]
    return ",".join(parts) + (f",... ({len(spans)} ranges)" if len(spans) > limit else "")


def valid_zones_match(valid_zones: str, zone: str) -> bool:
    """chmem: ``c_strncasecmp(valid_zones, zone_name, strlen(zone_name)) == 0`` (so ``DMA``
    also matches a ``DMA32`` block)."""
    return valid_zones[:len(zone)].lower() == zone.lower()


def candidates(state: MachineState, blocks: Optional[BlockSpec], zone: Optional[str],
               notes: Optional[List[str]] = None) -> List[int]:
    """Online blocks chmem would try, highest first (``notes`` gets a line for ``--blocks``
    that name blocks the machine does not have)."""
    ids = np.sort(state.ids[state.present])
    if blocks is not None:
        ids, absent = blocks_in_spans(ids, block_spans(blocks))
        if absent and notes is not None:
            count = sum(hi - lo + 1 for lo, hi in absent)
            notes.append(f"--blocks: {count} block{'s' if count != 1 else ''} not on {state.machine.name} "
                         f"({spans_text(absent)}): skipped, as chmem only writes to the memoryN directories "
                         "that exist")
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


def run_plan(state: MachineState, size: int, blocks: Optional[BlockSpec] = None,
             zone: Optional[str] = None, skip_hangs: bool = False) -> PlanResult:
    """Offline ``size`` bytes the way chmem does (mutates ``state``): stop at the first write
    that would hang, or with ``skip_hangs`` interrupt it and go on."""
    block_size = state.geometry.memory_block_size
    check_aligned(size, block_size)
    if zone is not None:
        matches = [z for z in CHMEM_ZONES if z.lower() == zone.lower()]
        if not matches:
            raise UsageError(f"unknown memory zone: {zone} (chmem knows {', '.join(CHMEM_ZONES)})")
        zone = matches[0]
    todo = size // block_size
    notes: List[str] = []
    pool = candidates(state, blocks, zone, notes)
    attempts: List[BlockVerdict] = []
    hang: Optional[BlockVerdict] = None
    rate = WriteAssessor(state) if pool and todo else None
    for block in pool:
        if not todo or rate is None:
            break
        verdict = rate.offline(state, block)
        attempts.append(verdict)
        if verdict.result is Outcome.OFFLINED:
            todo -= 1
        elif verdict.result is Outcome.HANGS and not skip_hangs:
            hang = verdict
            break
    left = state.left()
    warnings: List[str] = list(state.machine.warnings) + notes
    if left.ratio_exceeded:
        ratio = left.movable_ratio_percent
        warnings.append(f"ZONE_MOVABLE is {'all' if ratio is None else f'{ratio}%'} of the online memory left "
                        f"{'' if ratio is None else 'relative to the kernel zones '}(auto_movable_ratio guidance: "
                        f"{AUTO_MOVABLE_RATIO}%): unmovable kernel allocations may run short")
    warnings.extend(state.notes)
    return PlanResult(profile=state.machine.source, machine=state.machine.name, semantics=state.semantics.name,
                      block_size=block_size, asked_bytes=size, attempts=tuple(attempts), left=left,
                      candidates=len(pool), zone=zone, warnings=tuple(warnings), skip_hangs=skip_hangs,
                      hang=hang)


def plan(machine: Machine, size: int, semantics: Optional[str] = None, blocks: Optional[BlockSpec] = None,
         zone: Optional[str] = None, skip_hangs: bool = False) -> Tuple[PlanResult, MachineState]:
    """Simulate ``chmem -d SIZE``; returns the result and the machine state afterwards.

    By default chmem's contract: its write to ``memoryN/state`` is synchronous, so the plan
    stops at the first block that hangs (what Ctrl-C leaves). ``skip_hangs=True`` models a tool
    that interrupts each hanging write with a signal and goes on (``--skip-hangs``)."""
    state = MachineState(machine, semantics)
    return run_plan(state, size, blocks, zone, skip_hangs), state


__all__ = ["plan", "run_plan", "parse_plan_size", "check_aligned", "candidates", "valid_zones_match",
           "blocks_in_spans", "CHMEM_ZONES"]
