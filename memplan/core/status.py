"""Exit statuses: the public contract scripts rely on (httpie-style ``ExitStatus``).

Each status means one thing, in every command and every output format (table, JSON, CSV):

====  ==========================================================================================
   0  the run completed (with ``--check``: everything asked for is possible)
   1  with ``--check``: nothing is possible; ``diff-semantics``: differences found (as diff(1))
   2  bad input: a profile, tree, file or option memplan cannot use, a click usage error, or
      ``fleet`` with no host it could judge; always one ``memplan: error:`` line on stderr
  64  with ``--check``: some but not all is possible (chmem's ``CHMEM_EXIT_SOMEOK``)
  74  stdout cannot be written (closed, ``/dev/full``, an I/O error): ``EX_IOERR`` of sysexits.h
 130  interrupted by SIGINT (Ctrl-C): one ``memplan: interrupted`` line (128 + 2, as a shell reports)
 141  stdout is a pipe whose reader went away (``memplan ... | head``): quiet, as a process that
      SIGPIPE killed (128 + 13)
 143  terminated by SIGTERM: one ``memplan: terminated`` line (128 + 15)
====  ==========================================================================================
"""

from __future__ import annotations

from enum import IntEnum, unique


@unique
class ExitStatus(IntEnum):
    """Process exit codes (see the module docstring for the full table).

    ``SUCCESS`` the run completed (with ``--check``: everything asked for is possible).
    ``FAILURE`` with ``--check``: nothing is possible; for ``diff-semantics``: differences
    found (diff(1) convention).
    ``BAD_INPUT`` bad profile, bad range, unreadable file, bad option (click usage errors too),
    ``fleet`` with no host judged.
    ``PARTIAL`` with ``--check``: some but not all (chmem's ``CHMEM_EXIT_SOMEOK``).
    ``IO_ERROR`` stdout cannot be written (sysexits.h ``EX_IOERR``).
    ``INTERRUPTED`` SIGINT, ``BROKEN_PIPE`` SIGPIPE/EPIPE, ``TERMINATED`` SIGTERM: 128 + the signal.
    """

    SUCCESS = 0
    FAILURE = 1
    BAD_INPUT = 2
    PARTIAL = 64
    IO_ERROR = 74
    INTERRUPTED = 130
    BROKEN_PIPE = 141
    TERMINATED = 143


def check_status(achieved: int, asked: int) -> ExitStatus:
    """chmem's convention: 0 all, 64 some, 1 none (``asked == 0`` counts as all)."""
    if achieved >= asked:
        return ExitStatus.SUCCESS
    if achieved > 0:
        return ExitStatus.PARTIAL
    return ExitStatus.FAILURE
