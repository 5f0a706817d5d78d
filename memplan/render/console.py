"""The consoles memplan prints on, and how wide they are.

Tables never depend on the width (``memplan.render.grid`` draws them at their natural width);
only ``map`` wraps its grid of cells at it. The width is ``COLUMNS`` when that is a positive
decimal number, else the size of the terminal on stdout, else that of the terminal on stderr
(so ``memplan map | less`` keeps the terminal's width and its bytes match the terminal's),
else 80 columns (libsmartcols' width for output that is not a terminal). Anything else in
``COLUMNS`` (``abc``, ``0``, ``-5``, ``²``) is ignored. rich itself never reads ``COLUMNS`` or
``LINES`` here: both dimensions are always passed explicitly.

Colour only on a terminal: rich decides from stdout, ``NO_COLOR`` and ``FORCE_COLOR``.
"""

from __future__ import annotations

import os
import re
import sys
from typing import IO, Mapping, Optional, Union

from rich.console import Console
from rich.text import Text

#: Output that is no terminal and has no valid ``COLUMNS``: libsmartcols' width.
DEFAULT_WIDTH = 80
#: The widest console memplan draws for (a larger ``COLUMNS`` is clamped).
MAX_WIDTH = 1 << 16
_DIGITS = re.compile(r"[0-9]+")


def columns_from_environment(environ: Optional[Mapping[str, str]] = None) -> Optional[int]:
    """``COLUMNS`` if it is a positive decimal number (ASCII digits only), else ``None``."""
    value = (os.environ if environ is None else environ).get("COLUMNS", "").strip()
    if not _DIGITS.fullmatch(value):
        return None
    width = int(value)
    return min(width, MAX_WIDTH) if width > 0 else None


def _terminal_width(stream: Optional[IO[str]]) -> Optional[int]:
    try:
        if stream is None or not stream.isatty():
            return None
        width = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return None
    return min(width, MAX_WIDTH) if width > 0 else None


def output_width(environ: Optional[Mapping[str, str]] = None) -> int:
    """The width ``map`` wraps at (see the module docstring)."""
    return (columns_from_environment(environ) or _terminal_width(sys.stdout) or _terminal_width(sys.stderr)
            or DEFAULT_WIDTH)


def make_console(stderr: bool = False, file: Optional[IO[str]] = None) -> Console:
    """A console on stdout (or stderr) with an explicit, valid width and height, no
    highlighting and no soft wrapping surprises."""
    return Console(file=file, stderr=stderr, width=output_width(), height=25, highlight=False, soft_wrap=False)


def print_line(console: Console, text: Union[str, Text] = "") -> None:
    """One line, never wrapped or cropped (the terminal may wrap it; memplan never does),
    without markup, highlighting or emoji codes."""
    console.print(text, soft_wrap=True, markup=False, highlight=False, emoji=False)
