"""numpy array types used across memplan (``numpy.typing.NDArray`` aliases).

One byte of page kind per page (``KindArray``), per-page masks (``BoolArray``), refcounts
(``RefcountArray``), pfns, block ids and counters (``IntArray``), ``/proc/kpageflags`` and
``/proc/kpagecount`` entries (``U64Array``), one snapshot ``PageClass`` byte per pfn (``ClassArray``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

BoolArray = NDArray[np.bool_]
KindArray = NDArray[np.uint8]
RefcountArray = NDArray[np.int32]
IntArray = NDArray[np.int64]
U64Array = NDArray[np.uint64]
ClassArray = NDArray[np.uint8]
#: an array whose dtype varies with the caller (numpy's generic integer/bool mixes)
AnyArray = NDArray[Any]


def unique_sorted(values: AnyArray) -> AnyArray:
    """``np.unique(values)`` for a 1-D array without a mask: sorted, each value once. numpy 2's
    ``np.unique`` asks ``np.ma.is_masked()`` and so imports ``numpy.ma`` (7 ms of start-up)."""
    ordered = np.sort(values, kind="stable")
    if len(ordered) < 2:
        return ordered
    first = np.empty(len(ordered), dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first]
