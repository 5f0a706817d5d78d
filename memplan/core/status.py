"""Exit statuses: the public contract scripts rely on (httpie-style ``ExitStatus``)."""

from __future__ import annotations

from enum import IntEnum, unique


@unique
class ExitStatus(IntEnum):
    """Process exit codes.

    ``SUCCESS`` the run completed (with ``--check``: everything asked for is possible).
    ``FAILURE`` with ``--check``: nothing is possible; for ``diff-semantics``: differences
    found (diff(1) convention).
    ``BAD_INPUT`` bad profile, bad range, unreadable file, bad option (click usage errors too).
    ``PARTIAL`` with ``--check``: some but not all (chmem's ``CHMEM_EXIT_SOMEOK``).
    """

    SUCCESS = 0
    FAILURE = 1
    BAD_INPUT = 2
    PARTIAL = 64


def check_status(achieved: int, asked: int) -> ExitStatus:
    """chmem's convention: 0 all, 64 some, 1 none (``asked == 0`` counts as all)."""
    if achieved >= asked:
        return ExitStatus.SUCCESS
    if achieved > 0:
        return ExitStatus.PARTIAL
    return ExitStatus.FAILURE
