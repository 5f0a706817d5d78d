"""What a command read its machine from: a profile, a saved sysroot tree, or this machine.

Every command's JSON document names its input the same way, with the two keys of
``InputSource.fields()``: ``source`` (the profile path or sysroot DIR as given, or ``live``) and
``source_kind`` (``profile``, ``sysroot`` or ``live``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Dict

#: ``source`` of a document about the machine memplan runs on (``--live``)
LIVE_SOURCE = "live"


class SourceKind(str, Enum):
    """How the machine was read."""

    #: a TOML profile (PROFILE)
    PROFILE = "profile"
    #: a saved snapshot tree (``--sysroot DIR``)
    SYSROOT = "sysroot"
    #: this machine's /sys and /proc (``--live``)
    LIVE = "live"


@dataclass(frozen=True)
class InputSource:
    """A command's input: ``path`` is the profile path or the sysroot DIR as given (``live``
    for ``--live``)."""

    path: str
    kind: SourceKind

    @classmethod
    def of(cls, path: str, sysroot: bool = False, live: bool = False) -> "InputSource":
        if live:
            return cls(LIVE_SOURCE, SourceKind.LIVE)
        return cls(path, SourceKind.SYSROOT if sysroot else SourceKind.PROFILE)

    def fields(self) -> Dict[str, str]:
        """The ``source`` and ``source_kind`` keys every JSON document starts with."""
        return {"source": self.path, "source_kind": self.kind.value}
