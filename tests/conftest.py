"""Shared helpers: build machines from small TOML snippets."""

from __future__ import annotations

import os
import textwrap
from typing import Optional

import pytest
from hypothesis import settings

from memplan.core.machine import Machine
from memplan.profile import toml
from memplan.profile.reader import build_machine

# Property tests draw the same examples on every run (CI included): a failure is reproducible and
# the suite's duration is bounded. `HYPOTHESIS_PROFILE=explore pytest` draws fresh random examples.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

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


# Four ZONE_NORMAL blocks on one node: block 0 full of anon pages, blocks 1-3 half full.
HALF_FULL = """
[[ram]]
start = "0"
size = "512MiB"
zone = "Normal"

[[pages]]
pfn = "0x0"
count = 32768
kind = "anon"

[[pages]]
pfn = "0x8000"
count = 16384
kind = "anon"

[[pages]]
pfn = "0x10000"
count = 16384
kind = "anon"

[[pages]]
pfn = "0x18000"
count = 16384
kind = "anon"
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


FIXTURES = os.path.join(ROOT, "tests", "fixtures")
QEMU_FIXTURES = ("qemu-6.1-pre", "qemu-6.1-post1", "qemu-6.1-post2", "qemu-6.1-bbm-post1")


def fixture_tree(name: str) -> str:
    """A real-kernel snapshot tree under tests/fixtures/."""
    return os.path.join(FIXTURES, name)


def build_sysroot(root: str, blocks: dict, flags, iomem: str, *, counts=None, release: Optional[str] = "6.1.0",
                  compress: bool = True, block_size: int = 128 << 20, hugepages: bool = True) -> str:
    """Write a small sysroot: ``blocks`` maps block id -> (state, valid_zones); ``flags``
    (and ``counts``) are the whole kpageflags (kpagecount) arrays, pfn 0 onwards."""
    import lzma

    import numpy as np

    def put(rel: str, data, mode: str = "w") -> None:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, mode) as handle:
            handle.write(data)

    put("sys/devices/system/memory/block_size_bytes", f"{block_size:x}\n")
    for block, (state, zones) in blocks.items():
        put(f"sys/devices/system/memory/memory{block}/state", state + "\n")
        put(f"sys/devices/system/memory/memory{block}/valid_zones", zones + "\n")
    put("proc/iomem", iomem)
    for size in ("2048kB", "1048576kB") if hugepages else ():
        for key in ("nr", "free", "resv", "surplus"):
            put(f"sys/kernel/mm/hugepages/hugepages-{size}/{key}_hugepages", "0\n")
    if release is not None:
        put("proc/osrelease", release + "\n")
    for name, values in (("kpageflags", flags), ("kpagecount", counts)):
        if values is None:
            continue
        data = np.asarray(values, dtype="<u8").tobytes()
        if compress:
            put(f"proc/{name}.xz", lzma.compress(data, preset=0), "wb")
        else:
            put(f"proc/{name}", data, "wb")
    return root
