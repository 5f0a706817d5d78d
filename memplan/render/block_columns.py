"""The lsmem-style column sets of the block listings: ``simulate`` (one ``BlockRow`` per block:
what sysfs shows and, where judged, the verdict) and ``diff-semantics`` (per ``BlockDifference``),
for ``memplan.render.lsmem``.

lsmem's own columns keep lsmem's names, cells and JSON types (sys-utils/lsmem.c): ``RANGE``,
``SIZE``, ``STATE`` (``online``, ``offline``, ``on->off``), ``REMOVABLE`` (``yes``/``no``,
empty unless online), ``BLOCK``, ``NODE``, ``ZONES`` (the ``valid_zones`` words through lsmem's
zone names joined by ``/``: ``Normal/Movable``, ``None``) and, on s390 machines with
``/sys/firmware/memory``, ``CONFIGURED`` and ``MEMMAP-ON-MEMORY``. With only these columns a
listing needs no verdict: it is lsmem's.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, FrozenSet, NamedTuple, Optional, Tuple

from memplan.core.model import BlockState, Errno
from memplan.core.results import BlockVerdict, Confidence, Outcome, Reason, Step
from memplan.diff.types import BlockDifference
from memplan.render.block_facts import BlockFacts
from memplan.render.cells import RESULT_STYLE, culprit_text, worst_confidence
from memplan.render.lsmem import Column, ColumnSet, JsonType, Merge, Selection, TableOptions


class BlockRow(NamedTuple):
    """One block of a listing: what lsmem sees and, when judged, the verdict."""

    facts: BlockFacts
    verdict: Optional[BlockVerdict] = None


def _dash(value: Any) -> str:
    if value is None:
        return ""
    return str(getattr(value, "value", value))


def _result_style(value: Optional[Outcome]) -> Optional[str]:
    return RESULT_STYLE.get(value) if value is not None else None


def _verdict(get: Callable[[BlockVerdict], Any]) -> Callable[[BlockRow], Any]:
    return lambda r: get(r.verdict) if r.verdict is not None else None


def page_count(v: BlockVerdict, attr: str) -> Optional[int]:
    """One of the verdict's page counts; ``None`` when the input holds no pages for the block
    (its counts are stand-ins: ``-`` in tables, ``null`` in JSON). ``total`` is always known."""
    if not v.pages_known and attr != "total":
        return None
    return int(getattr(v.pages, attr))


def _count(name: str, attr: str, help: str, aliases: Tuple[str, ...] = ()) -> Column[BlockRow]:
    # Merge.SUM never merges a row of unknown counts with a row of known ones (lsmem._Merger).
    return Column(name, lambda r: page_count(r.verdict, attr) if r.verdict is not None else 0, Merge.SUM, help,
                  justify="right", aliases=aliases, json=JsonType.NUMBER)


#: lsmem's zone names (``zone_names[]``; ``zone_name_to_id()`` compares without case)
LSMEM_ZONES = ("DMA", "DMA32", "Normal", "Highmem", "Movable", "Device", "None")
_LSMEM_ZONE = {z.lower(): z for z in LSMEM_ZONES}
#: lsmem's ``MAX_NR_ZONES``: at most this many ``valid_zones`` words are read
_MAX_NR_ZONES = 8
_STATE_TEXT = {BlockState.ONLINE: "online", BlockState.OFFLINE: "offline", BlockState.GOING_OFFLINE: "on->off"}


def lsmem_zones(words: Tuple[str, ...]) -> Tuple[str, ...]:
    """``valid_zones`` words as lsmem names them (``none`` -> ``None``, unknown -> ``Unknown``)."""
    return tuple(_LSMEM_ZONE.get(w.lower(), "Unknown") for w in words[:_MAX_NR_ZONES])


def _zones_split_key(zones: Tuple[str, ...]) -> Any:
    """lsmem never merges a block with an unknown zone (``is_mergeable()``)."""
    return object() if "Unknown" in zones else zones


def _yes_no(value: Optional[bool]) -> str:
    return "" if value is None else ("yes" if value else "no")


#: lsmem's columns, in lsmem's order
LSMEM_COLUMNS: Tuple[Column[BlockRow], ...] = (
    Column("RANGE", lambda r: (r.facts.start, r.facts.end), Merge.RANGE, "start and end address of the memory range"),
    Column("SIZE", lambda r: r.facts.size, Merge.SUM, "size of the memory range", justify="right", size=True,
           json=JsonType.NUMBER),
    Column("STATE", lambda r: r.facts.state, Merge.SPLIT, "online status of the memory range",
           justify="right", fmt=lambda s: _STATE_TEXT.get(s, "?")),
    Column("REMOVABLE", lambda r: r.facts.removable if r.facts.state is BlockState.ONLINE else None, Merge.SPLIT,
           "memory is removable (online blocks)", justify="right", fmt=_yes_no, json=JsonType.BOOLEAN),
    Column("BLOCK", lambda r: r.facts.block, Merge.KEY, "memory block number or blocks range", justify="right"),
    Column("NODE", lambda r: r.facts.node, Merge.SPLIT, "numa node of memory", justify="right", fmt=_dash,
           json=JsonType.NUMBER),
    Column("ZONES", lambda r: lsmem_zones(r.facts.zones), Merge.SPLIT, "valid zones for the memory range",
           justify="right", fmt="/".join, split_key=_zones_split_key),
    Column("CONFIGURED", lambda r: r.facts.configured, Merge.SPLIT,
           "configuration status of the memory range (s390)", justify="right", fmt=_yes_no),
    Column("MEMMAP-ON-MEMORY", lambda r: r.facts.memmap_on_memory, Merge.SPLIT,
           "memmap-on-memory status of the memory range (s390)", justify="right", fmt=_yes_no),
)
LSMEM_NAMES: FrozenSet[str] = frozenset(c.name for c in LSMEM_COLUMNS)
#: lsmem's default columns
LSMEM_DEFAULT = ("RANGE", "SIZE", "STATE", "REMOVABLE", "BLOCK")

_L: Dict[str, Column[BlockRow]] = {c.name: c for c in LSMEM_COLUMNS}

VERDICT_COLUMNS: Tuple[Column[BlockRow], ...] = (
    _L["BLOCK"], _L["RANGE"], _L["SIZE"], _L["STATE"], _L["REMOVABLE"], _L["NODE"], _L["ZONES"],
    Column("ZONE", lambda r: (r.verdict.zone.value if r.verdict.zone else "none") if r.verdict is not None
           else (r.facts.zones[0] if r.facts.zones else None), Merge.SPLIT,
           "the block's zone (none: it spans zones)", fmt=_dash),
    Column("RESULT", _verdict(lambda v: v.result), Merge.SPLIT, "offlined, fails or hangs", fmt=_dash,
           style=_result_style),
    Column("ERRNO", _verdict(lambda v: v.errno), Merge.SPLIT, "errno the write returns", fmt=_dash),
    Column("REASON", _verdict(lambda v: v.reason), Merge.SPLIT, "the kernel's reason string (pr_debug)", fmt=_dash),
    Column("STEP", _verdict(lambda v: v.step), Merge.SPLIT, "offline_pages() step that decides", fmt=_dash),
    _count("FREE", "free", "free (buddy) pages"),
    _count("TO-MIGRATE", "migrated", "pages migrated away", ("MIGRATED",)),
    _count("SKIPPED", "skipped_offline", "PageOffline pages offlining skips"),
    _count("DISSOLVED", "dissolved", "free hugetlb pages dissolved"),
    _count("HWPOISON", "hwpoison", "hwpoisoned pages"),
    _count("VMEMMAP", "vmemmap", "self-hosted memmap pages"),
    _count("HOLES", "holes", "pages that are not System RAM"),
    _count("BLOCKING", "blocking", "pages that keep the block from going offline"),
    _count("PAGES", "total", "pages in the block"),
    Column("CULPRIT", _verdict(culprit_text), Merge.SPLIT, "the page the kernel names or stops at (kind@pfn)",
           fmt=_dash),
    Column("DEVICE", _verdict(lambda v: v.device), Merge.SPLIT, "virtio-mem device", fmt=_dash),
    Column("DEVICE-STATE", _verdict(lambda v: v.device_state), Merge.SPLIT, "virtio-mem block state", fmt=_dash),
    Column("HAZARDS", _verdict(lambda v: ",".join(h.kind.value for h in v.hazards)), Merge.SPLIT,
           "hazard kinds beyond the outcome", fmt=_dash),
    Column("CONFIDENCE", _verdict(lambda v: v.confidence or Confidence.CERTAIN), Merge.SPLIT,
           "certain, likely or unknown (snapshots cannot see everything)", fmt=_dash),
    _L["CONFIGURED"], _L["MEMMAP-ON-MEMORY"],
)

VERDICT_DEFAULT = ("BLOCK", "RANGE", "SIZE", "STATE", "ZONE", "RESULT", "ERRNO", "REASON", "STEP", "FREE",
                   "TO-MIGRATE", "SKIPPED", "DISSOLVED", "CULPRIT", "CONFIDENCE")


def _not_online(r: BlockRow) -> bool:
    return r.facts.state is not BlockState.ONLINE


def _not_certain(r: BlockRow) -> bool:
    return r.verdict is not None and r.verdict.confidence not in (None, Confidence.CERTAIN)


def verdict_columns(has_memconfig: bool = False) -> ColumnSet[BlockRow]:
    """``simulate``'s columns. Defaults shown only when needed: ``STATE`` when a listed block is
    not online, ``CONFIDENCE`` when a verdict is not certain. Without ``/sys/firmware/memory``
    lsmem's CONFIGURED and MEMMAP-ON-MEMORY are left out wherever they are asked for."""
    return ColumnSet(VERDICT_COLUMNS, VERDICT_DEFAULT, optional={"STATE": _not_online, "CONFIDENCE": _not_certain},
                     unavailable=frozenset() if has_memconfig else frozenset({"CONFIGURED", "MEMMAP-ON-MEMORY"}))


def lsmem_columns(has_memconfig: bool = False, default: Tuple[str, ...] = LSMEM_DEFAULT) -> ColumnSet[BlockRow]:
    """lsmem's columns alone (``snapshot``'s block listing)."""
    return ColumnSet(LSMEM_COLUMNS, default,
                     unavailable=frozenset() if has_memconfig else frozenset({"CONFIGURED", "MEMMAP-ON-MEMORY"}))


#: the lsmem columns whose facts a tree holds beyond the block table (``SysfsTree``)
TREE_NAMES: FrozenSet[str] = frozenset({"REMOVABLE", "NODE", "ZONES", "CONFIGURED", "MEMMAP-ON-MEMORY"})


def used_columns(column_set: ColumnSet[BlockRow], options: TableOptions) -> FrozenSet[str]:
    """The names of the columns printed or split on."""
    selection: Selection[BlockRow] = column_set.select(options)
    return frozenset(c.name for c in selection.shown) | frozenset(c.name for c in column_set.splits(
        options, selection.shown))


def needs_verdicts(column_set: ColumnSet[BlockRow], options: TableOptions) -> bool:
    """Whether a printed or split column is more than what lsmem reads from sysfs."""
    return not used_columns(column_set, options) <= LSMEM_NAMES


def reads_tree(column_set: ColumnSet[BlockRow], options: TableOptions) -> bool:
    """Whether a printed or split column needs a tree's per-block files (``SysfsTree``)."""
    return bool(used_columns(column_set, options) & TREE_NAMES)


def verdict_text(v: BlockVerdict) -> str:
    """``fails EBUSY isolate "failure to isolate range"``."""
    return _verdict_fmt(_verdict_key(v))


#: the verdict fields a diff column shows (outcome, errno, step, reason)
VerdictKey = Tuple[Outcome, Optional[Errno], Optional[Step], Optional[Reason]]


def _verdict_key(v: BlockVerdict) -> VerdictKey:
    return (v.result, v.errno, v.step, v.reason)


def _verdict_fmt(key: VerdictKey) -> str:
    result, errno, step, reason = key
    if result is Outcome.OFFLINED:
        return result.value
    parts = [p.value for p in (errno, step) if p is not None]
    return " ".join([result.value] + parts) + (f' "{reason.value}"' if reason else "")


def difference_columns(left: str, right: str) -> ColumnSet[BlockDifference]:
    """``diff-semantics``' columns: the two verdict columns are named after the semantics
    (``REFCOUNT``, ``SKIPPABLE``; also ``LEFT``/``RIGHT``)."""
    columns: Tuple[Column[BlockDifference], ...] = (
        Column("BLOCK", lambda d: d.block, Merge.KEY, "memory block number", justify="right"),
        Column("RANGE", lambda d: (d.left.start, d.left.end), Merge.RANGE, "physical address range"),
        Column("SIZE", lambda d: d.left.size, Merge.SUM, "size", justify="right", size=True, json=JsonType.NUMBER),
        Column("ZONE", lambda d: d.zone.value if d.zone else "none", Merge.SPLIT, "zone"),
        Column("NODE", lambda d: d.left.node, Merge.SPLIT, "NUMA node", justify="right", json=JsonType.NUMBER),
        Column(left.upper(), lambda d: _verdict_key(d.left), Merge.SPLIT,
               f"verdict under {left} (the --left side; also LEFT)", fmt=_verdict_fmt,
               style=lambda k: RESULT_STYLE.get(k[0]), aliases=("LEFT",)),
        Column(right.upper(), lambda d: _verdict_key(d.right), Merge.SPLIT,
               f"verdict under {right} (the --right side; also RIGHT)", fmt=_verdict_fmt,
               style=lambda k: RESULT_STYLE.get(k[0]), aliases=("RIGHT",)),
        Column("CHANGED", lambda d: ",".join(d.changed), Merge.SPLIT, "verdict fields that differ"),
        Column("SITES", lambda d: " + ".join(s.value for s in d.sites), Merge.SPLIT,
               "predicate sites that explain the difference"),
        Column("CULPRIT", lambda d: " / ".join(sorted({culprit_text(d.left), culprit_text(d.right)} - {""})),
               Merge.SPLIT, "culprit page(s) of either side"),
        Column("CONFIDENCE", lambda d: worst_confidence((d.left.confidence, d.right.confidence)), Merge.SPLIT,
               "the less certain side's confidence", fmt=_dash),
    )
    return ColumnSet(columns, ("BLOCK", "RANGE", "SIZE", "ZONE", left.upper(), right.upper(), "CULPRIT", "CONFIDENCE"),
                     optional={"CONFIDENCE": lambda d: worst_confidence((d.left.confidence, d.right.confidence))
                               is not Confidence.CERTAIN})
