"""Instant start (issue 15 §2): ``memplan --help``, ``--version`` and completing a command name
import neither numpy nor rich nor any command module; a command imports its own module and
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


def imported(args: List[str], env: Optional[Dict[str, str]] = None) -> Set[str]:
    """The modules ``python -X importtime -m memplan ARGS`` imports (it must exit 0)."""
    run_env = dict(os.environ, NO_COLOR="1", PYTHONPATH=ROOT)
    run_env.update(env or {})
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "memplan", *args], capture_output=True,
                          text=True, cwd=ROOT, env=run_env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
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
