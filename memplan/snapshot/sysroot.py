"""Reading a sysroot: the sysfs and procfs text files a snapshot needs (spec §6.2).

A sysroot is ``/`` on a live machine or a saved tree with the same layout (what
``lsmem --sysroot`` reads). Every file is read once; its text is kept so ``memplan snapshot
--save`` writes exactly what was read. Any unreadable, missing (where required) or malformed
file raises ``InputError`` naming the file and the offending value.

Formats (kernel sources): ``drivers/base/memory.c`` (``block_size_bytes`` ``%lx``,
``memoryN/state``, ``valid_zones``, ``phys_index`` ``%08lx``, ``nodeX`` links),
``kernel/resource.c`` (``/proc/iomem`` ``%0*llx-%0*llx : %s`` indented two spaces per level),
``mm/vmstat.c`` (``/proc/zoneinfo``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import BinaryIO, Dict, List, Optional, Set, Tuple

from memplan.core.errors import InputError
from memplan.core.limits import MAX_NUMNODES, MAX_PHYSMEM_BITS, ascii_number, max_address
from memplan.core.model import BlockState, Zone
from memplan.snapshot.files import open_regular
from memplan.snapshot.pagesize import DEFAULT_PAGE_SIZE, HUGEPAGES_DIR, PAGE_SIZE_FILE, PageSize, find_page_size

MEMORY_DIR = "sys/devices/system/memory"
NODE_DIR = "sys/devices/system/node"
#: s390: standby memory and its configuration state (lsmem's CONFIGURED)
FIRMWARE_DIR = "sys/firmware/memory"
PARAM_DIRS = ("sys/module/memory_hotplug/parameters", "sys/module/virtio_mem/parameters")
#: The fixtures' flat list of module parameters (``/sys/module/.../parameters/x=value`` lines).
MODULE_PARAMS_FILE = "module-params.txt"
#: Text files ``--save`` copies besides what the model reads (context for whoever reads the tree).
EXTRA_FILES = ("proc/meminfo", "proc/vmstat", "proc/buddyinfo", "proc/pagetypeinfo")

#: the widest physical address space any architecture Linux hot-unplugs on has (s390x)
_MAX_BITS = max(MAX_PHYSMEM_BITS.values())
_MAX_ADDRESS = max_address(_MAX_BITS)
#: pfns (and page counts) below this: the largest address space with the smallest (4 KiB) pages
_MAX_PFNS = _MAX_ADDRESS >> 12
#: the largest hugetlb page any architecture has (16 GiB: ppc64, arm64 with 64 KiB pages)
_MAX_HUGE_PAGE = 16 << 30
#: memoryN files the model does not need but lsmem reads (``snapshot --save`` keeps them)
BLOCK_EXTRA_FILES = ("removable", "phys_device")
_ZONE_WORDS = {z.value: z for z in Zone}
_STATES = {s.value: s for s in BlockState}


class Tree:
    """Files of one sysroot, read on demand; remembers every text it read (for ``--save``)."""

    def __init__(self, root: str, live: bool = False) -> None:
        self.root = root
        self.live = live
        self.texts: Dict[str, str] = {}
        self.links: Dict[str, str] = {}
        if not os.path.isdir(root):
            raise InputError(f"{root}: not a directory (expected a sysroot with sys/ and proc/)")

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def display(self, rel: str) -> str:
        return "/" + rel if self.live else os.path.join(self.root, rel)

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.path(rel))

    def isdir(self, rel: str) -> bool:
        return os.path.isdir(self.path(rel))

    def listdir(self, rel: str) -> List[str]:
        try:
            return sorted(os.listdir(self.path(rel)))
        except OSError as exc:
            raise InputError(f"cannot read {self.display(rel)}: {exc.strerror or exc}") from None

    def text(self, rel: str, required: bool = True) -> Optional[str]:
        """The file's text; ``None`` when it is missing and not required."""
        if rel in self.texts:
            return self.texts[rel]
        try:
            with open(open_regular(self.path(rel), self.display(rel)), "rb", buffering=0) as handle:
                data = _read_small(handle)
        except FileNotFoundError:
            if required:
                raise InputError(f"{self.display(rel)}: missing") from None
            return None
        except OSError as exc:
            if not required and exc.errno in (2, 20):
                return None
            raise InputError(f"cannot read {self.display(rel)}: {exc.strerror or exc}") from None
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise InputError(f"{self.display(rel)}: not a text file (corrupt?)") from None
        if "\x00" in text:
            raise InputError(f"{self.display(rel)}: contains NUL bytes (corrupt?)")
        self.texts[rel] = text
        return text

    def link(self, rel: str) -> None:
        try:
            self.links[rel] = os.readlink(self.path(rel))
        except OSError:
            self.links[rel] = ""


#: read procfs/sysfs text in small pieces: sysctl files allocate a kernel buffer of the size asked for
_READ_PIECE = 1 << 16
_MAX_TEXT = 1 << 24


def _read_small(handle: BinaryIO) -> bytes:
    pieces = []
    total = 0
    while total < _MAX_TEXT:
        piece = handle.read(_READ_PIECE)
        if not piece:
            break
        pieces.append(piece)
        total += len(piece)
    return b"".join(pieces)


def _value_error(tree: Tree, rel: str, value: str, expected: str) -> InputError:
    shown = value.strip()
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return InputError(f"{tree.display(rel)}: {shown!r} is not {expected}")


# --------------------------------------------------------------------------------------------
# /sys/devices/system/memory


@dataclass(frozen=True)
class MemoryBlockInfo:
    """One ``memoryN`` directory."""

    id: int
    state: BlockState
    #: ``valid_zones`` words (online: one zone or ``none``; offline: default zone first)
    valid_zones: Tuple[str, ...]
    node: Optional[int]
    #: every ``nodeX`` link (a boot block spanning nodes is registered under each,
    #: ``register_memory_blocks_under_node()``)
    nodes: Tuple[int, ...] = ()
    #: ``removable`` as the kernel printed it (``None``: absent or not a number). Kernels
    #: before 5.8 computed it for online blocks (``is_mem_section_removable()``); since then
    #: it reads ``IS_ENABLED(CONFIG_MEMORY_HOTREMOVE)``
    removable: Optional[int] = None

    @property
    def zone(self) -> Optional[Zone]:
        """The block's zone (online) or default zone (offline); ``None`` for ``none``/unknown."""
        if not self.valid_zones or self.valid_zones[0] == "none":
            return None
        return _ZONE_WORDS[self.valid_zones[0]]


@dataclass(frozen=True)
class MemoryLayout:
    block_size: int
    blocks: Tuple[MemoryBlockInfo, ...]
    auto_online_blocks: Optional[str]


def read_memory(tree: Tree) -> MemoryLayout:
    """``/sys/devices/system/memory``: block size and every ``memoryN`` (no block is assumed)."""
    if not tree.isdir(MEMORY_DIR):
        raise InputError(f"{tree.display(MEMORY_DIR)}: missing (no memory hotplug sysfs in this tree)")
    rel = f"{MEMORY_DIR}/block_size_bytes"
    text = tree.text(rel) or ""
    try:
        block_size = int(text.strip(), 16)
    except ValueError:
        raise _value_error(tree, rel, text, "a hexadecimal block size") from None
    if block_size <= 0 or block_size & (block_size - 1) or not 1 << 27 <= block_size <= 1 << 36:
        # memory_dev_init() / set_memory_block_size_order(): a power of two, 128 MiB .. 64 GiB
        raise _value_error(tree, rel, text, "a power of two from 128 MiB (8000000) to 64 GiB (1000000000)")
    auto = tree.text(f"{MEMORY_DIR}/auto_online_blocks", required=False)
    node_of = _node_links(tree)
    blocks: List[MemoryBlockInfo] = []
    for name in tree.listdir(MEMORY_DIR):
        match = re.fullmatch(r"memory([0-9]{1,20})", name)
        if not match:
            continue
        block = int(match.group(1))
        base = f"{MEMORY_DIR}/{name}"
        if block * block_size >= _MAX_ADDRESS:
            raise InputError(f"{tree.display(base)}: block {block} would start at {block * block_size:#x}, beyond any "
                             f"physical address (MAX_PHYSMEM_BITS is at most {_MAX_BITS}: below {_MAX_ADDRESS:#x})")
        state_text = tree.text(f"{base}/state") or ""
        state = _STATES.get(state_text.strip())
        if state is None:
            raise _value_error(tree, f"{base}/state", state_text, "online, offline or going-offline")
        zones_text = tree.text(f"{base}/valid_zones", required=False)
        zones: Tuple[str, ...] = ()
        if zones_text is not None:
            zones = tuple(zones_text.split())
            bad = [w for w in zones if w not in _ZONE_WORDS and w != "none"]
            # An online block lists its own zone (or none); kernels before 4.13 (util-linux's s390
            # dumps) follow it with the zone it could be moved to: "Normal Movable".
            if bad or not zones or len(zones) > len(_ZONE_WORDS) or ("none" in zones and zones != ("none",)):
                raise _value_error(tree, f"{base}/valid_zones", zones_text,
                                   "one zone (DMA, DMA32, Normal, Movable) or none" if state is BlockState.ONLINE
                                   else "a list of zones")
        extras = {extra: tree.text(f"{base}/{extra}", required=False)  # what lsmem reads besides: kept for --save
                  for extra in BLOCK_EXTRA_FILES}
        removable_text = (extras.get("removable") or "").strip()
        removable = int(removable_text) if removable_text in ("0", "1") else None
        index_text = tree.text(f"{base}/phys_index", required=False)
        if index_text is not None:
            try:
                index = int(index_text.strip(), 16)
            except ValueError:
                raise _value_error(tree, f"{base}/phys_index", index_text, "a hexadecimal block index") from None
            if index != block:
                raise _value_error(tree, f"{base}/phys_index", index_text, f"{block:08x} (the block's own index)")
        nodes: List[int] = []
        for entry in tree.listdir(base):
            node_match = re.fullmatch(r"node([0-9]{1,20})", entry)
            if node_match:
                _check_node(tree, f"{base}/{entry}", int(node_match.group(1)))
                tree.link(f"{base}/{entry}")
                nodes.append(int(node_match.group(1)))
        nodes = sorted(set(nodes)) or sorted(node_of.get(block, ()))
        blocks.append(MemoryBlockInfo(block, state, zones, nodes[-1] if nodes else None, tuple(nodes), removable))
    if not blocks:
        raise InputError(f"{tree.display(MEMORY_DIR)}: no memoryN directories")
    blocks.sort(key=lambda b: b.id)
    return MemoryLayout(block_size, tuple(blocks), auto.strip() if auto else None)


def _check_node(tree: Tree, rel: str, node: int) -> None:
    if node >= MAX_NUMNODES:
        raise InputError(f"{tree.display(rel)}: node {node} is out of range (MAX_NUMNODES is at most {MAX_NUMNODES}, "
                         "NODES_SHIFT <= 10)")


def _node_links(tree: Tree) -> Dict[int, Set[int]]:
    """``/sys/devices/system/node/nodeX/memoryN`` links (when the memoryN dirs have none)."""
    out: Dict[int, Set[int]] = {}
    if not tree.isdir(NODE_DIR):
        return out
    for node_name in tree.listdir(NODE_DIR):
        node_match = re.fullmatch(r"node([0-9]{1,20})", node_name)
        if not node_match or not tree.isdir(f"{NODE_DIR}/{node_name}"):
            continue
        for entry in tree.listdir(f"{NODE_DIR}/{node_name}"):
            block_match = re.fullmatch(r"memory([0-9]{1,20})", entry)
            if block_match:
                _check_node(tree, f"{NODE_DIR}/{node_name}", int(node_match.group(1)))
                out.setdefault(int(block_match.group(1)), set()).add(int(node_match.group(1)))
    return out


# --------------------------------------------------------------------------------------------
# /proc/iomem


@dataclass(frozen=True)
class Resource:
    """One ``/proc/iomem`` line: ``[start, end]`` inclusive byte addresses."""

    start: int
    end: int
    name: str
    depth: int
    parent: Optional[int]  # index of the enclosing resource


_IOMEM_LINE = re.compile(r"^( *)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)$")


class AddressesHidden(InputError):
    """A live ``/proc/iomem`` read without root: every address reads 0."""


def read_iomem(tree: Tree) -> Optional[Tuple[Resource, ...]]:
    """``/proc/iomem``'s resources; ``None`` when the tree has none (a sysfs-only tree)."""
    rel = "proc/iomem"
    text = tree.text(rel, required=False)
    if text is None:
        return None
    out: List[Resource] = []
    stack: List[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _IOMEM_LINE.match(line)
        if not match or len(match.group(1)) % 2:
            raise InputError(f"{tree.display(rel)}: line {number}: {line[:60]!r} is not 'start-end : name'")
        depth = len(match.group(1)) // 2
        if max(len(match.group(2).lstrip("0")), len(match.group(3).lstrip("0"))) > 16:
            raise InputError(f"{tree.display(rel)}: line {number}: {line[:60]!r}: an address past 2^64 - 1 "
                             "(resource_size_t is 64 bits)")
        start, end = int(match.group(2), 16), int(match.group(3), 16)
        if match.group(4).strip().startswith("System RAM") and end >= _MAX_ADDRESS:
            raise InputError(f"{tree.display(rel)}: line {number}: {line[:60]!r}: System RAM at or past "
                             f"{_MAX_ADDRESS:#x} (MAX_PHYSMEM_BITS is at most {_MAX_BITS})")
        if end < start or depth > len(stack):
            raise InputError(f"{tree.display(rel)}: line {number}: {line[:60]!r} is not a valid resource")
        del stack[depth:]
        out.append(Resource(start, end, match.group(4).strip(), depth, stack[-1] if stack else None))
        stack.append(len(out) - 1)
    if not any(r.name.startswith("System RAM") for r in out):
        raise InputError(f"{tree.display(rel)}: no System RAM resources")
    if all(r.start == 0 and r.end == 0 for r in out):
        if tree.live:
            # Read without CAP_SYS_ADMIN, r_show() prints every address as 0: the resources
            # are there but not where; degrade as if the file were missing (read_sysroot()).
            raise AddressesHidden(f"{tree.display(rel)}: every address reads 0 (physical addresses need root)")
        raise InputError(f"{tree.display(rel)}: every address reads 0 ("
                         + ("physical addresses need root)" if tree.live else "captured without root?)"))
    return tuple(out)


def ram_ranges(resources: Tuple[Resource, ...], page_shift: int) -> List[Tuple[int, int, str]]:
    """System RAM as pfn ranges ``[start, end)``, the way ``walk_system_ram_range()`` counts
    them (``PFN_UP(start)``, ``PFN_DOWN(end + 1)``), with their resource names."""
    out: List[Tuple[int, int, str]] = []
    for r in resources:
        if r.name.startswith("System RAM"):
            lo = (r.start + (1 << page_shift) - 1) >> page_shift
            hi = (r.end + 1) >> page_shift
            if hi > lo:
                out.append((lo, hi, r.name))
    return sorted(out)


# --------------------------------------------------------------------------------------------
# /proc/zoneinfo


@dataclass(frozen=True)
class ZoneInfo:
    node: int
    zone: str
    start_pfn: Optional[int]
    spanned: int
    present: int
    managed: int
    free: int
    cma: Optional[int]
    #: free pages on the per-CPU lists (sum of the pagesets' ``count``)
    pcp: int


_ZONE_HEADER = re.compile(r"^Node\s+([0-9]{1,20}),\s+zone\s+(\S+)\s*$")


def read_zoneinfo(tree: Tree) -> Tuple[ZoneInfo, ...]:
    rel = "proc/zoneinfo"
    text = tree.text(rel, required=False)
    if text is None:
        return ()
    zones: List[ZoneInfo] = []
    where: Optional[Tuple[int, str]] = None  # (node, zone) of the section being read
    current: Dict[str, int] = {}

    def flush() -> None:
        if where is not None:
            zones.append(ZoneInfo(where[0], where[1], current.get("start_pfn"),
                                  current.get("spanned", 0), current.get("present", 0), current.get("managed", 0),
                                  current.get("free", 0), current.get("cma"), current.get("pcp", 0)))

    for number, line in enumerate(text.splitlines(), 1):
        header = _ZONE_HEADER.match(line)
        if header:
            flush()
            if int(header.group(1)) >= MAX_NUMNODES:
                raise InputError(f"{tree.display(rel)}: line {number}: node {header.group(1)} is out of range "
                                 f"(MAX_NUMNODES is at most {MAX_NUMNODES}, NODES_SHIFT <= 10)")
            where, current = (int(header.group(1)), header.group(2)), {}
            continue
        if line.startswith("Node"):
            raise InputError(f"{tree.display(rel)}: line {number}: {line[:60]!r} is not 'Node N, zone NAME'")
        if where is None:
            continue
        words = line.replace(":", " ").split()
        if len(words) < 2:
            continue
        key = words[0]
        if key == "pages" and len(words) >= 3 and words[1] == "free":
            key, value = "free", words[2]
        elif key in ("spanned", "present", "managed", "cma", "start_pfn", "count"):
            value = words[1]
        else:
            continue
        number_value = ascii_number(value, _MAX_PFNS + 1)
        if number_value is None:  # pfns and page counts: a page is 4 KiB or more, addresses below 2^53
            raise InputError(f"{tree.display(rel)}: line {number}: {value[:40]!r} is not a number of pages "
                             f"(0 to {_MAX_PFNS:#x})")
        if key == "count":
            current["pcp"] = current.get("pcp", 0) + number_value
        else:
            current[key] = number_value
    flush()
    return tuple(zones)


# --------------------------------------------------------------------------------------------
# hugepages, module parameters, kernel release


@dataclass(frozen=True)
class Hstate:
    """``/sys/kernel/mm/hugepages/hugepages-<size>kB``."""

    order: int
    nr: int
    free: int
    resv: int
    surplus: int


def read_hugepages(tree: Tree, page_shift: int) -> Dict[int, Hstate]:
    out: Dict[int, Hstate] = {}
    if not tree.isdir(HUGEPAGES_DIR):
        return out
    for name in tree.listdir(HUGEPAGES_DIR):
        match = re.fullmatch(r"hugepages-([0-9]{1,20})kB", name)
        if not match:
            continue
        pages = (int(match.group(1)) << 10) >> page_shift
        if int(match.group(1)) << 10 > _MAX_HUGE_PAGE:
            raise InputError(f"{tree.display(HUGEPAGES_DIR + '/' + name)}: no huge page size is larger than "
                             f"{_MAX_HUGE_PAGE >> 30} GiB")
        if pages <= 0 or pages & (pages - 1):
            raise InputError(f"{tree.display(HUGEPAGES_DIR + '/' + name)}: not a power-of-two page size")
        values: Dict[str, int] = {}
        for key in ("nr", "free", "resv", "surplus"):
            rel = f"{HUGEPAGES_DIR}/{name}/{key}_hugepages"
            text = tree.text(rel, required=False)
            if text is None:
                values[key] = 0
                continue
            count = ascii_number(text.strip(), _MAX_PFNS + 1)
            if count is None or count * pages > _MAX_PFNS:  # no pool is larger than the address space
                raise _value_error(tree, rel, text, "a number of huge pages")
            values[key] = count
        out[pages.bit_length() - 1] = Hstate(pages.bit_length() - 1, values["nr"], values["free"], values["resv"],
                                             values["surplus"])
    return out


def read_params(tree: Tree) -> Dict[str, str]:
    """Module parameters as ``"module.param" -> value`` (sysfs first, then module-params.txt)."""
    out: Dict[str, str] = {}
    for directory in PARAM_DIRS:
        if not tree.isdir(directory):
            continue
        module = directory.split("/")[2]
        for name in tree.listdir(directory):
            text = tree.text(f"{directory}/{name}", required=False)
            if text is not None:
                out.setdefault(f"{module}.{name}", text.strip())
    text = tree.text(MODULE_PARAMS_FILE, required=False)
    for number, line in enumerate((text or "").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise InputError(f"{tree.display(MODULE_PARAMS_FILE)}: line {number}: {line[:60]!r} is not 'path=value'")
        match = re.search(r"/sys/module/([^/]+)/parameters/([^/]+)$", key.strip())
        if match:
            out.setdefault(f"{match.group(1)}.{match.group(2)}", value.strip())
        elif key.strip() == "auto_online_blocks":
            out.setdefault("memory.auto_online_blocks", value.strip())
    return out


def read_release(tree: Tree) -> Optional[str]:
    """``/proc/sys/kernel/osrelease`` or a saved ``proc/osrelease``."""
    for rel in ("proc/sys/kernel/osrelease", "proc/osrelease"):
        text = tree.text(rel, required=False)
        if text is not None:
            release = text.strip()
            if not re.match(r"^\d+\.\d+", release) or len(release) > 64 or "\n" in release:
                raise _value_error(tree, rel, text, "a kernel release like 6.1.0-56-amd64")
            return release
    return None


def read_meminfo_hugepages(tree: Tree, page_shift: int) -> Dict[int, Hstate]:
    """Pool counters from ``/proc/meminfo`` when the hugepages sysfs is missing: the default
    hstate's ``HugePages_*``; every hstate is empty when ``Hugetlb: 0 kB`` (all sizes)."""
    text = tree.text("proc/meminfo", required=False)
    values: Dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, rest = line.partition(":")
        if key in ("HugePages_Total", "HugePages_Free", "HugePages_Rsvd", "HugePages_Surp", "Hugepagesize",
                   "Hugetlb"):
            words = rest.split()
            found = ascii_number(words[0], _MAX_PFNS + 1) if words else None
            if found is None:  # counts of pages, sizes in kB: within the address space either way
                raise InputError(f"{tree.display('proc/meminfo')}: {line[:60]!r} is not 'Key: N' "
                                 f"(N below {_MAX_PFNS:#x})")
            values[key] = found
    out: Dict[int, Hstate] = {}
    if values.get("Hugetlb", -1) == 0:
        pmd = page_shift - 3
        out = {order: Hstate(order, 0, 0, 0, 0) for order in (pmd, 2 * pmd)}
    size = values.get("Hugepagesize")
    if size and "HugePages_Total" in values:
        pages = (size << 10) >> page_shift
        if pages > 0 and not pages & (pages - 1):
            order = pages.bit_length() - 1
            out[order] = Hstate(order, values["HugePages_Total"], values.get("HugePages_Free", 0),
                                values.get("HugePages_Rsvd", 0), values.get("HugePages_Surp", 0))
    return out


def read_cma_total(tree: Tree) -> Optional[int]:
    """``CmaTotal`` from ``/proc/meminfo`` in bytes (``None`` if absent)."""
    text = tree.text("proc/meminfo", required=False)
    for line in (text or "").splitlines():
        if line.startswith("CmaTotal:"):
            words = line.split()
            kb = ascii_number(words[1], _MAX_ADDRESS >> 10) if len(words) > 1 else None
            if kb is None:
                raise InputError(f"{tree.display('proc/meminfo')}: {line[:60]!r} is not 'CmaTotal: N kB' "
                                 f"(below {_MAX_ADDRESS >> 10} kB)")
            return kb << 10
    return None


def read_extra(tree: Tree) -> None:
    """Read (and so keep for ``--save``) the context files the model does not need, and s390's
    ``/sys/firmware/memory/memoryN/{config,memmap_on_memory}`` (lsmem's CONFIGURED and
    MEMMAP-ON-MEMORY columns)."""
    rels = list(EXTRA_FILES)
    if tree.isdir(FIRMWARE_DIR):
        rels += [f"{FIRMWARE_DIR}/{name}/{attr}" for name in tree.listdir(FIRMWARE_DIR)
                 if re.fullmatch(r"memory[0-9]{1,20}", name) for attr in ("config", "memmap_on_memory")]
    for rel in rels:
        try:
            tree.text(rel, required=False)
        except InputError:
            pass  # context only (e.g. pagetypeinfo is root-only): never a reason to fail


@dataclass
class SysrootFacts:
    """Everything textual a snapshot reads, parsed."""

    memory: MemoryLayout
    #: ``None``: the tree has no /proc/iomem (or, live without root, its addresses read 0:
    #: ``iomem_hidden``)
    iomem: Optional[Tuple[Resource, ...]]
    zones: Tuple[ZoneInfo, ...]
    hugepages: Dict[int, Hstate]
    params: Dict[str, str]
    release: Optional[str]
    cma_total: Optional[int] = None
    notes: List[str] = field(default_factory=list)
    page: PageSize = PageSize(DEFAULT_PAGE_SIZE, "assumed")
    #: a live /proc/iomem read without root: every address read 0, so it was left out
    iomem_hidden: bool = False


def read_page_size(tree: Tree, memory: MemoryLayout, zones: Tuple[ZoneInfo, ...],
                   kpageflags_entries: Optional[int]) -> PageSize:
    """The machine's page size and how the tree tells it (``memplan.snapshot.pagesize``)."""
    texts = {rel: tree.text(rel, required=False) for rel in (PAGE_SIZE_FILE, "proc/meminfo")}
    spans = [(z.start_pfn, z.start_pfn + z.spanned) for z in zones if z.start_pfn is not None and z.spanned]
    online = [(b.id * memory.block_size, (b.id + 1) * memory.block_size) for b in memory.blocks
              if b.state is BlockState.ONLINE]
    dirs = tree.listdir(HUGEPAGES_DIR) if tree.isdir(HUGEPAGES_DIR) else []
    present_end = (memory.blocks[-1].id + 1) * memory.block_size if memory.blocks else 0
    return find_page_size(tree.root, tree.live, texts, spans, sum(z.managed for z in zones), online, present_end,
                          kpageflags_entries, memory.block_size, dirs, tree.display(PAGE_SIZE_FILE))


def read_sysroot(tree: Tree, kpageflags_entries: Optional[int] = None) -> SysrootFacts:
    memory = read_memory(tree)
    zones = read_zoneinfo(tree)
    page = read_page_size(tree, memory, zones, kpageflags_entries)
    page_shift = page.size.bit_length() - 1
    try:
        iomem, hidden = read_iomem(tree), False
    except AddressesHidden:
        iomem, hidden = None, True
    facts = SysrootFacts(
        memory=memory, iomem=iomem, iomem_hidden=hidden, zones=zones,
        hugepages=read_hugepages(tree, page_shift) or read_meminfo_hugepages(tree, page_shift),
        params=read_params(tree), release=read_release(tree),
        cma_total=read_cma_total(tree), page=page,
    )
    read_extra(tree)
    return facts
