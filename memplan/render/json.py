"""Stable JSON documents (the scripting contract): snake_case keys, integer bytes, fixed types."""

from __future__ import annotations

import json
from typing import IO, Any, Dict, Iterator, List, Optional

from memplan import __version__
from memplan.core.results import BlockVerdict, Confidence, Culprit, Hazard, LogEntry, PageCounts, Summary, Verdicts
from memplan.core.source import InputSource


def culprit_dict(culprit: Culprit) -> Dict[str, Any]:
    return {"pfn": culprit.pfn, "kind": culprit.kind.label, "refcount": culprit.refcount}


def pages_dict(pages: PageCounts, known: bool = True) -> Dict[str, Optional[int]]:
    """The block's page counts; without page data (``BlockVerdict.pages_known`` false) every
    key stays and every count but ``total`` is ``null``."""
    counts: Dict[str, Optional[int]] = {
        "total": pages.total, "free": pages.free, "migrated": pages.migrated,
        "skipped_offline": pages.skipped_offline, "dissolved": pages.dissolved, "hwpoison": pages.hwpoison,
        "vmemmap": pages.vmemmap, "holes": pages.holes, "blocking": pages.blocking,
    }
    if not known:
        counts = {k: (v if k == "total" else None) for k, v in counts.items()}
    return counts


def log_dict(entry: LogEntry) -> Dict[str, Any]:
    return {"level": entry.level.value, "text": entry.text, "pfn": entry.pfn, "function": entry.function,
            "count": entry.count, "repeats": entry.repeats, "ratelimited": entry.ratelimited}


def hazard_dict(hazard: Hazard) -> Dict[str, Any]:
    return {"kind": hazard.kind.value, "text": hazard.text, "pfn": hazard.pfn}


def block_dict(v: BlockVerdict) -> Dict[str, Any]:
    """One block of ``simulate --json`` (also embedded by ``diff-semantics``)."""
    out: Dict[str, Any] = {
        "block": v.block,
        "start": v.start,
        "end": v.end,
        "zone": v.zone.value if v.zone else "none",
        "node": v.node,
        "result": v.result.value,
        "errno": v.errno.value if v.errno else None,
        "reason": v.reason.value if v.reason else None,
        "step": v.step.value if v.step else None,
        "cause": v.cause.value if v.cause else None,
        "culprit": culprit_dict(v.culprit) if v.culprit else None,
        "pages": pages_dict(v.pages, v.pages_known),
        "kernel_log": [log_dict(e) for e in v.kernel_log],
        "hazards": [hazard_dict(h) for h in v.hazards],
        "device": v.device,
        "device_state": v.device_state,
        # every input has them (a profile's verdicts are certain): one shape for every input
        "confidence": (v.confidence or Confidence.CERTAIN).value,
        "blind_spots": list(v.blind_spots),
    }
    return out


def by_confidence_dict(split: Dict[Confidence, int]) -> Dict[str, int]:
    """``{"certain": N, "likely": N, "unknown": N}``: every level present."""
    return {c.value: int(split.get(c, 0)) for c in Confidence}


def simulation_dict(result: Verdicts, source: InputSource, blocks: bool = True) -> Dict[str, Any]:
    """``simulate --json``; ``source`` is what the machine was read from; ``blocks=False``
    leaves the (long) block list empty (without reading the verdicts: the summary then needs
    them read already)."""
    doc: Dict[str, Any] = {
        "memplan": __version__,
        **source.fields(),
        "machine": result.machine,
        "semantics": result.semantics,
        "blocks": [block_dict(b) for b in result] if blocks else [],
        "summary": summary_dict(result.summary),
        "warnings": list(result.warnings),
        # how the semantics was chosen for a snapshot; null for a profile or with --semantics
        # (always present: the keys never depend on the input)
        "semantics_reason": result.semantics_reason or None,
    }
    return doc


def summary_dict(s: Summary) -> Dict[str, Any]:
    """``simulate --json``'s ``summary``: the offlinable memory split by confidence (every level
    present, summing to ``offlinable_bytes``) and the verdicts rated ``unknown``."""
    return {"blocks": s.blocks, "offlined": s.offlined, "fails": s.fails, "hangs": s.hangs,
            "offlinable_bytes": s.offlinable_bytes,
            "offlinable_bytes_by_confidence": by_confidence_dict(s.offlinable_bytes_by_confidence),
            "unknown_blocks": s.unknown_blocks}


def write(doc: Dict[str, Any], stream: IO[str]) -> None:
    json.dump(doc, stream, indent=1)
    stream.write("\n")


#: blocks encoded per ``write()`` call when streaming
_BATCH = 512


def _batches(result: Verdicts) -> Iterator[List[BlockVerdict]]:
    batch: List[BlockVerdict] = []
    for v in result:
        batch.append(v)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def write_simulation(result: Verdicts, stream: IO[str], source: InputSource) -> None:
    """``write(simulation_dict(result, source), stream)``, byte for byte, as the verdicts stream by
    (``Verdicts``, interface I1): blocks are encoded one at a time and written in batches, the
    summary after the last one (it comes after ``blocks`` in the document); nothing is held
    (a 64 TiB machine has 524288 blocks; ``json.dump`` would also write them a token at a time)."""
    first = True
    for batch in _batches(result):
        if first:
            stream.write(_head(result, source) + '"blocks": [\n')
        parts = ["  " + json.dumps(block_dict(v), indent=1).replace("\n", "\n  ") for v in batch]
        # Inside the document a block is at nesting level 2: each of its lines gets two more spaces.
        stream.write(("" if first else ",\n") + ",\n".join(parts))
        first = False
    text = json.dumps(simulation_dict(result, source, blocks=False), indent=1)
    if first:  # no block
        stream.write(text + "\n")
        return
    stream.write("\n ]" + text.split(_MARKER, 1)[1] + "\n")


_MARKER = '"blocks": []'


def _head(result: Verdicts, source: InputSource) -> str:
    """The document up to its ``blocks`` key (nothing there needs the verdicts)."""
    doc = {"memplan": __version__, **source.fields(), "machine": result.machine,
           "semantics": result.semantics, "blocks": []}
    return json.dumps(doc, indent=1).split(_MARKER, 1)[0]


def write_simulation_lines(result: Verdicts, stream: IO[str], source: InputSource) -> None:
    """``simulate --jsonl`` (JSON Lines): one line per block as the verdicts stream by, each the
    object ``--json`` lists under ``blocks``; then one last line with the rest of the
    ``--json`` document (``memplan``, ``source``, ``source_kind``, ``machine``, ``semantics``, ``summary``,
    ``warnings``, and ``semantics_reason`` when set; no ``blocks`` key): the line with a
    ``summary`` key is the last one."""
    for batch in _batches(result):
        stream.write("".join(json.dumps(block_dict(v)) + "\n" for v in batch))
    doc = simulation_dict(result, source, blocks=False)
    del doc["blocks"]
    stream.write(json.dumps(doc) + "\n")
