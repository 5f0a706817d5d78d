"""``memplan diff-semantics``: the same simulation under two semantics, block by block.

The diff never models the kernel itself: it runs ``memplan.engine.simulation.simulate`` once per
semantics and compares the two verdicts of every block by data. Only blocks whose verdict
differs in any of ``VERDICT_FIELDS`` are reported. For those, the predicate sites that explain
the difference are derived generically, so a new ``OfflineSemantics`` subclass needs no change
here:

* every site is evaluated with each semantics' own predicates on the block's own pages (the
  inputs ``offline_block()`` feeds them, ``memplan.kernel.offline.predicate_inputs``); a site
  whose answers differ counts when both sides reach it, or when it is where one side's verdict
  is decided;
* a site also counts when the kernel log lines it prints, or the hazards it causes, differ.

Zi Yan's review question ("no longer give non-virtio-mem drivers a chance to decrease the
refcount?") is answered from the two sets of verdicts: for every PageOffline owner kind in
the selected blocks, per zone, whether the blocks holding it can be offlined under each side.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from memplan.core.machine import Machine, chunks
from memplan.core.model import IS_PAGE_OFFLINE, KIND_INFO, ForeignRefTiming, PageKind, Zone
from memplan.core.results import (
    PIPELINE,
    BlockVerdict,
    Cause,
    Hazard,
    HazardKind,
    LogEntry,
    LogLevel,
    Outcome,
    PipelineStep,
    log_lines,
)
from memplan.core.units import format_block_ranges
from memplan.diff.types import (
    SITE_ORDER,
    VERDICT_FIELDS,
    BlockDifference,
    DiffSummary,
    OwnerAnswer,
    OwnerHazard,
    OwnerOutcome,
    OwnerZone,
    SemanticsDiff,
    Side,
    SidedHazard,
    Site,
    SiteFinding,
)
from memplan.engine.simulation import Simulator, select_blocks, simulate
from memplan.kernel.isolation import isolation_order, unmovable_pages
from memplan.kernel.migration import busy_pages, migrate_leaves
from memplan.kernel.notifier import NOTIFIER_FUNCTION
from memplan.kernel.offline import PredicateInputs, predicate_inputs
from memplan.kernel.semantics import MAINLINE, PROPOSED, OfflineSemantics, get_semantics

DEFAULT_LEFT = MAINLINE
DEFAULT_RIGHT = PROPOSED

#: Every PageOffline kind, in kind order (derived from the model, not listed by hand).
OWNER_KINDS: Tuple[PageKind, ...] = tuple(k for k in PageKind if IS_PAGE_OFFLINE[int(k)])

#: Who owns a PageOffline page of each kind (spec §2.3).
OWNER_NAMES: Dict[PageKind, str] = {
    PageKind.FAKE_OFFLINE: "virtio-mem fake-offline (unplugged memory)",
    PageKind.BALLOON_MOVABLE: "balloon with balloon migration (virtio_balloon, vmw_balloon, cmm)",
    PageKind.BALLOON: "balloon without migration (hv_balloon, xen, virtio_balloon w/o migration)",
    PageKind.OFFLINE_REFCOUNT_DRIVER: "driver using the MEM_GOING_OFFLINE refcount protocol (out of tree)",
    PageKind.OFFLINE_ORPHAN: "PageOffline page with refcount 0 and no owner",
}

#: Kernel log lines by printing function -> the site that prints them (virtio-mem prints only
#: in MEM_GOING_OFFLINE; MEM_CANCEL_OFFLINE re-takes references silently).
LOG_SITES: Dict[str, Site] = {
    "set_migratetype_isolate": Site.ISOLATION,
    NOTIFIER_FUNCTION: Site.GOING_OFFLINE,
    "scan_movable_pages": Site.SCAN_MOVABLE_PAGES,
    "do_migrate_range": Site.DO_MIGRATE_RANGE,
    "test_pages_isolated": Site.TEST_PAGES_ISOLATED,
    "__offline_isolated_pages": Site.OFFLINE_ISOLATED_PAGES,
}

#: Hazards that one site alone causes (the others come with kernel log lines).
HAZARD_SITES: Dict[HazardKind, Site] = {
    HazardKind.FREED_TO_BUDDY: Site.GOING_OFFLINE,
    HazardKind.REFCOUNT_ON_FREE_PAGE: Site.CANCEL_OFFLINE,
    HazardKind.BUG: Site.OFFLINE_ISOLATED_PAGES,
}

def with_foreign_ref_timing(machine: Machine, timing: Union[ForeignRefTiming, str, None]) -> Machine:
    """The machine with ``[environment] foreign_ref_dropped`` replaced (the original is untouched)."""
    if timing is None:
        return machine
    timing = ForeignRefTiming(timing)
    if timing is machine.environment.foreign_ref_dropped:
        return machine
    return dataclasses.replace(machine, environment=dataclasses.replace(machine.environment,
                                                                        foreign_ref_dropped=timing))


def changed_fields(left: BlockVerdict, right: BlockVerdict) -> Tuple[str, ...]:
    """The ``VERDICT_FIELDS`` in which two verdicts of the same block differ."""
    return tuple(f for f in VERDICT_FIELDS if getattr(left, f) != getattr(right, f))


# --- where each side's offline attempt went ----------------------------------------------

def _stopped_at(v: BlockVerdict) -> int:
    """Rank (``PIPELINE``) of the step the attempt stopped at; past the last step when offlined
    (the verdicts without a cause)."""
    if v.cause is None:
        return len(PIPELINE)
    return v.cause.step.rank


def reached_sites(v: BlockVerdict) -> Set[Site]:
    """The sites the kernel runs before the verdict is decided (the deciding one included)."""
    stop = _stopped_at(v)
    sites: Set[Site] = set()
    if stop >= PipelineStep.ISOLATE.rank:
        sites.add(Site.ISOLATION)
    notified = stop >= PipelineStep.GOING_OFFLINE.rank
    if notified:
        sites.add(Site.GOING_OFFLINE)
    # A pending signal ends offlining at the top of the first SCAN round.
    if stop >= PipelineStep.SCAN.rank:
        sites.add(Site.SCAN_MOVABLE_PAGES)
        migrated = (v.pages.migrated > 0 if stop > PipelineStep.SCAN.rank else
                    v.result is Outcome.HANGS or any(e.function == "do_migrate_range" for e in v.kernel_log))
        if migrated:
            sites.add(Site.DO_MIGRATE_RANGE)
    if stop >= PipelineStep.TEST_ISOLATED.rank:
        sites.add(Site.TEST_PAGES_ISOLATED)
    if stop >= PipelineStep.COMMIT.rank:
        sites.add(Site.OFFLINE_ISOLATED_PAGES)
    # Every failure after MEM_GOING_OFFLINE sends MEM_CANCEL_OFFLINE (a BUG at commit does not return).
    if notified and v.result is not Outcome.OFFLINED and v.cause is not Cause.COMMIT_BUG:
        sites.add(Site.CANCEL_OFFLINE)
    return sites


#: The site whose answer decides a verdict that stopped at a pipeline step.
_DECIDING: Dict[PipelineStep, Set[Site]] = {
    PipelineStep.ISOLATE: {Site.ISOLATION},
    PipelineStep.GOING_OFFLINE: {Site.GOING_OFFLINE},
    PipelineStep.TEST_ISOLATED: {Site.TEST_PAGES_ISOLATED},
    PipelineStep.COMMIT: {Site.OFFLINE_ISOLATED_PAGES},
}


def deciding_sites(v: BlockVerdict) -> Set[Site]:
    """The site whose answer decides a failing verdict."""
    if v.cause is None:
        return set()
    if v.cause.step is PipelineStep.SCAN:
        if v.result is Outcome.HANGS:
            return {Site.SCAN_MOVABLE_PAGES, Site.DO_MIGRATE_RANGE}
        return {Site.SCAN_MOVABLE_PAGES}
    return set(_DECIDING.get(v.cause.step, set()))


# --- per-site answers on the block's pages -----------------------------------------------

def _kinds_of(kinds: np.ndarray, mask: np.ndarray) -> Tuple[str, ...]:
    present = np.unique(kinds[mask])
    return tuple(PageKind(int(k)).label for k in present)


def _mask_texts(mask: np.ndarray, differ: np.ndarray, yes: str, no: str) -> str:
    on = int(np.count_nonzero(mask & differ))
    off = int(np.count_nonzero(differ)) - on
    if not off:
        return yes
    if not on:
        return no
    return f"{yes} on {on}, {no} on {off}"


def _mask_finding(site: Site, lmask: np.ndarray, rmask: np.ndarray, domain: np.ndarray, kinds: np.ndarray,
                  pfn: int, yes: str, no: str) -> Optional[SiteFinding]:
    differ = domain & (lmask != rmask)
    if not differ.any():
        return None
    return SiteFinding(site, _mask_texts(lmask, differ, yes, no), _mask_texts(rmask, differ, yes, no),
                       int(np.count_nonzero(differ)), _kinds_of(kinds, differ), pfn + int(np.argmax(differ)))


def _notifier_text(inputs: PredicateInputs, differ: np.ndarray) -> str:
    dropped = differ & inputs.dropped
    if not dropped.any():
        text = "virtio-mem does nothing"
    else:
        text = f"virtio-mem drops its reference on {int(np.count_nonzero(dropped))} page(s)"
        # page_ref_dec_and_test() did not reach 0: someone else holds a reference.
        still = int(np.count_nonzero(dropped & (inputs.before.refcount != 1)))
        if still:
            text += f", {still} still referenced (WARN_ON + dump_page)"
    freed = int(np.count_nonzero(differ & inputs.freed))
    if freed:
        text += f", then put_page() frees {freed} to the buddy"
    return text


def _cancel_text(inputs: PredicateInputs, reached: bool) -> str:
    if not reached:
        return "not sent"
    taken = int(np.count_nonzero(inputs.dropped))
    if not taken:
        return "nothing to undo"
    text = f"re-takes {taken} reference(s)"
    freed = int(np.count_nonzero(inputs.dropped & inputs.freed))
    if freed:
        text += f", {freed} on page(s) already free in the buddy"
    return text


def _commit_text(sem: OfflineSemantics, inputs: PredicateInputs, domain: np.ndarray) -> Tuple[str, np.ndarray]:
    idx = np.flatnonzero(domain)
    fired: List[str] = []
    hit = np.zeros(len(domain), dtype=bool)
    for _level, text, _function, _hazard, mask in sem.commit_checks(inputs.after.refcount[idx],
                                                                   inputs.after.skippable[idx]):
        if mask.any():
            fired.append(f"{text} on {int(np.count_nonzero(mask))} page(s)")
            hit[idx[mask]] = True
    return ("; ".join(fired) if fired else "no check fires"), hit


def examined_pages(site: Site, v: BlockVerdict, start_pfn: int, npages: int, pageblock_pages: int) -> np.ndarray:
    """The pages a site looked at before one side's verdict was decided (none if never reached).

    A site that stops at the verdict's culprit looked only at what comes before it in its walk:
    ``start_isolate_page_range()`` goes first, last, then middle pageblocks (each upward),
    ``scan_movable_pages()`` and ``test_pages_isolated()`` go upward from the range start.
    """
    mask = np.zeros(npages, dtype=bool)
    if site not in reached_sites(v):
        return mask
    if v.culprit is None or site not in deciding_sites(v) or site not in (
            Site.ISOLATION, Site.SCAN_MOVABLE_PAGES, Site.TEST_PAGES_ISOLATED):
        mask[:] = True
        return mask
    index = v.culprit.pfn - start_pfn
    if site is Site.ISOLATION:
        culprit_pb = index // pageblock_pages
        for pb in isolation_order(npages // pageblock_pages):
            if pb == culprit_pb:
                mask[pb * pageblock_pages:index + 1] = True
                break
            mask[pb * pageblock_pages:(pb + 1) * pageblock_pages] = True
        return mask
    mask[:index + 1] = True
    return mask


def predicate_findings(lsem: OfflineSemantics, rsem: OfflineSemantics, left: PredicateInputs,
                       right: PredicateInputs, zone: Optional[Zone],
                       examined: Optional[Dict[Site, np.ndarray]] = None) -> Dict[Site, SiteFinding]:
    """Every site whose two semantics answer differently on these pages (on the pages in
    ``examined[site]`` only, when given)."""
    pfn = left.before.pfn
    kinds = left.before.kinds
    movable = zone is Zone.MOVABLE
    everything = np.ones(len(kinds), dtype=bool)
    looked = examined or {}
    out: Dict[Site, SiteFinding] = {}

    # Site 1: page_is_unmovable() in PB_ISOLATE_MODE_MEM_OFFLINE.
    found = _mask_finding(Site.ISOLATION, unmovable_pages(left.before, movable, lsem),
                          unmovable_pages(right.before, movable, rsem), looked.get(Site.ISOLATION, everything),
                          kinds, pfn, "unmovable", "movable")
    if found:
        out[Site.ISOLATION] = found

    # The memory notifier: how each side's MEM_GOING_OFFLINE handlers leave the pages.
    ldelta = left.after.refcount - left.before.refcount
    rdelta = right.after.refcount - right.before.refcount
    differ = (ldelta != rdelta) | (left.after.kinds != right.after.kinds)
    if differ.any():
        out[Site.GOING_OFFLINE] = SiteFinding(
            Site.GOING_OFFLINE, _notifier_text(left, differ), _notifier_text(right, differ),
            int(np.count_nonzero(differ)), _kinds_of(kinds, differ), pfn + int(np.argmax(differ)))

    # Sites 2-5 look at the PageOffline pages without movable_ops that both sides still have.
    domain = (left.after.offline & ~left.after.movable_ops & right.after.offline & ~right.after.movable_ops)
    after_kinds = left.after.kinds
    found = _mask_finding(Site.SCAN_MOVABLE_PAGES, busy_pages(left.after, lsem), busy_pages(right.after, rsem),
                          domain & looked.get(Site.SCAN_MOVABLE_PAGES, everything), after_kinds, pfn, "-EBUSY",
                          "skipped")
    if found:
        out[Site.SCAN_MOVABLE_PAGES] = found

    # Skipped before folio_try_get(), or folio_try_get() fails on refcount 0.
    found = _mask_finding(Site.DO_MIGRATE_RANGE, migrate_leaves(left.after, lsem), migrate_leaves(right.after, rsem),
                          domain,
                          after_kinds, pfn, "skipped", "isolation tried")
    if found:
        out[Site.DO_MIGRATE_RANGE] = found
    found = _mask_finding(Site.TEST_PAGES_ISOLATED,
                          lsem.test_passes(left.after.refcount, left.after.skippable),
                          rsem.test_passes(right.after.refcount, right.after.skippable),
                          domain & looked.get(Site.TEST_PAGES_ISOLATED, everything), after_kinds, pfn,
                          "accepted", "rejected")
    if found:
        out[Site.TEST_PAGES_ISOLATED] = found
    ltext, lhit = _commit_text(lsem, left, domain)
    rtext, rhit = _commit_text(rsem, right, domain)
    if ltext != rtext:
        hit = lhit | rhit
        out[Site.OFFLINE_ISOLATED_PAGES] = SiteFinding(
            Site.OFFLINE_ISOLATED_PAGES, ltext, rtext, int(np.count_nonzero(hit)), _kinds_of(after_kinds, hit),
            pfn + int(np.argmax(hit)) if hit.any() else None)

    # MEM_CANCEL_OFFLINE undoes what MEM_GOING_OFFLINE did; it differs in effect only where it
    # cannot: a page whose reference it re-takes was freed meanwhile.
    lbad, rbad = left.dropped & left.freed, right.dropped & right.freed
    if np.count_nonzero(lbad) != np.count_nonzero(rbad):
        bad = lbad | rbad
        out[Site.CANCEL_OFFLINE] = SiteFinding(Site.CANCEL_OFFLINE, _cancel_text(left, True),
                                               _cancel_text(right, True), int(np.count_nonzero(bad)),
                                               _kinds_of(kinds, bad), pfn + int(np.argmax(bad)))
    return out


def _log_findings(left: BlockVerdict, right: BlockVerdict) -> Dict[Site, SiteFinding]:
    # Whether a line repeats every retry round follows from the outcome, not from the site.
    def key(e: LogEntry) -> Tuple:
        return e.level, e.text, e.pfn, e.function, e.count

    lcount, rcount = Counter(map(key, left.kernel_log)), Counter(map(key, right.kernel_log))
    only = (lcount - rcount) + (rcount - lcount)
    out: Dict[Site, SiteFinding] = {}
    for level, _text, pfn, function, _count in only:
        site = LOG_SITES.get(function or "")
        if site is None or level is LogLevel.PR_DEBUG:
            continue
        lines = [log_lines([e for e in v.kernel_log if LOG_SITES.get(e.function or "") is site])
                 for v in (left, right)]
        previous = out.get(site)
        first = min(p for p in (pfn, previous.pfn if previous else None) if p is not None) if (
            pfn is not None or (previous and previous.pfn is not None)) else None
        out[site] = SiteFinding(site, "; ".join(lines[0]) or "prints nothing", "; ".join(lines[1]) or "prints nothing",
                                0, (), first)
    return out


def _hazard_findings(left: BlockVerdict, right: BlockVerdict) -> Dict[Site, SiteFinding]:
    lkinds = Counter(h.kind for h in left.hazards)
    rkinds = Counter(h.kind for h in right.hazards)
    out: Dict[Site, SiteFinding] = {}
    for kind, site in HAZARD_SITES.items():
        if lkinds[kind] != rkinds[kind]:
            def text(hazards: Tuple[Hazard, ...], k: HazardKind = kind) -> str:
                return "; ".join(h.text for h in hazards if h.kind is k) or f"no {k.value} hazard"
            pfns = [h.pfn for h in left.hazards + right.hazards if h.kind is kind and h.pfn is not None]
            out[site] = SiteFinding(site, text(left.hazards), text(right.hazards), 0, (),
                                    min(pfns) if pfns else None)
    return out


def block_findings(lsem: OfflineSemantics, rsem: OfflineSemantics, left: BlockVerdict, right: BlockVerdict,
                   linputs: Optional[PredicateInputs], rinputs: Optional[PredicateInputs],
                   pageblock_pages: int) -> Tuple[SiteFinding, ...]:
    """The sites that explain why two verdicts of one block differ, in ``SITE_ORDER``."""
    lreach, rreach = reached_sites(left), reached_sites(right)
    ldecide, rdecide = deciding_sites(left) & lreach, deciding_sites(right) & rreach
    chosen: Dict[Site, SiteFinding] = {}
    answers: Optional[Dict[Site, SiteFinding]] = None
    if linputs is not None and rinputs is not None:
        start, npages = linputs.before.pfn, len(linputs.before)
        examined = {site: examined_pages(site, left, start, npages, pageblock_pages)
                    | examined_pages(site, right, start, npages, pageblock_pages) for site in SITE_ORDER}
        answers = predicate_findings(lsem, rsem, linputs, rinputs, left.zone, examined)
        for site, finding in answers.items():
            if (site in lreach and site in rreach) or site in ldecide or site in rdecide:
                if site is Site.CANCEL_OFFLINE:
                    finding = dataclasses.replace(finding, left=_cancel_text(linputs, site in lreach),
                                                  right=_cancel_text(rinputs, site in rreach))
                chosen[site] = finding
    # Log lines and hazards of a site count when the site itself answers differently, or both
    # sides run it; not when one side merely got further (e.g. MIGRATE's "failed to isolate pfn"
    # on a page the other side's isolation already refused).
    for extra in (_log_findings(left, right), _hazard_findings(left, right)):
        for site, finding in extra.items():
            if answers is None or site in answers or (site in lreach and site in rreach):
                chosen.setdefault(site, finding)
    return tuple(chosen[s] for s in SITE_ORDER if s in chosen)


# --- explanation ------------------------------------------------------------------------

def outcome_text(v: BlockVerdict, plural: bool = False) -> str:
    """``offlines`` / ``fails -EBUSY at scan ("unmovable page")`` / ``hangs at scan``."""
    s = "" if plural else "s"
    if v.result is Outcome.OFFLINED:
        return f"offline{s}"
    where = f" at {v.step.value}" if v.step else ""
    if v.result is Outcome.HANGS:
        return f"hang{s}{where}"
    errno = f" -{v.errno.value}" if v.errno else ""
    reason = f" (\"{v.reason.value}\")" if v.reason else ""
    return f"fail{s}{errno}{where}{reason}"


def describe_finding(f: SiteFinding, left: str, right: str) -> str:
    pages = ""
    if f.pages:
        pages = f" {f.pages} {'/'.join(f.kinds)} page{'s' if f.pages != 1 else ''}"
    return f"{f.site.value}{pages}: {f.left} under {left}, {f.right} under {right}"


def explain(left_name: str, right_name: str, left: BlockVerdict, right: BlockVerdict,
            changed: Sequence[str], findings: Sequence[SiteFinding]) -> str:
    """One line: what each side does, and the deciding site's answers."""
    lo, ro = outcome_text(left), outcome_text(right)
    if lo == ro:
        what = [f for f in changed if f in ("culprit", "kernel_log", "hazards")]
        fields = ", ".join(w.replace("_", " ") for w in what) or "the verdict"
        head = f"both {outcome_text(left, plural=True)}; {fields} differ{'s' if len(what) == 1 else ''}"
    else:
        head = f"{left_name} {lo}, {right_name} {ro}"
    decisive = (deciding_sites(left) & reached_sites(left)) | (deciding_sites(right) & reached_sites(right))
    if lo == ro and left.culprit == right.culprit:
        decisive = set()  # same decision for the same page: the first site that differs says why
    picked = [f for f in findings if f.site in decisive] or list(findings[:1])
    text = head if not picked else f"{head}: " + "; ".join(describe_finding(f, left_name, right_name) for f in picked)
    return text + "".join(f"; {note}" for note in _one_sided_hazards(left_name, right_name, left, right))


def _one_sided_hazards(left_name: str, right_name: str, left: BlockVerdict, right: BlockVerdict) -> List[str]:
    """Hazards of a block that offlines under one side only, which the other side cannot have:
    its offline attempt ends before the sequence that causes them (e.g. the reference lost on
    re-online needs the block to go offline with the reference held)."""
    notes = []
    for name, v, other_name, other in ((left_name, left, right_name, right), (right_name, right, left_name, left)):
        if v.result is not Outcome.OFFLINED or other.result is Outcome.OFFLINED:
            continue
        theirs = {h.kind for h in other.hazards}
        for kind in dict.fromkeys(h.kind for h in v.hazards if h.kind not in theirs):
            notes.append(f"{kind.value} only under {name}: under {other_name} it cannot happen, offlining "
                         f"{outcome_text(other)} first")
    return notes


# --- Zi Yan's question ------------------------------------------------------------------

#: Per block and side: (hazard kind, owner kind) of every hazard about a PageOffline page.
HazardOwners = Dict[int, Tuple[Set[Tuple[HazardKind, PageKind]], ...]]


def _hazard_owners(pair: Tuple[BlockVerdict, BlockVerdict], start_pfn: int,
                   kinds: np.ndarray) -> Tuple[Set[Tuple[HazardKind, PageKind]], ...]:
    """Per side, which owner kind's page each hazard of a block is about (the page at its pfn)."""
    def about(v: BlockVerdict) -> Set[Tuple[HazardKind, PageKind]]:
        out = set()
        for h in v.hazards:
            index = -1 if h.pfn is None else h.pfn - start_pfn
            if 0 <= index < len(kinds) and IS_PAGE_OFFLINE[int(kinds[index])]:
                out.add((h.kind, PageKind(int(kinds[index]))))
        return out
    return about(pair[0]), about(pair[1])


def _owner_hazards(kind: PageKind, rows: List[Tuple[BlockVerdict, BlockVerdict]],
                   owners: HazardOwners) -> Tuple[OwnerHazard, ...]:
    """Per hazard kind on this owner's pages: the blocks whose verdict carries it, per side."""
    out = []
    for hazard in HazardKind:
        sides = tuple(tuple(pair[side].block for pair in rows
                            if (hazard, kind) in owners.get(pair[side].block, (set(), set()))[side])
                      for side in (0, 1))
        if any(sides):
            out.append(OwnerHazard(hazard, *sides))
    return tuple(out)


def _hazard_note(h: OwnerHazard, names: Tuple[str, str],
                 pairs: Dict[int, Tuple[BlockVerdict, BlockVerdict]]) -> str:
    """``reference_lost_on_online: none under refcount (offlining fails -EBUSY at scan
    ("unmovable page") there first), block 39 under skippable``."""
    parts = []
    for side, (mine, theirs) in enumerate(((h.left, h.right), (h.right, h.left))):
        if mine:
            parts.append(f"block{'s' if len(mine) > 1 else ''} {format_block_ranges(list(mine))} under {names[side]}")
            continue
        verdicts = [pairs[b][side] for b in theirs]
        outcomes = Counter(outcome_text(v) for v in verdicts if not v.offlinable)
        why = f" (offlining {outcomes.most_common(1)[0][0]} there first)" if len(outcomes) == 1 and not any(
            v.offlinable for v in verdicts) else ""
        parts.append(f"none under {names[side]}{why}")
    return f"{h.kind.value}: {', '.join(parts)}"


def _owner_answer(kind: PageKind, pages: int, rows: List[Tuple[BlockVerdict, BlockVerdict]],
                  owners: Optional[HazardOwners] = None, names: Tuple[str, str] = (DEFAULT_LEFT, DEFAULT_RIGHT)
                  ) -> OwnerAnswer:
    by_zone: Dict[Optional[Zone], List[Tuple[BlockVerdict, BlockVerdict]]] = {}
    for pair in rows:
        by_zone.setdefault(pair[0].zone, []).append(pair)

    def outcome(verdicts: List[BlockVerdict]) -> OwnerOutcome:
        blocked = [v for v in verdicts if v.result is not Outcome.OFFLINED and v.culprit is not None
                   and v.culprit.kind is kind]
        failures = Counter((v.result, v.errno.value if v.errno else None, v.reason.value if v.reason else None, v.step)
                           for v in blocked)
        return OwnerOutcome(blocks=len(verdicts), offlinable=sum(v.result is Outcome.OFFLINED for v in verdicts),
                            blocked_by_kind=len(blocked), failures=tuple(f for f, _ in failures.most_common()))

    def blames(v: BlockVerdict) -> bool:
        return v.result is not Outcome.OFFLINED and v.culprit is not None and v.culprit.kind is kind

    zones: List[OwnerZone] = []
    for zone in sorted(by_zone, key=lambda z: -1 if z is None else z.code):
        pairs = by_zone[zone]
        changed = sum(1 for lv, rv in pairs if (lv.result is Outcome.OFFLINED) != (rv.result is Outcome.OFFLINED)
                      and (blames(lv) or blames(rv)))
        stepped = sum(1 for lv, rv in pairs if lv.result is not Outcome.OFFLINED and rv.result is not Outcome.OFFLINED
                      and (blames(lv) or blames(rv))
                      and (lv.result, lv.errno, lv.reason, lv.step) != (rv.result, rv.errno, rv.reason, rv.step))
        zones.append(OwnerZone(zone, outcome([p[0] for p in pairs]), outcome([p[1] for p in pairs]), changed, stepped))

    def zone_names(items: Sequence[OwnerZone]) -> str:
        return ", ".join(z.zone.value if z.zone else "none" for z in items)

    changing = [z for z in zones if z.changes]
    steady = [z for z in zones if not z.changes]
    stepping = [z for z in steady if z.step_changed_blocks]
    if changing:
        note = f"offlinability changes in {zone_names(changing)}"
        if steady:
            note += f"; unchanged in {zone_names(steady)}"
    else:
        note = f"present only in zones where offlinability does not change: {zone_names(zones)}"
    if stepping:
        note += f"; the failing step changes in {zone_names(stepping)}"
    hazards = _owner_hazards(kind, rows, owners or {})
    if hazards:
        by_block = {lv.block: (lv, rv) for lv, rv in rows}
        note += "; hazards on these pages: " + "; ".join(_hazard_note(h, names, by_block) for h in hazards)
    return OwnerAnswer(kind, OWNER_NAMES.get(kind, KIND_INFO[kind].description), pages, tuple(zones), note, hazards)


# --- the diff ---------------------------------------------------------------------------

Progress = Callable[[int, int], None]


def diff_semantics(machine: Machine, left: str = DEFAULT_LEFT, right: str = DEFAULT_RIGHT,
                   blocks: Optional[Sequence[int]] = None, progress: Optional[Progress] = None) -> SemanticsDiff:
    """Simulate the selected blocks (default: every online block) under ``left`` and ``right``
    and keep the blocks whose verdicts differ."""
    lsem, rsem = get_semantics(left), get_semantics(right)
    ids = select_blocks(machine, blocks)
    lresult = simulate(machine, lsem.name, [int(b) for b in ids])
    rresult = simulate(machine, rsem.name, [int(b) for b in ids])
    pairs = list(zip(lresult.blocks, rresult.blocks))
    changed = {lv.block: changed_fields(lv, rv) for lv, rv in pairs}
    differing = {b for b, fields in changed.items() if fields}

    # One pass over the pages: PageOffline owners of every block, predicate inputs of the
    # blocks that differ.
    table = machine.blocks
    online = {int(b) for b in table.ids[table.online]}
    possible = getattr(machine.pages, "possible_kinds", lambda: None)()
    census = possible is None or any(k in possible for k in OWNER_KINDS)
    scan_ids = np.asarray([b for b in (int(i) for i in ids) if b in online and (census or b in differing)],
                          dtype=np.int64)
    owner_pages: Dict[int, Dict[PageKind, int]] = {}
    hazard_owners: HazardOwners = {}
    by_block = {lv.block: (lv, rv) for lv, rv in pairs if lv.hazards or rv.hazards}
    inputs: Dict[int, Tuple[PredicateInputs, PredicateInputs]] = {}
    lsim, rsim = Simulator(machine, lsem), Simulator(machine, rsem)
    done = 0
    for chunk in chunks(scan_ids, machine.geometry.pages_per_block):
        batch = machine.pages.materialize(chunk)
        if census:
            po = IS_PAGE_OFFLINE[batch.kinds]
            for r in np.flatnonzero(po.any(axis=1)).tolist():
                row_kinds = batch.kinds[r][po[r]]
                owner_pages[int(chunk[r])] = {k: int(n) for k in OWNER_KINDS
                                              if (n := np.count_nonzero(row_kinds == k))}
                pair = by_block.get(int(chunk[r]))
                if pair is not None:
                    hazard_owners[int(chunk[r])] = _hazard_owners(
                        pair, int(chunk[r]) * machine.geometry.pages_per_block, batch.kinds[r])
        for r, block in enumerate(int(b) for b in chunk):
            if block not in differing:
                continue
            row = int(table.rows([block])[0])
            ref = batch.refcount[r] if batch.refcount is not None else None
            inputs[block] = (predicate_inputs(lsim.setup, lsim.context(row), batch.kinds[r], ref),
                             predicate_inputs(rsim.setup, rsim.context(row), batch.kinds[r], ref))
        done += len(chunk)
        if progress:
            progress(done, len(scan_ids))

    differences: List[BlockDifference] = []
    for lv, rv in pairs:
        if lv.block not in differing:
            continue
        li, ri = inputs.get(lv.block, (None, None))
        findings = block_findings(lsem, rsem, lv, rv, li, ri, machine.geometry.pageblock_pages)
        hazards = tuple(SidedHazard(Side.LEFT, lsem.name, h) for h in lv.hazards) + tuple(
            SidedHazard(Side.RIGHT, rsem.name, h) for h in rv.hazards)
        differences.append(BlockDifference(
            block=lv.block, left=lv, right=rv, changed=changed[lv.block], findings=findings,
            explanation=explain(lsem.name, rsem.name, lv, rv, changed[lv.block], findings), hazards=hazards))

    owners: List[OwnerAnswer] = []
    for kind in OWNER_KINDS:
        rows = [(lv, rv) for lv, rv in pairs if owner_pages.get(lv.block, {}).get(kind)]
        if rows:
            total = sum(owner_pages[lv.block][kind] for lv, _ in rows)
            owners.append(_owner_answer(kind, total, rows, hazard_owners, (lsem.name, rsem.name)))

    ls, rs = lresult.summary, rresult.summary
    summary = DiffSummary(blocks=len(pairs), differ=len(differences), left_offlined=ls.offlined,
                          right_offlined=rs.offlined, left_offlinable_bytes=ls.offlinable_bytes,
                          right_offlinable_bytes=rs.offlinable_bytes,
                          left_offlinable_by_confidence=ls.offlinable_bytes_by_confidence,
                          right_offlinable_by_confidence=rs.offlinable_bytes_by_confidence)
    return SemanticsDiff(profile=machine.source, machine=machine.name, left=lsem.name, right=rsem.name,
                         foreign_ref_dropped=machine.environment.foreign_ref_dropped,
                         differences=tuple(differences), owners=tuple(owners), summary=summary,
                         warnings=tuple(dict.fromkeys(lresult.warnings + rresult.warnings)))
