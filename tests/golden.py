"""Golden files under tests/data/: compare, or rewrite them with MEMPLAN_UPDATE_GOLDEN=1."""

from __future__ import annotations

import os

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def assert_golden(name: str, text: str) -> None:
    path = os.path.join(DATA, name)
    text = "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
    if os.environ.get("MEMPLAN_UPDATE_GOLDEN"):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    with open(path, encoding="utf-8") as handle:
        expected = handle.read()
    assert text == expected, f"{name} changed (MEMPLAN_UPDATE_GOLDEN=1 rewrites it after review)"
