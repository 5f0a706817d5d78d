import pytest

from memplan.core.units import format_block_ranges, format_size, parse_block_ranges, parse_inclusive_range, parse_size


@pytest.mark.parametrize("text,value", [
    (4096, 4096), ("4096", 4096), ("0x140000000", 0x140000000), ("4GiB", 4 << 30), ("128MiB", 128 << 20),
    ("2M", 2 << 20), ("2m", 2 << 20), ("1.5G", 3 << 29), ("64K", 65536), ("1T", 1 << 40), (" 8GiB", 8 << 30),
    ("0", 0),
])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["", "12Q", "-1", "0xZZ", "1.3B", True, None, -5, "4 GiB GiB", "8 GiB"])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize("text,blocks", [
    ("7", [7]), ("32-35", [32, 33, 34, 35]), ("1,4,8-9", [1, 4, 8, 9]), ("memory8-9", [8, 9]), (5, [5]),
    ("3, 1", [1, 3]),
])
def test_parse_block_ranges(text, blocks):
    assert parse_block_ranges(text) == blocks


@pytest.mark.parametrize("bad", ["", "a", "5-3", "1-", "-1", ",", True])
def test_parse_block_ranges_rejects(bad):
    with pytest.raises(ValueError):
        parse_block_ranges(bad)


def test_format_block_ranges_round_trips():
    assert format_block_ranges([9, 1, 4, 8]) == "1,4,8-9"
    assert parse_block_ranges(format_block_ranges([0, 1, 2, 7, 10, 11])) == [0, 1, 2, 7, 10, 11]


@pytest.mark.parametrize("nbytes,text", [
    # util-linux size_to_human_string(): one decimal, rounded half up, trailing zero dropped.
    (0, "0B"), (512, "512B"), (1024, "1K"), (128 << 20, "128M"), (int(2.9 * (1 << 30)), "2.9G"),
    (int(15.6 * (1 << 30)), "15.6G"), (3 << 30, "3G"), ((1 << 30) - 1, "1024M"), (1536 << 20, "1.5G"),
    (16 << 40, "16T"),
])
def test_format_size_like_lsmem(nbytes, text):
    assert format_size(nbytes) == text


def test_inclusive_range():
    assert parse_inclusive_range("0x20000000-0x21ffffff") == (0x20000000, 0x22000000)
    with pytest.raises(ValueError):
        parse_inclusive_range("0x2000")
