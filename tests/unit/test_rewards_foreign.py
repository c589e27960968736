"""Rewards written for TRL or verl (``rewards.foreign``): recognised by their signature, their fields
mapped onto rlft's, rlft's own forms unchanged; and ``rlft check``'s warning when every reference
answer scores 0 (``rewards.check.reference_warning``). The real isolated pool runs them in
tests/integration/test_rewards_foreign.py."""

from __future__ import annotations

import dataclasses

import asyncio
import doctest
import textwrap

import pytest

import rewards.check as check_module
import rewards.foreign as foreign_module
from rlft.config import RewardFunctionConfig
from rewards.api import REWARDS, RewardError, RewardResult, RewardSpec, batched, get_reward, inspect_reward, reward
from rewards.check import RewardReport, reference_warning
from rewards.foreign import ForeignSpec
from rewards.loading import load_reward
from rewards.pool import Sample

FIELDS = {"answer": "4", "level": "easy", "prompt_id": "qa:1", "num_tokens": 2, "finish_reason": "stop", "max_new_tokens": 6}


def _call(spec: RewardSpec, prompt, completion, fields, params=None):
    """What the pool's child does: ``fn(prompt(s), completion(s), **call_kwargs(fields, params))``."""
    return spec.fn(prompt, completion, **spec.call_kwargs(fields, params or {}))


def _batch(samples: list[dict]) -> dict[str, list]:
    return {k: [s[k] for s in samples] for k in samples[0]}


# ------------------------------------------------------------------------------------------- TRL


def test_trl_form_is_recognised_and_gets_every_field_as_lists_by_keyword():
    seen = {}

    def reward_len(completions, **kwargs):
        seen.update(kwargs, completions=completions)
        return [float(len(c)) for c in completions]

    spec = inspect_reward(reward_len, "len")
    assert isinstance(spec, ForeignSpec) and spec.form == "trl" and spec.batched and not spec.is_async
    fields = _batch([FIELDS, {**FIELDS, "answer": "5", "prompt_id": "qa:2", "num_tokens": 3}])
    assert _call(spec, ["2+2=", "2+3="], ["4", "five"], fields, {"scale": 2}) == [1.0, 4.0]
    assert seen == {
        "prompts": ["2+2=", "2+3="],
        "completions": ["4", "five"],
        "answer": ["4", "5"],
        "level": ["easy", "easy"],
        "prompt_id": ["qa:1", "qa:2"],
        "num_tokens": [2, 3],
        "finish_reason": ["stop", "stop"],
        "max_new_tokens": [6, 6],
        "scale": 2,  # a param: as it is, not a list
    }
    assert spec.fn.__name__ == "reward_len"  # the adapter answers to the user's name


def test_trl_function_without_kwargs_gets_only_what_it_names():
    def accuracy(completions, answer):
        return [float(c == a) for c, a in zip(completions, answer)]

    spec = inspect_reward(accuracy, "acc")
    assert spec.form == "trl" and spec.accepts_fields == {"answer"}
    assert _call(spec, ["p", "p"], ["4", "3"], _batch([FIELDS, FIELDS])) == [1.0, 0.0]


def test_trl_function_naming_a_column_rlft_does_not_carry_says_what_it_supplies():
    def accuracy(completions, solution, **kwargs):
        return [1.0] * len(completions)

    spec = inspect_reward(accuracy, "acc")
    with pytest.raises(TypeError, match=r"TRL-style reward 'acc' needs 'solution', which rlft does not supply; "
                       r"it supplies: answer, completions, .*data\.metadata_fields"):
        _call(spec, ["p"], ["4"], _batch([FIELDS]))
    # listed in data.metadata_fields, the column reaches it under its own name
    assert _call(spec, ["p"], ["4"], _batch([{**FIELDS, "solution": "4"}])) == [1.0]


def test_prompts_completions_without_batched_marker_is_trl_not_per_sample():
    def both(prompts, completions, **kwargs):
        return [float(len(p) + len(c)) for p, c in zip(prompts, completions)]

    spec = inspect_reward(both, "both")
    assert spec.batched and spec.form == "trl"
    assert _call(spec, ["ab", "c"], ["d", "efg"], _batch([FIELDS, FIELDS])) == [3.0, 4.0]


def test_trl_none_counts_zero_and_a_non_list_fails():
    spec = inspect_reward(lambda completions, **kw: [None if c == "" else 1.0 for c in completions], "fmt")
    assert _call(spec, ["p", "p"], ["", "x"], _batch([FIELDS, FIELDS])) == [0.0, 1.0]
    single = inspect_reward(lambda completions, **kw: 1.0, "single")
    with pytest.raises(TypeError, match="a TRL-style reward returns a list with one float per completion, got float"):
        _call(single, ["p"], ["x"], _batch([FIELDS]))


def test_async_trl_reward_is_awaited_inside_its_batched_call():
    async def remote(completions, **kwargs):
        await asyncio.sleep(0)
        return [0.5 for _ in completions]

    spec = inspect_reward(remote, "remote")
    assert spec.batched and not spec.is_async
    assert _call(spec, ["p", "q"], ["a", "b"], _batch([FIELDS, FIELDS])) == [0.5, 0.5]


def test_trl_params_are_checked_against_its_signature():
    def scaled(completions, *, scale=1.0):
        return [scale] * len(completions)

    spec = inspect_reward(scaled, "scaled")
    assert _call(spec, ["p"], ["x"], _batch([FIELDS]), {"scale": 3.0}) == [3.0]
    from rewards.api import check_params

    with pytest.raises(RewardError, match=r"unknown parameter 'scael' for reward 'scaled' \(did you mean 'scale'\?\)"):
        check_params(spec, {"scael": 2.0})
    check_params(inspect_reward(lambda completions, **kw: [], "any"), {"anything": 1})  # **kwargs takes any


# ------------------------------------------------------------------------------------------- verl


def test_verl_form_maps_every_argument():
    seen = {}

    def compute_score(data_source, solution_str, ground_truth, extra_info=None):
        seen.update(data_source=data_source, solution_str=solution_str, ground_truth=ground_truth, extra_info=extra_info)
        return float(solution_str.strip() == ground_truth)

    spec = inspect_reward(compute_score, "verl")
    assert spec.form == "verl" and not spec.batched and not spec.is_async and spec.keywords == frozenset()
    fields = {**FIELDS, "data_source": "openai/gsm8k", "extra_info": {"index": 7, "split": "train"}}
    assert _call(spec, "2+2=", " 4", fields) == 1.0
    assert seen == {
        "data_source": "openai/gsm8k",
        "solution_str": " 4",
        "ground_truth": "4",
        "extra_info": {
            "level": "easy",
            "prompt_id": "qa:1",
            "num_tokens": 2,
            "finish_reason": "stop",
            "max_new_tokens": 6,
            "prompt": "2+2=",
            "index": 7,  # the row's own extra_info column, merged in
            "split": "train",
        },
    }
    _call(spec, "2+2=", "4", FIELDS)  # no data_source column: ""
    assert seen["data_source"] == "" and seen["extra_info"]["prompt"] == "2+2="


def test_verl_params_are_its_reward_kwargs_and_unnamed_arguments_are_left_out():
    def compute_score(solution_str, ground_truth, method="strict", format_score=0.0, score=1.0):  # verl's gsm8k
        return score if solution_str == ground_truth else format_score

    spec = inspect_reward(compute_score, "gsm8k")
    assert spec.form == "verl" and spec.keywords == {"method", "format_score", "score"}
    assert _call(spec, "p", "3", FIELDS, {"format_score": 0.1}) == 0.1
    assert _call(spec, "p", "4", FIELDS, {"score": 2.0}) == 2.0
    spec_kw = inspect_reward(lambda solution_str, ground_truth, **kw: kw["bonus"], "kw")
    assert spec_kw.accepts_fields is None and _call(spec_kw, "p", "4", FIELDS, {"bonus": 0.25}) == 0.25
    needs = inspect_reward(lambda solution_str, ground_truth, tokenizer: 1.0, "needs")
    with pytest.raises(TypeError, match=r"verl-style reward 'needs' needs 'tokenizer', which rlft does not supply; "
                       r"it supplies: data_source, extra_info, ground_truth, solution_str \(set it in the reward's params\)"):
        _call(needs, "p", "4", FIELDS)
    assert _call(needs, "p", "4", FIELDS, {"tokenizer": None}) == 1.0


def test_verl_dict_results_become_reward_results_and_a_dict_without_score_fails():
    spec = inspect_reward(lambda data_source, solution_str, ground_truth, extra_info=None: {"score": 1, "acc": True, "pred": "4"}, "d")
    assert _call(spec, "p", "4", FIELDS) == RewardResult(1, {"acc": True, "pred": "4"})
    bad = inspect_reward(lambda data_source, solution_str, ground_truth, extra_info=None: {"acc": 1.0}, "bad")
    with pytest.raises(ValueError, match="verl-style reward returned a dict without a 'score' key \\(keys: acc\\)"):
        _call(bad, "p", "4", FIELDS)


def test_async_verl_reward_runs_on_the_async_path():
    async def compute_score(data_source, solution_str, ground_truth, extra_info=None):
        await asyncio.sleep(0)
        return {"score": 0.75}

    spec = inspect_reward(compute_score, "averl")
    assert spec.is_async and not spec.batched
    assert asyncio.run(_call(spec, "p", "4", FIELDS)) == RewardResult(0.75, {})


# ------------------------------------------------------------------------------- rlft forms kept


def test_rlft_forms_are_unchanged():
    def per_sample(prompt, completion, *, answer):
        return 1.0

    @batched
    def marked(prompts, completions, **fields):
        return [1.0] * len(prompts)

    for fn, is_batched in ((per_sample, False), (marked, True)):
        spec = inspect_reward(fn, "r")
        assert type(spec) is RewardSpec and spec.fn is fn and spec.batched is is_batched


def test_wrong_signature_lists_every_accepted_form():
    def one_arg(x):
        return 0.0

    with pytest.raises(RewardError) as info:
        inspect_reward(one_arg, "bad")
    message = str(info.value)
    assert message.startswith("reward 'bad' has the wrong signature bad(x): a reward takes (prompt, completion, **fields)")
    for form in (
        "(prompts, completions, **fields) marked @batched",
        "TRL's reward(completions, **kwargs) -> list[float]",
        "verl's compute_score(data_source, solution_str, ground_truth, extra_info=None) -> float | dict",
    ):
        assert form in message

    @batched
    def marked(completions):  # marked batched: rlft's batched form, which this is not
        return []

    with pytest.raises(RewardError, match=r"a reward takes \(prompts, completions, \*\*fields\).*"
                       r"\(without @batched\): \(prompt, completion, \*\*fields\); TRL's"):
        inspect_reward(marked, "bad")


def test_registered_by_name_keeps_its_timeout_and_may_register_again():
    name = "trl_registered_for_test"

    def length_reward(completions, **kwargs):
        return [1.0] * len(completions)

    try:
        reward(name, timeout_s=7)(length_reward)
        reward(name, timeout_s=7)(length_reward)  # a module imported twice
        assert get_reward(name).form == "trl"
        assert load_reward(RewardFunctionConfig(name=name)).timeout_s == 7.0
    finally:
        if name in REWARDS:
            REWARDS.unregister(name)


def test_loaded_by_path_with_params(tmp_path):
    path = tmp_path / "foreign_rewards.py"
    path.write_text(textwrap.dedent(
        """
        def accuracy_reward(completions, answer, **kwargs):
            return [float(c == a) for c, a in zip(completions, answer)]

        def compute_score(data_source, solution_str, ground_truth, extra_info=None, format_score=0.0):
            return 1.0 if solution_str == ground_truth else format_score
        """
    ))
    trl = load_reward(RewardFunctionConfig(path=f"{path}:accuracy_reward"))
    assert trl.spec.form == "trl" and trl.key == "accuracy_reward"
    verl = load_reward(RewardFunctionConfig(path=f"{path}:compute_score", params={"format_score": 0.5}))
    assert verl.spec.form == "verl" and _call(verl.spec, "p", "3", FIELDS, verl.params) == 0.5
    with pytest.raises(RewardError, match=r"unknown parameter 'format_scor' for reward 'compute_score' \(did you mean 'format_score'\?\)"):
        load_reward(RewardFunctionConfig(path=f"{path}:compute_score", params={"format_scor": 0.5}))


@pytest.mark.parametrize("module", [foreign_module, check_module], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


# ------------------------------------------------------------------- rlft check: reference answers


FUNCTIONS = [RewardFunctionConfig(name="exact_match"), RewardFunctionConfig(name="regex_format", weight=0.5)]


def _rows(*answers):
    """What ``check_samples`` sends: the reference answer, then an empty completion, per row."""
    return [Sample("q", c, {"answer": a}) for a in answers for c in (a, "")]


def _reports(exact, fmt):
    return [RewardReport("exact_match", scores=exact), RewardReport("regex_format", scores=fmt)]


def test_reference_warning_when_every_reference_scores_zero():
    # references at 0, 2; the empty completions' scores (1, 3) do not count
    warning = reference_warning(FUNCTIONS, _rows("4", "7"), _reports([0.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]))
    assert warning is not None
    assert warning.startswith("the reference answers score 0 or less on all 2 checked rows")
    assert "data.answer_field" in warning


def test_no_reference_warning_when_one_reference_scores():
    # one row: 0 * 1 + 1 * 0.5 = 0.5 > 0
    assert reference_warning(FUNCTIONS, _rows("4", "7"), _reports([0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0])) is None


def test_reference_warning_weighs_the_rewards():
    # 1 * 1 + (-2) * 0.5 = 0 on both rows: the weighted total is 0
    functions = [RewardFunctionConfig(name="exact_match"), RewardFunctionConfig(name="regex_format", weight=-2.0)]
    assert reference_warning(functions, _rows("4", "7"), _reports([1.0, 0, 1.0, 0], [0.5, 0, 0.5, 0])) is not None
    assert reference_warning(FUNCTIONS, _rows("4", "7"), _reports([1.0, 0, 1.0, 0], [0.5, 0, 0.5, 0])) is None


def test_no_reference_warning_without_answers_or_with_an_uncalled_reward():
    zeros = _reports([0.0] * 4, [0.0] * 4)
    no_answers = [Sample("q", c, {"answer": None}) for c in ("None", "", "None", "")]
    assert reference_warning(FUNCTIONS, no_answers, zeros) is None
    judged = [*zeros, RewardReport("llm_judge", skipped="needs the judge engine")]
    assert reference_warning([*FUNCTIONS, RewardFunctionConfig(name="llm_judge")], _rows("4", "7"), judged) is None


def test_reference_rows_with_a_failed_reward_are_left_out():
    # row 1's reference failed in exact_match: only row 0 counts (0 + 0 = 0) -> "1 checked row"
    reps = _reports([0.0, 0.0, None, 0.0], [0.0, 0.0, 1.0, 0.0])
    assert "on all 1 checked rows" in reference_warning(FUNCTIONS, _rows("4", "7"), reps)
    every_failed = _reports([None, 0.0, None, 0.0], [0.0, 0.0, 0.0, 0.0])
    assert reference_warning(FUNCTIONS, _rows("4", "7"), every_failed) is None


def test_foreign_example_rewards():
    from pathlib import Path

    from rewards.loading import load_rewards
    from rlft.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[2] / "examples" / "custom_reward" / "foreign.yaml")
    fns = {r.key: r for r in load_rewards(cfg)}
    assert {k: r.spec.form for k, r in fns.items()} == {"accuracy_reward": "trl", "format_reward": "trl", "verl_score": "verl"}
    fields = _batch([{**FIELDS, "answer": "42"}] * 3)
    completions = ["42\njunk", "41", ""]
    assert _call(fns["accuracy_reward"].spec, ["q"] * 3, completions, fields) == [1.0, 0.0, 0.0]
    assert _call(fns["format_reward"].spec, ["q"] * 3, completions, fields) == [0.0, 1.0, 0.0]  # "" -> None -> 0
    verl = fns["verl_score"]
    scores = [_call(verl.spec, "q", c, {**FIELDS, "answer": "42"}, verl.params) for c in completions]
    assert scores == [RewardResult(1.0, {"acc": 1.0}), RewardResult(0.1, {"acc": 0.0}), RewardResult(0.0, {"acc": 0.0})]


def test_the_check_sends_a_rows_worked_solution_and_its_task_scores_it():
    """A task whose answer must follow a worked solution (long_addition: ``...;432``) scores the
    bare answer 0: the check sends the row's reference completion when it has one."""
    from launch.train import Prepared, check_samples
    from rlft.config import load_config
    from rlft.data.prompts import prepare_prompts
    from rlft.models.tiny import build_tokenizer
    from rlft.tasks import get_task

    task = get_task("long_addition")
    records = [dataclasses.replace(r, solution=task.reference_completion(r)) for r in task.generate("hard", 2, seed=0)]
    tokenizer = build_tokenizer()
    prompts, _ = prepare_prompts(records, tokenizer)
    prepared = Prepared("m", prompts, [], [], [], None, [], tokenizer, solutions=[r.solution for r in records])
    samples = check_samples(load_config(), prepared)
    assert [s.completion for s in samples] == [records[0].solution, "", records[1].solution, ""]
    functions = [RewardFunctionConfig(name="builtin_task", params={"task": "long_addition"})]
    scores = [task.score(s.completion, s.fields["answer"]) for s in samples]
    assert scores == [1.0, 0.0, 1.0, 0.0]
    assert reference_warning(functions, samples, [RewardReport(functions[0].key, scores=scores)]) is None
    bare = check_samples(load_config(), dataclasses.replace(prepared, solutions=[]))
    assert [s.completion for s in bare] == [records[0].answer, "", records[1].answer, ""]
