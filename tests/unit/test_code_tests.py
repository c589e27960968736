"""``code_tests`` scored outside the solution's process: golden scores on each route (compiled
asserts, tests run separately over ``run_pair``, stdin/stdout pairs), the plain-data codec, the
test compiler, and the forging attacks that passed the old marker harness, each scoring 0 against
the real sandbox (real processes; a few seconds in all)."""

from __future__ import annotations

import doctest
import importlib
import json
import math
from collections import Counter, OrderedDict, namedtuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards.api import RewardResult, get_reward
from rewards.code import _as_tests, code_tests
from rewards.code_harness import Check, IoCase, compile_test, free_names, same_output
from rewards.plain_data import PlainDataError, decode, encode, parse_line

pytestmark = pytest.mark.timeout(120)

PATIENT_S = 60.0  # the deadline where a test is not about deadlines: a busy machine must not fail it
ADD = "def add(a, b):\n    return a + b\n"


def grade(completion: str, tests, **kwargs) -> RewardResult:
    return code_tests("", completion, tests=tests, timeout_s=PATIENT_S, **kwargs)


def info(passed, total, *, timeouts=0, errors=0, compiled=0, separate=0, io=0) -> dict:
    return {"passed": passed, "total": total, "timeouts": timeouts, "errors": errors,
            "compiled": compiled, "separate": separate, "io": io}  # fmt: skip


# --- golden scores ---------------------------------------------------------------------------------


def test_registered_as_a_sandboxed_reward():
    spec = get_reward("code_tests")
    assert spec.fn is code_tests and spec.uses_sandbox


def test_correct_solution_scores_one():
    result = grade(f"Here you go:\n```python\n{ADD}```\n", ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"])
    assert result == RewardResult(1.0, info(2, 2, compiled=2))


def test_half_the_tests_pass():
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(1, 1) == 3", "assert add(0, 0) == 1"]
    assert grade(ADD, tests).score == 0.5


def test_single_string_is_one_test():
    assert grade(ADD, "assert add(1, 2) == 3") == RewardResult(1.0, info(1, 1, compiled=1))


def test_syntax_error_scores_zero_and_counts_as_errors():
    tests = ["assert add(1, 2) == 3", "def check(f):\n    assert f(1, 2) == 3\ncheck(add)"]
    assert grade("def add(a, b) return a + b", tests) == RewardResult(0.0, info(0, 2, errors=2, compiled=1, separate=1))


def test_stdin_stdout_tests_compare_output_in_the_parent():
    solution = "a, b = map(int, input().split())\nprint(a + b, ' ')\n"
    tests = [{"stdin": "1 2\n", "stdout": "3\n\n"}, {"input": "2 2", "output": "4"}, {"stdin": "1 1", "stdout": "3"}]
    assert grade(solution, tests) == RewardResult(2 / 3, info(2, 3, io=3))
    apps = {"inputs": ["5 5\n", "1 2\n"], "outputs": ["10\n", "3\n"]}
    assert grade(solution, apps).score == 1.0


def test_humaneval_check_runs_separately():
    test = "METADATA = {}\n\ndef check(candidate):\n    assert candidate(1, 2) == 3\n"
    test += "    assert candidate(-1, 1) == 0\n\ncheck(add)"
    assert grade(ADD, [test]) == RewardResult(1.0, info(1, 1, separate=1))
    assert grade("def add(a, b):\n    return a - b\n", [test]).score == 0.0


def test_class_based_test_runs_separately():
    solution = "class Solution:\n    def double(self, x):\n        return 2 * x\n"
    tests = ["s = Solution()\nassert s.double(2) == 4", "s = Solution()\nassert s.double(3) == 7"]
    assert grade(solution, tests) == RewardResult(0.5, info(1, 2, separate=2))


def test_tolerance_test_runs_separately():
    test = "assert abs(f(2) - 1.41) < 0.01"
    assert grade("def f(x):\n    return x ** 0.5\n", [test]) == RewardResult(1.0, info(1, 1, separate=1))
    assert grade("def f(x):\n    return x / 2\n", [test]).score == 0.0


def test_expected_exception_test_runs_separately():
    test = "try:\n    f(-1)\nexcept ValueError:\n    pass\nelse:\n    assert False"
    raises = "def f(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n"
    subclass = "class Negative(ValueError):\n    pass\n\ndef f(x):\n    raise Negative(x)\n"
    assert grade(raises, [test]).score == 1.0
    assert grade(subclass, [test]).score == 1.0  # a ValueError subclass is still caught
    assert grade("def f(x):\n    return x\n", [test]).score == 0.0
    assert grade("def f(x):\n    raise KeyError(x)\n", [test]).score == 0.0


def test_exception_message_reaches_the_test():
    test = "try:\n    f(-1)\nexcept ValueError as err:\n    assert str(err) == 'negative'\nelse:\n    assert False"
    assert grade("def f(x):\n    raise ValueError('negative')\n", [test]).score == 1.0


def test_in_place_changes_reach_the_test():
    tests = ["nums = [3, 1, 2]\nsort_in_place(nums)\nassert nums == [1, 2, 3]"]
    assert grade("def sort_in_place(a):\n    a.sort()\n", tests).score == 1.0
    assert grade("def sort_in_place(a):\n    return sorted(a)\n", tests).score == 0.0


def test_imports_from_the_solution_module_and_forgotten_stdlib_imports():
    tests = ["from solution import area\nassert area(1) == math.pi"]  # math: the runner's own
    tests.append("import solution\nassert solution.area(2) == 4 * pi")  # pi: the solution's
    assert grade("from math import pi\n\ndef area(r):\n    return pi * r * r\n", tests).score == 1.0


def test_compiled_checks_compare_plain_values():
    solution = "from collections import Counter\n\ndef count(s):\n    return Counter(s)\n\ndef nothing():\n    pass\n"
    tests = ["assert count('aab') == {'a': 2, 'b': 1}", "assert nothing() is None", "assert not nothing()"]
    tests.append("assert count('')")
    assert grade(solution, tests) == RewardResult(0.75, info(3, 4, compiled=4))


def test_solution_main_block_does_not_run_and_its_prints_do_not_matter():
    solution = ADD + "print('debug', add(1, 2))\nif __name__ == '__main__':\n    input()\n"
    assert grade(solution, ["assert add(1, 2) == 3", "def check(f):\n    assert f(1, 2) == 3\ncheck(add)"]).score == 1.0


def test_hanging_solution_or_test_fails_alone():
    loops = "def f():\n    while True:\n        pass\n\ndef g():\n    return 1\n"
    tests = ["assert f() == 1", "x = f()", "assert g() == 1"]
    result = code_tests("", loops, tests=tests, timeout_s=1.0)
    assert result == RewardResult(1 / 3, info(1, 3, timeouts=2, compiled=2, separate=1))


def test_crashing_solution_is_an_error_not_a_reward_failure():
    solution = "import os\n\ndef f():\n    os._exit(3)\n"
    result = grade(solution, ["assert f() == 1", "def check(c):\n    assert c() == 1\ncheck(f)"])
    assert result == RewardResult(0.0, info(0, 2, errors=2, compiled=1, separate=1))


@pytest.mark.parametrize(
    "tests", [None, [], "", [" "], [1], {"a": "assert 1"}, [{"stdin": "1"}], {"inputs": ["1"], "outputs": []}]
)
def test_missing_or_invalid_tests_raise(tests):
    with pytest.raises(ValueError, match="tests"):
        grade(ADD, tests)


def test_as_tests_accepts_dicts():
    assert _as_tests({"stdin": "1", "stdout": "2"}) == [IoCase("1", "2")]
    assert _as_tests(("assert 1", {"input": "", "output": "x"})) == ["assert 1", IoCase("", "x")]


@pytest.mark.parametrize(
    "actual, expected, same",
    [("1\n2\n", "1\n2", True), ("1  \n2\t\n\n\n", "1\n2\n", True), ("1\r\n", "1\n", True), ("1\n\n2", "1\n2", False),
     (" 1", "1", False), ("", "\n", True), ("12", "1 2", False)],
)  # fmt: skip
def test_same_output(actual, expected, same):
    assert same_output(actual, expected) is same


# --- the forging attacks: each scores 0 ------------------------------------------------------------

# Tests the attacking solutions cannot pass honestly: their f is wrong.
COMPILED = "assert f(3) == 9"
SEPARATE = "def check(candidate):\n    assert candidate(3) == 9\n\ncheck(f)"
TOLERANCE = "assert abs(f(3) - 9) < 0.5"
WRONG = "def f(x):\n    return 0\n"

# Reads every frame's locals and globals (and the main module) for the expected value or the test's
# source, and answers from what it finds: `== 9` in a test's text, or any marker-looking string.
FRAME_SNOOPER = """
import re, sys

def f(x):
    seen = []
    frame = sys._getframe(1)
    while frame is not None:
        seen += list(frame.f_locals.values()) + list(frame.f_globals.values())
        frame = frame.f_back
    seen += list(vars(sys.modules["__main__"]).values())
    for value in seen:
        if isinstance(value, (str, bytes)):
            text = value if isinstance(value, str) else value.decode("latin-1")
            found = re.search(r"\\(" + str(x) + r"\\) == (\\d+)", text)
            if found:
                return int(found.group(1))
    return 0
"""

ALWAYS_EQUAL = """
class Anything:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return True
    def __gt__(self, other): return True
    def __bool__(self): return True
    def __hash__(self): return 0
    def __sub__(self, other): return self
    def __abs__(self): return self
    def __index__(self): return 9
    def __int__(self): return 9
    def __float__(self): return 9.0

def f(x):
    return Anything()
"""

INT_SUBCLASS = """
class Nine(int):
    def __eq__(self, other): return True
    def __lt__(self, other): return True
    __hash__ = int.__hash__
    def __sub__(self, other): return Nine(0)
    def __abs__(self): return Nine(0)

def f(x):
    return Nine(0)
"""

SHADOWED_BUILTINS = """
import builtins
abs = lambda x: 0
builtins.abs = lambda x: 0
builtins.len = lambda x: 9
builtins.isinstance = lambda *args: True
builtins.all = lambda *args: True

def f(x):
    return [0]
"""

# Takes the old harness's marker from its caller's frame and prints it after the test failed: from
# sys.excepthook (then exit 0), from atexit and from a thread.
MARKER_THIEF = """
import atexit, os, sys, threading

def steal():
    frame = sys._getframe(1)
    while frame is not None:
        for value in frame.f_locals.values():
            if isinstance(value, bytes) and len(value) > 8:
                return value
        frame = frame.f_back
    return b"\\nPASSED\\n"

def f(x):
    marker = steal()

    def forge(*args):
        os.write(1, marker)
        os._exit(0)

    sys.excepthook = forge
    atexit.register(forge)
    threading.Thread(target=os.write, args=(1, marker), daemon=True).start()
    print(marker.decode(), flush=True)
    return 0
"""

# Writes forged replies straight onto the server's reply channel (found in serve()'s frame).
def channel_writer(reply: str) -> str:
    return f"""
import os, sys

def f(x):
    frame = sys._getframe(1)
    while "replies" not in frame.f_locals:
        frame = frame.f_back
    os.write(frame.f_locals["replies"], {reply!r}.encode())
    os._exit(0)
"""


STOP_ITERATION = "def f(x):\n    raise StopIteration\n"


@pytest.mark.parametrize(
    "attack",
    [FRAME_SNOOPER, ALWAYS_EQUAL, INT_SUBCLASS, SHADOWED_BUILTINS, MARKER_THIEF, STOP_ITERATION,
     channel_writer('{"raised": ["SystemExit", "0", "SystemExit", ["t", 0]]}\n'),
     channel_writer('{"value": ["l", ' * 50000 + "\n"),
     channel_writer('{"value": 9.0}\n{"value": 9}\n'),
     channel_writer('{"handle": 0}\n'),
     channel_writer('{"value": "' + "x" * 2**21 + '"}\n'),
     "import os\ndef f(x):\n    os.close(3)\n    os.close(4)\n    return 9 if False else 0\n",
     "import os, signal\ndef f(x):\n    os.kill(os.getpid(), signal.SIGKILL)\n"],
    ids=["frame_snooper", "always_equal", "int_subclass", "shadowed_builtins", "marker_thief",
         "stop_iteration", "forged_system_exit", "forged_deep_nesting", "forged_raw_float", "forged_handle",
         "forged_overlong",
         "closed_channel", "killed_itself"],
)  # fmt: skip
def test_forging_attack_scores_zero(attack):
    catch_all = "try:\n    assert f(3) == 9\nexcept AssertionError:\n    raise\nexcept Exception:\n    pass\n"
    catch_all += "assert f(3) == 9"
    tests = [COMPILED, SEPARATE, TOLERANCE, "assert len(f(3)) == 9", "assert isinstance(f(3), int) and f(3) == 9",
             "assert all(map(lambda x: f(x) == 9, [3]))", catch_all]  # fmt: skip
    result = grade(attack, tests)
    assert result.score == 0.0, result


def test_the_attacks_are_real_the_honest_solution_passes_the_same_tests():
    tests = [COMPILED, SEPARATE, TOLERANCE, "assert all(map(lambda x: f(x) == 9, [3]))"]
    assert grade("def f(x):\n    return x * x\n", tests).score == 1.0


def test_solution_never_sees_the_expected_value_or_the_test():
    """The server's whole process, as the solution can read it: no trace of the test's text."""
    spy = """
import sys

def f():
    texts = [repr(frame.f_locals) + repr(frame.f_code.co_consts) for frame in _frames()]
    texts.append(repr(vars(sys.modules["__main__"])))
    texts.append(open("/proc/self/cmdline", "rb").read().decode("latin-1"))
    needles = [str(int("98765") * 10 + 4), "".join(["che", "ck("])]  # not in the solution's own text
    return any(needle in "".join(texts) for needle in needles)

def _frames():
    frame = sys._getframe()
    while frame is not None:
        yield frame
        frame = frame.f_back
"""
    tests = ["assert f() is False, 987654", "def check(c):\n    assert c() is False, 987654\ncheck(f)",
             "assert f() is False and 987654 > 0"]  # fmt: skip
    assert grade(spy, tests).score == 1.0  # it looked everywhere and found neither
    # the control: what a compiled check evaluates does reach the server, and the spy sees it there
    assert grade(spy + "\ndef h(x):\n    return f()\n", ["assert h(987654) is True"]).score == 1.0


# --- the plain-data codec --------------------------------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**200), max_value=2**200) | st.text()
_hashable = st.recursive(
    _scalars | st.floats(allow_nan=False) | st.binary(),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=8,
)
_plain = st.recursive(
    _scalars | st.floats() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner) | st.dictionaries(_hashable, inner, max_size=3)
    | st.sets(_hashable, max_size=3) | st.frozensets(_hashable, max_size=3),
    max_leaves=20,
)


def same(a, b) -> bool:
    """Equal and of the same types all the way down, floats bit for bit (``nan`` included)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return a.hex() == b.hex() or (math.isnan(a) and math.isnan(b))
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@settings(max_examples=300, deadline=None)
@given(_plain)
def test_codec_round_trips_plain_data_exactly(value):
    line = json.dumps(encode(value))
    assert same(decode(parse_line(line)), value)


@pytest.mark.parametrize("value", [0.0, -0.0, float("inf"), float("-inf"), 1e-310, 2**64, -(2**64), 2**63 - 1])
def test_codec_keeps_edge_numbers_exactly(value):
    assert same(decode(parse_line(json.dumps(encode(value)))), value)


class SlyInt(int):
    pass


class SlyStr(str):
    def __eq__(self, other):
        return True

    __hash__ = str.__hash__


@pytest.mark.parametrize(
    "value",
    [SlyInt(1), SlyStr("a"), [SlyInt(1)], {"k": SlyStr("v")}, (1, object()), 1j, bytearray(b"x"), len,
     namedtuple("P", "x")(1), type("L", (list,), {})(), {frozenset({SlyInt(2)}): 1}],
    ids=lambda value: type(value).__name__,
)  # fmt: skip
def test_codec_refuses_what_is_not_plain_data(value):
    with pytest.raises(PlainDataError):
        encode(value)


def test_codec_bounds_depth_and_size_and_sends_stdlib_dicts_as_dicts():
    nested: list = []
    for _ in range(200):
        nested = [nested]
    with pytest.raises(PlainDataError):
        encode(nested)
    loop: list = []
    loop.append(loop)
    with pytest.raises(PlainDataError):
        encode(loop)
    with pytest.raises(PlainDataError):
        encode(list(range(100)), max_items=10)
    assert decode(encode(Counter("aab"))) == {"a": 2, "b": 1} and type(decode(encode(OrderedDict(a=1)))) is dict


@pytest.mark.parametrize(
    "line",
    ['{"a": 1}', "1.5", "NaN", "-Infinity", '["x"]', '["f"]', '["f", 1]', '["f", "zz"]', '["d", 1]',
     '["d", 1, 2, 1, 3]', '["s", ["l"]]', '["d", ["l"], 1]', '["r", 0]', '["b", "zz"]', '["I", "xyz"]', "[]", "[1]",
     "1" * 30, "[" * 100000, '["l", ' * 150 + "1" + "]" * 150, "not json", '"unterminated'],
)  # fmt: skip
def test_decoding_refuses_anything_malformed(line):
    with pytest.raises(PlainDataError):
        decode(parse_line(line))


def test_references_decode_only_where_allowed():
    form = encode([1, "x"], ref=lambda v: None)
    assert decode(["l", ["r", 0], form], deref=["remote"].__getitem__) == ["remote", [1, "x"]]
    assert encode((len,), ref=lambda v: 7) == ["t", ["r", 7]]


# --- the test compiler -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "test, checks",
    [
        ("assert add(1, 2) == 3", [Check("eq", "add(1, 2)", 3)]),
        ("assert 3 == add(1, 2)", [Check("eq", "add(1, 2)", 3)]),
        ("assert f([1, 2]) == (-1, {'a': b'x'}, {1.5})", [Check("eq", "f([1, 2])", (-1, {"a": b"x"}, {1.5}))]),
        ("assert Solution().run(*[1], k=2)[0] == None", [Check("eq", "Solution().run(*[1], k=2)[0]", None)]),
        ("assert is_prime(7)", [Check("truthy", "is_prime(7)")]),
        ("assert not is_prime(8), 'eight'", [Check("falsy", "is_prime(8)")]),
        ("assert f() is True\nassert g(x) - 1 == 2", [Check("is", "f()", True), Check("eq", "g(x) - 1", 2)]),
        ("assert f() is None", [Check("is", "f()", None)]),
    ],
)
def test_compilable_tests(test, checks):
    assert compile_test(test) == tuple(checks)


@pytest.mark.parametrize(
    "test",
    [
        "assert abs(f(2) - 1.41) < 0.01",  # a tolerance, and a builtin the solution could shadow
        "assert len(f()) == 3",  # a builtin
        "assert f(x) == y",  # the expected side is no literal
        "assert f() == 1j",  # a literal that is not plain data
        "assert f() == g() == 1",  # chained
        "assert f() != 1",
        "assert f() is 1",
        "assert f() == 1 and g() == 2",  # logic
        "assert (f() == 1) == True",
        "assert f(not x) == 1",
        "assert f(lambda: 1) == 1",
        "assert [x for x in f()] == [1]",
        "r = f()\nassert r == 1",  # several statements
        "def check(candidate):\n    assert candidate(1) == 1\ncheck(f)",
        "for i in range(3):\n    assert f(i) == i",
        "try:\n    f(-1)\nexcept ValueError:\n    pass",
        "assert f(",  # a syntax error: run separately, where it fails
        "",
    ],
)
def test_tests_that_run_separately(test):
    assert compile_test(test) is None


def test_free_names_split_the_solution_from_the_stdlib():
    test = "import json\nfrom solution import g\ndef check(candidate):\n    assert candidate(trace(2)) == math.e\n"
    test += "class T:\n    x = h\ncheck(f)\nprint(sorted(k))"
    assert free_names(test, "import math\ndef f(x): pass") == (["f", "h", "k"], ["math", "trace"])
    assert free_names(test, "def trace(m): pass") == (["f", "h", "k", "trace"], ["math"])
    assert free_names("x = trace(1)", "") == ([], ["trace"])
    assert free_names("x = trace(1)", "def trace(m): pass") == (["trace"], [])


@pytest.mark.parametrize(
    "name", ["rewards.plain_data", "rewards.code_programs", "rewards.code_harness", "rewards.code"]
)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
