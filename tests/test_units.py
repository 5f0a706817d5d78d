import pytest

from memplan.core.units import (
    format_block_ranges,
    format_size,
    parse_block_ranges,
    parse_chmem_size,
    parse_inclusive_range,
    parse_size,
)


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


# ---- util-linux's strtosize(), digit for digit ---------------------------------------------------

#: what util-linux 2.38 (lib/strutils.c parse_size(), through fallocate -l) gives for each string;
#: None: it refuses the string
UTIL_LINUX = [
    ("0.10MiB", 1048576), ("0.1MiB", 104857), ("1.010MiB", 1153433), ("1.01MiB", 1059061), ("1KB", 1000),
    ("1kb", 1000), ("1K", 1024), ("010", 8), ("0x10", 16), ("0x10K", 16384), ("1.5K", 1536), ("+5", 5),
    (" 5", 5), ("5 ", None), ("1B", None), ("4096", 4096), ("1.M", 1048576), ("0.5MB", 500000), ("16E", None),
    ("1KIB", None), ("1.0", None), ("99999999999999999999", None), ("1.99999999999999999999999K", None),
    ("1.25K", 1279), ("1.0005K", 1024), ("0x1.8M", 2097152), ("1.00.5M", 1053818), ("1e3", None), ("1Kb", 1000),
    ("1kiB", 1024), ("1 K", None), ("0x", None), ("08", None), ("1.5", None), ("1.", None), (".5K", None),
    ("1.0000000000000000000000005G", 1 << 30), ("18446744073709551615", (1 << 64) - 1), ("1E", 1 << 60),
]


@pytest.mark.parametrize("text,value", UTIL_LINUX)
def test_parse_size_is_util_linux_strtosize(text, value):
    if value is None:
        with pytest.raises(ValueError):
            parse_size(text)
    else:
        assert parse_size(text) == value


@pytest.mark.parametrize("text", ["9" * 400 + ".5G", "0." + "9" * 400 + "G", "9" * 5000, str(2**64), "15.99999E",
                                  "１２８MiB", "٣٢", 2**64, 2**100])
def test_sizes_past_64_bits_and_long_decimals_are_errors_never_infinity(text):
    with pytest.raises(ValueError) as info:
        parse_size(text)
    assert len(str(info.value)) < 240  # a 5000-digit value is named by its ends and its length


def test_format_size_at_the_top_of_the_range():
    # size_to_human_string() keeps three digits without overflowing a uint64_t
    assert format_size((1 << 64) - 1) == "16E"
    assert format_size(15 * (1 << 60) + (1 << 59)) == "15.5E"


# ---- chmem's SIZE (sys-utils/chmem.c parse_single_param()) ----------------------------------------

@pytest.mark.parametrize("text,value", [
    ("512", 512 << 20), ("512M", 512 << 20), ("512MiB", 512 << 20), ("1G", 1 << 30), ("128MB", 128 * 10**6),
    ("1.5G", 3 << 29), (" 64", 64 << 20), ("010", 8 << 20), ("0x1F", 31), ("0x1000", 4096 << 20), ("0", 0),
    ("1E", 1 << 60),
])
def test_chmem_size(text, value):
    # strtosize_or_err(), then "if (isdigit(str[strlen(str) - 1])) desc->size *= 1024*1024"
    assert parse_chmem_size(text) == value


@pytest.mark.parametrize("text,message", [
    ("512X", "'512X' is not a size (unknown suffix 'X'; chmem: Failed to parse size: '512X'; examples: 512M, 1G, "
             "1.5G, 4GiB, 512 (MiB); KB, MB, GB are powers of 1000)"),
    ("16E", "'16E' is not a size (past 2^64 - 1 bytes (16E); chmem: Failed to parse size: '16E'; examples:"),
    ("1.5", "'1.5' is not a size (a decimal point needs a suffix; chmem: Failed to parse size: '1.5'; examples:"),
    ("17592186044416", "'17592186044416' MiB is past 2^64 - 1 bytes (16E) (examples:"),
    ("9" * 400, "'999999999999999999999999999...9999999' (400 characters) is not a size (past 2^64"),
])
def test_chmem_size_errors_show_valid_examples(text, message):
    with pytest.raises(ValueError) as info:
        parse_chmem_size(text)
    assert str(info.value).startswith(message) and "4096" not in str(info.value)
