"""``memplan explain`` output: the rich story of one block and its JSON document."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from rich.console import Console
from rich.table import Table
from rich.text import Text

from memplan import __version__
from memplan.core.results import LogEntry, LogLevel, Outcome
from memplan.core.units import format_size
from memplan.explain.types import BlockStory, CulpritPage, PopulationRow
from memplan.kernel.pages import RATELIMIT_NOTE
from memplan.kernel.trace import StepRecord, StepStatus
from memplan.render.cells import RESULT_STYLE, lsmem_range
from memplan.render.json import block_dict
from memplan.snapshot import kpf

STATUS_STYLE = {StepStatus.PASSED: "green", StepStatus.FAILED: "bold red", StepStatus.HANGS: "bold yellow",
                StepStatus.NOT_REACHED: "dim"}


# --- JSON -------------------------------------------------------------------------------

def step_dict(s: StepRecord) -> Dict[str, Any]:
    return {"step": s.step.value, "function": s.step.function, "status": s.status.value, "detail": s.detail,
            "pfn": s.pfn, "count": s.count}


def population_dict(r: PopulationRow, page_size: int) -> Dict[str, Any]:
    return {"kind": r.kind.label, "flags": r.flags, "symbolic": kpf.symbolic_flags(r.flags),
            "long_names": kpf.long_symbolic_flags(r.flags), "pages": r.pages, "bytes": r.pages * page_size,
            "refcounts": list(r.refcounts)}


def culprit_page_dict(c: CulpritPage) -> Dict[str, Any]:
    return {"pfn": c.pfn, "kind": c.kind.label, "refcount": c.refcount, "flags": c.flags,
            "symbolic": kpf.symbolic_flags(c.flags), "long_names": kpf.long_symbolic_flags(c.flags),
            "description": c.description}


def story_dict(story: BlockStory, page_size: int = 4096) -> Dict[str, Any]:
    """``memplan explain --json``: ``block`` is the block object of ``simulate --json``."""
    return {
        "memplan": __version__,
        "profile": story.profile,
        "machine": story.machine,
        "semantics": story.semantics,
        "block": block_dict(story.verdict),
        "steps": [step_dict(s) for s in story.steps],
        "population": [population_dict(r, page_size) for r in story.population],
        "culprit": culprit_page_dict(story.culprit) if story.culprit else None,
        "advice": story.advice,
    }


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


def steps_table(steps: Sequence[StepRecord]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("STEP", no_wrap=True)
    table.add_column("KERNEL", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("DETAIL", overflow="fold")
    for i, s in enumerate(steps, 1):
        table.add_row(str(i), s.step.label, s.step.function, Text(s.status.label, style=STATUS_STYLE[s.status]),
                      s.detail or ("-" if s.status is StepStatus.NOT_REACHED else ""))
    return table


#: below this console width the hex flags column is left out (symbolic-flags says the same)
WIDE = 150


def _flag_columns(table: Table, hex_flags: bool) -> None:
    if hex_flags:
        table.add_column("flags", no_wrap=True)


def population_table(rows: Sequence[PopulationRow], page_size: int, hex_flags: bool = True) -> Table:
    """page-types' summary (``flags page-count MB symbolic-flags long-symbolic-flags``) per kind."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("kind", no_wrap=True)
    _flag_columns(table, hex_flags)
    table.add_column("page-count", justify="right", no_wrap=True)
    table.add_column("MB", justify="right", no_wrap=True)
    table.add_column("symbolic-flags", no_wrap=True)
    table.add_column("long-symbolic-flags", overflow="fold", min_width=19)
    table.add_column("refcount", no_wrap=True)
    total = 0
    for r in rows:
        total += r.pages
        refs = ",".join(str(x) for x in r.refcounts[:4]) + (",..." if len(r.refcounts) > 4 else "")
        flags = [f"0x{r.flags:016x}"] if hex_flags else []
        table.add_row(r.kind.label, *flags, str(r.pages), str((r.pages * page_size) >> 20),
                      kpf.symbolic_flags(r.flags), kpf.long_symbolic_flags(r.flags), refs)
    table.add_row("total", *([""] if hex_flags else []), str(total), str((total * page_size) >> 20), "", "", "")
    return table


def culprit_table(c: CulpritPage, hex_flags: bool = True) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("pfn", no_wrap=True)
    _flag_columns(table, hex_flags)
    table.add_column("symbolic-flags", no_wrap=True)
    table.add_column("long-symbolic-flags", overflow="fold", min_width=19)
    table.add_column("refcount", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    flags = [f"0x{c.flags:016x}"] if hex_flags else []
    table.add_row(f"{c.pfn:#x}", *flags, kpf.symbolic_flags(c.flags), kpf.long_symbolic_flags(c.flags), str(c.refcount),
                  c.kind.label)
    return table


def print_story(console: Console, story: BlockStory, page_size: int = 4096) -> None:
    v = story.verdict
    zone = f"ZONE_{v.zone.value.upper()}" if v.zone else "valid_zones none"
    device = f", virtio-mem {v.device} {v.device_state}" if v.device else ""

    def line(text: str) -> None:
        console.print(text, highlight=False, markup=False, soft_wrap=True)

    console.print(Text(f"memory block {v.block}", style="bold") + Text(
        f" (memory{v.block}): {lsmem_range(v)}, {format_size(v.size)}, {zone}, node {v.node}{device}"),
        highlight=False, soft_wrap=True)
    line(f"{story.machine} ({story.profile}), semantics {story.semantics}: {story.semantics_title}")
    console.print(_outcome(story), highlight=False, soft_wrap=True)
    console.print()
    console.print(Text("The offline pipeline, step by step (offline_pages(), spec section 3):", style="bold"),
                  highlight=False)
    console.print(steps_table(story.steps))
    console.print()
    if story.population:
        console.print(Text("Pages of the block (kpageflags as page-types -r shows them):", style="bold"),
                      highlight=False)
        console.print(population_table(story.population, page_size, console.width >= WIDE))
    else:
        console.print(Text("Pages of the block: none to show (an offline block has no memmap; kpageflags reads "
                           "nothing for it).", style="bold"), highlight=False, soft_wrap=True)
    if story.culprit:
        console.print()
        console.print(Text("The culprit page (page-types -L style):", style="bold"), highlight=False)
        console.print(culprit_table(story.culprit, console.width >= WIDE))
        line(f"  {story.culprit.kind.label}: {story.culprit.description}")
    console.print()
    console.print(Text("What the kernel would print:", style="bold"), highlight=False)
    lines = kernel_lines(v.kernel_log)
    for text in lines or ["(nothing)"]:
        line(f"  {text}")
    if any(e.ratelimited for e in v.kernel_log):
        line(f"  ({RATELIMIT_NOTE})")
    for h in v.hazards:
        console.print(Text.assemble("  hazard ", (h.kind.value, "red"), f": {h.text}"), highlight=False,
                      soft_wrap=True)
    console.print()
    console.print(Text.assemble(("Advice: ", "bold"), story.advice), highlight=False, soft_wrap=True)
