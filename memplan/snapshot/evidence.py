"""What a snapshot can see of a block's pages: evidence classes and per-block counts (spec §6).

A live snapshot reads ``/proc/kpageflags`` (one u64 of flags per pfn) and ``/proc/kpagecount``
(the mapcount, not the refcount). Every pfn falls into exactly one ``PageClass``: what the flags
prove about the page, *before* deciding what kind of page the kernel will meet. Some classes
are unambiguous (a ``PG_reserved`` page is unmovable in every zone); others are blind spots
(spec §6.3): a page with no flag at all may be a free per-CPU page or an untyped kernel
allocation. ``BlockEvidence`` counts the classes per memory block; ``memplan.snapshot.confidence``
turns those counts and two readings of the block into a confidence and a list of blind spots.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Dict, Iterable, Optional, Tuple

from memplan.core.model import Zone


class PageClass(IntEnum):
    """What ``/proc/kpageflags`` (+ mapcount, ``/proc/iomem``) proves about one pfn."""

    UNFLAGGED = 0  # no flag at all: a free per-CPU page or an untyped kernel allocation
    FREE = 1  # KPF_BUDDY (head and tail pages of a free buddy chunk)
    LRU_ANON = 2  # KPF_LRU + KPF_ANON (or a THP page outside a whole PMD folio)
    LRU_FILE = 3  # KPF_LRU, page cache / shmem
    THP = 4  # a whole 2 MiB KPF_THP folio (head + 511 tails)
    USER_UNTYPED = 5  # user-memory folio bits (mmap, anon, swapbacked, ...) but not on the LRU
    UNTYPED = 6  # some other flag (private, owner_private, ...) and no page type
    KERNEL = 7  # visibly unmovable: non-LRU compound page, huge zero folio
    SLAB = 8  # KPF_SLAB
    PGTABLE = 9  # KPF_PGTABLE
    RESERVED = 10  # KPF_RESERVED (PG_reserved)
    HWPOISON = 11  # KPF_HWPOISON
    HUGETLB_MAPPED = 12  # 2 MiB hugetlb folio with a mapcount: in use
    HUGETLB_UNMAPPED = 13  # 2 MiB hugetlb folio, mapcount 0: free in the pool, or in use unmapped
    GIGANTIC_MAPPED = 14  # 1 GiB hugetlb folio with a mapcount
    GIGANTIC_UNMAPPED = 15  # 1 GiB hugetlb folio, mapcount 0
    BALLOON_MOVABLE = 16  # PageOffline with movable_ops visible (KPF_UPTODATE alias, 6.17+)
    BALLOON = 17  # PageOffline outside virtio-mem, visibly without movable_ops (6.17+)
    BALLOON_UNKNOWN = 18  # PageOffline outside virtio-mem; movable_ops not exported (< 6.17)
    FAKE_OFFLINE = 19  # PageOffline inside a "System RAM (virtio_mem)" resource
    FAKE_OFFLINE_SKIPPABLE = 20  # ... with KPF_OWNER_2 (PG_offline_skippable, Variant S)
    NOPAGE = 21  # KPF_NOPAGE: no online memmap
    HOLE = 22  # not "System RAM" in /proc/iomem

    @property
    def label(self) -> str:
        return self.name.lower()


#: Number of classes (``np.bincount(..., minlength=CLASSES)``).
CLASSES = len(PageClass)

#: One-line meaning of each class, for reports.
CLASS_MEANING: Dict[PageClass, str] = {
    PageClass.UNFLAGGED: "no flag: free per-CPU page or untyped kernel allocation",
    PageClass.FREE: "free (buddy)",
    PageClass.LRU_ANON: "anonymous memory on the LRU",
    PageClass.LRU_FILE: "page cache / shmem on the LRU",
    PageClass.THP: "2 MiB transparent huge page",
    PageClass.USER_UNTYPED: "user memory not on the LRU (per-CPU LRU batch)",
    PageClass.UNTYPED: "in use, no page type",
    PageClass.KERNEL: "unmovable compound kernel page",
    PageClass.SLAB: "slab",
    PageClass.PGTABLE: "page table",
    PageClass.RESERVED: "PG_reserved",
    PageClass.HWPOISON: "hardware poisoned",
    PageClass.HUGETLB_MAPPED: "2 MiB hugetlb, mapped",
    PageClass.HUGETLB_UNMAPPED: "2 MiB hugetlb, not mapped (free or unmapped)",
    PageClass.GIGANTIC_MAPPED: "1 GiB hugetlb, mapped",
    PageClass.GIGANTIC_UNMAPPED: "1 GiB hugetlb, not mapped (free or unmapped)",
    PageClass.BALLOON_MOVABLE: "PageOffline with movable_ops (balloon compaction)",
    PageClass.BALLOON: "PageOffline without movable_ops (balloon)",
    PageClass.BALLOON_UNKNOWN: "PageOffline outside virtio-mem (movable_ops not exported)",
    PageClass.FAKE_OFFLINE: "virtio-mem fake-offline (unplugged)",
    PageClass.FAKE_OFFLINE_SKIPPABLE: "virtio-mem fake-offline, PG_offline_skippable",
    PageClass.NOPAGE: "no memmap (KPF_NOPAGE)",
    PageClass.HOLE: "not System RAM (/proc/iomem)",
}

#: Classes whose kernel page kind a snapshot has to guess; a second, pessimistic reading of
#: the block turns each of them into its worst plausible kind.
AMBIGUOUS = frozenset({
    PageClass.UNFLAGGED, PageClass.USER_UNTYPED, PageClass.HUGETLB_UNMAPPED, PageClass.GIGANTIC_UNMAPPED,
    PageClass.BALLOON_UNKNOWN,
})

#: Classes whose pages are unmovable in a kernel zone whatever a snapshot cannot see.
VISIBLY_UNMOVABLE_KERNEL_ZONE = frozenset({
    PageClass.RESERVED, PageClass.SLAB, PageClass.PGTABLE, PageClass.KERNEL,
})


@dataclass(frozen=True)
class BlockEvidence:
    """Page classes counted over one memory block, plus the facts confidence needs."""

    block: int
    zone: Optional[Zone]
    #: pages per ``PageClass`` (index = class code)
    counts: Tuple[int, ...]
    #: CMA pages of the block's zone (``/proc/zoneinfo`` ``cma``); ``None`` when unknown
    zone_cma_pages: Optional[int] = None
    #: the kernel exports movable_ops for PageOffline pages (6.17+: KPF_UPTODATE alias)
    movable_ops_visible: bool = False
    #: the tree saved no page flags: ``counts`` are a stand-in (every page read as free)
    no_page_data: bool = False
    #: neither valid_zones nor zoneinfo tell the block's zone: ``zone`` is an assumption
    zone_assumed: bool = False
    #: the online block's ``removable`` read 0 when the tree was saved
    removable_zero: bool = False

    def count(self, cls: PageClass) -> int:
        return self.counts[int(cls)] if int(cls) < len(self.counts) else 0

    def total(self, classes: Iterable[PageClass]) -> int:
        return sum(self.count(c) for c in classes)

    @property
    def ambiguous(self) -> int:
        return 0 if self.no_page_data else self.total(AMBIGUOUS)
