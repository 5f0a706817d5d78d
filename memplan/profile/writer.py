"""``--write-profile``: the machine a plan leaves behind, as a valid profile (of the original's format).

The writer reads machines, not plans: the original ``Machine`` with the document it was
loaded from, and the current ``Machine`` (``MachineState.to_machine()`` after a plan). The
written profile keeps the original's structure and changes only what differs:

* ``[[ram]]`` ranges are split at memory-block boundaries where blocks went offline
  (``state = "offline"``; holes and CMA ranges follow their piece);
* ``[[virtio_mem]]`` gets the device's plugged map as explicit device-block ranges
  (``plugged``), its FAKE_OFFLINE big blocks and the added blocks that are offline
  (``offline_blocks``);
* ``[[fill]]`` tables keep their seeds and fractions but list only the blocks still online;
* ``[[pages]]`` is rebuilt: every PMD-sized slot (2 MiB with 4 KiB pages) whose pages differ
  from what the fills and the derived fixed pages (holes, vmemmap, fake-offline) would
  produce is written out in full, run-length encoded (whole slots, so a fill never draws a
  compound folio there);
* ``[environment]`` gets the hugetlb pool counters the machine has now (``free`` and ``resv``).

Loading the written profile materialises exactly the pages of the current machine (tests
check it, with random profiles too). The TOML is written by tomli-w (every string and number
round-trips: unicode, control characters) to a temporary file renamed into place when complete
(``memplan.core.files.atomic_output``): an interrupted write leaves no profile behind.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import tomli_w

from memplan.core.arrays import BoolArray, IntArray
from memplan.core.errors import ProfileError, UsageError
from memplan.core.files import atomic_output
from memplan.core.geometry import Geometry
from memplan.core.machine import BlockTable, Machine, VirtioMemDevice, chunks
from memplan.core.model import DEFAULT_REFCOUNT, KIND_NAMES, PageKind, VirtioMemMode
from memplan.core.units import (
    format_block_ranges,
    parse_block_ranges,
    parse_inclusive_range,
    parse_size,
)
from memplan.kernel import virtio_mem
from memplan.profile import reader
from memplan.profile.reader import HUGETLB_POOLS, build_machine

#: kinds a profile derives itself (holes from [[ram]], vmemmap from memmap_on_memory)
_DERIVED = np.zeros(256, dtype=bool)
_DERIVED[[int(PageKind.HOLE), int(PageKind.VMEMMAP)]] = True

_ORDER = ("format", "machine", "ram", "virtio_mem", "fill", "pages", "environment")

Doc = Dict[str, Any]
#: pfn, count, kind code, refcount
Run = Tuple[int, int, int, int]


def profile_document(original: Machine, doc: Doc, current: Machine) -> Tuple[Doc, List[str]]:
    """The profile document of ``current``, the machine ``original`` became (``doc`` is the
    parsed profile ``original`` was built from)."""
    warnings: List[str] = []
    out = copy.deepcopy(doc)
    out["ram"] = _ram_tables(current, doc.get("ram", []))
    out["virtio_mem"], removed = _device_tables(current, doc.get("virtio_mem", []), warnings)
    out["fill"] = _fill_tables(original, current, doc.get("fill", []), removed)
    out["pages"] = []
    env = _environment_table(current, out.get("environment", {}))
    if env:
        out["environment"] = env
    baseline = build_machine(copy.deepcopy(out), "<baseline>")
    out["pages"] = _page_tables(current, baseline)
    for key in ("ram", "virtio_mem", "fill", "pages"):
        if not out[key]:
            del out[key]
    return out, warnings


def read_document(path: str) -> Doc:
    """The parsed TOML of the profile a machine was built from."""
    try:
        return reader.read_document(path)
    except ProfileError as exc:
        raise ProfileError(path, "", f"cannot read it again to write the resulting profile: "
                           f"{exc.message[len(path) + 2:]}") from None


def write_profile(original: Machine, doc: Doc, current: Machine, path: str, header: str = "") -> List[str]:
    """Write ``current`` as a profile file; returns warnings about what the format cannot express.

    The file appears whole or not at all: a write error (a full disk) or an interrupt leaves
    whatever was at ``path`` before."""
    result, warnings = profile_document(original, doc, current)
    text = dumps(result, header)
    try:
        with atomic_output(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise UsageError(f"--write-profile: cannot write {path}: {exc.strerror or exc}") from None
    return warnings


def _online_blocks(table: BlockTable, blocks: np.ndarray) -> BoolArray:
    """Per block id: it exists in ``table`` and is online."""
    ids = np.asarray(blocks, dtype=np.int64)
    present = table.exists(ids)
    online = np.zeros(len(ids), dtype=bool)
    online[present] = table.online[table.rows(ids[present])]
    return online


def _runs(values: np.ndarray) -> Tuple[IntArray, IntArray]:
    """``(starts, ends)`` of the runs of equal values (indexes, ends exclusive)."""
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    return np.concatenate(([0], change)).astype(np.int64), np.concatenate((change, [len(values)])).astype(np.int64)


def _set_or_drop(table: Doc, key: str, value: Any) -> None:
    if value:
        table[key] = value
    else:
        table.pop(key, None)


# ---- [[ram]] ------------------------------------------------------------------------------

def _ram_tables(current: Machine, tables: Sequence[Doc]) -> List[Doc]:
    """Each range split at memory-block boundaries where the blocks' final state changes."""
    mb = current.geometry.memory_block_size
    out: List[Doc] = []
    for table in tables:
        start, size = parse_size(table["start"]), parse_size(table["size"])
        end = start + size
        cuts = np.concatenate(([start], np.arange((start // mb + 1) * mb, end, mb, dtype=np.int64), [end]))
        online = _online_blocks(current.blocks, cuts[:-1] // mb)
        firsts, lasts = _runs(online)
        for first, last in zip(firsts.tolist(), lasts.tolist()):
            out.append(_ram_piece(table, int(cuts[first]), int(cuts[last]), bool(online[first])))
    return out


def _ram_piece(table: Doc, lo: int, hi: int, online: bool) -> Doc:
    """The part [lo, hi) of a ``[[ram]]`` table, with its holes and CMA ranges."""
    piece = copy.deepcopy(dict(table))
    piece["start"], piece["size"] = hex(lo), hex(hi - lo)
    if not online or "state" in piece:
        piece["state"] = "online" if online else "offline"
    holes = []
    for hole in table.get("holes", []):
        hs, hz = parse_size(hole["start"]), parse_size(hole["size"])
        a, b = max(hs, lo), min(hs + hz, hi)
        if a < b:
            holes.append({"start": hex(a), "size": hex(b - a)})
    _set_or_drop(piece, "holes", holes)
    cma = []
    for text in table.get("cma", []):
        cs, ce = parse_inclusive_range(text)
        a, b = max(cs, lo), min(ce, hi)
        if a < b:
            cma.append(f"{a:#x}-{b - 1:#x}")
    _set_or_drop(piece, "cma", cma)
    return piece


# ---- [[virtio_mem]] -------------------------------------------------------------------------

def _device_tables(current: Machine, tables: Sequence[Doc], warnings: List[str]) -> Tuple[List[Doc], IntArray]:
    """Each device with its plugged map, FAKE_OFFLINE big blocks and offline added blocks; and
    the blocks written as removed although they still exist (see ``_unplugged_but_added``)."""
    out: List[Doc] = []
    removed: List[IntArray] = []
    index = {d.id: i for i, d in enumerate(current.devices)}
    for table in tables:
        piece = copy.deepcopy(dict(table))
        if table["id"] not in index:  # pragma: no cover - the machine was built from this document
            out.append(piece)
            continue
        device = current.devices[index[table["id"]]]
        piece.pop("plugged_size", None)
        piece["plugged"] = _plugged_ranges(device, current.geometry)
        _set_or_drop(piece, "fake_offline_big_blocks", format_block_ranges(sorted(device.fake_offline_units)))
        blocks = current.blocks.ids[current.blocks.device == index[device.id]]
        offline = blocks[~_online_blocks(current.blocks, blocks)].tolist()
        _set_or_drop(piece, "offline_blocks",
                     format_block_ranges(offline) if table.get("online", "movable") != "offline" else "")
        stuck = _unplugged_but_added(device, blocks, current.geometry)
        warnings.extend(f"memory block {b} of {device.id} is fully unplugged but still added (its removal "
                        "failed); a profile cannot express that: written as removed" for b in stuck.tolist())
        removed.append(stuck)
        out.append(piece)
    return out, np.concatenate(removed or [np.zeros(0, dtype=np.int64)])


def _plugged_ranges(device: VirtioMemDevice, geometry: Geometry) -> List[str]:
    """The plugged units as inclusive device-block ranges (``["0-1535"]``)."""
    dbs = device.device_block_size
    head = (geometry.address(geometry.block_start_pfn(device.first_block)) - device.addr) // dbs
    per_unit = device.unit_size // dbs
    plugged = np.concatenate(([False], device.plugged, [False]))
    edges = np.flatnonzero(plugged[1:] != plugged[:-1])
    ranges = []
    for first, end in zip(edges[::2].tolist(), edges[1::2].tolist()):
        lo, hi = head + first * per_unit, head + end * per_unit - 1
        ranges.append(f"{lo}-{hi}" if hi > lo else str(lo))
    return ranges


def _unplugged_but_added(device: VirtioMemDevice, blocks: IntArray, geometry: Geometry) -> IntArray:
    """SBM blocks with no plugged sub-block that still exist: ``offline_and_remove_memory()``
    failed after every sub-block was unplugged (``virtio_mem_sbm_try_remove_unplugged_mb()``
    keeps the block). The plugged map of a profile cannot add a block without plugged memory."""
    if device.mode is not VirtioMemMode.SBM:
        return np.zeros(0, dtype=np.int64)
    grid = device.plugged.reshape(-1, virtio_mem.units_per_block(device, geometry))
    return blocks[~grid[blocks - device.first_block].any(axis=1)]


# ---- [[fill]] ---------------------------------------------------------------------------------

def _fill_tables(original: Machine, current: Machine, tables: Sequence[Doc], removed: IntArray) -> List[Doc]:
    """Each fill restricted to its blocks that are still online and written (dropped when none is)."""
    devices = {d.id: i for i, d in enumerate(original.devices)}
    out: List[Doc] = []
    for table in tables:
        target = table["blocks"]
        if target == "all":
            blocks = original.blocks.ids
        elif isinstance(target, str) and target in devices:
            blocks = original.blocks.ids[original.blocks.device == devices[target]]
        else:
            blocks = np.asarray(parse_block_ranges(target), dtype=np.int64)
        alive = blocks[_online_blocks(current.blocks, blocks) & ~np.isin(blocks, removed)]
        if not len(alive):
            continue
        piece = copy.deepcopy(dict(table))
        piece["blocks"] = format_block_ranges(alive.tolist())
        out.append(piece)
    return out


# ---- [environment] ----------------------------------------------------------------------------

def _environment_table(current: Machine, table: Doc) -> Doc:
    """``[environment]`` with the hugetlb pool counters the machine has now."""
    env = dict(table)
    for key, size in HUGETLB_POOLS:
        pool = current.environment.hugetlb.get(current.geometry.order_of(size))
        if pool is not None and (pool.free or pool.resv or key in env):
            env[key] = {"free": int(pool.free or 0), "resv": int(pool.resv)}
    return env


# ---- [[pages]] --------------------------------------------------------------------------------

def _page_tables(final: Machine, baseline: Machine) -> List[Doc]:
    """``[[pages]]``: every page of ``final`` that loading the document without them
    (``baseline``) would get wrong, as runs of whole folios."""
    runs, gigantic = _changed_runs(final, baseline)
    runs = _merge_runs(sorted(runs))
    if gigantic:
        runs = _whole_gigantic_folios(final, runs)
    tables = []
    for pfn, count, kind, ref in runs:
        entry: Dict[str, Any] = {"pfn": hex(pfn)}
        if count != 1:
            entry["count"] = count
        entry["kind"] = KIND_NAMES[kind]
        if ref != int(DEFAULT_REFCOUNT[kind]):
            entry["refcount"] = ref
        tables.append(entry)
    return tables


def _changed_runs(final: Machine, baseline: Machine) -> Tuple[List[Run], bool]:
    """The runs to write block by block, and whether one holds a folio above PMD size."""
    geo = final.geometry
    ppb, slot = geo.pages_per_block, 1 << geo.pmd_order
    runs: List[Run] = []
    gigantic = False
    online = final.blocks.ids[final.blocks.online]
    online = online[_online_blocks(baseline.blocks, online)]  # blocks written as removed have no pages
    for ids in chunks(online, ppb):
        want = final.pages.materialize(ids)
        base = baseline.pages.materialize(ids)
        wk, wr = want.kinds, want.refcounts()
        differs = (wk != base.kinds) | (wr != base.refcounts())
        # A PMD-sized slot where the fill drew a compound folio must be written whole: one
        # explicit page there stops the fill from drawing the folio. Elsewhere the fill's
        # per-page draws do not depend on explicit pages, so only changed pages are written.
        whole = (differs.reshape(len(ids), -1, slot).any(axis=2)
                 & (geo.folio_order[base.kinds] > 0).reshape(len(ids), -1, slot).any(axis=2))
        emit = differs | np.repeat(whole, slot, axis=1)
        emit &= ~_DERIVED[wk]
        for r in np.flatnonzero(emit.any(axis=1)):
            block = int(ids[r])
            gigantic |= bool((geo.folio_order[wk[r][emit[r]]] > geo.pmd_order).any())
            runs.extend(_rle_masked(block * ppb, wk[r], wr[r], emit[r]))
    return runs, gigantic


def _rle_masked(pfn: int, kinds: np.ndarray, refs: np.ndarray, mask: np.ndarray) -> List[Run]:
    """The block's runs of equal (kind, refcount) that contain a masked page.

    A run may cover unchanged pages of the same content on either side of a changed one:
    stating a page as it already is changes nothing, and fewer, longer runs load faster.
    """
    change = np.flatnonzero((kinds[1:] != kinds[:-1]) | (refs[1:] != refs[:-1])) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [len(kinds)]))
    marked = np.concatenate(([0], np.cumsum(mask)))
    keep = (marked[ends] - marked[starts] > 0) & ~_DERIVED[kinds[starts]]
    starts, ends = starts[keep], ends[keep]
    return list(zip((pfn + starts).tolist(), (ends - starts).tolist(), kinds[starts].tolist(), refs[starts].tolist()))


def _merge_runs(runs: List[Run]) -> List[Run]:
    merged: List[Run] = []
    for pfn, count, kind, ref in runs:
        if merged and merged[-1][0] + merged[-1][1] == pfn and merged[-1][2:] == (kind, ref):
            merged[-1] = (merged[-1][0], merged[-1][1] + count, kind, ref)
        else:
            merged.append((pfn, count, kind, ref))
    return merged


def _whole_gigantic_folios(final: Machine, runs: List[Run]) -> List[Run]:
    """A PUD-sized (1 GiB) folio is written whole or not at all ([[pages]] needs whole folios):
    widen every gigantic run to the folios it touches (their pages are all of that kind in
    the machine)."""
    geo = final.geometry
    out: List[Run] = []
    for pfn, count, kind, ref in runs:
        order = int(geo.folio_order[kind])
        if order <= geo.pmd_order:
            out.append((pfn, count, kind, ref))
            continue
        size = 1 << order
        lo, hi = pfn - pfn % size, -(-(pfn + count) // size) * size
        out.append((lo, hi - lo, kind, ref))
    out.sort()
    result: List[Run] = []
    for run in out:
        if result and run[0] < result[-1][0] + result[-1][1]:
            prev = result[-1]
            if prev[2:] == run[2:]:
                result[-1] = (prev[0], max(prev[0] + prev[1], run[0] + run[1]) - prev[0], prev[2], prev[3])
            continue  # inside a widened folio
        result.append(run)
    return _merge_runs(result)


# ---- TOML -------------------------------------------------------------------------------------

def dumps(doc: Doc, header: str = "") -> str:
    """The TOML text of a profile document (tomli-w), sections in the README's order, after
    ``header`` as ``#`` comment lines."""
    ordered = {key: _plain(doc[key]) for key in list(_ORDER) + [k for k in doc if k not in _ORDER] if key in doc}
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comments + ("\n" if comments else "") + tomli_w.dumps(ordered)


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers and tuples as lists: what tomli-w writes."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


__all__ = ["profile_document", "write_profile", "read_document", "dumps"]
