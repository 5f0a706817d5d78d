"""Hostile input, as an attacker would write it (issue 14): malformed profiles, corrupted saved
trees and bad option values of every class the issue lists, each run through the real command
line in a worker process with an address-space limit and a time limit.

The contract checked for every case: exit 0, or exactly one ``memplan: error:`` line and exit 2;
never a traceback, a hang or a memory blow-up. Cases marked ``error`` must be refused.

Cases are a fixed, deterministic list. They run in a few long-lived worker processes (imports
paid once per worker, ``RLIMIT_AS`` of ``MEMORY_LIMIT``): each case gets ``TIME_LIMIT`` seconds
(``SIGALRM`` in the worker; the parent kills a worker that does not answer and starts another).
Every case must pass: there is no known failure.
"""

from __future__ import annotations

import json
import lzma
import os
import queue
import resource
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import pytest
import tomli_w

from conftest import FIXTURES, ROOT
from memplan.profile import toml

MEMORY_LIMIT = 3 << 29  # 1.5 GiB of address space per worker
TIME_LIMIT = 6.0  # seconds per case (the parent gives up on a worker 4 s later)
WORKERS = max(2, min(4, os.cpu_count() or 2))


@dataclass
class Case:
    cls: str
    name: str
    argv: List[str]
    #: "error": must be refused (exit 2, one error line); "any": exit 0 or refused
    expect: str = "any"
    env: Dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.cls}:{self.name}"


# ---- profiles -------------------------------------------------------------------------------

BASE = """
format = 1
[machine]
name = "fuzz"
[[ram]]
start = "0"
size = "1GiB"
zone = "Normal"
[[ram]]
start = "1GiB"
size = "512MiB"
zone = "Movable"
[[virtio_mem]]
id = "vmem0"
addr = "4GiB"
region_size = "1GiB"
plugged = ["0-127"]
[[fill]]
blocks = "8-11"
seed = 7
anon = 0.3
thp = 0.1
[[pages]]
pfn = "0x48000"
count = 4
kind = "slab"
[environment]
hugetlb_2m = { free = 2, resv = 1 }
"""


def _set(doc: Dict[str, Any], path: str, value: Any) -> Dict[str, Any]:
    """``doc`` with the value at a dotted path (``ram.0.size``) replaced (``...``: deleted)."""
    keys = path.split(".")
    node: Any = doc
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    last = keys[-1]
    if value is ...:
        node.pop(last, None)
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


def _doc(**changes: Any) -> str:
    doc = toml.loads(BASE)
    for path, value in changes.items():
        _set(doc, path.replace("__", "."), value)
    return tomli_w.dumps(doc)


#: numeric keys and the values no machine (or no int32/u64) holds
NUMBER_KEYS = ["ram__0__start", "ram__0__size", "ram__1__node", "virtio_mem__0__addr", "virtio_mem__0__region_size",
               "virtio_mem__0__block_size", "virtio_mem__0__node", "virtio_mem__0__bbm_block_size", "pages__0__pfn",
               "pages__0__count", "pages__0__refcount", "fill__0__seed", "machine__nodes",
               "machine__memory_block_size", "environment__hugetlb_2m__free", "environment__hugetlb_2m__resv"]
NUMBER_VALUES = [("2^31", 2**31), ("2^32", 2**32), ("2^63", 2**63 - 1), ("2^64", 2**64), ("2^100", 2**100),
                 ("-1", -1), ("-2^63", -2**63), ("20digits", "99999999999999999999"),
                 ("hex2^84", "0x1" + "0" * 21)]
LONG_DECIMALS = [("400nines.5G", "9" * 400 + ".5G"), ("0.400nines G", "0." + "9" * 400 + "G"),
                 ("5000digits", "9" * 5000),
                 ("1e30K", "1" + "0" * 30 + "K")]


def profile_cases() -> List[Tuple[str, str, str, str]]:
    """``(class, name, profile text, expect)``."""
    out: List[Tuple[str, str, str, str]] = [("valid", "base", _doc(), "any")]
    for key in NUMBER_KEYS:
        for label, value in NUMBER_VALUES:
            out.append(("numbers beyond 64 bits or int32", f"{key}={label}", _doc(**{key: value}), "any"))
    for key in ["ram__0__size", "ram__1__start", "virtio_mem__0__region_size", "pages__0__pfn",
                "machine__memory_block_size"]:
        for label, value in LONG_DECIMALS:
            out.append(("over-long decimals", f"{key}={label}", _doc(**{key: value}), "error"))
        # util-linux reads a fraction too long for its divisor as no fraction at all: 1 GiB
        out.append(("over-long decimals", f"{key}=1.000..1G", _doc(**{key: "1." + "0" * 400 + "1G"}), "any"))
    raw_numbers = [("int5000digits", BASE.replace('size = "512MiB"', "size = " + "9" * 5000)),
                   ("float1e400", BASE.replace("anon = 0.3", "anon = 1e400")),
                   ("nan", BASE.replace("anon = 0.3", "anon = nan")),
                   ("inf", BASE.replace("anon = 0.3", "anon = inf")),
                   ("-inf", BASE.replace("thp = 0.1", "thp = -inf"))]
    out += [("over-long decimals", name, text, "error") for name, text in raw_numbers]
    out += [("sizes no machine has", name, _doc(**changes), expect) for name, changes, expect in SIZES]
    out += [("huge ranges", name, text, expect) for name, text, expect in huge_ranges()]
    out += [("deep nesting", name, text, "error") for name, text in NESTING]
    out += [("impossible but accepted", name, _doc(**changes), expect) for name, changes, expect in IMPOSSIBLE]
    out += [("impossible but accepted", name, text, "error") for name, text in IMPOSSIBLE_TEXT]
    return out


SIZES = [
    ("ram 1 EiB", {"ram__1__size": 2**60}, "error"),
    ("ram 8 PiB", {"ram__1__size": "8PiB"}, "error"),
    ("ram 4 PiB", {"ram__1__size": "4PiB"}, "error"),
    ("ram 2 PiB", {"ram__1__size": "2PiB"}, "error"),
    ("ram 16E", {"ram__1__size": "16E"}, "error"),
    ("ram 1E", {"ram__1__size": "1E"}, "error"),
    ("ram ends past 2^52", {"ram__1__start": "0xfffffffe00000", "ram__1__size": "4MiB"}, "error"),
    ("ram at 2^52", {"ram__1__start": 2**52}, "error"),
    ("virtio region 2^62", {"virtio_mem__0__region_size": 2**62}, "error"),
    ("virtio region 2^52 of 4K blocks", {"virtio_mem__0__region_size": "4PiB", "virtio_mem__0__addr": 0x20000000000,
                                         "virtio_mem__0__block_size": "4KiB"}, "error"),
    ("virtio region 1 PiB plugged 2 MiB", {"virtio_mem__0__region_size": "1PiB", "virtio_mem__0__plugged": ["0"]},
     "any"),
    ("virtio region 64 TiB plugged 2 MiB", {"virtio_mem__0__region_size": "64TiB", "virtio_mem__0__plugged": ["0"]},
     "any"),
    ("virtio plugged_size 2^64", {"virtio_mem__0__plugged": ..., "virtio_mem__0__plugged_size": 2**64}, "error"),
    ("virtio plugged_size 16E", {"virtio_mem__0__plugged": ..., "virtio_mem__0__plugged_size": "16E"}, "error"),
    ("memory block 4 GiB", {"machine__memory_block_size": "4GiB"}, "error"),
    ("memory block 2^62", {"machine__memory_block_size": 2**62}, "error"),
    ("memory block 2 GiB", {"machine__memory_block_size": "2GiB", "ram__1__size": "2GiB", "ram__0__size": "2GiB",
                            "ram__1__start": "2GiB", "fill": ..., "pages": ..., "virtio_mem": ...}, "any"),
    ("bbm block 2^62", {"virtio_mem__0__bbm_block_size": 2**62, "virtio_mem__0__mode": "bbm"}, "error"),
    ("hugetlb free 2^40", {"environment__hugetlb_2m__free": 2**40}, "error"),
    ("pages count 2^40", {"pages__0__count": 2**40}, "error"),
]


def huge_ranges() -> List[Tuple[str, str, str]]:
    return [
        ("offline_blocks 0-3000000000", _doc(virtio_mem__0__offline_blocks="0-3000000000"), "error"),
        ("offline_blocks 32-3000000000", _doc(virtio_mem__0__offline_blocks="32-3000000000"), "error"),
        ("offline_blocks 20 digits", _doc(virtio_mem__0__offline_blocks="99999999999999999999"), "error"),
        ("offline_blocks memory2^64", _doc(virtio_mem__0__offline_blocks="memory18446744073709551616"), "error"),
        ("offline_blocks repeated", _doc(virtio_mem__0__offline_blocks=",".join(["33"] * 50000)), "any"),
        ("fill blocks 0-3000000000", _doc(fill__0__blocks="0-3000000000"), "error"),
        ("fill blocks 2^64 int", _doc(fill__0__blocks=2**64), "error"),
        ("fill blocks repeated 0-7", _doc(fill__0__blocks=",".join(["0-7"] * 50000)), "any"),
        ("fill blocks 50000 singles", _doc(fill__0__blocks=",".join(str(b) for b in range(50000))), "error"),
        ("plugged 0-999999999999", _doc(virtio_mem__0__plugged=["0-999999999999"]), "error"),
        ("plugged repeated", _doc(virtio_mem__0__plugged=["0-127"] * 50000), "any"),
        ("plugged 2^64", _doc(virtio_mem__0__plugged=[2**64]), "error"),
        ("fake_offline_big_blocks huge", _doc(virtio_mem__0__fake_offline_big_blocks="0-9999999999",
                                              virtio_mem__0__mode="bbm"), "error"),
        ("isolated whole u64", _doc(environment__isolated=["0x0-0xffffffffffffffff"]), "error"),
        ("isolated past u64", _doc(environment__isolated=["0x0-0x1ffffffffffffffff"]), "error"),
        ("isolated outside memory", _doc(environment__isolated=["0x200000000-0x2001fffff"]), "error"),
        ("isolated repeated", _doc(environment__isolated=["0x0-0x3fffffff"] * 20000), "any"),
        ("pages reach block 2^28", _doc(pages__0__pfn="0x0", pages__0__count=(2**28) * 32768), "error"),
        ("pages pfn 2^40", _doc(pages__0__pfn=2**40), "error"),
        ("pages pfn at the end", _doc(pages__0__pfn=2**40 - 1, pages__0__count=2), "error"),
        ("holes 5000", _doc(ram__0__holes=[{"start": hex(0x100000 + i * 0x2000), "size": "0x1000"}
                                           for i in range(5000)]), "any"),
        ("holes outside", _doc(ram__0__holes=[{"start": "0x0", "size": 2**62}]), "error"),
        ("cma whole u64", _doc(ram__0__cma=["0x0-0xffffffffffffffff"]), "error"),
        ("20000 pages", BASE + "".join(f'[[pages]]\npfn = "{hex(0x1000 + i)}"\nkind = "anon"\n' for i in range(20000)),
         "any"),
    ]


NESTING = [
    ("arrays 5000", "x = " + "[" * 5000 + "]" * 5000 + "\n" + BASE),
    ("arrays 100000", "x = " + "[" * 100000 + "]" * 100000 + "\n" + BASE),
    ("inline tables 5000", "x = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n" + BASE),
    ("dotted key 2000", "a" + ".a" * 2000 + " = 1\n" + BASE),
    ("table header 5000", BASE + "[" + ".".join(["a"] * 5000) + "]\n"),
    ("name nested 500", BASE.replace('name = "fuzz"', "name = " + "[" * 500 + "]" * 500)),
    ("holes nested 800", BASE.replace('zone = "Movable"', 'zone = "Movable"\nholes = ' + "[" * 800 + "]" * 800)),
    ("unclosed 5000", "x = " + "[" * 5000 + "\n" + BASE),
]

IMPOSSIBLE = [
    ("format = true", {"format": True}, "error"),
    ("format = 1.0", {"format": 1.0}, "error"),
    ("format = '1'", {"format": "1"}, "error"),
    ("format = 3", {"format": 3}, "error"),
    ("format = 2", {"format": 2}, "any"),
    ("format = 2^64", {"format": 2**64}, "error"),
    ("kernel garbage", {"machine__kernel": "garbage"}, "error"),
    ("kernel empty", {"machine__kernel": ""}, "error"),
    ("kernel full-width", {"machine__kernel": "６.１"}, "error"),
    ("kernel int", {"machine__kernel": 6}, "error"),
    ("kernel newline", {"machine__kernel": "6.1\nx"}, "error"),
    ("kernel 1000 chars", {"machine__kernel": "6.1-" + "x" * 1000}, "error"),
    ("kernel 6.1.0-56-amd64", {"machine__kernel": "6.1.0-56-amd64"}, "any"),
    ("resv > free", {"environment__hugetlb_2m__resv": 3}, "error"),
    ("resv without free pages", {"environment__hugetlb_2m": {"resv": 1}}, "error"),
    ("resv 1g > free", {"environment__hugetlb_1g": {"free": 0, "resv": 1}}, "error"),
    ("full-width size", {"ram__1__size": "５１２MiB"}, "error"),
    ("full-width start", {"ram__1__start": "１GiB"}, "error"),
    ("full-width blocks", {"fill__0__blocks": "８-１１"}, "error"),
    ("full-width offline_blocks", {"virtio_mem__0__offline_blocks": "３２"}, "error"),
    ("arabic-indic pfn", {"pages__0__pfn": "٣٢٧٦٨"}, "error"),
    ("nodes true", {"machine__nodes": True}, "error"),
    ("nodes 0", {"machine__nodes": 0}, "error"),
    ("nodes 1025", {"machine__nodes": 1025}, "error"),
    ("node 1024", {"ram__1__node": 1024}, "error"),
    ("seed 1.5", {"fill__0__seed": 1.5}, "error"),
    ("seed true", {"fill__0__seed": True}, "error"),
    ("count 1.0", {"pages__0__count": 1.0}, "error"),
    ("count 0", {"pages__0__count": 0}, "error"),
    ("refcount '5'", {"pages__0__refcount": "5"}, "error"),
    ("refcount 2^31", {"pages__0__refcount": 2**31}, "error"),
    ("refcount int max", {"pages__0__refcount": 2**31 - 1}, "any"),
    ("zone normal", {"ram__0__zone": "normal"}, "error"),
    ("zone list", {"ram__0__zone": ["Normal"]}, "error"),
    ("state ONLINE", {"ram__0__state": "ONLINE"}, "error"),
    ("fraction nan string", {"fill__0__anon": "nan"}, "error"),
    ("fraction true", {"fill__0__anon": True}, "error"),
    ("fractions over 1", {"fill__0__anon": 0.95}, "error"),
    ("semantics mainline", {"machine__semantics": "mainline"}, "error"),
    ("ram string", {"ram": "x"}, "error"),
    ("ram ints", {"ram": [1, 2]}, "error"),
    ("ram start list", {"ram__0__start": [1]}, "error"),
    ("machine list", {"machine": [1]}, "error"),
    ("environment int", {"environment": 5}, "error"),
    ("pages list of lists", {"pages": [[1]]}, "error"),
    ("description dict", {"machine__description": {"a": 1}}, "error"),
    ("name with ESC and newline", {"machine__name": "evil\x1b[2J\nname"}, "any"),
    ("description 1 MB", {"machine__description": "x" * (1 << 20)}, "any"),
    ("size with B", {"ram__1__size": "536870912B"}, "error"),
    ("size with space", {"ram__1__size": "512 MiB"}, "error"),
    ("size MB decimal", {"ram__1__size": "512MB"}, "error"),
    ("size octal", {"ram__1__size": "04000000000"}, "any"),
    ("hole size 0", {"ram__0__holes": [{"start": "0x1000", "size": 0}]}, "error"),
    ("isolated int", {"environment__isolated": [5]}, "error"),
    ("isolated reversed", {"environment__isolated": ["0x3fffffff-0x0"]}, "error"),
    ("offline_blocks outside device", {"virtio_mem__0__offline_blocks": "8"}, "error"),
    ("virtio id empty", {"virtio_mem__0__id": ""}, "error"),
    ("virtio id 2^64", {"virtio_mem__0__id": 2**64}, "error"),
    ("fill blocks true", {"fill__0__blocks": True}, "error"),
    ("fill blocks list", {"fill__0__blocks": ["8"]}, "error"),
    ("pages kind int", {"pages__0__kind": 5}, "error"),
    ("pages kind list", {"pages__0__kind": ["slab"]}, "error"),
    ("unknown key 1 MB", {"x" * (1 << 20): 1}, "error"),
    ("unknown key ESC", {"evil\x1b[2J": 1}, "error"),
]

IMPOSSIBLE_TEXT = [
    ("not UTF-8", "format = 1\nname = '\udcff'\n"),
    ("duplicate key", BASE + "format = 1\n"),
    ("empty", ""),
    ("only comments", "# nothing\n"),
]


# ---- saved trees ----------------------------------------------------------------------------

TREE = os.path.join(FIXTURES, "qemu-6.1-post2")
MEMORY = "sys/devices/system/memory"


def _write(root: str, rel: str, data: Any, mode: str = "w") -> None:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path) and not os.path.isdir(path):
        os.unlink(path)
    with open(path, mode) as handle:
        handle.write(data)


def _put(path: str, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


def _replace(root: str, rel: str, how: str) -> None:
    """Replace a file by something that is not a regular file (or by a hostile one)."""
    path = os.path.join(root, rel)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if how == "fifo":
        os.mkfifo(path)
    elif how == "dir":
        os.makedirs(path)
    elif how == "zero":
        os.symlink("/dev/zero", path)
    elif how == "null":
        os.symlink("/dev/null", path)
    elif how == "socket":
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.bind(path)
        except OSError:  # path too long for a socket address: a FIFO does as well
            os.mkfifo(path)
        finally:
            sock.close()
    elif how == "loop":
        os.symlink(os.path.basename(path), path)
    elif how == "dangling":
        os.symlink(path + ".missing", path)
    elif how == "missing":
        pass
    elif how == "empty":
        open(path, "w").close()
    else:
        raise ValueError(how)


def _kpageflags(root: str) -> str:
    """The tree's kpageflags as an uncompressed file (``proc/kpageflags``), its path."""
    xz = os.path.join(root, "proc/kpageflags.xz")
    raw = os.path.join(root, "proc/kpageflags")
    if os.path.exists(xz):
        with lzma.open(xz) as handle:
            data = handle.read()
        os.unlink(xz)
        with open(raw, "wb") as handle:
            handle.write(data)
    return raw


def tree_mutations() -> List[Tuple[str, str, Any]]:
    """``(class, name, mutate(root))`` for the saved-tree cases."""
    out: List[Tuple[str, str, Any]] = [("valid", "tree as captured", lambda r: None)]
    files = ["proc/kpageflags.xz", "proc/kpagecount.xz", f"{MEMORY}/block_size_bytes", f"{MEMORY}/memory33/state",
             f"{MEMORY}/memory33/valid_zones", "proc/iomem", "proc/zoneinfo", "proc/osrelease",
             f"{MEMORY}/memory33/phys_device", "sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"]
    for rel in files:
        for how in ("fifo", "dir", "zero", "null", "socket", "loop", "dangling", "missing", "empty"):
            out.append(("special files", f"{rel} {how}", lambda r, rel=rel, how=how: _replace(r, rel, how)))
    for rel in ("proc/kpageflags", "proc/kpagecount"):
        for how in ("fifo", "zero", "dir"):
            out.append(("special files", f"{rel} uncompressed {how}",
                        lambda r, rel=rel, how=how: (_kpageflags(r), _replace(r, rel, how))))
    out.append(("special files", "kpageflags sparse 1 TiB",
                lambda r: os.truncate(_kpageflags(r), 1 << 40)))
    out.append(("special files", "kpageflags xz of 256 MiB zeros",
                lambda r: _write(r, "proc/kpageflags.xz", _zeros_xz(), "wb")))
    for cut in (0, 1, 12, 100, 1000, 50000):
        out.append(("partial files", f"kpageflags.xz cut at {cut}",
                    lambda r, cut=cut: _truncate(r, "proc/kpageflags.xz", cut)))
    for cut in (0, 7, 4096, 800000):
        out.append(("partial files", f"kpageflags raw cut at {cut}",
                    lambda r, cut=cut: os.truncate(_kpageflags(r), cut)))
    out.append(("partial files", "kpageflags.xz garbage", lambda r: _write(r, "proc/kpageflags.xz", b"\xfd7zXZ\x00" +
                                                                             bytes(range(256)) * 40, "wb")))
    out.append(("partial files", "kpageflags.xz is gzip", lambda r: _write(r, "proc/kpageflags.xz", b"\x1f\x8b" * 500,
                                                                           "wb")))
    out.append(("impossible but accepted", "kpageflags all 0xff",
                lambda r: _write(r, "proc/kpageflags.xz", lzma.compress(b"\xff" * (8 * 1600000), preset=0), "wb")))
    for rel, value in (("block_size_bytes", "ffffffffffffffffffff\n"), ("block_size_bytes", "0\n"),
                       ("block_size_bytes", "-8000000\n"), ("block_size_bytes", "zz\n"),
                       ("block_size_bytes", "1000\n"), ("block_size_bytes", "80000000000000000\n"),
                       ("memory33/state", "offline\x00garbage\n"), ("memory33/state", "9" * 5000 + "\n"),
                       ("memory33/valid_zones", "Movable " * 10000 + "\n"), ("memory33/phys_index", "f" * 40 + "\n")):
        out.append(("numbers beyond 64 bits or int32", f"{rel} = {value[:24]!r}",
                    lambda r, rel=rel, value=value: _write(r, f"{MEMORY}/{rel}", value)))
    out.append(("numbers beyond 64 bits or int32", "memory9223372036854775808",
                lambda r: shutil.copytree(os.path.join(r, MEMORY, "memory33"),
                                          os.path.join(r, MEMORY, "memory9223372036854775808"))))
    out.append(("numbers beyond 64 bits or int32", "memory99999999999999999999",
                lambda r: shutil.copytree(os.path.join(r, MEMORY, "memory33"),
                                          os.path.join(r, MEMORY, "memory99999999999999999999"))))
    out.append(("numbers beyond 64 bits or int32", "memory33/node4000000000",
                lambda r: os.symlink("../../node/node0", os.path.join(r, MEMORY, "memory33", "node4000000000"))))
    out.append(("numbers beyond 64 bits or int32", "iomem past 2^64",
                lambda r: _append(r, "proc/iomem", "1ffffffffffffffff0-1ffffffffffffffff : System RAM\n")))
    out.append(("numbers beyond 64 bits or int32", "iomem reversed",
                lambda r: _append(r, "proc/iomem", "200000000-100000000 : System RAM\n")))
    out.append(("numbers beyond 64 bits or int32", "iomem 4 PiB of RAM",
                lambda r: _append(r, "proc/iomem", "10000000000000-1fffffffffffff : System RAM\n")))
    out.append(("numbers beyond 64 bits or int32", "hugepages free 2^70",
                lambda r: _write(r, "sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", str(2**70) + "\n")))
    out.append(("numbers beyond 64 bits or int32", "osrelease garbage",
                lambda r: _write(r, "proc/osrelease", "\x1b[2Jgarbage\n")))
    for block in ("memory33", "memory1", "memory0"):
        out.append(("gaps between blocks", f"{block} missing", lambda r, b=block: shutil.rmtree(
            os.path.join(r, MEMORY, b))))
    out.append(("gaps between blocks", "all blocks missing",
                lambda r: [shutil.rmtree(p) for p in _blocks(r)]))
    out.append(("huge ranges", "zoneinfo 100000 zones", lambda r: _append(r, "proc/zoneinfo", "Node 0, zone Normal\n"
                                                                           "  pages free 1\n" * 100000)))
    return out


def _sub(root: str, rel: str, old: str, new: str) -> None:
    path = os.path.join(root, rel)
    with open(path) as handle:
        text = handle.read()
    assert old in text, (rel, old)
    with open(path, "w") as handle:
        handle.write(text.replace(old, new, 1))


def _rename(root: str, rel: str, new: str) -> None:
    os.rename(os.path.join(root, rel), os.path.join(root, os.path.dirname(rel), new))


#: found by the w6 audit (each failed before its fix): ``(class, name, mutate(root), expect)``
TREE_AUDIT: List[Tuple[str, str, Any, str]] = [
    ("numbers beyond 64 bits or int32", "zoneinfo Node 5000 digits",
     lambda r: _sub(r, "proc/zoneinfo", "Node 0, zone      DMA", "Node " + "9" * 5000 + ", zone      DMA"), "error"),
    ("numbers beyond 64 bits or int32", "zoneinfo Node 2^64",
     lambda r: _sub(r, "proc/zoneinfo", "Node 0, zone      DMA", f"Node {2**64}, zone      DMA"), "error"),
    ("numbers beyond 64 bits or int32", "zoneinfo start_pfn 2^100",
     lambda r: _sub(r, "proc/zoneinfo", "start_pfn:           1", f"start_pfn:           {2**100}"), "error"),
    ("numbers beyond 64 bits or int32", "zoneinfo spanned 2^64",
     lambda r: _sub(r, "proc/zoneinfo", "spanned  4095", f"spanned  {2**64}"), "error"),
    ("numbers beyond 64 bits or int32", "meminfo MemTotal 5000 digits",
     lambda r: _sub(r, "proc/meminfo", "MemTotal:", f"MemTotal: {'9' * 5000} kB\nX:"), "any"),
    ("numbers beyond 64 bits or int32", "meminfo HugePages_Total 2^100",
     lambda r: _sub(r, "proc/meminfo", "HugePages_Total:", f"HugePages_Total: {2**100}\nX:"), "error"),
    ("numbers beyond 64 bits or int32", "iomem 5000 hex digits",
     lambda r: _append(r, "proc/iomem", "1" + "0" * 5000 + "-2" + "0" * 5000 + " : System RAM\n"), "error"),
    ("numbers beyond 64 bits or int32", "iomem System RAM past 2^64 (strict)",
     lambda r: _append(r, "proc/iomem", "10000000000000000-1ffffffffffffffff : System RAM\n"), "error"),
    ("numbers beyond 64 bits or int32", "hugepages-2^64kB",
     lambda r: os.makedirs(os.path.join(r, f"sys/kernel/mm/hugepages/hugepages-{2**64}kB")), "error"),
    ("impossible but accepted", "memory block dir with full-width digits",
     lambda r: _rename(r, f"{MEMORY}/memory33", "memory３３"), "any"),
    ("impossible but accepted", "64 KiB pages in 128 MiB blocks",
     lambda r: _write(r, "memplan-page-size", "65536\n"), "error"),
    ("special files", "kpageflags.xz sparse 1 TiB of zeros",
     lambda r: (os.unlink(os.path.join(r, "proc/kpageflags.xz")),
                open(os.path.join(r, "proc/kpageflags.xz"), "wb").truncate(1 << 40)), "error"),
    ("special files", "kpageflags.xz then 1 TiB of stream padding",
     lambda r: os.truncate(os.path.join(r, "proc/kpageflags.xz"),
                           os.path.getsize(os.path.join(r, "proc/kpageflags.xz")) + (1 << 40)), "any"),
]


def _blocks(root: str) -> List[str]:
    base = os.path.join(root, MEMORY)
    return [os.path.join(base, n) for n in os.listdir(base) if n.startswith("memory")]


def _append(root: str, rel: str, text: str) -> None:
    with open(os.path.join(root, rel), "a") as handle:
        handle.write(text)


def _truncate(root: str, rel: str, size: int) -> None:
    os.truncate(os.path.join(root, rel), size)


def _zeros_xz() -> bytes:
    compressor = lzma.LZMACompressor(preset=0)
    chunk = bytes(1 << 24)
    parts = [compressor.compress(chunk) for _ in range(16)]
    return b"".join(parts) + compressor.flush()


# ---- option values ----------------------------------------------------------------------------

def option_cases(profile: str) -> List[Case]:
    big = "99999999999999999999"
    decimal = "9" * 400 + ".5G"
    c = "bad option values"
    cases = [
        Case(c, "--blocks 20 digits", ["simulate", profile, "--blocks", big], "error"),
        Case(c, "--blocks 0-3000000000", ["simulate", profile, "--blocks", "0-3000000000"], "error"),
        Case(c, "--blocks 0-3000000000 json", ["simulate", profile, "--json", "--blocks", "0-3000000000"], "error"),
        Case(c, "--blocks full-width", ["simulate", profile, "--blocks", "３２"], "error"),
        Case(c, "--blocks -1", ["simulate", profile, "--blocks", "-1"], "error"),
        Case(c, "--blocks empty", ["simulate", profile, "--blocks", ""], "error"),
        Case(c, "--blocks 2^64", ["simulate", profile, "--blocks", str(2**64)], "error"),
        Case(c, "explain 20 digits", ["explain", profile, big], "error"),
        Case(c, "explain -1", ["explain", profile, "-1"], "error"),
        Case(c, "explain 2^63", ["explain", profile, str(2**63)], "error"),
        Case(c, "map --blocks 20 digits", ["map", profile, "--blocks", big], "error"),
        Case(c, "diff --blocks 0-3000000000", ["diff-semantics", profile, "--blocks", "0-3000000000"], "error"),
        Case(c, "plan 20 digits", ["plan", profile, "--size", big], "error"),
        Case(c, "plan 400-digit decimal", ["plan", profile, "--size", decimal], "error"),
        Case(c, "plan 16E", ["plan", profile, "--size", "16E"], "error"),
        Case(c, "plan 1E", ["plan", profile, "--size", "1E"], "any"),
        Case(c, "plan 0x1000", ["plan", profile, "--size", "0x1000"], "any"),
        Case(c, "plan -1", ["plan", profile, "--size=-1"], "error"),
        Case(c, "plan full-width", ["plan", profile, "--size", "５１２M"], "error"),
        Case(c, "plan --blocks 0-3000000000", ["plan", profile, "--size", "128M", "--blocks", "0-3000000000"], "any"),
        Case(c, "unplug --to 400-digit decimal", ["unplug", profile, "--to", decimal], "error"),
        Case(c, "unplug --to 2^64", ["unplug", profile, "--to", str(2**64)], "error"),
        Case(c, "unplug --to 1E", ["unplug", profile, "--to", "1E"], "error"),
        Case(c, "unplug --by 16E", ["unplug", profile, "--by", "16E"], "error"),
        Case(c, "unplug --by 1.5", ["unplug", profile, "--by", "1.5"], "error"),
        Case(c, "unplug --sweep --step 1", ["unplug", profile, "--sweep", "--step", "1"], "error"),
        Case(c, "unplug --sweep --step 0", ["unplug", profile, "--sweep", "--step", "0"], "error"),
        Case(c, "unplug --sweep --step 400 digits", ["unplug", profile, "--sweep", "--step", decimal], "error"),
        Case(c, "unplug --device 1 MB", ["unplug", profile, "--to", "0", "--device", "x" * 100000], "error"),
        Case(c, "--semantics unknown", ["simulate", profile, "--semantics", "garbage"], "error"),
        Case(c, "-o unknown column", ["simulate", profile, "-o", "NOPE"], "error"),
        Case(c, "-o 100000 columns", ["simulate", profile, "-o", ",".join(["BLOCK"] * 100000)], "any"),
        Case(c, "--split unknown", ["simulate", profile, "--split", "NOPE"], "error"),
        Case(c, "unknown option", ["simulate", profile, "--nope"], "error"),
        Case(c, "unknown command", ["nope"], "error"),
        Case(c, "profile and --sysroot", ["simulate", profile, "--sysroot", TREE], "error"),
        Case(c, "--sysroot is a file", ["simulate", "--sysroot", profile], "error"),
        Case(c, "--sysroot missing", ["simulate", "--sysroot", "/nonexistent/tree"], "error"),
        Case(c, "--write-profile to a directory", ["plan", profile, "--size", "128M", "--write-profile", "/"], "error"),
        Case(c, "--write-profile to /dev/full", ["plan", profile, "--size", "128M", "--write-profile", "/dev/full"],
             "error"),
        Case(c, "--write-profile missing dir",
             ["plan", profile, "--size", "128M", "--write-profile", "/nonexistent/x.toml"],
             "error"),
        Case(c, "--svg to /dev/full", ["map", profile, "--svg", "/dev/full"], "error"),
        Case(c, "fleet --plan-size 400 digits", ["fleet", profile, "--plan-size", decimal], "error"),
        Case(c, "fleet --unplug-by 2^64", ["fleet", profile, "--unplug-by", str(2**64)], "error"),
        Case(c, "fleet --jobs 0", ["fleet", profile, "--jobs", "0"], "error"),
        Case(c, "fleet --jobs 2^64", ["fleet", profile, "--jobs", str(2**64)], "error"),
        Case(c, "fleet --jobs -1", ["fleet", profile, "--jobs", "-1"], "error"),
        Case(c, "snapshot --jobs 2^64", ["snapshot", "--sysroot", TREE, "--jobs", str(2**64)], "error"),
        Case(c, "snapshot --jobs 0", ["snapshot", "--sysroot", TREE, "--jobs", "0"], "error"),
    ]
    cases += [  # found by the w6 audit (each failed before its fix)
        Case(c, "explain 5000 digits", ["explain", profile, "9" * 5000], "error"),
        Case(c, "explain --sysroot 5000 digits", ["explain", "--sysroot", TREE, "9" * 5000], "error"),
        Case(c, "snapshot --jobs full-width", ["snapshot", "--sysroot", TREE, "--jobs", "４"], "error"),
        Case(c, "snapshot --jobs 1_0", ["snapshot", "--sysroot", TREE, "--jobs", "1_0"], "error"),
        Case(c, "snapshot --jobs 5000 digits", ["snapshot", "--sysroot", TREE, "--jobs", "9" * 5000], "error"),
        Case(c, "fleet --workers full-width", ["fleet", profile, "--workers", "４"], "error"),
        Case(c, "fleet --dask-local full-width", ["fleet", profile, "--dask-local", "４"], "error"),
        Case(c, "fleet --dask-local 25 digits", ["fleet", profile, "--dask-local", "9" * 25], "error"),
        Case(c, "fleet --dask-local 100000", ["fleet", profile, "--dask-local", "100000"], "error"),
        Case(c, "fleet --host-timeout full-width", ["fleet", profile, "--host-timeout", "５"], "error"),
        Case(c, "fleet --scheduler port 2^64", ["fleet", profile, "--scheduler", f"tcp://127.0.0.1:{2**64}"], "error"),
        Case(c, "fleet --scheduler port 0", ["fleet", profile, "--scheduler", "tcp://127.0.0.1:0"], "error"),
        Case(c, "fleet --scheduler ESC", ["fleet", profile, "--scheduler", "tcp://\x1b[2J:1"], "error"),
    ]
    for value in ("abc", "0", "-5", "99999999999999999999", "1e3", "", " 80", "８０"):
        cases.append(Case("terminal", f"COLUMNS={value!r}", ["simulate", profile], "any", env={"COLUMNS": value}))
    for value in ("abc", "0", "99999999999999999999"):
        cases.append(Case("terminal", f"LINES={value!r}", ["map", profile], "any", env={"LINES": value}))
    return cases


# ---- the run ------------------------------------------------------------------------------------

WORKER = r"""
import io, json, os, signal, sys, time, traceback
class CaseTimeout(BaseException):
    pass
def _alarm(signum, frame):
    raise CaseTimeout()
signal.signal(signal.SIGALRM, _alarm)
from memplan.cli import main
real_out = os.fdopen(os.dup(1), "w")
devnull = os.open(os.devnull, os.O_WRONLY)
os.dup2(devnull, 1)  # nothing a case prints reaches the protocol stream
for line in sys.stdin:
    case = json.loads(line)
    saved_env = dict(os.environ)
    os.environ.update(case["env"])
    out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8"), io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    sys.stdout, sys.stderr, sys.argv = out, err, ["memplan"] + case["argv"]
    code, problem = None, None
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, case["timeout"])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except CaseTimeout:
        problem = "timeout"
    except BaseException:
        problem = traceback.format_exc()[-3000:]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        elapsed = time.perf_counter() - start
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        os.environ.clear()
        os.environ.update(saved_env)
    try:
        err.flush()
        stderr = err.buffer.getvalue().decode("utf-8", "replace")
    except Exception:
        stderr = "<unreadable>"
    real_out.write(json.dumps({"code": code, "problem": problem, "stderr": stderr[-4000:],
                               "elapsed": elapsed}) + "\n")
    real_out.flush()
"""


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


class Worker:
    """One long-lived worker process (imports paid once); replaced when it dies or hangs."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   PYTHONHASHSEED="0", NO_COLOR="1")
        env.pop("MEMPLAN_TRACEBACK", None)
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, preexec_fn=_limit, cwd=ROOT, env=env, text=True)
        self.replies: "queue.Queue[Optional[str]]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.replies.put(line)
        self.replies.put(None)

    def run(self, case: Case) -> Dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            limit = TIME_LIMIT
            self.proc.stdin.write(json.dumps({"argv": case.argv, "env": case.env, "timeout": limit}) + "\n")
            self.proc.stdin.flush()
            line = self.replies.get(timeout=limit + 4)
        except (OSError, queue.Empty):
            line = None
        if line is None:
            self.close()
            return {"code": None, "problem": "worker died or hung (killed)", "stderr": "", "elapsed": TIME_LIMIT}
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def run_all(cases: List[Case]) -> Dict[str, Dict[str, Any]]:
    todo: "queue.Queue[Case]" = queue.Queue()
    for case in cases:
        todo.put(case)
    results: Dict[str, Dict[str, Any]] = {}

    def drain() -> None:
        worker = Worker()
        try:
            while True:
                try:
                    case = todo.get_nowait()
                except queue.Empty:
                    return
                results[case.id] = result = worker.run(case)
                if result["code"] is None and result["problem"].startswith("worker died"):
                    worker = Worker()
        finally:
            worker.close()

    threads = [threading.Thread(target=drain) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# ---- building the case list (deterministic) ----------------------------------------------------

def build_cases(base: str, setups: List[Any]) -> List[Case]:
    """Every case; ``setups`` gets the functions that write its files under ``base`` (run once,
    by the ``outcomes`` fixture, not at collection)."""
    cases: List[Case] = []
    profiles = os.path.join(base, "profiles")
    setups.append(lambda: os.makedirs(profiles))
    for n, (cls, name, text, expect) in enumerate(profile_cases()):
        path = os.path.join(profiles, f"p{n}.toml")
        setups.append(lambda path=path, text=text: _put(path, text.encode("utf-8", "surrogateescape")))
        cases.append(Case(cls, name, ["simulate", path], expect))
        if n % 4 == 0:  # a quarter also through the JSON writer and another command
            cases.append(Case(cls, name + " (json)", ["simulate", path, "--json"], expect))
        if n % 8 == 0:
            cases.append(Case(cls, name + " (plan)", ["plan", path, "--size", "256M"], expect))
    for how in ("fifo", "zero", "null", "dir", "socket", "loop", "dangling", "missing", "empty"):
        setups.append(lambda how=how: _replace(profiles, f"special-{how}.toml", how))
        special = os.path.join(profiles, f"special-{how}.toml")
        cases.append(Case("special files", f"profile {how}", ["simulate", special], "error"))
    for n, (name, data) in enumerate((("sparse 100 MB", None), ("binary", bytes(range(256)) * 64),
                                      ("utf-16", BASE.encode("utf-16")), ("NUL bytes", b"format = 1\x00\n"),
                                      ("invalid utf-8", b"format = 1\n# \xff\xfe\n"))):
        path = os.path.join(profiles, f"file-{n}.toml")
        setups.append(lambda path=path, data=data: _put(path, data) if data is not None
                      else open(path, "wb").truncate(100 << 20))
        cases.append(Case("special files", f"profile {name}", ["simulate", path], "error"))
    trees = os.path.join(base, "trees")
    mutations = [(cls, name, mutate, "any") for cls, name, mutate in tree_mutations()] + TREE_AUDIT
    for n, (cls, name, mutate, expect) in enumerate(mutations):
        root = os.path.join(trees, f"t{n}")
        setups.append(lambda root=root, mutate=mutate: (shutil.copytree(TREE, root, symlinks=True), mutate(root)))
        cases.append(Case(cls, f"{name} (simulate)", ["simulate", "--sysroot", root], expect))
        cases.append(Case(cls, f"{name} (snapshot)", ["snapshot", "--sysroot", root], expect))
    cases += option_cases(os.path.join(ROOT, "profiles", "sbm-guest.toml"))
    fifo = os.path.join(base, "unread-fifo")
    setups.append(lambda: os.mkfifo(fifo))
    sbm = os.path.join(ROOT, "profiles", "sbm-guest.toml")
    for argv in (["map", sbm, "--svg", fifo], ["map", sbm, "--html", fifo],
                 ["plan", sbm, "--size", "128M", "--write-profile", fifo], ["unplug", sbm, "--sweep", "--svg", fifo]):
        cases.append(Case("output", f"{argv[0]} {argv[-2]} to a FIFO no process reads", argv, "error"))
    return cases


_STATE: Dict[str, Any] = {}


def _cases() -> List[Case]:
    """The case list, the same in every session (its files are written by ``outcomes``)."""
    if "cases" not in _STATE:
        import tempfile
        base = os.path.join(tempfile.gettempdir(), f"memplan-fuzz-{os.getpid()}")
        _STATE["base"], _STATE["setups"] = base, []
        _STATE["cases"] = build_cases(base, _STATE["setups"])
    return _STATE["cases"]


@pytest.fixture(scope="module")
def outcomes():
    cases = _cases()
    shutil.rmtree(_STATE["base"], ignore_errors=True)
    try:
        for setup in _STATE["setups"]:
            setup()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        results = run_all(cases)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        _STATE["cpu"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        if os.environ.get("MEMPLAN_FUZZ_TIMES"):
            slow = sorted(results.items(), key=lambda kv: -kv[1]["elapsed"])[:40]
            with open(os.environ["MEMPLAN_FUZZ_TIMES"], "w") as handle:
                handle.writelines(f"{r['elapsed']:7.2f} {r['code']} {name}\n" for name, r in slow)
        yield results
    finally:
        shutil.rmtree(_STATE["base"], ignore_errors=True)


def _params() -> List[Any]:
    return [pytest.param(case, id=case.id) for case in _cases()]


def verdict(case: Case, result: Dict[str, Any]) -> Optional[str]:
    """Why a result breaks the contract (``None``: it keeps it)."""
    if result["problem"]:
        return f"{result['problem']}"
    lines = [line for line in result["stderr"].splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("memplan: error: ")]
    if "Traceback" in result["stderr"]:
        return f"traceback on stderr: {result['stderr'][-800:]}"
    if result["code"] == 2:
        others = [line for line in lines if not line.startswith("memplan: warning: ")]
        if len(errors) != 1 or len(others) != 1:
            return f"exit 2 needs exactly one 'memplan: error:' line, got: {lines[:5]!r}"
        return None
    if result["code"] == 0:
        if case.expect == "error":
            return "accepted (exit 0) but must be refused"
        if errors:
            return f"exit 0 with an error line: {errors[0]!r}"
        return None
    return f"exit {result['code']}: {lines[-3:]!r}"


@pytest.mark.parametrize("case", _params())
def test_hostile_input(outcomes, case):
    result = outcomes[case.id]
    problem = verdict(case, result)
    assert problem is None, f"{case.id} {case.argv[:1]}: {problem}"
    assert result["elapsed"] < TIME_LIMIT


def test_the_suite_stays_fast(outcomes):
    """The whole fuzz run (every case above) costs the workers less than a minute of CPU time
    (half a minute on CI's two cores); measured as CPU time, so a busy machine does not fail it."""
    assert len(outcomes) == len(_cases()) >= 500
    assert _STATE["cpu"] < 60


@pytest.mark.parametrize("worker, expected", [(False, "memplan"), (True, "default")])
def test_only_memplan_itself_takes_signals_at_start_up(worker, expected):
    """multiprocessing's fork server and spawned children (the workers of ``fleet --workers`` and
    ``--dask-local``) import the ``memplan`` script again as ``__mp_main__``: they must keep the
    default SIGTERM action, or SIGTERM to the whole process group (``timeout``, ``systemctl
    stop``) printed "memplan: terminated" once per worker process."""
    code = ("import signal, sys, types\n"
            f"if {worker}: sys.modules['__mp_main__'] = types.ModuleType('__mp_main__')\n"
            "import memplan.__main__\n"
            "print('default' if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else 'memplan')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.stdout.strip() == expected, out.stderr[-500:]
