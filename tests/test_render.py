import csv
import io
import json

from rich.console import Console

from conftest import bundled
from memplan import __version__
from memplan.core.source import InputSource
from memplan.engine.simulation import simulate
from memplan.profile.reader import load_profile
from memplan.render import csv as render_csv
from memplan.render import json as render_json
from memplan.render import table as render_table
from memplan.render.block_facts import MachineFacts

BLOCK_KEYS = {"block", "start", "end", "zone", "node", "result", "errno", "reason", "step", "cause", "culprit",
              "pages", "kernel_log", "hazards", "device", "device_state", "confidence", "blind_spots"}
PAGE_KEYS = {"total", "free", "migrated", "skipped_offline", "dissolved", "hwpoison", "vmemmap", "holes", "blocking"}


def test_json_document_shape():
    result = simulate(load_profile(bundled("sbm-guest.toml")))
    stream = io.StringIO()
    render_json.write(render_json.simulation_dict(result, InputSource.of(bundled("sbm-guest.toml"))), stream)
    doc = json.loads(stream.getvalue())
    assert doc["memplan"] == __version__ and doc["semantics"] == "refcount"
    assert (doc["source"], doc["source_kind"]) == (bundled("sbm-guest.toml"), "profile") and "profile" not in doc
    assert set(doc["summary"]) == {"blocks", "offlined", "fails", "hangs", "offlinable_bytes",
                                   "offlinable_bytes_by_confidence", "unknown_blocks"}
    # a profile is exact: every verdict certain, all its offlinable memory too
    assert doc["summary"]["offlinable_bytes_by_confidence"] == {
        "certain": doc["summary"]["offlinable_bytes"], "likely": 0, "unknown": 0}
    assert {(b["confidence"], tuple(b["blind_spots"])) for b in doc["blocks"]} == {("certain", ())}
    for block in doc["blocks"]:
        assert set(block) == BLOCK_KEYS
        assert set(block["pages"]) == PAGE_KEYS
        assert sum(v for k, v in block["pages"].items() if k != "total") == block["pages"]["total"]
        assert block["end"] - block["start"] + 1 == 128 << 20
    hang = next(b for b in doc["blocks"] if b["result"] == "hangs")
    assert hang["culprit"] == {"pfn": 0x123000, "kind": "anon", "refcount": 3}
    assert hang["cause"] == "extra_references"
    assert all((b["cause"] is None) == (b["result"] == "offlined") for b in doc["blocks"])
    # the source list runs from the highest pfn down (isolate_folio_to_list(): list_add())
    assert hang["kernel_log"][0] == {"level": "pr_warn", "text": "migrating pfn 123002 failed ret:3",
                                     "pfn": 0x123002, "function": "do_migrate_range", "count": 1, "repeats": True,
                                     "ratelimited": True}


def test_table_lists_every_block_and_a_summary():
    machine = load_profile(bundled("boot-vm.toml"))
    result = simulate(machine, blocks=[0, 15, 23, 64])
    console = Console(width=200, record=True, color_system=None)
    render_table.print_simulation(console, result, MachineFacts(machine))
    text = console.export_text()
    assert "0x0000000000000000-0x0000000007ffffff" in text
    assert "memory holes" in text and "failure to isolate range" in text
    assert "Would offline:" in text


# ---- large results: streamed JSON ------------------------------------

from dataclasses import replace  # noqa: E402

import pytest  # noqa: E402

PROFILES = ["sbm-guest.toml", "bbm-guest.toml", "boot-vm.toml", "hugetlb-cma-host.toml"]


@pytest.mark.parametrize("name", PROFILES)
def test_streamed_json_is_byte_for_byte_the_document(name):
    result = simulate(load_profile(bundled(name)))
    for r in (result, replace(result, blocks=()), replace(result, semantics_reason="from the snapshot")):
        for source in (InputSource.of(name), InputSource.of("/snap", sysroot=True), InputSource.of("/", live=True)):
            whole, streamed = io.StringIO(), io.StringIO()
            render_json.write(render_json.simulation_dict(r, source), whole)
            render_json.write_simulation(r, streamed, source)
            assert streamed.getvalue() == whole.getvalue()


def test_csv_cause_column_is_the_json_cause():
    result = simulate(load_profile(bundled("sbm-guest.toml")))
    stream = io.StringIO()
    render_csv.write_simulation(result, stream)
    rows = list(csv.reader(io.StringIO(stream.getvalue())))
    assert rows[0][-1] == "cause"  # columns are only ever added at the end
    causes = [row[-1] for row in rows[1:]]
    assert causes == [b.cause.value if b.cause else "" for b in result.blocks]
    assert "extra_references" in causes and "" in causes
