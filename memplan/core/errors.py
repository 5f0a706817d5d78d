"""User-facing errors: each one becomes a single stderr line and exit status 2."""

from __future__ import annotations

from typing import Iterable, Optional


class MemplanError(Exception):
    """An error caused by user input (a file, a key, a value), never by memplan itself.

    The CLI prints ``memplan: error: <message>`` and exits with ``ExitStatus.BAD_INPUT``.
    """

    def __init__(self, message: str, *, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class ProfileError(MemplanError):
    """A machine profile is malformed: names the file, the key and the value."""

    def __init__(self, path: str, key: str, message: str, *, hint: Optional[str] = None) -> None:
        self.path = path
        self.key = key
        super().__init__(f"{path}: {key}: {message}" if key else f"{path}: {message}", hint=hint)


class InputError(MemplanError):
    """A snapshot tree or another input file is missing, unreadable or corrupt."""


class UsageError(MemplanError):
    """A command-line value is invalid (bad range, unknown variant, ...)."""


def did_you_mean(value: str, choices: Iterable[str]) -> Optional[str]:
    """Return ``"did you mean 'x'?"`` for the closest choice, or ``None``."""
    import difflib  # only for a suggestion (start-up stays fast)

    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


class Terminated(BaseException):
    """SIGTERM, raised in the main thread by the handler ``memplan.cli.signals`` installs (as
    Python raises ``KeyboardInterrupt`` for SIGINT): ``finally`` blocks and ``except
    BaseException`` clean-ups run (worker processes stopped, temporary files removed), then
    the CLI exits with ``ExitStatus.TERMINATED``."""
