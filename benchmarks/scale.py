#!/usr/bin/env python3
"""Scale benchmark: `memplan simulate` on generated machines (1 TiB and 4 TiB by default).

Prints, for each size:

* wall time and peak RSS of ``memplan simulate PROFILE`` with ``--json``, ``--jsonl``, ``--csv``
  and the table, each in a fresh process (``/usr/bin/time -v`` when available, else
  ``resource.getrusage`` of a child), and per format the ratio of each size's peak RSS to the
  first size's (issue 12.2: 4 TiB within 1.15x of 1 TiB, 64 TiB under 256 MiB);
* the pipeline's own time (``simulate()`` minus page materialisation, best of ``--repeat``)
  against one ``np.count_nonzero`` pass over a one-byte-per-page uint8 array of the same number
  of pages, timed in the same process: the machine's limit for the data;
* the per-page oracle (``tests/oracle.py``, a page-at-a-time transcription of the kernel
  loops) on evenly spaced sample blocks: its time per block scaled to the machine against
  the pipeline's, and whether both reach the same verdicts.

Targets (issue 6): 1 TiB under 2 s and 1 GiB; 16 TiB under 30 s and 1 GiB; pipeline within 10x
of the count_nonzero pass; at least 50x faster than the per-page reference. The last line is
``peak RSS ratio: R``, the worst format's peak RSS at the second size over the first.

    python benchmarks/scale.py                        # 1 TiB and 4 TiB (about a minute)
    python benchmarks/scale.py --rss-only --sizes 1TiB,4TiB,64TiB
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import numpy as np  # noqa: E402

from make_profile import profile_text  # noqa: E402
from memplan.core.units import format_size, parse_size  # noqa: E402
from memplan.engine.simulation import simulate  # noqa: E402
from memplan.profile.reader import load_profile  # noqa: E402
from oracle import Oracle  # noqa: E402

GiB, MiB = 1 << 30, 1 << 20
#: ``memplan simulate`` output formats whose peak RSS must not grow with the blocks
FORMATS: Tuple[Tuple[str, List[str]], ...] = (("--json", ["--json"]), ("--jsonl", ["--jsonl"]),
                                               ("--csv", ["--csv"]), ("table", []))
RSS_RATIO_TARGET = 1.15
RSS_64TIB_TARGET = 256 * MiB


class TimedSource:
    """A page source wrapper that adds up the time spent materialising pages."""

    def __init__(self, inner) -> None:
        self.inner, self.seconds = inner, 0.0

    def materialize(self, block_ids):
        start = time.perf_counter()
        batch = self.inner.materialize(block_ids)
        self.seconds += time.perf_counter() - start
        return batch

    def __getattr__(self, name):
        return getattr(self.inner, name)


def run_cli(args: List[str]) -> Tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of ``python -m memplan ARGS > /dev/null`` in a fresh process."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "memplan"] + args
    gnu_time = shutil.which("time") if os.path.exists("/usr/bin/time") else None
    with open(os.devnull, "w") as devnull:
        if gnu_time:
            start = time.perf_counter()
            done = subprocess.run(["/usr/bin/time", "-v"] + command, stdout=devnull, stderr=subprocess.PIPE,
                                  env=env, cwd=ROOT, text=True)
            wall = time.perf_counter() - start
            match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
            if done.returncode == 0 and match:
                return wall, int(match.group(1)) * 1024
        # resource.getrusage(RUSAGE_CHILDREN) of a wrapper process that runs only this command
        wrapper = ("import resource, subprocess, sys, time; s = time.perf_counter(); "
                   "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
                   "print(time.perf_counter() - s, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r)")
        out = subprocess.run([sys.executable, "-c", wrapper] + command, capture_output=True, env=env, cwd=ROOT,
                             text=True, check=True).stdout.split()
        if out[2] != "0":
            raise SystemExit(f"memplan {' '.join(args)} failed")
        return float(out[0]), int(out[1]) * 1024


def count_nonzero_limit(pages: int) -> float:
    """Seconds for one np.count_nonzero pass over ``pages`` one-byte page states (best of 5; a
    machine larger than 1 TiB is covered by repeated passes over a 1 TiB array)."""
    array = np.ones(min(pages, 1 << 28), dtype=np.uint8)
    best = min(_timed(lambda: np.count_nonzero(array)) for _ in range(5))
    return best * pages / len(array)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def pipeline_seconds(path: str, repeat: int):
    """Best (simulate() - materialisation) over ``repeat`` runs, the materialisation time of that
    run, and the result."""
    machine = load_profile(path)
    best: Optional[Tuple[float, float]] = None
    result = None
    for _ in range(repeat):
        source = TimedSource(machine.pages)
        timed = dataclasses.replace(machine, pages=source)
        start = time.perf_counter()
        result = simulate(timed)
        total = time.perf_counter() - start
        if best is None or total - source.seconds < best[0]:
            best = (total - source.seconds, source.seconds)
    assert best is not None
    return best[0], best[1], machine, result


def reference_sample(machine, result, samples: int):
    """Seconds per block of the per-page reference on evenly spaced blocks, and how many of
    those blocks get the same verdict (result, errno, reason, step, culprit) as the pipeline."""
    oracle = Oracle(machine, result.semantics)
    verdicts = {v.block: v for v in result.blocks}
    ids = machine.blocks.ids[machine.blocks.online]
    picks = ids[np.linspace(0, len(ids) - 1, samples).round().astype(int)]
    seconds, agree = 0.0, 0
    for block in picks.tolist():
        start = time.perf_counter()
        ref = oracle.offline(block)
        seconds += time.perf_counter() - start
        v = verdicts[block]
        got = (v.result, v.errno, v.reason, v.step, v.culprit.pfn if v.culprit else None)
        agree += got == (ref.result, ref.errno, ref.reason, ref.step, ref.culprit[0] if ref.culprit else None)
    return seconds / len(picks), agree, len(picks)


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1TiB,4TiB", help="machine sizes (default 1TiB,4TiB)")
    parser.add_argument("--repeat", type=int, default=3, help="in-process simulate() runs per size (best is kept)")
    parser.add_argument("--samples", type=int, default=16, help="blocks the per-page reference judges")
    parser.add_argument("--rss-only", action="store_true",
                        help="only the output formats' wall time and peak RSS (no pipeline or reference timing)")
    parser.add_argument("--keep", metavar="DIR", help="write the generated profiles here instead of a temp dir")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    workdir = args.keep or tempfile.mkdtemp(prefix="memplan-scale-")
    os.makedirs(workdir, exist_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"memplan scale benchmark: {os.cpu_count()} CPUs, load average {load:.2f} at start, numpy {np.__version__}")
    print(f"profiles: benchmarks/make_profile.py --size SIZE (written to {workdir})\n")
    outputs = {}
    rows = []
    for size in sizes:
        path = os.path.join(workdir, f"scale-{format_size(size).lower()}.toml")
        with open(path, "w") as handle:
            handle.write(profile_text(size))
        for name, flags in FORMATS:
            outputs[(name, size)] = run_cli(["simulate", path] + flags)
        if args.rss_only:
            continue
        pages = size // 4096
        before = count_nonzero_limit(pages)
        pipeline, materialise, machine, result = pipeline_seconds(path, args.repeat if size <= 1 << 40 else
                                                                  max(1, args.repeat - 1))
        pages = len(machine.blocks) * machine.geometry.pages_per_block
        limit = min(before, count_nonzero_limit(pages))  # timed before and after, like the pipeline: best
        per_block, agree, sampled = reference_sample(machine, result, args.samples)
        reference = per_block * len(result.blocks)
        rows.append((size, len(machine.blocks), pages, pipeline, materialise, limit, reference, agree, sampled))
        del machine, result

    print(f"{'size':>6} {'blocks':>7}" + "".join(f"  {name + ' wall':>12} {'peak RSS':>9}" for name, _ in FORMATS))
    for size in sizes:
        cells = "".join(f"  {outputs[(name, size)][0]:>10.2f} s {outputs[(name, size)][1] / MiB:>5.0f} MiB"
                        for name, _ in FORMATS)
        print(f"{format_size(size):>6} {size // (128 << 20):>7}{cells}")
    print()
    first = sizes[0]
    worst = float("nan")
    for size in sizes[1:]:
        ratios = {name: outputs[(name, size)][1] / outputs[(name, first)][1] for name, _ in FORMATS}
        if size == sizes[1]:
            worst = max(ratios.values())
        for name, ratio in ratios.items():
            target = (f"(<= {RSS_RATIO_TARGET}x at 4 TiB: {verdict(ratio <= RSS_RATIO_TARGET)})"
                      if size == 4 << 40 and first == 1 << 40 else "")
            print(f"peak RSS {format_size(size)}/{format_size(first)} {name}: ratio: {ratio:.2f} {target}".rstrip())
        if size >= 64 << 40:
            peak = max(outputs[(name, size)][1] for name, _ in FORMATS)
            print(f"peak RSS at {format_size(size)}, worst format: {peak / MiB:.0f} MiB "
                  f"(< 256 MiB: {verdict(peak < RSS_64TIB_TARGET)})")
    for size, _blocks, pages, pipeline, materialise, limit, reference, agree, sampled in rows:
        if size == rows[0][0]:
            print(f"\n{'size':>6}  {'pipeline':>9} {'materialise':>11}  {'count_nonzero':>13}  {'ratio':>6}  "
                  f"{'pipeline':>11}  {'reference':>10}  {'speed-up':>9}  verdicts")
        ratio, speedup = pipeline / limit, reference / pipeline
        print(f"{format_size(size):>6}  {pipeline:>7.3f} s {materialise:>9.2f} s  {limit:>11.4f} s  {ratio:>5.1f}x  "
              f"{pages / pipeline / 1e9:>5.2f} Gpg/s  {reference:>8.0f} s  {speedup:>8.0f}x  "
              f"{agree}/{sampled} agree  (<= 10x: {verdict(ratio <= 10)}, >= 50x: {verdict(speedup >= 50)})")
    if rows:
        print("\npipeline = simulate() minus page materialisation (best run); reference = per-page Python "
              "(tests/oracle.py) time per sampled block x blocks")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    if len(sizes) > 1:
        print(f"peak RSS ratio: {worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
