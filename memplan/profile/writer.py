"""``--write-profile``: the machine a plan leaves behind, as a valid format-1 profile.

The written profile keeps the original's structure and changes only what the plan changed:

* ``[[ram]]`` ranges are split at memory-block boundaries where blocks went offline
  (``state = "offline"``; holes and CMA ranges follow their piece);
* ``[[virtio_mem]]`` gets the device's plugged map as explicit device-block ranges
  (``plugged``), its FAKE_OFFLINE big blocks and the added blocks that are offline
  (``offline_blocks``);
* ``[[fill]]`` tables keep their seeds and fractions but list only the blocks still online;
* ``[[pages]]`` is rebuilt: every 2 MiB pageblock whose pages differ from what the fills and
  the derived fixed pages (holes, vmemmap, fake-offline) would produce is written out in
  full, run-length encoded (whole pageblocks, so a fill never draws a compound folio there);
* ``[environment]`` gets the hugetlb pool counters the plan left (``free`` and ``resv``).

Loading the written profile materialises exactly the pages of the state (tests check it).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from memplan.core.errors import ProfileError, UsageError
from memplan.profile import toml
from memplan.profile.reader import build_machine
from memplan.core.model import DEFAULT_REFCOUNT, FOLIO_ORDER, KIND_NAMES, PageKind
from memplan.core.machine import Machine
from memplan.plans.state import MachineState
from memplan.core.machine import chunks
from memplan.core.units import format_block_ranges, parse_block_ranges, parse_inclusive_range, parse_size

#: kinds a profile derives itself (holes from [[ram]], vmemmap from memmap_on_memory)
_DERIVED = np.zeros(256, dtype=bool)
_DERIVED[[int(PageKind.HOLE), int(PageKind.VMEMMAP)]] = True

_ORDER = ("format", "machine", "ram", "virtio_mem", "fill", "pages", "environment")


def profile_document(state: MachineState, doc: Dict[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    """The format-1 document of the state (``doc`` is the parsed profile the state started from)."""
    warnings: List[str] = []
    out = copy.deepcopy(doc)
    out["ram"] = _ram_tables(state, doc.get("ram", []))
    out["virtio_mem"] = _device_tables(state, doc.get("virtio_mem", []), warnings)
    out["fill"] = _fill_tables(state, doc)
    out["pages"] = []
    env = dict(out.get("environment", {}))
    for key, order in (("hugetlb_2m", 9), ("hugetlb_1g", 18)):
        pool = state.pools[order]
        if pool.free or pool.resv or key in env:
            env[key] = {"free": int(pool.free or 0), "resv": int(pool.resv)}
    if env:
        out["environment"] = env
    baseline = build_machine(copy.deepcopy(out), "<baseline>")
    out["pages"] = _page_tables(state.to_machine(), baseline)
    for key in ("ram", "virtio_mem", "fill", "pages"):
        if not out[key]:
            del out[key]
    return out, warnings


def read_document(path: str) -> Dict[str, Any]:
    """The parsed TOML of the profile a state was built from."""
    try:
        with open(path, "rb") as handle:
            return toml.loads(handle.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, toml.TOMLDecodeError) as exc:
        raise ProfileError(path, "", f"cannot read it again to write the resulting profile: {exc}") from None


def write_profile(state: MachineState, doc: Dict[str, Any], path: str, header: str = "") -> List[str]:
    """Write the state as a profile file; returns warnings about what format 1 cannot express."""
    result, warnings = profile_document(state, doc)
    text = dumps(result, header)
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise UsageError(f"--write-profile: cannot write {path}: {exc.strerror or exc}") from None
    return warnings


# ---- [[ram]] ------------------------------------------------------------------------------

def _ram_tables(state: MachineState, tables: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    geo = state.geometry
    mb = geo.memory_block_size
    out: List[Dict[str, Any]] = []
    for table in tables:
        start, size = parse_size(table["start"]), parse_size(table["size"])
        end = start + size

        def final_state(addr: int) -> str:
            block = addr // mb
            return "online" if state.has_block(block) and state.online(state.row_of(block)) else "offline"

        cuts = [start] + list(range((start // mb + 1) * mb, end, mb)) + [end]
        pieces: List[Tuple[int, int, str]] = []
        for lo, hi in zip(cuts, cuts[1:]):
            st = final_state(lo)
            if pieces and pieces[-1][2] == st:
                pieces[-1] = (pieces[-1][0], hi, st)
            else:
                pieces.append((lo, hi, st))
        for lo, hi, st in pieces:
            piece = copy.deepcopy(dict(table))
            piece["start"], piece["size"] = hex(lo), hex(hi - lo)
            if st == "offline" or "state" in piece:
                piece["state"] = st
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
            out.append(piece)
    return out


def _set_or_drop(table: Dict[str, Any], key: str, value: List[Any]) -> None:
    if value:
        table[key] = value
    else:
        table.pop(key, None)


# ---- [[virtio_mem]] -------------------------------------------------------------------------

def _device_tables(state: MachineState, tables: Sequence[Dict[str, Any]], warnings: List[str]) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    for table in tables:
        dev = state.device_named(table["id"])
        piece = copy.deepcopy(dict(table))
        if dev is None:  # pragma: no cover - the state was built from this document
            out.append(piece)
            continue
        device = dev.device
        mode_unit = device.unit_size
        dbs = device.device_block_size
        usable_start = state.geometry.block_start_pfn(device.first_block) * state.geometry.page_size
        head = (usable_start - device.addr) // dbs
        per_unit = mode_unit // dbs
        ranges = []
        for unit in np.flatnonzero(dev.plugged):
            lo = head + int(unit) * per_unit
            ranges.append((lo, lo + per_unit - 1))
        merged: List[List[int]] = []
        for lo, hi in ranges:
            if merged and merged[-1][1] + 1 == lo:
                merged[-1][1] = hi
            else:
                merged.append([lo, hi])
        piece.pop("plugged_size", None)
        piece["plugged"] = [f"{lo}-{hi}" if hi > lo else str(lo) for lo, hi in merged]
        fake = sorted(dev.fake_offline)
        if fake:
            piece["fake_offline_big_blocks"] = format_block_ranges(fake)
        else:
            piece.pop("fake_offline_big_blocks", None)
        blocks = [int(b) for b in state.ids[(state.device == dev.index) & state.present]]
        offline = [b for b in blocks if not state.online(state.row_of(b))]
        if offline and table.get("online", "movable") != "offline":
            piece["offline_blocks"] = format_block_ranges(offline)
        else:
            piece.pop("offline_blocks", None)
        if dev.sbm:
            for b in blocks:
                if not dev.subblocks(b).any():
                    warnings.append(f"memory block {b} of {device.id} is fully unplugged but still added (its "
                                    "removal failed); format 1 cannot express that: written as removed")
        out.append(piece)
    return out


# ---- [[fill]] ---------------------------------------------------------------------------------

def _fill_tables(state: MachineState, doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    original: Machine = state.machine
    ids = [int(b) for b in original.blocks.ids]
    devices = {d.id: i for i, d in enumerate(original.devices)}
    out: List[Dict[str, Any]] = []
    for table in doc.get("fill", []):
        target = table["blocks"]
        if target == "all":
            blocks = ids
        elif isinstance(target, str) and target in devices:
            blocks = [int(b) for b in original.blocks.ids[original.blocks.device == devices[target]]]
        else:
            blocks = parse_block_ranges(target)
        alive = [b for b in blocks if state.has_block(b) and state.online(state.row_of(b))]
        if not alive:
            continue
        piece = copy.deepcopy(dict(table))
        piece["blocks"] = format_block_ranges(alive)
        out.append(piece)
    return out


# ---- [[pages]] --------------------------------------------------------------------------------

def _page_tables(final: Machine, baseline: Machine) -> List[Dict[str, Any]]:
    geo = final.geometry
    ppb, pb = geo.pages_per_block, geo.pageblock_pages
    online = final.blocks.ids[final.blocks.online]
    runs: List[Tuple[int, int, int, int]] = []  # pfn, count, kind, refcount
    forced: List[Tuple[int, int]] = []
    for ids in chunks(online, ppb):
        want = final.pages.materialize(ids)
        base = baseline.pages.materialize(ids)
        wk, wr = want.kinds, want.refcounts()
        differs = (wk != base.kinds) | (wr != base.refcounts())
        # A pageblock where the fill drew a compound folio must be written whole: one
        # explicit page there stops the fill from drawing the folio. Elsewhere the fill's
        # per-page draws do not depend on explicit pages, so only changed pages are written.
        whole = (differs.reshape(len(ids), -1, pb).any(axis=2)
                 & (FOLIO_ORDER[base.kinds] > 0).reshape(len(ids), -1, pb).any(axis=2))
        emit = differs | np.repeat(whole, pb, axis=1)
        emit &= ~_DERIVED[wk]
        for r in np.flatnonzero(emit.any(axis=1)):
            block = int(ids[r])
            if (FOLIO_ORDER[wk[r][emit[r]]] > geo.pageblock_order).any():
                forced.append((block * ppb, ppb))
            runs.extend(_rle_masked(block * ppb, wk[r], wr[r], emit[r]))
    runs = _merge_runs(sorted(runs))
    if forced:
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


def _rle_masked(pfn: int, kinds: np.ndarray, refs: np.ndarray, mask: np.ndarray) -> List[Tuple[int, int, int, int]]:
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


def _merge_runs(runs: List[Tuple[int, int, int, int]]) -> List[Tuple[int, int, int, int]]:
    merged: List[Tuple[int, int, int, int]] = []
    for pfn, count, kind, ref in runs:
        if merged and merged[-1][0] + merged[-1][1] == pfn and merged[-1][2:] == (kind, ref):
            merged[-1] = (merged[-1][0], merged[-1][1] + count, kind, ref)
        else:
            merged.append((pfn, count, kind, ref))
    return merged


def _whole_gigantic_folios(final: Machine, runs: List[Tuple[int, int, int, int]]) -> List[Tuple[int, int, int, int]]:
    """A 1 GiB folio is written whole or not at all ([[pages]] needs whole folios): widen every
    gigantic run to the folios it touches (their pages are all of that kind in the state)."""
    geo = final.geometry
    out: List[Tuple[int, int, int, int]] = []
    for pfn, count, kind, ref in runs:
        order = int(FOLIO_ORDER[kind])
        if order <= geo.pageblock_order:
            out.append((pfn, count, kind, ref))
            continue
        size = 1 << order
        lo, hi = pfn - pfn % size, -(-(pfn + count) // size) * size
        out.append((lo, hi - lo, kind, ref))
    out.sort()
    result: List[Tuple[int, int, int, int]] = []
    for run in out:
        if result and run[0] < result[-1][0] + result[-1][1]:
            prev = result[-1]
            if prev[2:] == run[2:]:
                result[-1] = (prev[0], max(prev[0] + prev[1], run[0] + run[1]) - prev[0], prev[2], prev[3])
            continue  # inside a widened folio
        result.append(run)
    return _merge_runs(result)


# ---- TOML -------------------------------------------------------------------------------------

def dumps(doc: Dict[str, Any], header: str = "") -> str:
    """A small TOML emitter for profile documents (tables, arrays of tables, inline tables)."""
    lines: List[str] = []
    if header:
        lines.extend(f"# {line}" if line else "#" for line in header.splitlines())
    for key in list(_ORDER) + [k for k in doc if k not in _ORDER]:
        if key not in doc:
            continue
        value = doc[key]
        if isinstance(value, dict):
            lines.append("")
            lines.append(f"[{key}]")
            lines.extend(f"{k} = {_value(v)}" for k, v in value.items())
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for table in value:
                lines.append("")
                lines.append(f"[[{key}]]")
                lines.extend(f"{k} = {_value(v)}" for k, v in table.items())
        else:
            lines.append(f"{key} = {_value(value)}")
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")  # pragma: no cover


__all__ = ["profile_document", "write_profile", "read_document", "dumps"]
