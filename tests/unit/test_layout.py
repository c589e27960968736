"""The test tree itself: the tiers have no ``__init__.py`` (pytest imports each test module by its
basename), so two test modules with one name in two tiers break collection of the whole suite; and
the suite's budget keeps its shape: one local Ray and one tiny model per test process, made in
``tests/conftest.py`` and shared, never a module's own.

And the code's layout: no import circle between files (lazy, function-level imports included), and
no config module over 400 lines."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
PACKAGES = ("rlft", "actors", "rewards", "launch")
SHARED = TESTS / "conftest.py"
# what only the shared fixtures may do, and the one module that may start a cluster of its own
EXPENSIVE = {
    "its own local Ray": (re.compile(r"\bray\.init\("), ()),
    "its own tiny model": (re.compile(r"\bbuild_tiny_model\("), ()),
    "a Ray cluster of its own": (re.compile(r"""\bRAY,\s*["']start["']"""), ("integration/test_jobs.py",)),
}


def test_test_module_names_are_unique_across_tiers():
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [n for n, k in names.items() if k > 1] == []


def test_only_the_shared_fixtures_start_ray_or_build_the_tiny_model():
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        if path == SHARED or path == Path(__file__).resolve():
            continue
        rel = path.relative_to(TESTS).as_posix()
        for what, (pattern, allowed) in EXPENSIVE.items():
            if rel not in allowed and pattern.search(path.read_text()):
                offenders.append(f"{rel} starts {what} (use the ray_session / tiny_model_dir fixtures)")
    assert offenders == []


def test_the_guard_sees_what_it_guards():
    assert all(p.search(SHARED.read_text()) for what, (p, _) in EXPENSIVE.items() if "cluster" not in what)
    assert EXPENSIVE["a Ray cluster of its own"][0].search((TESTS / "integration" / "test_jobs.py").read_text())


# --- the code's layout ----------------------------------------------------------------------------


def import_graph() -> tuple[dict[str, set[str]], set[str]]:
    """Module -> the project modules it imports anywhere in its file (top level or inside a function),
    and the set of modules that are packages (``__init__.py``)."""
    files = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join(parts)] = path
    packages = {m for m, p in files.items() if p.name == "__init__.py"}

    def known(name: str) -> str | None:  # the deepest project module a dotted name lies in
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = module.split(".") if module in packages else module.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            deps |= {m for m in map(known, names) if m and m != module}
        graph[module] = deps
    return graph, packages


def import_cycles(graph: dict[str, set[str]], packages: set[str]) -> list[list[str]]:
    """The strongly connected components (more than one module) of ``graph``, ignoring a package's
    ``__init__`` importing its own submodules (re-exports) and a submodule importing its parents."""

    def counts(a: str, b: str) -> bool:
        return not (a in packages and b.startswith(a + ".")) and not (b in packages and a.startswith(b + "."))

    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if not counts(v, w):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_between_files():
    graph, packages = import_graph()
    assert import_cycles(graph, packages) == []


def test_the_cycle_check_sees_a_circle():
    graph = {"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "a": {"a.x"}, "b": set()}
    assert import_cycles(graph, {"a"}) == [["a.x", "a.y", "a.z"]]
    assert import_cycles({"a": {"a.x"}, "a.x": {"a"}}, {"a"}) == []  # re-exports and parents
    real, packages = import_graph()
    assert "rlft.tasks" in real["rlft.data.loading"]  # a lazy import counts


def test_no_config_module_is_over_400_lines():
    long = {p.name: n for p in sorted((ROOT / "rlft" / "config").glob("*.py"))
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}
