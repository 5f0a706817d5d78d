"""The per-page oracle: ``offline_pages()`` for one memory block, one page at a time.

Written from the kernel source (torvalds/linux @ c17ee635fd3a482b2ad2bf5e269755c2eae5f25e:
drivers/base/memory.c ``memory_block_offline()``, mm/memory_hotplug.c ``offline_pages()``,
``scan_movable_pages()``, ``do_migrate_range()``, mm/page_isolation.c
``start_isolate_page_range()``, ``page_is_unmovable()``, ``test_pages_isolated()``, mm/migrate.c
``isolate_folio_to_list()``, ``migrate_pages()`` (transcribed list by list: ``migrate_hugetlbs()``,
``migrate_pages_sync()``, ``migrate_pages_batch()``), ``alloc_migration_target()``,
mm/huge_memory.c ``split_folio_to_list()``, mm/hugetlb.c ``dissolve_free_hugetlb_folios()``,
``alloc_hugetlb_folio_nodemask()``, ``dequeue_hugetlb_folio_node_exact()``, mm/page_alloc.c
``__offline_isolated_pages()``, drivers/virtio/virtio_mem.c ``virtio_mem_memory_notifier_cb()``)
and spec §3. It shares nothing with the pipeline (``memplan.kernel``, ``memplan.engine``) but
the kind tables of ``memplan.core.model`` and the ``OfflineSemantics`` methods: it builds its
own per-page state from the machine (``machine.pages.materialize``, the block table, the
virtio-mem devices' plugged bitmaps, the environment), computes migration capacity and hugetlb
pool targets itself from every online block's pages, and repeats the SCAN/MIGRATE and
DISSOLVE/TEST loops round after round like the kernel (a round that changes nothing is a hang).

What the kernel does not define, the oracle takes from the model's conventions:

* migration capacity: free pages of the other online blocks on the allowed nodes
  (``do_migrate_range()``'s nodemask), outside pageblocks someone else isolated, kernel zones
  counted as one pool and ZONE_MOVABLE as another; a folio may take pages of both (no
  fragmentation, watermarks or reclaim); blocks spanning zones count as kernel zones, blocks
  spanning nodes count nowhere (their free pages are not split by node);
* ``try_to_migrate()`` cannot unmap a long-term pinned page (it is taken as anon-exclusive:
  ``folio_try_share_anon_rmap_pte()`` refuses it); a folio with other extra references is
  unmapped and fails in ``folio_migrate_mapping()``;
* kernel log: messages of the first MIGRATE round only (``repeats`` marks them when the write
  hangs in SCAN); per-page notifier messages beyond the first ``PER_PAGE`` are merged into one
  entry with a count; ``do_migrate_range()``'s ratelimit allows ``RATELIMIT_BURST`` events;
* page counts classify every page by what the loops do with it, whatever step decides the
  verdict (``migrated``: the first MIGRATE round from the first movable page SCAN finds).

``DEVIATIONS`` names where the pipeline knowingly differs from the kernel: none at present
(issue 11's findings are followed). A new one gets its kernel text there, a way for
``Oracle(..., deviations=...)`` to reproduce the pipeline's choice so the comparison covers the
rest, and a minimal profile in ``tests/test_properties.py`` (``FINDINGS``) that the pipeline
must pass once it follows the kernel.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np

from memplan.core.machine import Machine
from memplan.core.model import (
    DEFAULT_REFCOUNT,
    IS_HUGETLB,
    IS_HUGETLB_MIGRATABLE,
    IS_LRU,
    IS_MOVABLE_OPS,
    IS_PAGE_OFFLINE,
    IS_PINNED,
    IS_RESERVED,
    BlockState,
    DriverState,
    Errno,
    ForeignRefTiming,
    OnlineType,
    PageKind,
    VirtioMemMode,
    Zone,
)
from memplan.core.results import BlockVerdict, HazardKind, LogLevel, Outcome, PageCounts, Reason, Step
from memplan.kernel.semantics import OfflineSemantics, get_semantics

FREE, HOLE, HWPOISON = int(PageKind.FREE), int(PageKind.HOLE), int(PageKind.HWPOISON)
FAKE, DRIVER, ORPHAN = int(PageKind.FAKE_OFFLINE), int(PageKind.OFFLINE_REFCOUNT_DRIVER), int(PageKind.OFFLINE_ORPHAN)
ANON = int(PageKind.ANON)
LRU, MOVABLE_OPS, OFFLINE = IS_LRU.tolist(), IS_MOVABLE_OPS.tolist(), IS_PAGE_OFFLINE.tolist()
RESERVED, HUGETLB, MIGRATABLE = IS_RESERVED.tolist(), IS_HUGETLB.tolist(), IS_HUGETLB_MIGRATABLE.tolist()
PINNED, DEFAULT_REF = IS_PINNED.tolist(), DEFAULT_REFCOUNT.tolist()
#: in-use hugetlb kind -> its free kind (a folio freed into the pool)
FREED_INTO_POOL = {int(PageKind.HUGETLB): int(PageKind.HUGETLB_FREE),
                   int(PageKind.GIGANTIC): int(PageKind.GIGANTIC_FREE)}
FREE_HUGETLB = frozenset(FREED_INTO_POOL.values())
ENOMEM = -12
#: mm/migrate.c: NR_MAX_MIGRATE_PAGES_RETRY, NR_MAX_MIGRATE_ASYNC_RETRY and the SYNC rest
NR_MAX_MIGRATE_PAGES_RETRY = 10
NR_MAX_MIGRATE_ASYNC_RETRY = 3
NR_MAX_MIGRATE_SYNC_RETRY = NR_MAX_MIGRATE_PAGES_RETRY - NR_MAX_MIGRATE_ASYNC_RETRY
#: DEFAULT_RATELIMIT_BURST (do_migrate_range()'s static ratelimit state)
RATELIMIT_BURST = 10
#: per-page messages (virtio-mem's WARN_ON + dump_page) kept one by one before merging
PER_PAGE = 8
#: NUMA node notifiers (NODE_REMOVING_LAST_MEMORY) arrived in v6.17
NODE_NOTIFIER = (6, 17)
#: the ``virtio_mem_sbm_mb_state`` names PATCH-v2 clears PG_offline_skippable for on removal
PARTIAL = {OnlineType.MOVABLE: "MOVABLE_PARTIAL", OnlineType.KERNEL: "KERNEL_PARTIAL"}

#: Where the pipeline knowingly differs from the kernel (see the module docstring): name -> the
#: kernel text the pipeline does not follow. Empty: issue 11's six findings are followed now.
DEVIATIONS: Dict[str, str] = {}
PIPELINE = frozenset(DEVIATIONS)


@dataclass(frozen=True)
class OracleLog:
    level: LogLevel
    text: str
    pfn: Optional[int]
    function: Optional[str]
    count: int = 1
    repeats: bool = False
    #: printed through do_migrate_range()'s static ``migrate_rs`` ratelimit state
    ratelimited: bool = False


@dataclass(frozen=True)
class OracleVerdict:
    result: Outcome
    errno: Optional[Errno]
    reason: Optional[Reason]
    step: Optional[Step]
    #: (pfn, kind, refcount) of the page the kernel stops at or names
    culprit: Optional[Tuple[int, PageKind, int]]
    log: Tuple[OracleLog, ...]
    hazards: Tuple[Tuple[HazardKind, Optional[int]], ...]
    pages: PageCounts


#: what the comparison looks at, in this order
FIELDS = ("result", "errno", "reason", "step", "culprit", "kernel log", "hazards", "pages")


def pipeline_fields(v: BlockVerdict) -> Tuple[object, ...]:
    """A pipeline verdict as the comparison sees it (``FIELDS``)."""
    return (v.result, v.errno, v.reason, v.step,
            (v.culprit.pfn, v.culprit.kind, v.culprit.refcount) if v.culprit else None,
            tuple((e.level, e.text, e.pfn, e.function, e.count, e.repeats, e.ratelimited) for e in v.kernel_log),
            tuple((h.kind, h.pfn) for h in v.hazards), v.pages)


def oracle_fields(o: OracleVerdict) -> Tuple[object, ...]:
    """An oracle verdict as the comparison sees it (``FIELDS``)."""
    return (o.result, o.errno, o.reason, o.step, o.culprit,
            tuple((e.level, e.text, e.pfn, e.function, e.count, e.repeats, e.ratelimited) for e in o.log),
            o.hazards, o.pages)


def differences(pipeline: Tuple[object, ...], oracle: Tuple[object, ...]) -> str:
    return "; ".join(f"{name}: pipeline {a!r} != oracle {b!r}" for name, a, b in zip(FIELDS, pipeline, oracle)
                     if a != b)


def _release(text: Optional[str]) -> Optional[Tuple[int, int]]:
    match = re.match(r"\s*(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


# --- the machine around the block -----------------------------------------------------------

@dataclass
class Facts:
    """What offlining one block needs to know about the rest of the machine."""

    machine: Machine
    #: per online block: FREE pages, zone, node
    free: Dict[int, int] = field(default_factory=dict)
    zone: Dict[int, Optional[Zone]] = field(default_factory=dict)
    node: Dict[int, int] = field(default_factory=dict)
    #: pfns of free hugetlb folio heads in online blocks, per order
    pool_heads: Dict[int, List[int]] = field(default_factory=dict)
    #: pgdat->node_present_pages (vmemmap of online blocks included)
    present: Dict[int, int] = field(default_factory=dict)

    #: memory blocks materialised at once while counting (bounded memory)
    CHUNK = 64

    @classmethod
    def of(cls, machine: Machine) -> "Facts":
        table = machine.blocks
        facts = cls(machine)
        facts.pool_heads = {o: [] for o in machine.geometry.hugetlb_orders}
        rows = np.flatnonzero(table.online).tolist()
        for row in rows:
            block, node = int(table.ids[row]), int(table.node[row])
            facts.zone[block], facts.node[block] = table.zone_of(row), node
            # A block spanning nodes counts towards each node with its pages there.
            for part, pages in (table.spans.get(block, {}) if node < 0 else {node: int(table.ram_pages[row])}).items():
                facts.present[part] = facts.present.get(part, 0) + pages
        ids = [int(table.ids[row]) for row in rows]
        start = 0
        while start < len(ids):  # runs of consecutive blocks, at most CHUNK long
            end = start + 1
            while end < len(ids) and end - start < cls.CHUNK and ids[end] == ids[end - 1] + 1:
                end += 1
            facts.count(ids[start:end])
            start = end
        return facts

    def count(self, blocks: List[int]) -> None:
        """Free pages and free hugetlb folio heads of some consecutive online blocks."""
        geo = self.machine.geometry
        kinds = self.machine.pages.materialize(np.array(blocks, dtype=np.int64)).kinds
        for block, row in zip(blocks, kinds):
            self.free[block] = int(np.count_nonzero(row == FREE))
            base = geo.block_start_pfn(block)
            for order, kind in zip(geo.hugetlb_orders, (PageKind.HUGETLB_FREE, PageKind.GIGANTIC_FREE)):
                size = 1 << order
                first = (-base) % size
                heads = np.flatnonzero(row[first::size] == int(kind)) * size + first
                self.pool_heads[order] += (base + heads).tolist()

    def memory_nodes(self) -> List[int]:
        return sorted(n for n, pages in self.present.items() if pages > 0)

    def allowed_nodes(self, node: int) -> List[int]:
        """do_migrate_range(): node_states[N_MEMORY] without the source node, unless that empties it."""
        others = [n for n in self.memory_nodes() if n != node]
        return others or [node]

    def isolated(self, pfn: int) -> bool:
        """The pageblock of ``pfn`` is isolated by someone else (environment ``isolated``)."""
        return any(lo <= pfn < hi for lo, hi in self.machine.environment.isolated)

    def cma(self, pfn: int) -> bool:
        return any(lo <= pfn < hi for lo, hi in self.machine.cma)


class Targets:
    """Free pages migration targets may come from, outside the isolated block: kernel zones and
    ZONE_MOVABLE of the allowed nodes, each one pool (the model has no fragmentation)."""

    def __init__(self, facts: Facts, block: int, node: int) -> None:
        self.kernel = self.movable = 0
        geo = facts.machine.geometry
        allowed = facts.allowed_nodes(node)
        for other, free in facts.free.items():
            if other == block or facts.node[other] not in allowed:
                continue
            free -= _isolated_free(facts, geo.block_start_pfn(other))
            if facts.zone[other] is Zone.MOVABLE:
                self.movable += free
            else:  # kernel zones, and boot blocks spanning kernel zones
                self.kernel += free

    def alloc(self, size: int, movable_ok: bool) -> Optional[Tuple[int, int]]:
        """``__folio_alloc()`` down the zonelist (ZONE_MOVABLE first when the mask allows it);
        returns the pages taken (movable, kernel) or ``None`` (-ENOMEM)."""
        movable = min(self.movable, size) if movable_ok else 0
        if movable + self.kernel < size:
            return None
        self.movable -= movable
        self.kernel -= size - movable
        return movable, size - movable

    def give_back(self, taken: Tuple[int, int]) -> None:
        """A target whose migration failed is freed again (``put_new_folio`` / ``folio_put``)."""
        self.movable += taken[0]
        self.kernel += taken[1]


def _isolated_free(facts: Facts, start: int) -> int:
    """Free pages in pageblocks someone else isolated (MIGRATE_ISOLATE free lists: never allocated)."""
    geo = facts.machine.geometry
    end = start + geo.pages_per_block
    ranges = [(max(lo, start), min(hi, end)) for lo, hi in facts.machine.environment.isolated
              if lo < end and hi > start]
    if not ranges:
        return 0
    kinds = facts.machine.pages.materialize(np.array([geo.block_of_pfn(start)])).kinds[0]
    return sum(int(np.count_nonzero(kinds[lo - start:hi - start] == FREE)) for lo, hi in ranges)


#: the classification's first MIGRATE round: (found index, kinds, refcounts, targets, pool, log,
#: anything changed)
FirstRound = Tuple[int, List[int], List[int], "Targets", Dict[int, int], List["OracleLog"], bool]


# --- one block --------------------------------------------------------------------------------

@dataclass
class Folio:
    """A folio on the migration source list (indexes into the range)."""

    start: int
    end: int
    kind: int
    hugetlb: bool
    #: folio_pfn(): its head page's pfn (in an earlier block when the folio began there)
    pfn: int
    #: an order-0 page of a THP split because no target was found
    split: bool = False

    @property
    def size(self) -> int:
        return self.end - self.start


class BlockRun:
    """The state of one offline attempt: per-page kinds, refcounts and PG_offline_skippable."""

    def __init__(self, oracle: "Oracle", block: int, row: int, kinds: np.ndarray, refcount: np.ndarray) -> None:
        machine, geo = oracle.machine, oracle.machine.geometry
        table = machine.blocks
        self.oracle, self.sem, self.env, self.geo = oracle, oracle.sem, machine.environment, geo
        self.block = block
        self.zone = table.zone_of(row)
        self.node = int(table.node[row])
        self.vmemmap = int(table.vmemmap[row])
        self.start = geo.block_start_pfn(block)
        self.end = self.start + geo.pages_per_block
        self.lo = self.start + self.vmemmap
        self.n = self.end - self.lo
        self.kind: List[int] = kinds[self.vmemmap:].tolist()
        self.ref: List[int] = refcount[self.vmemmap:].tolist()
        self.order: List[int] = geo.folio_order.tolist()
        self.gigantic = geo.pud_order
        device_index = int(table.device[row])
        self.device = machine.devices[device_index] if device_index >= 0 else None
        self.unplugged = self._unplugged_ranges()
        skippable = False
        if self.device is not None:
            skippable = self.sem.fake_offline_skippable(self.device.driver, self._device_state())
        self.skippable = [False] * self.n
        if skippable:
            for a, b in self.unplugged:
                self.skippable[a:b] = [True] * (b - a)
        self.original_ref = list(self.ref)
        self.originally_free = [k in FREE_HUGETLB for k in self.kind]
        #: the semantics' answers, by site and page state
        self.asked: Dict[Tuple[str, int, bool], bool] = {}
        self.fired: Dict[Tuple[int, bool], List[Tuple[LogLevel, str, str, HazardKind]]] = {}
        self.migrated = 0
        #: the current do_migrate_range() moved or split a folio
        self.changed = False
        self.first_round_done = False
        #: free - resv per hstate order, pool folios this block may take as targets, capacity
        self.headroom: Dict[int, int] = {}
        self.pool: Dict[int, int] = {}
        self.targets: Targets = oracle.targets(self)
        self.log: List[OracleLog] = []
        self.hazards: List[Tuple[HazardKind, Optional[int]]] = []
        self.on_cancel: List[Tuple[HazardKind, Optional[int]]] = []
        self.first_round_log: List[OracleLog] = []

    # -- virtio-mem ----------------------------------------------------------------------------
    def _unplugged_ranges(self) -> List[Tuple[int, int]]:
        """Range indexes virtio-mem's notifier touches: unplugged sub-blocks (SBM,
        ``virtio_mem_sbm_notify_going_offline()``) or the whole range of a FAKE_OFFLINE big block
        (BBM, ``virtio_mem_bbm_notify_going_offline()``)."""
        device, geo = self.device, self.geo
        if device is None:
            return []
        unit_pages = device.unit_size // geo.page_size
        if device.mode is VirtioMemMode.SBM:
            per = geo.memory_block_size // device.unit_size
            first = (self.block - device.first_block) * per
            out = []
            for sb in range(per):
                if not bool(device.plugged[first + sb]):
                    a = sb * unit_pages - self.vmemmap
                    out.append((max(a, 0), a + unit_pages))
            return out
        bb = (self.start - geo.block_start_pfn(device.first_block)) // unit_pages
        return [(0, self.n)] if bb in device.fake_offline_units else []

    def _device_state(self) -> str:
        """``virtio_mem_sbm_mb_state`` / ``virtio_mem_bbm_bb_state`` of this (online) block."""
        device = self.device
        assert device is not None
        if device.mode is VirtioMemMode.BBM:
            return "FAKE_OFFLINE" if self.unplugged else "ADDED"
        if self.unplugged:
            return PARTIAL[device.online]
        return "MOVABLE" if device.online is OnlineType.MOVABLE else "KERNEL"

    # -- small page helpers --------------------------------------------------------------------
    def folio(self, i: int) -> Tuple[int, int]:
        """[start, end) of the folio of page ``i`` (folios are naturally aligned), clipped to the range."""
        size = 1 << self.order[self.kind[i]]
        pfn = self.lo + i
        head = pfn - pfn % size
        return max(head - self.lo, 0), min(head + size - self.lo, self.n)

    def head_pfn(self, i: int) -> int:
        size = 1 << self.order[self.kind[i]]
        return self.lo + i - (self.lo + i) % size

    def buddy_span(self, i: int) -> int:
        """``1 << buddy_order(page)`` for a free page: the largest naturally aligned chunk of free
        pages up to MAX_PAGE_ORDER starting at it (what the buddy allocator merges)."""
        size, limit = 1, 1 << self.geo.max_page_order
        while size < limit:
            bigger = size * 2
            if (self.lo + i) % bigger or i + bigger > self.n:
                break
            if self.kind[i + size:i + bigger].count(FREE) != size:
                break
            size = bigger
        return size

    def culprit(self, i: int) -> Tuple[int, PageKind, int]:
        return (self.lo + i, PageKind(self.kind[i]), self.ref[i])

    def ask(self, site: str, ref: int, skippable: bool) -> bool:
        """The semantics' predicate ``site`` for one PageOffline page (answers are cached)."""
        key = (site, ref, skippable)
        if key not in self.asked:
            refs, flags = np.array([ref]), np.array([skippable])
            if site in ("scan_busy", "test_passes"):
                self.asked[key] = bool(getattr(self.sem, site)(refs, flags)[0])
            else:
                self.asked[key] = bool(getattr(self.sem, site)(flags)[0])
        return self.asked[key]

    def commit_checks(self, ref: int, skippable: bool) -> List[Tuple[LogLevel, str, str, HazardKind]]:
        """The __offline_isolated_pages() assertions that fire for one PageOffline page (cached)."""
        key = (ref, skippable)
        if key not in self.fired:
            checks = self.sem.commit_checks(np.array([ref]), np.array([skippable]))
            self.fired[key] = [(level, text, fn, hazard) for level, text, fn, hazard, mask in checks if bool(mask[0])]
        return self.fired[key]

    def scan_busy(self, i: int) -> bool:
        return self.ask("scan_busy", self.ref[i], self.skippable[i])

    def test_passes(self, i: int) -> bool:
        return self.ask("test_passes", self.ref[i], self.skippable[i])

    def migratable_hugetlb(self, i: int) -> bool:
        """``folio_test_hugetlb_migratable()``: set on in-use migratable folios, cleared on free."""
        return bool(MIGRATABLE[self.kind[i]]) and self.ref[i] > 0

    def skips_in_migrate(self, i: int) -> bool:
        return self.ask("migrate_skips", 0, self.skippable[i])

    def clone(self) -> "BlockRun":
        twin = object.__new__(BlockRun)
        twin.__dict__.update(self.__dict__)
        twin.kind, twin.ref = list(self.kind), list(self.ref)
        twin.log, twin.hazards, twin.on_cancel, twin.first_round_log = [], [], [], []
        twin.headroom = dict(self.headroom)
        twin.pool = dict(self.pool)
        twin.targets = copy.deepcopy(self.targets)
        return twin

    # -- step 6: start_isolate_page_range(PB_ISOLATE_MODE_MEM_OFFLINE) ---------------------------
    def isolate(self) -> Optional[Tuple[int, bool]]:
        """The page the first failing pageblock reports (and whether it is dumped): first
        pageblock, last pageblock, then the middle ones ascending; already isolated (no dump),
        CMA (its first page), else has_unmovable_pages()'s lowest unmovable page."""
        pbp = self.geo.pageblock_pages
        count = self.n // pbp
        order = [0] if count == 1 else [0, count - 1] + list(range(1, count - 1))
        for pb in order:
            base = pb * pbp
            if self.oracle.facts.isolated(self.lo + base):
                return base, False
            if self.oracle.facts.cma(self.lo + base):
                return base, True
            if self.zone is Zone.MOVABLE:  # page_is_unmovable() is PageReserved() there
                reserved = [j for j in range(base, base + pbp) if RESERVED[self.kind[j]]]
                if reserved:
                    return reserved[0], True
                continue
            i = base
            while i < base + pbp:
                unmovable, step = self.page_is_unmovable(i)
                if unmovable:
                    return i, True
                i += step
        return None

    def page_is_unmovable(self, i: int) -> Tuple[bool, int]:
        """mm/page_isolation.c page_is_unmovable(): (unmovable, pages to step over)."""
        k = self.kind[i]
        if RESERVED[k]:
            return True, 1
        if self.zone is Zone.MOVABLE:
            return False, 1
        if self.order[k] > 0:
            # x86-64 migrates PMD and PUD hugetlb folios (arch_hugetlb_migration_supported());
            # any other compound folio must be on the LRU.
            if not HUGETLB[k] and not LRU[k]:
                return True, 1
            return False, self.folio(i)[1] - i
        if self.ref[i] == 0:
            return False, self.buddy_span(i) if k == FREE else 1
        if k == HWPOISON:
            return False, 1
        if OFFLINE[k] and self.ask("isolation_treats_as_movable", 0, self.skippable[i]):
            return False, 1
        if LRU[k] or MOVABLE_OPS[k]:
            return False, 1
        return True, 1

    # -- step 8: memory_notify(MEM_GOING_OFFLINE) ----------------------------------------------
    def going_offline(self, classify: bool = False) -> Optional[Errno]:
        """Every MEM_GOING_OFFLINE handler; returns virtio-mem's veto (``vm->removing``).
        ``classify`` runs the other handlers' page work even when virtio-mem vetoes."""
        device = self.device
        if device is not None and device.driver is DriverState.REMOVING and not classify:
            return Errno.EBUSY  # notifier_from_errno(-EBUSY); it ignores MEM_CANCEL_OFFLINE
        before = list(self.ref)
        dropped: List[int] = []
        if device is not None and device.driver is DriverState.LOADED:
            dropped = self._virtio_mem_going_offline()
        if DRIVER in self.kind:  # an out-of-tree driver using the refcount protocol drops its reference
            for i, k in enumerate(self.kind):
                if k == DRIVER:
                    self.ref[i] -= 1
        if self.env.foreign_ref_dropped is ForeignRefTiming.DURING_OFFLINE:
            self._foreign_put(before)
        freed = [i for i in dropped if self.kind[i] == FREE]
        if freed:  # MEM_CANCEL_OFFLINE's page_ref_inc() would hit pages now free in the buddy
            self.on_cancel.append((HazardKind.REFCOUNT_ON_FREE_PAGE, self.lo + freed[0]))
        return None

    def _virtio_mem_going_offline(self) -> List[int]:
        """virtio_mem_fake_offline_going_offline(): page_ref_dec_and_test() on every page of the
        unplugged ranges, WARN_ON + dump_page("fake-offline page referenced") unless it hit 0."""
        pages = [i for a, b in self.unplugged for i in range(a, b)]
        if not pages:
            return []
        new = self.sem.virtio_mem_going_offline(np.array([self.ref[i] for i in pages], dtype=np.int64)).tolist()
        dropped = [i for i, r in zip(pages, new) if r != self.ref[i]]
        referenced = []
        for i, r in zip(pages, new):
            if r != self.ref[i] and r != 0:
                referenced.append(self.lo + i)
            self.ref[i] = int(r)
        if referenced:
            fn = "virtio_mem_memory_notifier_cb"  # the static helper is inlined (spec §9.1)
            self.log.extend(per_page([(LogLevel.WARN, "WARN_ON(!page_ref_dec_and_test(page))", fn),
                                      (LogLevel.DUMP_PAGE, "fake-offline page referenced", fn)], referenced))
            self.hazards.append((HazardKind.WARN, referenced[0]))
        return dropped

    def _foreign_put(self, before: List[int]) -> None:
        """The foreign holder of extra references on fake-offline pages put_page()s them while
        the block is isolated: a page reaching 0 is freed to the (isolated) buddy."""
        freed = []
        for a, b in self.unplugged:
            for i in range(a, b):
                extra = before[i] - 1
                if extra > 0:
                    self.ref[i] -= extra
                    if self.ref[i] == 0:
                        self.kind[i] = FREE
                        freed.append(self.lo + i)
        if freed:
            self.hazards.append((HazardKind.FREED_TO_BUDDY, freed[0]))

    # -- step 9a: scan_movable_pages() -----------------------------------------------------------
    def scan(self, i: int, stop_at_busy: bool = True) -> Tuple[str, int]:
        """("found" | "busy" | "none", index)."""
        while i < self.n:
            k = self.kind[i]
            if k == FREE:  # neither LRU, movable_ops, PageOffline nor hugetlb: the whole buddy chunk
                i += self.buddy_span(i)
                continue
            if LRU[k] or MOVABLE_OPS[k]:
                return "found", i
            if OFFLINE[k] and stop_at_busy and self.scan_busy(i):
                return "busy", i
            if not HUGETLB[k]:
                i += 1
                continue
            if self.migratable_hugetlb(i):
                return "found", i
            i = self.folio(i)[1]  # pfn |= folio_nr_pages(folio) - 1
        return "none", self.n

    # -- step 9b: do_migrate_range() -------------------------------------------------------------
    def migrate(self, h: int) -> bool:
        """One do_migrate_range(h, end): isolate, migrate_pages(), report; True if a page changed."""
        events: List[Tuple[int, str, str]] = []
        source: List[Folio] = []
        i = h
        while i < self.n:
            k = self.kind[i]
            if OFFLINE[k] and self.skips_in_migrate(i):
                i += 1
                continue
            if self.ref[i] == 0:  # folio_try_get(): page_ref_add_unless(page, 1, 0) fails
                i += 1
                continue
            start, end = self.folio(i) if self.order[k] else (i, i + 1)
            following = end
            if k == HWPOISON:  # folio_contain_hwpoisoned_page(): unmapped, never migrated
                i = following
                continue
            folio = Folio(start, end, k, bool(HUGETLB[k]), self.head_pfn(i))
            if HUGETLB[k] and self.migratable_hugetlb(i):
                source.append(folio)  # folio_isolate_hugetlb(): list_move_tail()
            elif not HUGETLB[k] and (MOVABLE_OPS[k] or LRU[k]):
                source.insert(0, folio)  # isolate_folio_to_list(): list_add()
            else:
                events.append((self.lo + i, f"failed to isolate pfn {self.lo + i:x}", "isolation failed"))
            i = following
        self.changed = False
        left, ret = self.migrate_pages(source)
        if ret:  # folio_pfn(): a folio that began in an earlier block is named by its head
            events += [(f.pfn, f"migrating pfn {f.pfn:x} failed ret:{ret}", "migration failure") for f in left]
        if not self.first_round_done:
            self.first_round_done = True
            for pfn, text, dump in events[:RATELIMIT_BURST]:
                self.first_round_log += [OracleLog(LogLevel.PR_WARN, text, pfn, "do_migrate_range", ratelimited=True),
                                         OracleLog(LogLevel.DUMP_PAGE, dump, pfn, "do_migrate_range",
                                                   ratelimited=True)]
        return self.changed

    # mm/migrate.c, transcribed list by list: ``frm`` is the list migrate_pages() works on, the
    # other lists are the kernel's of the same names. A folio's fate in one call:
    # * the target allocation fails: -ENOMEM (a THP that is not stuck is split instead);
    # * try_to_migrate() cannot unmap it (a long-term pinned, anon-exclusive page:
    #   folio_try_share_anon_rmap_pte() refuses it): -EAGAIN, the target freed at once;
    # * folio_migrate_mapping()'s refcount check fails (any other stuck folio): -EAGAIN once the
    #   folio is unmapped, the target held until migrate_pages_batch() undoes the batch;
    # * else it migrates.

    def migrate_pages(self, source: List[Folio]) -> Tuple[List[Folio], int]:
        """migrate_pages(MIGRATE_SYNC): (the folios left on the source list, in order, ret)."""
        frm = list(source)
        ret_folios: List[Folio] = []
        split_folios: List[Folio] = []
        limit = 1 << self.geo.pmd_order  # NR_MAX_BATCHED_MIGRATION (HPAGE_PMD_NR)
        rc_gather = self.migrate_hugetlbs(frm)
        while rc_gather >= 0:  # again:
            nr_pages, i = 0, 0
            while i < len(frm):
                if frm[i].hugetlb:  # retried hugetlb folios are kept in the list
                    ret_folios.append(frm.pop(i))
                    continue
                nr_pages += frm[i].size
                i += 1
                if nr_pages >= limit:
                    break
            folios, frm = frm[:i], frm[i:]  # list_cut_before() / list_splice_init()
            rc = self.migrate_pages_sync(folios, ret_folios, split_folios)
            ret_folios += folios
            if rc < 0:
                rc_gather = rc
                ret_folios += split_folios
                break
            if split_folios:  # MIGRATE_ASYNC, one pass, its -ENOMEM ignored
                self.migrate_pages_batch(split_folios, ret_folios, None, 1)
                ret_folios += split_folios
                split_folios = []
            rc_gather += rc
            if not frm:
                break
        frm = ret_folios + frm  # out: list_splice(&ret_folios, from)
        return frm, rc_gather if frm else 0

    def migrate_hugetlbs(self, frm: List[Folio]) -> int:
        """migrate_hugetlbs(): NR_MAX_MIGRATE_PAGES_RETRY passes over the hugetlb folios."""
        retry = 1
        for _ in range(NR_MAX_MIGRATE_PAGES_RETRY):
            if not retry:
                break
            retry = 0
            for folio in [f for f in frm if f.hugetlb]:
                target = self.hugetlb_target(folio)  # unmap_and_move_huge_page()
                if target is None:
                    return ENOMEM  # "When memory is low, don't bother to try to migrate other folios"
                if self.stuck(folio):
                    self.give_back(folio, target)
                    retry += 1
                    continue
                self.move(folio, target)
                frm.remove(folio)
        return retry

    def migrate_pages_sync(self, frm: List[Folio], ret_folios: List[Folio], split_folios: List[Folio]) -> int:
        """migrate_pages_sync(): one MIGRATE_ASYNC batch, then every failed folio alone."""
        folios: List[Folio] = []
        rc, nr_split = self.migrate_pages_batch(frm, folios, split_folios, NR_MAX_MIGRATE_ASYNC_RETRY)
        if rc < 0:
            ret_folios += folios
            return rc
        nr_failed = nr_split
        frm += folios
        while frm:
            one = [frm.pop(0)]
            rc, _ = self.migrate_pages_batch(one, ret_folios, split_folios, NR_MAX_MIGRATE_SYNC_RETRY)
            ret_folios += one
            if rc < 0:
                return rc
            nr_failed += rc
        return nr_failed

    def migrate_pages_batch(self, frm: List[Folio], ret: List[Folio], split_folios: Optional[List[Folio]],
                            nr_pass: int) -> Tuple[int, int]:
        """migrate_pages_batch(): unmap every folio (allocating its target), then move them;
        returns (rc, THPs split)."""
        retry, nr_failed, nr_split, rc_saved = 1, 0, 0, 0
        unmap: List[Tuple[Folio, Tuple[int, int]]] = []
        for _ in range(nr_pass):
            if not retry or rc_saved:
                break
            retry = 0
            for folio in list(frm):
                dst = self.targets.alloc(folio.size, self.movable_target(folio))  # migrate_folio_unmap()
                if dst is None:  # -ENOMEM
                    nr_failed += 1
                    if folio.size > 1 and not self.stuck(folio):  # try_split_folio() succeeds
                        frm.remove(folio)
                        assert split_folios is not None
                        split_folios += self.split(folio)
                        nr_split += 1
                        continue
                    rc_saved = ENOMEM
                    break
                if self.unmap_stuck(folio):
                    self.targets.give_back(dst)
                    retry += 1
                    continue
                frm.remove(folio)
                unmap.append((folio, dst))
        if not rc_saved:
            nr_failed += retry
        retry = 1  # move:
        for _ in range(nr_pass):
            if not retry:
                break
            retry = 0
            for folio, dst in list(unmap):
                if self.stuck(folio):
                    retry += 1
                    continue
                unmap.remove((folio, dst))
                self.move(folio, "fresh")
        nr_failed += retry
        for folio, dst in unmap:  # out: migrate_folios_undo()
            self.targets.give_back(dst)
            ret.append(folio)
        return rc_saved or nr_failed, nr_split

    def split(self, folio: Folio) -> List[Folio]:
        """split_folio_to_list(): the THP becomes order-0 LRU pages; lru_add_split_folio()
        list_add_tail()s the tail pages in order, try_split_folio() moves the head after them."""
        self.kind[folio.start:folio.end] = [ANON] * folio.size
        self.changed = True
        order = list(range(folio.start, folio.end))
        if folio.pfn == self.lo + folio.start:
            order = order[1:] + order[:1]
        return [Folio(i, i + 1, ANON, False, self.lo + i, True) for i in order]

    def stuck(self, folio: Folio) -> bool:
        """Migration fails every time: a long-term pin, or any reference beyond the folio's own
        (folio_migrate_mapping()'s refcount check)."""
        k = folio.kind
        return bool(PINNED[k]) or self.ref[folio.start] > DEFAULT_REF[k]

    def unmap_stuck(self, folio: Folio) -> bool:
        """try_to_migrate() leaves a long-term pinned page mapped (folio_try_share_anon_rmap_pte()
        refuses a maybe-DMA-pinned anon-exclusive page): -EAGAIN before the move."""
        return bool(PINNED[folio.kind])

    def movable_target(self, folio: Folio) -> bool:
        """alloc_migration_target(): __GFP_HIGHMEM (ZONE_MOVABLE allowed) for a source in
        ZONE_MOVABLE; a THP gets GFP_TRANSHUGE and a hugetlb folio htlb_alloc_mask(), both movable."""
        return self.zone is Zone.MOVABLE or self.order[folio.kind] > 0

    def hugetlb_target(self, folio: Folio) -> Optional[object]:
        """alloc_hugetlb_folio_nodemask(): a pool folio while free > resv, else a fresh one
        (alloc_migrate_hugetlb_folio(); never for gigantic folios)."""
        target = self.pool_target(folio)
        if target is not None:
            return target
        if self.order[folio.kind] == self.gigantic:
            return None
        return self.targets.alloc(folio.size, self.movable_target(folio))

    def pool_target(self, folio: Folio) -> Optional[str]:
        order = self.order[folio.kind]
        if self.headroom.get(order, 0) <= 0 or self.pool.get(order, 0) <= 0:
            return None
        self.pool[order] -= 1
        return "pool"

    def give_back(self, folio: Folio, target: object) -> None:
        if target == "pool":
            self.pool[self.order[folio.kind]] += 1
        else:
            self.targets.give_back(target)  # type: ignore[arg-type]

    def move(self, folio: Folio, target: object) -> None:
        """A successful migration frees the source: into the pool when the target came from it
        (move_hugetlb_state() keeps the source a pool folio), else to the buddy."""
        kind = FREED_INTO_POOL[folio.kind] if target == "pool" else FREE
        self.kind[folio.start:folio.end] = [kind] * folio.size
        self.ref[folio.start:folio.end] = [0] * folio.size
        self.migrated += folio.size
        self.changed = True

    # -- step 9c: dissolve_free_hugetlb_folios() -------------------------------------------------
    def dissolve(self, classify: bool = False) -> Tuple[Optional[int], bool, int]:
        """Walk the range by the smallest hstate order: (failing index, anything dissolved,
        pages of originally free folios dissolved). ``classify`` goes on past failures."""
        failure, changed, dissolved = None, False, 0
        for i in range(0, self.n, 1 << min(self.geo.hugetlb_orders)):
            k = self.kind[i]
            if not HUGETLB[k]:
                continue
            order = self.order[k]
            if self.ref[i] > 0 or self.headroom.get(order, 0) <= 0:  # in use, or !available_huge_pages()
                failure = i if failure is None else failure
                if classify:
                    continue
                return failure, changed, dissolved
            self.headroom[order] -= 1
            start, end = self.folio(i)
            dissolved += self.originally_free[start:end].count(True)
            self.kind[start:end] = [FREE] * (end - start)
            changed = True
        return failure, changed, dissolved

    # -- step 9d: test_pages_isolated(PB_ISOLATE_MODE_MEM_OFFLINE) -------------------------------
    def test(self) -> Optional[int]:
        """The first page __test_page_isolated_in_pageblock() does not accept, or ``None``."""
        i = 0
        while i < self.n:
            k = self.kind[i]
            if k == FREE:
                i += self.buddy_span(i)
            elif k == HWPOISON or (OFFLINE[k] and self.test_passes(i)):
                i += 1
            else:
                return i
        return None

    # -- step 10: __offline_isolated_pages() -------------------------------------------------------
    def commit(self) -> Optional[int]:
        """Walk the range; returns the index of a page whose BUG_ON fires (the kernel crashes)."""
        warned = set()
        i = 0
        while i < self.n:
            k = self.kind[i]
            if k == HWPOISON:
                i += 1
            elif OFFLINE[k]:
                for level, text, function, hazard in self.commit_checks(self.ref[i], self.skippable[i]):
                    if text in warned:
                        continue
                    warned.add(text)
                    self.log.append(OracleLog(level, text, self.lo + i, function))
                    self.hazards.append((hazard, self.lo + i))
                    if level is LogLevel.BUG:
                        return i
                i += 1
            else:
                i += self.buddy_span(i)
        return None

    def after_success(self) -> None:
        """Hazards once the block is offline: foreign references dropped later hit a stale
        memmap, or, once the block is onlined again (its memmap re-initialised, refcount 1), free
        an unplugged page; PageOffline pages nobody restores go to the buddy when the block is
        onlined again."""
        held = {ForeignRefTiming.AFTER_OFFLINE: HazardKind.STALE_MEMMAP_REFERENCE,
                ForeignRefTiming.AFTER_ONLINE: HazardKind.REFERENCE_LOST_ON_ONLINE}.get(self.env.foreign_ref_dropped)
        if held is not None:
            stale = [i for a, b in self.unplugged for i in range(a, b) if self.original_ref[i] > 1]
            if stale:
                self.hazards.append((held, self.lo + stale[0]))
        orphans = [i for i in range(self.n) if self.kind[i] == ORPHAN and self.ref[i] == 0 and self.test_passes(i)]
        if orphans:
            self.hazards.append((HazardKind.UNSAFE_REONLINE, self.lo + orphans[0]))


def per_page(messages: Sequence[Tuple[LogLevel, str, str]], pfns: List[int]) -> List[OracleLog]:
    """One entry per page and message for the first ``PER_PAGE`` pages, then one merged entry
    per message with the count of the rest (the model's log convention)."""
    out: List[OracleLog] = []
    for pfn in pfns[:PER_PAGE]:
        out += [OracleLog(level, text, pfn, fn) for level, text, fn in messages]
    if len(pfns) > PER_PAGE:
        out += [OracleLog(level, text, pfns[PER_PAGE], fn, len(pfns) - PER_PAGE) for level, text, fn in messages]
    return out


# --- the verdict --------------------------------------------------------------------------------

class Oracle:
    """Offline any block of ``machine`` the kernel's way, under one semantics."""

    def __init__(self, machine: Machine, semantics: Optional[str] = None,
                 deviations: FrozenSet[str] = frozenset()) -> None:
        unknown = set(deviations) - set(DEVIATIONS)
        if unknown:
            raise ValueError(f"unknown deviations {sorted(unknown)}")
        self.machine = machine
        self.sem: OfflineSemantics = get_semantics(semantics or machine.default_semantics)
        self.deviations = frozenset(deviations)
        self.facts = Facts.of(machine)
        release = _release(machine.kernel)
        self.node_notifier = release is None or release >= NODE_NOTIFIER

    def pool_counters(self) -> Dict[int, Tuple[int, int]]:
        """(free_huge_pages, resv_huge_pages) per hstate order; an unset ``free`` counts the free
        folios the machine's pages hold."""
        out = {}
        for order in self.machine.geometry.hugetlb_orders:
            pool = self.machine.environment.hugetlb.get(order)
            free = pool.free if pool is not None and pool.free is not None else len(self.facts.pool_heads[order])
            out[order] = (free, pool.resv if pool is not None else 0)
        return out

    def offline(self, block: int) -> OracleVerdict:
        geo, table = self.machine.geometry, self.machine.blocks
        row = int(table.rows([block])[0])
        if table.state_of(row) is not BlockState.ONLINE:  # memory_block_change_state(): -EINVAL
            return OracleVerdict(Outcome.FAILS, Errno.EINVAL, None, Step.STATE, None, (), (),
                                 PageCounts(total=geo.pages_per_block))
        batch = self.machine.pages.materialize(np.array([block]))
        run = BlockRun(self, block, row, batch.kinds[0], batch.refcounts()[0])
        self.prepare(run)
        self.first_round: Optional[FirstRound] = None
        pages = self.classify(run.clone())
        return Walk(run, pages, self.first_round).run()

    def targets(self, run: BlockRun) -> Targets:
        return Targets(self.facts, run.block, run.node)

    def prepare(self, run: BlockRun) -> None:
        """The hugetlb pool as this block sees it."""
        counters = self.pool_counters()
        run.headroom = {o: max(free - resv, 0) for o, (free, resv) in counters.items()}
        run.pool = {o: self.pool_targets(run, o, free) for o, (free, _) in counters.items()}

    def pool_targets(self, run: BlockRun, order: int, free: int) -> int:
        """Free pool folios alloc_hugetlb_folio_nodemask() may dequeue for this block."""
        allowed = self.facts.allowed_nodes(run.node)
        geo = self.machine.geometry
        usable = [h for h in self.facts.pool_heads[order]
                  if not run.start <= h < run.end and not self.facts.isolated(h)
                  and self.facts.node.get(geo.block_of_pfn(h), -1) in allowed]
        unlocated = max(free - len(self.facts.pool_heads[order]), 0)  # counted, no pages to say where
        return len(usable) + unlocated

    def classify(self, run: BlockRun) -> PageCounts:
        """Every page by what the loops do with it, whatever step decides the verdict."""
        hwpoison, holes = run.kind.count(HWPOISON), run.kind.count(HOLE)
        run.going_offline(classify=True)
        free = run.kind.count(FREE)
        skipped = sum(1 for i, k in enumerate(run.kind) if OFFLINE[k] and not MOVABLE_OPS[k] and run.test_passes(i))
        what, h = run.scan(0, stop_at_busy=False)
        if what == "found":
            changed = run.migrate(h)
            self.first_round = (h, run.kind[:], run.ref[:], copy.deepcopy(run.targets), dict(run.pool),
                                list(run.first_round_log), changed)
        _, _, dissolved = run.dissolve(classify=True)
        return PageCounts(total=self.machine.geometry.pages_per_block, free=free, migrated=run.migrated,
                          skipped_offline=skipped, dissolved=dissolved, hwpoison=hwpoison, vmemmap=run.vmemmap,
                          holes=holes)


class Walk:
    """offline_pages() from the top, stopping where the kernel stops."""

    #: rounds of the outer loop before the oracle gives up (the kernel has no limit)
    MAX_ROUNDS = 64

    def __init__(self, run: BlockRun, pages: PageCounts, first_round: Optional[FirstRound] = None) -> None:
        self.r, self.pages = run, pages
        self.mark = 0
        #: the classification's first MIGRATE round (h, kinds, refcounts, targets, pool, log,
        #: changed): the same pages from the same state, reused when SCAN finds the same page
        self.first_round = first_round

    def verdict(self, result: Outcome, errno: Optional[Errno] = None, reason: Optional[Reason] = None,
                step: Optional[Step] = None, culprit: Optional[int] = None, cancel: bool = False) -> OracleVerdict:
        r = self.r
        repeats = result is Outcome.HANGS and step is Step.SCAN
        log = r.log[:self.mark] + [OracleLog(e.level, e.text, e.pfn, e.function, e.count, repeats, e.ratelimited)
                                   for e in r.first_round_log] + r.log[self.mark:]
        if reason is not None:
            shift = r.geo.page_shift
            log.append(OracleLog(LogLevel.PR_DEBUG, f"memory offlining [mem {r.lo << shift:#010x}-"
                                 f"{(r.end << shift) - 1:#010x}] failed due to {reason.value}", None, "offline_pages"))
        hazards = r.hazards + (r.on_cancel if cancel else [])
        return OracleVerdict(result, errno, reason, step, None if culprit is None else r.culprit(culprit),
                             tuple(log), tuple(hazards), self.pages)

    def run(self) -> OracleVerdict:
        r, geo, env = self.r, self.r.geo, self.r.env
        if r.zone is None:  # memory_block_offline(): mem->zone is NULL
            return self.verdict(Outcome.FAILS, Errno.EINVAL, step=Step.ZONE)
        if r.n == 0 or r.lo % geo.pageblock_pages or r.end % geo.pages_per_section:
            r.log.append(OracleLog(LogLevel.WARN_ONCE, "WARN_ON_ONCE(!nr_pages || !pageblock_aligned(start_pfn) || "
                                   "!IS_ALIGNED(start_pfn + nr_pages, PAGES_PER_SECTION))", r.lo, "offline_pages"))
            return self.verdict(Outcome.FAILS, Errno.EINVAL, step=Step.ALIGNMENT)
        if HOLE in r.kind:  # walk_system_ram_range() counts fewer pages than nr_pages
            return self.verdict(Outcome.FAILS, Errno.EINVAL, Reason.MEMORY_HOLES, Step.HOLES)
        failure = r.isolate()
        if failure is not None:
            index, dumped = failure
            if dumped:
                r.log.append(OracleLog(LogLevel.DUMP_PAGE, "unmovable page", r.lo + index, "set_migratetype_isolate"))
            return self.verdict(Outcome.FAILS, Errno.EBUSY, Reason.FAILURE_TO_ISOLATE_RANGE, Step.ISOLATE, index)
        present = r.oracle.facts.present.get(r.node, 0) - r.vmemmap  # memory_block_offline() un-accounts it
        if r.oracle.node_notifier and env.node_notifier_veto is not None and r.n >= present:
            return self.verdict(Outcome.FAILS, env.node_notifier_veto, Reason.NODE_NOTIFIER_FAILURE, Step.NOTIFIER)
        veto = r.going_offline()
        if veto is not None:
            return self.verdict(Outcome.FAILS, veto, Reason.NOTIFIER_FAILURE, Step.NOTIFIER)
        if env.notifier_veto is not None:
            return self.verdict(Outcome.FAILS, env.notifier_veto, Reason.NOTIFIER_FAILURE, Step.NOTIFIER, cancel=True)
        if env.signal_pending:
            return self.verdict(Outcome.FAILS, Errno.EINTR, Reason.SIGNAL_BACKOFF, Step.SCAN, cancel=True)
        self.mark = len(r.log)
        return self.loops()

    def loops(self) -> OracleVerdict:
        r = self.r
        for _ in range(self.MAX_ROUNDS):
            changed = False
            what, pfn = r.scan(0)
            while what == "found":
                if not self.migrate(pfn):  # nothing changed: SCAN finds this folio again, forever
                    return self.verdict(Outcome.HANGS, Errno.EINTR, Reason.SIGNAL_BACKOFF, Step.SCAN, pfn, True)
                changed = True
                what, pfn = r.scan(pfn)
            if what == "busy":
                return self.verdict(Outcome.FAILS, Errno.EBUSY, Reason.UNMOVABLE_PAGE, Step.SCAN, pfn, True)
            failure, dissolved, _ = r.dissolve()
            if failure is not None:
                return self.verdict(Outcome.FAILS, Errno.EBUSY, Reason.FAILURE_TO_DISSOLVE_HUGE_PAGES, Step.DISSOLVE,
                                    failure, True)
            stuck = r.test()
            if stuck is None:
                return self.commit()
            if not (changed or dissolved):  # test_pages_isolated() fails every round
                return self.verdict(Outcome.HANGS, Errno.EINTR, Reason.SIGNAL_BACKOFF, Step.TEST_ISOLATED, stuck, True)
        raise RuntimeError("the oracle's loops did not settle")  # pragma: no cover

    def migrate(self, pfn: int) -> bool:
        r, first = self.r, self.first_round
        if first is None or r.first_round_done or first[0] != pfn:
            return r.migrate(pfn)
        _, r.kind, r.ref, r.targets, r.pool, r.first_round_log, changed = first
        r.kind, r.ref = list(r.kind), list(r.ref)
        r.first_round_done = True
        return bool(changed)

    def commit(self) -> OracleVerdict:
        bug = self.r.commit()
        if bug is not None:  # BUG_ON(): the kernel crashes, nothing is cancelled
            return self.verdict(Outcome.FAILS, None, None, Step.COMMIT, bug)
        self.r.after_success()
        return self.verdict(Outcome.OFFLINED)
