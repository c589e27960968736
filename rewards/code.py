"""``code_tests``: the fraction of a dataset row's unit tests that the completion's code passes.

A row carries its tests as a list of Python snippets (or one snippet), for example::

    {"prompt": "Write add(a, b).", "tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]}

Each test is its own sandboxed run (``rewards.sandbox``): the solution, then the one test, in a
fresh interpreter. That costs an interpreter start per test (tens of milliseconds; tests run one
after the other) and keeps tests apart: a test that hangs or crashes fails alone, and no test sees
what another left behind. One run for all tests with per-test results on stdout would be cheaper,
but one hang would then cost every test and the solution could print fake results.

A test passes when its run exits with status 0 *and* prints a random marker, fresh per run, that
the harness writes only after the test's last statement. So a solution that exits early
(``sys.exit(0)``, ``os._exit(0)``) or forces status 0 after a failed test (``atexit``) does not
pass; faking the marker takes reading it out of the harness's frame, which is deliberate tampering,
not a reward hack found by accident. A solution that hangs, crashes or exceeds a limit fails the
test at hand; it does not fail the reward. The solution runs as module ``solution`` (not
``__main__``), so its ``if __name__ == "__main__":`` block, typically reading stdin, does not run.
"""

from __future__ import annotations

import re
import secrets
import textwrap
from typing import Any

from rewards.api import RewardResult, reward
from rewards.sandbox import run_sandboxed

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.DOTALL | re.MULTILINE)
_PYTHON_TAGS = ("python", "python3", "py", "")

_HARNESS = """\
def _harness(solution, test, marker):
    import posix, sys
    write, run, build = posix.write, exec, compile  # bound before the solution can replace them
    module = sys.modules["solution"] = type(sys)("solution")
    namespace = vars(module)
    run(build(solution, "solution.py", "exec"), namespace)
    run(build(test, "test.py", "exec"), namespace)
    write(1, marker)

_harness({solution!r}, {test!r}, {marker!r})
"""


@reward("code_tests", timeout_s=60.0)
def code_tests(
    prompt: str,
    completion: str,
    *,
    tests: Any,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    language: str = "python",
) -> RewardResult:
    """Fraction of ``tests`` passed by the code in ``completion``; ``info`` counts them.

    ``timeout_s`` and ``memory_mb`` bound each test's run. A missing or malformed ``tests`` field
    or a language other than Python raises ``ValueError`` (the runtime marks the sample failed).

    >>> code_tests("", "def add(a, b):\\n    return a + b", tests=["assert add(1, 2) == 3", "assert add(1, 1) == 3"])
    RewardResult(score=0.5, info={'passed': 1, 'total': 2, 'timeouts': 0})
    """
    if language != "python":
        raise ValueError(f"code_tests supports language 'python' only, got {language!r}")
    snippets = _as_tests(tests)
    solution = extract_code(completion)
    passed = timeouts = 0
    for test in snippets:
        marker = secrets.token_hex(16)
        program = _HARNESS.format(solution=solution, test=test, marker=f"\n{marker}\n".encode())
        result = run_sandboxed(program, timeout_s=timeout_s, memory_mb=memory_mb)
        if result.status == "ok" and marker in result.stdout:
            passed += 1
        elif result.status == "timeout":
            timeouts += 1
    return RewardResult(passed / len(snippets), {"passed": passed, "total": len(snippets), "timeouts": timeouts})


def extract_code(completion: str) -> str:
    """The last fenced Python (or untagged) block of ``completion``, else all of it. A final block
    left open (generation stopped before its closing fence) counts.

    >>> extract_code("Try:\\n```python\\nx = 1\\n```\\nor better:\\n```py\\nx = 2\\n```\\n")
    'x = 2\\n'
    >>> extract_code("```js\\nlet x;\\n```\\n```\\nprint(1)\\n```"), extract_code("print(2)")
    ('print(1)\\n', 'print(2)')
    >>> extract_code("```python\\ndef f():\\n    return 1\\n")
    'def f():\\n    return 1\\n'
    """
    blocks = [body for tag, body in _FENCE.findall(completion) if tag.lower() in _PYTHON_TAGS]
    return textwrap.dedent(blocks[-1]) if blocks else completion


def _as_tests(tests: Any) -> list[str]:
    """The dataset field as a non-empty list of non-blank snippets.

    >>> _as_tests("assert True"), _as_tests(["assert 1", "assert 2"])
    (['assert True'], ['assert 1', 'assert 2'])
    >>> _as_tests([])
    Traceback (most recent call last):
    ...
    ValueError: code_tests needs a 'tests' field of test snippets (a string or a non-empty list), got []
    """
    snippets = [tests] if isinstance(tests, str) else tests
    valid = isinstance(snippets, (list, tuple)) and snippets and all(isinstance(t, str) and t.strip() for t in snippets)
    if not valid:
        expected = "a 'tests' field of test snippets (a string or a non-empty list)"
        raise ValueError(f"code_tests needs {expected}, got {tests!r:.80}")
    return list(snippets)
