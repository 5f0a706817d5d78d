"""TOML reading with the standard-library parser (3.11+) or tomli (black's fallback)."""

from __future__ import annotations

import sys
from typing import Any, Dict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on old Pythons only
    import tomli as tomllib

TOMLDecodeError = tomllib.TOMLDecodeError


def loads(text: str) -> Dict[str, Any]:
    return tomllib.loads(text)
