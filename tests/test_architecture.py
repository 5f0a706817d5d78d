"""The layering of memplan, checked on the source: every import (module level, inside functions,
under ``if TYPE_CHECKING:``) points down the layers, no two modules import each other even
indirectly, and the core stays free of click and rich.

Layers, bottom to top::

    core < kernel < engine < {profile, snapshot} < {plans, diff, explain, map, fleet} < render < cli

Inside one layer only these directions are allowed: ``map -> diff`` and ``fleet -> plans``.
The top-level ``memplan/__init__.py`` (``__version__``) may be imported by anyone.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Dict, FrozenSet, Iterator, List, Mapping, Set, Tuple

import memplan

ROOT = "memplan"
#: rank of each sub-package; ``__main__`` sits above the CLI it runs
LAYERS: Dict[str, int] = {
    "core": 0, "kernel": 1, "engine": 2, "profile": 3, "snapshot": 3,
    "plans": 4, "diff": 4, "explain": 4, "map": 4, "fleet": 4,
    "render": 5, "cli": 6, "__main__": 7,
}
#: imports allowed between two packages of the same layer
SIDEWAYS: FrozenSet[Tuple[str, str]] = frozenset({("map", "diff"), ("fleet", "plans")})
#: third-party packages the core must not import
NOT_IN_CORE = ("click", "rich")

Edge = Tuple[str, str]


def package_sources(root: Path = Path(memplan.__file__).parent) -> Dict[str, str]:
    """Every module of the package by dotted name (``memplan.core.model``; packages by their name)."""
    out: Dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path.read_text(encoding="utf-8")
    return out


def _is_package(module: str, sources: Mapping[str, str]) -> bool:
    prefix = module + "."
    return any(name.startswith(prefix) for name in sources)


def _imported_names(module: str, tree: ast.AST, sources: Mapping[str, str]) -> Iterator[str]:
    """Dotted names of every import statement anywhere in the tree (``ast.walk`` reaches
    function bodies and ``if TYPE_CHECKING:`` blocks alike)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                if not _is_package(module, sources):
                    anchor = anchor[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in sources else base


def import_graph(sources: Mapping[str, str]) -> Tuple[Dict[str, Set[str]], Dict[str, Set[str]]]:
    """``(internal, external)``: per module, the package modules and the top-level third-party
    names it imports."""
    internal: Dict[str, Set[str]] = {m: set() for m in sources}
    external: Dict[str, Set[str]] = {m: set() for m in sources}
    for module, text in sources.items():
        for name in _imported_names(module, ast.parse(text, module), sources):
            if name == ROOT or name.startswith(ROOT + "."):
                target = name
                while target not in sources and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target != module:
                    internal[module].add(target)
            else:
                external[module].add(name.split(".")[0])
    return internal, external


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def layer_violations(internal: Mapping[str, Set[str]]) -> List[str]:
    """Imports that point up the layers, sideways where not allowed, or into unknown packages."""
    bad: List[str] = []
    for module, targets in sorted(internal.items()):
        src = layer_of(module)
        for target in sorted(targets):
            dst = layer_of(target)
            if dst == ROOT or dst == src:
                continue
            if src not in LAYERS or dst not in LAYERS:
                bad.append(f"{module} -> {target}: package {src if src not in LAYERS else dst} has no layer")
            elif LAYERS[dst] > LAYERS[src] or (LAYERS[dst] == LAYERS[src] and (src, dst) not in SIDEWAYS):
                bad.append(f"{module} -> {target}: {src} may not import {dst}")
    return bad


def import_cycles(internal: Mapping[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    cycles: List[List[str]] = []
    for root in sorted(internal):
        if root in index:
            continue
        work = [(root, iter(sorted(internal[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(internal.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: List[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def core_gui_imports(external: Mapping[str, Set[str]]) -> List[str]:
    return [f"{module} imports {name}" for module, names in sorted(external.items())
            if layer_of(module) == "core" for name in sorted(names) if name in NOT_IN_CORE]


@functools.lru_cache(maxsize=1)
def memplan_graph() -> Tuple[Dict[str, Set[str]], Dict[str, Set[str]]]:
    return import_graph(package_sources())


def test_every_package_has_a_layer() -> None:
    packages = {layer_of(m) for m in memplan_graph()[0]} - {ROOT}
    assert packages <= set(LAYERS), sorted(packages - set(LAYERS))


def test_no_import_cycle() -> None:
    assert import_cycles(memplan_graph()[0]) == []


def test_imports_point_down_the_layers() -> None:
    assert layer_violations(memplan_graph()[0]) == []


def test_core_never_imports_click_or_rich() -> None:
    assert core_gui_imports(memplan_graph()[1]) == []


# ---- the house rules of issue 11 that a reader of the source can check ---------------------------

#: "No function over ~80 lines" (issue 11 §2): one function per pipeline step, one reader per
#: TOML section, and the same size everywhere else
MAX_FUNCTION_LINES = 80
#: the semantics' names (``memplan.kernel.semantics.SEMANTICS``)
SEMANTICS_NAMES = frozenset({"refcount", "skippable"})


def long_functions(sources: Mapping[str, str], limit: int = MAX_FUNCTION_LINES) -> List[str]:
    out = []
    for module, text in sorted(sources.items()):
        for node in ast.walk(ast.parse(text, module)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > limit:
                    out.append(f"{module}.{node.name}: {lines} lines")
    return out


def semantics_compares(sources: Mapping[str, str]) -> List[str]:
    """Comparisons against a semantics' name (``semantics == "skippable"``, ``name in (...)``)
    outside ``memplan.kernel.semantics``: whatever differs between semantics is one of its methods."""
    out = []
    for module, text in sorted(sources.items()):
        if module == "memplan.kernel.semantics":
            continue
        for node in ast.walk(ast.parse(text, module)):
            if isinstance(node, ast.Compare):
                names = {c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
                if names & SEMANTICS_NAMES:
                    out.append(f"{module}:{node.lineno}")
    return out


def log_text_readers(sources: Mapping[str, str]) -> List[str]:
    """Modules outside the kernel model that hold the kernel's migration-failure log text
    (``migrating pfn ... failed ret:``): a verdict's ``Cause`` says why, nobody parses the log."""
    return [module for module, text in sorted(sources.items())
            if layer_of(module) != "kernel" and ("failed ret" in text or "ret:-" in text)]


def test_no_function_over_80_lines() -> None:
    assert long_functions(package_sources()) == []


def test_nothing_outside_the_semantics_compares_a_semantics_name() -> None:
    assert semantics_compares(package_sources()) == []


def test_no_caller_reads_the_kernel_log_text() -> None:
    assert log_text_readers(package_sources()) == []


def test_the_house_checks_find_what_they_look_for() -> None:
    body = "\n".join(f"    x = {i}" for i in range(MAX_FUNCTION_LINES))
    fake = {"memplan.kernel.long": f"def f():\n{body}\n",
            "memplan.snapshot.r": "def g(s):\n    return s == 'skippable'\n",
            "memplan.fleet.c": "ENOMEM = 'failed ret:-12'\n",
            "memplan.kernel.semantics": "def h(s):\n    return s in ('refcount',)\n"}
    assert long_functions(fake) == [f"memplan.kernel.long.f: {MAX_FUNCTION_LINES + 1} lines"]
    assert semantics_compares(fake) == ["memplan.snapshot.r:2"]
    assert log_text_readers(fake) == ["memplan.fleet.c"]


# ---- the checker itself, on a made-up package ---------------------------------------------------

FAKE = {
    "memplan": "__version__ = '0'\n",
    "memplan.core": "",
    "memplan.core.model": "import numpy as np\nfrom memplan import __version__\n",
    "memplan.core.bad": "def f():\n    import rich.console\n",
    "memplan.kernel": "",
    "memplan.kernel.a": "from memplan.core import model\nfrom . import b\n",
    "memplan.kernel.b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from memplan.kernel.a import X\n",
    "memplan.profile": "",
    "memplan.profile.writer": "def f():\n    from ..plans.state import S\n",
    "memplan.snapshot": "",
    "memplan.snapshot.r": "from memplan.profile import writer\n",
    "memplan.plans": "",
    "memplan.plans.state": "from memplan.kernel.a import Y\n",
    "memplan.map": "",
    "memplan.map.compute": "from memplan.diff.types import D\nfrom memplan.plans import state\n",
    "memplan.diff": "",
    "memplan.diff.types": "import memplan.core.model\n",
    "memplan.extra": "",
    "memplan.extra.x": "from memplan.core.model import Z\n",
}


def test_checker_resolves_relative_lazy_and_type_checking_imports() -> None:
    internal, external = import_graph(FAKE)
    assert internal["memplan.kernel.a"] == {"memplan.core.model", "memplan.kernel.b"}
    assert internal["memplan.kernel.b"] == {"memplan.kernel.a"}
    assert internal["memplan.profile.writer"] == {"memplan.plans.state"}
    assert internal["memplan.core.model"] == {"memplan"}
    assert internal["memplan.diff.types"] == {"memplan.core.model"}
    assert external["memplan.core.model"] == {"numpy"}


def test_checker_finds_cycles_layer_breaks_and_gui_in_core() -> None:
    internal, external = import_graph(FAKE)
    assert import_cycles(internal) == [["memplan.kernel.a", "memplan.kernel.b"]]
    assert layer_violations(internal) == [
        "memplan.extra.x -> memplan.core.model: package extra has no layer",
        "memplan.map.compute -> memplan.plans.state: map may not import plans",
        "memplan.profile.writer -> memplan.plans.state: profile may not import plans",
        "memplan.snapshot.r -> memplan.profile.writer: snapshot may not import profile",
    ]
    assert core_gui_imports(external) == ["memplan.core.bad imports rich"]
