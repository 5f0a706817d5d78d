"""Memory geometry: pages, pageblocks, folios, sections and memory blocks (x86-64 defaults).

Constants follow arch/x86 and ``include/linux/pageblock-flags.h`` (spec §1.1): 4 KiB pages,
``pageblock_order`` 9 (2 MiB), ``MAX_PAGE_ORDER`` 10 (4 MiB), ``SECTION_SIZE_BITS`` 27
(128 MiB). The memory block size is a multiple of the section size and a power of two
(``memory_dev_init()`` panics otherwise, ``drivers/base/memory.c``).

Everything that depends on the page size lives here and nowhere else: folio orders (a PMD
maps ``PAGE_SIZE / 8`` pages, so ``HPAGE_PMD_ORDER = PAGE_SHIFT - 3``; a PUD twice that
order), hugetlb orders and the buddy's ``MAX_PAGE_ORDER``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple

import numpy as np

from memplan.core.model import FOLIO_SIZE, FolioSize

MiB = 1 << 20
GiB = 1 << 30

#: ``sizeof(struct page)`` on x86-64; the memmap costs 64 bytes per 4 KiB page.
STRUCT_PAGE_SIZE = 64

#: page sizes of the architectures Linux hot-unplugs memory on (x86-64, s390x, arm64: 4 KiB;
#: arm64: 16 KiB; arm64, ppc64le: 64 KiB)
PAGE_SIZES: Tuple[int, ...] = (4096, 16384, 65536)
#: the page size assumed when nothing tells it (x86-64)
DEFAULT_PAGE_SIZE = 4096
#: ``MAX_PAGE_ORDER`` per page size (arm64 ``ARCH_FORCE_MAX_ORDER`` defaults: 10, 11, 13)
MAX_PAGE_ORDER: Dict[int, int] = {4096: 10, 16384: 11, 65536: 13}
#: ``1 << SECTION_SIZE_BITS`` per page size (x86-64/arm64 4 KiB and 16 KiB: 27; arm64 64 KiB: 29)
SECTION_SIZE: Dict[int, int] = {4096: 128 * MiB, 16384: 128 * MiB, 65536: 512 * MiB}
#: arm64 with 4 KiB pages also offers contiguous-PTE hugetlb pages of ``CONT_PTES`` (16) pages:
#: a hugetlb size no other page size has (``arch/arm64/include/asm/pgtable-hwdef.h``)
ARM64_4K_CONT_PTE_SIZE = 16 * 4096


def pmd_size(page_size: int) -> int:
    """``PMD_SIZE``: a page-table page holds ``page_size / 8`` entries, so a PMD maps
    ``page_size ** 2 / 8`` bytes (2 MiB, 32 MiB, 512 MiB): the PMD hugetlb size."""
    return page_size * page_size // 8


@dataclass(frozen=True)
class Geometry:
    """Sizes that decide how a physical address range splits into kernel units."""

    memory_block_size: int = 128 * MiB
    page_size: int = 4096
    pageblock_order: int = 9
    max_page_order: int = 10
    section_size: int = 128 * MiB
    #: ``Geometry.folio_order`` per page-kind byte (derived)
    _folio_order: np.ndarray = field(init=False, repr=False, compare=False)
    #: ``(1 << folio order) - 1`` per page-kind byte (derived): a page starts a folio where
    #: ``pfn & mask == 0``
    _folio_mask: np.ndarray = field(init=False, repr=False, compare=False)

    @classmethod
    def for_page_size(cls, block_size: int, page_size: int) -> "Geometry":
        """The geometry of a machine with these blocks and pages: pageblocks of PMD size capped at
        MAX_PAGE_ORDER (``pageblock_order``), sections of SECTION_SIZE_BITS (at most a block)."""
        shift = page_size.bit_length() - 1
        max_order = MAX_PAGE_ORDER.get(page_size, MAX_PAGE_ORDER[DEFAULT_PAGE_SIZE])
        section = SECTION_SIZE.get(page_size, SECTION_SIZE[DEFAULT_PAGE_SIZE])
        return cls(memory_block_size=block_size, page_size=page_size, pageblock_order=min(shift - 3, max_order),
                   max_page_order=max_order, section_size=min(section, block_size))

    def __post_init__(self) -> None:
        size = self.memory_block_size
        if size <= 0 or size & (size - 1):
            raise ValueError(f"memory block size {size:#x} is not a power of two")
        if size < self.section_size:
            raise ValueError(
                f"memory block size {size:#x} is smaller than the section size {self.section_size:#x}"
            )

        orders = np.array([0, self.pmd_order, self.pud_order], dtype=np.uint8)
        folio_order = orders[FOLIO_SIZE]
        object.__setattr__(self, "_folio_order", folio_order)
        mask = (np.uint32(1) << folio_order.astype(np.uint32)) - np.uint32(1)
        object.__setattr__(self, "_folio_mask", mask.astype(np.uint32))

    @property
    def pmd_order(self) -> int:
        """``HPAGE_PMD_ORDER``: a page-table page holds ``PAGE_SIZE / 8`` entries (9 with 4 KiB pages)."""
        return self.page_shift - 3

    @property
    def pud_order(self) -> int:
        """``PUD_ORDER``: one more page-table level (18 with 4 KiB pages: 1 GiB)."""
        return 2 * (self.page_shift - 3)

    @property
    def pmd_pages(self) -> int:
        """Pages of a PMD-sized folio (``HPAGE_PMD_NR``: 512 with 4 KiB pages)."""
        return 1 << self.pmd_order

    @property
    def hugetlb_orders(self) -> Tuple[int, int]:
        """The hstates memplan models: PMD-sized (2 MiB) and PUD-sized (gigantic, 1 GiB) pages."""
        return (self.pmd_order, self.pud_order)

    def order_of(self, size: FolioSize) -> int:
        """The order of a folio of this size class."""
        return (0, self.pmd_order, self.pud_order)[size]

    @property
    def folio_order(self) -> np.ndarray:
        """Folio order per page-kind byte (lookup table for ``np.take``)."""
        return self._folio_order

    @property
    def folio_mask(self) -> np.ndarray:
        """``(1 << folio order) - 1`` per page-kind byte (uint32 lookup table for ``np.take``)."""
        return self._folio_mask

    def is_gigantic(self, order: int) -> bool:
        """``hstate_is_gigantic()``: a hugetlb order the buddy cannot allocate
        (``huge_page_order(h) > MAX_PAGE_ORDER``, include/linux/hugetlb.h)."""
        return order > self.max_page_order

    def gigantic(self, orders: np.ndarray) -> np.ndarray:
        """``is_gigantic()`` of every order of an array."""
        out: np.ndarray = np.asarray(orders) > self.max_page_order
        return out

    @property
    def page_shift(self) -> int:
        return self.page_size.bit_length() - 1

    @property
    def pageblock_pages(self) -> int:
        """``pageblock_nr_pages``: 512 on x86-64."""
        return 1 << self.pageblock_order

    @property
    def pageblock_size(self) -> int:
        return self.pageblock_pages * self.page_size

    @property
    def pages_per_block(self) -> int:
        return self.memory_block_size // self.page_size

    @property
    def pageblocks_per_block(self) -> int:
        return self.pages_per_block // self.pageblock_pages

    @property
    def pages_per_section(self) -> int:
        """``PAGES_PER_SECTION``."""
        return self.section_size // self.page_size

    @property
    def vmemmap_pages_per_block(self) -> int:
        """Pages of self-hosted memmap per block with memmap_on_memory (spec §1.4)."""
        return self.pages_per_block * STRUCT_PAGE_SIZE // self.page_size

    def block_of_pfn(self, pfn: int) -> int:
        return pfn // self.pages_per_block

    def block_start_pfn(self, block: int) -> int:
        return block * self.pages_per_block

    def pfn(self, address: int) -> int:
        return address >> self.page_shift

    def address(self, pfn: int) -> int:
        return pfn << self.page_shift


#: the x86-64 geometry (4 KiB pages, 128 MiB blocks): for callers with no machine at hand
DEFAULT_GEOMETRY = Geometry()
