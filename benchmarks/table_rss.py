#!/usr/bin/env python3
"""Peak RSS of ``memplan simulate``'s listing as machines grow: is it flat in the block count?

Two measurements per size and format, each in a fresh process (peak RSS from
``resource.getrusage(RUSAGE_CHILDREN)``), all in one run so the ratios compare like with like:

* ``renderer``: the listing alone, fed a synthetic stream of one verdict per block of the size
  (``Verdicts``, interface I1) and printed to /dev/null -- what the table itself costs;
  (``stream only`` is the baseline: the same machine and stream, nothing rendered; the synthetic
  machine's block table itself grows with the blocks, about 35 bytes each);
* ``memplan``: ``memplan simulate PROFILE`` end to end on a generated machine
  (benchmarks/make_profile.py), engine included (the engine streams: ``engine.simulation.stream``).

Formats: the merged table (default), ``--all`` (one row per block: the spilled grid),
``--raw --all``, ``--json -o ...`` (lsmem's JSON listing) and ``--csv``. Prints the peak RSS and
the ratio to the smallest size; the target is at most 1.15x from 1 TiB to 4 TiB.

    python benchmarks/table_rss.py                     # 1 TiB and 4 TiB
    python benchmarks/table_rss.py --sizes 1TiB,4TiB,64TiB --renderer-only
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from make_profile import profile_text  # noqa: E402
from memplan.core.units import format_size, parse_size  # noqa: E402

BLOCK = 128 << 20
FORMATS: Dict[str, List[str]] = {
    "stream only": ["--discard"],
    "table": [],
    "table --all": ["--all"],
    "raw --all": ["--raw", "--all"],
    "json listing": ["--json", "-o", "BLOCK,RANGE,SIZE,RESULT,CONFIDENCE"],
    "csv": ["--csv"],
}

#: the renderer alone: a synthetic stream of ``blocks`` verdicts through print_simulation
RENDERER = """
import os, resource, sys
import numpy as np
from rich.console import Console
from memplan.cli.columns import pop_table_options
from memplan.core.geometry import Geometry
from memplan.core.machine import BlockTable, Machine
from memplan.core.model import Errno, Zone
from memplan.core.results import BlockVerdict, Confidence, Outcome, PageCounts, Reason, Step, Summary
from memplan.render import csv as render_csv
from memplan.render.block_facts import MachineFacts
from memplan.render.lsmem import TableOptions
from memplan.render.table import print_simulation

blocks, args = int(sys.argv[1]), sys.argv[2:]

class Stream:
    profile = machine = "synthetic"
    semantics, semantics_reason, warnings = "refcount", None, ()
    def __iter__(self):
        size = 128 << 20
        for b in range(blocks):
            fails = b % 5 == 0
            yield BlockVerdict(b, b * size, (b + 1) * size - 1, Zone.MOVABLE, 0,
                               Outcome.FAILS if fails else Outcome.OFFLINED, Errno.EBUSY if fails else None,
                               Reason.FAILURE_TO_ISOLATE_RANGE if fails else None, Step.ISOLATE if fails else None,
                               None, PageCounts(total=32768, free=20000 + b % 97, migrated=12768 - b % 97),
                               confidence=Confidence.CERTAIN)
    @property
    def summary(self):
        ok = blocks - (blocks + 4) // 5
        return Summary(blocks, ok, blocks - ok, 0, ok << 27, {c: 0 for c in Confidence}, 0)

ids = np.arange(blocks)
table = BlockTable(ids, np.zeros(blocks), np.full(blocks, Zone.MOVABLE.code), np.zeros(blocks),
                   np.full(blocks, 32768), np.zeros(blocks), np.full(blocks, -1))
facts = MachineFacts(Machine("synthetic", "synthetic", Geometry(), table, pages=None))
with open(os.devnull, "w") as sink:
    if "--discard" in args:  # the baseline: the machine and the stream, nothing rendered
        for verdict in Stream():
            facts.facts(verdict.block)
    elif "--csv" in args:
        render_csv.write_simulation(Stream(), sink)
    else:
        options = TableOptions(all_rows="--all" in args, raw="--raw" in args, json="--json" in args,
                               output=args[args.index("-o") + 1] if "-o" in args else None)
        print_simulation(Console(file=sink, width=80, color_system=None), Stream(), facts, options)
"""


def peak_rss(argv: List[str]) -> int:
    """Peak RSS (KiB) of one child process running ``argv`` with output discarded."""
    code = ("import resource, subprocess, sys\n"
            "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", code] + argv, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": ROOT})
    return int(out.stdout.split()[-1])


def measure(sizes: List[int], renderer_only: bool) -> Dict[Tuple[str, str, int], int]:
    results: Dict[Tuple[str, str, int], int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            blocks = size // BLOCK
            for name, args in FORMATS.items():
                results[("renderer", name, size)] = peak_rss([sys.executable, "-c", RENDERER, str(blocks)] + args)
            if renderer_only:
                continue
            path = os.path.join(tmp, f"{size}.toml")
            with open(path, "w") as handle:
                handle.write(profile_text(size))
            for name, args in FORMATS.items():
                if "--discard" not in args:
                    results[("memplan", name, size)] = peak_rss([sys.executable, "-m", "memplan", "simulate", path]
                                                                + args)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1TiB,4TiB", help="machine sizes, comma-separated (default: 1TiB,4TiB)")
    parser.add_argument("--renderer-only", action="store_true", help="skip the end-to-end memplan runs")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    results = measure(sizes, args.renderer_only)
    header = (f"{'what':<9} {'format':<13}" + "".join(f" {format_size(s):>9}" for s in sizes)
              + "   ratio  over the baseline")
    print(header)
    base = [results[("renderer", "stream only", s)] for s in sizes]
    for what in ("renderer", "memplan"):
        for name in FORMATS:
            if (what, name, sizes[0]) not in results:
                continue
            rss = [results[(what, name, s)] for s in sizes]
            cells = "".join(f" {r / 1024:>7.0f}Mi" for r in rss)
            over = " ".join(f"{(r - b) / 1024:+.0f}Mi" for r, b in zip(rss, base)) if what == "renderer" else ""
            print(f"{what:<9} {name:<13}{cells}   {rss[-1] / rss[0]:.2f}x  {over}")
    worst = max(results[("renderer", n, sizes[-1])] / results[("renderer", n, sizes[0])] for n in FORMATS)
    growth = max((results[("renderer", n, sizes[-1])] - base[-1]) - (results[("renderer", n, sizes[0])] - base[0])
                 for n in FORMATS)
    print(f"peak RSS ratio {format_size(sizes[-1])}/{format_size(sizes[0])}: worst renderer {worst:.2f}x; "
          f"rendering's own growth over the baseline: {growth / 1024:+.1f} MiB")
    if not args.renderer_only:
        end_to_end = max(results[("memplan", n, sizes[-1])] / results[("memplan", n, sizes[0])]
                         for n in FORMATS if ("memplan", n, sizes[0]) in results)
        print(f"memplan simulate, worst listing format, {format_size(sizes[-1])}/{format_size(sizes[0])} "
              f"peak RSS ratio: {end_to_end:.2f}")


if __name__ == "__main__":
    main()
