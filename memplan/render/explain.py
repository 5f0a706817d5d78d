"""``memplan explain`` output: the rich story of one block (its JSON document is
``memplan.render.explain_json``, which imports no rich; its names are re-exported here)."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

from rich.console import Console
from rich.text import Text

from memplan.core.geometry import Geometry
from memplan.core.results import Confidence, LogEntry, LogLevel, Outcome
from memplan.core.units import format_size
from memplan.explain.types import BlockStory, CulpritPage, PopulationRow
from memplan.kernel.pages import RATELIMIT_NOTE
from memplan.kernel.trace import StepRecord, StepStatus
from memplan.render.cells import RESULT_STYLE, lsmem_range
from memplan.render.console import print_line
from memplan.render.escape import safe
from memplan.render.explain_json import (  # noqa: F401  (re-exported)
    PAGES_NOT_SAVED,
    culprit_page_dict,
    population_dict,
    population_known,
    shown_advice,
    shown_steps,
    step_dict,
    story_dict,
)
from memplan.render.grid import Grid, GridColumn, Styled, print_grid
from memplan.snapshot import kpf

STATUS_STYLE = {StepStatus.PASSED: "green", StepStatus.FAILED: "bold red", StepStatus.HANGS: "bold yellow",
                StepStatus.NOT_REACHED: "dim"}


# --- rich -------------------------------------------------------------------------------

def kernel_lines(entries: Sequence[LogEntry]) -> List[str]:
    """The kernel log as dmesg would show it; a message printed for several pages is one line
    with the count and the pfns (``[x10, pfn 0x15a000-0x15a009]``)."""
    groups: Dict[Tuple[LogLevel, str, Optional[str], bool, bool], List[LogEntry]] = {}
    for e in entries:
        template = e.text.replace(f"pfn {e.pfn:x}", "pfn %lx") if e.pfn is not None else e.text
        groups.setdefault((e.level, template, e.function, e.repeats, e.ratelimited), []).append(e)
    out: List[str] = []
    for (level, template, function, repeats, ratelimited), items in groups.items():
        first = items[0]
        text = first.text if len(items) == 1 else template
        where = f" at {function}" if function else ""
        if level is LogLevel.DUMP_PAGE:
            text = f"page dumped because: {text}"
        elif level in (LogLevel.WARN, LogLevel.WARN_ONCE):
            text = f"WARNING{where}: {text}" + (" (once per boot)" if level is LogLevel.WARN_ONCE else "")
        elif level is LogLevel.BUG:
            text = f"kernel BUG{where}: {text}"
        elif level is LogLevel.PR_DEBUG:
            text = f"{text} (pr_debug: dynamic debug only)"
        pfns = [e.pfn for e in items if e.pfn is not None]
        count = sum(e.count for e in items)
        notes = []
        if count > 1:
            notes.append(f"x{count}")
        if len(pfns) == 1 and count == 1:
            notes.append(f"pfn {pfns[0]:#x}")
        elif pfns and all(e.count == 1 for e in items):
            notes.append(f"pfns {min(pfns):#x}..{max(pfns):#x}")
        elif pfns:
            notes.append(f"from pfn {min(pfns):#x}")
        if repeats:
            notes.append("again every retry round")
        if ratelimited:
            notes.append("rate-limited")
        out.append(f"{level.value:<9} {text}" + (f" [{', '.join(notes)}]" if notes else ""))
    return out


def _outcome(story: BlockStory) -> Text:
    v = story.verdict
    text = Text(v.result.value, style=RESULT_STYLE[v.result])
    if v.result is Outcome.OFFLINED:
        text.append(": the write succeeds and the block goes offline")
    elif v.result is Outcome.HANGS:
        text.append(f": the write does not return until a signal arrives, then -EINTR \"signal backoff\" "
                    f"(decided at {v.step.value if v.step else '?'})")
    else:
        errno = f"-{v.errno.value}" if v.errno else "no errno"
        reason = f" \"{v.reason.value}\"" if v.reason else ""
        text.append(f": the write returns {errno}{reason} (decided at {v.step.value if v.step else '?'})")
    return text


def print_steps(console: Console, steps: Sequence[StepRecord]) -> None:
    grid = Grid([GridColumn("#", "right"), GridColumn("STEP"), GridColumn("KERNEL"), GridColumn("STATUS"),
                 GridColumn("DETAIL")])
    for i, s in enumerate(steps, 1):
        grid.add_row([str(i), s.step.label, s.step.function, Styled(s.status.label, STATUS_STYLE[s.status]),
                      s.detail or ""])
    grid.print(console)


def print_population(console: Console, rows: Sequence[PopulationRow], page_size: int) -> None:
    """page-types' summary (``flags page-count MB symbolic-flags long-symbolic-flags``) per kind."""
    grid = Grid([GridColumn("kind"), GridColumn("flags"), GridColumn("page-count", "right"), GridColumn("MB", "right"),
                 GridColumn("symbolic-flags"), GridColumn("long-symbolic-flags"), GridColumn("refcount")])
    total = 0
    for r in rows:
        total += r.pages
        refs = ",".join(str(x) for x in r.refcounts[:4]) + (",..." if len(r.refcounts) > 4 else "")
        grid.add_row([r.kind.label, f"0x{r.flags:016x}", str(r.pages), str((r.pages * page_size) >> 20),
                      kpf.symbolic_flags(r.flags), kpf.long_symbolic_flags(r.flags), refs])
    grid.add_row(["total", "", str(total), str((total * page_size) >> 20), "", "", ""])
    grid.print(console)


def print_culprit(console: Console, c: CulpritPage) -> None:
    print_grid(console, (("pfn", "left"), ("flags", "left"), ("symbolic-flags", "left"),
                         ("long-symbolic-flags", "left"), ("refcount", "left"), ("kind", "left")),
               [[f"{c.pfn:#x}", f"0x{c.flags:016x}", kpf.symbolic_flags(c.flags), kpf.long_symbolic_flags(c.flags),
                 str(c.refcount), c.kind.label]])


def print_story(console: Console, story: BlockStory, geometry: Geometry) -> None:
    v = story.verdict
    zone = f"ZONE_{v.zone.value.upper()}" if v.zone else "valid_zones none"
    device = f", virtio-mem {v.device} {v.device_state}" if v.device else ""

    def line(text: Union[str, Text] = "") -> None:
        print_line(console, Text(safe(text)) if isinstance(text, str) else text)

    def heading(text: str) -> None:
        line(Text(text, style="bold"))

    line(Text(f"memory block {v.block}", style="bold") + Text(
        safe(f" (memory{v.block}): {lsmem_range(v)}, {format_size(v.size)}, {zone}, node {v.node}{device}")))
    line(f"{story.machine} ({story.profile}), semantics {story.semantics}: {story.semantics_title}")
    line(_outcome(story))
    confidence = (v.confidence or Confidence.CERTAIN).value
    line(f"Confidence: {confidence}" + (", because the input cannot see:" if v.blind_spots else ""))
    for spot in v.blind_spots:
        line(f"  - {spot}")
    line()
    heading("The offline pipeline, step by step (offline_pages(), spec section 3):")
    print_steps(console, shown_steps(story))
    line()
    if not population_known(story):
        heading(f"Pages of the block: {PAGES_NOT_SAVED} (the input holds no page flags; the steps that read "
                "pages were judged as if every page were free).")
    elif story.population:
        heading("Pages of the block (kpageflags as page-types -r shows them):")
        print_population(console, story.population, geometry.page_size)
    else:
        heading("Pages of the block: none to show (an offline block has no memmap; kpageflags reads nothing for it).")
    if story.culprit:
        line()
        heading("The culprit page (page-types -L style):")
        print_culprit(console, story.culprit)
        line(f"  {story.culprit.kind.label}: {story.culprit.description}")
    line()
    heading("What the kernel would print:")
    for text in kernel_lines(v.kernel_log) or ["(nothing)"]:
        line(f"  {text}")
    if any(e.ratelimited for e in v.kernel_log):
        line(f"  ({RATELIMIT_NOTE})")
    for h in v.hazards:
        line(Text.assemble("  hazard ", (h.kind.value, "red"), f": {safe(h.text)}"))
    line()
    line(Text.assemble(("Advice: ", "bold"), safe(shown_advice(story))))
