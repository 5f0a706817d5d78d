"""``memplan explain --json``: the JSON document of one block's story (no rich: ``explain --json``
imports none)."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Sequence

from memplan import __version__
from memplan.core.geometry import Geometry
from memplan.core.results import Cause
from memplan.core.source import InputSource
from memplan.explain.types import BlockStory, CulpritPage, PopulationRow
from memplan.kernel.trace import StepRecord, StepStatus
from memplan.render.json import block_dict
from memplan.snapshot import kpf

#: what ``explain`` says instead of the page table of a block whose pages the input does not hold
PAGES_NOT_SAVED = "page data: not saved"
#: appended to the detail of a step that reads pages the input does not hold
_STAND_IN = "page data: not saved, judged as if every page were free"


def shown_steps(story: BlockStory) -> List[StepRecord]:
    """The story's steps; without page data, each step that read pages says its pages were a
    stand-in (and names no page nor count taken from them)."""
    if story.verdict.pages_known:
        return list(story.steps)
    return [dataclasses.replace(s, detail=f"{s.detail} ({_STAND_IN})", pfn=None, count=None)
            if s.step.info.reads_pages and s.status is not StepStatus.NOT_REACHED else s for s in story.steps]


def population_known(story: BlockStory) -> bool:
    """Whether the page table tells something: the input holds the block's pages, or the block
    is offline (no memmap: nothing to show whatever the input holds)."""
    return story.verdict.pages_known or story.verdict.cause is Cause.NOT_ONLINE


def shown_advice(story: BlockStory) -> str:
    """The advice; without page data it first asks for the pages (the rest rests on stand-ins)."""
    if story.verdict.pages_known:
        return story.advice
    return ("Save the block's pages first (`memplan snapshot --save DIR` on the machine, as root); judged without "
            f"them: {story.advice}")


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


def story_dict(story: BlockStory, source: InputSource, geometry: Geometry,
               warnings: Sequence[str] = ()) -> Dict[str, Any]:
    """``memplan explain --json``: ``block`` is the block object of ``simulate --json`` (with its
    ``confidence`` and ``blind_spots``)."""
    return {
        "memplan": __version__,
        **source.fields(),
        "machine": story.machine,
        "semantics": story.semantics,
        "block": block_dict(story.verdict),
        "steps": [step_dict(s) for s in shown_steps(story)],
        # null: the input holds no page data for the block ([]: the block has no memmap)
        "population": ([population_dict(r, geometry.page_size) for r in story.population]
                       if population_known(story) else None),
        "culprit": culprit_page_dict(story.culprit) if story.culprit else None,
        "advice": shown_advice(story),
        "warnings": list(warnings),
    }
