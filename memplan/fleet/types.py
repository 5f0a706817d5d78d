"""Result types of ``memplan fleet``: one small summary per host, and the fleet's totals.

Frozen dataclasses that ``memplan.fleet.compute`` returns and both renderers (rich, JSON) consume,
like ``memplan.core.results`` for ``simulate``. A ``HostSummary`` is what a fleet task sends back
from a worker process or a Dask worker: counters and causes, never page arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional, Tuple


class FleetMode(str, Enum):
    """Which question every host is asked."""

    #: ``memplan simulate``: every online block judged on its own
    SIMULATE = "simulate"
    #: ``memplan plan --size SIZE``: chmem -d, block after block
    PLAN = "plan"
    #: ``memplan unplug --by SIZE``: the virtio-mem driver, on every device (or one)
    UNPLUG = "unplug"


class InputKind(str, Enum):
    """What an INPUT path holds."""

    PROFILE = "profile"
    SYSROOT = "sysroot"
    #: nothing usable: the host's row carries the error
    INVALID = "invalid"


@dataclass(frozen=True)
class CauseCount:
    """One blocking cause inside one zone of one host.

    ``cause`` is the culprit page kind's profile name (``slab``, ``pinned``, ...), or, when no
    page is to blame, the kernel's reason string (``memory holes``, ``multizone range``,
    ``notifier failure``, ...) or ``no migration target`` (migration fails with -ENOMEM).
    """

    cause: str
    #: memory blocks (simulate, plan) or device blocks (unplug) it blocks
    blocks: int
    #: memory it keeps from being taken: whole memory blocks (simulate, plan) or the plug units
    #: left plugged because of it (unplug)
    bytes: int


@dataclass(frozen=True)
class ZoneSummary:
    """One zone of one host (``zone`` is the sysfs name or ``none`` for a multi-zone block)."""

    zone: str
    blocks: int
    #: blocks that go offline (simulate, plan) or are fully unplugged and removed (unplug)
    offlined: int
    fails: int
    hangs: int
    #: memory that can be taken: offlinable blocks (simulate), offlined blocks (plan),
    #: unplugged memory (unplug)
    offlinable_bytes: int
    #: memory the causes keep (sum of ``causes[].bytes``)
    blocked_bytes: int
    causes: Tuple[CauseCount, ...] = ()


@dataclass(frozen=True)
class DeviceSummary:
    """``--unplug-by``: one virtio-mem device of the host."""

    device: str
    mode: str
    plugged_before_bytes: int
    plugged_after_bytes: int
    #: what was asked of this device (``--unplug-by``; may exceed what is plugged)
    asked_bytes: int
    #: why the driver stopped (``memplan unplug``'s ``stop``)
    stop: str
    errno: Optional[str] = None

    @property
    def achieved_bytes(self) -> int:
        return self.plugged_before_bytes - self.plugged_after_bytes


@dataclass(frozen=True)
class HostSummary:
    """The answer for one host. A host that could not be judged has ``error`` set, zeros
    and empty tuples everywhere else."""

    host: str
    input: InputKind
    mode: FleetMode
    machine: Optional[str] = None
    semantics: Optional[str] = None
    error: Optional[str] = None
    #: memory blocks judged (simulate), chmem attempts (plan), device blocks the driver visited (unplug)
    blocks: int = 0
    offlined: int = 0
    fails: int = 0
    hangs: int = 0
    #: online memory of the host (online memory blocks times the block size)
    memory_bytes: int = 0
    offlinable_bytes: int = 0
    #: simulate: online memory that cannot be offlined; plan/unplug: asked minus achieved
    unreclaimable_bytes: int = 0
    #: memory the blocking causes keep (== unreclaimable in simulate)
    blocked_bytes: int = 0
    #: plan/unplug only
    asked_bytes: Optional[int] = None
    achieved_bytes: Optional[int] = None
    #: snapshot hosts: blocks whose verdict a snapshot cannot decide (confidence ``unknown``)
    unknown_blocks: int = 0
    zones: Tuple[ZoneSummary, ...] = ()
    devices: Tuple[DeviceSummary, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def succeeded(self) -> bool:
        """``--check``: the host reaches the asked size (plan/unplug) or has offlinable memory."""
        if self.error is not None:
            return False
        if self.asked_bytes is not None:
            return (self.achieved_bytes or 0) >= self.asked_bytes
        return self.offlinable_bytes > 0

    def causes(self) -> Tuple[Tuple[str, CauseCount], ...]:
        """Every (zone, cause) of the host."""
        return tuple((z.zone, c) for z in self.zones for c in z.causes)


@dataclass(frozen=True)
class FleetCause:
    """A blocking cause across the fleet: on how many hosts, and its share of the blocked memory."""

    cause: str
    zone: str
    hosts: int
    blocks: int
    bytes: int
    #: ``bytes`` over the fleet's blocked memory (0 when nothing is blocked)
    share: float


@dataclass(frozen=True)
class ZoneTotal:
    zone: str
    hosts: int
    blocks: int
    offlinable_bytes: int
    blocked_bytes: int


@dataclass(frozen=True)
class FleetReport:
    """Every host (sorted: most unreclaimable memory first, errors last) and the fleet's totals."""

    mode: FleetMode
    semantics: Optional[str]
    hosts: Tuple[HostSummary, ...]
    zones: Tuple[ZoneTotal, ...]
    #: sorted: most hosts first, then most bytes
    causes: Tuple[FleetCause, ...]
    #: plan: the size asked of every host; unplug: the size asked of every device
    size_bytes: Optional[int] = None
    device: Optional[str] = None

    @property
    def errors(self) -> int:
        return sum(1 for h in self.hosts if h.error is not None)

    @property
    def memory_bytes(self) -> int:
        return sum(h.memory_bytes for h in self.hosts)

    @property
    def offlinable_bytes(self) -> int:
        return sum(h.offlinable_bytes for h in self.hosts)

    @property
    def unreclaimable_bytes(self) -> int:
        return sum(h.unreclaimable_bytes for h in self.hosts)

    @property
    def blocked_bytes(self) -> int:
        return sum(h.blocked_bytes for h in self.hosts)

    @property
    def asked_bytes(self) -> Optional[int]:
        if self.mode is FleetMode.SIMULATE:
            return None
        return sum(h.asked_bytes or 0 for h in self.hosts if h.error is None)

    @property
    def achieved_bytes(self) -> Optional[int]:
        if self.mode is FleetMode.SIMULATE:
            return None
        return sum(h.achieved_bytes or 0 for h in self.hosts if h.error is None)

    @property
    def succeeded(self) -> int:
        return sum(1 for h in self.hosts if h.succeeded)
