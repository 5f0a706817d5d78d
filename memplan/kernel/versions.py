"""Kernel-version gates, drgn-style: each rule names the release that introduced it."""

from __future__ import annotations

import re
from typing import Optional, Tuple

#: NUMA node notifiers in online_pages()/offline_pages() ("node notifier failure"): v6.17.
#: The series (NODE_REMOVING_LAST_MEMORY, node_notify()) and Dan Carpenter's follow-up that sets
#: the reason string are in mm/memory_hotplug.c at ML-NEW (torvalds/linux @ c17ee635); the exact
#: first release is UNVERIFIED (mm tree, mid-2025): a kernel older than 6.17 is assumed not to have it.
NODE_NOTIFIER = (6, 17)
#: PG_movable_ops (an alias of PG_uptodate) marks movable_ops pages; kpageflags shows it as
#: KPF_UPTODATE on PageOffline/zsmalloc pages (page_has_movable_ops(), movable_ops rework): v6.17.
MOVABLE_OPS_FLAG = (6, 17)


def parse_release(release: Optional[str]) -> Optional[Tuple[int, int]]:
    """``"6.1.0-56-amd64"`` -> ``(6, 1)``; ``None`` or unparsable -> ``None`` (newest rules)."""
    if not release:
        return None
    match = re.match(r"\s*(\d+)\.(\d+)", release)
    return (int(match.group(1)), int(match.group(2))) if match else None


def at_least(release: Optional[str], version: Tuple[int, int]) -> bool:
    """Whether a kernel release has a feature introduced in ``version`` (unknown: yes)."""
    parsed = parse_release(release)
    return parsed is None or parsed >= version
