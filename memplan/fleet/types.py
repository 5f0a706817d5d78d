"""Result types of ``memplan fleet``: one small summary per host, and the fleet's totals.

Frozen dataclasses that ``memplan.fleet.compute`` returns and both renderers (rich, JSON) consume,
like ``memplan.core.results`` for ``simulate``. A ``HostSummary`` is what a fleet task sends back
from a worker process or a Dask worker: counters and causes, never page arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Dict, Iterable, Mapping, Optional, Tuple

from memplan.core.model import VirtioMemMode
from memplan.core.results import Confidence
from memplan.plans.types import UnplugStop


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


#: Confidence levels from the surest down: trusting a level trusts every level before it.
_DOUBT = {level: rank for rank, level in enumerate(Confidence)}


def trusts(trust: Confidence, level: Confidence) -> bool:
    """Whether ``--trust TRUST`` counts memory whose verdict has confidence ``level``
    (``likely`` counts certain and likely; ``unknown`` counts everything)."""
    return _DOUBT[level] <= _DOUBT[trust]


#: For each ``--trust`` level, the ``ConfidenceBytes`` fields it counts (the fleet's parent asks
#: this of every host).
_TRUSTED: Dict[Confidence, Tuple[str, ...]] = {
    trust: tuple(level.value for level in Confidence if trusts(trust, level)) for trust in Confidence}


@dataclass(frozen=True)
class ConfidenceBytes:
    """Memory split by the confidence of the verdicts it rests on (``certain``: nothing the
    input cannot see could change it; profiles are exact, so all of their memory is certain)."""

    certain: int = 0
    likely: int = 0
    unknown: int = 0

    @classmethod
    def of(cls, level: Confidence, nbytes: int) -> "ConfidenceBytes":
        return cls(**{level.value: nbytes})

    @classmethod
    def from_mapping(cls, split: Mapping[Confidence, int]) -> "ConfidenceBytes":
        return cls(**{level.value: int(split.get(level, 0)) for level in Confidence})

    @classmethod
    def total_of(cls, splits: Iterable["ConfidenceBytes"]) -> "ConfidenceBytes":
        certain = likely = unknown = 0
        for s in splits:
            certain += s.certain
            likely += s.likely
            unknown += s.unknown
        return cls(certain, likely, unknown)

    def __add__(self, other: "ConfidenceBytes") -> "ConfidenceBytes":
        return ConfidenceBytes(self.certain + other.certain, self.likely + other.likely,
                               self.unknown + other.unknown)

    def get(self, level: Confidence) -> int:
        value: int = getattr(self, level.value)
        return value

    @property
    def total(self) -> int:
        return self.certain + self.likely + self.unknown

    def trusted(self, trust: Confidence) -> int:
        """The memory ``--trust TRUST`` counts."""
        total = 0
        for name in _TRUSTED[trust]:
            total += getattr(self, name)
        return total

    def as_dict(self) -> Dict[str, int]:
        """``{"certain": N, "likely": N, "unknown": N}`` (every level, in that order)."""
        return {level.value: self.get(level) for level in Confidence}


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
    mode: VirtioMemMode
    plugged_before_bytes: int
    plugged_after_bytes: int
    #: what was asked of this device (``--unplug-by``; may exceed what is plugged)
    asked_bytes: int
    #: why the driver stopped (``memplan unplug``'s ``stop``)
    stop: UnplugStop
    errno: Optional[str] = None

    @property
    def achieved_bytes(self) -> int:
        return self.plugged_before_bytes - self.plugged_after_bytes


@dataclass(frozen=True)
class HostSummary:
    """The answer for one host.

    A host that could not be judged has ``error`` set, and every count and byte figure 0 but
    ``asked_bytes`` (what the question asked of it), every tuple empty (nothing was judged):
    the same fields and types as any other row. ``machine`` is ``None`` when the input was not
    read far enough to name it, ``semantics`` when nothing was judged.
    """

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
    #: memory that can be taken: offlinable blocks (simulate), offlined blocks (plan), unplugged
    #: memory (unplug)
    offlinable_bytes: int = 0
    #: ``offlinable_bytes`` split by the confidence of the verdicts it rests on
    offlinable_by_confidence: ConfidenceBytes = ConfidenceBytes()
    #: simulate: online memory that cannot be offlined; plan/unplug: asked minus achieved
    unreclaimable_bytes: int = 0
    #: memory the blocking causes keep (== unreclaimable in simulate)
    blocked_bytes: int = 0
    #: plan: SIZE; unplug: SIZE times the devices asked (an error row: SIZE); simulate asks no size: 0
    asked_bytes: int = 0
    #: plan/unplug: what was reached (== ``offlinable_bytes``); simulate: 0
    achieved_bytes: int = 0
    #: of ``blocks``, those whose verdict the input cannot decide (confidence ``unknown``)
    unknown_blocks: int = 0
    zones: Tuple[ZoneSummary, ...] = ()
    devices: Tuple[DeviceSummary, ...] = ()
    #: what reading or judging the host warned about (the machine's and the simulation's warnings)
    warnings: Tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def achieved_by_confidence(self) -> ConfidenceBytes:
        """``achieved_bytes`` split by confidence (nothing in simulate mode)."""
        return ConfidenceBytes() if self.mode is FleetMode.SIMULATE else self.offlinable_by_confidence

    def reaches(self, trust: Confidence = Confidence.LIKELY) -> bool:
        """``--check``: the host reaches the asked size (plan/unplug) or has offlinable memory
        (simulate), counting only memory whose confidence ``--trust`` accepts."""
        if self.error is not None:
            return False
        trusted = self.offlinable_by_confidence.trusted(trust)
        if self.mode is FleetMode.SIMULATE:
            return trusted > 0
        return trusted >= self.asked_bytes

    @property
    def succeeded(self) -> bool:
        """``reaches()`` with the default trust (certain and likely memory)."""
        return self.reaches()

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
class FleetTotals:
    """The fleet's sums over its hosts (error rows add nothing but their count)."""

    hosts: int = 0
    errors: int = 0
    #: hosts that ``reaches(trust)``
    succeeded: int = 0
    memory_bytes: int = 0
    offlinable_bytes: int = 0
    offlinable_by_confidence: ConfidenceBytes = ConfidenceBytes()
    unreclaimable_bytes: int = 0
    blocked_bytes: int = 0
    asked_bytes: int = 0
    achieved_bytes: int = 0
    unknown_blocks: int = 0
    #: hosts whose row carries warnings
    warned: int = 0

    @property
    def judged(self) -> int:
        return self.hosts - self.errors


@dataclass(frozen=True)
class FleetReport:
    """Every host (sorted: most unreclaimable memory first, errors last; empty when the hosts
    were streamed and not kept) and the fleet's totals."""

    mode: FleetMode
    semantics: Optional[str]
    hosts: Tuple[HostSummary, ...]
    zones: Tuple[ZoneTotal, ...]
    #: sorted: most hosts first, then most bytes
    causes: Tuple[FleetCause, ...]
    #: plan: the size asked of every host; unplug: the size asked of every device
    size_bytes: Optional[int] = None
    device: Optional[str] = None
    totals: FleetTotals = FleetTotals()
    #: which confidence ``succeeded`` (and ``--check``) counts
    trust: Confidence = Confidence.LIKELY
    #: the fleet's own warnings (error rows, hosts with warnings)
    warnings: Tuple[str, ...] = ()

    @property
    def errors(self) -> int:
        return self.totals.errors

    @property
    def judged(self) -> int:
        return self.totals.judged

    @property
    def memory_bytes(self) -> int:
        return self.totals.memory_bytes

    @property
    def offlinable_bytes(self) -> int:
        return self.totals.offlinable_bytes

    @property
    def offlinable_by_confidence(self) -> ConfidenceBytes:
        return self.totals.offlinable_by_confidence

    @property
    def unreclaimable_bytes(self) -> int:
        return self.totals.unreclaimable_bytes

    @property
    def blocked_bytes(self) -> int:
        return self.totals.blocked_bytes

    @property
    def asked_bytes(self) -> int:
        return self.totals.asked_bytes

    @property
    def achieved_bytes(self) -> int:
        return self.totals.achieved_bytes

    @property
    def achieved_by_confidence(self) -> ConfidenceBytes:
        return ConfidenceBytes() if self.mode is FleetMode.SIMULATE else self.totals.offlinable_by_confidence

    @property
    def unknown_blocks(self) -> int:
        return self.totals.unknown_blocks

    @property
    def succeeded(self) -> int:
        return self.totals.succeeded
