"""The two PageOffline semantics as ONE set of variation points (spec §5.1).

Every difference between mainline (``refcount``) and the posted ``PG_offline_skippable``
patch (``skippable``) is one of the five predicate sites below, what virtio-mem does in its
memory notifier (``fake_offline_skippable()``, ``virtio_mem_going_offline()``,
``virtio_mem_cancel_offline()``) and how its fake-offline pages look in kpageflags
(``marks_fake_offline``, ``unflagged_fake_offline_kind``). Nothing outside this module names a
semantics or reads the flags behind these methods, so a third variant (e.g. a future "frozen
PageOffline" kernel) is one more subclass.

All predicates take numpy arrays describing PageOffline pages (``refcount`` after the memory
notifier ran, ``skippable`` = ``PageOfflineSkippable``) and return boolean arrays; they work on
0-d arrays too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Dict, List, Optional, Tuple

import numpy as np

from memplan.core.arrays import AnyArray, BoolArray
from memplan.core.errors import UsageError, did_you_mean
from memplan.core.model import DriverState, PageKind
from memplan.core.results import ForeignRefEffect, HazardKind, LogLevel
from memplan.kernel.virtio_mem import SbmState

#: ``virtio_mem_sbm_mb_state`` names of online, partially plugged blocks (PATCH-v2 clears the
#: skippable bit of their unplugged sub-blocks when the driver is removed)
_PARTIAL_ONLINE_STATES = frozenset({SbmState.KERNEL_PARTIAL.value, SbmState.MOVABLE_PARTIAL.value})

#: (level, kernel text, function, hazard, mask)
CommitCheck = Tuple[LogLevel, str, str, HazardKind, BoolArray]


class OfflineSemantics(ABC):
    """How ``offline_pages()`` treats PageOffline pages that are not movable (no movable_ops)."""

    name: str
    title: str
    #: virtio-mem drops its reference on fake-offline pages in MEM_GOING_OFFLINE and re-takes
    #: it in MEM_CANCEL_OFFLINE (``virtio_mem_fake_offline_going_offline()``)
    virtio_mem_drops_refs: bool
    #: virtio-mem sets PG_offline_skippable on its fake-offline pages
    #: (``virtio_mem_set_fake_offline()`` in PATCH-v2)
    virtio_mem_marks_skippable: bool
    #: driver removal clears PG_offline_skippable on unplugged parts of online partial blocks
    #: (``virtio_mem_sbm_mark_mb_non_skippable()`` in PATCH-v2)
    virtio_mem_unload_clears_skippable: bool
    #: what a virtio-mem fake-offline page without PG_offline_skippable (kpageflags
    #: ``KPF_OWNER_2``) is under this semantics (snapshots read the flag)
    unflagged_fake_offline_kind: PageKind

    @property
    def marks_fake_offline(self) -> bool:
        """Whether virtio-mem's fake-offline pages carry PG_offline_skippable (``KPF_OWNER_2``)
        under this semantics: what a snapshot can tell the semantics by."""
        return self.virtio_mem_marks_skippable

    # virtio-mem (drivers/virtio/virtio_mem.c): what the driver does differs with the semantics.
    def fake_offline_skippable(self, driver: DriverState, device_state: Optional[str]) -> bool:
        """Whether a block's virtio-mem fake-offline pages carry PG_offline_skippable.

        PATCH-v2 sets the flag whenever virtio-mem fake-offlines a page
        (``virtio_mem_set_fake_offline()``); on driver removal
        ``virtio_mem_sbm_mark_mb_non_skippable()`` clears it for ``KERNEL_PARTIAL`` and
        ``MOVABLE_PARTIAL`` blocks.
        """
        if not self.virtio_mem_marks_skippable:
            return False
        return not (self.virtio_mem_unload_clears_skippable and driver is DriverState.UNLOADED
                    and device_state in _PARTIAL_ONLINE_STATES)

    def virtio_mem_going_offline(self, refcount: AnyArray) -> AnyArray:
        """Refcounts of a loaded driver's fake-offline pages after its MEM_GOING_OFFLINE handler
        (``virtio_mem_fake_offline_going_offline()``: ``page_ref_dec_and_test()`` per page)."""
        return refcount - 1 if self.virtio_mem_drops_refs else refcount

    def virtio_mem_cancel_offline(self, refcount: AnyArray) -> AnyArray:
        """Refcounts after MEM_CANCEL_OFFLINE re-takes what GOING_OFFLINE dropped
        (``virtio_mem_fake_offline_cancel_offline()``: ``page_ref_inc()``, ML-NEW)."""
        return refcount + 1 if self.virtio_mem_drops_refs else refcount

    def foreign_reference_effect(self) -> ForeignRefEffect:
        """What one unexpected reference on a (loaded) virtio-mem fake-offline page does (spec
        rows 20 and 22), from this semantics' own predicate sites: SCAN (site 2) after
        virtio-mem's MEM_GOING_OFFLINE handler ran, else the commit checks (site 5)."""
        refcount = np.array([2 - (1 if self.virtio_mem_drops_refs else 0)], dtype=np.int64)
        skippable = np.array([self.virtio_mem_marks_skippable])
        if bool(self.scan_busy(refcount, skippable)[0]):
            return ForeignRefEffect.BLOCKS
        if any(bool(mask.any()) for *_, mask in self.commit_checks(refcount, skippable)):
            return ForeignRefEffect.WARNS
        return ForeignRefEffect.NONE

    def scan_busy_why(self, refcount: int) -> str:
        """Why SCAN (site 2) calls one PageOffline page definitely unmovable (``explain``)."""
        if self.virtio_mem_marks_skippable:
            return "not PG_offline_skippable"
        return f"refcount {refcount} after MEM_GOING_OFFLINE"

    # Site 1: mm/page_isolation.c page_is_unmovable(), PB_ISOLATE_MODE_MEM_OFFLINE rule.
    @abstractmethod
    def isolation_treats_as_movable(self, skippable: BoolArray) -> BoolArray:
        """PageOffline pages (refcount > 0, kernel zone) that isolation lets through."""

    # Site 2: mm/memory_hotplug.c scan_movable_pages().
    @abstractmethod
    def scan_busy(self, refcount: AnyArray, skippable: BoolArray) -> BoolArray:
        """PageOffline pages that make SCAN return -EBUSY ("unmovable page")."""

    # Site 3: mm/memory_hotplug.c do_migrate_range().
    @abstractmethod
    def migrate_skips(self, skippable: BoolArray) -> BoolArray:
        """PageOffline pages MIGRATE skips before ``folio_try_get()``."""

    # Site 4: mm/page_isolation.c __test_page_isolated_in_pageblock(), MEM_OFFLINE mode.
    @abstractmethod
    def test_passes(self, refcount: AnyArray, skippable: BoolArray) -> BoolArray:
        """PageOffline pages TEST_ISOLATED accepts."""

    # Site 5: mm/page_alloc.c __offline_isolated_pages().
    @abstractmethod
    def commit_checks(self, refcount: AnyArray, skippable: BoolArray) -> List[CommitCheck]:
        """The assertions the commit step runs on every PageOffline page still in the range."""


class RefcountSemantics(OfflineSemantics):
    """Mainline: every released kernel (ML-NEW torvalds/linux @ c17ee635, still refcount)."""

    name = "refcount"
    title = "mainline (MEM_GOING_OFFLINE refcount protocol)"
    virtio_mem_drops_refs = True
    virtio_mem_marks_skippable = False
    virtio_mem_unload_clears_skippable = False
    unflagged_fake_offline_kind = PageKind.FAKE_OFFLINE

    def isolation_treats_as_movable(self, skippable: BoolArray) -> BoolArray:
        # "We treat all PageOffline() pages as movable when offlining to give drivers a
        # chance to decrement their reference count in MEM_GOING_OFFLINE".
        return np.ones_like(skippable, dtype=bool)

    def scan_busy(self, refcount: AnyArray, skippable: BoolArray) -> BoolArray:
        # if (PageOffline(page) && page_count(page)) return -EBUSY;
        return refcount != 0

    def migrate_skips(self, skippable: BoolArray) -> BoolArray:
        # No special case: refcount-0 pages fail folio_try_get() and are skipped anyway.
        return np.zeros_like(skippable, dtype=bool)

    def test_passes(self, refcount: AnyArray, skippable: BoolArray) -> BoolArray:
        # else if (PageOffline(page) && !page_count(page)) pfn++;
        return refcount == 0

    def commit_checks(self, refcount: AnyArray, skippable: BoolArray) -> List[CommitCheck]:
        return [(LogLevel.BUG, "BUG_ON(page_count(page))", "__offline_isolated_pages",
                 HazardKind.BUG, refcount != 0)]


class SkippableSemantics(OfflineSemantics):
    """The posted patch "mm/memory_hotplug: PG_offline_skippable ..." (v2, 2025-05-20), not merged."""

    name = "skippable"
    title = "PG_offline_skippable patch (posted May 2025, not in mainline)"
    virtio_mem_drops_refs = False
    virtio_mem_marks_skippable = True
    virtio_mem_unload_clears_skippable = True
    #: virtio_mem_sbm_mark_mb_non_skippable(): an ordinary, unmovable PageOffline page
    unflagged_fake_offline_kind = PageKind.BALLOON

    def isolation_treats_as_movable(self, skippable: BoolArray) -> BoolArray:
        # if ((flags & MEMORY_OFFLINE) && PageOffline(page) && PageOfflineSkippable(page)) continue;
        return np.asarray(skippable, dtype=bool)

    def scan_busy(self, refcount: AnyArray, skippable: BoolArray) -> BoolArray:
        # if (PageOffline(page) && !PageOfflineSkippable(page)) return -EBUSY;
        return ~np.asarray(skippable, dtype=bool)

    def migrate_skips(self, skippable: BoolArray) -> BoolArray:
        # if (PageOffline(page) && PageOfflineSkippable(page)) continue;
        return np.asarray(skippable, dtype=bool)

    def test_passes(self, refcount: AnyArray, skippable: BoolArray) -> BoolArray:
        return np.asarray(skippable, dtype=bool)

    def commit_checks(self, refcount: AnyArray, skippable: BoolArray) -> List[CommitCheck]:
        return [
            (LogLevel.WARN_ONCE, "WARN_ON_ONCE(!PageOfflineSkippable(page))", "__offline_isolated_pages",
             HazardKind.WARN, ~np.asarray(skippable, dtype=bool)),
            (LogLevel.WARN_ONCE, "WARN_ON_ONCE(page_count(page) != 1)", "__offline_isolated_pages",
             HazardKind.WARN, refcount != 1),
        ]


def foreign_reference_blocks(semantics: OfflineSemantics) -> bool:
    """Whether one unexpected reference on a (loaded) virtio-mem fake-offline page stops
    offlining: what SCAN (site 2) sees after virtio-mem's MEM_GOING_OFFLINE handler ran
    (spec row 20). Used to name the blind spot a snapshot has there (refcounts are not exported)."""
    return semantics.foreign_reference_effect() is ForeignRefEffect.BLOCKS


SEMANTICS: Dict[str, OfflineSemantics] = {s.name: s for s in (RefcountSemantics(), SkippableSemantics())}


#: What every released kernel does, and what a machine uses unless told otherwise.
MAINLINE = "refcount"
#: The posted, unmerged PG_offline_skippable patch.
PROPOSED = "skippable"


def semantics_marking(flagged: bool) -> OfflineSemantics:
    """The semantics under which virtio-mem's fake-offline pages carry PG_offline_skippable
    (``flagged``) or not: mainline when it fits, else the first that does (snapshot detection)."""
    mainline = SEMANTICS[MAINLINE]
    if mainline.marks_fake_offline is flagged:
        return mainline
    return next(s for s in SEMANTICS.values() if s.marks_fake_offline is flagged)


def get_semantics(name: Optional[str]) -> OfflineSemantics:
    """Look up a semantics by name (``refcount`` or ``skippable``; ``None``: mainline)."""
    if name is None:
        return SEMANTICS[MAINLINE]
    try:
        return SEMANTICS[name]
    except KeyError:
        raise UsageError(f"unknown semantics {name!r}; choose one of: {', '.join(SEMANTICS)}",
                         hint=did_you_mean(name, SEMANTICS)) from None
