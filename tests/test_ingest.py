"""Parallel ingest (memplan.snapshot.ingest): pread readers on disjoint ranges return exactly
what one plain read returns; chunked saves round-trip and read like the single-stream .xz of
older saves; --save is atomic; --jobs is checked; the live path on this machine."""

import json
import lzma
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import fixture_tree
from memplan.cli import main
from memplan.core.errors import InputError
from memplan.snapshot import ingest
from memplan.snapshot.kpageflags import KpageFile

HOST = fixture_tree("host-6.18-24g")
POST1 = fixture_tree("qemu-6.1-post1")
JOBS = (1, 2, 3, 5, 16)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(result, needle):
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if not line.startswith("memplan: warning:")]
    assert len(errors) == 1 and errors[0].startswith("memplan: error:") and needle in errors[0], result.stderr
    assert "Traceback" not in result.output


@pytest.fixture(autouse=True)
def default_jobs():
    yield
    ingest.set_jobs(None)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The fixtures' kpageflags/kpagecount decompressed to plain files, with their bytes."""
    out = {}
    root = tmp_path_factory.mktemp("plain")
    for name, tree, rel in (("host", HOST, "proc/kpageflags"), ("post1", POST1, "proc/kpageflags"),
                            ("post1-count", POST1, "proc/kpagecount")):
        with lzma.open(os.path.join(tree, rel + ".xz"), "rb") as handle:
            data = handle.read()
        path = str(root / name)
        with open(path, "wb") as handle:
            handle.write(data)
        out[name] = (path, data)
    return out


def test_split_pieces_are_disjoint_aligned_and_cover_the_range():
    for start, count, parts in ((0, 1 << 20, 2), (7, (1 << 20) + 13, 3), (513, 1 << 18, 16), (5, 100, 4),
                                (1 << 30, (1 << 19) - 1, 5)):
        pieces = ingest.split(start, count, parts)
        assert pieces[0][0] == start and pieces[-1][1] == start + count
        assert all(a < b for a, b in pieces)
        assert all(b == c for (_, b), (c, _) in zip(pieces, pieces[1:]))
        assert all(b % ingest.ALIGN_PFNS == 0 for _, b in pieces[:-1])
        assert 1 <= len(pieces) <= parts
    assert len(ingest.split(0, 1 << 20, 2)) == 2  # big enough to split
    assert len(ingest.split(0, 100, 4)) == 1  # too small to be worth a thread


@pytest.mark.parametrize("threads", JOBS)
@pytest.mark.parametrize("name", ["host", "post1", "post1-count"])
def test_parallel_pread_equals_a_plain_read(plain, name, threads):
    path, data = plain[name]
    pfns = len(data) // 8
    fd = os.open(path, os.O_RDONLY)
    try:
        # odd boundaries: not block or PMD aligned, crossing the end of the file, past it
        for start, count in ((0, pfns), (1, pfns - 3), (12345, 777_777), (pfns - 70_001, 200_000),
                             (pfns - 1, 5), (pfns, 10), (pfns + 512, 1 << 16)):
            start = max(start, 0)
            out = np.empty(count, dtype="<u8")
            got = ingest.pread_into(fd, out.data.cast("B"), start * 8, threads)
            want = data[start * 8:(start + count) * 8]
            assert got == len(want)
            assert out.tobytes()[:got] == want
    finally:
        os.close(fd)


@pytest.mark.parametrize("threads", JOBS)
def test_kpagefile_reads_through_the_parallel_reader(plain, threads):
    path, data = plain["host"]
    ingest.set_jobs(threads)
    flags = KpageFile(path, "kpageflags")
    try:
        for start, count in ((0, 1 << 19), (3 << 19, 1 << 19), (100_003, 999_999), (len(data) // 8 - 9, 1 << 19)):
            assert flags.read(start, count).tobytes() == data[start * 8:(start + count) * 8]
    finally:
        flags.close()


@pytest.mark.parametrize("threads", (1, 2, 7))
def test_read_ranges_concatenates_only_the_ranges_asked_for(plain, threads):
    path, data = plain["host"]
    pfns = len(data) // 8
    ranges = [(0, 4096), (32768, 32768 * 5 + 17), (1 << 20, (1 << 20) + 3), (pfns - 100, pfns)]
    fd = os.open(path, os.O_RDONLY)
    try:
        out = ingest.read_ranges(fd, ranges, threads)
        assert out.tobytes() == b"".join(data[a * 8:b * 8] for a, b in ranges)
        # a range past the end of the file ends the result there
        short = ingest.read_ranges(fd, [(10, 20), (pfns - 5, pfns + 100), (pfns + 200, pfns + 300)], threads)
        assert short.tobytes() == data[80:160] + data[(pfns - 5) * 8:]
    finally:
        os.close(fd)


def _chunked(tmp_path, data, stream_bytes, threads, name="k.xz"):
    path = str(tmp_path / name)
    writer = ingest.ChunkedXzWriter(path, preset=1, stream_bytes=stream_bytes, threads=threads)
    for at in range(0, len(data), 1_000_000):  # pieces that do not line up with the streams
        writer.write(data[at:at + 1_000_000])
    writer.close()
    return path


@pytest.mark.parametrize("threads", (1, 2, 4))
def test_chunked_xz_is_one_valid_xz_and_reads_back_in_parallel(tmp_path, plain, threads):
    _, data = plain["host"]
    stream_bytes = 3 << 20  # not a multiple of the reads below
    path = _chunked(tmp_path, data, stream_bytes, threads)
    with lzma.open(path, "rb") as handle:  # xz tools and older memplan read it as one stream
        assert handle.read() == data
    fd = os.open(path, os.O_RDONLY)
    streams = ingest.xz_streams(fd, os.fstat(fd).st_size)
    os.close(fd)
    assert streams is not None and len(streams) == -(-len(data) // stream_bytes)
    assert [u for _, _, u in streams[:-1]] == [stream_bytes] * (len(streams) - 1)
    reader = ingest.XzStreams.open(path, "k.xz", threads)
    assert reader is not None
    try:
        pfns = len(data) // 8
        reads = [(s, 1 << 19) for s in range(0, pfns, 1 << 19)]  # sequential, as describe() reads
        reads += [(pfns - 3, 100), (5, 7), (1 << 21, (1 << 20) + 1), (pfns, 8), (0, pfns)]  # and random
        for start, count in reads:
            out = bytearray(count * 8)
            got = reader.read_into(memoryview(out), start * 8)
            want = data[start * 8:(start + count) * 8]
            assert got == len(want) and bytes(out[:got]) == want
    finally:
        reader.close()


def test_single_stream_xz_of_older_saves_is_read_as_a_stream(tmp_path, plain):
    _, data = plain["post1"]
    path = str(tmp_path / "kpageflags.xz")
    with lzma.open(path, "wb", preset=1) as handle:
        handle.write(data)
    assert ingest.XzStreams.open(path, "x") is None
    flags = KpageFile(path, "kpageflags.xz")
    assert flags.read(1000, 50_000).tobytes() == data[8000:8000 + 400_000]
    flags.close()


def test_empty_chunked_file_is_a_valid_empty_xz(tmp_path):
    path = str(tmp_path / "e.xz")
    ingest.ChunkedXzWriter(path, threads=2).close()
    with lzma.open(path) as handle:
        assert handle.read() == b""


def test_corrupt_chunk_is_one_input_error(tmp_path, plain):
    _, data = plain["host"]
    path = _chunked(tmp_path, data, 4 << 20, 2)
    fd = os.open(path, os.O_RDONLY)
    streams = ingest.xz_streams(fd, os.fstat(fd).st_size)
    os.close(fd)
    offset, length, _ = streams[3]
    with open(path, "r+b") as handle:
        handle.seek(offset + length // 2)
        byte = handle.read(1)
        handle.seek(offset + length // 2)
        handle.write(bytes([byte[0] ^ 0x55]))
    flags = KpageFile(path, "kpageflags.xz")
    with pytest.raises(InputError, match="kpageflags.xz: corrupt xz data"):
        for start in range(0, len(data) // 8, 1 << 19):
            flags.read(start, 1 << 19)
    flags.close()


# --------------------------------------------------------------------------------------------
# End to end: --save, --jobs


def _without_source(document):
    """What differs between a tree and its save: where it is, and how its page size is known (a
    save records it in memplan-page-size)."""
    document = dict(document)
    for key in ("source", "machine", "saved_to", "semantics_reason", "warnings", "page_size_source"):
        document.pop(key, None)
    return document


@pytest.mark.parametrize("tree", [HOST, POST1])
def test_save_round_trip_chunked_equals_the_old_format(tmp_path, tree):
    saved = tmp_path / "saved"
    result = run("snapshot", "--sysroot", tree, "--save", saved, "--jobs", "2", "-J")
    assert result.exit_code == 0, result.output
    fd = os.open(str(saved / "proc" / "kpageflags.xz"), os.O_RDONLY)
    streams = ingest.xz_streams(fd, os.fstat(fd).st_size)
    os.close(fd)
    with lzma.open(os.path.join(tree, "proc", "kpageflags.xz")) as handle:
        original = handle.read()
    with lzma.open(str(saved / "proc" / "kpageflags.xz")) as handle:
        copy = handle.read()
    # the save keeps the pfns up to the end of the last memory block (the tree's file may go on)
    blocks = [int(n[6:]) for n in os.listdir(os.path.join(tree, "sys/devices/system/memory")) if n[6:].isdigit()]
    assert copy == original[:len(copy)] and len(copy) == (max(blocks) + 1) * 32768 * 8
    assert streams is not None and len(streams) == -(-len(copy) // ingest.STREAM_BYTES)
    assert not [n for n in os.listdir(tmp_path) if n != "saved"]  # no temporary directory left
    before = _without_source(json.loads(result.stdout))
    for jobs in ("1", "3"):
        again = run("snapshot", "--sysroot", saved, "--jobs", jobs, "-J")
        assert again.exit_code == 0, again.output
        assert _without_source(json.loads(again.stdout)) == before
    old = run("simulate", "--sysroot", tree, "--json")
    new = run("simulate", "--sysroot", saved, "--json", "--jobs", "2")
    assert old.exit_code == new.exit_code
    assert json.loads(old.stdout)["blocks"] == json.loads(new.stdout)["blocks"]


def test_save_into_an_empty_directory_and_refusals(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    os.chmod(empty, 0o750)
    assert run("snapshot", "--sysroot", POST1, "--save", empty).exit_code == 0
    assert os.path.exists(empty / "proc" / "kpageflags.xz")
    assert os.stat(empty).st_mode & 0o777 == 0o750
    one_error_line(run("snapshot", "--sysroot", POST1, "--save", empty), "exists and is not an empty directory")
    assert sorted(os.listdir(tmp_path)) == ["empty"]


def test_a_failed_save_leaves_nothing(tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(POST1, broken)
    with open(broken / "proc" / "kpageflags.xz", "r+b") as handle:  # corrupt the middle
        handle.seek(os.path.getsize(broken / "proc" / "kpageflags.xz") // 2)
        handle.write(b"\x00" * 64)
    out = tmp_path / "out"
    one_error_line(run("snapshot", "--sysroot", broken, "--save", out), "corrupt")
    assert sorted(os.listdir(tmp_path)) == ["broken"]


@pytest.mark.parametrize("value, needle", [("0", "--jobs: 0 is not a thread count from 1 to 256"),
                                           ("-3", "--jobs: -3 is not a thread count"),
                                           ("100000", "--jobs: 100000 is not a thread count"),
                                           ("two", "--jobs: 'two' is not a number")])
@pytest.mark.parametrize("command", ["snapshot", "simulate"])
def test_bad_jobs_is_one_line(command, value, needle):
    one_error_line(run(command, "--sysroot", POST1, "--jobs", value), needle)


def test_default_jobs_is_one_per_cpu_capped():
    assert ingest.default_jobs() == max(1, min(os.cpu_count() or 1, ingest.MAX_DEFAULT_JOBS))
    ingest.set_jobs(3)
    assert ingest.jobs() == 3
    ingest.set_jobs(None)
    assert ingest.jobs() == ingest.default_jobs()


# --------------------------------------------------------------------------------------------
# This machine


def _live_reason():
    try:
        fd = os.open("/proc/kpageflags", os.O_RDONLY)
    except OSError as exc:
        return f"/proc/kpageflags is not readable here ({exc.strerror})"
    try:
        if len(os.pread(fd, 8, 0)) != 8:
            return "/proc/kpageflags reads empty here"
    finally:
        os.close(fd)
    return None


@pytest.mark.skipif(_live_reason() is not None, reason=str(_live_reason()))
def test_live_parallel_read_matches_a_plain_read():
    """Live flags change between two reads; the pseudo-flags of holes (KPF_NOPAGE) and
    reserved pages (KPF_RESERVED) do not, and the length is the same."""
    stable = np.uint64((1 << 20) | (1 << 32))  # KPF_NOPAGE, KPF_RESERVED
    fd = os.open("/proc/kpageflags", os.O_RDONLY)
    try:
        count = 1 << 20
        plain = np.frombuffer(os.pread(fd, count * 8, 0), dtype="<u8")
        for threads in (2, 4):
            out = np.empty(count, dtype="<u8")
            got = ingest.pread_into(fd, out.data.cast("B"), 0, threads)
            assert got == len(plain) * 8
            assert np.array_equal(out[:len(plain)] & stable, plain & stable)
    finally:
        os.close(fd)
    result = run("snapshot", "--live", "--jobs", "2", "-J")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pfns"] > 0
