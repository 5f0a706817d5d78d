"""Snapshot ingestion of a 24 GiB host versus a plain read of the same kpageflags file.

Each phase runs in its own Python process so that its peak RSS (``ru_maxrss``) is its own:

* ``baseline``: ``import memplan`` and numpy only;
* ``read``: a dd-style read of kpageflags in 4 MiB pieces (for a saved ``.xz`` tree: an
  xzcat-style decompression), nothing else — the floor any snapshot tool pays;
* ``snapshot``: ``memplan snapshot`` minus printing: read sysfs/procfs, one streaming pass
  over kpageflags + kpagecount (classification, page-types histogram, per-block evidence);
* ``simulate``: ``memplan simulate`` minus printing: every online block, both readings.

Run from the repository root:  python benchmarks/snapshot_bench.py [--live] [--jobs N]
(the fixture ``tests/fixtures/host-6.18-24g`` always; ``--live`` adds this machine's
/proc/kpageflags when readable). Prints seconds, peak RSS and ratios; no thresholds.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "host-6.18-24g")
PIECE = 4 << 20


def phase(name: str, source: str, jobs: int) -> dict:
    sys.path.insert(0, ROOT)
    import numpy  # noqa: F401  (the baseline includes numpy)

    from memplan.snapshot import ingest
    ingest.set_jobs(jobs)

    live = source == "/"
    start = time.perf_counter()
    if name == "read":
        path = os.path.join(source, "proc", "kpageflags")
        total = 0
        if not live and not os.path.exists(path):
            with lzma.open(path + ".xz", "rb") as handle:
                while True:
                    piece = handle.read(PIECE)
                    if not piece:
                        break
                    total += len(piece)
        else:
            fd = os.open(path, os.O_RDONLY)
            while True:
                piece = os.read(fd, PIECE)
                if not piece:
                    break
                total += len(piece)
            os.close(fd)
        extra = {"bytes": total}
    elif name == "snapshot":
        from memplan.snapshot.reader import describe, load_snapshot
        report = describe(load_snapshot(source, live=live))
        extra = {"pfns": report.pfns}
    elif name == "simulate":
        from memplan.engine.simulation import simulate
        from memplan.snapshot.reader import load_snapshot
        result = simulate(load_snapshot(source, live=live))
        extra = {"blocks": len(result.blocks)}
    else:
        import memplan  # noqa: F401
        extra = {}
    seconds = time.perf_counter() - start
    return {"phase": name, "seconds": seconds, "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            **extra}


def run_phase(name: str, source: str, jobs: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", name, "--source", source, "--jobs", str(jobs)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def report(title: str, source: str, jobs: int) -> None:
    results = {name: run_phase(name, source, jobs) for name in ("baseline", "read", "snapshot", "simulate")}
    read = results["read"]
    print(f"{title}: {read['bytes'] / (1 << 20):.0f} MiB of kpageflags ({read['bytes'] // 8} pfns), --jobs {jobs}")
    for name in ("read", "snapshot", "simulate"):
        r = results[name]
        ratio = r["seconds"] / read["seconds"] if read["seconds"] else float("inf")
        print(f"  {name:9s} {r['seconds']:6.2f} s  {ratio:5.1f}x read   peak RSS {r['maxrss_mib']:6.1f} MiB "
              f"(+{r['maxrss_mib'] - results['baseline']['maxrss_mib']:.1f} over python+numpy+memplan)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=("baseline", "read", "snapshot", "simulate"))
    parser.add_argument("--source", default=FIXTURE)
    parser.add_argument("--live", action="store_true", help="also benchmark this machine's /proc/kpageflags")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="memplan's reader threads (--jobs; the read phase is always one thread)")
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.source, args.jobs)))
        return
    report("fixture host-6.18-24g (xz)", FIXTURE, args.jobs)
    if args.live:
        try:
            with open("/proc/kpageflags", "rb") as handle:
                handle.read(8)
        except OSError as exc:
            print(f"live: /proc/kpageflags not readable ({exc.strerror}); skipped")
            return
        report(f"live {os.uname().nodename} ({os.uname().release})", "/", args.jobs)


if __name__ == "__main__":
    main()
