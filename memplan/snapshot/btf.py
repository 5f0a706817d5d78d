"""Does the kernel of a snapshot know ``PG_offline_skippable``? Ask its BTF.

With ``CONFIG_DEBUG_INFO_BTF`` the kernel exports its own types as ``/sys/kernel/btf/vmlinux``.
Every enumerator of ``enum pageflags`` is encoded by name, so a kernel built with the posted
patch ("PG_offline_skippable = PG_owner_2", include/linux/page-flags.h) holds the string
``PG_offline_skippable`` in its BTF string section: what ``grep -a PG_offline_skippable
/sys/kernel/btf/vmlinux`` finds. That settles the semantics when no fake-offline page is there
to read ``KPF_OWNER_2`` from (memplan.snapshot.reader.detect_semantics()).

The file is binary and a few MiB on distribution kernels: it is searched in chunks, up to
``MAX_BTF_BYTES``; a longer file is left unsearched rather than read without bound.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

from memplan.core.errors import InputError
from memplan.core.files import open_regular
from memplan.snapshot.sysroot import Tree

#: Where the kernel exports its BTF, relative to the sysroot.
BTF_PATH = "sys/kernel/btf/vmlinux"
#: The enumerator the posted patch adds to ``enum pageflags``.
MARKER = b"PG_offline_skippable"
#: vmlinux BTF is 4-8 MiB on distribution kernels; anything far beyond is not kernel BTF.
MAX_BTF_BYTES = 64 << 20
_CHUNK = 1 << 20


def btf_names_skippable(tree: Tree) -> Tuple[Optional[bool], str]:
    """Whether the tree's ``sys/kernel/btf/vmlinux`` names ``PG_offline_skippable`` (``None``:
    there is no such file, or it could not be searched), and what was found, for the reason."""
    shown = tree.display(BTF_PATH)
    if not tree.exists(BTF_PATH):
        return None, f"no {shown} to look in"
    try:
        with open_regular(tree.path(BTF_PATH), "BTF") as handle:
            found = _search(handle.read)
    except InputError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"cannot read {shown}: {exc.strerror or exc}"
    if found is None:
        return None, f"{shown} is longer than {MAX_BTF_BYTES >> 20} MiB: not searched"
    verb = "names" if found else "does not name"
    return found, f"{shown} {verb} PG_offline_skippable"


def _search(read: Callable[[int], bytes]) -> Optional[bool]:
    """``MARKER`` in the stream (``None``: not found within ``MAX_BTF_BYTES`` and more follows)."""
    keep = len(MARKER) - 1
    tail = b""
    total = 0
    while True:
        chunk = read(_CHUNK)
        if not chunk:
            return False
        if MARKER in chunk or MARKER in tail + chunk[:keep]:  # also across the chunk boundary
            return True
        total += len(chunk)
        if total >= MAX_BTF_BYTES:
            return None if read(1) else False
        tail = chunk[-keep:] if len(chunk) >= keep else (tail + chunk)[-keep:]
