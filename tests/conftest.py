"""Shared helpers: build machines from small TOML snippets."""

from __future__ import annotations

import os
import textwrap
from typing import Optional

import pytest

from memplan.inputs import toml
from memplan.inputs.profile import build_machine, load_profile
from memplan.model import Machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILES = os.path.join(ROOT, "profiles")

#: 1 GiB of free ZONE_NORMAL memory at 0 (blocks 0-7): migration targets for the block under test.
SPARE = """
format = 1
[[ram]]
start = "0"
size = "1GiB"
zone = "Normal"
"""


def machine_from(text: str, spare: bool = True) -> Machine:
    """A machine from a TOML snippet (prefixed with ``SPARE`` unless ``spare`` is false)."""
    body = textwrap.dedent(text)
    doc = toml.loads((SPARE if spare else "format = 1\n") + body)
    return build_machine(doc, "<test>")


@pytest.fixture
def write_profile(tmp_path):
    def write(text: str, name: str = "p.toml") -> str:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return str(path)
    return write


def bundled(name: str) -> str:
    return os.path.join(PROFILES, name)
