"""The ``memplan`` command line: thin click commands that parse, call the core and render."""

from __future__ import annotations

from memplan.cli import diff as _diff  # noqa: F401  (registers the command)
from memplan.cli import explain as _explain  # noqa: F401  (registers the command)
from memplan.cli import fleet as _fleet  # noqa: F401
from memplan.cli import map as _map  # noqa: F401  (registers the command)
from memplan.cli import plan as _plan  # noqa: F401
from memplan.cli import profiles as _profiles  # noqa: F401  (registers the command)
from memplan.cli import simulate as _simulate  # noqa: F401  (registers the command)
from memplan.cli import snapshot as _snapshot  # noqa: F401  (registers the command)
from memplan.cli import unplug as _unplug  # noqa: F401
from memplan.cli.app import main

__all__ = ["main"]
