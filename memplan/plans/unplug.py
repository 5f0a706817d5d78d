"""``memplan unplug``: the virtio-mem driver's response to a lower ``requested-size`` (spec §4.3, §4.4).

A transcription of drivers/virtio/virtio_mem.c (torvalds/linux @ c17ee635) over a
``MachineState``: ``virtio_mem_run_wq()`` (cleanup, unplug request, retry timer),
``virtio_mem_sbm_unplug_request()`` and its helpers (state order, highest block first,
one-shot whole-block attempt, single sub-blocks skipping busy ones, removal of fully
unplugged blocks through ``offline_and_remove_memory()``), and
``virtio_mem_bbm_unplug_request()`` / ``virtio_mem_bbm_offline_remove_and_unplug_bb()``
(passes 0/1/2, section-by-section fake-offlining with rollback). The hypervisor acknowledges
every (un)plug request; the device configuration does not change while the driver works.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Set, Tuple

import numpy as np

from memplan.core.errors import UsageError, did_you_mean
from memplan.core.machine import Machine
from memplan.core.model import DriverState, Errno, PageKind, Zone
from memplan.core.results import BlockVerdict, Outcome
from memplan.core.units import format_size
from memplan.kernel.virtio_mem import BbmState, SbmState
from memplan.plans.confidence import CERTAIN, Rating, block_ratings, caveats, least_sure
from memplan.plans.state import DeviceState, MachineState
from memplan.plans.types import (
    RETRY_MAX_S,
    RETRY_MIN_S,
    SweepPoint,
    SweepResult,
    UnitCulprit,
    UnplugBlock,
    UnplugResult,
    UnplugStop,
    WorkRun,
    WorkTrigger,
)

#: ``virtio_mem_sbm_unplug_request()``'s state order.
SBM_UNPLUG_ORDER = (SbmState.OFFLINE_PARTIAL, SbmState.OFFLINE, SbmState.MOVABLE_PARTIAL, SbmState.KERNEL_PARTIAL,
                    SbmState.MOVABLE, SbmState.KERNEL)
#: ``virtio_mem_cleanup_pending_mb()``'s retry order for fully unplugged blocks.
SBM_CLEANUP_ORDER = (SbmState.MOVABLE_PARTIAL, SbmState.KERNEL_PARTIAL, SbmState.OFFLINE_PARTIAL)
#: Work-queue runs simulated at most (the driver would retry forever).
MAX_RUNS = 16
#: Future retry times listed after the last simulated run.
NEXT_RETRIES = 4


class _Hang(Exception):
    """``offline_and_remove_memory()`` never returns: the kworker never sees a signal."""

    def __init__(self, verdict: BlockVerdict) -> None:
        super().__init__(verdict.block)
        self.verdict = verdict


class VirtioMemDriver:
    """One virtio-mem device's driver over a machine state."""

    def __init__(self, state: MachineState, dev: DeviceState) -> None:
        self.state = state
        self.dev = dev
        self.geo = state.geometry
        self.have_unplugged_mb = False
        #: ``virtio_mem_retry()`` was called during the current run (memory was removed)
        self.requeued = False
        self.visited: Set[int] = set()
        self.culprits: Dict[int, Dict[Optional[int], UnitCulprit]] = {}
        self.removal: Dict[int, Dict[int, BlockVerdict]] = {}

    # ---- helpers ------------------------------------------------------------------------

    @property
    def unplug_online(self) -> bool:
        return self.dev.device.unplug_online

    def region_blocks(self) -> List[int]:
        dev = self.dev
        if dev.sbm:
            return [dev.device.first_block + i for i in range(len(dev.plugged) // dev.per_block)]
        return [dev.device.first_block + i for i in range(len(dev.plugged) * dev.blocks_per_bb)]

    def sbm_state(self, block: int) -> str:
        if not self.state.has_block(block):
            return SbmState.UNUSED.value
        return self.state.block_state_name(self.state.row_of(block)) or SbmState.UNUSED.value

    def _culprit(self, key: int, unit: Optional[int], errno: Errno, step: str, pfn: Optional[int],
                 attempts: int) -> None:
        kind = refcount = None
        if pfn is not None:
            block = pfn // self.geo.pages_per_block
            if self.state.has_block(block) and self.state.online(self.state.row_of(block)):
                pages = self.state.pages(block)
                index = pfn - self.geo.block_start_pfn(block)
                kind, refcount = PageKind(int(pages.kinds[index])), int(pages.refcount[index])
        self.culprits.setdefault(key, {})[unit] = UnitCulprit(unit, errno, step, pfn, kind, refcount, attempts)

    def fake_offline(self, key: int, unit: Optional[int], block: int, lo: int, hi: int) -> Optional[Errno]:
        """``virtio_mem_fake_offline()`` on pages [lo, hi) of a memory block."""
        result = self.state.fake_offline(self.state.row_of(block), lo, hi)
        if result.errno is None:
            self.culprits.get(key, {}).pop(unit, None)
            return None
        pfn = None if result.culprit is None else self.geo.block_start_pfn(block) + lo + result.culprit
        # -ENOMEM returns at once; every other failure ends as -EBUSY.
        errno = Errno.ENOMEM if result.errno is Errno.ENOMEM else Errno.EBUSY
        self._culprit(key, unit, errno, result.step.value if result.step else "isolate", pfn, result.attempts)
        return errno

    def offline_and_remove(self, key: int, blocks: List[int]) -> Optional[Errno]:
        """``virtio_mem_offline_and_remove_memory()`` -> ``offline_and_remove_memory()``."""
        st = self.state
        offlined: List[int] = []
        for block in blocks:
            row = st.row_of(block)
            if not st.online(row):
                continue  # already offline: offline_and_remove_memory() skips it
            verdict = st.offline(block, kworker=True)
            self.removal.setdefault(key, {})[block] = verdict
            if verdict.result is Outcome.OFFLINED:
                offlined.append(row)
                continue
            if verdict.result is Outcome.HANGS:
                raise _Hang(verdict)
            for done in offlined:
                st.reonline(done)  # try_reonline_memory_block(), same zone as before
            culprit = verdict.culprit
            errno = Errno.ENOMEM if verdict.errno is Errno.ENOMEM else Errno.EBUSY
            self._culprit(key, None, errno, verdict.step.value if verdict.step else "state",
                          culprit.pfn if culprit else None, 1)
            return errno
        for block in blocks:
            st.remove(st.row_of(block))
        self.culprits.get(key, {}).pop(None, None)
        self.requeued = True  # virtio_mem_retry(): removing memory may allow more unplugging
        return None

    # ---- SBM ----------------------------------------------------------------------------

    def sbm_unplug_request(self, diff: int) -> Optional[Errno]:
        nb = diff // self.dev.device.unit_size
        if not nb:
            return None
        blocks = self.region_blocks()
        for i, wanted in enumerate(SBM_UNPLUG_ORDER):
            for block in reversed(blocks):  # virtio_mem_sbm_for_each_mb_rev()
                if self.sbm_state(block) != wanted.value:
                    continue
                rc, nb = self.sbm_unplug_any_sb(block, nb)
                if rc is not None or not nb:
                    return rc
            if not self.unplug_online and i == 1:
                return None
        return Errno.EBUSY if nb else None

    def sbm_unplug_any_sb(self, block: int, nb: int) -> Tuple[Optional[Errno], int]:
        self.visited.add(block)
        if self.sbm_state(block) in (SbmState.OFFLINE.value, SbmState.OFFLINE_PARTIAL.value):
            return self.sbm_unplug_any_sb_offline(block, nb)
        return self.sbm_unplug_any_sb_online(block, nb)

    def sbm_unplug_any_sb_offline(self, block: int, nb: int) -> Tuple[Optional[Errno], int]:
        """``virtio_mem_sbm_unplug_any_sb_raw()`` from the highest plugged sub-block down, in
        merged runs; fully unplugged -> UNUSED + ``remove_memory()``."""
        subs = self.dev.subblocks(block)
        sb = len(subs) - 1
        while nb:
            while sb >= 0 and not subs[sb]:
                sb -= 1
            if sb < 0:
                break
            count = 1
            while count < nb and sb > 0 and subs[sb - 1]:
                count += 1
                sb -= 1
            subs[sb:sb + count] = False  # the device acknowledges
            nb -= count
            sb -= 1
        if not subs.any():
            self.state.remove(self.state.row_of(block))
            self.requeued = True
        return None, nb

    def sbm_unplug_sb_online(self, block: int, sb: int, count: int) -> Optional[Errno]:
        pages = self.dev.unit_pages
        rc = self.fake_offline(block, sb if count == 1 else None, block, sb * pages, (sb + count) * pages)
        if rc is None:
            self.dev.subblocks(block)[sb:sb + count] = False  # unplug request acknowledged
        return rc

    def sbm_unplug_any_sb_online(self, block: int, nb: int) -> Tuple[Optional[Errno], int]:
        subs = self.dev.subblocks(block)
        per = len(subs)
        skip_singles = False
        if nb >= per and subs.all():
            # One shot: fake-offline the whole memory block with one alloc_contig_range().
            rc = self.sbm_unplug_sb_online(block, 0, per)
            if rc is None:
                nb -= per
                skip_singles = True
            elif rc is not Errno.EBUSY:
                return rc, nb
        if not skip_singles:
            sb = per - 1
            while sb >= 0 and nb:
                while sb >= 0 and not subs[sb]:
                    sb -= 1
                if sb < 0:
                    break
                rc = self.sbm_unplug_sb_online(block, sb, 1)
                if rc is Errno.EBUSY:
                    sb -= 1
                    continue
                if rc is not None:
                    return rc, nb
                nb -= 1
                sb -= 1
        if self.sbm_try_remove_unplugged_mb(block) is not None:
            self.have_unplugged_mb = True  # ignored for now; retried by virtio_mem_cleanup_pending_mb()
        return None, nb

    def sbm_try_remove_unplugged_mb(self, block: int) -> Optional[Errno]:
        if self.dev.subblocks(block).any():
            return None
        return self.offline_and_remove(block, [block])

    def sbm_cleanup_pending_mb(self) -> None:
        if not self.have_unplugged_mb:
            return
        self.have_unplugged_mb = False
        failed = False
        for wanted in SBM_CLEANUP_ORDER:
            for block in self.region_blocks():
                if self.sbm_state(block) == wanted.value and self.sbm_try_remove_unplugged_mb(block) is not None:
                    failed = True
        self.have_unplugged_mb = failed

    # ---- BBM ----------------------------------------------------------------------------

    def bb_online_blocks(self, bb: int) -> List[int]:
        st = self.state
        return [b for b in self.dev.bb_blocks(bb) if st.has_block(b) and st.online(st.row_of(b))]

    def bbm_unplug_request(self, diff: int) -> Optional[Errno]:
        nb = diff // self.dev.device.unit_size
        if not nb:
            return None
        dev = self.dev
        for i in range(3):
            for bb in reversed(range(len(dev.plugged))):
                if self.state.bb_state_name(dev, bb) != BbmState.ADDED.value:
                    continue
                online = self.bb_online_blocks(bb)
                if i == 0 and online:
                    continue  # virtio_mem_bbm_bb_is_offline()
                if i == 1 and any(self.state.zone_of(self.state.row_of(b)) is not Zone.MOVABLE for b in online):
                    continue  # virtio_mem_bbm_bb_is_movable()
                rc = self.bbm_offline_remove_and_unplug_bb(bb)
                if rc is Errno.EBUSY:
                    continue
                if rc is None:
                    nb -= 1
                if rc is not None or not nb:
                    return rc
            if i == 0 and not self.unplug_online:
                return None
        return Errno.EBUSY if nb else None

    def bbm_offline_remove_and_unplug_bb(self, bb: int) -> Optional[Errno]:
        dev, st, geo = self.dev, self.state, self.geo
        self.visited.add(bb)
        dev.fake_offline.add(bb)
        per_section = geo.pages_per_section
        done: List[Tuple[int, int]] = []
        rc: Optional[Errno] = None
        for index, block in enumerate(dev.bb_blocks(bb)):
            if not (st.has_block(block) and st.online(st.row_of(block))):
                continue  # pfn_to_online_page() is NULL: nothing to fake-offline
            for s in range(geo.pages_per_block // per_section):
                unit = index * (geo.pages_per_block // per_section) + s
                rc = self.fake_offline(bb, unit, block, s * per_section, (s + 1) * per_section)
                if rc is not None:
                    break
                done.append((block, s))
            if rc is not None:
                break
        if rc is None:
            rc = self.offline_and_remove(bb, dev.bb_blocks(bb))
            if rc is None:
                dev.plugged[bb] = False  # unplug request acknowledged: UNUSED
                dev.fake_offline.discard(bb)
                return None
        # Rollback: fake-online what was fake-offlined (the pages go back to the buddy; what
        # was migrated away stays where it went), back to ADDED.
        for block, s in done:
            row = st.row_of(block)
            if st.online(row):
                st.fake_online(row, s * per_section, (s + 1) * per_section)
        dev.fake_offline.discard(bb)
        return rc

    # ---- the work item ------------------------------------------------------------------

    def run_wq(self, requested: int) -> Optional[Errno]:
        """``virtio_mem_run_wq()`` once (may raise ``_Hang``)."""
        self.requeued = False
        if self.dev.sbm:
            self.sbm_cleanup_pending_mb()
        rc: Optional[Errno] = None
        plugged = self.dev.plugged_bytes
        if requested < plugged:
            diff = plugged - requested
            rc = self.sbm_unplug_request(diff) if self.dev.sbm else self.bbm_unplug_request(diff)
        if rc is None and self.dev.sbm and self.have_unplugged_mb:
            rc = Errno.EBUSY
        return rc


def no_device_message(machine: Machine) -> str:
    """``NAME has no virtio-mem device``, or why the input cannot show one."""
    if machine.devices_unseen:
        return (f"{machine.name}: no virtio-mem device visible: {machine.devices_unseen} (a device's memory shows "
                "there as 'System RAM (virtio_mem)')")
    return f"{machine.name} has no virtio-mem device"


def find_device(state: MachineState, name: Optional[str]) -> DeviceState:
    """The device ``--device`` names (the only one when there is one); usage errors otherwise."""
    names = [d.device.id for d in state.devices]
    if not names:
        raise UsageError(no_device_message(state.machine))
    if name is None:
        if len(names) > 1:
            raise UsageError(f"--device is required: {state.machine.name} has {len(names)} virtio-mem devices "
                             f"({', '.join(names)})")
        name = names[0]
    dev = state.device_named(name)
    if dev is None:
        raise UsageError(f"no virtio-mem device {name!r} on {state.machine.name} (devices: {', '.join(names)})",
                         hint=did_you_mean(name, names))
    return dev


def check_request(dev: DeviceState, requested: int) -> None:
    """QEMU's checks on ``requested-size`` plus memplan's scope (unplug only)."""
    device = dev.device
    if requested % device.device_block_size:
        raise UsageError(f"requested size {format_size(requested)} is not a multiple of the device block size "
                         f"({format_size(device.device_block_size)}); QEMU refuses it")
    if requested > dev.plugged_bytes:
        raise UsageError(f"requested size {format_size(requested)} is larger than the plugged size "
                         f"({format_size(dev.plugged_bytes)}): that is a plug request; memplan models unplugging")


#: per SBM memory block or BBM big block: (driver state name, plugged units, zone)
BlockStates = Dict[int, Tuple[str, Tuple[int, ...], Optional[Zone]]]


def _block_states(state: MachineState, drv: VirtioMemDriver) -> BlockStates:
    dev = drv.dev
    out: BlockStates = {}
    if dev.sbm:
        for block in drv.region_blocks():
            if state.has_block(block):
                row = state.row_of(block)
                out[block] = (drv.sbm_state(block), tuple(int(i) for i in np.flatnonzero(dev.subblocks(block))),
                              state.zone_of(row))
    else:
        for bb in np.flatnonzero(dev.plugged):
            zones = {state.zone_of(state.row_of(b)) for b in dev.bb_blocks(int(bb)) if state.has_block(b)}
            out[int(bb)] = (state.bb_state_name(dev, int(bb)), (0,), zones.pop() if len(zones) == 1 else None)
    return out


def run_unplug(state: MachineState, device: Optional[str], requested: int, assess: bool = True) -> UnplugResult:
    """Change ``requested-size`` to ``requested`` and let the driver work until it settles (mutates ``state``).

    ``assess``: rate every device block the driver visited or unplugged from (``confidence``,
    ``blind_spots``) and add a caveat for the memory that rests on verdicts that are not certain."""
    dev = find_device(state, device)
    check_request(dev, requested)
    drv = VirtioMemDriver(state, dev)
    before = _block_states(state, drv)
    online_before = {int(b) for b in state.ids[state.present & (state.state == 0) & (state.device == dev.index)]}
    plugged_before = dev.plugged_bytes
    runs: List[WorkRun] = []
    warnings: List[str] = []
    next_retries: Tuple[int, ...] = ()
    stop = UnplugStop.REACHED
    if dev.device.driver is not DriverState.LOADED:
        stop = UnplugStop.DRIVER
        warnings.append(f"virtio-mem {dev.device.id}: the driver is {dev.device.driver.value}; nobody acts on "
                        "requested-size")
    else:
        t, retry = 0, RETRY_MIN_S
        trigger = WorkTrigger.REQUEST
        for run in range(MAX_RUNS):
            snapshot = (dev.plugged.copy(), state.present.copy(), state.state.copy(), set(dev.fake_offline))
            start = dev.plugged_bytes
            try:
                rc = drv.run_wq(requested)
            except _Hang as hang:
                runs.append(WorkRun(run, t, trigger, None, start - dev.plugged_bytes))
                stop = UnplugStop.HUNG
                warnings.append(f"offline_and_remove_memory() of memory block {hang.verdict.block} never returns: "
                                "the virtio-mem work item waits forever (a kworker receives no signal)")
                break
            runs.append(WorkRun(run, t, trigger, rc, start - dev.plugged_bytes))
            if rc is None:
                if dev.plugged_bytes == requested:
                    stop = UnplugStop.REACHED
                elif not dev.device.unplug_online:
                    stop = UnplugStop.UNPLUG_ONLINE
                else:
                    stop = UnplugStop.GRANULARITY
                break
            stop = UnplugStop.NO_MEMORY if rc is Errno.ENOMEM else UnplugStop.BUSY
            if drv.requeued:
                trigger = WorkTrigger.IMMEDIATE  # virtio_mem_retry() queued the work again; the timer is cancelled
                continue
            changed = not (np.array_equal(snapshot[0], dev.plugged) and np.array_equal(snapshot[1], state.present)
                           and np.array_equal(snapshot[2], state.state) and snapshot[3] == dev.fake_offline)
            if not changed and run > 0:
                # Nothing moves any more: every later retry repeats this run.
                times, r, at = [], retry, t
                for _ in range(NEXT_RETRIES):
                    at += r
                    times.append(at)
                    r = min(r * 2, RETRY_MAX_S)
                next_retries = tuple(times)
                break
            t += retry
            retry = min(retry * 2, RETRY_MAX_S)  # virtio_mem_timer_expired()
            trigger = WorkTrigger.TIMER
    after = _block_states(state, drv)
    blocks = _summarise(state, drv, before, after)
    notes: Tuple[str, ...] = ()
    if assess:
        blocks, notes = _rate(state, blocks, online_before)
    warnings.extend(state.notes)
    return UnplugResult(
        profile=state.machine.source, machine=state.machine.name, semantics=state.semantics.name,
        device=dev.device.id, mode=dev.device.mode, unit_size=dev.device.unit_size,
        device_block_size=dev.device.device_block_size, requested_bytes=requested,
        plugged_before_bytes=plugged_before, plugged_after_bytes=dev.plugged_bytes, blocks=blocks,
        runs=tuple(runs), stop=stop, left=state.left(), next_retries=next_retries, warnings=tuple(warnings),
        caveats=notes,
    )


def _rate(state: MachineState, blocks: Tuple[UnplugBlock, ...],
          online_before: Set[int]) -> Tuple[Tuple[UnplugBlock, ...], Tuple[str, ...]]:
    """Confidence of each device block the driver worked on: what ``simulate`` says of its memory
    blocks that were online (``memplan.plans.confidence``); the caveats of what was unplugged."""
    worked = [b for b in blocks if b.visited or b.unplugged_units]
    wanted = sorted({m for b in worked for m in b.memory_blocks if m in online_before})
    ratings = block_ratings(state.machine, state.semantics.name, wanted)
    out: List[UnplugBlock] = []
    relied: List[Tuple[int, Rating]] = []
    for b in blocks:
        if not (b.visited or b.unplugged_units):
            out.append(b)
            continue
        mine = [ratings[m] for m in b.memory_blocks if m in ratings]
        level, spots = least_sure(mine)
        removal = tuple(dataclasses.replace(v, confidence=ratings.get(v.block, CERTAIN)[0],
                                            blind_spots=ratings.get(v.block, CERTAIN)[1],
                                            pages_known=state.machine.page_data)
                        for v in b.removal)
        out.append(dataclasses.replace(b, confidence=level, blind_spots=spots, removal=removal))
        if b.unplugged_units:
            relied.extend((m, ratings[m]) for m in b.memory_blocks if m in ratings)
    return tuple(out), tuple(caveats(relied, "the unplug"))


def _summarise(state: MachineState, drv: VirtioMemDriver, before: BlockStates,
               after: BlockStates) -> Tuple[UnplugBlock, ...]:
    dev = drv.dev
    out: List[UnplugBlock] = []
    for key, (state_before, plugged_before, zone) in sorted(before.items()):
        state_after, plugged_after, _ = after.get(key, (SbmState.UNUSED.value, (), zone))
        if not dev.sbm and state_after == BbmState.UNUSED.value:
            plugged_after = ()
        unplugged = tuple(u for u in plugged_before if u not in set(plugged_after))
        memory_blocks = (key,) if dev.sbm else tuple(dev.bb_blocks(key))
        culprits = tuple(c for unit, c in sorted(drv.culprits.get(key, {}).items(),
                                                  key=lambda kv: (-1 if kv[0] is None else kv[0])))
        removal = tuple(v for _, v in sorted(drv.removal.get(key, {}).items()))
        out.append(UnplugBlock(block=key, memory_blocks=memory_blocks, zone=zone, state_before=state_before,
                               state_after=state_after, unplugged_units=unplugged, plugged_units_left=plugged_after,
                               culprits=culprits, removal=removal, visited=key in drv.visited))
    return tuple(out)


def unplug(machine: Machine, device: Optional[str], requested: int, semantics: Optional[str] = None,
           state: Optional[MachineState] = None) -> Tuple[UnplugResult, MachineState]:
    """Simulate a lower ``requested-size``; returns the result and the machine state afterwards."""
    state = state or MachineState(machine, semantics)
    return run_unplug(state, device, requested), state


def sweep(machine: Machine, device: Optional[str], step: Optional[int] = None,
          semantics: Optional[str] = None) -> SweepResult:
    """Achievable plugged size for every requested size from 0 to the plugged size."""
    base = MachineState(machine, semantics)
    dev = find_device(base, device)
    plugged = dev.plugged_bytes
    if step is None:
        step = max(dev.device.unit_size, base.geometry.memory_block_size)
    if step <= 0 or step % dev.device.device_block_size:
        raise UsageError(f"--step {format_size(step)} is not a multiple of the device block size "
                         f"({format_size(dev.device.device_block_size)})")
    sizes = sorted(set(range(0, plugged, step)) | {plugged})
    points: List[SweepPoint] = []
    for requested in sizes:
        result = run_unplug(base.copy(), dev.device.id, requested, assess=False)
        points.append(SweepPoint(requested, result.plugged_after_bytes, result.stop, result.errno))
    return SweepResult(profile=machine.source, machine=machine.name, semantics=base.semantics.name,
                       device=dev.device.id, mode=dev.device.mode, unit_size=dev.device.unit_size, step=step,
                       plugged_before_bytes=plugged, points=tuple(points))
