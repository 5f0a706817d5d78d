"""Machine profiles, format 1 (TOML): the public contract documented in the README.

``load_profile(path)`` validates everything up front (black/sklearn style): after it returns,
the model can assume consistent input. Every problem is one ``ProfileError`` naming the file,
the key and the value.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from memplan.core.errors import ProfileError, did_you_mean
from memplan.core.geometry import Geometry
from memplan.profile import toml
from memplan.kernel import virtio_mem
from memplan.kernel.semantics import SEMANTICS
from memplan.core.model import (
    FOLIO_ORDER, PROFILE_KINDS, ZONE_NONE, DriverState, Errno, ForeignRefTiming, OnlineType, PageKind, Zone,
)
from memplan.core.machine import BlockTable, Environment, Fill, HugetlbPool, Machine, PageRun, VirtioMemDevice
from memplan.profile.population import ProfilePageSource
from memplan.core.units import parse_block_ranges, parse_block_spans, parse_inclusive_range, parse_size

FORMAT = 1

_TOP = {"format", "machine", "ram", "virtio_mem", "fill", "pages", "environment"}
_MACHINE = {"name", "description", "memory_block_size", "semantics", "nodes", "kernel"}
_RAM = {"start", "size", "zone", "node", "state", "holes", "cma", "memmap_on_memory"}
_VMEM = {"id", "addr", "region_size", "block_size", "mode", "bbm_block_size", "plugged", "plugged_size",
         "online", "node", "driver", "fake_offline_big_blocks", "unplug_online", "offline_blocks"}
_FILL_META = {"blocks", "seed"}
_PAGES = {"pfn", "count", "kind", "refcount"}
_ENV = {"signal_pending", "notifier_veto", "node_notifier_veto", "hugetlb_2m", "hugetlb_1g", "isolated",
        "foreign_ref_dropped"}
#: kinds a fill may draw (fixed kinds and 1 GiB folios are placed with [[pages]])
FILL_KINDS = tuple(k for k in PROFILE_KINDS if k not in ("fake_offline", "vmemmap", "gigantic", "gigantic_free"))


class _Reader:
    """Typed access to one TOML table with errors that name the key path."""

    def __init__(self, path: str, prefix: str, table: Any, allowed: Set[str]) -> None:
        self.path, self.prefix = path, prefix
        if not isinstance(table, dict):
            raise ProfileError(path, prefix, f"must be a table, not {type(table).__name__}")
        self.table = table
        for key in table:
            if key not in allowed:
                raise ProfileError(path, self.key(key), "unknown key", hint=did_you_mean(key, allowed))

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, message: str, hint: Optional[str] = None) -> ProfileError:
        return ProfileError(self.path, self.key(name), message, hint=hint)

    def has(self, name: str) -> bool:
        return name in self.table

    def raw(self, name: str, default: Any = None) -> Any:
        return self.table.get(name, default)

    def size(self, name: str, default: Optional[int] = None, required: bool = False) -> Optional[int]:
        if name not in self.table:
            if required:
                raise self.fail(name, "is required")
            return default
        try:
            return parse_size(self.table[name])
        except ValueError as exc:
            raise self.fail(name, str(exc)) from None

    def integer(self, name: str, default: Optional[int] = None, minimum: int = 0) -> Optional[int]:
        value = self.table.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"{value!r} is not an integer")
        if value < minimum:
            raise self.fail(name, f"{value} is below {minimum}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.table.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, f"{value!r} is not true or false")
        return value

    def choice(self, name: str, choices: Sequence[str], default: Optional[str]) -> Optional[str]:
        value = self.table.get(name, default)
        if value is None:
            return None
        if value not in choices:
            raise self.fail(name, f"{value!r} is not one of {', '.join(choices)}", hint=did_you_mean(str(value), choices))
        return value

    def pageblock_ranges(self, name: str, geometry: Geometry,
                         within: Optional[Tuple[int, int]] = None) -> List[Tuple[int, int]]:
        """A list of inclusive address ranges (``"0x20000000-0x21ffffff"``) aligned to
        pageblocks, as pfn ranges [start, end)."""
        raw = self.table.get(name, [])
        if not isinstance(raw, list):
            raise self.fail(name, "must be an array of inclusive ranges like \"0x20000000-0x21ffffff\"")
        ranges = []
        for j, text in enumerate(raw):
            try:
                lo, hi = parse_inclusive_range(text)
            except ValueError as exc:
                raise self.fail(f"{name}[{j}]", str(exc)) from None
            if lo % geometry.pageblock_size or hi % geometry.pageblock_size:
                raise self.fail(f"{name}[{j}]", f"{text!r} is not aligned to 2 MiB pageblocks")
            if within and (lo < within[0] or hi > within[1]):
                raise self.fail(f"{name}[{j}]", f"{text!r} is outside the range")
            ranges.append((geometry.pfn(lo), geometry.pfn(hi)))
        return ranges

    def string(self, name: str, default: Optional[str] = None) -> Optional[str]:
        value = self.table.get(name, default)
        if value is not None and not isinstance(value, str):
            raise self.fail(name, f"{value!r} is not a string")
        return value


def _tables(path: str, doc: dict, name: str) -> List[dict]:
    value = doc.get(name, [])
    if not isinstance(value, list):
        raise ProfileError(path, name, f"must be an array of tables ([[{name}]])")
    return value


def _overlap(intervals: List[Tuple[int, int, str]]) -> Optional[Tuple[str, str]]:
    ordered = sorted(intervals)
    for (s1, e1, k1), (s2, e2, k2) in zip(ordered, ordered[1:]):
        if s2 < e1:
            return k1, k2
    return None


def _zone(reader: _Reader, name: str) -> Zone:
    value = reader.raw(name)
    names = [z.value for z in Zone]
    if value is None:
        raise reader.fail(name, "is required")
    if value not in names:
        raise reader.fail(name, f"{value!r} is not a zone ({', '.join(names)})", hint=did_you_mean(str(value), names))
    return Zone(value)


def _errno(reader: _Reader, name: str) -> Optional[Errno]:
    value = reader.raw(name, "")
    if value in ("", None, False):
        return None
    names = [e.value for e in Errno]
    if value not in names:
        raise reader.fail(name, f"{value!r} is not an errno name ({', '.join(names)})",
                          hint=did_you_mean(str(value), names))
    return Errno(value)


def load_profile(path: str) -> Machine:
    """Read and validate a profile file; raise ``ProfileError`` on any problem."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ProfileError(path, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        doc = toml.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProfileError(path, "", "is not UTF-8 text") from None
    except toml.TOMLDecodeError as exc:
        raise ProfileError(path, "", f"invalid TOML: {exc}") from None
    return build_machine(doc, path)


def build_machine(doc: dict, path: str = "<profile>") -> Machine:
    """Validate a parsed profile document and build the machine it describes."""
    top = _Reader(path, "", doc, _TOP)
    fmt = top.raw("format")
    if fmt is None:
        raise ProfileError(path, "format", "is required (format = 1)")
    if fmt != FORMAT:
        raise ProfileError(path, "format", f"{fmt!r} is not supported (this memplan reads format {FORMAT})")

    mach = _Reader(path, "machine", doc.get("machine", {}), _MACHINE)
    name = mach.string("name", os.path.splitext(os.path.basename(path))[0]) or "machine"
    block_size = mach.size("memory_block_size", 128 << 20)
    try:
        geometry = Geometry(memory_block_size=block_size)
    except ValueError as exc:
        raise mach.fail("memory_block_size", str(exc)) from None
    semantics = mach.choice("semantics", list(SEMANTICS), "refcount")
    kernel = mach.string("kernel")
    mach.string("description")
    ppb = geometry.pages_per_block
    page = geometry.page_size

    # ---- [[ram]] -------------------------------------------------------------------------
    rams = []
    intervals: List[Tuple[int, int, str]] = []
    for i, table in enumerate(_tables(path, doc, "ram")):
        r = _Reader(path, f"ram[{i}]", table, _RAM)
        start, size = r.size("start", required=True), r.size("size", required=True)
        for key, value in (("start", start), ("size", size)):
            if value % geometry.pageblock_size:
                raise r.fail(key, f"{value:#x} is not aligned to a {geometry.pageblock_size >> 20} MiB pageblock")
        if size == 0:
            raise r.fail("size", "must not be 0")
        zone = _zone(r, "zone")
        node = r.integer("node", 0)
        state = r.choice("state", ["online", "offline"], "online")
        holes = []
        raw_holes = r.raw("holes", [])
        if not isinstance(raw_holes, list):
            raise r.fail("holes", "must be an array of { start, size } tables")
        for j, hole in enumerate(raw_holes):
            h = _Reader(path, f"ram[{i}].holes[{j}]", hole, {"start", "size"})
            hs, hz = h.size("start", required=True), h.size("size", required=True)
            if hs % page or hz % page or hz == 0:
                raise h.fail("start", f"{hs:#x}+{hz:#x} is not a whole number of pages")
            if hs < start or hs + hz > start + size:
                raise h.fail("start", f"{hs:#x}-{hs + hz - 1:#x} is outside the range")
            holes.append((hs, hs + hz, f"ram[{i}].holes[{j}]"))
        clash = _overlap(holes)
        if clash:
            raise ProfileError(path, clash[1], f"overlaps {clash[0]}")
        cma = r.pageblock_ranges("cma", geometry, within=(start, start + size))
        memmap = r.boolean("memmap_on_memory", False)
        if memmap:
            if start % geometry.memory_block_size or size % geometry.memory_block_size:
                raise r.fail("memmap_on_memory", "needs a range aligned to whole memory blocks (hot-added memory)")
            if holes:
                raise r.fail("memmap_on_memory", "hot-added memory has no holes")
        intervals.append((start, start + size, f"ram[{i}]"))
        rams.append(dict(start=start, end=start + size, zone=zone, node=node, state=state, holes=holes,
                         cma=cma, memmap=memmap, key=f"ram[{i}]"))

    # ---- [[virtio_mem]] ------------------------------------------------------------------
    devices: List[VirtioMemDevice] = []
    warnings: List[str] = []
    seen_ids: Set[str] = set()
    for i, table in enumerate(_tables(path, doc, "virtio_mem")):
        v = _Reader(path, f"virtio_mem[{i}]", table, _VMEM)
        dev_id = v.string("id")
        if not dev_id:
            raise v.fail("id", "is required")
        if dev_id in seen_ids:
            raise v.fail("id", f"{dev_id!r} is used twice")
        seen_ids.add(dev_id)
        plugged_raw = v.raw("plugged")
        plugged_spans: Optional[List[Tuple[int, int]]] = None
        if plugged_raw is not None:
            if not isinstance(plugged_raw, list):
                raise v.fail("plugged", "must be a list of device-block ranges like [\"0-1535\"]")
            plugged_spans = []
            for j, item in enumerate(plugged_raw):
                try:
                    plugged_spans.extend(parse_block_spans(item))
                except ValueError as exc:
                    raise v.fail(f"plugged[{j}]", str(exc)) from None
        fake_bbs: List[int] = []
        if v.has("fake_offline_big_blocks"):
            try:
                fake_bbs = parse_block_ranges(v.raw("fake_offline_big_blocks"))
            except ValueError as exc:
                raise v.fail("fake_offline_big_blocks", str(exc)) from None
        offline_blocks: List[int] = []
        if v.has("offline_blocks"):
            try:
                offline_blocks = parse_block_ranges(v.raw("offline_blocks"))
            except ValueError as exc:
                raise v.fail("offline_blocks", str(exc)) from None
        addr, region = v.size("addr", required=True), v.size("region_size", required=True)
        device_block_size = v.size("block_size", 2 << 20)
        plugged_blocks = None
        if plugged_spans is not None:
            plugged_blocks = _span_indexes(plugged_spans, region // device_block_size if device_block_size else 0)
        try:
            device, dev_warnings = virtio_mem.configure(
                geometry, id=dev_id, addr=addr, region_size=region,
                device_block_size=device_block_size,
                mode=v.choice("mode", ["auto", "sbm", "bbm"], "auto"),
                bbm_block_size=v.size("bbm_block_size", 0),
                plugged_blocks=plugged_blocks, plugged_size=v.size("plugged_size"),
                online=OnlineType(v.choice("online", [o.value for o in OnlineType], "movable")),
                node=v.integer("node", 0),
                driver=DriverState(v.choice("driver", [d.value for d in DriverState], "loaded")),
                fake_offline_big_blocks=fake_bbs,
                unplug_online=v.boolean("unplug_online", True),
                offline_blocks=offline_blocks,
            )
        except virtio_mem.DeviceConfigError as exc:
            raise v.fail(exc.key, str(exc)) from None
        warnings.extend(dev_warnings)
        intervals.append((addr, addr + region, f"virtio_mem[{i}]"))
        devices.append(device)
    clash = _overlap(intervals)
    if clash:
        raise ProfileError(path, clash[1], f"overlaps {clash[0]}")
    if not rams and not devices:
        raise ProfileError(path, "ram", "the profile describes no memory (add [[ram]] or [[virtio_mem]])")

    # ---- memory blocks -------------------------------------------------------------------
    # Built as numpy columns: one row per (range, block) pair, reduced per block (a 16 TiB
    # profile has 131072 blocks; no per-block Python work).
    holes_pfn: List[Tuple[int, int]] = []
    cma_pfn: List[Tuple[int, int]] = []
    cover_blocks: List[np.ndarray] = []
    cover_pages: List[np.ndarray] = []
    attr: Dict[str, List[np.ndarray]] = {"block": [], "zone": [], "node": [], "state": [], "memmap": []}

    def cover(lo_pfn: int, hi_pfn: int, sign: int) -> np.ndarray:
        blocks = np.arange(lo_pfn // ppb, (hi_pfn - 1) // ppb + 1, dtype=np.int64)
        pages = np.minimum(hi_pfn, (blocks + 1) * ppb) - np.maximum(lo_pfn, blocks * ppb)
        cover_blocks.append(blocks)
        cover_pages.append(sign * pages)
        return blocks

    for ram in rams:
        lo, hi = ram["start"] // page, ram["end"] // page
        blocks = cover(lo, hi, +1)
        for hs, he, _ in ram["holes"]:
            cover(hs // page, he // page, -1)
            holes_pfn.append((hs // page, he // page))
        for key, value in (("block", blocks), ("zone", ram["zone"].code), ("node", ram["node"]),
                           ("state", 0 if ram["state"] == "online" else 1), ("memmap", int(ram["memmap"]))):
            attr[key].append(np.broadcast_to(np.int64(value), blocks.shape) if key != "block" else blocks)
        cma_pfn.extend(ram["cma"])
    empty = np.zeros(0, dtype=np.int64)
    ram_ids, cover_inverse = np.unique(np.concatenate(cover_blocks or [empty]), return_inverse=True)
    ram_pages = np.zeros(len(ram_ids), dtype=np.int64)
    np.add.at(ram_pages, cover_inverse, np.concatenate(cover_pages or [empty]))
    attr_rows = np.searchsorted(ram_ids, np.concatenate(attr["block"] or [empty]))
    columns: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    for key in ("zone", "node", "state", "memmap"):
        values = np.concatenate(attr[key] or [empty])
        low = np.full(len(ram_ids), np.iinfo(np.int64).max, dtype=np.int64)
        high = np.full(len(ram_ids), np.iinfo(np.int64).min, dtype=np.int64)
        np.minimum.at(low, attr_rows, values)
        np.maximum.at(high, attr_rows, values)
        columns[key] = (low, high)
    # virtio-mem blocks: the device decides everything about the blocks it added.
    dev_cols = [virtio_mem.added_block_columns(device, geometry) for device in devices]
    dev_ids = np.concatenate([c.blocks for c in dev_cols] or [empty])
    all_ids = np.union1d(ram_ids, dev_ids)
    n_all = len(all_ids)
    in_ram = np.searchsorted(all_ids, ram_ids)
    pages_col = np.zeros(n_all, dtype=np.int64)
    pages_col[in_ram] = ram_pages
    cols: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    for key, (low, high) in columns.items():
        a, b = np.zeros(n_all, dtype=np.int64), np.zeros(n_all, dtype=np.int64)
        a[in_ram], b[in_ram] = low, high
        cols[key] = (a, b)
    device_col = np.full(n_all, -1, dtype=np.int32)
    for index, (device, c) in enumerate(zip(devices, dev_cols)):
        rows = np.searchsorted(all_ids, c.blocks)
        pages_col[rows] = ppb
        for key, value in (("zone", c.zone.astype(np.int64)), ("node", device.node),
                           ("state", np.where(c.online, 0, 1))):
            cols[key][0][rows] = value
            cols[key][1][rows] = value
        device_col[rows] = index
    keep = pages_col > 0
    ids = all_ids[keep]
    zone_lo, zone_hi = (c[keep] for c in cols["zone"])
    node_lo, node_hi = (c[keep] for c in cols["node"])
    state_lo, state_hi = (c[keep] for c in cols["state"])
    mixed_state = np.flatnonzero(state_lo != state_hi)
    if len(mixed_state):
        raise ProfileError(path, "ram", f"memory block {int(ids[mixed_state[0]])} is partly online and partly "
                           "offline; a block changes state as a whole")
    pages_kept = pages_col[keep]
    # Pages outside System RAM inside an existing block are holes (offline_pages step 3).
    for b in ids[pages_kept < ppb].tolist():
        covered = sorted((max(r["start"] // page, b * ppb), min(r["end"] // page, (b + 1) * ppb))
                         for r in rams if r["start"] // page < (b + 1) * ppb and r["end"] // page > b * ppb)
        cursor = b * ppb
        for lo, hi in covered:
            if lo > cursor:
                holes_pfn.append((cursor, lo))
            cursor = max(cursor, hi)
        if cursor < (b + 1) * ppb:
            holes_pfn.append((cursor, (b + 1) * ppb))
    highest_node = int(node_hi.max()) if len(ids) else None
    nodes = mach.integer("nodes", highest_node + 1 if highest_node is not None else 1, minimum=1)
    if highest_node is not None and highest_node >= nodes:
        raise mach.fail("nodes", f"{nodes} is too small: node {highest_node} is used")
    single = (zone_lo == zone_hi) & (node_lo == node_hi)
    table = BlockTable(
        ids=ids,
        state=state_lo,
        zone=np.where(single, zone_lo, ZONE_NONE),
        node=np.where(node_lo == node_hi, node_lo, -1),
        ram_pages=pages_kept,
        vmemmap=np.where(cols["memmap"][1][keep] > 0, geometry.vmemmap_pages_per_block, 0),
        device=device_col[keep],
    )
    id_list = ids.tolist()
    existing = set(id_list)
    online = set(ids[state_lo == 0].tolist())
    vmemmap = {b: int(n) for b, n in zip(id_list, table.vmemmap.tolist()) if n}
    device_of_rows = table.device

    # ---- fixed runs: holes, vmemmap, fake-offline -----------------------------------------
    fixed: List[PageRun] = [PageRun(lo, hi - lo, PageKind.HOLE) for lo, hi in merge_ranges(holes_pfn)]
    fixed += [PageRun(b * ppb, n, PageKind.VMEMMAP) for b, n in sorted(vmemmap.items()) if n]
    fake_ranges: List[Tuple[int, int]] = []
    for device in devices:
        fake_ranges.extend(virtio_mem.fake_offline_ranges(device, geometry))
    fixed += [PageRun(lo, hi - lo, PageKind.FAKE_OFFLINE) for lo, hi in fake_ranges]

    # ---- [[pages]] -----------------------------------------------------------------------
    explicit: List[Tuple[int, int, str]] = []
    explicit_runs: List[PageRun] = []
    fake_starts = np.array(sorted(lo for lo, _ in fake_ranges), dtype=np.int64)
    fake_ends = np.array(sorted(hi for _, hi in fake_ranges), dtype=np.int64)
    hole_list = merge_ranges(holes_pfn)
    for i, tbl in enumerate(_tables(path, doc, "pages")):
        p = _Reader(path, f"pages[{i}]", tbl, _PAGES)
        pfn = p.size("pfn", required=True)
        count = p.integer("count", 1, minimum=1)
        kind_name = p.raw("kind")
        if kind_name not in PROFILE_KINDS:
            raise p.fail("kind", f"{kind_name!r} is not a page kind", hint=did_you_mean(str(kind_name), PROFILE_KINDS))
        kind = PageKind.from_label(kind_name)
        refcount = p.integer("refcount", None)
        end = pfn + count
        for block in (pfn // ppb, (end - 1) // ppb):
            if block not in existing:
                raise p.fail("pfn", f"{pfn:#x}+{count} is not inside an existing memory block (block {block})")
            if block not in online:
                raise p.fail("pfn", f"memory block {block} is offline; its memmap is stale")
        missing = [b for b in range(pfn // ppb, (end - 1) // ppb + 1) if b not in existing]
        if missing:
            raise p.fail("pfn", f"{pfn:#x}+{count} crosses block {missing[0]}, which does not exist")
        order = int(FOLIO_ORDER[int(kind)])
        if order and (pfn % (1 << order) or count % (1 << order)):
            raise p.fail("pfn", f"{kind_name} occupies whole {(1 << order) * page >> 20} MiB folios: pfn and count "
                         f"must be multiples of {1 << order}")
        for lo, hi in hole_list:
            if lo < end and hi > pfn:
                raise p.fail("pfn", f"{pfn:#x}+{count} overlaps a memory hole at pfn {lo:#x}")
        in_fake = _covered(fake_starts, fake_ends, pfn, end)
        if kind is PageKind.FAKE_OFFLINE and in_fake != count:
            raise p.fail("kind", "fake_offline pages exist only in unplugged virtio-mem sub-blocks (or fake-offline "
                         "big blocks) of online blocks; use 'balloon' for other unmovable PageOffline pages")
        if kind is not PageKind.FAKE_OFFLINE and in_fake:
            raise p.fail("pfn", f"{pfn:#x}+{count} lies in unplugged virtio-mem memory (fake-offline pages)")
        if kind is PageKind.VMEMMAP and pfn % ppb:
            raise p.fail("pfn", "vmemmap pages sit at the start of a memory block (memmap_on_memory)")
        if kind is PageKind.VMEMMAP and end > (pfn // ppb + 1) * ppb:
            raise p.fail("count", "vmemmap pages stay inside one memory block")
        if kind is PageKind.VMEMMAP and int(table.vmemmap[table.rows([pfn // ppb])[0]]):
            raise p.fail("kind", "this block already has memmap_on_memory pages from its [[ram]] range")
        explicit.append((pfn, end, f"pages[{i}]"))
        explicit_runs.append(PageRun(pfn, count, kind, refcount))
        if kind is PageKind.VMEMMAP:
            table.vmemmap[table.rows([pfn // ppb])[0]] = count
    clash = _overlap(explicit)
    if clash:
        raise ProfileError(path, clash[1], f"overlaps {clash[0]}")

    # ---- [[fill]] ------------------------------------------------------------------------
    fills: List[Fill] = []
    fill_row = np.full(len(ids), -1, dtype=np.int32)  # fill index per table row
    fill_keys: List[str] = []
    for i, tbl in enumerate(_tables(path, doc, "fill")):
        f = _Reader(path, f"fill[{i}]", tbl, _FILL_META | set(PROFILE_KINDS))
        target = f.raw("blocks")
        if target is None:
            raise f.fail("blocks", "is required (\"all\", a block range like \"32-63\", or a virtio_mem id)")
        if target == "all":
            rows = np.arange(len(ids))
        elif isinstance(target, str) and target in seen_ids:
            index = [d.id for d in devices].index(target)
            rows = np.flatnonzero(device_of_rows == index)
        else:
            try:
                spans = parse_block_spans(target)
            except ValueError as exc:
                raise f.fail("blocks", str(exc), hint=did_you_mean(str(target), sorted(seen_ids))) from None
            wanted = _span_indexes(spans, None)
            present = table.exists(wanted)
            if not present.all():
                raise f.fail("blocks", f"memory block {int(wanted[~present][0])} does not exist")
            rows = table.rows(wanted)
        seed = f.integer("seed", 0)
        fractions: Dict[PageKind, float] = {}
        for key, value in tbl.items():
            if key in _FILL_META:
                continue
            if key not in FILL_KINDS:
                raise f.fail(key, f"{key} cannot be drawn by a fill; place it with [[pages]]")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise f.fail(key, f"{value!r} is not a fraction between 0 and 1")
            fractions[PageKind.from_label(key)] = float(value)
        total = sum(fractions.values())
        if total > 1 + 1e-9:
            raise f.fail("blocks", f"fractions add up to {total:g}, over 1")
        taken = np.flatnonzero(fill_row[rows] >= 0)
        if len(taken):
            row = int(rows[taken[0]])
            raise f.fail("blocks", f"memory block {int(ids[row])} is already filled by {fill_keys[fill_row[row]]}")
        fill_row[rows] = len(fills)
        fill_keys.append(f"fill[{i}]")
        fills.append(Fill(blocks=tuple(ids[rows].tolist()), seed=seed, fractions=fractions))
    filled = fill_row >= 0
    fill_of = dict(zip(ids[filled].tolist(), fill_row[filled].tolist()))

    # ---- [environment] -------------------------------------------------------------------
    env = _Reader(path, "environment", doc.get("environment", {}), _ENV)
    pools: Dict[int, HugetlbPool] = {}
    for key, order in (("hugetlb_2m", 9), ("hugetlb_1g", 18)):
        if env.has(key):
            pool = _Reader(path, f"environment.{key}", env.raw(key), {"free", "resv"})
            pools[order] = HugetlbPool(free=pool.integer("free", None), resv=pool.integer("resv", 0))
    isolated = env.pageblock_ranges("isolated", geometry)
    environment = Environment(
        signal_pending=env.boolean("signal_pending", False),
        notifier_veto=_errno(env, "notifier_veto"),
        node_notifier_veto=_errno(env, "node_notifier_veto"),
        hugetlb=pools,
        isolated=tuple(isolated),
        foreign_ref_dropped=ForeignRefTiming(env.choice("foreign_ref_dropped", [t.value for t in ForeignRefTiming],
                                                         "never")),
    )

    source = ProfilePageSource(geometry, fills, fill_of, fixed + explicit_runs)
    return Machine(
        name=name, source=path, geometry=geometry, blocks=table, pages=source, devices=tuple(devices),
        environment=environment, default_semantics=semantics, nodes=nodes, kernel=kernel,
        cma=tuple(merge_ranges(cma_pfn)), warnings=tuple(warnings),
    )


def _span_indexes(spans: Sequence[Tuple[int, int]], limit: Optional[int]) -> np.ndarray:
    """The sorted, distinct indexes of inclusive ``spans``, built without a Python int per index.

    With a ``limit``, an index at or beyond it is returned alone (the caller reports it) instead
    of allocating a map that large.
    """
    if not spans:
        return np.zeros(0, dtype=np.int64)
    highest = max(hi for _, hi in spans)
    if limit is not None and highest >= limit:
        return np.array([highest], dtype=np.int64)
    base = min(lo for lo, _ in spans)
    if limit is None and highest - base > 64 * len(spans) + (1 << 20):
        # Sparse ids (large block numbers): concatenate the spans instead of a dense map.
        return np.unique(np.concatenate([np.arange(lo, hi + 1, dtype=np.int64) for lo, hi in spans]))
    present = np.zeros(highest - base + 1, dtype=bool)
    for lo, hi in spans:  # one slice per span as written in the profile, not one per index
        present[lo - base:hi - base + 1] = True
    return np.flatnonzero(present) + base


def merge_ranges(ranges: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """Merge overlapping or touching [start, end) ranges."""
    merged: List[Tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _covered(starts: np.ndarray, ends: np.ndarray, lo: int, hi: int) -> int:
    """How many pfns of [lo, hi) the sorted, disjoint ranges cover."""
    if not len(starts):
        return 0
    total = 0
    first = int(np.searchsorted(ends, lo, side="right"))
    for s, e in zip(starts[first:], ends[first:]):
        if s >= hi:
            break
        total += max(0, min(hi, int(e)) - max(lo, int(s)))
    return total


def profile_description(path: str) -> str:
    """The ``[machine] description`` of a profile file (empty if none or unreadable)."""
    try:
        with open(path, "rb") as handle:
            doc = toml.loads(handle.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, toml.TOMLDecodeError):
        return ""
    machine = doc.get("machine", {})
    return str(machine.get("description", "")) if isinstance(machine, dict) else ""
