"""Instant start (issue 15 §2): ``memplan --help``, ``--version`` and completing a command name
import neither numpy nor rich nor any command module; ``memplan CMD --help`` and completing an
option inside a command import neither numpy nor rich; a command imports its own module and
the ones it uses, never the others. Checked in a fresh interpreter with ``python -X importtime``."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from typing import Dict, List, Optional, Set

import click
import pytest
from click.testing import CliRunner

from conftest import ROOT, bundled
from memplan.cli import main
from memplan.cli.app import COMMANDS

COMMAND_MODULES = {module for module, _ in COMMANDS.values()}
HEAVY = ("numpy", "rich")


def imported(args: List[str], env: Optional[Dict[str, str]] = None, status: int = 0) -> Set[str]:
    """The modules ``python -X importtime -m memplan ARGS`` imports (it must exit ``status``)."""
    run_env = dict(os.environ, NO_COLOR="1", PYTHONPATH=ROOT)
    run_env.update(env or {})
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "memplan", *args], capture_output=True,
                          text=True, cwd=ROOT, env=run_env, timeout=120)
    assert done.returncode == status, done.stderr[-2000:]
    names = {line.split("|")[2].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "memplan.cli.app" in names  # the listing is real
    return names


def heavy(names: Set[str]) -> List[str]:
    return sorted(n for n in names if n.split(".")[0] in HEAVY)


@pytest.mark.parametrize("args", [["--version"], ["-V"], ["--help"], ["-h"]])
def test_version_and_help_import_nothing_heavy(args):
    names = imported(args)
    assert heavy(names) == []
    assert sorted(names & COMMAND_MODULES) == []


def test_completing_a_command_name_imports_nothing_heavy():
    env = {"_MEMPLAN_COMPLETE": "bash_complete", "COMP_WORDS": "memplan si", "COMP_CWORD": "1"}
    done = subprocess.run([sys.executable, "-m", "memplan"], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT, **env), timeout=60)
    assert done.stdout.split() == ["plain,simulate"]
    names = imported([], env)
    assert heavy(names) == [] and sorted(names & COMMAND_MODULES) == []


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_commands_help_imports_nothing_heavy(name):
    """``memplan CMD --help`` loads the command's module, which imports neither numpy nor rich
    (its options take their words from ``memplan.cli.names``), and shows the full help."""
    names = imported([name, "--help"])
    assert COMMANDS[name][0] in names
    assert heavy(names) == []


@pytest.mark.parametrize("words, cword, expected", [
    ("memplan simulate profiles/sbm-guest.toml --sem", 3, ["plain,--semantics"]),
    ("memplan plan profiles/sbm-guest.toml --size 1G --trust ", 6, ["plain,likely", "plain,unknown"]),
    ("memplan snapshot --jobs 2 --sum", 4, ["plain,--summary"]),
    ("memplan diff-semantics profiles/sbm-guest.toml --left ", 4, ["plain,refcount", "plain,skippable"]),
    ("memplan map --foreign-ref-dropped after-o", 3, ["plain,after-offline", "plain,after-online"]),
    ("memplan fleet profiles/ --host-timeout 5 --tr", 5, ["plain,--trust"]),
])
def test_completing_inside_a_command_imports_nothing_heavy(words, cword, expected):
    """Option names and choices complete with the command's module alone: the option callbacks
    (``--trust``, ``--jobs``) run during completion but import nothing."""
    env = {"_MEMPLAN_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    done = subprocess.run([sys.executable, "-m", "memplan"], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT, **env), timeout=60)
    assert done.returncode == 0 and done.stdout.split() == expected, done.stderr[-2000:]
    names = imported([], env)
    assert COMMANDS[words.split()[1]][0] in names
    assert heavy(names) == []


@pytest.mark.parametrize("args", [
    ["simulate", "--json", "profiles/sbm-guest.toml"],
    ["simulate", "--jsonl", "profiles/sbm-guest.toml", "--blocks", "36-37"],
    ["simulate", "--csv", "profiles/sbm-guest.toml", "--blocks", "36-37"],
    ["simulate", "--json", "--sysroot", "tests/fixtures/qemu-6.1-post1"],
    ["plan", "--json", "profiles/sbm-guest.toml", "--size", "512M"],
    ["unplug", "--json", "profiles/sbm-guest.toml", "--by", "512M"],
    ["unplug", "--json", "profiles/sbm-guest.toml", "--sweep"],
    ["explain", "--json", "profiles/sbm-guest.toml", "43"],
    ["diff-semantics", "--json", "profiles/skippable-review.toml", "--blocks", "34-35"],
    ["diff-semantics", "--csv", "profiles/skippable-review.toml", "--blocks", "34-35"],
    ["snapshot", "--json", "--sysroot", "tests/fixtures/qemu-6.1-post1"],
    ["map", "--json", "profiles/sbm-guest.toml"],
    ["fleet", "--json", "profiles/sbm-guest.toml", "--workers", "1"],
    ["fleet", "--jsonl", "profiles/sbm-guest.toml", "--workers", "1"],
    ["profiles", "--json"],
], ids=lambda args: " ".join(args[:2]))
def test_a_documents_path_imports_no_rich(args):
    """``--json``, ``--jsonl`` and ``--csv`` never draw a table: rich (and the table renderers)
    stay unimported, whatever the command; the table of the same command does import it."""
    names = imported(args, status=1 if args[0] == "diff-semantics" else 0)  # 1: differences found
    assert COMMANDS[args[0]][0] in names
    assert sorted(n for n in names if n.split(".")[0] == "rich") == []
    assert "memplan.render.grid" not in names


@pytest.mark.parametrize("args", [["simulate", "profiles/sbm-guest.toml", "--blocks", "36"], ["profiles"]])
def test_a_table_imports_rich(args):
    """The check above can fail: a table is drawn with rich."""
    names = imported(args)
    assert "rich.console" in names and "memplan.render.grid" in names


def test_the_option_words_match_their_definitions():
    """``memplan.cli.names`` repeats what the options show; each value equals its source."""
    from memplan.cli import names
    from memplan.cli.columns import columns_help
    from memplan.core.model import ForeignRefTiming
    from memplan.core.results import Confidence
    from memplan.diff.compute import DEFAULT_LEFT, DEFAULT_RIGHT
    from memplan.fleet.executors import DEFAULT_HOST_TIMEOUT_S
    from memplan.kernel.semantics import SEMANTICS
    from memplan.plans.plan import CHMEM_ZONES
    from memplan.render import snapshot as render_snapshot
    from memplan.render.block_columns import difference_columns, lsmem_columns, verdict_columns
    from memplan.render.table_options import SummaryWhen
    from memplan.snapshot.ingest import MAX_DEFAULT_JOBS

    assert names.SEMANTICS_NAMES == tuple(SEMANTICS)
    assert (names.DEFAULT_LEFT, names.DEFAULT_RIGHT) == (DEFAULT_LEFT, DEFAULT_RIGHT)
    assert names.FOREIGN_REF_TIMINGS == tuple(t.value for t in ForeignRefTiming)
    assert names.CONFIDENCE_LEVELS == tuple(c.value for c in Confidence)
    assert names.SUMMARY_WHEN == tuple(w.value for w in SummaryWhen)
    assert names.MAX_DEFAULT_JOBS == MAX_DEFAULT_JOBS
    assert names.CHMEM_ZONES == CHMEM_ZONES
    assert names.DEFAULT_HOST_TIMEOUT_S == DEFAULT_HOST_TIMEOUT_S
    assert names.SIMULATE_COLUMNS == columns_help(verdict_columns(has_memconfig=True))
    assert names.DIFF_COLUMNS == columns_help(difference_columns(DEFAULT_LEFT, DEFAULT_RIGHT))
    assert names.SNAPSHOT_COLUMNS == columns_help(lsmem_columns(True, render_snapshot.SNAPSHOT_DEFAULT))


def test_a_listings_help_lists_its_columns():
    """The epilog from ``memplan.cli.names`` is lsmem's column list of the command's real columns."""
    from memplan.render.block_columns import verdict_columns

    result = CliRunner().invoke(main, ["simulate", "--help"], prog_name="memplan", env={"COLUMNS": "200"})
    assert result.exit_code == 0
    listed = result.output.split("Available output columns (default: ")[1]
    head, _, rows = listed.partition("\n")
    assert head.startswith("BLOCK,RANGE,SIZE,ZONE,RESULT,") and head.endswith("(and STATE,CONFIDENCE when needed)):")
    columns = verdict_columns(has_memconfig=True).columns
    assert [line.split(None, 1) for line in rows.strip().splitlines()] == [[c.name, c.help] for c in columns]


def _command_imports(module: str, seen: Optional[Set[str]] = None) -> Set[str]:
    """The command modules ``module`` imports at its top level, transitively (read from the source)."""
    seen = set() if seen is None else seen
    path = os.path.join(ROOT, *module.split(".")) + ".py"
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for target in targets:
                if target in COMMAND_MODULES and target not in seen:
                    seen.add(target)
                    _command_imports(target, seen)
    return seen


@pytest.mark.parametrize("name", ["profiles", "explain"])
def test_a_command_imports_only_the_command_modules_it_uses(name):
    module = COMMANDS[name][0]
    names = imported([name, "--help"])
    assert names & COMMAND_MODULES == {module} | _command_imports(module)
    assert len(names & COMMAND_MODULES) < len(COMMAND_MODULES)


def test_the_command_table_matches_the_commands():
    """Every command module registers exactly the command the table names for it, with the short
    help the table shows for it (the first sentence of its docstring)."""
    for name, (module, short) in COMMANDS.items():
        command = main.get_command(click.Context(main), name)
        assert command is not None and command.callback is not None, name
        assert command.callback.__module__ == module
        assert command.get_short_help_str(limit=1 << 20) == short
    registered = {name for name, cmd in main.commands.items() if not cmd.hidden}
    assert registered == set(COMMANDS)


def test_help_lists_the_commands_as_click_would():
    """``memplan --help`` from the table (nothing imported) is byte-identical to click's own
    help once every command is loaded."""
    env = dict(os.environ, PYTHONPATH=ROOT, COLUMNS="80")
    lazy = subprocess.run([sys.executable, "-m", "memplan", "--help"], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=60)
    stock = ("import sys, click\n"
             "from memplan.cli import main\n"
             "from memplan.cli.app import COMMANDS, MemplanGroup\n"
             "for name in COMMANDS: main.get_command(click.Context(main), name)\n"
             "MemplanGroup.format_commands = click.Group.format_commands\n"
             "MemplanGroup.list_commands = click.Group.list_commands\n"
             "main(['--help'], prog_name='memplan')\n")
    eager = subprocess.run([sys.executable, "-c", stock], capture_output=True, text=True, cwd=ROOT, env=env,
                           timeout=60)
    assert lazy.returncode == eager.returncode == 0, eager.stderr[-2000:]
    assert "Commands:" in lazy.stdout and lazy.stdout == eager.stdout
    for name in COMMANDS:
        assert f"\n  {name} " in lazy.stdout


def test_completion_of_a_command_name_and_of_its_options():
    runner = CliRunner()
    env = {"_MEMPLAN_COMPLETE": "bash_complete", "COMP_WORDS": "memplan ", "COMP_CWORD": "1"}
    result = runner.invoke(main, [], env=env, prog_name="memplan", complete_var="_MEMPLAN_COMPLETE")
    assert result.exit_code == 0
    assert [line.split(",")[1] for line in result.output.split()] == sorted(COMMANDS)
    env = {"_MEMPLAN_COMPLETE": "bash_complete", "COMP_WORDS": f"memplan simulate {bundled('sbm-guest.toml')} --sem",
           "COMP_CWORD": "3"}
    result = runner.invoke(main, [], env=env, prog_name="memplan", complete_var="_MEMPLAN_COMPLETE")
    assert result.output.split() == ["plain,--semantics"]


def test_python_dash_m_and_the_script_entry_point():
    """``python -m memplan`` and the ``[project.scripts]`` entry point run the same command line."""
    done = subprocess.run([sys.executable, "-m", "memplan", "--version"], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    assert done.returncode == 0 and done.stdout == "memplan, version 0.1.0\n" and done.stderr == ""
    code = "import sys; sys.argv = ['memplan', '-V']; from memplan.__main__ import run; run()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    assert done.returncode == 0 and done.stdout == "memplan, version 0.1.0\n"


LEAVE = """
import atexit, sys, threading, time
sys.argv = ['memplan'] + {args!r}
atexit.register(lambda: print('atexit ran', flush=True))
class Teardown:
    def __del__(self):
        print('teardown ran', flush=True)
keep = Teardown()
if {thread!r}:
    threading.Thread(target=lambda: (time.sleep(0.3), print('thread done', flush=True))).start()
from memplan.__main__ import run
run()
"""


@pytest.mark.parametrize("args, status", [(["--version"], 0), (["simulate", "--check", "profiles/sbm-guest.toml"], 64),
                                          (["simulate", "nonesuch.toml"], 2)])
def test_the_script_skips_the_interpreters_teardown(args, status):
    """``memplan`` ends with ``os._exit()`` once its output is flushed and the ``atexit`` handlers
    have run: the interpreter's teardown (freeing every object, 25-40 ms with numpy) is skipped,
    the exit status is kept."""
    done = subprocess.run([sys.executable, "-c", LEAVE.format(args=args, thread=False)], capture_output=True,
                          text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, NO_COLOR="1"), timeout=120)
    assert done.returncode == status, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "atexit ran" and "teardown ran" not in done.stdout
    if args == ["--version"]:
        assert done.stdout == "memplan, version 0.1.0\natexit ran\n"


def test_a_running_thread_keeps_the_ordinary_exit():
    done = subprocess.run([sys.executable, "-c", LEAVE.format(args=["--version"], thread=True)], capture_output=True,
                          text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "memplan, version 0.1.0" and "thread done" in lines and "teardown ran" in lines
