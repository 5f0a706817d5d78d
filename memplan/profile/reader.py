"""Machine profiles, formats 1 and 2 (TOML): the public contract documented in the README.

``load_profile(path)`` validates everything up front (black/sklearn style): after it returns,
the model can assume consistent input. Every problem is one ``ProfileError`` naming the file,
the key and the value (and the limit it breaks). ``build_machine`` reads one section after the
other, in the order their checks depend on: ``[machine]``, ``[[ram]]``, the ``[[virtio_mem]]``
regions, the memory that judging the machine needs (refused up front when this machine does
not have it), the devices, the memory blocks they all make, ``[[pages]]``, ``[[fill]]`` and
``[environment]``.

Every number is checked against what an x86-64 Linux machine can have (``memplan.core.limits``)
before it is used or allocated for, and every range stays a span: the work is proportional to
the memory the profile describes, never to the numbers it contains.

Formats 1 and 2 describe an x86-64 machine with 4 KiB pages; every page-size-dependent number
(pageblocks, folio orders, hugetlb orders) comes from the machine's ``Geometry``. They differ
only in how a ``[[fill]]`` draws its pages (``memplan.profile.population``): format 1 draws
every page, format 2 one kind per aligned group of 8 pages.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from memplan.core.arrays import IntArray
from memplan.core.errors import InputError, ProfileError, did_you_mean
from memplan.core.files import open_regular
from memplan.core.geometry import Geometry
from memplan.core.limits import (
    MAX_MEMORY_BLOCK_SIZE,
    MAX_NUMNODES,
    MAX_PROFILE_BYTES,
    MAX_REFCOUNT,
    MAX_SEED,
    max_address,
    memory_budget,
    needed_bytes,
)
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
from memplan.core.units import format_size, shown
from memplan.kernel import hugetlb as hugetlb_mod
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
from memplan.profile.table import (
    Interval,
    TableReader,
    array_of_tables,
    check_disjoint,
    first_missing,
    merge_spans,
    span_rows,
)

#: the profile formats this memplan reads, and the order of a fill's draw group in each
#: (``memplan.profile.population``): format 1 draws every page, format 2 groups of 8 pages
FORMATS: Dict[int, int] = {1: 0, 2: 3}
#: the format ``--write-profile`` keeps unless the profile it started from says otherwise
FORMAT = 1
#: what a device block of a virtio-mem region costs while the device is configured: the
#: plugged map as read, the driver's copy and the temporaries that check it (bytes)
DEVICE_BLOCK_BYTES = 4
#: why addresses stop where they do (``memplan.core.limits``)
_PHYS = "x86-64's MAX_PHYSMEM_BITS is 52: physical addresses stay below 0x10000000000000 (4P)"
_NODES = f"MAX_NUMNODES is {MAX_NUMNODES}"
#: ``uname -r``: at most ``__NEW_UTS_LEN`` (64) characters, starting with major.minor
_RELEASE = re.compile(r"[0-9]{1,4}\.[0-9]{1,4}(\.[0-9]{1,6})?([-+~_.][0-9A-Za-z._+~-]*)?")

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
    return build_machine(read_document(path), path)


def read_document(path: str) -> Dict[str, Any]:
    """The parsed TOML of a profile file: a regular file (a FIFO or a device is refused at
    once), at most ``MAX_PROFILE_BYTES``, UTF-8, TOML nested no deeper than the parser can go."""
    try:
        with open_regular(path, "profile") as handle:
            data = handle.read(MAX_PROFILE_BYTES + 1)
    except InputError as exc:
        message = exc.message[len(path) + 2:] if exc.message.startswith(f"{path}: ") else exc.message
        raise ProfileError(path, "", message.replace("cannot open profile:", "cannot read:")) from None
    except OSError as exc:
        raise ProfileError(path, "", f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_PROFILE_BYTES:
        raise ProfileError(path, "", f"is larger than {format_size(MAX_PROFILE_BYTES)}; a profile is a short "
                           "TOML file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(path, "", f"is not UTF-8 text (byte {exc.start})") from None
    return parse_document(path, text)


def parse_document(path: str, text: str) -> Dict[str, Any]:
    """``toml.loads`` with every way it can fail as one ``ProfileError``."""
    try:
        return toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise ProfileError(path, "", f"invalid TOML: {exc}") from None
    except RecursionError:
        raise ProfileError(path, "", "invalid TOML: arrays or tables nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ProfileError(path, "", f"invalid TOML: {str(exc).split(';')[0]}") from None
    except MemoryError:
        raise ProfileError(path, "", "is too large to parse in the memory available") from None


def build_machine(doc: Dict[str, Any], path: str = "<profile>") -> Machine:
    """Validate a parsed profile document and build the machine it describes."""
    group_order = FORMATS[_read_format(path, doc)]
    header = _read_machine(path, doc)
    geometry = header.geometry
    rams = [_read_ram(path, i, table, geometry) for i, table in enumerate(array_of_tables(path, doc, "ram"))]
    inputs: List[_DeviceInput] = []
    for i, table in enumerate(array_of_tables(path, doc, "virtio_mem")):
        inputs.append(_read_device_input(path, i, table, geometry, {d.id for d in inputs}))
    _check_memory(path, rams, inputs)
    _check_budget(path, rams, inputs, geometry)
    devices, warnings = _configure_devices(inputs, geometry)
    blocks = _read_blocks(path, rams, devices, geometry)
    table = blocks.table
    nodes = _read_nodes(header.table, blocks.highest_node)
    fixed = _fixed_runs(geometry, table, blocks.holes, devices)
    explicit = _read_pages(path, doc, geometry, table, fixed)
    fills, fill_ids, fill_index = _read_fills(path, doc, table, devices, group_order)
    source = ProfilePageSource(geometry, fills, fill_ids, fill_index, fixed.runs + explicit)
    environment = _read_environment(path, doc, geometry, table, source)
    return Machine(
        name=header.name, source=path, geometry=geometry, blocks=table, pages=source, devices=tuple(devices),
        environment=environment, default_semantics=header.semantics, nodes=nodes, kernel=header.kernel,
        cma=tuple(merge_ranges([r for ram in rams for r in ram.cma])), warnings=tuple(warnings),
    )


# ---- format and [machine] -----------------------------------------------------------------

def _read_format(path: str, doc: Dict[str, Any]) -> int:
    """The top-level keys, and ``format = 1`` or ``2`` (an integer: ``true`` is not 1)."""
    top = TableReader(path, "", doc, _TOP)
    fmt = top.raw("format")
    if fmt is None:
        raise ProfileError(path, "format", "is required (format = 1 or format = 2)")
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt not in FORMATS:
        raise ProfileError(path, "format", f"{shown(fmt)} is not supported (this memplan reads formats "
                           f"{' and '.join(str(f) for f in FORMATS)})")
    return fmt


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
    block_size = mach.size("memory_block_size", Geometry().memory_block_size, MAX_MEMORY_BLOCK_SIZE,
                           "x86-64's largest memory block, MAX_BLOCK_SIZE, is 2 GiB")
    try:
        geometry = Geometry(memory_block_size=block_size)
    except ValueError as exc:
        raise mach.fail("memory_block_size", str(exc)) from None
    semantics = mach.choice("semantics", list(SEMANTICS), None)
    kernel = mach.string("kernel")
    if kernel is not None and (len(kernel) > 64 or not _RELEASE.fullmatch(kernel)):
        raise mach.fail("kernel", f"{shown(kernel)} is not a kernel release (like \"6.18\" or \"6.1.0-56-amd64\", "
                        "as uname -r prints it)")
    mach.string("description")
    return _Header(mach, name, geometry, semantics, kernel)


def _read_nodes(mach: TableReader, highest: Optional[int]) -> int:
    """``[machine] nodes``: at least one more than the highest node a block uses."""
    nodes = mach.count("nodes", highest + 1 if highest is not None else 1, minimum=1, maximum=MAX_NUMNODES,
                       why=_NODES)
    if highest is not None and highest >= nodes:
        raise mach.fail("nodes", f"{nodes} is too small: node {highest} is used")
    return nodes


# ---- [[ram]] --------------------------------------------------------------------------------

def _read_ram(path: str, i: int, table: Any, geometry: Geometry) -> RamRange:
    r = TableReader(path, f"ram[{i}]", table, _RAM)
    start, size = _extent(r, "start", "size")
    for key, value in (("start", start), ("size", size)):
        if value % geometry.pageblock_size:
            raise r.fail(key, f"{value:#x} is not aligned to a {geometry.pageblock_size >> 20} MiB pageblock")
    if size == 0:
        raise r.fail("size", "must not be 0")
    zone = r.zone("zone")
    node = r.count("node", 0, maximum=MAX_NUMNODES - 1, why=_NODES)
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


def _extent(r: TableReader, start_key: str, size_key: str) -> Tuple[int, int]:
    """A start address and a size whose end stays below ``MAX_PHYSMEM_BITS``."""
    limit = max_address()
    start = r.required_size(start_key, limit - 1, _PHYS)
    size = r.required_size(size_key, limit, _PHYS)
    if start + size > limit:
        raise r.fail(size_key, f"{start:#x}+{size:#x} ends past {limit:#x} ({_PHYS})")
    return start, size


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

@dataclass(frozen=True)
class _DeviceInput:
    """One ``[[virtio_mem]]`` table read and range-checked, before the device is configured:
    its region and plugged device blocks are known, nothing is allocated for them yet."""

    reader: TableReader
    id: str
    addr: int
    region_size: int
    device_block_size: int
    #: merged, inclusive device-block spans of ``plugged`` (``None``: not given)
    plugged: Optional[List[Tuple[int, int]]]

    @property
    def device_blocks(self) -> int:
        return self.region_size // self.device_block_size if self.device_block_size else 0

    def blocks_bound(self, geometry: Geometry) -> int:
        """At most how many memory blocks the device adds (the plugged spans, else the region)."""
        mb = geometry.memory_block_size
        region = -(-(self.addr + self.region_size) // mb) - self.addr // mb
        if self.plugged is None:
            return region if self.reader.has("plugged_size") else 0
        dbs = self.device_block_size
        touched = sum((self.addr + (hi + 1) * dbs - 1) // mb - (self.addr + lo * dbs) // mb + 1
                      for lo, hi in self.plugged)
        return min(region, touched)


def _read_device_input(path: str, i: int, table: Any, geometry: Geometry, seen_ids: Set[str]) -> _DeviceInput:
    v = TableReader(path, f"virtio_mem[{i}]", table, _VMEM)
    dev_id = v.string("id")
    if not dev_id:
        raise v.fail("id", "is required")
    if dev_id in seen_ids:
        raise v.fail("id", f"{shown(dev_id)} is used twice")
    addr, region = _extent(v, "addr", "region_size")
    # default: one PMD-sized (THP) folio, 2 MiB with 4 KiB pages (QEMU's default block-size on x86-64)
    device_block_size = v.size("block_size", geometry.page_size << geometry.pmd_order, max_address(), _PHYS)
    plugged = None
    if v.has("plugged"):
        plugged = _plugged_spans(v)
        count = region // device_block_size if device_block_size else 0
        beyond = [hi for _, hi in plugged if hi >= count]
        if beyond:
            raise v.fail("plugged", f"device block {beyond[0]} is outside the region ({count} blocks of "
                         f"{format_size(device_block_size)})")
    return _DeviceInput(v, dev_id, addr, region, device_block_size, plugged)


def _plugged_spans(v: TableReader) -> List[Tuple[int, int]]:
    """``plugged = ["0-1535", ...]``: merged device-block spans."""
    raw = v.raw("plugged")
    if not isinstance(raw, list):
        raise v.fail("plugged", "must be a list of device-block ranges like [\"0-1535\"]")
    spans: List[Tuple[int, int]] = []
    for j, item in enumerate(raw):
        spans.extend(v.block_spans(f"plugged[{j}]", item, what="device-block range"))
    return merge_spans(spans)


def _configure_devices(inputs: Sequence[_DeviceInput], geometry: Geometry) -> Tuple[List[VirtioMemDevice], List[str]]:
    devices: List[VirtioMemDevice] = []
    warnings: List[str] = []
    for given in inputs:
        device, dev_warnings = _configure_device(given, geometry)
        warnings.extend(dev_warnings)
        devices.append(device)
    return devices, warnings


def _configure_device(given: _DeviceInput, geometry: Geometry) -> Tuple[VirtioMemDevice, List[str]]:
    """One ``[[virtio_mem]]`` table, configured the way ``virtio_mem_init_hotplug()`` sees it."""
    v = given.reader
    mb = geometry.memory_block_size
    region_blocks = (given.addr // mb, (given.addr + given.region_size - 1) // mb)
    offline_blocks = _block_list(v, "offline_blocks", region_blocks, "memory block", "the device's region")
    fake_bbs = _block_list(v, "fake_offline_big_blocks", (0, given.region_size // mb), "big block",
                           "the device's region")
    plugged_map = None
    if given.plugged is not None:
        plugged_map = np.zeros(given.device_blocks, dtype=bool)
        for lo, hi in given.plugged:  # one slice per span as written, not one per device block
            plugged_map[lo:hi + 1] = True
    try:
        return virtio_mem.configure(
            geometry, id=given.id, addr=given.addr, region_size=given.region_size,
            device_block_size=given.device_block_size,
            mode=v.choice("mode", ["auto", "sbm", "bbm"], "auto") or "auto",
            bbm_block_size=v.size("bbm_block_size", 0, max_address(), _PHYS),
            plugged_blocks=plugged_map, plugged_size=v.size("plugged_size", None, given.region_size,
                                                            "the region's size"),
            online=OnlineType(v.choice("online", [o.value for o in OnlineType], "movable")),
            node=v.count("node", 0, maximum=MAX_NUMNODES - 1, why=_NODES),
            driver=DriverState(v.choice("driver", [d.value for d in DriverState], "loaded")),
            fake_offline_big_blocks=fake_bbs,
            unplug_online=v.boolean("unplug_online", True),
            offline_blocks=offline_blocks,
        )
    except virtio_mem.DeviceConfigError as exc:
        raise v.fail(exc.key, str(exc)) from None


def _block_list(v: TableReader, name: str, bounds: Tuple[int, int], unit: str, where: str) -> List[int]:
    """A block range list (lsmem syntax) such as ``offline_blocks = "33-35"``, every block
    inside ``bounds`` (inclusive): checked on the spans before a single id is listed."""
    if not v.has(name):
        return []
    spans = merge_spans(v.block_spans(name, v.raw(name)))
    for lo, hi in spans:
        outside = lo if lo < bounds[0] else hi if hi > bounds[1] else None
        if outside is not None:
            raise v.fail(name, f"{unit} {outside} is outside {where} ({unit}s {bounds[0]}-{bounds[1]})")
    return [b for lo, hi in spans for b in range(lo, hi + 1)]


def _check_memory(path: str, rams: Sequence[RamRange], devices: Sequence[_DeviceInput]) -> None:
    """RAM ranges and device regions are disjoint, and there is some memory."""
    intervals = [(r.start, r.end, f"ram[{i}]") for i, r in enumerate(rams)]
    intervals += [(d.addr, d.addr + d.region_size, f"virtio_mem[{i}]") for i, d in enumerate(devices)]
    check_disjoint(path, intervals)
    if not rams and not devices:
        raise ProfileError(path, "ram", "the profile describes no memory (add [[ram]] or [[virtio_mem]])")


def _check_budget(path: str, rams: Sequence[RamRange], devices: Sequence[_DeviceInput], geometry: Geometry) -> None:
    """Refuse, before anything is allocated for it, a machine memplan cannot judge here: its
    memory blocks (``memplan.core.limits.BYTES_PER_BLOCK`` each) and the devices' plugged maps
    (``DEVICE_BLOCK_BYTES`` per device block) must fit into the memory this machine has left."""
    mb = geometry.memory_block_size
    blocks = sum(-(-r.end // mb) - r.start // mb for r in rams) + sum(d.blocks_bound(geometry) for d in devices)
    described = sum(r.end - r.start for r in rams) + sum(d.region_size for d in devices)
    need = needed_bytes(blocks, sum(DEVICE_BLOCK_BYTES * d.device_blocks for d in devices))
    budget = memory_budget()
    if budget is not None and need > budget:
        raise ProfileError(path, "", f"describes {format_size(described)} of memory in {blocks} memory blocks; "
                           f"judging it needs about {format_size(need)} of memory and {format_size(budget)} is "
                           "available here")


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

    Each table's values are read one by one; where the runs lie is checked for all of them at
    once (a profile ``--write-profile`` wrote may hold thousands), and the first run that
    breaks a rule is checked again on its own for the error message. A ``vmemmap`` run sets
    the block's self-hosted memmap (``memmap_on_memory``)."""
    readers = [TableReader(path, f"pages[{i}]", tbl, _PAGES)
               for i, tbl in enumerate(array_of_tables(path, doc, "pages"))]
    runs = [_page_fields(p, geometry) for p in readers]
    for i in _suspect_runs(runs, geometry, table, fixed):
        _check_page_run(readers[i], runs[i], geometry, table)
        _check_fixed_pages(readers[i], runs[i], geometry, table, fixed)
    check_disjoint(path, [(run.pfn, run.pfn + run.count, p.prefix) for p, run in zip(readers, runs)])
    for run in runs:
        if run.kind is PageKind.VMEMMAP:
            table.vmemmap[_row(table, run.pfn // geometry.pages_per_block)] = run.count
    return runs


def _row(table: BlockTable, block: int) -> int:
    """The row of an existing block (one binary search, no per-block dictionary)."""
    return int(np.searchsorted(table.ids, block))


def _page_fields(p: TableReader, geometry: Geometry) -> PageRun:
    """One ``[[pages]]`` table's values, each typed and within what a machine can have."""
    max_pfn = max_address() >> geometry.page_shift
    pfn = p.required_size("pfn", max_pfn - 1, _PHYS)
    count = p.count("count", 1, minimum=1, maximum=max_pfn - pfn, why=_PHYS)
    kind_name = p.raw("kind")
    if not isinstance(kind_name, str) or kind_name not in PROFILE_KINDS:
        raise p.fail("kind", f"{shown(kind_name)} is not a page kind",
                     hint=did_you_mean(kind_name[:60], PROFILE_KINDS) if isinstance(kind_name, str) else None)
    refcount = p.integer("refcount", None, maximum=MAX_REFCOUNT, why="a page's _refcount is an atomic_t, a C int")
    return PageRun(pfn, count, PageKind.from_label(kind_name), refcount)


def _suspect_runs(runs: Sequence[PageRun], geometry: Geometry, table: BlockTable,
                  fixed: _FixedPages) -> List[int]:
    """Indexes of the runs that may break a placement rule (checked one by one after): the
    first that does not lie in existing, online blocks as whole folios, clear of holes, in
    fake-offline ranges exactly when it is ``fake_offline``; and every ``vmemmap`` run."""
    if not runs:
        return []
    ppb = geometry.pages_per_block
    pfn = np.array([r.pfn for r in runs], dtype=np.int64)
    count = np.array([r.count for r in runs], dtype=np.int64)
    kind = np.array([int(r.kind) for r in runs], dtype=np.int64)
    end = pfn + count
    first, last = pfn // ppb, (end - 1) // ppb
    a, b = np.searchsorted(table.ids, first, "left"), np.searchsorted(table.ids, last, "right")
    offline = np.concatenate(([0], np.cumsum(table.state != 0)))
    mask = (np.int64(1) << geometry.folio_order[kind].astype(np.int64)) - 1
    holes = np.searchsorted(fixed.hole_ends, pfn, "right")
    in_hole = holes < len(fixed.hole_starts)
    in_hole[in_hole] = fixed.hole_starts[holes[in_hole]] < end[in_hole]
    fake = _covered_below(fixed.fake_starts, fixed.fake_ends, end) - _covered_below(fixed.fake_starts,
                                                                                     fixed.fake_ends, pfn)
    is_fake = kind == int(PageKind.FAKE_OFFLINE)
    ok = ((b - a == last - first + 1) & (offline[b] == offline[a]) & ((pfn & mask) == 0) & ((count & mask) == 0)
          & ~in_hole & np.where(is_fake, fake == count, fake == 0) & (kind != int(PageKind.VMEMMAP)))
    bad = np.flatnonzero(~ok)
    vmemmap = np.flatnonzero(kind == int(PageKind.VMEMMAP))
    return sorted(set(bad.tolist()) | set(vmemmap.tolist()))


def _covered_below(starts: IntArray, ends: IntArray, x: np.ndarray) -> np.ndarray:
    """Per ``x``: how many pfns below it the sorted, disjoint ranges [start, end) cover."""
    if not len(starts):
        return np.zeros(len(x), dtype=np.int64)
    cum = np.concatenate(([0], np.cumsum(ends - starts)))
    k = np.searchsorted(starts, x, "right")
    above = np.where(k > 0, np.maximum(ends[np.maximum(k - 1, 0)] - x, 0), 0)
    return cum[k] - above


def _check_page_run(p: TableReader, run: PageRun, geometry: Geometry, table: BlockTable) -> None:
    """A run of whole folios of one kind inside existing, online blocks."""
    ppb = geometry.pages_per_block
    pfn, count, kind = run.pfn, run.count, run.kind
    first, last = pfn // ppb, (pfn + count - 1) // ppb
    missing = first_missing(table.ids, [(first, last)])
    if missing is not None:
        if missing in (first, last):
            raise p.fail("pfn", f"{pfn:#x}+{count} is not inside an existing memory block (block {missing})")
        raise p.fail("pfn", f"{pfn:#x}+{count} crosses block {missing}, which does not exist")
    a, b = _row(table, first), _row(table, last) + 1
    offline = np.flatnonzero(table.state[a:b] != 0)
    if len(offline):
        raise p.fail("pfn", f"memory block {int(table.ids[a + offline[0]])} is offline; its memmap is stale")
    order = int(geometry.folio_order[int(kind)])
    if order and (pfn % (1 << order) or count % (1 << order)):
        raise p.fail("pfn", f"{kind.label} occupies whole {(1 << order) * geometry.page_size >> 20} MiB folios: "
                     f"pfn and count must be multiples of {1 << order}")


def _check_fixed_pages(p: TableReader, run: PageRun, geometry: Geometry, table: BlockTable,
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
    if int(table.vmemmap[_row(table, pfn // ppb)]):
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

def _read_fills(path: str, doc: Dict[str, Any], table: BlockTable, devices: Sequence[VirtioMemDevice],
                group_order: int) -> Tuple[List[Fill], IntArray, np.ndarray]:
    """The fills, and the sorted ids of the filled blocks with the index of each one's fill (a
    block has at most one)."""
    fills: List[Fill] = []
    fill_row = np.full(len(table), -1, dtype=np.int32)  # fill index per table row
    for i, tbl in enumerate(array_of_tables(path, doc, "fill")):
        f = TableReader(path, f"fill[{i}]", tbl, _FILL_META | set(PROFILE_KINDS))
        rows = _fill_rows(f, table, devices)
        seed = f.count("seed", 0, maximum=MAX_SEED, why="a seed is an unsigned 64-bit number")
        fractions = _fill_fractions(f)
        taken = np.flatnonzero(fill_row[rows] >= 0)
        if len(taken):
            row = int(rows[taken[0]])
            raise f.fail("blocks", f"memory block {int(table.ids[row])} is already filled by "
                         f"fill[{fill_row[row]}]")
        fill_row[rows] = len(fills)
        fills.append(Fill(blocks=table.ids[rows], seed=seed, fractions=fractions, group_order=group_order))
    filled = fill_row >= 0
    return fills, table.ids[filled], fill_row[filled]


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
    spans = merge_spans(f.block_spans("blocks", target, hint=ids))
    missing = first_missing(table.ids, spans)
    if missing is not None:
        raise f.fail("blocks", f"memory block {missing} does not exist")
    return span_rows(table.ids, spans)


def _fill_fractions(f: TableReader) -> Dict[PageKind, float]:
    """The ``kind = fraction`` keys of a fill (kinds a fill may draw; at most 1 in total)."""
    fractions: Dict[PageKind, float] = {}
    for key, value in f.table.items():
        if key in _FILL_META:
            continue
        if key not in FILL_KINDS:
            raise f.fail(key, f"{key} cannot be drawn by a fill; place it with [[pages]]")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise f.fail(key, f"{shown(value)} is not a fraction between 0 and 1")
        fractions[PageKind.from_label(key)] = float(value)
    total = sum(fractions.values())
    if total > 1 + 1e-9:
        raise f.fail("blocks", f"fractions add up to {total:g}, over 1")
    return fractions


# ---- [environment] --------------------------------------------------------------------------

def _read_environment(path: str, doc: Dict[str, Any], geometry: Geometry, table: BlockTable,
                      source: ProfilePageSource) -> Environment:
    env = TableReader(path, "environment", doc.get("environment", {}), _ENV)
    pools = _read_pools(env, geometry, table, source)
    timings = [t.value for t in ForeignRefTiming]
    return Environment(
        signal_pending=env.boolean("signal_pending", False),
        notifier_veto=env.errno("notifier_veto"),
        node_notifier_veto=env.errno("node_notifier_veto"),
        hugetlb=pools,
        isolated=tuple(_read_isolated(env, geometry, table)),
        foreign_ref_dropped=ForeignRefTiming(env.choice("foreign_ref_dropped", timings, "never")),
    )


def _read_isolated(env: TableReader, geometry: Geometry, table: BlockTable) -> List[Tuple[int, int]]:
    """``isolated``: pageblocks of existing memory blocks someone else isolated (merged, so the
    work per block is once however the ranges are written)."""
    ranges = env.pageblock_ranges("isolated", geometry, within=(0, max_address()), where="physical memory")
    ppb = geometry.pages_per_block
    for j, (lo, hi) in enumerate(ranges):
        missing = first_missing(table.ids, [(lo // ppb, (hi - 1) // ppb)])
        if missing is not None:
            raise env.fail(f"isolated[{j}]", f"{shown(env.raw('isolated')[j])} is outside memory: memory block "
                           f"{missing} does not exist")
    return merge_ranges(ranges)


def _read_pools(env: TableReader, geometry: Geometry, table: BlockTable,
                source: ProfilePageSource) -> Dict[int, HugetlbPool]:
    """``hugetlb_2m = { free, resv }`` and ``hugetlb_1g``: pool counters keyed by folio order.

    ``resv_huge_pages`` never exceeds ``free_huge_pages`` (a reservation sets free folios
    aside: ``hugetlb_acct_memory()``), and neither counts more folios than the memory holds."""
    pools: Dict[int, HugetlbPool] = {}
    pages = int(table.ram_pages.sum())
    for key, size in HUGETLB_POOLS:
        if not env.has(key):
            continue
        order = geometry.order_of(size)
        most = pages >> order
        why = f"{format_size(pages * geometry.page_size)} of memory holds {most} such folios"
        pool = env.child(key, env.raw(key), _POOL)
        free = pool.integer("free", None, maximum=most, why=why)
        resv = pool.count("resv", 0, maximum=most, why=why)
        if free is None and hugetlb_mod.free_kind(geometry, order) not in source.possible_kinds():
            free_known: Optional[int] = 0  # counted from the pages: no page can be a free folio
        else:
            free_known = free
        if free_known is not None and resv > free_known:
            held = "" if free is not None else " the profile holds"
            raise pool.fail("resv", f"{resv} is more than the {free_known} free folios{held}: "
                            "resv_huge_pages never exceeds free_huge_pages")
        pools[order] = HugetlbPool(free=free, resv=resv)
    return pools


def profile_description(path: str) -> str:
    """The ``[machine] description`` of a profile file (empty if none or unreadable)."""
    try:
        doc = read_document(path)
    except ProfileError:
        return ""
    machine = doc.get("machine", {})
    description = machine.get("description", "") if isinstance(machine, dict) else ""
    return description if isinstance(description, str) else ""
