#!/usr/bin/env python3
"""How fast memplan starts, against the interpreter on the same machine, in one run.

Every command is run ``--runs`` times in a fresh process, interleaved with the references so a
busy machine slows both alike; the best and the median wall time of each are printed with the
ratio of the medians to its reference (issue 15's targets):

* ``memplan --version`` (and ``--help``, ``CMD --help``, completion) against
  ``python -c "import click"``: target at most 1.5x;
* ``memplan simulate --json`` of the smallest bundled profile against
  ``python -c "import numpy"``: target at most 2x.

``memplan`` is the console script beside this interpreter (``python -m memplan`` if there is
none). memplan runs as an installed package does, from compiled bytecode: the commands get
``PYTHONPYCACHEPREFIX`` (a temporary directory the warm-up run fills) and never
``PYTHONDONTWRITEBYTECODE`` (with it, every run compiles memplan's sources again: ~0.2 s).
The ratios compare the best runs (noise from other processes only ever adds time); the medians
are printed too, and the best CPU time (user + system, from ``wait4()``) of each command with its
ratio: on a busy machine the CPU times stay close to an idle machine's wall times while the
wall times grow. Usage: ``python benchmarks/startup.py [--runs 15]``; exit status 1 when a
target is missed (wall times, as issue 15 states the targets).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def memplan_command() -> List[str]:
    script = os.path.join(os.path.dirname(sys.executable), "memplan")
    if os.path.exists(script):
        return [script]
    found = shutil.which("memplan")
    return [found] if found else [sys.executable, "-m", "memplan"]


def smallest_profile() -> str:
    """The bundled profile with the fewest memory blocks (ties: the smallest file)."""
    from memplan.profile.reader import load_profile

    folder = os.path.join(ROOT, "profiles")
    paths = [os.path.join(folder, name) for name in sorted(os.listdir(folder)) if name.endswith(".toml")]
    return min(paths, key=lambda p: (len(load_profile(p).blocks), os.path.getsize(p)))


def run_once(argv: Sequence[str], env: Dict[str, str]) -> Tuple[float, float]:
    """Wall time and CPU time (user + system) of one run."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    if child.returncode != 0:
        raise SystemExit(f"startup.py: {' '.join(argv)} exited {child.returncode}")
    return elapsed, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command (default 15)")
    args = parser.parse_args()
    memplan = memplan_command()
    profile = smallest_profile()
    env = dict(os.environ, NO_COLOR="1", PYTHONPYCACHEPREFIX=tempfile.mkdtemp(prefix="memplan-startup-"))
    env.pop("MEMPLAN_TRACEBACK", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    complete_env = dict(env, _MEMPLAN_COMPLETE="bash_complete", COMP_WORDS="memplan si", COMP_CWORD="1")
    commands: List[Tuple[str, List[str], Dict[str, str]]] = [
        ("python -c 'import click'", [sys.executable, "-c", "import click"], env),
        ("python -c 'import numpy'", [sys.executable, "-c", "import numpy"], env),
        ("memplan --version", memplan + ["--version"], env),
        ("memplan --help", memplan + ["--help"], env),
        ("memplan <TAB> (complete 'si')", memplan, complete_env),
        ("memplan simulate --help", memplan + ["simulate", "--help"], env),
        ("memplan simulate P --sem<TAB>", memplan, dict(env, _MEMPLAN_COMPLETE="bash_complete", COMP_CWORD="3",
                                                         COMP_WORDS=f"memplan simulate {profile} --sem")),
        (f"memplan simulate --json {os.path.basename(profile)}", memplan + ["simulate", "--json", profile], env),
    ]
    times: Dict[str, List[float]] = {name: [] for name, _, _ in commands}
    cpu: Dict[str, List[float]] = {name: [] for name, _, _ in commands}
    for _name, argv, cmd_env in commands:  # warm the page cache and the .pyc files
        run_once(argv, cmd_env)
    for _ in range(args.runs):
        for name, argv, cmd_env in commands:
            wall, used = run_once(argv, cmd_env)
            times[name].append(wall)
            cpu[name].append(used)
    median = {name: statistics.median(values) for name, values in times.items()}
    best = {name: min(values) for name, values in times.items()}
    best_cpu = {name: min(values) for name, values in cpu.items()}
    click_ref, numpy_ref = "python -c 'import click'", "python -c 'import numpy'"
    print(f"{'command':<44} {'best ms':>8} {'median ms':>10} {'cpu ms':>7}  ratio (best runs; cpu)")
    targets = []
    for name, _, _ in commands:
        ref_name, ref = ("import numpy", numpy_ref) if "simulate --json" in name else ("import click", click_ref)
        ratio = best[name] / best[ref]
        cpu_ratio = best_cpu[name] / best_cpu[ref]
        note = ""
        if name == "memplan --version":
            targets.append((name, ratio, 1.5))
            note = " (target <= 1.5)"
        elif "simulate --json" in name:
            targets.append((name, ratio, 2.0))
            note = " (target <= 2.0)"
        shown = "" if name.startswith("python") else f"  {ratio:4.2f}x; {cpu_ratio:4.2f}x {ref_name}{note}"
        print(f"{name:<44} {best[name] * 1e3:8.1f} {median[name] * 1e3:10.1f} {best_cpu[name] * 1e3:7.1f}{shown}")
    missed = [f"{name}: {ratio:.2f}x > {limit}x" for name, ratio, limit in targets if ratio > limit]
    print("targets met" if not missed else "targets missed: " + "; ".join(missed))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
