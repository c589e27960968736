"""``code_tests``: the fraction of a dataset row's unit tests that the completion's code passes.

A row carries its tests as a list (or one of them), each a Python snippet or a stdin/stdout pair::

    {"prompt": "Write add(a, b).", "tests": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]}
    {"prompt": "Read two ints, print their sum.", "tests": [{"stdin": "1 2\\n", "stdout": "3\\n"}]}

(``{"inputs": [...], "outputs": [...]}``, the APPS form, is a list of stdin/stdout pairs too.)

Scoring happens outside the solution's process. Before, a test ran in the solution's own
interpreter and passed when the run printed a random marker; a solution could read the marker from
its caller's frame, print it from ``sys.excepthook`` after failing, look the expected value up in
the test's source, return an object whose ``__eq__`` is always true, or shadow ``abs``. Now the
expected values and the test's source never enter the solution's process: the solution runs in a
server that only returns outputs (plain data, strictly encoded; anything else stays there as a
handle that cannot be compared or tested for truth), and the comparison happens in the parent, or
in a sandbox of the test's own with intact builtins. ``rewards.code_harness`` has the three routes
(``compiled`` asserts, tests run ``separate``ly over ``run_pair``, ``io`` pairs); a solution that
tampers with its server only changes its own answers.

Each test is its own sandboxed run (or pair of runs), one after the other: a test that hangs or
crashes fails alone, and no test sees what another left behind. A solution that hangs, crashes,
exceeds a limit or garbles the channel fails the test at hand, never the reward; only a fault of the
sandbox itself (``SandboxError``) fails the call. The solution runs as module ``solution`` (not
``__main__``, except for stdin/stdout tests), so its ``if __name__ == "__main__":`` block does not
run. ``info`` counts ``passed``, ``total``, ``timeouts``, ``errors`` (runs in which the solution's
process crashed, exceeded a limit or broke the protocol) and each route's tests (``compiled``,
``separate``, ``io``).
"""

from __future__ import annotations

import re
import textwrap
from collections import Counter
from typing import Any

from rewards.registry import reward
from rewards.spec import RewardResult
from rewards.code_harness import IoCase, as_io_case, run_case, server_program

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.DOTALL | re.MULTILINE)
_PYTHON_TAGS = ("python", "python3", "py", "")


@reward("code_tests", timeout_s=60.0, sandbox=True)
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
    RewardResult(score=0.5, info={'passed': 1, 'total': 2, 'timeouts': 0, 'errors': 0, 'compiled': 2,
                                  'separate': 0, 'io': 0})
    """
    if language != "python":
        raise ValueError(f"code_tests supports language 'python' only, got {language!r}")
    cases = _as_tests(tests)
    solution = extract_code(completion)
    server = server_program(solution)
    counts: Counter[str] = Counter()
    for case in cases:
        route, outcome = run_case(solution, server, case, timeout_s=timeout_s, memory_mb=memory_mb)
        counts[route] += 1
        counts[outcome] += 1
    info = {"passed": counts["passed"], "total": len(cases), "timeouts": counts["timeout"], "errors": counts["error"]}
    info.update({route: counts[route] for route in ("compiled", "separate", "io")})
    return RewardResult(counts["passed"] / len(cases), info)


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


def _as_tests(tests: Any) -> list[str | IoCase]:
    """The dataset field as a non-empty list of tests: non-blank snippets and stdin/stdout pairs.

    >>> _as_tests("assert True"), _as_tests(["assert 1", {"stdin": "1", "stdout": "2"}])
    (['assert True'], ['assert 1', IoCase(stdin='1', stdout='2')])
    >>> _as_tests({"inputs": ["1", "2"], "outputs": ["1", "4"]})
    [IoCase(stdin='1', stdout='1'), IoCase(stdin='2', stdout='4')]
    >>> _as_tests([])
    Traceback (most recent call last):
    ...
    ValueError: code_tests needs a 'tests' field (a test, or a non-empty list of them), got []
    """
    if isinstance(tests, dict) and set(tests) == {"inputs", "outputs"}:  # the APPS form
        pairs = tests["inputs"], tests["outputs"]
        if all(isinstance(p, list) for p in pairs) and len(pairs[0]) == len(pairs[1]):
            tests = [{"stdin": i, "stdout": o} for i, o in zip(*pairs)]
    listed = [tests] if isinstance(tests, (str, dict)) else tests
    cases = [_as_test(t) for t in listed] if isinstance(listed, (list, tuple)) else []
    if not cases or None in cases:
        expected = "a 'tests' field (a test, or a non-empty list of them)"
        raise ValueError(f"code_tests needs {expected}, got {tests!r:.80}")
    return cases  # type: ignore[return-value]


def _as_test(test: Any) -> str | IoCase | None:
    if isinstance(test, str):
        return test if test.strip() else None
    return as_io_case(test)
