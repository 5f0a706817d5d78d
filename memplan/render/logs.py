"""Kernel log entries as short text lines (shared by the reports; no rich)."""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from memplan.results import LogEntry, LogLevel


def log_lines(entries: Sequence[LogEntry]) -> List[str]:
    """The kernel log without the pr_debug reason line; per-page messages merged, the pfn
    shown in the kernel's format: ``pr_warn "failed to isolate pfn %lx" x10``."""
    seen: Dict[Tuple[str, str], int] = {}
    for e in entries:
        if e.level is LogLevel.PR_DEBUG:
            continue
        text = e.text.replace(f"pfn {e.pfn:x}", "pfn %lx") if e.pfn is not None else e.text
        seen[(e.level.value, text)] = seen.get((e.level.value, text), 0) + e.count
    return [f"{level} \"{text}\"" + (f" x{n}" if n > 1 else "") for (level, text), n in seen.items()]
