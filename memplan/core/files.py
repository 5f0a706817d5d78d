"""Reading inputs safely and writing outputs atomically.

Inputs are opened without blocking and must be regular files: a FIFO, a device, a socket or a
directory where a file belongs is one clean ``InputError`` (a FIFO would block ``open()``
forever, ``/dev/zero`` would never end). Outputs are written to a temporary name beside the
target and renamed into place only when complete, so an interrupted run leaves nothing behind
and a re-run works.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from typing import IO, Any, Iterator

from memplan.core.errors import InputError

_KINDS = (
    (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str, what: str = "file") -> IO[bytes]:
    """Open ``path`` for binary reading; anything but a regular file is an ``InputError``.

    ``O_NONBLOCK`` keeps ``open()`` of a FIFO from waiting for a writer; it is cleared again
    once the file is known to be regular (``/proc`` and ``/sys`` files are regular files too).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise InputError(f"{path}: {what} is a directory, not a regular file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot open {what}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"{path}: {what} is {_not_regular(mode)}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_limited(path: str, limit: int, what: str = "file") -> bytes:
    """At most ``limit`` bytes of a regular file; a longer file is an ``InputError``."""
    with open_regular(path, what) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"{path}: {what} is longer than {limit} bytes")
    return data


@contextlib.contextmanager
def atomic_output(path: str, mode: str = "w", encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary file beside it, renamed into place on success.

    An exception (a full disk, Ctrl-C, SIGTERM turned into an exception) removes the
    temporary file and leaves any previous ``path`` untouched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
    """Fill a temporary directory beside ``path``; on success it replaces ``path`` (which must
    not exist, or be a directory the caller has decided may be replaced)."""
    parent = os.path.dirname(os.path.abspath(path))
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(path))}.", suffix=".tmp", dir=parent)
    try:
        yield tmp
        if os.path.isdir(path):
            old = tmp + ".old"
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
