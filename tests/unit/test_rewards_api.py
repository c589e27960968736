"""The reward plug-in API (rewards/api.py) and how ``reward.functions`` entries are resolved
(rewards/loading.py, RewardFunctionConfig / RewardConfig in rlft/config/schema.py).

Every test leaves ``rewards.api.REWARDS`` and ``sys.modules`` as it found them (fixtures below).
"""

from __future__ import annotations

import math
import sys
import textwrap
import uuid
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from rewards.api import (
    REWARDS,
    RewardError,
    RewardRegistry,
    RewardResult,
    as_score,
    batched,
    check_params,
    get_reward,
    inspect_reward,
    reward,
    reward_names,
)
from rewards.builtin import exact_match
from rewards.loading import LoadedReward, load_reward, load_rewards, reward_functions
from rlft.config import ConfigError, RewardFunctionConfig, load_config, validate_config

MODULE_PREFIX = "rlft_test_rewards_"


@pytest.fixture(autouse=True)
def restore_rewards():
    """Snapshot the reward registry (with the built-ins loaded) and put it back after the test."""
    reward_names()  # imports rewards.builtin, so the built-ins are part of the snapshot
    before = REWARDS.snapshot()
    yield
    REWARDS.restore(before)


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    """A folder on sys.path for importable test modules; the modules are forgotten afterwards."""
    folder = tmp_path / "mods"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in [n for n in sys.modules if n.startswith(MODULE_PREFIX)]:
        del sys.modules[name]


def _module(folder: Path, source: str) -> str:
    """Write ``source`` as a fresh module in ``folder``; returns its (unique) module name."""
    name = f"{MODULE_PREFIX}{uuid.uuid4().hex[:10]}"
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return name


def _file(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def _unique(prefix: str = "r") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------------------------------
# @reward registration
# ---------------------------------------------------------------------------------------------------


def test_reward_registers_under_the_function_name_by_default():
    def my_test_reward(prompt, completion, *, answer):
        return 1.0

    returned = reward()(my_test_reward)
    assert returned is my_test_reward  # the decorator hands the function back unchanged
    spec = get_reward("my_test_reward")
    assert spec.name == "my_test_reward" and spec.fn is my_test_reward
    assert "my_test_reward" in reward_names()


def test_reward_registers_under_an_explicit_name():
    name = _unique()

    @reward(name)
    def scorer(prompt, completion):
        return 0.5

    assert get_reward(name).fn is scorer
    assert "scorer" not in REWARDS


def test_registering_another_function_under_a_taken_name_fails():
    name = _unique()

    @reward(name)
    def first(prompt, completion):
        return 1.0

    def second(prompt, completion):
        return 0.0

    with pytest.raises(RewardError, match=f"reward '{name}' is already registered .*first.*; pick another name"):
        reward(name)(second)
    assert get_reward(name).fn is first


def test_a_builtin_name_cannot_be_taken():
    def exact_match(prompt, completion):  # noqa: F811  same name, another function
        return 0.0

    with pytest.raises(RewardError, match="already registered"):
        reward()(exact_match)
    assert get_reward("exact_match").fn.__module__ == "rewards.builtin"


def test_registering_the_same_function_again_is_allowed():
    name = _unique()

    def scorer(prompt, completion):
        return 1.0

    reward(name)(scorer)
    reward(name)(scorer)  # a module imported twice registers again
    assert get_reward(name).fn is scorer


def test_reward_with_a_bad_signature_is_not_registered():
    name = _unique()

    def one_arg(completion):
        return 1.0

    with pytest.raises(RewardError, match="wrong signature"):
        reward(name)(one_arg)
    assert name not in REWARDS


def test_reward_batched_and_timeout_options():
    name = _unique()

    @reward(name, batched=True, timeout_s=30)
    def many(prompts, completions, **fields):
        return [1.0] * len(prompts)

    spec = get_reward(name)
    assert spec.batched and spec.accepts_fields is None
    assert many.__rlft_timeout_s__ == 30.0


def test_bare_reward_decorator_registers_or_fails_loudly():
    def bare_scorer(prompt, completion):
        return 1.0

    try:
        result = reward(bare_scorer)  # what `@reward` without parentheses does
    except (TypeError, RewardError):
        return  # refusing it loudly is fine
    assert result is bare_scorer and get_reward("bare_scorer").fn is bare_scorer


def test_batched_marker():
    def plain(prompts, completions):
        return [0.0] * len(prompts)

    assert batched(plain) is plain
    assert plain.__rlft_batched__ is True
    assert inspect_reward(plain, "plain").batched


def test_get_reward_unknown_name_hints_and_lists():
    with pytest.raises(RewardError, match="unknown reward 'exact_mach' \\(did you mean 'exact_match'\\?\\)") as info:
        get_reward("exact_mach")
    assert "registered rewards: " in str(info.value)
    assert "numeric_match" in str(info.value) and "length_penalty" in str(info.value)
    with pytest.raises(RewardError, match="unknown reward 'zzzzzz'; registered rewards"):
        get_reward("zzzzzz")  # nothing close: no hint


def test_reward_names_are_sorted():
    names = reward_names()
    assert names == sorted(names)


def test_package_exports():
    import rewards

    assert rewards.reward is reward and rewards.REWARDS is REWARDS and rewards.RewardError is RewardError
    assert issubclass(RewardError, ValueError)


def test_rewards_are_a_registry_like_every_plug_in_point():
    from rlft.algorithms.registry import Registry, RegistryError

    assert isinstance(REWARDS, Registry) and isinstance(REWARDS, RewardRegistry)
    assert "exact_match" in REWARDS and list(REWARDS) == REWARDS.names() == reward_names()
    assert REWARDS["exact_match"] is REWARDS.get("exact_match") is get_reward("exact_match")
    assert REWARDS.params("exact_match").keys() == {"answer", "answer_pattern", "normalize"}
    assert REWARDS.validate_params("exact_match", {"normalize": "no"}) == {"normalize": "no"}  # not coerced
    with pytest.raises(RegistryError, match="unknown reward 'exact_mach'"):
        REWARDS.get("exact_mach")
    with pytest.raises(RewardError, match="unknown parameter 'normalise'"):
        REWARDS.validate_params("exact_match", {"normalise": True})


def test_registry_register_meta_unregister_and_restore():
    name = _unique()
    before = REWARDS.snapshot()

    @REWARDS.register(name, batched=True, timeout_s=3, source="test")
    def many(prompts, completions, *, judge, rubric="r", **fields):
        return [0.0] * len(prompts)

    spec = REWARDS.get(name)
    assert spec.batched and spec.needs_judge and many.__rlft_timeout_s__ == 3.0
    assert REWARDS.meta(name) == {"source": "test"}
    assert REWARDS.params(name).keys() == {"rubric"}  # judge is served by the run, not a param
    assert REWARDS.validate_params(name, {"anything": 1}) == {"anything": 1}  # **fields takes any
    assert REWARDS.unregister(name) is spec and name not in REWARDS
    with pytest.raises(RewardError, match=f"unknown reward '{name}'"):
        REWARDS.unregister(name)

    def again(prompt, completion):
        return 0.0

    reward(name)(again)
    REWARDS.restore(before)  # what this module's fixture does after every test
    assert name not in REWARDS and REWARDS.names() == reward_names()


def test_foreign_params_are_read_from_the_users_signature():
    name = _unique()

    @reward(name)
    def accuracy(completions, solution, *, scale: float = 1.0, **kwargs):
        return [scale] * len(completions)

    assert get_reward(name).form == "trl"
    assert REWARDS.params(name).keys() == {"solution", "scale"}


@pytest.mark.parametrize("module", ["rewards.registry", "rewards.api", "rewards.loading"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


# ---------------------------------------------------------------------------------------------------
# inspect_reward
# ---------------------------------------------------------------------------------------------------


def test_inspect_reward_keywords_and_fields():
    def fn(prompt, completion, extra=1, *, answer, scale=2.0):
        return 0.0

    spec = inspect_reward(fn, "k")
    assert spec.name == "k" and spec.fn is fn
    assert spec.keywords == {"extra", "answer", "scale"}  # a third positional with a default counts as keyword
    assert spec.accepts_fields == {"extra", "answer", "scale"}
    assert not spec.batched and not spec.is_async and not spec.needs_judge


def test_inspect_reward_var_keywords_take_every_field():
    def fn(prompt, completion, *, scale=1.0, **fields):
        return 0.0

    spec = inspect_reward(fn, "k")
    assert spec.accepts_fields is None
    assert spec.keywords == {"scale"}


def test_inspect_reward_judge_keyword():
    def fn(prompt, completion, *, judge, answer):
        return 0.0

    spec = inspect_reward(fn, "k")
    assert spec.needs_judge
    assert spec.keywords == {"judge", "answer"}
    assert spec.accepts_fields == {"answer"}  # the judge is not a dataset field

    def fn_all(prompt, completion, judge=None, **fields):
        return 0.0

    spec = inspect_reward(fn_all, "k2")
    assert spec.needs_judge and spec.accepts_fields is None


def test_inspect_reward_async():
    async def fn(prompt, completion):
        return 1.0

    assert inspect_reward(fn, "k").is_async


def test_inspect_reward_callable_object_and_optional_second_positional():
    class Scorer:
        def __call__(self, prompt, completion, *, answer):
            return 1.0

    spec = inspect_reward(Scorer(), "obj")
    assert spec.keywords == {"answer"}
    assert inspect_reward(lambda p, c=None: 0.0, "lam").keywords == frozenset()


@pytest.mark.parametrize(
    "fn",
    [
        lambda completion: 0.0,  # one positional parameter
        lambda: 0.0,
        lambda *, prompt, completion: 0.0,  # keyword-only
        lambda *args: 0.0,
        lambda prompt, completion, answer: 0.0,  # three required positionals
    ],
)
def test_inspect_reward_wrong_signature(fn):
    with pytest.raises(RewardError, match=r"reward 'bad' has the wrong signature bad\(.*\): a reward takes \(prompt, completion, \*\*fields\)"):
        inspect_reward(fn, "bad")


def test_inspect_reward_wrong_signature_batched_wording():
    @batched
    def fn(prompts):
        return []

    with pytest.raises(RewardError, match=r"a reward takes \(prompts, completions, \*\*fields\)"):
        inspect_reward(fn, "bad")


def test_inspect_reward_not_callable():
    with pytest.raises(RewardError, match=r"reward 'x' is not a function \(got int\)"):
        inspect_reward(3, "x")


# ---------------------------------------------------------------------------------------------------
# RewardSpec.call_kwargs and check_params
# ---------------------------------------------------------------------------------------------------


RUNTIME = {"prompt_id": "p7", "num_tokens": 12, "finish_reason": "stop", "max_new_tokens": 64}


def test_call_kwargs_only_the_named_fields_then_params():
    def fn(prompt, completion, *, answer, num_tokens, scale=1.0):
        return 0.0

    spec = inspect_reward(fn, "k")
    fields = {"answer": "4", "category": "easy", **RUNTIME}
    assert spec.call_kwargs(fields, {}) == {"answer": "4", "num_tokens": 12}
    assert spec.call_kwargs(fields, {"scale": 3.0}) == {"answer": "4", "num_tokens": 12, "scale": 3.0}
    # a param wins over the field of the same name
    assert spec.call_kwargs(fields, {"answer": "override"}) == {"answer": "override", "num_tokens": 12}
    assert fields["answer"] == "4"  # the caller's dict is not modified


def test_call_kwargs_var_keywords_get_everything():
    def fn(prompt, completion, **fields):
        return 0.0

    spec = inspect_reward(fn, "k")
    fields = {"answer": "4", **RUNTIME}
    assert spec.call_kwargs(fields, {"answer": "5", "x": 1}) == {**RUNTIME, "answer": "5", "x": 1}


def test_call_kwargs_of_a_builtin():
    spec = get_reward("exact_match")
    kwargs = spec.call_kwargs({"answer": "Paris", "difficulty": 3, **RUNTIME}, {"normalize": False})
    assert kwargs == {"answer": "Paris", "normalize": False}
    assert spec.fn("", "Paris", **kwargs) == 1.0


def test_check_params_accepts_known_params():
    check_params(get_reward("exact_match"), {"normalize": False, "answer_pattern": "x"})
    check_params(get_reward("exact_match"), {})


def test_check_params_unknown_with_hint():
    with pytest.raises(RewardError) as info:
        check_params(get_reward("exact_match"), {"normalise": True})
    assert str(info.value) == (
        "unknown parameter 'normalise' for reward 'exact_match' (did you mean 'normalize'?); "
        "valid parameters: answer, answer_pattern, normalize"
    )


def test_check_params_unknown_without_hint_and_no_valid_params():
    def fn(prompt, completion):
        return 0.0

    with pytest.raises(RewardError, match=r"unknown parameter 'zzz' for reward 'k'; valid parameters: none"):
        check_params(inspect_reward(fn, "k"), {"zzz": 1})


def test_check_params_judge_and_positionals_are_not_params():
    def fn(prompt, completion, *, judge, rubric="x"):
        return 0.0

    spec = inspect_reward(fn, "k")
    with pytest.raises(RewardError, match=r"unknown parameter 'judge'.*valid parameters: rubric"):
        check_params(spec, {"judge": "me"})
    with pytest.raises(RewardError, match="unknown parameter 'prompt'"):
        check_params(spec, {"prompt": "p"})


def test_check_params_anything_goes_with_var_keywords():
    def fn(prompt, completion, **fields):
        return 0.0

    check_params(inspect_reward(fn, "k"), {"whatever": 1, "judge": 2})


# ---------------------------------------------------------------------------------------------------
# as_score
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, (1.0, {})),
        (0, (0.0, {})),
        (True, (1.0, {})),
        (False, (0.0, {})),
        (-2.5, (-2.5, {})),
        (np.float64(0.25), (0.25, {})),
        (np.float32(0.5), (0.5, {})),
        (np.int64(3), (3.0, {})),
        (Fraction(1, 4), (0.25, {})),
        (RewardResult(0.5, {"n": 2, "tag": "x"}), (0.5, {"n": 2, "tag": "x"})),
        (RewardResult(1), (1.0, {})),
        (RewardResult(np.float64(0.75)), (0.75, {})),
    ],
)
def test_as_score_accepts_real_numbers_and_results(value, expected):
    score, info = as_score(value)
    assert (score, info) == expected
    assert type(score) is float


def test_as_score_copies_the_info():
    result = RewardResult(1.0, {"n": 1})
    _, info = as_score(result)
    info["n"] = 99
    assert result.info == {"n": 1}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float64("nan"), RewardResult(math.inf)])
def test_as_score_rejects_non_finite(value):
    with pytest.raises(ValueError, match="non-finite score"):
        as_score(value)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ("1.0", "str"),
        (None, "NoneType"),
        ([1.0], "list"),
        ({"score": 1.0}, "dict"),
        (1 + 2j, "complex"),
        (np.array([1.0]), "ndarray"),
        (RewardResult("1.0"), "str"),
        (RewardResult(None), "NoneType"),
    ],
)
def test_as_score_rejects_other_types(value, type_name):
    with pytest.raises(TypeError, match=f"reward returned {type_name} .*expected a float or RewardResult"):
        as_score(value)


def test_as_score_shortens_long_values_in_the_message():
    with pytest.raises(TypeError) as info:
        as_score("x" * 500)
    assert len(str(info.value)) < 150 and "..." in str(info.value)


def test_as_score_accepts_numpy_bool():
    assert as_score(np.bool_(True)) == (1.0, {})


def test_as_score_huge_int_raises_value_error():
    with pytest.raises((TypeError, ValueError)):
        as_score(10**400)


# ---------------------------------------------------------------------------------------------------
# load_reward: by name
# ---------------------------------------------------------------------------------------------------


def test_load_reward_by_name():
    fc = RewardFunctionConfig(name="exact_match", weight=2.0, params={"normalize": False})
    loaded = load_reward(fc)
    assert isinstance(loaded, LoadedReward)
    assert loaded.key == "exact_match" and loaded.spec.fn is exact_match
    assert loaded.weight == 2.0 and loaded.params == {"normalize": False} and loaded.timeout_s == 5.0


def test_load_reward_by_name_with_label():
    loaded = load_reward(RewardFunctionConfig(name="exact_match", label="strict"))
    assert loaded.key == "strict" and loaded.spec.name == "exact_match"


def test_load_reward_unknown_name_and_bad_params():
    with pytest.raises(RewardError, match="unknown reward 'numeric_mtach' \\(did you mean 'numeric_match'\\?\\)"):
        load_reward(RewardFunctionConfig(name="numeric_mtach"))
    with pytest.raises(RewardError, match="did you mean 'rel_tol'"):
        load_reward(RewardFunctionConfig(name="numeric_match", params={"rel_tl": 1e-3}))


def test_load_reward_finds_a_reward_registered_by_the_user():
    name = _unique()

    @reward(name)
    def mine(prompt, completion, *, bonus=0.0):
        return 1.0 + bonus

    loaded = load_reward(RewardFunctionConfig(name=name, params={"bonus": 1.0}))
    assert loaded.spec.fn is mine and loaded.key == name


# ---------------------------------------------------------------------------------------------------
# load_reward: by import path and by file path
# ---------------------------------------------------------------------------------------------------


SCORE_SOURCE = """
    def score(prompt, completion, *, answer, bonus=0.0):
        return float(completion == answer) + bonus

    def helper_one(x):
        return x

    def _private():
        pass

    CONSTANT = 3
"""


def test_load_reward_by_module_path(module_dir):
    mod = _module(module_dir, SCORE_SOURCE)
    loaded = load_reward(RewardFunctionConfig(path=f"{mod}:score", params={"bonus": 0.5}))
    assert loaded.key == "score" and loaded.spec.name == "score"
    assert loaded.spec.keywords == {"answer", "bonus"}
    assert loaded.spec.fn("p", "4", **loaded.spec.call_kwargs({"answer": "4", **RUNTIME}, loaded.params)) == 1.5
    assert sys.modules[mod].score is loaded.spec.fn


def test_load_reward_by_absolute_file_path(tmp_path):
    path = _file(tmp_path, "my_rewards.py", SCORE_SOURCE)
    loaded = load_reward(RewardFunctionConfig(path=f"{path}:score", label="mine"))
    assert loaded.key == "mine" and loaded.spec.fn("p", "x", answer="x") == 1.0


def test_load_reward_by_relative_file_path_and_base_dir(tmp_path, monkeypatch):
    _file(tmp_path, "sub/my_rewards.py", SCORE_SOURCE)
    monkeypatch.chdir(tmp_path)
    fc = RewardFunctionConfig(path="sub/my_rewards.py:score")  # no config file: the working directory
    assert fc.path == f"{(tmp_path / 'sub' / 'my_rewards.py').resolve()}:score"
    assert load_reward(fc).spec.fn("p", "x", answer="x") == 1.0


def test_module_path_is_left_as_is():
    assert RewardFunctionConfig(path="my_pkg.rewards:score").path == "my_pkg.rewards:score"
    assert RewardFunctionConfig(path="my_pkg.rewards:score").key == "score"


def test_relative_file_path_resolves_against_the_config_files_directory(tmp_path, monkeypatch):
    project = tmp_path / "project"
    _file(project, "my_rewards.py", SCORE_SOURCE)
    config = _file(
        project,
        "run.yaml",
        """
        data: {train_path: data/train.jsonl}
        reward:
          functions:
            - {path: ./my_rewards.py:score, params: {bonus: 0.25}}
        """,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory must not matter
    cfg = load_config(config)
    (fc,) = cfg.reward.functions
    expected = (project / "my_rewards.py").resolve()
    assert Path(fc.path.rsplit(":", 1)[0]).is_absolute()
    assert fc.path == f"{expected}:score"
    (loaded,) = load_rewards(cfg)
    assert loaded.key == "score" and loaded.params == {"bonus": 0.25}
    assert loaded.spec.fn("p", "x", answer="x", bonus=0.25) == 1.25


def test_load_reward_batched_by_path(tmp_path):
    path = _file(
        tmp_path,
        "batch_rewards.py",
        """
        from rewards import batched

        @batched
        def lengths(prompts, completions, **fields):
            return [float(len(c)) for c in completions]
        """,
    )
    loaded = load_reward(RewardFunctionConfig(path=f"{path}:lengths"))
    assert loaded.spec.batched and loaded.spec.accepts_fields is None


def test_load_reward_path_to_a_registered_function_registers_it(tmp_path):
    name = _unique("via_file")
    path = _file(
        tmp_path,
        "registering.py",
        f"""
        from rewards import reward

        @reward("{name}", timeout_s=12)
        def scorer(prompt, completion):
            return 1.0
        """,
    )
    loaded = load_reward(RewardFunctionConfig(path=f"{path}:scorer"))
    assert get_reward(name).fn is loaded.spec.fn
    assert loaded.timeout_s == 12.0


# ---------------------------------------------------------------------------------------------------
# load_reward: bad references
# ---------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.py"
    with pytest.raises(RewardError, match=r"nope\.py' not found") as info:
        load_reward(RewardFunctionConfig(path=f"{missing}:score"))
    assert f"'{missing}:score'" in str(info.value)  # the message names the reference as configured


def test_missing_module():
    mod = f"{MODULE_PREFIX}missing_{uuid.uuid4().hex[:6]}"
    with pytest.raises(RewardError, match=f"reward path '{mod}:score': plugin module '{mod}' not found"):
        load_reward(RewardFunctionConfig(path=f"{mod}:score"))


def test_missing_function_lists_the_modules_functions(module_dir, tmp_path):
    mod = _module(module_dir, SCORE_SOURCE)
    with pytest.raises(RewardError) as info:
        load_reward(RewardFunctionConfig(path=f"{mod}:scroe"))
    assert str(info.value) == (
        f"reward path '{mod}:scroe': {mod} has no function 'scroe' (functions defined there: helper_one, score)"
    )
    empty = _file(tmp_path, "empty.py", "X = 1\n")
    with pytest.raises(RewardError, match=r"has no function 'score' \(functions defined there: none\)"):
        load_reward(RewardFunctionConfig(path=f"{empty}:score"))


def test_not_callable(module_dir):
    mod = _module(module_dir, SCORE_SOURCE)
    with pytest.raises(RewardError, match=r"reward 'CONSTANT' is not a function \(got int\)"):
        load_reward(RewardFunctionConfig(path=f"{mod}:CONSTANT"))


def test_wrong_signature_by_path(module_dir):
    mod = _module(module_dir, SCORE_SOURCE)
    with pytest.raises(RewardError, match=r"reward 'helper_one' has the wrong signature helper_one\(x\)"):
        load_reward(RewardFunctionConfig(path=f"{mod}:helper_one"))


def test_unknown_param_by_path(module_dir):
    mod = _module(module_dir, SCORE_SOURCE)
    with pytest.raises(RewardError, match=r"unknown parameter 'bonsu' for reward 'score' \(did you mean 'bonus'\?\)"):
        load_reward(RewardFunctionConfig(path=f"{mod}:score", params={"bonsu": 1}))


def test_module_that_raises_on_import(module_dir, tmp_path):
    source = """
        def score(prompt, completion):
            return 1.0

        1 / 0
    """
    mod = _module(module_dir, source)
    with pytest.raises(RewardError, match=f"reward path '{mod}:score': importing {mod} failed: ZeroDivisionError: division by zero"):
        load_reward(RewardFunctionConfig(path=f"{mod}:score"))
    path = _file(tmp_path, "broken.py", source)
    with pytest.raises(RewardError, match=r"importing .*broken\.py failed: ZeroDivisionError: division by zero"):
        load_reward(RewardFunctionConfig(path=f"{path}:score"))
    syntax = _file(tmp_path, "syntax.py", "def score(prompt, completion)\n    return 1\n")
    with pytest.raises(RewardError, match=r"importing .*syntax\.py failed: SyntaxError"):
        load_reward(RewardFunctionConfig(path=f"{syntax}:score"))


def test_file_with_a_missing_dependency(tmp_path):
    path = _file(tmp_path, "needs_dep.py", "import rlft_no_such_dependency_xyz\n")
    with pytest.raises(RewardError, match=r"importing .*needs_dep\.py failed: ModuleNotFoundError: .*rlft_no_such_dependency_xyz"):
        load_reward(RewardFunctionConfig(path=f"{path}:score"))


def test_module_with_a_missing_dependency_is_not_reported_missing(module_dir):
    mod = _module(module_dir, "import rlft_no_such_dependency_xyz\n")
    with pytest.raises(RewardError) as info:
        load_reward(RewardFunctionConfig(path=f"{mod}:score"))
    assert "rlft_no_such_dependency_xyz" in str(info.value)
    assert f"plugin module '{mod}' not found" not in str(info.value)


@pytest.mark.parametrize("bad", [":score", "module:"])
def test_path_with_an_empty_side(bad):
    # the config accepts these (they contain ':'); the loader refuses them
    with pytest.raises(RewardError, match="must be 'module:function' or 'file.py:function'"):
        load_reward(RewardFunctionConfig(path=bad, label="x"))


# ---------------------------------------------------------------------------------------------------
# timeout_s precedence
# ---------------------------------------------------------------------------------------------------


def test_timeout_precedence(tmp_path):
    path = _file(
        tmp_path,
        "timed.py",
        """
        from rewards.api import reward

        @reward(timeout_s=30)
        def slow_judge_like(prompt, completion):
            return 1.0

        def plain(prompt, completion):
            return 1.0
        """,
    )
    # config > decorator > default
    assert load_reward(RewardFunctionConfig(path=f"{path}:slow_judge_like", timeout_s=7)).timeout_s == 7.0
    assert load_reward(RewardFunctionConfig(path=f"{path}:slow_judge_like")).timeout_s == 30.0
    assert load_reward(RewardFunctionConfig(path=f"{path}:slow_judge_like"), default_timeout_s=2.5).timeout_s == 30.0
    assert load_reward(RewardFunctionConfig(path=f"{path}:plain")).timeout_s == 5.0
    assert load_reward(RewardFunctionConfig(path=f"{path}:plain"), default_timeout_s=2.5).timeout_s == 2.5
    assert load_reward(RewardFunctionConfig(path=f"{path}:plain", timeout_s=9), default_timeout_s=2.5).timeout_s == 9.0
    # by registered name, the same order
    assert load_reward(RewardFunctionConfig(name="slow_judge_like")).timeout_s == 30.0
    assert load_reward(RewardFunctionConfig(name="slow_judge_like", timeout_s=1.5)).timeout_s == 1.5


def test_load_rewards_uses_reward_timeout_as_the_default():
    cfg = validate_config(
        {"reward": {"timeout_s": 11, "functions": [{"name": "exact_match"}, {"name": "numeric_match", "timeout_s": 3}]}}
    )
    assert [r.timeout_s for r in load_rewards(cfg)] == [11.0, 3.0]


# ---------------------------------------------------------------------------------------------------
# reward_functions / load_rewards
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("train_path", ["builtin:arithmetic", "builtin:arithmetic:train"])
def test_reward_functions_of_a_builtin_task(train_path):
    cfg = validate_config({"data": {"train_path": train_path}})
    (fc,) = reward_functions(cfg)
    assert fc.name == "builtin_task" and fc.label == "arithmetic" and fc.params == {"task": "arithmetic"}
    assert fc.key == "arithmetic"
    (loaded,) = load_rewards(cfg)
    assert loaded.key == "arithmetic" and loaded.spec.name == "builtin_task" and loaded.weight == 1.0
    kwargs = loaded.spec.call_kwargs({"answer": "46", **RUNTIME}, loaded.params)
    assert loaded.spec.fn("12+34=", "46", **kwargs) == 1.0


def test_reward_functions_configured_win_over_the_builtin_task():
    cfg = validate_config({"reward": {"functions": [{"name": "exact_match", "weight": 0.5}]}})
    (fc,) = reward_functions(cfg)
    assert fc.name == "exact_match" and fc.weight == 0.5


def test_reward_functions_user_data_needs_functions():
    cfg = validate_config({"data": {"train_path": "data/train.jsonl"}})
    with pytest.raises(RewardError, match=r"data.train_path 'data/train.jsonl' is not a built-in task.*reward.functions"):
        reward_functions(cfg)
    with pytest.raises(RewardError, match="is not a built-in task"):
        load_rewards(cfg)


def test_load_rewards_judge_reward_needs_a_judge():
    name = _unique("judged")

    @reward(name)
    def judged(prompt, completion, *, judge):
        return 1.0

    functions = [{"name": "exact_match"}, {"name": name}]
    cfg = validate_config({"reward": {"functions": functions}})
    with pytest.raises(RewardError, match=f"reward {name} needs a judge model: set reward.judge.model"):
        load_rewards(cfg)
    cfg = validate_config({"reward": {"functions": functions, "judge": {"model": "builtin:tiny"}}})
    loaded = load_rewards(cfg)
    assert [r.key for r in loaded] == ["exact_match", name]
    assert [r.spec.needs_judge for r in loaded] == [False, True]


def test_load_rewards_imports_plugins_first(tmp_path):
    name = _unique("from_plugin")
    _file(
        tmp_path,
        "plugin_rewards.py",
        f"""
        from rewards import reward

        @reward("{name}")
        def scorer(prompt, completion):
            return 1.0
        """,
    )
    config = _file(
        tmp_path,
        "run.yaml",
        f"""
        plugins: [./plugin_rewards.py]
        reward:
          functions: [{{name: {name}}}]
        """,
    )
    (loaded,) = load_rewards(load_config(config), base_dir=tmp_path)
    assert loaded.key == name


# ---------------------------------------------------------------------------------------------------
# Config validation of reward.functions
# ---------------------------------------------------------------------------------------------------


def test_duplicate_reward_keys_ask_for_a_label():
    with pytest.raises(ConfigError, match=r"reward names must be unique, exact_match repeats: give each a 'label'"):
        validate_config({"reward": {"functions": [{"name": "exact_match"}, {"name": "exact_match"}]}})
    # two files' functions of the same name collide too
    with pytest.raises(ConfigError, match="score repeats"):
        validate_config({"reward": {"functions": [{"path": "a.rewards:score"}, {"path": "b.rewards:score"}]}})
    cfg = validate_config(
        {"reward": {"functions": [{"name": "exact_match"}, {"name": "exact_match", "label": "strict"}]}}
    )
    assert [f.key for f in cfg.reward.functions] == ["exact_match", "strict"]


def test_reward_path_without_a_function_is_a_config_error():
    with pytest.raises(ConfigError, match=r"reward path './my_rewards.py' must name the function"):
        validate_config({"reward": {"functions": [{"path": "./my_rewards.py"}]}})


@pytest.mark.parametrize("entry", [{}, {"name": "exact_match", "path": "m:score"}])
def test_reward_function_needs_exactly_one_source(entry):
    with pytest.raises(ConfigError, match="give exactly one of 'name' or 'path'"):
        validate_config({"reward": {"functions": [entry]}})


def test_reward_function_unknown_key_is_a_config_error():
    with pytest.raises(ConfigError, match=r"reward.functions.0.wieght: unknown key \(did you mean 'weight'\?\)"):
        validate_config({"reward": {"functions": [{"name": "exact_match", "wieght": 2}]}})


def test_reward_function_timeout_must_be_positive():
    with pytest.raises(ConfigError, match="reward.functions.0.timeout_s"):
        validate_config({"reward": {"functions": [{"name": "exact_match", "timeout_s": 0}]}})


def test_a_reward_file_named_like_an_rlft_package_is_refused(tmp_path):
    (tmp_path / "rewards.py").write_text("def score(prompt, completion):\n    return 1.0\n")
    with pytest.raises(RewardError, match="named like rlft's package 'rewards'.*rename it"):
        load_reward(RewardFunctionConfig(path=f"{tmp_path / 'rewards.py'}:score"))
