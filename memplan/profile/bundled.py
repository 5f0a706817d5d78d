"""The profiles that ship with memplan: ``profiles/*.toml`` of the checkout, installed as
package data ``memplan/profiles/`` by ``setup.py`` (so ``memplan profiles`` works both from a
checkout and after ``pip install .``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

from memplan.profile.reader import profile_description

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class BundledProfile:
    name: str
    path: str
    description: str


def profile_dirs() -> List[str]:
    """Where bundled profiles may be: the installed package data, then the checkout."""
    return [os.path.join(_PACKAGE, "profiles"), os.path.join(os.path.dirname(_PACKAGE), "profiles")]


def bundled_profiles(dirs: Optional[Sequence[str]] = None) -> List[BundledProfile]:
    """Every ``*.toml`` of the first profile directory that exists, by name."""
    for directory in dirs if dirs is not None else profile_dirs():
        if not os.path.isdir(directory):
            continue
        names = sorted(f for f in os.listdir(directory) if f.endswith(".toml"))
        if names:
            return [BundledProfile(os.path.splitext(f)[0], os.path.join(directory, f),
                                   profile_description(os.path.join(directory, f))) for f in names]
    return []


def missing_profile_hint(path: str) -> Optional[str]:
    """For a profile path that does not exist: the bundled profile it probably means."""
    if os.path.exists(path):
        return None
    wanted = os.path.splitext(os.path.basename(path))[0]
    for profile in bundled_profiles():
        if profile.name == wanted:
            return f"did you mean {os.path.relpath(profile.path)}? memplan profiles lists the bundled profiles"
    return "memplan profiles lists the bundled profiles"
