"""Reading inputs safely and writing outputs atomically.

Inputs are opened without blocking and must be regular files: a FIFO, a device, a socket or a
directory where a file belongs is one clean ``InputError`` (a FIFO would block ``open()``
forever, ``/dev/zero`` would never end). Outputs are written to a temporary name beside the
target and renamed into place only when complete, so an interrupted run leaves nothing behind
and a re-run works.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import IO, Any, Iterator, Optional

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
    temporary file and leaves any previous ``path`` untouched. A target that exists and is not
    a regular file is never replaced: a character device or a FIFO (``/dev/stdout``,
    ``/dev/full``, a pipe) is written directly, anything else is an ``OSError``. The new file
    gets the mode a plain ``open()`` would give it (or the old file's); a symbolic link keeps
    pointing where it did (its target is replaced).
    """
    try:
        st: Optional[os.stat_result] = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is None or stat.S_ISREG(st.st_mode):
        # not before: /dev/stdout on a pipe resolves to "/proc/N/fd/pipe:[M]", which is no path
        path = os.path.realpath(path) if os.path.islink(path) else path
    if st is not None and not stat.S_ISREG(st.st_mode):
        if not (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
            raise IsADirectoryError(errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL,
                                    f"is {_not_regular(st.st_mode)}", path)
        with _open_direct(path, mode, encoding) as direct:
            yield direct
        return
    import tempfile  # here: reading a profile (start-up) needs neither tempfile nor shutil

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask())
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _open_direct(path: str, mode: str, encoding: str) -> IO[Any]:
    """A character device or a FIFO opened for writing without waiting: ``open()`` of a FIFO
    that no process reads would block forever (``O_NONBLOCK`` makes it fail with ``ENXIO``);
    blocking mode comes back once it is open, so a slow reader is waited for as usual."""
    flags = os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    if "a" in mode:
        flags |= os.O_APPEND
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise OSError(errno.ENXIO, "a FIFO that no process reads", path) from None
        raise
    try:
        os.set_blocking(fd, True)
        return os.fdopen(fd, mode.replace("x", "w"), encoding=None if "b" in mode else encoding)
    except BaseException:
        os.close(fd)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
    """Fill a temporary directory beside ``path``; on success it replaces ``path`` (which must
    not exist, or be a directory the caller has decided may be replaced)."""
    import shutil
    import tempfile

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
