"""``memplan.render.diff``: the diff-semantics JSON document and the grouped rich report."""

import io
import json

from rich.console import Console

from conftest import bundled
from memplan import __version__
from memplan.core.source import InputSource
from memplan.diff.compute import diff_semantics, with_foreign_ref_timing
from memplan.profile.reader import load_profile
from memplan.render import diff as render_diff
from memplan.render import json as render_json
from test_render import BLOCK_KEYS

REVIEW = bundled("skippable-review.toml")
DIFF_KEYS = {"block", "zone", "left", "right", "changed", "sites", "findings", "explanation", "hazards",
             "confidence"}


def document(diff):
    stream = io.StringIO()
    render_json.write(render_diff.diff_dict(diff, InputSource.of(REVIEW)), stream)
    return json.loads(stream.getvalue())


def test_json_document_shape():
    machine = with_foreign_ref_timing(load_profile(REVIEW), "during-offline")
    doc = document(diff_semantics(machine))
    assert set(doc) == {"memplan", "source", "source_kind", "machine", "left", "right", "foreign_ref_dropped",
                        "differences", "owners", "summary", "warnings"}
    assert (doc["memplan"], doc["left"], doc["right"], doc["foreign_ref_dropped"]) == (
        __version__, "refcount", "skippable", "during-offline")
    assert (doc["source"], doc["source_kind"]) == (REVIEW, "profile") and doc["machine"] == "skippable-review"
    for d in doc["differences"]:
        assert set(d) == DIFF_KEYS
        assert set(d["left"]) == BLOCK_KEYS and set(d["right"]) == BLOCK_KEYS
        assert d["left"]["block"] == d["right"]["block"] == d["block"]
        assert d["sites"] == [f["site"] for f in d["findings"]] and d["sites"]
        assert all(set(f) == {"site", "left", "right", "pages", "kinds", "pfn"} for f in d["findings"])
        assert all(set(h) == {"side", "semantics", "kind", "text", "pfn"} for h in d["hazards"])
        assert isinstance(d["explanation"], str) and d["explanation"]
    by_block = {d["block"]: d for d in doc["differences"]}
    freed = [h for h in by_block[42]["hazards"] if h["kind"] == "freed_to_buddy"]
    assert freed == [{"side": "left", "semantics": "refcount", "kind": "freed_to_buddy", "pfn": 0x155123,
                      "text": freed[0]["text"]}]
    assert by_block[42]["sites"] == ["virtio-mem MEM_GOING_OFFLINE"]
    assert by_block[35]["right"]["culprit"] == {"pfn": 0x118800, "kind": "offline_refcount_driver", "refcount": 1}
    summary = doc["summary"]
    assert set(summary) == {"blocks", "differ", "left", "right"}
    assert summary["differ"] == len(doc["differences"])
    assert set(summary["left"]) == {"semantics", "offlined", "offlinable_bytes", "offlinable_bytes_by_confidence"}
    for side in ("left", "right"):  # a profile is exact: all of its offlinable memory is certain
        assert summary[side]["offlinable_bytes_by_confidence"] == {
            "certain": summary[side]["offlinable_bytes"], "likely": 0, "unknown": 0}
    assert {d["confidence"] for d in doc["differences"]} == {"certain"}
    owners = {o["kind"]: o for o in doc["owners"]}
    driver = owners["offline_refcount_driver"]
    assert set(driver) == {"kind", "owner", "pages", "changes_in", "note", "hazards", "zones"}
    assert driver["changes_in"] == ["Normal", "Movable"] and driver["pages"] == 32
    zone = driver["zones"][0]
    assert set(zone) == {"zone", "blocks", "changes", "changed_blocks", "step_changed_blocks", "left", "right"}
    assert zone["left"] == {"answer": "yes", "blocks": 1, "offlinable": 1, "blocked_by_kind": 0, "failures": []}
    assert zone["right"]["failures"] == [{"result": "fails", "errno": "EBUSY", "reason": "failure to isolate range",
                                          "step": "isolate"}]


def test_no_difference_document_is_empty_but_complete():
    doc = document(diff_semantics(load_profile(bundled("sbm-guest.toml"))))
    assert doc["differences"] == [] and doc["summary"]["differ"] == 0
    assert doc["summary"]["left"]["offlinable_bytes"] == doc["summary"]["right"]["offlinable_bytes"] > 0


def test_report_groups_differences_by_site_and_change():
    diff = diff_semantics(load_profile(REVIEW))
    keys = [key for key, _ in render_diff.groups(diff)]
    assert len(keys) == len(set(keys))
    assert sum(len(items) for _, items in render_diff.groups(diff)) == len(diff.differences)
    console = Console(width=200, record=True, color_system=None)
    render_diff.print_diff(console, diff)
    text = console.export_text()
    assert "isolation: refcount fails at scan -> skippable fails at isolate (1 block)" in text
    assert "scan_movable_pages: refcount offlined -> skippable fails at scan (1 block)" in text
    assert ('refcount log: pr_warn "failed to isolate pfn %lx" x10 (rate-limited); '
            'dump_page "isolation failed" x10 (rate-limited)') in text
    assert "Zi Yan's question" in text and "offlinability changes in Normal, Movable" in text
    assert "Blocks that differ:" in text and "Offlinable (skippable):" in text
