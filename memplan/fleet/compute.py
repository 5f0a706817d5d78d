"""``memplan fleet``: the same question for every host of a fleet, and one answer for all.

An INPUT is a profile, a saved sysroot tree (``memplan snapshot --save DIR``) or a folder /
glob of them. Every host is a ``HostTask`` — a path plus the options, nothing else, so it
pickles into a worker process or onto a Dask worker — and ``run_host()`` turns it into a
``HostSummary``: the very core functions of ``memplan simulate`` / ``plan`` / ``unplug``
on the host's machine, reduced to counters per zone and the causes that block memory. A
host that cannot be read or judged becomes one error row; nothing a host does stops the
fleet. ``memplan.fleet.aggregate`` folds the summaries, in whatever order they arrive, into a
``FleetReport``; where the work runs is ``memplan.fleet.executors``.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

import numpy as np

from memplan.core.errors import MemplanError, UsageError
from memplan.core.machine import Machine
from memplan.core.model import Errno, PageKind, VirtioMemMode, Zone
from memplan.core.results import BlockVerdict, Cause, Confidence, Outcome, Step
from memplan.core.units import format_size
from memplan.fleet.types import (
    CauseCount,
    ConfidenceBytes,
    DeviceSummary,
    FleetMode,
    HostSummary,
    InputKind,
    ZoneSummary,
)
from memplan.plans.types import UnitCulprit, UnplugBlock

#: Cause of a block whose migration fails because no free page is left to migrate to.
NO_MIGRATION_TARGET = "no migration target"
#: Verdict causes that mean the lack of free memory (or of a pool folio) is to blame.
_NO_TARGET_CAUSES = frozenset({Cause.NO_MIGRATION_TARGET, Cause.GIGANTIC_NO_POOL_FOLIO})
#: Zone name of a block whose ``valid_zones`` is ``none`` (it spans zones).
NO_ZONE = "none"
ZONE_ORDER = {z.value: z.code for z in Zone}
_GLOB_CHARS = frozenset("*?[")
#: Failures the kernel reports without a reason string (``offline_block()`` steps 0-2):
#: ``state_store()`` on a block that is not online, ``memory_block_offline()`` with
#: ``mem->zone == NULL`` (an early block spanning zones or nodes), ``offline_pages()``'s
#: alignment ``WARN_ON_ONCE``.
_STEP_CAUSES = {Step.STATE: "not online", Step.ZONE: "spans zones", Step.ALIGNMENT: "misaligned range"}


@dataclass(frozen=True)
class FleetOptions:
    """The question asked of every host (picklable, shipped with every task)."""

    mode: FleetMode = FleetMode.SIMULATE
    #: ``None``: each host's own default (the profile's, or what its snapshot shows)
    semantics: Optional[str] = None
    #: plan: bytes to offline (chmem -d); unplug: bytes to lower every device's requested size by
    size: Optional[int] = None
    #: unplug: only this virtio-mem device (default: every device of the host)
    device: Optional[str] = None

    def __post_init__(self) -> None:
        if self.mode is not FleetMode.SIMULATE and self.size is None:
            raise UsageError(f"fleet {self.mode.value} needs a size")
        if self.device is not None and self.mode is not FleetMode.UNPLUG:
            raise UsageError("--device only applies to --unplug-by")


@dataclass(frozen=True)
class HostTask:
    """One host's work: where its machine is and what to ask. ``error`` is set when the
    INPUT already showed there is nothing to read (the task never runs)."""

    #: the host as the INPUT named it (shown in every output)
    host: str
    input: InputKind
    options: FleetOptions
    error: Optional[str] = None
    #: absolute path to read (workers may run in another directory); default: ``host``
    path: Optional[str] = None

    @property
    def source(self) -> str:
        return self.path or self.host


# ---- inputs -----------------------------------------------------------------------------


def is_sysroot(path: str) -> bool:
    """A saved tree: ``sys/devices/system/memory`` or ``proc/kpageflags*`` under it."""
    if os.path.isdir(os.path.join(path, "sys", "devices", "system", "memory")):
        return True
    return bool(glob.glob(os.path.join(glob.escape(path), "proc", "kpageflags*")))


def expand_inputs(inputs: Iterable[str]) -> List[Tuple[str, InputKind, Optional[str]]]:
    """Every host the INPUTs name, in order, each once: ``(path, kind, error)``.

    A file is a profile (whatever its name); a directory is a sysroot when it looks like one,
    otherwise a folder searched recursively for sysroots and ``*.toml`` profiles (hidden
    entries skipped, a sysroot not descended into). A pattern with ``*?[`` that names no
    existing path is expanded as a glob. An INPUT that yields no host is an error row.
    """
    out: List[Tuple[str, InputKind, Optional[str]]] = []
    seen: Set[str] = set()

    def add(path: str, kind: InputKind, error: Optional[str] = None) -> None:
        key = path if error is not None else os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            out.append((path, kind, error))

    for text in inputs:
        if os.path.lexists(text) or not (_GLOB_CHARS & set(text)):
            _expand_path(text, add)
            continue
        matches = sorted(glob.glob(text))
        if not matches:
            add(text, InputKind.INVALID, "matches no file or directory")
        for match in matches:
            _expand_path(match, add)
    return out


def _expand_path(path: str, add: Callable[..., None]) -> None:
    if not os.path.exists(path):
        add(path, InputKind.INVALID, "no such file or directory")
    elif os.path.isfile(path):
        add(path, InputKind.PROFILE)
    elif not os.path.isdir(path):
        add(path, InputKind.INVALID, "neither a profile nor a directory")
    elif is_sysroot(path):
        add(path, InputKind.SYSROOT)
    else:
        found: List[Tuple[str, InputKind]] = []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for d in list(dirs):
                if is_sysroot(os.path.join(root, d)):
                    found.append((os.path.join(root, d), InputKind.SYSROOT))
                    dirs.remove(d)
            found.extend((os.path.join(root, name), InputKind.PROFILE) for name in files
                         if name.endswith(".toml") and not name.startswith("."))
        for host, kind in sorted(found):
            add(host, kind)
        if not found:
            add(path, InputKind.INVALID, "no profile (*.toml) or sysroot in this directory")


def make_tasks(inputs: Iterable[str], options: FleetOptions) -> List[HostTask]:
    """One task per host the INPUTs name (``expand_inputs()``)."""
    return [HostTask(path, kind, options, error, path=os.path.abspath(path))
            for path, kind, error in expand_inputs(inputs)]


# ---- one host ---------------------------------------------------------------------------


def load_host(task: HostTask) -> Machine:
    if task.input is InputKind.SYSROOT:
        from memplan.snapshot.reader import load_snapshot
        return load_snapshot(task.source)
    from memplan.profile.reader import load_profile
    return load_profile(task.source)


def error_row(task: HostTask, error: str, machine: Optional[str] = None) -> HostSummary:
    """The row of a host that could not be judged: zeros and empty tuples besides ``error``,
    and ``asked_bytes``, what the question asked of the host: ``--plan-size``'s SIZE, or
    ``--unplug-by``'s SIZE (the host's devices are unknown: what was asked of one)."""
    return HostSummary(host=task.host, input=task.input, mode=task.options.mode, machine=machine, error=error,
                       asked_bytes=int(task.options.size or 0))


def run_host(task: HostTask) -> HostSummary:
    """The host's summary; every failure becomes its error row (``MEMPLAN_TRACEBACK=1``
    re-raises failures that are not input errors). ``BaseException``s (Ctrl-C, SIGTERM, the
    host time limit) propagate."""
    options = task.options
    if task.error is not None:
        return error_row(task, task.error)
    machine: Optional[Machine] = None
    try:
        machine = load_host(task)
        if options.mode is FleetMode.PLAN:
            return plan_summary(task, machine)
        if options.mode is FleetMode.UNPLUG:
            return unplug_summary(task, machine)
        return simulate_summary(task, machine)
    except MemplanError as exc:
        error = str(exc)
    except MemoryError:
        error = "out of memory"
    except OSError as exc:
        error = f"cannot read: {exc}"
    except Exception as exc:  # noqa: BLE001 - one broken host never stops the fleet
        if os.environ.get("MEMPLAN_TRACEBACK"):
            raise
        error = f"internal error: {type(exc).__name__}: {exc}"
    return error_row(task, error, machine.name if machine is not None else None)


def verdict_cause(v: BlockVerdict) -> str:
    """Why a block does not offline, as one short name.

    When migration loops because no target page can be allocated (``Cause.NO_MIGRATION_TARGET``,
    ``Cause.GIGANTIC_NO_POOL_FOLIO``: -ENOMEM) the page kind is not to blame, the lack of free
    memory is. Otherwise the culprit page's kind, else the kernel's reason string (``memory
    holes``, ``multizone range``, ``notifier failure``, ...).
    """
    if v.cause in _NO_TARGET_CAUSES:
        return NO_MIGRATION_TARGET
    if v.culprit is not None:
        return v.culprit.kind.label
    if v.reason is not None:
        return v.reason.value
    if v.step in _STEP_CAUSES:
        return _STEP_CAUSES[v.step]
    parts = [p for p in (v.errno.value if v.errno else None, f"at {v.step.value}" if v.step else None) if p]
    return " ".join(parts) or v.result.value


def unit_cause(c: UnitCulprit) -> str:
    """Why a virtio-mem unit stays plugged. ``alloc_contig_range()`` returns -ENOMEM when a
    migration target cannot be allocated, or at a 1 GiB hugetlb folio
    (``isolate_or_dissolve_huge_folio()``: the folio is to blame then)."""
    if c.errno is Errno.ENOMEM and c.kind is not PageKind.GIGANTIC:
        return NO_MIGRATION_TARGET
    if c.kind is not None:
        return c.kind.label
    return f"{c.errno.value} at {c.step}"


def default_confidence(machine: Machine) -> Confidence:
    """The confidence of a verdict that carries none: a profile describes its machine exactly
    (``certain``); about a snapshot nothing is known that the verdict does not say (``unknown``)."""
    return Confidence.CERTAIN if machine.assessor is None else Confidence.UNKNOWN


def least_sure(levels: Iterable[Confidence], default: Confidence) -> Confidence:
    """The least sure of ``levels`` (``default`` when there are none)."""
    order = list(Confidence)
    ranks = [order.index(level) for level in levels]
    return order[max(ranks)] if ranks else default


class _ZoneTally:
    """Per-zone counters of one host, and its memory split by confidence."""

    def __init__(self) -> None:
        self.zones: Dict[str, Dict[str, int]] = {}
        self.causes: Dict[str, Dict[str, List[int]]] = {}
        self.by_confidence: Dict[Confidence, int] = dict.fromkeys(Confidence, 0)
        self.unknown_blocks = 0

    def _zone(self, zone: Optional[Zone]) -> Tuple[str, Dict[str, int]]:
        name = zone.value if zone is not None else NO_ZONE
        counters = self.zones.get(name)
        if counters is None:
            counters = self.zones[name] = {"blocks": 0, "offlined": 0, "fails": 0, "hangs": 0, "offlinable_bytes": 0}
        return name, counters

    def block(self, zone: Optional[Zone], confidence: Confidence, *, offlined: bool = False, fails: bool = False,
              hangs: bool = False, offlinable_bytes: int = 0) -> None:
        _, c = self._zone(zone)
        c["blocks"] += 1
        self.unknown_blocks += confidence is Confidence.UNKNOWN
        c["offlined"] += int(offlined)
        c["fails"] += int(fails)
        c["hangs"] += int(hangs)
        c["offlinable_bytes"] += offlinable_bytes
        self.by_confidence[confidence] += offlinable_bytes

    def verdict(self, v: BlockVerdict, confidence: Confidence) -> None:
        offlined = v.result is Outcome.OFFLINED
        self.block(v.zone, confidence, offlined=offlined, fails=v.result is Outcome.FAILS,
                   hangs=v.result is Outcome.HANGS, offlinable_bytes=v.size if offlined else 0)
        if not offlined:
            self.cause(v.zone, verdict_cause(v), v.size)

    def cause(self, zone: Optional[Zone], cause: str, nbytes: int) -> None:
        name, _ = self._zone(zone)
        entry = self.causes.setdefault(name, {}).setdefault(cause, [0, 0])
        entry[0] += 1
        entry[1] += nbytes

    def summaries(self) -> Tuple[ZoneSummary, ...]:
        out = []
        for name in sorted(self.zones, key=lambda n: ZONE_ORDER.get(n, len(ZONE_ORDER))):
            c = self.zones[name]
            causes = tuple(CauseCount(cause, blocks, nbytes) for cause, (blocks, nbytes)
                           in sorted(self.causes.get(name, {}).items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0])))
            out.append(ZoneSummary(zone=name, blocks=c["blocks"], offlined=c["offlined"], fails=c["fails"],
                                   hangs=c["hangs"], offlinable_bytes=c["offlinable_bytes"],
                                   blocked_bytes=sum(x.bytes for x in causes), causes=causes))
        return tuple(out)


def _online_bytes(machine: Machine) -> int:
    return int(np.count_nonzero(machine.blocks.online)) * machine.geometry.memory_block_size


def _verdicts_tally(verdicts: Iterable[BlockVerdict], default: Confidence) -> _ZoneTally:
    tally = _ZoneTally()
    for v in verdicts:
        tally.verdict(v, v.confidence if v.confidence is not None else default)
    return tally


def _host(task: HostTask, machine: Machine, semantics: str, tally: _ZoneTally, warnings: Iterable[str],
          **fields: Any) -> HostSummary:
    zones = tally.summaries()
    return HostSummary(
        host=task.host, input=task.input, mode=task.options.mode, machine=machine.name, semantics=semantics,
        blocks=sum(z.blocks for z in zones), offlined=sum(z.offlined for z in zones),
        fails=sum(z.fails for z in zones), hangs=sum(z.hangs for z in zones), memory_bytes=_online_bytes(machine),
        offlinable_bytes=sum(z.offlinable_bytes for z in zones),
        offlinable_by_confidence=ConfidenceBytes.from_mapping(tally.by_confidence),
        blocked_bytes=sum(z.blocked_bytes for z in zones), unknown_blocks=tally.unknown_blocks, zones=zones,
        warnings=tuple(dict.fromkeys(warnings)), **fields)


def _verdict_stream(machine: Machine, semantics: Optional[str]) -> Tuple[Iterable[BlockVerdict], Any]:
    """Every online block's verdict, one at a time (interface I1: ``stream()`` keeps memory flat
    in the number of blocks), and the object that carries ``semantics`` and ``warnings``."""
    from memplan.engine import simulation
    run = getattr(simulation, "stream", None)
    if run is not None:
        verdicts = run(machine, semantics)
        return verdicts, verdicts
    result = simulation.simulate(machine, semantics)  # before I1: a materialised SimulationResult
    return result.blocks, result


def simulate_summary(task: HostTask, machine: Machine) -> HostSummary:
    """``memplan simulate``: every online block, judged on its own."""
    verdicts, result = _verdict_stream(machine, task.options.semantics)
    tally = _verdicts_tally(verdicts, default_confidence(machine))
    # Every block that does not offline is charged to its cause: unreclaimable == blocked.
    unreclaimable = sum(z.blocked_bytes for z in tally.summaries())
    return _host(task, machine, result.semantics, tally, (*machine.warnings, *result.warnings),
                 unreclaimable_bytes=unreclaimable)


def plan_summary(task: HostTask, machine: Machine) -> HostSummary:
    """``memplan plan --size``: chmem -d, block after block over one changing machine state,
    stopping where chmem's write would hang (chmem's contract, as ``memplan plan`` without
    ``--skip-hangs``)."""
    from memplan.plans.plan import plan
    size = int(task.options.size or 0)
    result, _ = plan(machine, size, task.options.semantics)
    tally = _verdicts_tally(result.attempts, default_confidence(machine))
    return _host(task, machine, result.semantics, tally, (*machine.warnings, *result.warnings),
                 unreclaimable_bytes=max(size - result.achieved_bytes, 0), asked_bytes=size,
                 achieved_bytes=result.achieved_bytes)


def unplug_confidence(block: UnplugBlock, default: Confidence) -> Confidence:
    """How sure the unplug of a device block is: its own ``confidence`` (interface I2: unplug
    attempts carry one), else the least sure of its ``offline_and_remove_memory()`` verdicts,
    else ``default``."""
    own = getattr(block, "confidence", None)
    if isinstance(own, Confidence):
        return own
    return least_sure((r.confidence for r in block.removal if r.confidence is not None), default)


def _unplug_block(tally: _ZoneTally, block: UnplugBlock, unit_size: int, sbm: bool, default: Confidence) -> None:
    """One device block: what was unplugged, and which culprits keep the rest plugged.

    The units still plugged are charged to the culprits: in SBM each sub-block culprit keeps
    its own sub-block, the rest goes to the whole-block culprit (the one-shot attempt or
    ``offline_and_remove_memory()``); in BBM the big block is one unit, charged to its first
    culprit. A culprit whose unit was unplugged later is gone (the driver forgets it)."""
    hangs = any(r.result is Outcome.HANGS for r in block.removal)
    removed = block.removed
    unplugged = len(block.unplugged_units) * unit_size
    if block.visited:
        tally.block(block.zone, unplug_confidence(block, default), offlined=removed,
                    fails=bool(block.culprits) and not hangs, hangs=hangs, offlinable_bytes=unplugged)
    elif block.unplugged_units:
        tally.block(block.zone, unplug_confidence(block, default), offlinable_bytes=unplugged)
    if not block.culprits:
        return
    left = set(block.plugged_units_left)
    remaining = len(left) * unit_size
    charged: Dict[int, int] = {}
    if sbm:
        for i, c in enumerate(block.culprits):
            if c.unit is not None and c.unit in left:
                charged[i] = unit_size
                remaining -= unit_size
    rest = next((i for i, c in enumerate(block.culprits) if c.unit is None), 0)
    charged[rest] = charged.get(rest, 0) + max(remaining, 0)
    per_cause: Dict[str, int] = {}
    for i, c in enumerate(block.culprits):
        name = unit_cause(c)
        per_cause[name] = per_cause.get(name, 0) + charged.get(i, 0)
    for name, nbytes in per_cause.items():
        tally.cause(block.zone, name, nbytes)


def unplug_summary(task: HostTask, machine: Machine) -> HostSummary:
    """``memplan unplug --by``: lower every virtio-mem device's requested size (or the one
    ``--device`` names) by SIZE, one device after the other on the same machine state."""
    from memplan.plans.state import MachineState
    from memplan.plans.unplug import find_device, no_device_message, run_unplug
    by = int(task.options.size or 0)
    state = MachineState(machine, task.options.semantics)
    if task.options.device is not None:
        devices = [find_device(state, task.options.device)]
    else:
        devices = list(state.devices)
        if not devices:
            raise UsageError(no_device_message(machine))
    for dev in devices:
        if by % dev.device.device_block_size:
            raise UsageError(f"--unplug-by {format_size(by)} is not a multiple of the device block size of "
                             f"{dev.device.id} ({format_size(dev.device.device_block_size)}); QEMU refuses it")
    tally = _ZoneTally()
    summaries: List[DeviceSummary] = []
    warnings: List[str] = list(machine.warnings)
    default = default_confidence(machine)
    for dev in devices:
        requested = max(dev.plugged_bytes - by, 0)
        result = run_unplug(state, dev.device.id, requested)
        for block in result.blocks:
            _unplug_block(tally, block, result.unit_size, result.mode is VirtioMemMode.SBM, default)
        warnings.extend(result.warnings)
        summaries.append(DeviceSummary(
            device=result.device, mode=result.mode, plugged_before_bytes=result.plugged_before_bytes,
            plugged_after_bytes=result.plugged_after_bytes, asked_bytes=by, stop=result.stop,
            errno=result.errno.value if result.errno else None))
    asked = by * len(summaries)
    achieved = sum(d.achieved_bytes for d in summaries)
    return _host(task, machine, state.semantics.name, tally, warnings, unreclaimable_bytes=max(asked - achieved, 0),
                 asked_bytes=asked, achieved_bytes=achieved, devices=tuple(summaries))


__all__ = [
    "FleetOptions", "HostTask", "NO_MIGRATION_TARGET", "NO_ZONE", "ZONE_ORDER", "default_confidence", "error_row",
    "expand_inputs", "is_sysroot", "least_sure", "make_tasks", "plan_summary", "run_host", "simulate_summary",
    "unit_cause", "unplug_confidence", "unplug_summary", "verdict_cause",
]
