#!/usr/bin/env python3
"""Materialisation benchmark: drawing a profile's seeded pages against the pipeline that judges them.

For each size and profile format, on a benchmarks/make_profile.py machine, in one process and
one run:

* materialise: every online block's pages drawn in the engine's chunks (``ProfilePageSource.
  materialize``), best of ``--repeat``;
* pipeline: ``simulate()`` minus the time it spends materialising (as benchmarks/scale.py
  measures it), best of ``--repeat``;
* census: free pages and free hugetlb folios of every online block without materialising
  (``ProfilePageSource.census``), best of ``--repeat``.

Target (issue 12.3): materialisation at most 1.5x the pipeline. Format 1 draws every page (its
pages are pinned by tests/test_population.py); format 2 draws one kind per aligned group of 8
pages. The last line is ``materialise/pipeline ratio: R`` for format 2 at the largest size.

    python benchmarks/materialize.py                    # 1 TiB and 4 TiB (about a minute)
    python benchmarks/materialize.py --sizes 16TiB --repeat 1
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from typing import Any, Callable, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import numpy as np  # noqa: E402

from make_profile import profile_text  # noqa: E402
from memplan.core.machine import chunks  # noqa: E402
from memplan.core.units import format_size, parse_size  # noqa: E402
from memplan.engine.simulation import simulate  # noqa: E402
from memplan.profile.reader import load_profile  # noqa: E402


class TimedSource:
    """A page source wrapper that adds up the time spent materialising pages."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.seconds = inner, 0.0

    def materialize(self, block_ids: np.ndarray) -> Any:
        start = time.perf_counter()
        batch = self.inner.materialize(block_ids)
        self.seconds += time.perf_counter() - start
        return batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def pipeline_seconds(machine: Any) -> float:
    source = TimedSource(machine.pages)
    start = time.perf_counter()
    simulate(dataclasses.replace(machine, pages=source))
    return time.perf_counter() - start - source.seconds


def over_chunks(machine: Any, read: Callable[[np.ndarray], Any]) -> float:
    """Seconds ``read`` takes over every online block, in the engine's chunks."""
    ids = machine.blocks.ids[machine.blocks.online]
    start = time.perf_counter()
    for chunk in chunks(ids, machine.geometry.pages_per_block):
        read(chunk)
    return time.perf_counter() - start


def measure(size: int, fmt: int, workdir: str, repeat: int) -> Tuple[float, float, float]:
    path = os.path.join(workdir, f"scale-{format_size(size).lower()}-v{fmt}.toml")
    with open(path, "w") as handle:
        handle.write(profile_text(size, profile_format=fmt))
    machine = load_profile(path)
    # interleaved, so that a noisy neighbour slows both alike
    pipeline, materialise, census = float("inf"), float("inf"), float("inf")
    for _ in range(repeat):
        pipeline = min(pipeline, pipeline_seconds(machine))
        materialise = min(materialise, over_chunks(machine, machine.pages.materialize))
        census = min(census, over_chunks(machine, machine.pages.census))
    return pipeline, materialise, census


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1TiB,4TiB", help="machine sizes (default 1TiB,4TiB)")
    parser.add_argument("--formats", default="1,2", help="profile formats to compare (default 1,2)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best is kept)")
    args = parser.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    formats = [int(f) for f in args.formats.split(",")]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"memplan materialisation benchmark: {os.cpu_count()} CPUs, load average {load:.2f} at start, "
          f"numpy {np.__version__}")
    print(f"{'size':>6} {'format':>6}  {'pipeline':>9}  {'materialise':>11}  {'ratio':>6}  {'census':>8}  "
          f"{'census/mat.':>11}  target <= 1.5x")
    ratio = float("nan")
    ratios = []
    with tempfile.TemporaryDirectory(prefix="memplan-materialize-") as workdir:
        for size in sizes:
            for fmt in formats:
                pipeline, materialise, census = measure(size, fmt, workdir, args.repeat)
                ratio = materialise / pipeline
                ratios.append((size, fmt, ratio))
                print(f"{format_size(size):>6} {fmt:>6}  {pipeline:>7.2f} s  {materialise:>9.2f} s  {ratio:>5.2f}x  "
                      f"{census:>6.2f} s  {census / materialise:>10.2f}x  {'ok' if ratio <= 1.5 else 'MISSED'}")
    print("\npipeline = simulate() minus page materialisation; materialise = every online block drawn in "
          "the engine's chunks; census = free pages and free hugetlb folios without materialising")
    for size, fmt, each in ratios:
        print(f"{format_size(size)} format {fmt} materialise/pipeline ratio: {each:.2f}")
    print(f"materialise/pipeline ratio: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
