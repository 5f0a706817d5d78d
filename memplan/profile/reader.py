"""Machine profiles, format 1 (TOML): the public contract documented in the README.

``load_profile(path)`` validates everything up front (black/sklearn style): after it returns,
the model can assume consistent input. Every problem is one ``ProfileError`` naming the file,
the key and the value. ``build_machine`` reads one section after the other, in the order
their checks depend on: ``[machine]``, ``[[ram]]``, ``[[virtio_mem]]``, the memory blocks both
make, ``[[pages]]``, ``[[fill]]`` and ``[environment]``.

Format 1 describes an x86-64 machine with 4 KiB pages; every page-size-dependent number
(pageblocks, folio orders, hugetlb orders) comes from the machine's ``Geometry``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from memplan.core.arrays import IntArray
from memplan.core.errors import ProfileError, did_you_mean
from memplan.core.geometry import Geometry
from memplan.core.machine import BlockTable, Environment, Fill, HugetlbPool, Machine, PageRun, VirtioMemDevice
from memplan.core.model import (
    KIND_INFO,
    PROFILE_KINDS,
    ZONE_NONE,
    DriverState,
    FolioSize,
    ForeignRefTiming,
    OnlineType,
    PageKind,
)
from memplan.core.units import parse_block_ranges, parse_block_spans
from memplan.kernel import virtio_mem
from memplan.kernel.semantics import SEMANTICS
from memplan.profile import toml
from memplan.profile.layout import (
    BlockColumns,
    RamRange,
    boundary_holes,
    merge_ranges,
    node_spans,
    ram_columns,
    with_devices,
)
from memplan.profile.population import ProfilePageSource
from memplan.profile.table import Interval, TableReader, array_of_tables, check_disjoint

FORMAT = 1

#: ``[environment]`` hugetlb pool keys and the folio size of their hstate
HUGETLB_POOLS: Tuple[Tuple[str, FolioSize], ...] = (("hugetlb_2m", FolioSize.PMD), ("hugetlb_1g", FolioSize.PUD))

_TOP = {"format", "machine", "ram", "virtio_mem", "fill", "pages", "environment"}
_MACHINE = {"name", "description", "memory_block_size", "semantics", "nodes", "kernel"}
_RAM = {"start", "size", "zone", "node", "state", "holes", "cma", "memmap_on_memory"}
_HOLE = {"start", "size"}
_VMEM = {"id", "addr", "region_size", "block_size", "mode", "bbm_block_size", "plugged", "plugged_size",
         "online", "node", "driver", "fake_offline_big_blocks", "unplug_online", "offline_blocks"}
_FILL_META = {"blocks", "seed"}
_PAGES = {"pfn", "count", "kind", "refcount"}
_ENV = {"signal_pending", "notifier_veto", "node_notifier_veto", "isolated", "foreign_ref_dropped"} | {
    key for key, _ in HUGETLB_POOLS}
_POOL = {"free", "resv"}
#: kinds placed by the machine itself (virtio-mem, memmap_on_memory), never drawn by a fill
_FIXED_KINDS = (PageKind.FAKE_OFFLINE, PageKind.VMEMMAP)
#: kinds a fill may draw (fixed kinds and PUD-sized (1 GiB) folios are placed with [[pages]])
FILL_KINDS = tuple(kind.label for kind, info in KIND_INFO.items()
                   if info.profile and info.folio is not FolioSize.PUD and kind not in _FIXED_KINDS)


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


def build_machine(doc: Dict[str, Any], path: str = "<profile>") -> Machine:
    """Validate a parsed profile document and build the machine it describes."""
    _read_format(path, doc)
    header = _read_machine(path, doc)
    geometry = header.geometry
    rams = [_read_ram(path, i, table, geometry) for i, table in enumerate(array_of_tables(path, doc, "ram"))]
    devices, warnings = _read_devices(path, doc, geometry)
    _check_memory(path, rams, devices)
    blocks = _read_blocks(path, rams, devices, geometry)
    table = blocks.table
    nodes = _read_nodes(header.table, blocks.highest_node)
    fixed = _fixed_runs(geometry, table, blocks.holes, devices)
    explicit = _read_pages(path, doc, geometry, table, fixed)
    fills, fill_of = _read_fills(path, doc, table, devices)
    environment = _read_environment(path, doc, geometry)
    source = ProfilePageSource(geometry, fills, fill_of, fixed.runs + explicit)
    return Machine(
        name=header.name, source=path, geometry=geometry, blocks=table, pages=source, devices=tuple(devices),
        environment=environment, default_semantics=header.semantics, nodes=nodes, kernel=header.kernel,
        cma=tuple(merge_ranges([r for ram in rams for r in ram.cma])), warnings=tuple(warnings),
    )


# ---- format and [machine] -----------------------------------------------------------------

def _read_format(path: str, doc: Dict[str, Any]) -> None:
    """The top-level keys, and ``format = 1``."""
    top = TableReader(path, "", doc, _TOP)
    fmt = top.raw("format")
    if fmt is None:
        raise ProfileError(path, "format", "is required (format = 1)")
    if fmt != FORMAT:
        raise ProfileError(path, "format", f"{fmt!r} is not supported (this memplan reads format {FORMAT})")


@dataclass(frozen=True)
class _Header:
    """``[machine]``; ``nodes`` is read once the memory blocks are known (``table``)."""

    table: TableReader
    name: str
    geometry: Geometry
    #: ``None``: mainline (``memplan.kernel.semantics.MAINLINE``)
    semantics: Optional[str]
    kernel: Optional[str]


def _read_machine(path: str, doc: Dict[str, Any]) -> _Header:
    mach = TableReader(path, "machine", doc.get("machine", {}), _MACHINE)
    name = mach.string("name", os.path.splitext(os.path.basename(path))[0]) or "machine"
    block_size = mach.size("memory_block_size", Geometry().memory_block_size)
    try:
        geometry = Geometry(memory_block_size=block_size)
    except ValueError as exc:
        raise mach.fail("memory_block_size", str(exc)) from None
    semantics = mach.choice("semantics", list(SEMANTICS), None)
    kernel = mach.string("kernel")
    mach.string("description")
    return _Header(mach, name, geometry, semantics, kernel)


def _read_nodes(mach: TableReader, highest: Optional[int]) -> int:
    """``[machine] nodes``: at least one more than the highest node a block uses."""
    nodes = mach.count("nodes", highest + 1 if highest is not None else 1, minimum=1)
    if highest is not None and highest >= nodes:
        raise mach.fail("nodes", f"{nodes} is too small: node {highest} is used")
    return nodes


# ---- [[ram]] --------------------------------------------------------------------------------

def _read_ram(path: str, i: int, table: Any, geometry: Geometry) -> RamRange:
    r = TableReader(path, f"ram[{i}]", table, _RAM)
    start, size = r.required_size("start"), r.required_size("size")
    for key, value in (("start", start), ("size", size)):
        if value % geometry.pageblock_size:
            raise r.fail(key, f"{value:#x} is not aligned to a {geometry.pageblock_size >> 20} MiB pageblock")
    if size == 0:
        raise r.fail("size", "must not be 0")
    zone = r.zone("zone")
    node = r.count("node", 0)
    online = r.choice("state", ["online", "offline"], "online") == "online"
    holes = _read_holes(r, start, start + size, geometry)
    cma = r.pageblock_ranges("cma", geometry, within=(start, start + size))
    memmap = r.boolean("memmap_on_memory", False)
    if memmap:
        if start % geometry.memory_block_size or size % geometry.memory_block_size:
            raise r.fail("memmap_on_memory", "needs a range aligned to whole memory blocks (hot-added memory)")
        if holes:
            raise r.fail("memmap_on_memory", "hot-added memory has no holes")
    return RamRange(start, start + size, zone, node, online, tuple(holes), tuple(cma), memmap)


def _read_holes(r: TableReader, start: int, end: int, geometry: Geometry) -> List[Tuple[int, int]]:
    """``holes = [{ start, size }, ...]`` of one range: whole pages inside it, disjoint."""
    raw = r.raw("holes", [])
    if not isinstance(raw, list):
        raise r.fail("holes", "must be an array of { start, size } tables")
    page = geometry.page_size
    holes: List[Interval] = []
    for j, hole in enumerate(raw):
        h = r.child(f"holes[{j}]", hole, _HOLE)
        hs, hz = h.required_size("start"), h.required_size("size")
        if hs % page or hz % page or hz == 0:
            raise h.fail("start", f"{hs:#x}+{hz:#x} is not a whole number of pages")
        if hs < start or hs + hz > end:
            raise h.fail("start", f"{hs:#x}-{hs + hz - 1:#x} is outside the range")
        holes.append((hs, hs + hz, h.prefix))
    check_disjoint(r.path, holes)
    return [(lo, hi) for lo, hi, _ in holes]


# ---- [[virtio_mem]] -------------------------------------------------------------------------

def _read_devices(path: str, doc: Dict[str, Any], geometry: Geometry) -> Tuple[List[VirtioMemDevice], List[str]]:
    devices: List[VirtioMemDevice] = []
    warnings: List[str] = []
    for i, table in enumerate(array_of_tables(path, doc, "virtio_mem")):
        v = TableReader(path, f"virtio_mem[{i}]", table, _VMEM)
        device, dev_warnings = _read_device(v, geometry, {d.id for d in devices})
        warnings.extend(dev_warnings)
        devices.append(device)
    return devices, warnings


def _read_device(v: TableReader, geometry: Geometry, seen_ids: Set[str]) -> Tuple[VirtioMemDevice, List[str]]:
    """One ``[[virtio_mem]]`` table, configured the way ``virtio_mem_init_hotplug()`` sees it."""
    dev_id = v.string("id")
    if not dev_id:
        raise v.fail("id", "is required")
    if dev_id in seen_ids:
        raise v.fail("id", f"{dev_id!r} is used twice")
    plugged_spans = _plugged_spans(v)
    fake_bbs = _block_list(v, "fake_offline_big_blocks")
    offline_blocks = _block_list(v, "offline_blocks")
    addr, region = v.required_size("addr"), v.required_size("region_size")
    # default: one PMD-sized (THP) folio, 2 MiB with 4 KiB pages (QEMU's default block-size on x86-64)
    device_block_size = v.size("block_size", geometry.page_size << geometry.pmd_order)
    plugged_blocks = None
    if plugged_spans is not None:
        plugged_blocks = _span_indexes(plugged_spans, region // device_block_size if device_block_size else 0)
    try:
        return virtio_mem.configure(
            geometry, id=dev_id, addr=addr, region_size=region,
            device_block_size=device_block_size,
            mode=v.choice("mode", ["auto", "sbm", "bbm"], "auto") or "auto",
            bbm_block_size=v.size("bbm_block_size", 0),
            plugged_blocks=plugged_blocks, plugged_size=v.size("plugged_size"),
            online=OnlineType(v.choice("online", [o.value for o in OnlineType], "movable")),
            node=v.count("node", 0),
            driver=DriverState(v.choice("driver", [d.value for d in DriverState], "loaded")),
            fake_offline_big_blocks=fake_bbs,
            unplug_online=v.boolean("unplug_online", True),
            offline_blocks=offline_blocks,
        )
    except virtio_mem.DeviceConfigError as exc:
        raise v.fail(exc.key, str(exc)) from None


def _plugged_spans(v: TableReader) -> Optional[List[Tuple[int, int]]]:
    """``plugged = ["0-1535", ...]``: device-block spans, or ``None`` when not given."""
    raw = v.raw("plugged")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise v.fail("plugged", "must be a list of device-block ranges like [\"0-1535\"]")
    spans: List[Tuple[int, int]] = []
    for j, item in enumerate(raw):
        try:
            spans.extend(parse_block_spans(item))
        except ValueError as exc:
            raise v.fail(f"plugged[{j}]", str(exc)) from None
    return spans


def _block_list(v: TableReader, name: str) -> List[int]:
    """A block range list (lsmem syntax) such as ``offline_blocks = "33-35"``."""
    if not v.has(name):
        return []
    try:
        return parse_block_ranges(v.raw(name))
    except ValueError as exc:
        raise v.fail(name, str(exc)) from None


def _check_memory(path: str, rams: Sequence[RamRange], devices: Sequence[VirtioMemDevice]) -> None:
    """RAM ranges and device regions are disjoint, and there is some memory."""
    intervals = [(r.start, r.end, f"ram[{i}]") for i, r in enumerate(rams)]
    intervals += [(d.addr, d.addr + d.region_size, f"virtio_mem[{i}]") for i, d in enumerate(devices)]
    check_disjoint(path, intervals)
    if not rams and not devices:
        raise ProfileError(path, "ram", "the profile describes no memory (add [[ram]] or [[virtio_mem]])")


# ---- memory blocks --------------------------------------------------------------------------

@dataclass(frozen=True)
class _Blocks:
    table: BlockTable
    #: merged hole pfn ranges: ``[[ram]]`` holes and the parts of existing blocks outside System RAM
    holes: List[Tuple[int, int]]
    #: the highest node any block touches (``None``: no block)
    highest_node: Optional[int]


def _read_blocks(path: str, rams: Sequence[RamRange], devices: Sequence[VirtioMemDevice],
                 geometry: Geometry) -> _Blocks:
    cols = with_devices(ram_columns(rams, geometry), devices, geometry)
    cols = cols.take(np.flatnonzero(cols.pages > 0))
    mixed = np.flatnonzero(cols.low["state"] != cols.high["state"])
    if len(mixed):
        raise ProfileError(path, "ram", f"memory block {int(cols.ids[mixed[0]])} is partly online and partly "
                           "offline; a block changes state as a whole")
    page = geometry.page_size
    holes = [(hs // page, he // page) for ram in rams for hs, he in ram.holes]
    holes += boundary_holes(cols.ids, cols.pages, rams, geometry)
    highest = int(cols.high["node"].max()) if len(cols.ids) else None
    spans = node_spans(rams, geometry, cols.ids[cols.low["node"] != cols.high["node"]])
    return _Blocks(_table_of(cols, geometry, spans), merge_ranges(holes), highest)


def _table_of(cols: BlockColumns, geometry: Geometry, spans: Dict[int, Dict[int, int]]) -> BlockTable:
    zone_lo, zone_hi = cols.low["zone"], cols.high["zone"]
    node_lo, node_hi = cols.low["node"], cols.high["node"]
    single = (zone_lo == zone_hi) & (node_lo == node_hi)
    return BlockTable(
        ids=cols.ids,
        state=cols.low["state"],
        zone=np.where(single, zone_lo, ZONE_NONE),
        node=np.where(node_lo == node_hi, node_lo, -1),
        ram_pages=cols.pages,
        vmemmap=np.where(cols.high["memmap"] > 0, geometry.vmemmap_pages_per_block, 0),
        device=cols.device,
        spans=spans,
    )


@dataclass(frozen=True)
class _FixedPages:
    """Pages the machine fixes itself: holes, vmemmap, virtio-mem fake-offline ranges."""

    runs: List[PageRun]
    #: sorted starts and ends of the fake-offline pfn ranges (disjoint)
    fake_starts: IntArray
    fake_ends: IntArray
    hole_starts: IntArray
    hole_ends: IntArray


def _fixed_runs(geometry: Geometry, table: BlockTable, holes: List[Tuple[int, int]],
                devices: Sequence[VirtioMemDevice]) -> _FixedPages:
    ppb = geometry.pages_per_block
    runs = [PageRun(lo, hi - lo, PageKind.HOLE) for lo, hi in holes]
    hosting = np.flatnonzero(table.vmemmap)
    runs += [PageRun(b * ppb, n, PageKind.VMEMMAP)
             for b, n in zip(table.ids[hosting].tolist(), table.vmemmap[hosting].tolist())]
    fake = [r for device in devices for r in virtio_mem.fake_offline_ranges(device, geometry)]
    runs += [PageRun(lo, hi - lo, PageKind.FAKE_OFFLINE) for lo, hi in fake]

    def column(values: Sequence[int]) -> IntArray:
        return np.array(sorted(values), dtype=np.int64)

    return _FixedPages(runs, column([lo for lo, _ in fake]), column([hi for _, hi in fake]),
                       column([lo for lo, _ in holes]), column([hi for _, hi in holes]))


# ---- [[pages]] ------------------------------------------------------------------------------

def _read_pages(path: str, doc: Dict[str, Any], geometry: Geometry, table: BlockTable,
                fixed: _FixedPages) -> List[PageRun]:
    """Explicit pages: whole folios inside online blocks, clear of holes and fake-offline ranges.

    A ``vmemmap`` run sets the block's self-hosted memmap (``memmap_on_memory``)."""
    runs: List[PageRun] = []
    intervals: List[Interval] = []
    rows = dict(zip(table.ids.tolist(), range(len(table))))  # one dict lookup per entry, not numpy calls
    for i, tbl in enumerate(array_of_tables(path, doc, "pages")):
        p = TableReader(path, f"pages[{i}]", tbl, _PAGES)
        run = _read_page_run(p, geometry, table, rows)
        _check_fixed_pages(p, run, geometry, table, rows, fixed)
        intervals.append((run.pfn, run.pfn + run.count, p.prefix))
        runs.append(run)
        if run.kind is PageKind.VMEMMAP:
            table.vmemmap[rows[run.pfn // geometry.pages_per_block]] = run.count
    check_disjoint(path, intervals)
    return runs


def _read_page_run(p: TableReader, geometry: Geometry, table: BlockTable, rows: Dict[int, int]) -> PageRun:
    """One ``[[pages]]`` table: a run of whole folios of one kind inside existing, online blocks."""
    ppb = geometry.pages_per_block
    pfn = p.required_size("pfn")
    count = p.count("count", 1, minimum=1)
    kind_name = p.raw("kind")
    if kind_name not in PROFILE_KINDS:
        raise p.fail("kind", f"{kind_name!r} is not a page kind", hint=did_you_mean(str(kind_name), PROFILE_KINDS))
    kind = PageKind.from_label(kind_name)
    refcount = p.integer("refcount", None)
    first, last = pfn // ppb, (pfn + count - 1) // ppb
    for block in (first, last):
        if block not in rows:
            raise p.fail("pfn", f"{pfn:#x}+{count} is not inside an existing memory block (block {block})")
        if table.state[rows[block]] != 0:  # not online
            raise p.fail("pfn", f"memory block {block} is offline; its memmap is stale")
    if last - first > 1:
        spanned = np.arange(first, last + 1, dtype=np.int64)
        missing = spanned[~table.exists(spanned)]
        if len(missing):
            raise p.fail("pfn", f"{pfn:#x}+{count} crosses block {int(missing[0])}, which does not exist")
    order = int(geometry.folio_order[int(kind)])
    if order and (pfn % (1 << order) or count % (1 << order)):
        raise p.fail("pfn", f"{kind_name} occupies whole {(1 << order) * geometry.page_size >> 20} MiB folios: "
                     f"pfn and count must be multiples of {1 << order}")
    return PageRun(pfn, count, kind, refcount)


def _check_fixed_pages(p: TableReader, run: PageRun, geometry: Geometry, table: BlockTable, rows: Dict[int, int],
                       fixed: _FixedPages) -> None:
    """An explicit run stays clear of holes; only ``fake_offline`` lies in (and fills) virtio-mem's
    fake-offline ranges; ``vmemmap`` sits at a block start where [[ram]] put none."""
    pfn, count, kind = run.pfn, run.count, run.kind
    end = pfn + count
    hole = _first_overlap(fixed.hole_starts, fixed.hole_ends, pfn, end)
    if hole is not None:
        raise p.fail("pfn", f"{pfn:#x}+{count} overlaps a memory hole at pfn {hole:#x}")
    in_fake = _covered(fixed.fake_starts, fixed.fake_ends, pfn, end)
    if kind is PageKind.FAKE_OFFLINE and in_fake != count:
        raise p.fail("kind", "fake_offline pages exist only in unplugged virtio-mem sub-blocks (or fake-offline "
                     "big blocks) of online blocks; use 'balloon' for other unmovable PageOffline pages")
    if kind is not PageKind.FAKE_OFFLINE and in_fake:
        raise p.fail("pfn", f"{pfn:#x}+{count} lies in unplugged virtio-mem memory (fake-offline pages)")
    if kind is not PageKind.VMEMMAP:
        return
    ppb = geometry.pages_per_block
    if pfn % ppb:
        raise p.fail("pfn", "vmemmap pages sit at the start of a memory block (memmap_on_memory)")
    if end > (pfn // ppb + 1) * ppb:
        raise p.fail("count", "vmemmap pages stay inside one memory block")
    if int(table.vmemmap[rows[pfn // ppb]]):
        raise p.fail("kind", "this block already has memmap_on_memory pages from its [[ram]] range")


def _first_overlap(starts: IntArray, ends: IntArray, lo: int, hi: int) -> Optional[int]:
    """The start of the first of the sorted, disjoint ranges that overlaps [lo, hi), if any."""
    first = int(np.searchsorted(ends, lo, side="right"))
    if first < len(starts) and int(starts[first]) < hi:
        return int(starts[first])
    return None


def _covered(starts: IntArray, ends: IntArray, lo: int, hi: int) -> int:
    """How many pfns of [lo, hi) the sorted, disjoint ranges cover."""
    first = int(np.searchsorted(ends, lo, side="right"))
    last = int(np.searchsorted(starts, hi, side="left"))
    if last <= first:
        return 0
    return int((np.minimum(ends[first:last], hi) - np.maximum(starts[first:last], lo)).sum())


# ---- [[fill]] -------------------------------------------------------------------------------

def _read_fills(path: str, doc: Dict[str, Any], table: BlockTable,
                devices: Sequence[VirtioMemDevice]) -> Tuple[List[Fill], Dict[int, int]]:
    """The fills and, per filled block, the index of its fill (a block has at most one)."""
    fills: List[Fill] = []
    fill_row = np.full(len(table), -1, dtype=np.int32)  # fill index per table row
    for i, tbl in enumerate(array_of_tables(path, doc, "fill")):
        f = TableReader(path, f"fill[{i}]", tbl, _FILL_META | set(PROFILE_KINDS))
        rows = _fill_rows(f, table, devices)
        seed = f.count("seed", 0)
        fractions = _fill_fractions(f)
        taken = np.flatnonzero(fill_row[rows] >= 0)
        if len(taken):
            row = int(rows[taken[0]])
            raise f.fail("blocks", f"memory block {int(table.ids[row])} is already filled by "
                         f"fill[{fill_row[row]}]")
        fill_row[rows] = len(fills)
        fills.append(Fill(blocks=tuple(table.ids[rows].tolist()), seed=seed, fractions=fractions))
    filled = fill_row >= 0
    return fills, dict(zip(table.ids[filled].tolist(), fill_row[filled].tolist()))


def _fill_rows(f: TableReader, table: BlockTable, devices: Sequence[VirtioMemDevice]) -> np.ndarray:
    """``blocks = "all" | "32-63" | "<virtio_mem id>"`` as rows of the block table."""
    target = f.raw("blocks")
    if target is None:
        raise f.fail("blocks", "is required (\"all\", a block range like \"32-63\", or a virtio_mem id)")
    if target == "all":
        return np.arange(len(table))
    ids = [d.id for d in devices]
    if isinstance(target, str) and target in ids:
        return np.flatnonzero(table.device == ids.index(target))
    try:
        spans = parse_block_spans(target)
    except ValueError as exc:
        raise f.fail("blocks", str(exc), hint=did_you_mean(str(target), sorted(ids))) from None
    wanted = _span_indexes(spans, None)
    present = table.exists(wanted)
    if not present.all():
        raise f.fail("blocks", f"memory block {int(wanted[~present][0])} does not exist")
    return table.rows(wanted)


def _fill_fractions(f: TableReader) -> Dict[PageKind, float]:
    """The ``kind = fraction`` keys of a fill (kinds a fill may draw; at most 1 in total)."""
    fractions: Dict[PageKind, float] = {}
    for key, value in f.table.items():
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
    return fractions


# ---- [environment] --------------------------------------------------------------------------

def _read_environment(path: str, doc: Dict[str, Any], geometry: Geometry) -> Environment:
    env = TableReader(path, "environment", doc.get("environment", {}), _ENV)
    pools = _read_pools(env, geometry)
    isolated = env.pageblock_ranges("isolated", geometry)
    timings = [t.value for t in ForeignRefTiming]
    return Environment(
        signal_pending=env.boolean("signal_pending", False),
        notifier_veto=env.errno("notifier_veto"),
        node_notifier_veto=env.errno("node_notifier_veto"),
        hugetlb=pools,
        isolated=tuple(isolated),
        foreign_ref_dropped=ForeignRefTiming(env.choice("foreign_ref_dropped", timings, "never")),
    )


def _read_pools(env: TableReader, geometry: Geometry) -> Dict[int, HugetlbPool]:
    """``hugetlb_2m = { free, resv }`` and ``hugetlb_1g``: pool counters keyed by folio order."""
    pools: Dict[int, HugetlbPool] = {}
    for key, size in HUGETLB_POOLS:
        if env.has(key):
            pool = env.child(key, env.raw(key), _POOL)
            pools[geometry.order_of(size)] = HugetlbPool(free=pool.integer("free", None), resv=pool.count("resv", 0))
    return pools


# ---- helpers --------------------------------------------------------------------------------

def _span_indexes(spans: Sequence[Tuple[int, int]], limit: Optional[int]) -> IntArray:
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


def profile_description(path: str) -> str:
    """The ``[machine] description`` of a profile file (empty if none or unreadable)."""
    try:
        with open(path, "rb") as handle:
            doc = toml.loads(handle.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, toml.TOMLDecodeError):
        return ""
    machine = doc.get("machine", {})
    return str(machine.get("description", "")) if isinstance(machine, dict) else ""
