"""What a Linux machine can have: the bounds every number from an input is checked against.

Validated once, at the edge (profile reader, snapshot reader, command-line options), so the
model never allocates for, loops over or overflows on a number no kernel could produce.
"""

from __future__ import annotations

from typing import Dict

#: ``MAX_PHYSMEM_BITS`` per architecture (arch/*/include/asm/sparsemem.h): physical addresses
#: stay below ``1 << bits``. x86-64 with 5-level paging: 52; arm64 with 52-bit PAs (LPA/LPA2):
#: 52; s390: 46 (``MAX_PHYSMEM_BITS`` in arch/s390); ppc64: 51 (hash) / 52 (radix).
MAX_PHYSMEM_BITS: Dict[str, int] = {"x86_64": 52, "aarch64": 52, "s390x": 46, "ppc64le": 52}
#: the bound used where the architecture is not known (x86-64's)
DEFAULT_PHYSMEM_BITS = 52
#: ``NODES_SHIFT`` is at most 10 on x86-64 (``MAX_NUMNODES`` 1024)
MAX_NUMNODES = 1 << 10
#: a page's ``_refcount`` is an ``atomic_t`` (a C ``int``)
MAX_REFCOUNT = (1 << 31) - 1


def max_address(bits: int = DEFAULT_PHYSMEM_BITS) -> int:
    """One past the highest physical address a machine can have."""
    return 1 << bits
