"""`simulate --sysroot` on real Linux 6.1 guests versus what the kernel actually did.

Each qemu fixture's outcomes.json records the offline attempts made right after the snapshot.
Every verdict memplan calls ``certain`` must match the kernel (result, errno, reason string;
for isolation failures also the page the kernel dumped). Verdicts that do not match must be
flagged — not ``certain``, with the blind spot that hides the cause.
"""

import json
import os

import pytest
from click.testing import CliRunner

from conftest import QEMU_FIXTURES, fixture_tree
from memplan.cli import main
from memplan.core.results import Reason

REASONS = {r.value for r in Reason}


def attempts(name):
    with open(os.path.join(fixture_tree(name), "outcomes.json")) as handle:
        return json.load(handle)["attempts"]


def expected(attempt):
    # outcomes.json's block-0 "kernel_reason" is a note: the kernel gives EINVAL without a reason
    reason = attempt["kernel_reason"] if attempt["kernel_reason"] in REASONS else None
    return attempt["result"], attempt["errno"], reason


def predicted(name):
    blocks = ",".join(str(a["block"]) for a in attempts(name))
    result = CliRunner().invoke(main, ["simulate", "--sysroot", fixture_tree(name), "--blocks", blocks, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def runs():
    return {name: predicted(name) for name in QEMU_FIXTURES}


#: measured: attempts, verdicts memplan calls certain, verdicts that match the kernel
MEASURED = {"qemu-6.1-pre": (24, 17, 23), "qemu-6.1-post1": (8, 0, 7), "qemu-6.1-post2": (4, 0, 3),
            "qemu-6.1-bbm-post1": (8, 1, 7)}
#: the attempts memplan gets wrong: block 36 of every guest (vmsplice'd pages, extra references)
MISSED = {(name, 36) for name in QEMU_FIXTURES}


@pytest.mark.parametrize("name", QEMU_FIXTURES)
def test_certain_verdicts_match_the_kernel(runs, name):
    doc = runs[name]
    assert doc["semantics"] == "refcount" and doc["semantics_reason"]
    certain = matched = 0
    for attempt, block in zip(attempts(name), doc["blocks"]):
        assert block["block"] == attempt["block"]
        got = (block["result"], block["errno"], block["reason"])
        matches = got == expected(attempt)
        if block["confidence"] == "certain":
            certain += 1
            assert matches, (block["block"], got, expected(attempt))
            assert block["blind_spots"] == []
            if block["step"] == "isolate" and attempt["dumped_pages"]:
                assert block["culprit"]["pfn"] == attempt["dumped_pages"][0]["pfn"]
        if not matches:
            assert block["confidence"] != "certain" and block["blind_spots"], block["block"]
        matched += matches
    assert (len(doc["blocks"]), certain, matched) == MEASURED[name]


def test_overall_agreement_and_what_could_not_be_seen(runs):
    total = matched = 0
    unseen = []
    for name in QEMU_FIXTURES:
        for attempt, block in zip(attempts(name), runs[name]["blocks"]):
            total += 1
            if (block["result"], block["errno"], block["reason"]) == expected(attempt):
                matched += 1
            else:
                unseen.append((name, block["block"], attempt["result"], block["result"], block["blind_spots"]))
    assert total == sum(len(attempts(n)) for n in QEMU_FIXTURES)
    # Every miss is a hang the snapshot could not see: pages with extra references (vmsplice)
    # look like any LRU page, and the verdict says so.
    for _, _, kernel, memplan, spots in unseen:
        assert kernel == "hangs" and memplan == "offlined"
        assert any("extra references" in s for s in spots)
    assert {(name, block) for name, block, *_ in unseen} == MISSED
    assert (total, matched) == (sum(m[0] for m in MEASURED.values()), sum(m[2] for m in MEASURED.values()))
