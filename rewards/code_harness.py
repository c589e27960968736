"""How ``code_tests`` runs one test so that its score cannot be forged from inside the solution.

The expected values and the test's source never enter the solution's process. The solution runs in
a *solution server* (``rewards.code_programs.serve``) that only ever returns outputs, and the
comparison happens elsewhere. A test takes one of three routes:

- **compiled**: a test made of asserts of the forms ``assert <expr> == <literal>`` (either side),
  ``assert <expr>``, ``assert not <expr>`` and ``assert <expr> is True/False/None`` becomes checks.
  The server evaluates each ``<expr>`` (one request each, on stdin, one sandboxed run) and the
  parent compares the plain data it replies with the literal. ``<expr>`` may use the solution's
  names, literals, calls, attributes, subscripts and arithmetic, but no builtin and no comparison or
  logic: those are the test's judgement, which must not run where the solution can replace it.
- **separate**: any other test (several statements, ``def check(candidate)``, tolerances,
  ``try``/``except``) runs in a sandbox of its own (``run_test``), talking to the server over
  ``run_pair``: the test's free names become the server's values, plain data as real values and the
  rest as proxies that cannot be compared or tested for truth. The test's exit status decides.
- **io**: ``{"stdin": ..., "stdout": ...}`` (or ``input``/``output``) runs the solution as
  ``__main__`` with that stdin; its stdout must match, ignoring trailing whitespace on each line
  and trailing blank lines.

No marker on stdout decides a score. Whatever the solution does (crash, hang, garbage on the
channel, closing it, killing itself) fails that test only; ``SandboxError`` (the sandbox's own
fault) propagates.

>>> compile_test("assert add(1, 2) == 3")
(Check(kind='eq', source='add(1, 2)', expected=3),)
>>> compile_test("assert abs(f(2) - 1.41) < 0.01") is None  # a builtin and a comparison: separate
True
"""

from __future__ import annotations

import ast
import builtins
import json
import symtable
import sys
from dataclasses import dataclass
from typing import Any, Literal

from rewards.code_programs import BROKEN, program, runner_source, server_source
from rewards.plain_data import PlainDataError, decode, encode, parse_line
from rewards.sandbox import SandboxResult, run_pair, run_sandboxed

Outcome = Literal["passed", "failed", "error", "timeout"]
Route = Literal["compiled", "separate", "io"]

REPLY_BYTES = 2**20
"""The longest reply line; a larger value stays in the server (and cannot pass a compiled check)."""

_BUILTINS = frozenset(dir(builtins))
_NOT_PLAIN = object()  # a reply that is a handle or an exception: no compiled check passes with it
_OPERATORS = (ast.expr_context, ast.operator, ast.unaryop, ast.keyword, ast.Slice, ast.Starred)
_EVALUABLE = (ast.Call, ast.Name, ast.Attribute, ast.Subscript, ast.Constant, ast.List, ast.Tuple, ast.Set,
              ast.Dict, ast.BinOp, ast.UnaryOp, *_OPERATORS)  # fmt: skip


@dataclass(frozen=True)
class IoCase:
    """A stdin/stdout test: the solution runs as ``__main__`` with ``stdin``; it must print ``stdout``."""

    stdin: str
    stdout: str


@dataclass(frozen=True)
class Check:
    """One compiled assert: ``kind`` is ``eq`` (the value of ``source`` equals ``expected``), ``is``
    (it is ``expected``: ``True``, ``False`` or ``None``), ``truthy`` or ``falsy``."""

    kind: Literal["eq", "is", "truthy", "falsy"]
    source: str
    expected: Any = None

    def passes(self, value: Any) -> bool:
        """Whether the server's decoded reply passes; only plain data can.

        >>> Check("eq", "f()", [1, 2]).passes([1, 2]), Check("truthy", "f()").passes(0)
        (True, False)
        """
        if value is _NOT_PLAIN:
            return False
        if self.kind == "eq":
            return bool(value == self.expected)
        if self.kind == "is":
            return value is self.expected
        return bool(value) is (self.kind == "truthy")


def as_io_case(test: Any) -> IoCase | None:
    """``test`` as a stdin/stdout test, where it is a dict of two strings named ``stdin``/``stdout``
    or ``input``/``output``; else ``None``.

    >>> as_io_case({"input": "1 2\\n", "output": "3\\n"}), as_io_case({"stdin": 1, "stdout": "3"})
    (IoCase(stdin='1 2\\n', stdout='3\\n'), None)
    """
    if not isinstance(test, dict):
        return None
    for given, wanted in (("stdin", "stdout"), ("input", "output")):
        if set(test) == {given, wanted} and isinstance(test[given], str) and isinstance(test[wanted], str):
            return IoCase(test[given], test[wanted])
    return None


def same_output(actual: str, expected: str) -> bool:
    """Whether two outputs agree, ignoring whitespace at the end of each line (``\\r`` included)
    and blank lines at the end; leading whitespace and blank lines in between count.

    >>> same_output("3 \\r\\n4\\n\\n", "3\\n4"), same_output(" 3\\n", "3\\n")
    (True, False)
    """

    def lines(text: str) -> list[str]:
        stripped = [line.rstrip() for line in text.split("\n")]
        while stripped and not stripped[-1]:
            stripped.pop()
        return stripped

    return lines(actual) == lines(expected)


def compile_test(test: str) -> tuple[Check, ...] | None:
    """The checks of a test made only of compilable asserts (see the module's doc), else ``None``.

    >>> compile_test("assert [1] == f([1])\\nassert not g(0)\\nassert h() is None")
    (Check(kind='eq', source='f([1])', expected=[1]), Check(kind='falsy', source='g(0)', expected=None),
     Check(kind='is', source='h()', expected=None))
    >>> [compile_test(t) for t in ["assert f(x) == y", "assert len(f()) == 2", "assert f() < 3", "x = f()"]]
    [None, None, None, None]
    """
    try:
        tree = ast.parse(test)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if not tree.body or not all(isinstance(statement, ast.Assert) for statement in tree.body):
        return None
    checks = [_check(statement.test) for statement in tree.body]  # type: ignore[attr-defined]
    return None if None in checks else tuple(checks)  # type: ignore[arg-type]


def _check(node: ast.expr) -> Check | None:
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        left, op, right = node.left, node.ops[0], node.comparators[0]
        if isinstance(op, ast.Eq):
            for expr, literal in ((left, right), (right, left)):
                expected = _literal(literal)
                if expected is not _NOT_PLAIN and _evaluable(expr):
                    return Check("eq", ast.unparse(expr), expected)
        is_singleton = isinstance(right, ast.Constant) and any(right.value is v for v in (True, False, None))
        if isinstance(op, ast.Is) and is_singleton and _evaluable(left):
            return Check("is", ast.unparse(left), right.value)  # type: ignore[attr-defined]
        return None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return Check("falsy", ast.unparse(node.operand)) if _evaluable(node.operand) else None
    return Check("truthy", ast.unparse(node)) if _evaluable(node) else None


def _literal(node: ast.expr) -> Any:
    """The plain value of a literal node, else ``_NOT_PLAIN`` (a complex number is not plain)."""
    try:
        value = ast.literal_eval(node)
        encode(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # PlainDataError is a ValueError
        return _NOT_PLAIN
    return value


def _evaluable(node: ast.expr) -> bool:
    """Whether the server may evaluate ``node``: the solution's names, literals, calls, attributes,
    subscripts and arithmetic only. A builtin the solution could shadow, a comparison or ``not``
    would put the test's judgement in the solution's process."""
    for child in ast.walk(node):
        if isinstance(child, ast.UnaryOp) and isinstance(child.op, ast.Not):
            return False
        if not isinstance(child, _EVALUABLE) or (isinstance(child, ast.Name) and child.id in _BUILTINS):
            return False
    return True


def free_names(test: str, solution: str) -> tuple[list[str], list[str]]:
    """The global names ``test`` reads without binding them, split into those to fetch from the
    solution and stdlib modules the runner imports itself (a test that forgot ``import math`` gets
    the real module, not the solution's). Builtins and dunder names are neither: the runner's own
    builtins serve the test, whatever the solution shadows. A stdlib module name that the solution
    defines with ``def`` or ``class`` (say a function ``trace``) is the solution's.

    >>> free_names("import re\\ndef check(f):\\n    assert f(math.pi) == sqrt(2)\\ncheck(area)", "")
    (['area', 'sqrt'], ['math'])
    """
    try:
        top = symtable.symtable(test, "test.py", "exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return [], []  # the runner fails on the same error
    read: set[str] = set()
    bound: set[str] = set()
    tables = [top]
    while tables:
        table = tables.pop()
        tables.extend(table.get_children())
        for symbol in table.get_symbols():
            name, at_top = symbol.get_name(), table is top
            if (at_top or symbol.is_declared_global()) and (symbol.is_assigned() or symbol.is_imported()):
                bound.add(name)
            if symbol.is_referenced() and (at_top or symbol.is_global()):
                read.add(name)
    free = sorted(n for n in read - bound - _BUILTINS if not (n.startswith("__") and n.endswith("__")))
    defined = _defined(solution)
    imports = [n for n in free if n in sys.stdlib_module_names and n not in defined]
    return [n for n in free if n not in imports], imports


def _defined(solution: str) -> set[str]:
    try:
        tree = ast.parse(solution)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return set()
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return {node.name for node in tree.body if isinstance(node, kinds)}


def server_program(solution: str) -> str:
    """The solution server for ``solution`` (``rewards.code_programs.serve``)."""
    return program(server_source(), "serve", solution, REPLY_BYTES)


def runner_program(test: str, solution: str) -> str:
    """The test runner for ``test`` against ``solution``'s server (``rewards.code_programs.run_test``)."""
    fetch, imports = free_names(test, solution)
    return program(runner_source(), "run_test", test, fetch, imports, REPLY_BYTES)


def requests_for(checks: tuple[Check, ...]) -> str:
    """The server's stdin for compiled checks: one ``eval`` request a line.

    >>> requests_for(compile_test("assert f(1) == 2"))
    '{"op": "eval", "src": "f(1)"}\\n'
    """
    return "".join(json.dumps({"op": "eval", "src": check.source}) + "\n" for check in checks)


def judge_compiled(result: SandboxResult, checks: tuple[Check, ...]) -> Outcome:
    """The outcome of a compiled test from the server's run: one reply line per check, each plain
    data that passes its check, and a clean exit.

    >>> ok = SandboxResult("ok", 0, '{"value": 3, "changed": []}\\n', "", 0.1)
    >>> judge_compiled(ok, compile_test("assert f() == 3")), judge_compiled(ok, compile_test("assert f() == 4"))
    ('passed', 'failed')
    >>> judge_compiled(SandboxResult("ok", 0, '{"value": 3.0}\\n', "", 0.1), compile_test("assert f() == 3"))
    'error'
    """
    if result.status != "ok":
        return "timeout" if result.status == "timeout" else "error"
    lines = result.stdout.split("\n")
    if len(lines) != len(checks) + 1 or lines[-1]:
        return "error"  # a reply missing (the server died) or garbage written on the channel
    try:
        values = [_reply_value(line) for line in lines[:-1]]
    except PlainDataError:
        return "error"
    return "passed" if all(check.passes(value) for check, value in zip(checks, values)) else "failed"


def _reply_value(line: str) -> Any:
    reply = parse_line(line)
    if type(reply) is not dict or not reply.keys() <= {"value", "changed", "handle", "raised"}:
        raise PlainDataError("not a reply: %.80r" % (line,))
    if "value" in reply:
        return decode(reply["value"])
    if len(reply) != 1:
        raise PlainDataError("not a reply: %.80r" % (line,))
    return _NOT_PLAIN


def judge_separate(result: SandboxResult) -> Outcome:
    """The outcome of a test run by ``run_test``: its exit status, the test's own verdict; an
    ended or lying server (``BROKEN``) is the solution's error.

    >>> judge_separate(SandboxResult("error", 86, "", "", 0.1)), judge_separate(SandboxResult("error", 1, "", "", 0.1))
    ('error', 'failed')
    """
    if result.status == "ok":
        return "passed"
    if result.status == "timeout":
        return "timeout"
    return "error" if result.returncode == BROKEN else "failed"


def judge_io(result: SandboxResult, case: IoCase) -> Outcome:
    """The outcome of a stdin/stdout test: a clean exit and the expected output (``same_output``).

    >>> judge_io(SandboxResult("ok", 0, "3\\n", "", 0.1), IoCase("1 2", "3"))
    'passed'
    """
    if result.status != "ok":
        return "timeout" if result.status == "timeout" else "error"
    return "passed" if same_output(result.stdout, case.stdout) else "failed"


def run_case(
    solution: str, server: str, test: str | IoCase, *, timeout_s: float, memory_mb: int
) -> tuple[Route, Outcome]:
    """Run one test of ``solution`` (``server`` is ``server_program(solution)``, built once per
    completion) by its route; its route and outcome. ``SandboxError`` propagates."""
    limits: dict[str, Any] = {"timeout_s": timeout_s, "memory_mb": memory_mb}
    if isinstance(test, IoCase):
        cap = max(64 * 1024, 2 * len(test.stdout.encode()) + 4096)
        return "io", judge_io(run_sandboxed(solution, stdin=test.stdin, max_output_bytes=cap, **limits), test)
    checks = compile_test(test)
    if checks is not None:
        cap = (len(checks) + 1) * REPLY_BYTES
        result = run_sandboxed(server, stdin=requests_for(checks), max_output_bytes=cap, **limits)
        return "compiled", judge_compiled(result, checks)
    result = run_pair(server, runner_program(test, solution), **limits)
    return "separate", judge_separate(result)
