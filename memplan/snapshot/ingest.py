"""Parallel ingest of ``/proc/kpageflags`` / ``/proc/kpagecount`` and of saved copies.

Live files: ``kpageflags_read()`` (``fs/proc/page.c``) computes every entry on the CPU that
reads it and takes no lock, so readers on disjoint ranges do not contend. ``pread_into()``
splits one request into disjoint, 8-byte aligned pieces (on ``ALIGN_PFNS`` boundaries) and
reads them with one thread each, straight into slices of the caller's numpy buffer
(``os.preadv``; the GIL is released while the kernel works). Nothing is read beyond the range
asked for.

Saved trees: ``ChunkedXzWriter`` writes a ``.xz`` file as a concatenation of independent xz
streams of ``STREAM_BYTES`` each (a valid ``.xz``: ``xz -d``, ``lzma.open`` and older memplan
read it as one). ``XzStreams`` finds the stream boundaries from the streams' own footers and
indexes (xz file format 1.0.4, §2.1.2 and §4) and decompresses the streams a read needs, plus
the next ones (read-ahead), in parallel threads (liblzma runs without the GIL). A single-stream
``.xz`` of an older save is read as before, as a stream.

Thread count: ``--jobs N`` (``set_jobs()``), else ``default_jobs()`` = ``min(os.cpu_count(),
MAX_DEFAULT_JOBS)``; at most ``MAX_JOBS``.
"""

from __future__ import annotations

import bisect
import lzma
import os
import shutil
import stat
import tempfile
import threading
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Deque, List, Optional, Sequence, Tuple

import numpy as np

from memplan.core.arrays import U64Array
from memplan.core.errors import InputError, UsageError

#: default thread count cap: more readers than this rarely help (memory bandwidth, the
#: decompression of one stream per thread) and cost a thread stack each
MAX_DEFAULT_JOBS = 16
#: the largest ``--jobs`` accepted
MAX_JOBS = 256
#: an I/O alignment, not a kernel fact: inner piece boundaries fall on multiples of 512 pfns
#: (4 KiB of kpageflags entries, one file page). The pieces fill one array that is classified
#: only once the whole request is read, so no page-size fact depends on it.
ALIGN_PFNS = 512
#: a piece smaller than this is not worth a thread hand-off (64 Ki pfns = 512 KiB)
MIN_PIECE_PFNS = 1 << 16
#: uncompressed bytes per xz stream in a saved tree (4 MiB = 512 Ki pfns = 2 GiB of memory)
STREAM_BYTES = 4 << 20
#: a stream larger than this is not held whole in memory: the file is read as one stream
MAX_STREAM_BYTES = 64 << 20

_jobs: Optional[int] = None
_pool: Optional[ThreadPoolExecutor] = None
_pool_size = 0
_pool_lock = threading.Lock()


def default_jobs() -> int:
    """One reader per CPU, at most ``MAX_DEFAULT_JOBS``."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_JOBS))


def check_jobs(value: int, option: str = "--jobs") -> int:
    """A thread count from the command line: 1 to ``MAX_JOBS``."""
    if not 1 <= value <= MAX_JOBS:
        raise UsageError(f"{option}: {value} is not a thread count from 1 to {MAX_JOBS}",
                         hint=f"default: one per CPU, at most {MAX_DEFAULT_JOBS}; here {default_jobs()}")
    return value


def set_jobs(value: Optional[int]) -> None:
    """Threads for every later read (``None``: ``default_jobs()``)."""
    global _jobs
    _jobs = None if value is None else check_jobs(value)


def jobs() -> int:
    return _jobs if _jobs is not None else default_jobs()


def _executor(size: int) -> ThreadPoolExecutor:
    """The shared reader threads (created on first use, grown when more are asked for)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < size:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="memplan-ingest")
            _pool_size = size
        return _pool


# --------------------------------------------------------------------------------------------
# Live (and plain saved) files: parallel pread


def split(start: int, count: int, parts: int, align: int = ALIGN_PFNS,
          min_piece: int = MIN_PIECE_PFNS) -> List[Tuple[int, int]]:
    """``[start, start + count)`` as at most ``parts`` disjoint ``(start, end)`` pieces in order,
    inner boundaries on multiples of ``align``, none smaller than ``min_piece`` (but one)."""
    end = start + count
    parts = max(1, min(parts, count // max(min_piece, 1)))
    bounds = [start]
    for i in range(1, parts):
        cut = (start + count * i // parts) // align * align
        if bounds[-1] < cut < end:
            bounds.append(cut)
    bounds.append(end)
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def _pread_piece(fd: int, view: memoryview, offset: int) -> int:
    """Fill ``view`` from byte ``offset``; short only at the end of the file."""
    got = 0
    total = len(view)
    while got < total:
        n = os.preadv(fd, [view[got:]], offset + got)
        if n <= 0:
            break
        got += n
    return got


def pread_into(fd: int, view: memoryview, offset: int, threads: Optional[int] = None) -> int:
    """Read ``len(view)`` bytes from byte ``offset`` (both multiples of 8) into ``view`` with
    up to ``threads`` readers on disjoint ranges; returns the bytes read, which are short only
    where the file ends (the pieces after a short one are discarded)."""
    threads = jobs() if threads is None else threads
    pieces = split(offset // 8, len(view) // 8, threads)
    if len(pieces) <= 1:
        return _pread_piece(fd, view, offset)
    base = offset // 8
    pool = _executor(threads)
    # The calling thread reads the first piece itself: one thread hand-off fewer per request,
    # which matters when other processes keep the CPUs busy (every wake-up waits its turn).
    futures = [pool.submit(_pread_piece, fd, view[(a - base) * 8:(b - base) * 8], a * 8) for a, b in pieces[1:]]
    got = 0
    short = False
    error: Optional[BaseException] = None
    for index, (a, b) in enumerate(pieces):
        try:
            if index == 0:
                n = _pread_piece(fd, view[:(b - base) * 8], a * 8)
            else:
                n = futures[index - 1].result()
        except BaseException as exc:  # wait for every reader before the buffer can go
            error = error or exc
            continue
        if not short:
            got += n
            short = n < (b - a) * 8
    if error is not None:
        raise error
    return got


def read_ranges(fd: int, ranges: Sequence[Tuple[int, int]], threads: Optional[int] = None) -> U64Array:
    """The entries of pfn ranges ``[(start, end), ...]`` concatenated in one preallocated
    array, every range split over the readers; ends early only where the file does."""
    threads = jobs() if threads is None else threads
    total = sum(max(0, b - a) for a, b in ranges)
    out = np.empty(total, dtype="<u8")
    raw = out.data.cast("B")
    at = 0
    jobs_list: List[Tuple[int, int, int]] = []  # (out index, pfn start, pfn end)
    for a, b in ranges:
        if b <= a:
            continue
        share = max(threads * (b - a) // max(total, 1), 1)
        for pa, pb in split(a, b - a, share):
            jobs_list.append((at + pa - a, pa, pb))
        at += b - a
    if threads <= 1 or len(jobs_list) <= 1:
        results = [_pread_piece(fd, raw[i * 8:(i + pb - pa) * 8], pa * 8) for i, pa, pb in jobs_list]
    else:
        pool = _executor(threads)
        futures = [pool.submit(_pread_piece, fd, raw[i * 8:(i + pb - pa) * 8], pa * 8) for i, pa, pb in jobs_list[1:]]
        i, pa, pb = jobs_list[0]
        results = [_pread_piece(fd, raw[i * 8:(i + pb - pa) * 8], pa * 8)] + [f.result() for f in futures]
    for (i, pa, pb), n in zip(jobs_list, results):
        if n < (pb - pa) * 8:
            return out[: i + n // 8]
    return out


# --------------------------------------------------------------------------------------------
# Saved trees: independently compressed xz streams

_XZ_MAGIC = b"\xfd7zXZ\x00"
_XZ_FOOTER_MAGIC = b"YZ"
_MAX_PADDING = 1 << 12


def _varint(data: bytes, pos: int) -> Tuple[int, int]:
    """An xz multibyte integer (§1.2): 7 bits per byte, least significant first."""
    value = 0
    for i in range(9):
        if pos + i >= len(data):
            raise ValueError("truncated integer")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise ValueError("integer too long")


def xz_streams(fd: int, size: int) -> Optional[List[Tuple[int, int, int]]]:
    """``(file offset, compressed length, uncompressed length)`` of every stream of an xz
    file, read from its stream footers and indexes; ``None`` if the file is not that."""
    out: List[Tuple[int, int, int]] = []
    pos = size
    try:
        while pos > 0:
            padding = 0
            while pos >= 4 and os.pread(fd, 4, pos - 4) == b"\0\0\0\0":  # stream padding (§2.2)
                pos -= 4
                padding += 4
                if padding > _MAX_PADDING:
                    return None  # not a file memplan wrote: read it as one stream
            if pos < 24:
                return None
            footer = os.pread(fd, 12, pos - 12)
            if len(footer) != 12 or footer[10:] != _XZ_FOOTER_MAGIC:
                return None
            backward = (int.from_bytes(footer[4:8], "little") + 1) * 4
            index_at = pos - 12 - backward
            if index_at < 12:
                return None
            index = os.pread(fd, backward, index_at)
            if len(index) != backward or index[0] != 0:
                return None
            records, at = _varint(index, 1)
            if records > backward:
                return None
            blocks = usize = 0
            for _ in range(records):
                unpadded, at = _varint(index, at)
                uncompressed, at = _varint(index, at)
                blocks += (unpadded + 3) & ~3
                usize += uncompressed
            start = index_at - blocks - 12
            if start < 0 or os.pread(fd, 6, start) != _XZ_MAGIC:
                return None
            out.append((start, pos - start, usize))
            pos = start
    except (OSError, ValueError):
        return None
    out.reverse()
    return out


def _decompress(fd: int, offset: int, length: int, usize: int, display: str) -> bytes:
    data = os.pread(fd, length, offset)
    decoder = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        out = decoder.decompress(data, max_length=usize + 1)
    except lzma.LZMAError as exc:
        raise InputError(f"{display}: corrupt xz data ({exc})") from None
    if len(out) != usize or not decoder.eof:
        raise InputError(f"{display}: corrupt xz data (a stream at byte {offset} does not hold the "
                         f"{usize} bytes its index says)")
    return out


class XzStreams:
    """Random access to a multi-stream ``.xz`` file, decompressing in parallel.

    ``read_into()`` decompresses the streams a request touches and starts the next
    ``threads`` ones (sequential reads find them ready); only about ``2 * threads`` decompressed
    streams are held at a time.
    """

    def __init__(self, fd: int, streams: Sequence[Tuple[int, int, int]], display: str,
                 threads: Optional[int] = None) -> None:
        self.fd = fd
        self.display = display
        self.streams = list(streams)
        self.threads = jobs() if threads is None else threads
        self.starts: List[int] = []
        at = 0
        for _, _, usize in self.streams:
            self.starts.append(at)
            at += usize
        self.size = at
        self._cache: "OrderedDict[int, Future[bytes]]" = OrderedDict()

    @classmethod
    def open(cls, path: str, display: str, threads: Optional[int] = None) -> Optional["XzStreams"]:
        """The chunked reader for this file, or ``None`` when it is one stream (an older save),
        a stream is larger than ``MAX_STREAM_BYTES``, the layout cannot be read or the file
        cannot be opened (the caller then reads it as one stream, which reports the error)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            streams = xz_streams(fd, info.st_size) if stat.S_ISREG(info.st_mode) else None
        except OSError:
            streams = None
        if not streams or len(streams) < 2 or max(u for _, _, u in streams) > MAX_STREAM_BYTES:
            os.close(fd)
            return None
        return cls(fd, streams, display, threads)

    def _future(self, index: int) -> "Future[bytes]":
        future = self._cache.get(index)
        if future is None:
            offset, length, usize = self.streams[index]
            if self.threads <= 1:
                future = Future()
                try:
                    future.set_result(_decompress(self.fd, offset, length, usize, self.display))
                except InputError as exc:
                    future.set_exception(exc)
            else:
                future = _executor(self.threads).submit(_decompress, self.fd, offset, length, usize,
                                                        self.display)
            self._cache[index] = future
        return future

    def read_into(self, view: memoryview, offset: int) -> int:
        """Uncompressed bytes ``[offset, offset + len(view))`` into ``view``; short at the end."""
        end = min(offset + len(view), self.size)
        if end <= offset:
            return 0
        first = bisect.bisect_right(self.starts, offset) - 1
        last = bisect.bisect_right(self.starts, end - 1) - 1
        for index in list(self._cache):
            if index < first:
                del self._cache[index]
        wanted = [self._future(i) for i in range(first, last + 1)]
        for i in range(last + 1, min(last + 1 + self.threads, len(self.streams))):
            self._future(i)  # read-ahead
        for i, future in zip(range(first, last + 1), wanted):
            data = future.result()
            lo = max(offset, self.starts[i])
            hi = min(end, self.starts[i] + len(data))
            view[lo - offset:hi - offset] = data[lo - self.starts[i]:hi - self.starts[i]]
        while len(self._cache) > 2 * self.threads + 2:
            self._cache.popitem(last=False)
        return end - offset

    def close(self) -> None:
        for future in self._cache.values():
            future.cancel()
        for future in self._cache.values():
            if not future.cancelled():
                future.exception()  # a running decompression still reads the fd
        self._cache.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ChunkedXzWriter:
    """Writes an ``.xz`` file as independent streams of ``stream_bytes`` each, compressed in
    parallel threads and written in order (at most ``2 * threads`` pieces in flight)."""

    def __init__(self, path: str, preset: int = 6, stream_bytes: int = STREAM_BYTES,
                 threads: Optional[int] = None) -> None:
        self.path = path
        self.preset = preset
        self.stream_bytes = stream_bytes
        self.threads = jobs() if threads is None else threads
        self._handle = open(path, "xb")
        self._buffer = bytearray()
        self._pending: Deque["Future[bytes]"] = deque()
        self._written = 0

    def _compress(self, data: bytes) -> bytes:
        return lzma.compress(data, format=lzma.FORMAT_XZ, preset=self.preset)

    def _submit(self, data: bytes) -> None:
        if self.threads <= 1:
            self._handle.write(self._compress(data))
            self._written += 1
            return
        self._pending.append(_executor(self.threads).submit(self._compress, data))
        while len(self._pending) > 2 * self.threads:
            self._handle.write(self._pending.popleft().result())
            self._written += 1

    def write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= self.stream_bytes:
            piece = bytes(self._buffer[:self.stream_bytes])
            del self._buffer[:self.stream_bytes]
            self._submit(piece)

    def abort(self) -> None:
        """Stop without writing what is left (the caller removes the file)."""
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._buffer.clear()
        self._handle.close()

    def close(self) -> None:
        if self._handle.closed:
            return
        try:
            if self._buffer or (self._written == 0 and not self._pending):
                self._submit(bytes(self._buffer))  # an empty file is still one (empty) stream
                self._buffer.clear()
            while self._pending:
                self._handle.write(self._pending.popleft().result())
                self._written += 1
        finally:
            for future in self._pending:
                future.cancel()
            self._pending.clear()
            self._handle.close()



# --------------------------------------------------------------------------------------------
# Saving atomically

_TEMP_SUFFIX = ".memplan-tmp"


def temp_dir_beside(final: str) -> str:
    """A new private directory next to ``final`` (same file system, so it can be renamed)."""
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    path = tempfile.mkdtemp(prefix="." + os.path.basename(final) + ".", suffix=_TEMP_SUFFIX, dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)
    return path


def rename_into_place(temp: str, final: str) -> None:
    """``rename(2)`` the finished tree to ``final`` (which may be an empty directory: it is
    replaced atomically, keeping its permissions; a non-empty one fails with ENOTEMPTY)."""
    if os.path.isdir(final) and not os.path.islink(final):
        os.chmod(temp, stat.S_IMODE(os.stat(final).st_mode))
    os.rename(temp, final)


def remove_temp_dir(temp: str) -> None:
    """Remove a directory ``temp_dir_beside()`` made (and nothing else)."""
    if os.path.basename(temp).endswith(_TEMP_SUFFIX) and os.path.isdir(temp):
        shutil.rmtree(temp, ignore_errors=True)
