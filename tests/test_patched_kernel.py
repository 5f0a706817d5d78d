"""What a real kernel running the PG_offline_skippable v2 patch showed (spec §9.1), as tests.

The profile is the debugfs test hook's block 39: 1 GiB of boot memory, a 4 GiB virtio-mem
device in Sub Block Mode (2 MiB device blocks) at 4 GiB, blocks 32-38 plugged, block 39 half
plugged (sub-blocks 0-31: pfn 0x138000-0x13bfff, with some anonymous memory of the workload),
everything onlined to ZONE_MOVABLE, and a foreign reference (``get_page()``) on the first
fake-offline page, pfn 0x13c000 (refcount 2). ``control`` is the unpatched kernel (refcount
semantics), ``patched`` the v2 patch (skippable). Each §9.1 row is asserted with the kernel's
log lines in the order the kernel printed them.
"""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import build_sysroot, bundled, fixture_tree, machine_from
from memplan.cli import main
from memplan.core.model import PageKind
from memplan.core.results import HazardKind, LogLevel, log_lines
from memplan.diff.compute import diff_semantics, with_foreign_ref_timing
from memplan.engine.simulation import simulate
from memplan.kernel.semantics import get_semantics
from memplan.profile.reader import load_profile
from memplan.snapshot import btf, kpf
from memplan.snapshot.kpageflags import KPF, bit
from memplan.snapshot.reader import load_snapshot
from memplan.snapshot.sysroot import Tree

HOOK = """
[machine]
name = "hook-block-39"

[[ram]]
start = "0"
size = "16MiB"
zone = "DMA"

[[ram]]
start = "16MiB"
size = "1008MiB"
zone = "DMA32"

[[virtio_mem]]
id = "vmem0"
addr = "4GiB"
region_size = "4GiB"
block_size = "2MiB"
plugged = ["0-479"]           # blocks 32-38 (64 sub-blocks each) and sub-blocks 0-31 of block 39
online = "movable"
driver = "loaded"

[[pages]]                     # the workload in block 39's plugged half
pfn = "0x138000"
count = 4096
kind = "anon"
"""
REFERENCED = """
[[pages]]                     # the hook's get_page() on a fake-offline page
pfn = "0x13c000"
kind = "fake_offline"
refcount = 2
"""
PFN = 0x13C000
BLOCK = 39

NOTIFIER_WARN = [("warn", "WARN_ON(!page_ref_dec_and_test(page))", "virtio_mem_memory_notifier_cb", False),
                 ("dump_page", "fake-offline page referenced", "virtio_mem_memory_notifier_cb", False)]
ISOLATION_FAILED = [("pr_warn", "failed to isolate pfn 13c000", "do_migrate_range", True),
                    ("dump_page", "isolation failed", "do_migrate_range", True)]
REASON = [("pr_debug", "memory offlining [mem 0x138000000-0x13fffffff] failed due to unmovable page", "offline_pages",
           False)]
CONTROL_LOG = NOTIFIER_WARN + ISOLATION_FAILED + REASON
PATCHED_WARN = [("warn_once", "WARN_ON_ONCE(page_count(page) != 1)", "__offline_isolated_pages", False)]

FAILS = ("fails", "EBUSY", "unmovable page", "scan")
OFFLINED = ("offlined", None, None, None)


def hook(timing: str = "never", referenced: bool = True):
    machine = machine_from(HOOK + (REFERENCED if referenced else ""), spare=False)
    return with_foreign_ref_timing(machine, timing)


def judge(semantics: str, timing: str):
    return simulate(hook(timing), semantics, [BLOCK]).blocks[0]


def outcome(v):
    return (v.result.value, v.errno.value if v.errno else None, v.reason.value if v.reason else None,
            v.step.value if v.step else None)


def log(v):
    return [(e.level.value, e.text, e.function, e.ratelimited) for e in v.kernel_log]


ROWS = [
    # §9.1 row, semantics, foreign_ref_dropped, outcome, kernel log in order, hazard kinds
    ("row20-control", "refcount", "never", FAILS, CONTROL_LOG, ["warn"]),
    ("row20-patched", "skippable", "never", OFFLINED, PATCHED_WARN, ["warn"]),
    ("row21-control", "refcount", "during-offline", OFFLINED, NOTIFIER_WARN, ["warn", "freed_to_buddy"]),
    ("row21-patched", "skippable", "during-offline", OFFLINED, [], []),
    # row 22 is n/a under refcount: the attempt fails at SCAN with the reference held, as row 20
    ("row22-control", "refcount", "after-offline", FAILS, CONTROL_LOG, ["warn"]),
    ("row22-patched", "skippable", "after-offline", OFFLINED, PATCHED_WARN, ["warn", "stale_memmap_reference"]),
    ("reonline-control", "refcount", "after-online", FAILS, CONTROL_LOG, ["warn"]),
    ("reonline-patched", "skippable", "after-online", OFFLINED, PATCHED_WARN, ["warn", "reference_lost_on_online"]),
]


@pytest.mark.parametrize("row,semantics,timing,expected,kernel_log,hazards", ROWS, ids=[r[0] for r in ROWS])
def test_spec_9_1_sequences(row, semantics, timing, expected, kernel_log, hazards):
    v = judge(semantics, timing)
    assert outcome(v) == expected
    assert log(v) == kernel_log
    assert [h.kind.value for h in v.hazards] == hazards
    assert all(h.pfn == PFN for h in v.hazards)
    if v.result.value == "fails":
        # SCAN stops at the referenced page: refcount 1 once virtio-mem dropped its own
        assert (v.culprit.pfn, v.culprit.kind, v.culprit.refcount) == (PFN, PageKind.FAKE_OFFLINE, 1)


def test_control_log_lines_mark_the_rate_limited_ones():
    assert log_lines(judge("refcount", "never").kernel_log) == [
        'warn "WARN_ON(!page_ref_dec_and_test(page))"', 'dump_page "fake-offline page referenced"',
        'pr_warn "failed to isolate pfn %lx" (rate-limited)', 'dump_page "isolation failed" (rate-limited)']


def test_row_20_control_cancel_takes_the_count_back_to_2():
    # MEM_CANCEL_OFFLINE re-takes what MEM_GOING_OFFLINE dropped (page_ref_inc(), ML-NEW)
    sem = get_semantics("refcount")
    assert sem.virtio_mem_cancel_offline(sem.virtio_mem_going_offline(np.array([2])))[0] == 2
    assert "refcount_on_free_page" not in [h.kind.value for h in judge("refcount", "never").hazards]


def test_row_20_patched_counts_the_referenced_page_as_already_offline():
    v = judge("skippable", "never")
    assert v.pages.skipped_offline == 64 * 256  # every unplugged page, the referenced one included
    assert not any(e.level is LogLevel.DUMP_PAGE for e in v.kernel_log)


def test_row_21_control_frees_the_page_to_the_buddy():
    v = judge("refcount", "during-offline")
    assert (v.pages.skipped_offline, v.pages.free, v.pages.migrated) == (16383, 12289, 4096)
    freed = next(h for h in v.hazards if h.kind is HazardKind.FREED_TO_BUDDY)
    assert "managed pages end one lower" in freed.text  # 245760 -> 245759 on 7.2.13


def test_row_22_patched_is_not_freed():
    stale = judge("skippable", "after-offline").hazards[1]
    assert "not freed to the buddy" in stale.text


def test_reonline_hazard_names_the_kernel_functions():
    lost = judge("skippable", "after-online").hazards[1]
    assert lost.kind is HazardKind.REFERENCE_LOST_ON_ONLINE
    for words in ("memmap_init_range()", "init_page_count()", "put_page()", "unplugged page to the buddy"):
        assert words in lost.text


def test_without_a_foreign_reference_no_outcome_differs():
    for timing in ("never", "after-online"):
        diff = diff_semantics(hook(timing, referenced=False), blocks=list(range(32, 40)))
        assert diff.differences == () and diff.summary.left_offlined == diff.summary.right_offlined == 8


def test_fake_offline_kpageflags_of_both_kernels():
    assert kpf.kind_page_flags(PageKind.FAKE_OFFLINE, PFN, True) == 0x400800000  # patched
    assert kpf.kind_page_flags(PageKind.FAKE_OFFLINE, PFN, False) == 0x800000  # control


@pytest.mark.parametrize("name", ["sbm-guest.toml", "skippable-review.toml"])
def test_only_do_migrate_range_lines_are_rate_limited(name):
    # one DEFINE_RATELIMIT_STATE(migrate_rs) in do_migrate_range(); WARN_ON, dump_page at
    # isolation, WARN_ON_ONCE/BUG_ON at commit and the pr_debug reason are printed every time
    machine = with_foreign_ref_timing(load_profile(bundled(name)), "during-offline")
    seen = set()
    for semantics in ("refcount", "skippable"):
        for v in simulate(machine, semantics).blocks:
            for e in v.kernel_log:
                assert e.ratelimited == (e.function == "do_migrate_range"), (v.block, e)
                seen.add(e.ratelimited)
    assert seen == {True, False}


# --- the diff, through the command line ------------------------------------------------

@pytest.fixture
def hook_profile(write_profile):
    return write_profile("format = 1\n" + HOOK + REFERENCED, "hook.toml")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_diff_semantics_after_online_table(hook_profile):
    result = run("diff-semantics", hook_profile, "--foreign-ref-dropped", "after-online")
    assert result.exit_code == 1, result.output
    text = result.output
    assert "a foreign reference on a fake-offline page is dropped: after-online" in text
    assert ("reference_lost_on_online only under skippable: under refcount it cannot happen, offlining fails "
            '-EBUSY at scan ("unmovable page") first') in text
    assert ("reference_lost_on_online: none under refcount (offlining fails -EBUSY at scan (\"unmovable page\") "
            "there first), block 39 under skippable") in text
    assert 'pr_warn "failed to isolate pfn %lx" (rate-limited)' in text
    assert "hazard [skippable] reference_lost_on_online:" in text


def test_diff_semantics_after_online_json(hook_profile):
    result = run("diff-semantics", hook_profile, "--foreign-ref-dropped", "after-online", "--json")
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["foreign_ref_dropped"] == "after-online"
    (d,) = doc["differences"]
    assert d["block"] == BLOCK and (d["left"]["result"], d["right"]["result"]) == ("fails", "offlined")
    assert [h["kind"] for h in d["right"]["hazards"]] == ["warn", "reference_lost_on_online"]
    assert [(e["function"], e["ratelimited"]) for e in d["left"]["kernel_log"]] == [
        (f, r) for _, _, f, r in CONTROL_LOG]
    (owner,) = doc["owners"]
    lost = next(h for h in owner["hazards"] if h["kind"] == "reference_lost_on_online")
    assert lost["left"] == {"semantics": "refcount", "blocks": [], "ranges": ""}
    assert lost["right"] == {"semantics": "skippable", "blocks": [BLOCK], "ranges": "39"}
    assert "reference_lost_on_online: none under refcount" in owner["note"]


def test_zi_yan_section_gives_block_ranges_per_semantics(write_profile):
    # two referenced blocks, 38 and 39: one range
    text = "format = 1\n" + HOOK + REFERENCED + REFERENCED.replace("0x13c000", "0x137800")
    path = write_profile(text.replace('"0-479"', '"0-443", "448-479"'), "two.toml")
    doc = json.loads(run("diff-semantics", path, "--foreign-ref-dropped", "after-online", "--json").stdout)
    lost = next(h for h in doc["owners"][0]["hazards"] if h["kind"] == "reference_lost_on_online")
    assert (lost["left"]["ranges"], lost["right"]["ranges"], lost["right"]["blocks"]) == ("", "38-39", [38, 39])


def test_simulate_and_explain_take_after_online(hook_profile):
    doc = json.loads(run("simulate", hook_profile, "--semantics", "skippable", "--blocks", BLOCK,
                         "--foreign-ref-dropped", "after-online", "--json").stdout)
    assert [h["kind"] for h in doc["blocks"][0]["hazards"]] == ["warn", "reference_lost_on_online"]
    result = run("explain", hook_profile, BLOCK, "--semantics", "skippable", "--foreign-ref-dropped", "after-online")
    assert result.exit_code == 0, result.output
    assert "hazard reference_lost_on_online:" in result.output
    assert "Advice: The block offlines, but do not online it again" in result.output
    story = json.loads(run("explain", hook_profile, BLOCK, "--json").stdout)
    assert [e["ratelimited"] for e in story["block"]["kernel_log"]] == [r for *_, r in CONTROL_LOG]
    control = run("explain", hook_profile, BLOCK)
    assert "failed to isolate pfn 13c000 [pfn 0x13c000, rate-limited]" in control.output
    assert "(rate-limited: do_migrate_range() prints these lines" in control.output
    assert "callbacks suppressed" in control.output


def test_map_takes_after_online(hook_profile):
    assert run("map", hook_profile, "--diff", "--foreign-ref-dropped", "after-online").exit_code == 0


def test_after_online_loads_from_a_profile(write_profile):
    path = write_profile("format = 1\n" + HOOK + REFERENCED + '\n[environment]\nforeign_ref_dropped = "after-online"\n')
    doc = json.loads(run("diff-semantics", path, "--json").stdout)
    assert doc["foreign_ref_dropped"] == "after-online"


def test_bad_timing_names_every_choice(hook_profile):
    result = run("simulate", hook_profile, "--foreign-ref-dropped", "later")
    assert result.exit_code == 2 and "after-online" in result.output


# --- snapshots of a patched kernel ----------------------------------------------------

def test_real_patched_snapshot_names_the_skippable_blind_spot():
    machine = load_snapshot(fixture_tree("qemu-7.2-skippable-post1"))
    assert machine.default_semantics == "skippable"
    assert machine.semantics_reason.startswith("16384 of 16384 fake-offline pages carry KPF_OWNER_2")
    v = simulate(machine, blocks=[BLOCK]).blocks[0]
    assert (v.result.value, v.confidence.value) == ("offlined", "likely")  # the kernel offlined it
    assert any(s.startswith("16384 fake-offline pages: an extra reference on one") and "onlined again" in s
               for s in v.blind_spots)


def _tiny_tree(tmp_path, name="t"):
    """Blocks 1-3 online in ZONE_NORMAL, free pages only, no virtio-mem device."""
    ppb = 32768
    flags = np.full(4 * ppb, bit(KPF.BUDDY), dtype=np.uint64)
    return build_sysroot(str(tmp_path / name), {b: ("online", "Normal") for b in (1, 2, 3)}, flags,
                         "00000000-00000fff : Reserved\n08000000-1fffffff : System RAM\n", release="7.2.13")


def _put_btf(root: str, data: bytes) -> None:
    path = os.path.join(root, btf.BTF_PATH)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def test_semantics_that_the_page_flags_cannot_tell_is_said(tmp_path):
    root = _tiny_tree(tmp_path)
    machine = load_snapshot(root)
    assert machine.default_semantics == "refcount"
    reason = machine.semantics_reason
    assert reason.startswith("the semantics could not be told from the page flags (no virtio-mem device to read "
                             "KPF_OWNER_2 from); assuming refcount")
    assert "grep -a PG_offline_skippable /sys/kernel/btf/vmlinux" in reason
    doc = json.loads(run("simulate", "--sysroot", root, "--json").stdout)
    assert doc["semantics_reason"] == reason
    assert "could not be told" in run("simulate", "--sysroot", root).output


@pytest.mark.parametrize("data,semantics,says", [
    (b"\x9f\xeb\x01\x00" + b"\x00" * 3000 + b"PG_offline_skippable\x00PG_owner_2\x00", "skippable",
     "names PG_offline_skippable"),
    (b"\x9f\xeb\x01\x00" + b"\x00" * 3000 + b"PG_owner_2\x00PG_offline\x00", "refcount",
     "does not name PG_offline_skippable"),
])
def test_btf_in_the_tree_decides(tmp_path, data, semantics, says):
    root = _tiny_tree(tmp_path)
    _put_btf(root, data)
    machine = load_snapshot(root)
    assert machine.default_semantics == semantics
    assert says in machine.semantics_reason and "could not be told" not in machine.semantics_reason


def test_btf_search_finds_the_name_across_chunks_and_stops_at_its_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(btf, "_CHUNK", 7)
    root = _tiny_tree(tmp_path)
    _put_btf(root, b"x" * 12 + btf.MARKER + b"y" * 5)  # the name straddles several 7-byte chunks
    assert btf.btf_names_skippable(Tree(root)) == (True, f"{root}/sys/kernel/btf/vmlinux names PG_offline_skippable")
    monkeypatch.setattr(btf, "MAX_BTF_BYTES", 14)
    found, note = btf.btf_names_skippable(Tree(root))
    assert found is None and "not searched" in note
    machine = load_snapshot(root)
    assert machine.default_semantics == "refcount" and "could not be told" in machine.semantics_reason


def test_btf_that_is_not_a_regular_file_does_not_hang(tmp_path):
    root = _tiny_tree(tmp_path)
    path = os.path.join(root, btf.BTF_PATH)
    os.makedirs(os.path.dirname(path))
    os.mkfifo(path)
    assert stat.S_ISFIFO(os.stat(path).st_mode)
    machine = load_snapshot(root)
    assert machine.default_semantics == "refcount"
    assert "could not be told" in machine.semantics_reason and "FIFO" in machine.semantics_reason
