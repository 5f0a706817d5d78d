"""The ``memplan`` command line: thin click commands that parse, call the core and render.

Only the group is imported here; each command's module is imported when the command is used
(``memplan.cli.app.COMMANDS``), so ``memplan --help`` and ``--version`` start instantly.
"""

from __future__ import annotations

try:
    from memplan.cli.app import main
except KeyboardInterrupt:  # Ctrl-C during start-up: one line and 130, never a traceback
    from memplan.cli.signals import interrupted_at_start

    interrupted_at_start()

__all__ = ["main"]
