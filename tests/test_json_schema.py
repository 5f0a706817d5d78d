"""One JSON shape per command: every command's --json, on every bundled profile and on real
snapshot trees, validates against its schema under docs/schema/ (JSON Schema draft 2020-12).

The schemas reference each other (``common.json#/$defs/verdict``) by their ``$id``; the test
registers every file in a ``referencing`` registry, so nothing is ever fetched.
"""

from __future__ import annotations

import glob
import json
import os

import jsonschema
import pytest
import referencing
from click.testing import CliRunner

from conftest import ROOT, bundled, fixture_tree
from memplan.cli import main

SCHEMAS = os.path.join(ROOT, "docs", "schema")
BASE = "https://memplan.example/schema/"
COMMANDS = ("simulate", "diff-semantics", "snapshot", "plan", "unplug", "map", "explain", "fleet", "profiles")
PROFILES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "profiles", "*.toml")))
#: real trees: a virtio-mem SBM guest (likely verdicts) and a 24 GiB host
TREES = ("qemu-6.1-post1", "host-6.18-24g")


def _load(name: str) -> dict:
    with open(os.path.join(SCHEMAS, name), encoding="utf-8") as handle:
        return json.load(handle)


def _registry():
    resources = []
    for path in sorted(glob.glob(os.path.join(SCHEMAS, "*.json"))):
        schema = _load(os.path.basename(path))
        resources.append((schema["$id"], referencing.Resource.from_contents(schema)))
    return referencing.Registry().with_resources(resources)


REGISTRY = _registry()


def validate(command: str, doc, pointer: str = "") -> None:
    validator = jsonschema.Draft202012Validator({"$ref": f"{BASE}{command}.json{pointer}"}, registry=REGISTRY)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, [(list(e.absolute_path), e.message[:200]) for e in errors[:5]]


def run_json(*args: str, ok=(0,)):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code in ok, (args, result.output[-2000:])
    return json.loads(result.stdout)


def test_every_command_has_a_valid_schema_file():
    names = {os.path.basename(p)[:-5] for p in glob.glob(os.path.join(SCHEMAS, "*.json"))}
    assert names == set(COMMANDS) | {"common"}
    for name in names:
        schema = _load(name + ".json")
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == f"{BASE}{name}.json" and schema.get("title")
        # every reference stays inside the files (nothing to fetch)
        text = json.dumps(schema)
        assert all(ref.startswith(("#", "common.json#")) for ref in _refs(schema)), text[:200]


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_schema_enums_are_the_code_enums():
    """The enums a schema lists are memplan's own (a new cause or step must reach the schema)."""
    from memplan.core.model import Errno, Zone
    from memplan.core.results import Cause, Confidence, HazardKind, LogLevel, Outcome, Reason, Step
    from memplan.map.types import CellKind, Change
    defs = _load("common.json")["$defs"]
    verdict = defs["verdict"]["properties"]

    def values(node):
        return set((node.get("enum") or next(a["enum"] for a in node["anyOf"] if "enum" in a)))

    assert values(verdict["result"]) == {o.value for o in Outcome}
    assert values(verdict["reason"]) == {r.value for r in Reason}
    assert values(verdict["step"]) == {s.value for s in Step}
    assert values(verdict["cause"]) == {c.value for c in Cause}
    assert values(verdict["errno"]) == {e.value for e in Errno}
    assert values(defs["zone"]) == {z.value for z in Zone} | {"none"}
    assert values(defs["confidence"]) == set(defs["by_confidence"]["required"]) == {c.value for c in Confidence}
    assert values(defs["hazard"]["properties"]["kind"]) == {h.value for h in HazardKind}
    assert values(defs["log_entry"]["properties"]["level"]) == {level.value for level in LogLevel}
    cell = _load("map.json")["properties"]["cells"]["items"]["properties"]
    assert values(cell["kind"]) == {k.value for k in CellKind} and values(cell["change"]) == {c.value for c in Change}


def test_the_validator_rejects_a_changed_shape():
    doc = run_json("simulate", bundled("sbm-guest.toml"), "--blocks", "36", "--json")
    validate("simulate", doc)
    for broken in ({**doc, "extra": 1}, {k: v for k, v in doc.items() if k != "warnings"},
                   {**doc, "blocks": [{**doc["blocks"][0], "confidence": None}]},
                   {**doc, "summary": {**doc["summary"], "offlinable_bytes_by_confidence": {"certain": 0}}},
                   {**doc, "profile": doc["source"]}, {**doc, "source_kind": "toml"},
                   {k: v for k, v in doc.items() if k != "source_kind"}):
        with pytest.raises(AssertionError):
            validate("simulate", broken)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_command_on_every_bundled_profile(profile):
    path = bundled(profile)
    simulated = run_json("simulate", path, "--json")
    validate("simulate", simulated)
    validate("simulate", run_json("simulate", path, "-J", "--output-all"))
    validate("diff-semantics", run_json("diff-semantics", path, "--json", ok=(0, 1)))
    validate("map", run_json("map", path, "--json"))
    validate("map", run_json("map", path, "--diff", "--json"))
    block = next(b["block"] for b in simulated["blocks"] if b["result"] != "offlined") \
        if simulated["summary"]["offlined"] < simulated["summary"]["blocks"] else simulated["blocks"][0]["block"]
    validate("explain", run_json("explain", path, str(block), "--json"))
    validate("plan", run_json("plan", path, "--size", "256M", "--json"))
    device = next((b["device"] for b in simulated["blocks"] if b["device"]), None)
    if device is not None:
        validate("unplug", run_json("unplug", path, "--device", device, "--by", "1G", "--json"))
    fleet = run_json("fleet", path, "--json", "--workers", "1")
    validate("fleet", fleet)


def test_unplug_sweep_and_fleet_modes_and_lines():
    validate("unplug", run_json("unplug", bundled("bbm-guest.toml"), "--sweep", "--json"))
    validate("profiles", run_json("profiles", "--json"))
    hosts = [bundled(p) for p in PROFILES] + [fixture_tree("qemu-6.1-post1"), "/nonexistent/host"]
    for mode in ([], ["--plan-size", "512M"], ["--unplug-by", "1G"]):
        result = CliRunner().invoke(main, ["fleet", *hosts, "--json", "--workers", "1", *mode])
        assert result.exit_code == 0, result.output[-2000:]
        doc = json.loads(result.stdout)
        validate("fleet", doc)
        assert any(h["error"] for h in doc["hosts"])  # an error row has the same shape
        result = CliRunner().invoke(main, ["fleet", *hosts, "--jsonl", "--workers", "1", *mode])
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(lines) == len(hosts)
        for line in lines:
            validate("fleet", line, "#/$defs/host")


def _explain_tree(tree: str, block: int):
    """``explain --sysroot DIR BLOCK``; through the API while the CLI takes BLOCK as the profile
    (issue 13 section 6)."""
    result = CliRunner().invoke(main, ["explain", "--sysroot", tree, str(block), "--json"])
    if result.exit_code == 2 and "Missing argument 'BLOCK'" in result.output:
        from memplan.core.source import InputSource
        from memplan.explain.compute import explain_block
        from memplan.render.explain import story_dict
        from memplan.snapshot.reader import load_snapshot
        machine = load_snapshot(tree)
        return json.loads(json.dumps(story_dict(explain_block(machine, block), InputSource.of(tree, sysroot=True),
                                                machine.geometry, machine.warnings)))
    assert result.exit_code == 0, result.output[-2000:]
    return json.loads(result.stdout)


@pytest.mark.parametrize("name", TREES)
def test_every_command_on_a_snapshot_tree(name):
    tree = fixture_tree(name)
    simulated = run_json("simulate", "--sysroot", tree, "--json")
    validate("simulate", simulated)
    profile = run_json("simulate", bundled("sbm-guest.toml"), "--blocks", "36", "--json")
    # the same keys whatever the input
    assert set(simulated) == set(profile) and set(simulated["summary"]) == set(profile["summary"])
    validate("simulate", run_json("simulate", "--sysroot", tree, "-J", "-o", "RANGE,SIZE,STATE,REMOVABLE,BLOCK"))
    validate("snapshot", run_json("snapshot", "--sysroot", tree, "--json"))
    validate("snapshot", run_json("snapshot", "--sysroot", tree, "-J", "-o", "RANGE,SIZE,STATE"))
    validate("diff-semantics", run_json("diff-semantics", "--sysroot", tree, "--json", ok=(0, 1)))
    validate("map", run_json("map", "--sysroot", tree, "--json"))
    validate("explain", _explain_tree(tree, simulated["blocks"][-1]["block"]))
    validate("plan", run_json("plan", "--sysroot", tree, "--size", "256M", "--json"))
    device = next((b["device"] for b in simulated["blocks"] if b["device"]), None)
    if device is not None:
        validate("unplug", run_json("unplug", "--sysroot", tree, "--device", device, "--by", "256M", "--json"))
    validate("fleet", run_json("fleet", tree, "--json", "--workers", "1"))
