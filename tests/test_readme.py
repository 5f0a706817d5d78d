"""The README's examples are run, so they cannot drift (issue 15 section 7).

An *example* is a fenced code block of README.md whose lines starting with ``$ memplan``
are commands; the lines after a command, up to the next ``$ `` line or the end of the
block, are the output the README shows for it. Fenced blocks without a ``$ `` prompt
(synopses, ``sh`` snippets to copy, JSON and TOML) are not examples and are not run.

How an example is run:

* from the repository root (so ``profiles/...`` and ``tests/fixtures/...`` paths work),
  through ``bash -c`` with ``memplan`` defined as ``python -m memplan`` of the interpreter
  running the tests (so a pipe such as ``| cut -c1-100`` in the README is run as written);
* with ``COLUMNS=100``, ``LINES=50``, ``NO_COLOR=1``, ``TZ=UTC`` and stdout and stderr
  pipes (never a terminal: no colour, no progress bar);
* the output compared is stderr's lines followed by stdout's lines (memplan's
  ``memplan: warning:``/``memplan: error:`` lines come first, as a terminal shows them when
  the warning is printed before the table). The exit status is not compared.

How the output is compared:

* every line has its trailing whitespace stripped on both sides, and trailing empty lines
  are dropped;
* a line of the README made only of ``...`` is an elision. The shown lines are cut at the
  elisions into segments; every segment must occur as consecutive lines of the real output,
  in the README's order, without overlapping. The first segment must start the output
  unless the shown output starts with ``...``; the last must end it unless it ends with
  ``...``. Without an elision the output must be equal, line for line. ``...`` inside a
  line is compared literally (it is not an elision);
* timings vary from run to run: in both texts, ``in 1.2 s (6.8 hosts/s)`` (fleet's
  ``Ran on:`` line) becomes ``in N s (N hosts/s)`` before comparing.

An example may be marked as illustrative with ``<!-- readme: illustrative -->`` on the
line before its fence: it is then not run (only for paths that cannot exist in the
repository, such as a live machine's snapshot directory).

Regenerating the examples (never done inside pytest)::

    python tests/test_readme.py --update

runs every example and rewrites the output of those the test would fail (an example that
still passes, e.g. one whose only change is a timing, is left as it is). A rewritten example
shows elisions where a ``<!-- readme: keep 1-4,9-12 -->`` line before its fence says which lines of
the real output to show (1-based, inclusive; ``9-`` means "from line 9 to the end"; one
entry per command of the block, separated by ``;``, ``*`` for "all lines"); the lines left
out become ``...`` lines. Without that comment the whole output is written.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ELISION = "..."
PROMPT = "$ "
FENCE = re.compile(r"^(```+)")
DIRECTIVE = re.compile(r"^<!--\s*readme:\s*(.*?)\s*-->\s*$")
TIMING = re.compile(r"in [0-9.]+ s \([0-9.]+ hosts/s\)")
ENV = {
    "COLUMNS": "100",
    "LINES": "50",
    "NO_COLOR": "1",
    "TZ": "UTC",
    "LC_ALL": "C.UTF-8",
    "PYTHONIOENCODING": "utf-8",
}


@dataclass(frozen=True)
class Command:
    """One ``$ memplan ...`` line of an example and the output the README shows for it."""

    line: int  # 1-based line number of the command in README.md
    command: str
    shown: tuple[str, ...]
    keep: str  # the keep spec of --update ("*" = the whole output)


@dataclass(frozen=True)
class Example:
    """One fenced block with ``$ `` commands."""

    start: int  # 0-based index of the opening fence
    end: int  # 0-based index of the closing fence
    illustrative: bool
    commands: tuple[Command, ...]


def parse(text: str) -> list[Example]:
    """Every example of the README, in order."""
    lines = text.split("\n")
    examples: list[Example] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence = match.group(1)
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != fence:
            j += 1
        body = lines[i + 1 : j]
        if any(line.startswith(PROMPT + "memplan") for line in body):
            directives = _directives(lines, i)
            keeps = directives.get("keep", "").split(";") if "keep" in directives else []
            commands: list[Command] = []
            k = 0
            while k < len(body):
                if not body[k].startswith(PROMPT):
                    k += 1
                    continue
                cmd = body[k][len(PROMPT) :]
                m = k + 1
                while m < len(body) and not body[m].startswith(PROMPT):
                    m += 1
                n = len(commands)
                keep = keeps[n].strip() if n < len(keeps) and keeps[n].strip() else "*"
                commands.append(Command(i + 2 + k, cmd, tuple(body[k + 1 : m]), keep))
                k = m
            examples.append(Example(i, j, "illustrative" in directives, tuple(commands)))
        i = j + 1
    return examples


def _directives(lines: list[str], fence: int) -> dict[str, str]:
    """The ``<!-- readme: ... -->`` lines right above a fence."""
    found: dict[str, str] = {}
    i = fence - 1
    while i >= 0:
        match = DIRECTIVE.match(lines[i])
        if not match:
            break
        word, _, rest = match.group(1).partition(" ")
        found[word] = rest.strip()
        i -= 1
    return found


def run(command: str) -> list[str]:
    """Run one README command from the repository root; stderr lines, then stdout lines."""
    env = dict(os.environ)
    env.update(ENV)
    env["MEMPLAN_README_PYTHON"] = sys.executable
    script = 'memplan() { "$MEMPLAN_README_PYTHON" -m memplan "$@"; }\n' + command
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return _clean(proc.stderr.splitlines() + proc.stdout.splitlines())


def _clean(lines: list[str] | tuple[str, ...]) -> list[str]:
    out = [line.rstrip() for line in lines]
    while out and not out[-1]:
        out.pop()
    return out


def _untimed(line: str) -> str:
    return TIMING.sub("in N s (N hosts/s)", line)


def mismatch(shown: list[str] | tuple[str, ...], actual: list[str]) -> str | None:
    """None when ``actual`` is what ``shown`` shows (the module docstring's rule), else why not."""
    shown = [_untimed(line) for line in _clean(shown)]
    actual = [_untimed(line) for line in actual]
    if ELISION not in shown:
        if shown == actual:
            return None
        for n, (a, b) in enumerate(zip(shown, actual, strict=False), 1):
            if a != b:
                return f"line {n} differs:\n  README: {a!r}\n  actual: {b!r}"
        return f"README shows {len(shown)} lines, the command printed {len(actual)}"
    segments: list[list[str]] = [[]]
    for line in shown:
        if line == ELISION:
            segments.append([])
        else:
            segments[-1].append(line)
    anchored_start = bool(segments[0])
    anchored_end = bool(segments[-1])
    pos = 0
    for n, segment in enumerate(segments):
        if not segment:
            continue
        if n == 0 and anchored_start:
            found = 0 if actual[: len(segment)] == segment else -1
        elif n == len(segments) - 1 and anchored_end:
            at = len(actual) - len(segment)
            found = at if at >= pos and actual[at:] == segment else -1
        else:
            found = -1
            for at in range(pos, len(actual) - len(segment) + 1):
                if actual[at : at + len(segment)] == segment:
                    found = at
                    break
        if found < 0:
            return f"segment {n + 1} not found in order:\n  " + "\n  ".join(segment)
        pos = found + len(segment)
    return None


def excerpt(actual: list[str], keep: str) -> list[str]:
    """The lines of ``actual`` that ``keep`` names, with ``...`` for every gap."""
    if keep == "*":
        return list(actual)
    wanted: set[int] = set()
    for part in keep.split(","):
        first, dash, last = part.strip().partition("-")
        lo = int(first)
        hi = (int(last) if last else len(actual)) if dash else lo
        wanted.update(range(lo, hi + 1))
    out: list[str] = []
    for n, line in enumerate(actual, 1):
        if n in wanted:
            out.append(line)
        elif not out or out[-1] != ELISION:
            out.append(ELISION)
    return out


def update(path: Path = README) -> int:
    """Rewrite every example's output in ``path`` from the real commands; the number changed."""
    lines = path.read_text(encoding="utf-8").split("\n")
    changed = 0
    for example in reversed(parse("\n".join(lines))):
        if example.illustrative:
            continue
        body: list[str] = []
        still_right = True
        for command in example.commands:
            actual = run(command.command)
            still_right = still_right and mismatch(command.shown, actual) is None
            body.append(PROMPT + command.command)
            body.extend(excerpt(actual, command.keep))
        if not still_right and body != lines[example.start + 1 : example.end]:
            changed += 1
            lines[example.start + 1 : example.end] = body
    path.write_text("\n".join(lines), encoding="utf-8")
    return changed


COMMANDS = [
    pytest.param(command, id=f"L{command.line}:{command.command[:60]}")
    for example in parse(README.read_text(encoding="utf-8"))
    if not example.illustrative
    for command in example.commands
]


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_example(command: Command) -> None:
    problem = mismatch(command.shown, run(command.command))
    assert problem is None, (
        f"README.md line {command.line}: `{command.command}` prints something else "
        f"(regenerate with `python tests/test_readme.py --update`): {problem}"
    )


def test_examples_are_found() -> None:
    # the parser must see the README's examples (a broken parser would test nothing)
    assert len(COMMANDS) >= 10
    assert all(c.values[0].command.startswith("memplan ") for c in COMMANDS)  # type: ignore[union-attr]


def test_elision_rule() -> None:
    actual = ["a", "b", "c", "d", "e"]
    assert mismatch(["a", "b", "c", "d", "e"], actual) is None
    assert mismatch(["a", "b", "c", "d"], actual) is not None
    assert mismatch(["a", "...", "e"], actual) is None
    assert mismatch(["a", "...", "c", "...", "e"], actual) is None
    assert mismatch(["a", "...", "c", "...", "d"], actual) is not None  # d does not end it
    assert mismatch(["...", "c", "d", "..."], actual) is None
    assert mismatch(["...", "d", "c", "..."], actual) is not None  # order matters
    assert mismatch(["b", "..."], actual) is not None  # must start the output
    assert mismatch(["a  ", "...", "e"], actual) is None  # trailing whitespace
    timed = ["Ran on: local pool, 2 workers: 8 hosts in 1.2 s (6.8 hosts/s)"]
    assert mismatch(["Ran on: local pool, 2 workers: 8 hosts in 0.9 s (8.9 hosts/s)"], timed) is None
    assert mismatch(["Ran on: local pool, 1 workers: 8 hosts in 1.2 s (6.8 hosts/s)"], timed) is not None
    assert excerpt(actual, "1-2,4") == ["a", "b", "...", "d", "..."]
    assert excerpt(actual, "2-") == ["...", "b", "c", "d", "e"]
    assert mismatch(excerpt(actual, "1,3-"), actual) is None


if __name__ == "__main__":
    if sys.argv[1:] == ["--update"]:
        print(f"{update()} example(s) rewritten in {README}")
    else:
        print("usage: python tests/test_readme.py --update", file=sys.stderr)
        sys.exit(2)
