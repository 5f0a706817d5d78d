"""Every command's JSON names its input the same way (issue 15 section 6): ``source`` (the
PROFILE path or the --sysroot DIR as given, ``live`` for --live) and ``source_kind``
(``profile``, ``sysroot`` or ``live``); no document has a ``profile`` key. fleet's rows name
their INPUT as ``host`` and say what it holds in ``source_kind``; an error row has every key a
good row has."""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest
from click.testing import CliRunner

from conftest import bundled, fixture_tree
from memplan.cli import main
from memplan.cli.common import input_source, machine_source
from memplan.core.source import InputSource, SourceKind

SBM = bundled("sbm-guest.toml")
BBM = bundled("bbm-guest.toml")
#: a real virtio-mem SBM guest (device vmem0 is virtio0 there)
TREE = fixture_tree("qemu-6.1-post1")


def _run(args: List[str], ok=(0,)) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code in ok, (args, result.output[-1500:])
    return result.stdout


def _doc(args: List[str], ok=(0,)) -> Dict[str, Any]:
    return json.loads(_run(args, ok))


def _device(args: List[str]) -> str:
    doc = _doc(["simulate", *args, "--json"])
    return next(b["device"] for b in doc["blocks"] if b["device"])


def _commands(given: List[str]) -> Dict[str, Dict[str, Any]]:
    """Every command's ``--json`` (and simulate's ``--jsonl`` last line) on one input."""
    device = _device(given)
    lines = _run(["simulate", *given, "--jsonl"]).splitlines()
    return {
        "simulate": _doc(["simulate", *given, "--json"]),
        "simulate --jsonl": json.loads(lines[-1]),
        "diff-semantics": _doc(["diff-semantics", *given, "--json"], ok=(0, 1)),
        "plan": _doc(["plan", *given, "--size", "256M", "--json"]),
        "unplug": _doc(["unplug", *given, "--device", device, "--by", "256M", "--json"]),
        "unplug --sweep": _doc(["unplug", *given, "--device", device, "--sweep", "--json"]),
        "map": _doc(["map", *given, "--json"]),
        "explain": _doc(["explain", *given, "36", "--json"]),
    }


@pytest.mark.parametrize("given, source, kind", [
    ([SBM], SBM, "profile"),
    (["--sysroot", TREE], TREE, "sysroot"),
])
def test_every_command_names_its_input_source_and_kind(given, source, kind):
    docs = _commands(given)
    if kind == "sysroot":
        docs["snapshot"] = _doc(["snapshot", *given, "--json"])
    for command, doc in docs.items():
        assert (doc["source"], doc["source_kind"]) == (source, kind), command
        assert "profile" not in doc, command
        # the two keys come right after the version, in every document
        assert list(doc)[1:3] == ["source", "source_kind"], command


def test_a_profile_and_a_tree_give_documents_of_the_same_keys():
    profile, tree = _commands([SBM]), _commands(["--sysroot", TREE])
    for command in profile:
        assert list(profile[command]) == list(tree[command]), command


def test_live_is_named_live():
    assert input_source(machine_source(None, None, True)) == InputSource("live", SourceKind.LIVE)
    assert input_source(machine_source(None, "snap/h1", False)) == InputSource("snap/h1", SourceKind.SYSROOT)
    assert input_source(machine_source("h1.toml", None, False)) == InputSource("h1.toml", SourceKind.PROFILE)
    assert InputSource.of("/", live=True).fields() == {"source": "live", "source_kind": "live"}


def _shape(value: Any) -> Any:
    """The keys of a document, recursively (lists by their first element)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value and isinstance(value[0], (dict, list)) else []
    return None


@pytest.mark.parametrize("mode", [[], ["--plan-size", "512M"], ["--unplug-by", "1G"]])
def test_fleet_rows_name_the_input_kind_and_error_rows_have_every_key(mode, tmp_path):
    broken_tree = tmp_path / "broken-tree"
    (broken_tree / "sys" / "devices" / "system" / "memory").mkdir(parents=True)
    broken_profile = tmp_path / "broken.toml"
    broken_profile.write_text("[machine\n", encoding="utf-8")
    hosts = [SBM, TREE, str(broken_profile), str(broken_tree), str(tmp_path / "nonexistent")]
    doc = _doc(["fleet", *hosts, "--json", "--workers", "1", *mode], ok=(0, 2))
    assert "warnings" in doc and "profile" not in doc
    rows = {h["host"]: h for h in doc["hosts"]}
    assert [rows[h]["source_kind"] for h in hosts] == ["profile", "sysroot", "profile", "sysroot", None]
    assert [bool(rows[h]["error"]) for h in hosts] == [False, False, True, True, True]
    good = _shape(rows[SBM])
    for host in hosts[1:]:
        row = rows[host]
        assert set(row) == set(good), host
        assert all(row[k] is not None for k in ("asked_bytes", "achieved_bytes", "memory_bytes")), host
    lines = [json.loads(line) for line in _run(["fleet", *hosts, "--jsonl", "--workers", "1", *mode],
                                                ok=(0, 2)).splitlines()]
    assert sorted(line["host"] for line in lines) == sorted(hosts)
    assert all(set(line) == set(good) for line in lines)


def test_explain_json_has_warnings():
    doc = _doc(["explain", "--sysroot", TREE, "36", "--json"])
    assert isinstance(doc["warnings"], list)
