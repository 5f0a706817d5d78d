"""``memplan snapshot --json``: the snapshot's JSON document and the listing's default columns
(no rich: ``snapshot --json`` imports none; ``memplan.render.snapshot`` re-exports both)."""

from __future__ import annotations

from typing import Any, Dict

from memplan import __version__
from memplan.core.source import InputSource
from memplan.render.block_columns import LSMEM_DEFAULT
from memplan.snapshot.report import SnapshotReport

#: the block listing's default columns: lsmem's and the zones
SNAPSHOT_DEFAULT = LSMEM_DEFAULT + ("ZONES",)


def snapshot_dict(report: SnapshotReport, source: InputSource) -> Dict[str, Any]:
    """The stable JSON document of ``memplan snapshot --json``."""
    return {
        "memplan": __version__,
        **source.fields(),
        "machine": report.machine,
        "kernel": report.kernel,
        "block_size": report.block_size,
        "page_size": report.page_size,
        "page_size_source": report.page_size_source,
        "page_flags_saved": report.flags_saved,
        "pfns": report.pfns,
        "blocks": [{"state": g.state, "zone": g.zone, "blocks": g.blocks, "bytes": g.bytes}
                   for g in report.block_groups],
        "page_classes": [{"class": c.label, "pages": c.pages, "kind": c.kind, "meaning": c.meaning}
                         for c in report.classes],
        "page_flags": [{"flags": f"0x{f.flags:016x}", "pages": f.pages, "symbolic": f.symbolic,
                        "long_symbolic": f.long_symbolic} for f in report.flags],
        "zones": [{"node": z.node, "zone": z.zone, "present": z.present, "managed": z.managed, "free": z.free,
                   "pcp": z.pcp, "cma": z.cma, "unflagged": z.unflagged} for z in report.zones],
        "devices": [{"id": d.id, "start": d.start, "size": d.size, "mode": d.mode, "unit_size": d.unit_size,
                     "unit_max": d.unit_max, "assumed": d.assumed, "plugged_bytes": d.plugged_bytes,
                     "blocks": list(d.blocks), "fake_offline_pages": d.fake_offline_pages,
                     "kept_back_pages": d.kept_back_pages, "skippable_pages": d.skippable_pages}
                    for d in report.devices],
        "semantics": report.semantics,
        "semantics_reason": report.semantics_reason,
        "blind_spots": list(report.blind_spots),
        "warnings": list(report.warnings),
        "saved_to": report.saved_to,
    }
