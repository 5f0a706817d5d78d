"""Signals and the output stream: how a run that cannot finish ends (``ExitStatus``).

* SIGINT (Ctrl-C): Python raises ``KeyboardInterrupt``; memplan prints ``memplan: interrupted``
  and exits 130, also during start-up (``memplan.cli`` catches it around its imports).
* SIGTERM: ``handled()`` installs a handler that raises ``Terminated`` in the main thread, so
  clean-ups run (``finally``, ``except BaseException``); then ``memplan: terminated``, exit 143.
  Before the handler is installed the default action applies: the shell sees 143 as well.
* stdout: ``handled()`` puts a guard in front of ``sys.stdout`` that turns a failed write or
  flush into ``OutputError`` (a ``BaseException``, so neither click nor a command's
  ``except Exception`` mistakes it for something else). A reader that went away (EPIPE,
  ``memplan ... | head``) ends the run quietly with 141, as SIGPIPE would; any other error
  (a closed stdout, ``/dev/full``) is one ``memplan: error:`` line and exit 74 (``EX_IOERR``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any, Dict, Iterator, List, NoReturn, Optional

from memplan.core.errors import Terminated
from memplan.core.status import ExitStatus


class OutputError(BaseException):
    """Writing to stdout failed (``cause`` is the ``OSError``)."""

    def __init__(self, cause: OSError, stream: Any = None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        #: the stream that failed (``None``: not known)
        self.stream = stream

    @property
    def broken_pipe(self) -> bool:
        return isinstance(self.cause, BrokenPipeError) or self.cause.errno == errno.EPIPE


class GuardedStdout:
    """``sys.stdout`` as it was, except that its write errors become ``OutputError``.

    Every other attribute (``isatty``, ``encoding``, ``fileno``, ``buffer``...) is the stream's.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise OutputError(exc, self._stream) from None

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise OutputError(exc, self._stream) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guarded_stream() -> Any:
    """The stream behind the stdout guard (``None`` outside ``handled()``)."""
    return sys.stdout._stream if isinstance(sys.stdout, GuardedStdout) else None


class ClosedStdout:
    """Stands for a stdout that was closed when memplan started (``memplan ... >&-``): Python
    then sets ``sys.stdout`` to ``None``. Writing to it fails with ``EBADF``."""

    encoding = "utf-8"
    errors = "strict"

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))


def _reserve_fd1() -> None:
    """Keep file descriptor 1 taken (``/dev/null``) when it was closed at start-up: a file memplan
    opens must never become fd 1, which a worker process would inherit as its stdout."""
    try:
        os.fstat(1)
    except OSError:
        fd = os.open(os.devnull, os.O_WRONLY)
        if fd != 1:
            os.dup2(fd, 1)
            os.close(fd)


def _discard_pending_output(stream: Any) -> None:
    """After a failed write to the real stdout, point fd 1 at ``/dev/null``: the interpreter's
    final flush then writes what is still buffered nowhere, instead of printing ``Exception
    ignored ...`` (Python's own recipe for SIGPIPE)."""
    try:
        if stream is not sys.__stdout__ or stream is None or stream.fileno() != 1:
            return
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.close(fd)
    except (OSError, ValueError, AttributeError):
        pass


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside the block act when it ends.

    For imports: a module cut off half-way stays half-initialised, and Python 3.11 turns a
    ``KeyboardInterrupt`` raised while a class is created (a dataclass field's
    ``__set_name__``) into a ``RuntimeError`` traceback. Importing a command takes a few hundred
    milliseconds; Ctrl-C then acts right after. Off the main thread nothing changes."""
    if not in_main_thread():
        yield
        return
    caught: List[int] = []

    def hold(signum: int, frame: Optional[FrameType]) -> None:
        caught.append(signum)

    saved: Dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        if callable(signal.getsignal(signum)):  # a Python handler (not SIG_IGN, SIG_DFL)
            saved[signum] = signal.signal(signum, hold)
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
    if caught:
        saved[caught[0]](caught[0], None)  # raises KeyboardInterrupt or Terminated (or exits)


def _raise_terminated(signum: int, frame: Optional[FrameType]) -> None:
    raise Terminated()


#: Ctrl-C seen during the run / said (``finish()``): a ``KeyboardInterrupt`` raised where Python
#: cannot pass it on (a weakref callback of the import system: "Exception ignored in ...") is
#: lost, and the run would go on and exit 0; ``interrupt_lost()`` tells the run it was asked to stop.
_SIGINT = {"seen": False, "said": False}


def _raise_interrupt(signum: int, frame: Optional[FrameType]) -> None:
    _SIGINT["seen"] = True
    raise KeyboardInterrupt()


def _unraisable(previous: Any) -> Any:
    """``sys.unraisablehook`` that takes a lost ``KeyboardInterrupt`` as the Ctrl-C it was (no
    "Exception ignored in" traceback; the run ends with its one line); anything else as before."""
    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            _SIGINT["seen"] = True
            return
        previous(unraisable)
    return hook


def interrupt_lost() -> bool:
    """A Ctrl-C reached the run but no ``memplan: interrupted`` was said for it."""
    return _SIGINT["seen"] and not _SIGINT["said"]


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """The run's stdout guard and SIGTERM handler (the previous ones come back at the end)."""
    saved_stdout = sys.stdout
    stream: Any = sys.stdout
    if stream is None:
        _reserve_fd1()
        stream = ClosedStdout()
    sys.stdout = GuardedStdout(stream)
    saved: Dict[int, Any] = {}
    saved_hook = sys.unraisablehook
    if in_main_thread():
        saved[signal.SIGTERM] = signal.signal(signal.SIGTERM, _raise_terminated)
        if getattr(signal.getsignal(signal.SIGINT), "memplan_startup", False):  # memplan.__main__.run
            _SIGINT.update(seen=False, said=False)
            saved[signal.SIGINT] = signal.signal(signal.SIGINT, _raise_interrupt)
            sys.unraisablehook = _unraisable(saved_hook)
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        sys.unraisablehook = saved_hook
        sys.stdout = saved_stdout


def finish(exc: BaseException) -> Optional[int]:
    """The exit status for an interruption or an output error, after its one stderr line
    (none for a broken pipe); ``None`` for any other exception."""
    if isinstance(exc, OutputError):
        if exc.stream is sys.__stdout__:  # never another process's fd 1 when memplan runs in-process
            _discard_pending_output(exc.stream)
        if exc.broken_pipe:
            return int(ExitStatus.BROKEN_PIPE)
        reason = exc.cause.strerror or str(exc.cause)
        _say(f"memplan: error: cannot write to stdout: {reason}")
        return int(ExitStatus.IO_ERROR)
    if isinstance(exc, KeyboardInterrupt):
        _SIGINT["said"] = True
        _say("memplan: interrupted")
        return int(ExitStatus.INTERRUPTED)
    if isinstance(exc, Terminated):
        _say("memplan: terminated")
        return int(ExitStatus.TERMINATED)
    return None


#: the longest stderr line memplan prints (a 100 kB value in a message is cut in the middle)
MAX_LINE = 1024
_CONTROL = {c: f"\\x{c:02x}" for c in list(range(0x20)) + [0x7f]}


def one_line(text: str, limit: int = MAX_LINE) -> str:
    """``text`` safe to print as one terminal line: control characters (ESC, newline, ...)
    escaped as ``\\x1b`` the way lsmem --raw escapes them, and at most ``limit`` characters
    (the middle of a longer text replaced by a note of how much was left out)."""
    text = text.translate(_CONTROL)
    if len(text) > limit:
        head, tail = limit * 2 // 3, limit // 4
        text = f"{text[:head]}...[{len(text) - head - tail} characters]...{text[-tail:]}"
    return text


def _say(line: str) -> None:
    try:
        err = sys.stderr
        if err is not None:
            err.write(line + "\n")
            err.flush()
    except (OSError, ValueError):
        pass


def interrupted_at_start() -> NoReturn:
    """Ctrl-C while memplan's own modules are still being imported (before ``main()`` runs)."""
    _say("memplan: interrupted")
    raise SystemExit(int(ExitStatus.INTERRUPTED))

