"""``memplan fleet``: folding host summaries, in whatever order they arrive, into the fleet's
report, and the fleet's exit status.

The fold keeps running totals only (counters per zone and per cause, sums per confidence), so
the parent's work per host is a few dictionary updates whatever the fleet's size; the host rows
themselves are kept only when the output lists them (the table, ``--json``), not for ``--jsonl``.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

from memplan.core.results import Confidence
from memplan.core.status import ExitStatus, check_status
from memplan.fleet.compute import ZONE_ORDER, FleetOptions
from memplan.fleet.types import (
    ConfidenceBytes,
    FleetCause,
    FleetReport,
    FleetTotals,
    HostSummary,
    ZoneTotal,
)

#: The host counters whose fleet total is their sum (``FleetTotals`` has a field for each;
#: ``FleetAggregate.add()`` adds each by name).
SUMMED = ("memory_bytes", "offlinable_bytes", "unreclaimable_bytes", "blocked_bytes", "asked_bytes", "achieved_bytes",
          "unknown_blocks")


def host_order(host: HostSummary) -> Tuple[bool, int, int, str]:
    """Most unreclaimable memory first; error rows last; then by path."""
    return (host.error is not None, -host.unreclaimable_bytes, -host.blocked_bytes, host.host)


def _zone_rank(zone: str) -> int:
    return ZONE_ORDER.get(zone, len(ZONE_ORDER))


class FleetAggregate:
    """Folds host summaries, in arrival order, into the fleet's report.

    ``trust`` is the least sure confidence that counts towards a host reaching its goal
    (``--check``, "Hosts reaching it"); ``keep_hosts=False`` keeps the totals only.
    """

    def __init__(self, options: FleetOptions, trust: Confidence = Confidence.LIKELY, keep_hosts: bool = True) -> None:
        self.options = options
        self.trust = trust
        self.keep_hosts = keep_hosts
        self.hosts: List[HostSummary] = []
        self._counts: Dict[str, int] = dict.fromkeys(("hosts", "errors", "succeeded", *SUMMED, "warned"), 0)
        #: the fleet's offlinable memory by confidence: certain, likely, unknown
        self._by_confidence = [0, 0, 0]
        #: zone -> [hosts, blocks, offlinable bytes, blocked bytes]
        self._zones: Dict[str, List[int]] = {}
        #: (cause, zone) -> [hosts, blocks, bytes]
        self._causes: Dict[Tuple[str, str], List[int]] = {}

    def add(self, host: HostSummary) -> None:
        """Fold one host in: a few additions (the parent does this for every host of the fleet)."""
        if self.keep_hosts:
            self.hosts.append(host)
        c = self._counts
        c["hosts"] += 1
        if host.error is not None:
            c["errors"] += 1
            return
        c["succeeded"] += host.reaches(self.trust)
        c["memory_bytes"] += host.memory_bytes
        c["offlinable_bytes"] += host.offlinable_bytes
        c["unreclaimable_bytes"] += host.unreclaimable_bytes
        c["blocked_bytes"] += host.blocked_bytes
        c["asked_bytes"] += host.asked_bytes
        c["achieved_bytes"] += host.achieved_bytes
        c["unknown_blocks"] += host.unknown_blocks
        c["warned"] += bool(host.warnings)
        split, total = host.offlinable_by_confidence, self._by_confidence
        total[0] += split.certain
        total[1] += split.likely
        total[2] += split.unknown
        zones, causes = self._zones, self._causes
        for z in host.zones:
            t = zones.get(z.zone)
            if t is None:
                t = zones[z.zone] = [0, 0, 0, 0]
            t[0] += 1
            t[1] += z.blocks
            t[2] += z.offlinable_bytes
            t[3] += z.blocked_bytes
            for cause in z.causes:
                key = (cause.cause, z.zone)
                u = causes.get(key)
                if u is None:
                    u = causes[key] = [0, 0, 0]
                u[0] += 1
                u[1] += cause.blocks
                u[2] += cause.bytes

    @property
    def totals(self) -> FleetTotals:
        return FleetTotals(offlinable_by_confidence=ConfidenceBytes(*self._by_confidence), **self._counts)

    def warnings(self) -> Tuple[str, ...]:
        """What the fleet warns about: hosts that could not be judged, hosts with warnings."""
        t = self.totals
        out = []
        if t.errors:
            out.append(f"{t.errors} of {t.hosts} hosts could not be judged (error rows)")
        if t.warned:
            out.append(f"{t.warned} host{'s' if t.warned != 1 else ''} came with warnings (each host's \"warnings\" "
                       f"in --json and --jsonl)")
        return tuple(out)

    def report(self) -> FleetReport:
        blocked = self._counts["blocked_bytes"]
        causes = tuple(sorted(
            (FleetCause(cause=cause, zone=zone, hosts=n, blocks=blocks, bytes=nbytes,
                        share=(nbytes / blocked) if blocked else 0.0)
             for (cause, zone), (n, blocks, nbytes) in self._causes.items()),
            key=lambda c: (-c.hosts, -c.bytes, c.cause, _zone_rank(c.zone))))
        zones = tuple(ZoneTotal(zone, *self._zones[zone]) for zone in sorted(self._zones, key=_zone_rank))
        return FleetReport(mode=self.options.mode, semantics=self.options.semantics,
                           hosts=tuple(sorted(self.hosts, key=host_order)), zones=zones, causes=causes,
                           size_bytes=self.options.size, device=self.options.device, totals=self.totals,
                           trust=self.trust, warnings=self.warnings())


def fleet_report(hosts: Iterable[HostSummary], options: FleetOptions,
                 trust: Confidence = Confidence.LIKELY) -> FleetReport:
    aggregate = FleetAggregate(options, trust)
    for host in hosts:
        aggregate.add(host)
    return aggregate.report()


def nothing_judged(totals: FleetTotals) -> Optional[str]:
    """The error when no host could be judged (every row an error row), else ``None``."""
    if totals.hosts and totals.errors == totals.hosts:
        n = totals.hosts
        return "no host could be judged" if n == 1 else f"none of the {n} hosts could be judged (all error rows)"
    return None


def check_fleet(totals: FleetTotals) -> ExitStatus:
    """``--check``: 2 when a host could not be judged; else 0 when every host reaches the
    asked size (plan/unplug) or has offlinable memory (simulate), 64 when some do, 1 none."""
    if totals.errors:
        return ExitStatus.BAD_INPUT
    return check_status(totals.succeeded, totals.hosts)


def fleet_status(totals: FleetTotals, check: bool) -> ExitStatus:
    """The exit status of ``memplan fleet``: 2 when no host could be judged (with or without
    ``--check``), ``check_fleet()`` with ``--check``, else 0 (error rows are then warnings)."""
    if nothing_judged(totals) is not None:
        return ExitStatus.BAD_INPUT
    return check_fleet(totals) if check else ExitStatus.SUCCESS


__all__ = ["FleetAggregate", "check_fleet", "fleet_report", "fleet_status", "host_order", "nothing_judged"]
