"""Opening input files without blocking (issue 14 §3): a saved tree's files must be regular files.

A FIFO, a character device (``/dev/zero``), a socket or a directory where a file belongs would
block forever or never end; ``open_regular()`` opens with ``O_NONBLOCK`` (a FIFO without a
writer opens at once) and refuses anything but a regular file with one line naming it. The
live ``/proc`` and ``/sys`` files are regular files too (``S_IFREG``), so the check holds there.
"""

from __future__ import annotations

import errno
import os
import stat

from memplan.core.errors import InputError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class NeedsRootError(InputError):
    """Opening failed with EPERM or EACCES: the file needs privileges this process lacks (a live
    ``/proc/kpageflags`` read without root). Live reads degrade on it; saved trees refuse."""


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str, display: str) -> int:
    """A read-only descriptor of ``path`` (blocking mode restored), which must be a regular file.

    Raises ``FileNotFoundError`` (missing or dangling link) for the caller to judge, and
    ``InputError`` for anything else: unreadable, a loop of links, or not a regular file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        raise
    except (PermissionError, OSError) as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            raise NeedsRootError(f"cannot read {display}: {exc.strerror or exc} (reading it needs root)") from None
        raise InputError(f"cannot read {display}: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"{display}: is {kind_of(mode)}, not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd
