"""Golden files under tests/data/: what memplan prints for fixed inputs, compared byte for byte.

The tests only compare (``check(name)``). The files change only through this explicit command,
after reviewing the difference it prints::

    python tests/golden.py            # show what differs
    python tests/golden.py --update   # rewrite the files that differ

Each golden file has one producer below; the output is rendered as a pipe would receive it
(no colour), so it is also what the terminal shows minus colour, at any width.
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import os
import sys
from typing import Callable, Dict

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
    print_story(console, explain_block(_load("sbm-guest.toml"), 36))
    return console.export_text()


def simulate_sbm_guest() -> str:
    from memplan.engine.simulation import simulate
    from memplan.render.block_facts import MachineFacts
    from memplan.render.table import print_simulation

    machine = _load("sbm-guest.toml")
    console = _console(80)
    print_simulation(console, simulate(machine), MachineFacts(machine))
    return console.export_text()


PRODUCERS: Dict[str, Callable[[], str]] = {
    "map-sbm-guest-w100.txt": map_sbm_guest,
    "map-diff-skippable-review-w80.txt": map_diff_review,
    "explain-sbm-guest-36.txt": explain_sbm_guest_36,
    "simulate-sbm-guest.txt": simulate_sbm_guest,
}


def produce(name: str) -> str:
    return PRODUCERS[name]()


def stored(name: str) -> str:
    with open(os.path.join(DATA, name), encoding="utf-8") as handle:
        return handle.read()


def check(name: str) -> None:
    """Compare a golden file with what memplan prints now (never writes)."""
    text = produce(name)
    expected = stored(name)
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), name, "now"))
        raise AssertionError(f"{name} changed; review and run `python tests/golden.py --update`:\n{diff}")


def main(argv: list) -> int:
    sys.path.insert(0, ROOT)
    update = "--update" in argv
    changed = 0
    for name in PRODUCERS:
        text = produce(name)
        path = os.path.join(DATA, name)
        old = stored(name) if os.path.exists(path) else ""
        if text == old:
            continue
        changed += 1
        sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True), name, "now"))
        if update:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
    print(f"{changed} golden file(s) {'rewritten' if update else 'differ'}")
    return 1 if changed and not update else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
