"""Golden files under tests/data/: what memplan prints for fixed inputs, compared byte for byte.

Tests only compare (``assert_golden``); nothing run by pytest writes these files. After a
reviewed change to the rendering, regenerate them explicitly and review the diff::

    python tests/golden.py                       # show what differs
    python tests/golden.py --regenerate          # rewrite every golden file that differs
    python tests/golden.py --regenerate NAME...  # some of them

Each golden file has one producer below; the output is rendered as a pipe would receive it
(no colour), so it is also what the terminal shows minus colour, at any width.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import io
import os
import sys
from typing import Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
ROOT = os.path.dirname(HERE)


def _console(width: int):
    from rich.console import Console

    return Console(width=width, record=True, color_system=None, file=io.StringIO())


def _load(name: str):
    """A bundled profile, named as the README does (no checkout path in the files)."""
    from memplan.profile.reader import load_profile

    return dataclasses.replace(load_profile(os.path.join(ROOT, "profiles", name)), source=f"profiles/{name}")


def map_sbm_guest() -> str:
    from memplan.engine.simulation import simulate
    from memplan.map.compute import machine_map
    from memplan.render.map import print_map

    machine = _load("sbm-guest.toml")
    console = _console(100)
    print_map(console, machine_map(machine, simulate(machine)))
    return console.export_text()


def map_diff_review() -> str:
    from memplan.engine.simulation import simulate
    from memplan.map.compute import diff_map
    from memplan.render.map import print_map

    machine = _load("skippable-review.toml")
    console = _console(80)
    print_map(console, diff_map(machine, simulate(machine, "refcount"), simulate(machine, "skippable")))
    return console.export_text()


def explain_sbm_guest_36() -> str:
    from memplan.explain.compute import explain_block
    from memplan.render.explain import print_story

    console = _console(80)
    machine = _load("sbm-guest.toml")
    print_story(console, explain_block(machine, 36), machine.geometry)
    return console.export_text()


def simulate_sbm_guest() -> str:
    from memplan.engine.simulation import simulate
    from memplan.render.block_facts import MachineFacts
    from memplan.render.table import print_simulation

    machine = _load("sbm-guest.toml")
    console = _console(80)
    print_simulation(console, simulate(machine), MachineFacts(machine))
    return console.export_text()


#: every golden file and how it is rendered
GOLDEN: Dict[str, Callable[[], str]] = {
    "map-sbm-guest-w100.txt": map_sbm_guest,
    "map-diff-skippable-review-w80.txt": map_diff_review,
    "explain-sbm-guest-36.txt": explain_sbm_guest_36,
    "simulate-sbm-guest.txt": simulate_sbm_guest,
}


def render(name: str) -> str:
    return GOLDEN[name]()


def stored(name: str) -> str:
    with open(os.path.join(DATA, name), encoding="utf-8") as handle:
        return handle.read()


def assert_golden(name: str) -> None:
    """Compare a golden file with what memplan prints now (never writes)."""
    text = render(name)
    expected = stored(name)
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), name, "now"))
        raise AssertionError(f"{name} changed (after review: python tests/golden.py --regenerate {name}):\n{diff}")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regenerate", action="store_true", help="rewrite the golden files")
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(sorted(GOLDEN)))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(GOLDEN))
    if unknown:
        parser.error(f"unknown golden file {unknown[0]}")
    changed = 0
    for name in args.names or sorted(GOLDEN):
        text = render(name)
        old = stored(name) if os.path.exists(os.path.join(DATA, name)) else ""
        if text == old:
            continue
        changed += 1
        sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True), name, "now"))
        if args.regenerate:
            with open(os.path.join(DATA, name), "w", encoding="utf-8") as handle:
                handle.write(text)
            print(f"wrote tests/data/{name}")
    print(f"{changed} golden file(s) {'rewritten' if args.regenerate else 'differ (--regenerate rewrites them)'}")
    return 1 if changed and not args.regenerate else 0


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    raise SystemExit(main())
