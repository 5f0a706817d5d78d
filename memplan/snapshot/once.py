"""One reading of a live machine per command (issue 13 §5).

``/proc/kpageflags`` changes while it is read: a command that looks at a page twice (the
pessimistic second reading of simulate, both sides of ``diff-semantics`` and ``map --diff``,
explain's trace) would judge two different machines. ``ReadOnce`` wraps a live page file: the
first read of a chunk copies it from ``/proc`` into an anonymous temporary file, and every read
is served from that copy. Each pfn is read from the kernel at most once, only where a command
looks (no up-front copy of the whole machine), and every later look sees the same snapshot.
Saved trees do not change and are read directly.
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional, Set

import numpy as np

from memplan.core.arrays import U64Array
from memplan.core.errors import InputError
from memplan.snapshot.kpageflags import CHUNK_PFNS, KpageFile

#: pfns copied at a time (one chunk of the reader: 4 MiB of entries)
ONCE_CHUNK = CHUNK_PFNS


class ReadOnce:
    """A live ``KpageFile`` read at most once per chunk; later reads come from the copy."""

    def __init__(self, source: KpageFile) -> None:
        self.source = source
        self.display = source.display
        self.path = source.path
        self.compressed = source.compressed
        self._copied: Set[int] = set()
        #: pfn where the source ended (``None``: not reached yet)
        self._end: Optional[int] = None
        try:
            self._copy = tempfile.TemporaryFile(prefix="memplan-kpage-")
        except OSError as exc:
            raise InputError(f"cannot create a temporary copy of {self.display}: {exc.strerror or exc}") from None

    def size_hint(self) -> Optional[int]:
        return self.source.size_hint()

    def _ensure(self, chunk: int) -> None:
        if chunk in self._copied:
            return
        start = chunk * ONCE_CHUNK
        if self._end is not None and start >= self._end:
            self._copied.add(chunk)
            return
        data = self.source.read(start, ONCE_CHUNK)
        if len(data) < ONCE_CHUNK:
            self._end = start + len(data)
        try:
            os.pwrite(self._copy.fileno(), data.astype("<u8", copy=False).tobytes(), start * 8)
        except OSError as exc:
            raise InputError(f"cannot keep a copy of {self.display}: {exc.strerror or exc}") from None
        self._copied.add(chunk)

    def read(self, start_pfn: int, count: int) -> U64Array:
        """Entries ``[start_pfn, start_pfn + count)`` as first read; fewer only where the file ends."""
        if count <= 0:
            return np.empty(0, dtype="<u8")
        for chunk in range(start_pfn // ONCE_CHUNK, (start_pfn + count - 1) // ONCE_CHUNK + 1):
            self._ensure(chunk)
        stop = start_pfn + count if self._end is None else min(start_pfn + count, self._end)
        if stop <= start_pfn:
            return np.empty(0, dtype="<u8")
        buffer = np.empty(stop - start_pfn, dtype="<u8")
        view = buffer.data.cast("B")
        got = 0
        while got < len(view):
            n = os.preadv(self._copy.fileno(), [view[got:]], start_pfn * 8 + got)
            if n <= 0:
                break
            got += n
        if got < len(view):  # a sparse tail the source never wrote: it ended there
            buffer = buffer[: got // 8]
        return buffer

    def close(self) -> None:
        self.source.close()
        self._copy.close()

    def __del__(self) -> None:
        try:
            self._copy.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass
