#!/usr/bin/env python3
"""Peak RSS of ``plan``, ``map`` and ``fleet`` as machines grow: flat in the block count?

Issue 12.2 ("the same for plan, map and fleet per host"): each command runs in a fresh process
over generated machines (benchmarks/make_profile.py, 1 TiB and 4 TiB by default) and its peak
RSS is measured (``/usr/bin/time -v`` when available, else ``resource.getrusage`` of a child:
``scale.run_cli``). Prints a table of wall time and peak RSS per command and size, then per
command ``peak RSS 4TiB/1TiB <command>: ratio: R`` (target: at most 1.15x), and last the worst
command's ``peak RSS ratio: R``. ``simulate --jsonl`` is measured too, as the reference: what
loading the machine and streaming its verdicts cost, whatever renders them.

    python benchmarks/scale_features.py                       # 1 TiB and 4 TiB (a few minutes)
    python benchmarks/scale_features.py --only map --sizes 1TiB,4TiB,16TiB
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from typing import Dict, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from make_profile import profile_text  # noqa: E402
from memplan.core.units import format_size, parse_size  # noqa: E402
from scale import run_cli  # noqa: E402

MiB = 1 << 20
RSS_RATIO_TARGET = 1.15


def commands(profile: str, workdir: str) -> Dict[str, List[str]]:
    """Every measured command line (without ``memplan``) over ``profile``."""
    return {
        # the floor: the engine's own stream (benchmarks/scale.py), nothing rendered
        "simulate --jsonl (reference)": ["simulate", profile, "--jsonl"],
        "plan --size 64G": ["plan", profile, "--size", "64G"],
        "plan --size 64G --json": ["plan", profile, "--size", "64G", "--json"],
        "map": ["map", profile],
        "map --json": ["map", profile, "--json"],
        "map --svg": ["map", profile, "--svg", os.path.join(workdir, "map.svg")],
        "fleet (1 host)": ["fleet", profile, "--workers", "1"],
        "fleet (1 host) --plan-size 64G": ["fleet", profile, "--workers", "1", "--plan-size", "64G"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1TiB,4TiB", help="machine sizes (default 1TiB,4TiB)")
    parser.add_argument("--only", default=None, help="only the commands whose name contains this")
    parser.add_argument("--keep", metavar="DIR", help="write the generated profiles here instead of a temp dir")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    workdir = args.keep or tempfile.mkdtemp(prefix="memplan-scale-features-")
    os.makedirs(workdir, exist_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"memplan feature scale benchmark: {os.cpu_count()} CPUs, load average {load:.2f} at start")
    print(f"profiles: benchmarks/make_profile.py --size SIZE (written to {workdir})\n")
    results: Dict[Tuple[str, int], Tuple[float, int]] = {}
    names: List[str] = []
    for size in sizes:
        path = os.path.join(workdir, f"scale-{format_size(size).lower()}.toml")
        if not os.path.exists(path):
            with open(path, "w") as handle:
                handle.write(profile_text(size))
        for name, argv in commands(path, workdir).items():
            if args.only and args.only not in name:
                continue
            if name not in names:
                names.append(name)
            results[(name, size)] = run_cli(argv)
    width = max(len(n) for n in names)
    print(f"{'command':<{width}}" + "".join(f"  {format_size(s) + ' wall':>12} {'peak RSS':>9}" for s in sizes))
    for name in names:
        cells = "".join(f"  {results[(name, s)][0]:>10.2f} s {results[(name, s)][1] / MiB:>5.0f} MiB" for s in sizes)
        print(f"{name:<{width}}{cells}")
    print()
    first, worst = sizes[0], float("nan")
    for size in sizes[1:]:
        for name in names:
            ratio = results[(name, size)][1] / results[(name, first)][1]
            if size == sizes[1]:
                worst = ratio if worst != worst else max(worst, ratio)
            ok = "ok" if ratio <= RSS_RATIO_TARGET else "MISSED"
            print(f"peak RSS {format_size(size)}/{format_size(first)} {name}: ratio: {ratio:.2f} "
                  f"(<= {RSS_RATIO_TARGET}x: {ok})")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    if len(sizes) > 1:
        print(f"peak RSS ratio: {worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
