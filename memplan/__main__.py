"""``python -m memplan`` and the ``memplan`` script (``[project.scripts]``): the command line.

``run()`` takes Ctrl-C and SIGTERM over before anything else is imported: a signal during
start-up ends memplan with one line and its exit status (130, 143), never a traceback. Nothing
needs cleaning up yet, so the start-up handlers end the process at once;
``memplan.cli.signals.handled()`` replaces them when the command starts.
"""

from __future__ import annotations

import os
import signal
import sys

#: signal -> (its line, its exit status: memplan.core.status.ExitStatus, not imported yet)
_AT_START: "dict[int, tuple[str, int]]" = {
    signal.SIGINT: ("memplan: interrupted\n", 130),
    signal.SIGTERM: ("memplan: terminated\n", 143),
}


def _ended_at_start(signum: int, frame: object) -> None:
    line, status = _AT_START[signum]
    try:
        os.write(2, line.encode())
    except OSError:
        pass
    os._exit(status)


#: recognised by memplan.cli.signals.handled(), which replaces the start-up handlers
_ended_at_start.memplan_startup = True  # type: ignore[attr-defined]


def _take_over() -> None:
    for signum in _AT_START:
        if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(signum, _ended_at_start)


#: only the ``memplan`` script and ``python -m memplan`` import this module: take the signals at once.
#: Not in a worker process: multiprocessing's fork server and spawned children import the script
#: again (as ``__mp_main__``); there the start-up handler would print "memplan: terminated" once
#: per worker when SIGTERM reaches the whole process group (``timeout``, ``systemctl stop``).
if "__mp_main__" not in sys.modules:
    _take_over()


def run() -> None:
    """The ``memplan`` entry point."""
    _take_over()
    from memplan.cli import main
    from memplan.cli.app import leave

    try:
        main(prog_name="memplan")
    except SystemExit as exc:
        if exc.code in (130, 143):  # ended by a signal, and said so: the process exits now, and a
            for signum in _AT_START:  # second Ctrl-C during the interpreter's shutdown changes nothing
                signal.signal(signum, signal.SIG_IGN)
            leave(exc.code, interrupted=True)
        leave(exc.code)  # the interpreter's teardown skipped: see memplan.cli.app.leave


if __name__ == "__main__":
    run()
