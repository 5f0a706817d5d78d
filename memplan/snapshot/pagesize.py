"""The page size of a snapshot's machine (issue 13 §3): from the tree, never a constant.

Linux hot-unplugs memory with 4 KiB pages (x86-64, s390x, arm64), 16 KiB and 64 KiB pages
(arm64, ppc64le). A tree says which, in order of trust:

1. ``memplan-page-size``, written by ``memplan snapshot --save`` (the live machine's
   ``sysconf(_SC_PAGESIZE)``); on the live machine that value itself;
2. ``/proc/meminfo`` ``MemTotal`` (kB) against ``/proc/zoneinfo``'s ``managed`` pages: both
   count ``totalram_pages()``, one in kB, one in pages (``si_meminfo()``, ``zoneinfo_show()``);
3. ``/proc/zoneinfo``'s zone spans (pfns) against the memory blocks (bytes): only one page
   size makes the spans end in the last online block and meet every online block;
4. the length of a plain saved kpageflags (one entry per pfn up to
   ``round_up(max_pfn, PAGES_PER_SECTION)``) against the end of the last memory block;
5. the hugetlb sizes in ``/sys/kernel/mm/hugepages``: the PMD size is ``PAGE_SIZE^2 / 8``
   (2 MiB, 32 MiB, 512 MiB) and arm64's contiguous-PTE sizes tell 4 KiB (64 KiB hugepages)
   from 16 KiB;
6. nothing: 4 KiB, said in a warning.

``Geometry`` (memplan.core.geometry) owns everything that follows from the page size.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from memplan.core.errors import InputError
from memplan.core.geometry import ARM64_4K_CONT_PTE_SIZE, DEFAULT_PAGE_SIZE, PAGE_SIZES, Geometry, pmd_size

#: the file ``snapshot --save`` writes (the page size in bytes, one line)
PAGE_SIZE_FILE = "memplan-page-size"
HUGEPAGES_DIR = "sys/kernel/mm/hugepages"


@dataclass(frozen=True)
class PageSize:
    size: int
    #: how it was found, for ``memplan snapshot`` (and a warning when it is a guess)
    how: str
    #: only a guess: said in a warning
    guessed: bool = False


def geometry_for(block_size: int, page_size: int) -> Geometry:
    """The geometry of a machine with these blocks and pages (``Geometry.for_page_size``)."""
    return Geometry.for_page_size(block_size, page_size)


def _saved(text: Optional[str], display: str) -> Optional[int]:
    if text is None:
        return None
    try:
        size = int(text.strip())
    except ValueError:
        size = 0
    if size not in PAGE_SIZES:
        sizes = ", ".join(str(s) for s in PAGE_SIZES[:-1]) + f" or {PAGE_SIZES[-1]}"
        raise InputError(f"{display}: {text.strip()[:40]!r} is not a page size ({sizes})")
    return size


def _nearest(value: float) -> Optional[int]:
    """The page size ``value`` is within 2 % of, if any."""
    for size in PAGE_SIZES:
        if abs(value - size) <= size * 0.02:
            return size
    return None


def _from_meminfo(meminfo: Optional[str], managed: int) -> Optional[int]:
    if not meminfo or managed <= 0:
        return None
    match = re.search(r"^MemTotal:\s+([0-9]{1,20}) kB", meminfo, re.M)  # ASCII; no 5000-digit int()
    if not match:
        return None
    return _nearest(int(match.group(1)) * 1024 / managed)


def _from_spans(spans: Sequence[Tuple[int, int]], online: Sequence[Tuple[int, int]]) -> Optional[int]:
    """The one page size for which every online block ``[start, end)`` (bytes) overlaps a zone
    span ``[start_pfn, end_pfn)`` and the highest span ends inside the last online block
    (offlining shrinks the zone spans, ``shrink_zone_span()``)."""
    if not spans or not online:
        return None
    last_start, last_end = max(online, key=lambda r: r[1])
    fits = []
    for size in PAGE_SIZES:
        ranges = sorted((a * size, b * size) for a, b in spans)
        top = max(hi for _, hi in ranges)
        if last_start < top <= last_end and all(any(lo < end and start < hi for lo, hi in ranges)
                                                for start, end in online):
            fits.append(size)
    return fits[0] if len(fits) == 1 else None


def _from_kpageflags(entries: Optional[int], last_end: int, block_size: int) -> Optional[int]:
    """kpageflags ends at ``round_up(max_pfn, PAGES_PER_SECTION)``: at or past the end of the
    last present block, by less than a section (at most a block)."""
    if not entries:
        return None
    fits = [size for size in PAGE_SIZES if last_end <= entries * size < last_end + block_size]
    return fits[0] if len(fits) == 1 else None


def _from_hugepages(names: Sequence[str]) -> Optional[int]:
    kb = {int(m.group(1)) for m in (re.fullmatch(r"hugepages-([0-9]{1,20})kB", n) for n in names) if m}
    if not kb:
        return None
    small, middle, large = PAGE_SIZES
    if pmd_size(large) >> 10 in kb:  # 512 MiB PMD: 64 KiB pages
        return large
    if pmd_size(middle) >> 10 in kb and ARM64_4K_CONT_PTE_SIZE >> 10 not in kb:
        return middle  # 32 MiB PMD without 4 KiB arm64's 64 KiB CONT_PTE size
    if pmd_size(small) >> 10 in kb:
        return small
    return None


def find_page_size(root: str, live: bool, texts: Dict[str, Optional[str]], zone_spans: Sequence[Tuple[int, int]],
                   managed_pages: int, online: Sequence[Tuple[int, int]], present_end: int,
                   kpageflags_entries: Optional[int], block_size: int, hugepage_dirs: List[str],
                   display: str) -> PageSize:
    """The machine's page size and how it was found (see the module's list)."""
    if live:
        return PageSize(os.sysconf("SC_PAGE_SIZE"), "this machine's page size")
    saved = _saved(texts.get(PAGE_SIZE_FILE), display)
    if saved:
        return PageSize(saved, f"recorded by memplan snapshot --save ({PAGE_SIZE_FILE})")
    size = _from_meminfo(texts.get("proc/meminfo"), managed_pages)
    if size:
        return PageSize(size, "inferred: /proc/meminfo MemTotal over the managed pages in /proc/zoneinfo")
    size = _from_spans(zone_spans, online)
    if size:
        return PageSize(size, "inferred: the only page size for which the zone spans of /proc/zoneinfo meet "
                              "every online block and end in the last one")
    size = _from_kpageflags(kpageflags_entries, present_end, block_size)
    if size:
        return PageSize(size, "inferred: the length of proc/kpageflags against the end of the last memory block")
    size = _from_hugepages(hugepage_dirs)
    if size:
        return PageSize(size, f"guessed from the hugetlb sizes in {HUGEPAGES_DIR} (the PMD size is "
                              "PAGE_SIZE^2/8)", guessed=True)
    return PageSize(DEFAULT_PAGE_SIZE, "assumed: the tree has nothing to tell it by (no memplan-page-size, "
                                       "meminfo with zoneinfo, or hugepages); pfns and page counts assume 4 KiB",
                    guessed=True)
