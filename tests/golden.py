"""Golden files under tests/data/: fixed-width renderings of bundled profiles.

Tests only compare (``assert_golden``); nothing run by pytest writes these files. After a
reviewed change to the rendering, regenerate them explicitly and review the diff:

    python tests/golden.py --regenerate          # every golden file
    python tests/golden.py --regenerate NAME...  # some of them
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys
from typing import Callable, Dict, List, Optional

from rich.console import Console

TESTS = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(TESTS, "data")
PROFILES = os.path.join(os.path.dirname(TESTS), "profiles")


def load(name: str):
    """A bundled profile, named as the README does (the snapshots must not contain the checkout path)."""
    from memplan.profile.reader import load_profile
    return dataclasses.replace(load_profile(os.path.join(PROFILES, name)), source=f"profiles/{name}")


def plain(width: int) -> Console:
    return Console(width=width, record=True, color_system=None, file=io.StringIO())


def _map_sbm_guest() -> str:
    from memplan.engine.simulation import simulate
    from memplan.map.compute import machine_map
    from memplan.render.map import map_renderable
    machine = load("sbm-guest.toml")
    console = plain(100)
    console.print(map_renderable(machine_map(machine, simulate(machine)), 100))
    return console.export_text()


def _map_diff_skippable_review() -> str:
    from memplan.engine.simulation import simulate
    from memplan.map.compute import diff_map
    from memplan.render.map import map_renderable
    machine = load("skippable-review.toml")
    console = plain(80)
    console.print(map_renderable(diff_map(machine, simulate(machine, "refcount"), simulate(machine, "skippable")), 80))
    return console.export_text()


def _explain_sbm_guest_36() -> str:
    from memplan.explain.compute import explain_block
    from memplan.render.explain import print_story
    console = plain(140)
    print_story(console, explain_block(load("sbm-guest.toml"), 36))
    return console.export_text()


def _simulate_sbm_guest() -> str:
    from memplan.engine.simulation import simulate
    from memplan.render import table as render_table
    from memplan.render.lsmem import TableOptions
    console = plain(180)
    render_table.print_simulation(console, simulate(load("sbm-guest.toml")), TableOptions())
    return console.export_text()


#: every golden file and how it is rendered
GOLDEN: Dict[str, Callable[[], str]] = {
    "map-sbm-guest-w100.txt": _map_sbm_guest,
    "map-diff-skippable-review-w80.txt": _map_diff_skippable_review,
    "explain-sbm-guest-36-w140.txt": _explain_sbm_guest_36,
    "simulate-sbm-guest-w180.txt": _simulate_sbm_guest,
}


def _normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def render(name: str) -> str:
    return _normalise(GOLDEN[name]())


def assert_golden(name: str, text: Optional[str] = None) -> None:
    """Compare a rendering (by default the one ``GOLDEN`` names) with tests/data/NAME."""
    text = render(name) if text is None else _normalise(text)
    with open(os.path.join(DATA, name), encoding="utf-8") as handle:
        expected = handle.read()
    assert text == expected, f"{name} changed (after review: python tests/golden.py --regenerate {name})"


def regenerate(names: List[str]) -> None:
    for name in names or sorted(GOLDEN):
        with open(os.path.join(DATA, name), "w", encoding="utf-8") as handle:
            handle.write(render(name))
        print(f"wrote tests/data/{name}")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regenerate", action="store_true", help="rewrite the golden files")
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(sorted(GOLDEN)))
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(GOLDEN))
    if unknown:
        parser.error(f"unknown golden file {unknown[0]}")
    if not args.regenerate:
        parser.print_help()
        return 2
    regenerate(args.names)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(TESTS))
    sys.exit(main())
