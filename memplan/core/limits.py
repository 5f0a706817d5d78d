"""What a Linux machine can have, and what memplan can judge here: the bounds every number from
an input is checked against.

Validated once, at the edge (profile reader, snapshot reader, command-line options), so the
model never allocates for, loops over or overflows on a number no kernel could produce.

Per architecture (``MAX_PHYSMEM_BITS``, arch/*/include/asm/sparsemem.h; physical addresses
stay below ``1 << bits``):

* x86-64: 52 with 5-level paging (``pgtable_l5_enabled() ? 52 : 46``);
* arm64: ``CONFIG_ARM64_PA_BITS``, at most 52 (LPA/LPA2);
* s390x: ``CONFIG_MAX_PHYSMEM_BITS``, 42 to 53 (default 46);
* ppc64le: 51 (book3s64).

Profiles (format 1 and 2) describe x86-64 machines: addresses below ``2**52``, memory blocks
of 128 MiB to 2 GiB (``MIN_MEMORY_BLOCK_SIZE`` = the section size, ``MAX_BLOCK_SIZE`` in
arch/x86/mm/init_64.c), node ids below ``MAX_NUMNODES`` (``NODES_SHIFT`` is at most 10,
mm/Kconfig), refcounts within an ``atomic_t``.
"""

from __future__ import annotations

import os
import resource
from typing import Dict, List, Optional, Tuple

MAX_PHYSMEM_BITS: Dict[str, int] = {"x86_64": 52, "aarch64": 52, "s390x": 53, "ppc64le": 51}
#: the bound used where the architecture is not known, and for profiles (x86-64's)
DEFAULT_PHYSMEM_BITS = 52
#: ``NODES_SHIFT`` is at most 10 (mm/Kconfig ``range 1 10``): ``MAX_NUMNODES`` 1024
MAX_NUMNODES = 1 << 10
#: a page's ``_refcount`` is an ``atomic_t`` (a C ``int``)
MAX_REFCOUNT = (1 << 31) - 1
#: x86-64's largest memory block (``MAX_BLOCK_SIZE``, arch/x86/mm/init_64.c)
MAX_MEMORY_BLOCK_SIZE = 2 << 30
#: a profile is a text file a person writes or ``--write-profile`` writes; a bigger file is
#: not a profile (a 64 TiB machine with a fill per block takes a few MiB)
MAX_PROFILE_BYTES = 64 << 20
#: seeds are unsigned 64-bit numbers (a TOML integer is a signed 64-bit one)
MAX_SEED = (1 << 64) - 1

#: What one ``--dask-local`` worker costs: a Dask nanny and a worker process with memplan and
#: numpy imported (~100 MiB each, resident), with headroom.
DASK_WORKER_BYTES = 256 << 20
#: More local Dask workers than this is no machine's useful number (one per CPU is the default).
MAX_DASK_LOCAL_WORKERS = 1024

#: What judging one memory block costs memplan, in bytes, whatever the command: the block
#: table's columns and the profile's per-block layout while it is built (~0.5 KiB), the
#: engine's per-block context, verdict and census columns (~1 KiB; measured at 1, 4 and 16 TiB
#: with benchmarks/make_profile.py machines), with headroom.
BYTES_PER_BLOCK = 2048
#: What any run needs whatever the machine: the interpreter, numpy and the commands, and one
#: chunk of pages (``memplan.core.machine.CHUNK_PAGES``) in every form the pipeline holds it.
BASE_BYTES = 192 << 20


def max_address(bits: int = DEFAULT_PHYSMEM_BITS) -> int:
    """One past the highest physical address a machine can have."""
    return 1 << bits


def needed_bytes(blocks: int, extra: int = 0) -> int:
    """Memory memplan needs to judge a machine of ``blocks`` memory blocks (``extra``: bytes of
    per-input structures that do not scale with blocks, e.g. a virtio-mem plugged map)."""
    return BASE_BYTES + blocks * BYTES_PER_BLOCK + extra


def _meminfo_available() -> Optional[int]:
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f.read(1 << 16).decode("ascii", "replace").splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_limit() -> Optional[int]:
    """What the memory cgroup (v2 ``memory.max``, v1 ``memory.limit_in_bytes``) still allows."""
    try:
        with open("/proc/self/cgroup", "rb") as f:
            lines = f.read(1 << 16).decode("ascii", "replace").splitlines()
    except OSError:
        return None
    candidates: List[Tuple[str, str]] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            candidates.append((f"/sys/fs/cgroup{parts[2]}", "memory.max"))
        elif "memory" in parts[1].split(","):
            candidates.append((f"/sys/fs/cgroup/memory{parts[2]}", "memory.limit_in_bytes"))
    for directory, name in candidates:
        try:
            with open(os.path.join(directory, name), "rb") as f:
                limit = f.read(64).strip()
            with open(os.path.join(directory, "memory.current" if name == "memory.max" else "memory.usage_in_bytes"),
                      "rb") as f:
                used = int(f.read(64).strip())
            if limit.isdigit() and int(limit) < 1 << 62:
                return max(int(limit) - used, 0)
        except (OSError, ValueError):
            continue
    return None


def _rlimit_headroom() -> Optional[int]:
    """What ``RLIMIT_AS`` and ``RLIMIT_DATA`` leave of this process's address space."""
    room: Optional[int] = None
    try:
        with open("/proc/self/status", "rb") as f:
            status = f.read(1 << 16).decode("ascii", "replace").splitlines()
        sizes = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in status
                 if line.startswith(("VmSize:", "VmData:"))}
    except (OSError, ValueError, IndexError):
        sizes = {}
    for limit, used in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
        soft, _ = resource.getrlimit(limit)
        if soft != resource.RLIM_INFINITY:
            left = max(soft - sizes.get(used, 0), 0)
            room = left if room is None else min(room, left)
    return room


def memory_budget() -> Optional[int]:
    """Bytes memplan may still use on this machine: the least of the memory available
    (``MemAvailable``), what its memory cgroup allows and what its resource limits leave;
    ``None`` when none of them is known."""
    known = [v for v in (_meminfo_available(), _cgroup_limit(), _rlimit_headroom()) if v is not None]
    return min(known) if known else None


def ascii_number(text: str, limit: int) -> Optional[int]:
    """``text`` read as a decimal count below ``limit`` the way the kernel's ``kstrtoul`` and
    util-linux read numbers: ASCII digits only (no full-width or other Unicode digits, no
    ``_``, sign or blanks); ``None`` when it is not one. Never converts more digits than
    ``limit`` has, so a 5000-digit word costs nothing (and hits no ``int`` digit limit)."""
    if not text or not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(limit)):
        return None
    value = int(digits)
    return value if value < limit else None
