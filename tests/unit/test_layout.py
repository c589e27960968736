"""The test tree itself: the tiers have no ``__init__.py`` (pytest imports each test module by its
basename), so two test modules with one name in two tiers break collection of the whole suite; and
the suite's budget keeps its shape: one local Ray and one tiny model per test process, made in
``tests/conftest.py`` and shared, never a module's own."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
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
