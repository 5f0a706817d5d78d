"""``memory_notify(MEM_GOING_OFFLINE)`` / ``MEM_CANCEL_OFFLINE``: what the handlers do to the pages.

virtio-mem's handler (``virtio_mem_memory_notifier_cb()``, drivers/virtio/virtio_mem.c, ML-NEW
torvalds/linux @ c17ee635) works on its own blocks; what it does to its fake-offline pages is
the semantics' (``OfflineSemantics.virtio_mem_going_offline()``). An out-of-tree driver using
the same refcount protocol drops its reference in both semantics. The foreign-reference timing
of the environment (spec rows 20-22) applies here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from memplan.core.arrays import AnyArray, BoolArray, IntArray, KindArray
from memplan.core.machine import Environment, VirtioMemDevice
from memplan.core.model import DriverState, ForeignRefTiming, PageKind
from memplan.core.results import Hazard, HazardKind, LogEntry, LogLevel
from memplan.kernel.pages import RangeView, per_page_entries
from memplan.kernel.semantics import OfflineSemantics


def skippable_pages(semantics: OfflineSemantics, device: Optional[VirtioMemDevice], device_state: Optional[str],
                    kinds: KindArray) -> np.ndarray:
    """``PageOfflineSkippable`` per page: the device's fake-offline pages, when the semantics
    marks them (``virtio_mem_set_fake_offline()`` in PATCH-v2)."""
    if device is not None and semantics.fake_offline_skippable(device.driver, device_state):
        return kinds == PageKind.FAKE_OFFLINE.value
    return np.zeros(len(kinds), dtype=bool)


@dataclass
class Notified:
    """The pages once every MEM_GOING_OFFLINE handler ran (and the foreign-reference timing)."""

    kinds: KindArray
    refcount: AnyArray
    log: List[LogEntry]
    hazards: List[Hazard]
    #: pages whose reference virtio-mem dropped
    dropped: BoolArray
    #: pages put_page() freed to the buddy while offlining
    freed: BoolArray


def going_offline(view: RangeView, driver: Optional[DriverState], semantics: OfflineSemantics,
                  env: Environment) -> Notified:
    """Refcounts after every MEM_GOING_OFFLINE handler ran (and the foreign-reference timing);
    ``driver``: the state of the virtio-mem driver of the block's device (``None``: no device).

    virtio-mem (refcount): ``virtio_mem_fake_offline_going_offline()`` does
    ``page_ref_dec_and_test()`` on every page of its unplugged sub-blocks (SBM) or FAKE_OFFLINE
    big block (BBM) and ``WARN_ON`` + ``dump_page(page, "fake-offline page referenced")`` when
    the count is not 0.
    """
    kinds, ref = view.kinds, view.refcount.copy()
    log: List[LogEntry] = []
    hazards: List[Hazard] = []
    fake = kinds == PageKind.FAKE_OFFLINE.value
    has_fake = bool(fake.any())
    foreign = fake & (ref > 1) if has_fake else fake
    dropped = np.zeros(len(kinds), dtype=bool)
    freed = np.zeros(len(kinds), dtype=bool)
    if has_fake and driver is DriverState.LOADED:
        ref[fake] = semantics.virtio_mem_going_offline(ref[fake])
        dropped = fake & (ref != view.refcount)
        referenced = np.flatnonzero(dropped & (ref != 0))
        if len(referenced):
            log.extend(_referenced_log(view.pfn + referenced))
            hazards.append(Hazard(HazardKind.WARN, f"{len(referenced)} fake-offline page(s) referenced by someone "
                                  "else when virtio-mem dropped its reference", int(view.pfn + referenced[0])))
    driver_pages = kinds == PageKind.OFFLINE_REFCOUNT_DRIVER.value
    if driver_pages.any():
        ref[driver_pages] -= 1
    if env.foreign_ref_dropped is ForeignRefTiming.DURING_OFFLINE and foreign.any():
        kinds, freed = _foreign_reference_dropped(view, kinds, ref, foreign, hazards)
    return Notified(kinds, ref, log, hazards, dropped, freed)


#: Where virtio-mem's MEM_GOING_OFFLINE splat is reported: virtio_mem_fake_offline_going_offline()
#: is a static helper inlined into the notifier callback, and the WARNING names the callback
#: ("WARNING ... virtio_mem_memory_notifier_cb", observed on 7.2.13, spec §9.1).
NOTIFIER_FUNCTION = "virtio_mem_memory_notifier_cb"


def _referenced_log(pfns: IntArray) -> List[LogEntry]:
    """``WARN_ON(!page_ref_dec_and_test(page))`` + ``dump_page()`` per referenced page, interleaved
    (neither is rate-limited: a WARN_ON prints every time)."""
    function = NOTIFIER_FUNCTION
    out: List[LogEntry] = []
    for pair in zip(per_page_entries(LogLevel.WARN, "WARN_ON(!page_ref_dec_and_test(page))", function, pfns),
                    per_page_entries(LogLevel.DUMP_PAGE, "fake-offline page referenced", function, pfns)):
        out.extend(pair)
    return out


def _foreign_reference_dropped(view: RangeView, kinds: KindArray, ref: AnyArray, foreign: BoolArray,
                               hazards: List[Hazard]) -> tuple[np.ndarray, np.ndarray]:
    """The foreign holder drops its references while the block is isolated (``ref`` updated in place).

    Where virtio-mem already dropped its own reference, put_page() frees the page. mm/page_alloc.c
    free_pages_prepare() resets the page type of a typed page ("Reset the page_type (which
    overlays _mapcount)", since the 2025 movable_ops series), so it lands silently on the
    isolated free list (seed mail: "ouch"). Observed on 7.2.13 (spec §9.1 row 21): no bad-page
    report, and ZONE_MOVABLE's managed pages end one lower per freed page, because
    __offline_isolated_pages() takes it off the free lists as managed memory that virtio-mem
    never counted.
    """
    ref[foreign] -= view.refcount[foreign] - 1
    freed = foreign & (ref == 0)
    if freed.any():
        kinds = kinds.copy()
        kinds[freed] = PageKind.FREE
        pfn = view.pfn + int(np.flatnonzero(freed)[0])
        hazards.append(Hazard(HazardKind.FREED_TO_BUDDY,
                              f"{int(freed.sum())} fake-offline page(s) freed to the buddy by put_page() while "
                              "offlining (unplugged memory on the isolated free list; the zone's managed pages end "
                              "one lower per page; a MEM_CANCEL_OFFLINE would raise the refcount of a free page)",
                              pfn))
    return kinds, freed


def cancel_hazards(notified: Notified, pfn: int) -> List[Hazard]:
    """What MEM_CANCEL_OFFLINE (sent on every failure after MEM_GOING_OFFLINE) does wrong.

    virtio_mem_fake_offline_cancel_offline() does page_ref_inc() on every page whose reference
    it dropped (drivers/virtio/virtio_mem.c, ML-NEW), including the ones put_page() freed
    meanwhile; undo_isolate_page_range() then returns them to the ordinary free lists with
    refcount 1 (spec row 21).
    """
    taken_back = notified.dropped & notified.freed
    if not taken_back.any():
        return []
    return [Hazard(HazardKind.REFCOUNT_ON_FREE_PAGE,
                   f"MEM_CANCEL_OFFLINE: page_ref_inc() on {int(taken_back.sum())} fake-offline page(s) already "
                   "freed to the buddy: unplugged memory back on the free lists with refcount 1",
                   pfn + int(np.flatnonzero(taken_back)[0]))]


def after_success_hazards(view: RangeView, after: RangeView, semantics: OfflineSemantics,
                          env: Environment) -> List[Hazard]:
    """Hazards of a block that went offline: foreign references on fake-offline pages dropped
    while it is offline (spec row 22) or after it was onlined again (§9.1), and ownerless
    PageOffline pages skipped as already offline (spec row 36)."""
    hazards: List[Hazard] = []
    timing = env.foreign_ref_dropped
    if timing in _HELD_ACROSS_OFFLINE:
        foreign = (view.kinds == PageKind.FAKE_OFFLINE.value) & (view.refcount > 1)
        if foreign.any():
            hazards.append(_held_reference_hazard(timing, int(foreign.sum()),
                                                  view.pfn + int(np.flatnonzero(foreign)[0])))
    orphans = after.kinds == PageKind.OFFLINE_ORPHAN.value
    if orphans.any():
        orphans &= (after.refcount == 0) & semantics.test_passes(after.refcount, after.skippable)
    if orphans.any():
        hazards.append(Hazard(HazardKind.UNSAFE_REONLINE,
                              f"{int(orphans.sum())} PageOffline page(s) with refcount 0 and no owner were skipped "
                              "as already offline; onlining the block again hands them to the buddy",
                              view.pfn + int(np.flatnonzero(orphans)[0])))
    return hazards


#: Timings in which a foreign reference is still held when the block goes offline.
_HELD_ACROSS_OFFLINE = frozenset({ForeignRefTiming.AFTER_OFFLINE, ForeignRefTiming.AFTER_ONLINE})


def _held_reference_hazard(timing: ForeignRefTiming, n: int, pfn: int) -> Hazard:
    """What the holder's later put_page() does to a page whose reference went offline with it.

    While the block is offline (row 22) it decrements a count on the stale, possibly poisoned
    memmap (remove_pfn_range_from_zone()), 2 -> 1, and frees nothing. Once the block is onlined
    again, online_pages() -> move_pfn_range_to_zone() -> memmap_init_range() re-initialises
    every struct page (__init_single_page(): init_page_count(), flags cleared); virtio-mem's
    online callback (virtio_mem_online_page_cb()) only marks the unplugged pages fake-offline
    again. The count reads 1 (virtio-mem's), the foreign reference is lost, and the holder's
    put_page() takes it 1 -> 0: free_pages_prepare() resets the page type and an unplugged page
    goes to the buddy (§9.1: the count read 1 after re-online; the put itself is inferred).
    """
    if timing is ForeignRefTiming.AFTER_ONLINE:
        return Hazard(HazardKind.REFERENCE_LOST_ON_ONLINE,
                      f"{n} fake-offline page(s) went offline with a foreign reference: onlining the block again "
                      "re-initialises the memmap (memmap_init_range(): init_page_count() sets the count to 1), the "
                      "reference is lost, and the holder's put_page() then frees an unplugged page to the buddy",
                      pfn)
    return Hazard(HazardKind.STALE_MEMMAP_REFERENCE,
                  f"{n} foreign reference(s) on fake-offline pages dropped after the block went offline: put_page() "
                  "on a stale (possibly poisoned) memmap, not freed to the buddy", pfn)
