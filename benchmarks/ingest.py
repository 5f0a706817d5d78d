"""Parallel ingest of /proc/kpageflags versus one plain single-threaded read, in one run.

Live (needs root): the pfn ranges of this machine's memory blocks (what ``memplan snapshot
--live`` reads, never to EOF) are read

* ``read``: by one thread with an ``os.read`` loop in 4 MiB pieces, the same byte count from
  pfn 0 (what ``dd``/page-types cost);
* ``ingest``: by memplan's reader as ``memplan snapshot`` uses it: ``KpageFile.read()`` in
  ``CHUNK_PFNS`` pieces, each split over ``--jobs`` threads (``os.preadv`` into numpy slices);
* ``ranges``: by ``ingest.read_ranges()``: every block range at once, split over the threads.

Trials alternate read / ingest / ranges ``--repeat`` times (other processes load the CPUs:
the best of each kind is the figure, the median of the per-trial ratios is printed too).

Saved trees: the same bytes as one xz stream (older saves) and as memplan's chunked xz
(``--save`` today), decompressed by ``lzma`` as one stream versus ``XzStreams`` with 1 and
with ``--jobs`` threads.

Run from the repository root:  python benchmarks/ingest.py [--jobs N] [--repeat K]
The last line is ``ingest/read ratio: R`` (R = best ingest seconds / best plain read seconds;
below 1 is faster; the target on 2 vCPUs is R <= 1/1.7 = 0.59).
"""

from __future__ import annotations

import argparse
import lzma
import os
import resource
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from memplan.snapshot import ingest  # noqa: E402
from memplan.snapshot.kpageflags import CHUNK_PFNS, KpageFile  # noqa: E402
from memplan.snapshot.sysroot import Tree, read_memory  # noqa: E402

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "host-6.18-24g", "proc", "kpageflags.xz")
PIECE = 4 << 20
PAGE_SHIFT = 12


def block_ranges(root: str = "/") -> List[Tuple[int, int]]:
    """pfn ranges of the memory blocks (adjacent blocks merged)."""
    layout = read_memory(Tree(root, live=root == "/"))
    ppb = layout.block_size >> PAGE_SHIFT
    out: List[Tuple[int, int]] = []
    for block in layout.blocks:
        lo, hi = block.id * ppb, (block.id + 1) * ppb
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def plain_read(path: str, nbytes: int) -> int:
    fd = os.open(path, os.O_RDONLY)
    total = 0
    try:
        while total < nbytes:
            piece = os.read(fd, min(PIECE, nbytes - total))
            if not piece:
                break
            total += len(piece)
    finally:
        os.close(fd)
    return total


def snapshot_ingest(path: str, ranges: List[Tuple[int, int]]) -> int:
    """What ``memplan snapshot`` does: CHUNK_PFNS reads over the ranges."""
    flags = KpageFile(path, path)
    total = 0
    try:
        for lo, hi in ranges:
            for start in range(lo, hi, CHUNK_PFNS):
                total += len(flags.read(start, min(CHUNK_PFNS, hi - start))) * 8
    finally:
        flags.close()
    return total


def ranges_ingest(path: str, ranges: List[Tuple[int, int]]) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return len(ingest.read_ranges(fd, ranges)) * 8
    finally:
        os.close(fd)


def timed(func: Callable[[], int]) -> Tuple[float, int]:
    start = time.perf_counter()
    got = func()
    return time.perf_counter() - start, got


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def idle_ticks() -> Tuple[int, int]:
    """(idle, total) jiffies of the whole machine (``/proc/stat``)."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    return values[3] + values[4], sum(values)


def live(jobs: int, repeat: int) -> Optional[float]:
    path = "/proc/kpageflags"
    try:
        fd = os.open(path, os.O_RDONLY)
        os.close(fd)
    except OSError as exc:
        print(f"live: {path} not readable ({exc.strerror}); skipped")
        return None
    ranges = block_ranges()
    pfns = sum(b - a for a, b in ranges)
    nbytes = pfns * 8
    print(f"live {os.uname().nodename} ({os.uname().release}), {os.cpu_count()} CPUs, --jobs {jobs}: "
          f"{len(ranges)} block range(s), {pfns} pfns = {nbytes >> 20} MiB of kpageflags")
    ingest.set_jobs(jobs)
    timed(lambda: snapshot_ingest(path, ranges))  # warm-up (thread start, page tables)
    runs: Dict[str, List[float]] = {"read": [], "ingest": [], "ranges": []}
    cpus: Dict[str, List[float]] = {"read": [], "ingest": [], "ranges": []}
    idle0 = idle_ticks()
    for _ in range(repeat):
        for name, func in (("read", lambda: plain_read(path, nbytes)),
                           ("ingest", lambda: snapshot_ingest(path, ranges)),
                           ("ranges", lambda: ranges_ingest(path, ranges))):
            cpu = cpu_seconds()
            seconds, got = timed(func)
            cpus[name].append(cpu_seconds() - cpu)
            if got != nbytes:
                raise SystemExit(f"{name}: read {got} bytes, expected {nbytes}")
            runs[name].append(seconds)
    idle1 = idle_ticks()
    best_read = min(runs["read"])
    for name in ("read", "ingest", "ranges"):
        best = min(runs[name])
        at = runs[name].index(best)
        pairs = [s / r for s, r in zip(runs[name], runs["read"])]
        print(f"  {name:7s} best {best:6.3f} s ({pfns / best / 1e6:5.1f} M pfns/s, {cpus[name][at]:5.3f} CPU s = "
              f"{cpus[name][at] / best:4.2f} CPUs busy)  median {statistics.median(runs[name]):6.3f} s  "
              f"best/best-read {best / best_read:5.2f}  median of per-trial ratios {statistics.median(pairs):5.2f}")
    idle = (idle1[0] - idle0[0]) / max(idle1[1] - idle0[1], 1)
    print(f"  machine idle during the trials: {idle:.0%} (other processes share the CPUs; with autogroup "
          f"scheduling this process gets its session's share, whatever its thread count)")
    scaling = []
    for threads in sorted({1, 2, 4, jobs}):
        ingest.set_jobs(threads)
        cpu = cpu_seconds()
        wall = [timed(lambda: snapshot_ingest(path, ranges))[0] for _ in range(2)]
        scaling.append(f"{threads}: {min(wall):.3f} s ({(cpu_seconds() - cpu) / 2:.3f} CPU s)")
    print("  ingest by --jobs (best of 2; CPU seconds per run): " + ", ".join(scaling))
    ingest.set_jobs(jobs)
    return min(runs["ingest"]) / best_read


def saved(jobs: int, repeat: int, source: Optional[str]) -> None:
    """Decompression of the same bytes: one stream (older saves) vs memplan's chunks."""
    if source is None:
        with lzma.open(FIXTURE, "rb") as handle:
            data = handle.read()
        title = "fixture host-6.18-24g"
    else:
        fd = os.open(source, os.O_RDONLY)
        data = bytes(ingest.read_ranges(fd, block_ranges()).data)
        os.close(fd)
        title = "this machine's kpageflags"
    with tempfile.TemporaryDirectory() as tmp:
        single = os.path.join(tmp, "single.xz")
        chunked = os.path.join(tmp, "chunked.xz")
        with lzma.open(single, "wb", preset=6) as handle:
            handle.write(data)
        compress = {}
        for threads in sorted({1, jobs}):
            if os.path.exists(chunked):
                os.unlink(chunked)
            start = time.perf_counter()
            writer = ingest.ChunkedXzWriter(chunked, threads=threads)
            for at in range(0, len(data), PIECE):
                writer.write(data[at:at + PIECE])
            writer.close()
            compress[threads] = time.perf_counter() - start

        def one_stream() -> int:
            with lzma.open(single, "rb") as handle:
                return sum(len(piece) for piece in iter(lambda: handle.read(PIECE), b""))

        def chunks(threads: int) -> int:
            reader = ingest.XzStreams.open(chunked, chunked, threads)
            assert reader is not None
            buffer = bytearray(PIECE)
            total = 0
            try:
                while True:
                    got = reader.read_into(memoryview(buffer), total)
                    total += got
                    if got < PIECE:
                        return total
            finally:
                reader.close()

        best = {name: min(timed(func)[0] for _ in range(repeat))
                for name, func in (("stream", one_stream), ("chunks-1", lambda: chunks(1)),
                                   (f"chunks-{jobs}", lambda: chunks(jobs)))}
        print(f"saved ({title}, {len(data) >> 20} MiB; one stream {os.path.getsize(single) >> 10} KiB, "
              f"chunked {os.path.getsize(chunked) >> 10} KiB):")
        many = best[f"chunks-{jobs}"]
        print(f"  decompress: one stream {best['stream']:.3f} s, chunks 1 thread {best['chunks-1']:.3f} s, "
              f"chunks {jobs} threads {many:.3f} s; speed-up over one stream {best['stream'] / many:.2f}x, "
              f"over 1 thread {best['chunks-1'] / many:.2f}x")
        if jobs in compress and 1 in compress and jobs != 1:
            print(f"  compress (--save): 1 thread {compress[1]:.3f} s, {jobs} threads {compress[jobs]:.3f} s; "
                  f"speed-up {compress[1] / compress[jobs]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=ingest.default_jobs())
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--saved-live", action="store_true",
                        help="benchmark decompression on this machine's kpageflags instead of the fixture's")
    args = parser.parse_args()
    ratio = live(args.jobs, args.repeat)
    saved(args.jobs, max(1, args.repeat // 2), "/proc/kpageflags" if args.saved_live and ratio is not None else None)
    if ratio is None:
        print("ingest/read ratio: n/a (no readable /proc/kpageflags)")
    else:
        print(f"ingest/read ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
