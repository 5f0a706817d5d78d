"""Result types of capacity plans: ``memplan plan`` (chmem -d) and ``memplan unplug`` (virtio-mem).

Frozen dataclasses that the core returns and both renderers (rich, JSON) consume, like
``memplan.core.results`` for ``simulate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, Iterable, Optional, Tuple

from memplan.core.model import Errno, PageKind, VirtioMemMode, Zone
from memplan.core.results import BlockVerdict, Confidence, Outcome
from memplan.core.units import format_size
from memplan.kernel.virtio_mem import BbmState, SbmState

#: ``auto_movable_ratio`` default (mm/memory_hotplug.c): ZONE_MOVABLE may be at most 301 % of
#: the kernel zones before the auto-movable online policy stops onlining to ZONE_MOVABLE.
AUTO_MOVABLE_RATIO = 301

#: virtio-mem's retry timer (``VIRTIO_MEM_RETRY_TIMER_MIN_MS`` / ``_MAX_MS``), in seconds.
RETRY_MIN_S = 50
RETRY_MAX_S = 300


class UnplugStop(str, Enum):
    """Why the virtio-mem driver stopped working on a lower ``requested-size``."""

    #: the plugged size reached the requested size
    REACHED = "reached"
    #: only offline blocks were unplugged (``unplug_online=0``)
    UNPLUG_ONLINE = "unplug_online"
    #: the rest of the request is smaller than the driver's unplug unit
    GRANULARITY = "granularity"
    #: -EBUSY: the remaining plugged memory is busy; the driver keeps retrying
    BUSY = "busy"
    #: -ENOMEM: no memory left to migrate to; the driver keeps retrying
    NO_MEMORY = "no_memory"
    #: ``offline_and_remove_memory()`` never returns: the work item hangs
    HUNG = "hung"
    #: the driver is not loaded: nobody acts on ``requested-size``
    DRIVER = "driver"


#: the state of a device block with nothing plugged, in either mode
_UNUSED = frozenset({SbmState.UNUSED.value, BbmState.UNUSED.value})


class WorkTrigger(str, Enum):
    """What started a run of the driver's work item (``virtio_mem_run_wq()``)."""

    #: the device changed ``requested-size`` (config-change interrupt)
    REQUEST = "request"
    #: ``virtio_mem_retry()`` queued the work again right away
    IMMEDIATE = "immediate"
    #: the retry timer fired (``VIRTIO_MEM_RETRY_TIMER_MIN_MS`` doubling to ``_MAX_MS``)
    TIMER = "timer"


def _split(items: Iterable[Tuple[Optional[Confidence], int]]) -> Dict[Confidence, int]:
    """Bytes per confidence (every level present; ``None`` is certain)."""
    out = {level: 0 for level in Confidence}
    for level, nbytes in items:
        out[level or Confidence.CERTAIN] += nbytes
    return out


@dataclass(frozen=True)
class ZoneMemory:
    """Online memory of one zone of one node."""

    node: int
    zone: Optional[Zone]
    free_bytes: int
    #: present memory of the online blocks (vmemmap and fake-offline pages included)
    total_bytes: int


@dataclass(frozen=True)
class MemoryLeft:
    """What is left online after a plan, per zone and node."""

    zones: Tuple[ZoneMemory, ...]
    #: ``False``: the input holds no page contents (``Machine.page_data``), so the free memory
    #: is a stand-in (every page free) and renderers show it as unknown; totals stay known
    free_known: bool = True

    @property
    def free_bytes(self) -> int:
        return sum(z.free_bytes for z in self.zones)

    @property
    def total_bytes(self) -> int:
        return sum(z.total_bytes for z in self.zones)

    def nodes(self) -> Dict[int, Tuple[int, int]]:
        """Per node: (free bytes, total bytes)."""
        out: Dict[int, Tuple[int, int]] = {}
        for z in self.zones:
            free, total = out.get(z.node, (0, 0))
            out[z.node] = (free + z.free_bytes, total + z.total_bytes)
        return dict(sorted(out.items()))

    @property
    def movable_bytes(self) -> int:
        return sum(z.total_bytes for z in self.zones if z.zone is Zone.MOVABLE)

    @property
    def kernel_bytes(self) -> int:
        # A boot block spanning zones (valid_zones "none") holds kernel-zone memory (DMA/DMA32).
        return sum(z.total_bytes for z in self.zones if z.zone is None or z.zone.is_kernel)

    @property
    def movable_ratio_percent(self) -> Optional[int]:
        """ZONE_MOVABLE present memory as a percentage of the kernel zones' (``None``: no kernel zone)."""
        if not self.kernel_bytes:
            return None
        return self.movable_bytes * 100 // self.kernel_bytes

    @property
    def ratio_exceeded(self) -> bool:
        ratio = self.movable_ratio_percent
        return (ratio is None and self.movable_bytes > 0) or (ratio is not None and ratio > AUTO_MOVABLE_RATIO)


@dataclass(frozen=True)
class PlanResult:
    """``memplan plan``: what ``chmem -d SIZE`` would do, attempt by attempt."""

    profile: str
    machine: str
    semantics: str
    block_size: int
    asked_bytes: int
    #: every ``echo offline > memoryN/state`` chmem would write, in order
    attempts: Tuple[BlockVerdict, ...]
    left: MemoryLeft
    #: candidate blocks chmem would consider (online, matching ``--blocks`` / ``--zone``)
    candidates: int
    zone: Optional[str] = None
    warnings: Tuple[str, ...] = ()
    #: hanging writes were interrupted and the plan went on (a tool that signals each one);
    #: otherwise chmem blocks at the first one (``hang``)
    skip_hangs: bool = False
    #: the write chmem would block in (its write to ``memoryN/state`` never returns)
    hang: Optional[BlockVerdict] = None

    @property
    def offlined(self) -> Tuple[int, ...]:
        return tuple(a.block for a in self.attempts if a.result is Outcome.OFFLINED)

    @property
    def achieved_bytes(self) -> int:
        return len(self.offlined) * self.block_size

    @property
    def achieved_bytes_by_confidence(self) -> Dict[Confidence, int]:
        """``achieved_bytes`` split by the confidence of the writes that offlined it."""
        return _split((a.confidence, self.block_size) for a in self.attempts if a.result is Outcome.OFFLINED)

    @property
    def end_line(self) -> Optional[str]:
        """How chmem ends when SIZE is not reached: blocked in a hanging write (Ctrl-C kills it), or
        its own ``warnx(_("Could only disable %s of memory"))``; ``None`` when SIZE is reached."""
        done = format_size(self.achieved_bytes)
        if self.hang is not None:
            c = self.hang.culprit
            where = f" ({c.kind.label} page {c.pfn:#x})" if c is not None else ""
            return f"chmem would hang at block {self.hang.block}{where}: Ctrl-C ends chmem with {done} offlined"
        if self.achieved_bytes < self.asked_bytes:
            return f"Could only disable {done} of memory"
        return None


@dataclass(frozen=True)
class UnitCulprit:
    """Why one sub-block (SBM) or section (BBM) stayed plugged."""

    #: sub-block index in its memory block (SBM) or section index in its big block (BBM);
    #: ``None`` for a whole-block attempt (SBM one-shot, or ``offline_and_remove_memory()``)
    unit: Optional[int]
    errno: Errno
    #: ``alloc_contig_range()`` step (``isolate``, ``migrate``, ``test_isolated``) or the
    #: offline step when ``offline_and_remove_memory()`` failed
    step: str
    pfn: Optional[int]
    kind: Optional[PageKind]
    refcount: Optional[int]
    attempts: int = 1


@dataclass(frozen=True)
class UnplugBlock:
    """One memory block (SBM) or big block (BBM) of the device, before and after."""

    block: int
    memory_blocks: Tuple[int, ...]
    zone: Optional[Zone]
    state_before: str
    state_after: str
    #: units unplugged by this request: sub-block indexes (SBM) or ``(0,)`` for the big block (BBM)
    unplugged_units: Tuple[int, ...]
    #: units still plugged afterwards
    plugged_units_left: Tuple[int, ...]
    culprits: Tuple[UnitCulprit, ...] = ()
    #: the last ``offline_and_remove_memory()`` verdict per memory block, if the driver tried it
    removal: Tuple[BlockVerdict, ...] = ()
    #: the driver looked at this block during the request
    visited: bool = False
    #: how sure the unplug of this block is (what ``simulate`` says of the memory blocks it
    #: fake-offlined; ``certain`` for memory that was offline already or a profile)
    confidence: Confidence = Confidence.CERTAIN
    blind_spots: Tuple[str, ...] = ()

    @property
    def removed(self) -> bool:
        """The request took the whole block away: it ends ``UNUSED`` (SBM and BBM alike) and did
        not start so."""
        return self.state_after in _UNUSED and self.state_before not in _UNUSED

    def unplugged_bytes(self, mode: VirtioMemMode, unit_size: int, device_block_size: int) -> int:
        if mode is VirtioMemMode.SBM:
            return len(self.unplugged_units) * unit_size
        return device_block_size if self.unplugged_units else 0


@dataclass(frozen=True)
class WorkRun:
    """One run of ``virtio_mem_run_wq()``."""

    run: int
    at_seconds: int
    #: what queued it: ``request`` (config change), ``immediate`` (memory was removed:
    #: ``virtio_mem_retry()``) or ``timer`` (the retry timer)
    trigger: WorkTrigger
    errno: Optional[Errno]
    unplugged_bytes: int


@dataclass(frozen=True)
class UnplugResult:
    """``memplan unplug``: the virtio-mem driver's response to a lower ``requested-size``."""

    profile: str
    machine: str
    semantics: str
    device: str
    mode: VirtioMemMode
    unit_size: int
    device_block_size: int
    requested_bytes: int
    plugged_before_bytes: int
    plugged_after_bytes: int
    blocks: Tuple[UnplugBlock, ...]
    runs: Tuple[WorkRun, ...]
    #: why the driver stopped
    stop: UnplugStop
    left: MemoryLeft
    #: times (s) of the next retries after the last run; then every ``RETRY_MAX_S``
    next_retries: Tuple[int, ...] = ()
    warnings: Tuple[str, ...] = ()
    #: the unplug relies on blocks that are not ``certain``: one line per group, with the blind spots
    caveats: Tuple[str, ...] = ()

    @property
    def asked_bytes(self) -> int:
        return max(self.plugged_before_bytes - self.requested_bytes, 0)

    @property
    def achieved_bytes_by_confidence(self) -> Dict[Confidence, int]:
        """``achieved_bytes`` split by the confidence of the blocks it came from."""
        return _split((b.confidence, b.unplugged_bytes(self.mode, self.unit_size, self.device_block_size))
                      for b in self.blocks)

    @property
    def achieved_bytes(self) -> int:
        return self.plugged_before_bytes - self.plugged_after_bytes

    @property
    def errno(self) -> Optional[Errno]:
        return self.runs[-1].errno if self.runs else None


@dataclass(frozen=True)
class SweepPoint:
    requested_bytes: int
    plugged_after_bytes: int
    stop: UnplugStop
    errno: Optional[Errno]


@dataclass(frozen=True)
class SweepResult:
    """``memplan unplug --sweep``: achievable size for requested sizes from 0 to the plugged size."""

    profile: str
    machine: str
    semantics: str
    device: str
    mode: VirtioMemMode
    unit_size: int
    step: int
    plugged_before_bytes: int
    points: Tuple[SweepPoint, ...] = field(default=())
    warnings: Tuple[str, ...] = ()

    @property
    def floor_bytes(self) -> int:
        """The smallest plugged size any request reaches (how far the guest can shrink)."""
        return min((p.plugged_after_bytes for p in self.points), default=self.plugged_before_bytes)
