import pytest

from memplan.core.geometry import Geometry, GiB, MiB


def test_x86_64_defaults():
    g = Geometry()
    assert (g.page_size, g.pageblock_pages, g.pages_per_block, g.pageblocks_per_block) == (4096, 512, 32768, 64)
    assert g.pages_per_section == 32768
    assert g.vmemmap_pages_per_block == 512  # 2 MiB of struct pages: one pageblock
    assert g.block_of_pfn(0x40000) == 8 and g.block_start_pfn(8) == 0x40000


def test_two_gib_blocks():
    g = Geometry(memory_block_size=2 * GiB)
    assert g.pages_per_block == 524288 and g.vmemmap_pages_per_block == 8192


@pytest.mark.parametrize("size", [96 * MiB, 64 * MiB, 0])
def test_invalid_block_sizes(size):
    with pytest.raises(ValueError):
        Geometry(memory_block_size=size)
