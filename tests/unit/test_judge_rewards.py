"""Unit tests for the model-based rewards (rewards/judge.py) with a fake judge (no Ray, no vLLM).

The fake returns canned replies and records every call, so the tests check both what the judge was
asked (formatted prompts, constraints) and how its replies become scores. Golden values are worked
out by hand next to each number.
"""

from __future__ import annotations

import doctest
import math
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest

import rewards.judge as J
from rewards.api import RUNTIME_FIELDS, RewardError, RewardResult, as_score, get_reward
from rewards.judge import llm_judge, rubric


class FakeJudge:
    """Replies with ``reply(prompt)`` (or a fixed list) and records each call."""

    def __init__(self, reply: Callable[[str], str] | list[str]):
        self.reply = reply
        self.calls: list[dict] = []

    def generate(self, prompts, *, max_new_tokens=None, choices=None, regex=None):
        self.calls.append({"prompts": list(prompts), "choices": choices, "regex": regex})
        if callable(self.reply):
            return [self.reply(p) for p in prompts]
        return list(self.reply)


def runtime_fields(n: int) -> dict[str, list]:
    """What the runtime adds to every batched call (one entry per sample)."""
    return {
        "prompt_id": [f"p{i}" for i in range(n)],
        "num_tokens": [10 + i for i in range(n)],
        "finish_reason": ["stop"] * n,
        "max_new_tokens": [64] * n,
    }


def scores(results) -> list[float]:
    return [r.score if isinstance(r, RewardResult) else r for r in results]


# ---------------------------------------------------------------------------------------------------
# Registration and purity
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["llm_judge", "rubric"])
def test_registered_as_batched_rewards_that_need_the_judge(name):
    spec = get_reward(name)
    assert spec.batched and spec.needs_judge
    assert spec.accepts_fields is None  # **fields: every dataset and runtime field


def test_docstring_examples():
    result = doctest.testmod(J, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_imports_without_ray_and_vllm():
    script = textwrap.dedent(
        """
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("ray", "vllm"):
                    raise ImportError(f"{name} is blocked")

        sys.meta_path.insert(0, Block())
        import rewards.judge
        assert not any(k.split(".")[0] in ("ray", "vllm") for k in sys.modules)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# ---------------------------------------------------------------------------------------------------
# Pointwise
# ---------------------------------------------------------------------------------------------------


def test_pointwise_scores_are_normalised_judge_scores():
    judge = FakeJudge(["7", "10", "0", "3"])
    out = llm_judge(["q"] * 4, ["a", "b", "c", "d"], judge=judge, **runtime_fields(4))
    # (s - 0) / (10 - 0): 7 -> 0.7, 10 -> 1.0, 0 -> 0.0, 3 -> 0.3
    assert scores(out) == pytest.approx([0.7, 1.0, 0.0, 0.3])
    assert [r.info for r in out] == [{"judge_score": s} for s in (7.0, 10.0, 0.0, 3.0)]
    assert len(judge.calls) == 1  # one call for the whole batch
    assert judge.calls[0]["choices"] == ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]
    assert judge.calls[0]["regex"] is None


def test_pointwise_default_template_shows_the_prompt_completion_and_range():
    judge = FakeJudge(["5"])
    llm_judge(["What is 2+2?"], ["It is 4."], judge=judge)
    asked = judge.calls[0]["prompts"][0]
    assert "Question:\nWhat is 2+2?\n" in asked
    assert "Response:\nIt is 4.\n" in asked
    assert asked.endswith("Score (0 to 10):")


def test_pointwise_custom_template_takes_each_samples_own_fields():
    judge = FakeJudge(["1", "2"])
    template = "Q:{prompt} A:{completion} ref:{reference} len:{num_tokens} [{min_score},{max_score}]"
    llm_judge(
        ["q0", "q1"],
        ["a0", "a1"],
        judge=judge,
        template=template,
        min_score=1,
        max_score=5,
        reference=["r0", "r1"],
        **runtime_fields(2),
    )
    assert judge.calls[0]["prompts"] == ["Q:q0 A:a0 ref:r0 len:10 [1,5]", "Q:q1 A:a1 ref:r1 len:11 [1,5]"]
    assert judge.calls[0]["choices"] == ["1", "2", "3", "4", "5"]


def test_pointwise_custom_range_and_clamping():
    judge = FakeJudge(["4", "Score: 9 (great)", "0", "3.5 out of 5"])
    out = llm_judge(["q"] * 4, ["a"] * 4, judge=judge, min_score=1, max_score=5)
    # (4-1)/4 = 0.75; 9 clamps to 5 -> 1.0; 0 clamps to 1 -> 0.0; (3.5-1)/4 = 0.625
    assert scores(out) == pytest.approx([0.75, 1.0, 0.0, 0.625])
    assert out[1].info == {"judge_score": 9.0}  # the raw score is kept


def test_an_unparseable_verdict_fails_only_its_sample():
    out = llm_judge(["q"] * 3, ["a"] * 3, judge=FakeJudge(["8", "excellent!", "2"]))
    assert out[0].score == pytest.approx(0.8) and out[2].score == pytest.approx(0.2)
    assert isinstance(out[1], float) and math.isnan(out[1])
    with pytest.raises(ValueError, match="non-finite"):  # how the runtime marks it failed
        as_score(out[1])


@pytest.mark.parametrize("lo, hi", [(0, 1.5), (0.0, 0.5), (0, 1000)])
def test_non_integer_or_wide_ranges_ask_for_a_number_by_regex(lo, hi):
    judge = FakeJudge(["0.25"])
    out = llm_judge(["q"], ["a"], judge=judge, min_score=lo, max_score=hi)
    assert judge.calls[0]["choices"] is None and judge.calls[0]["regex"] == J.SCORE_REGEX
    assert out[0].score == pytest.approx(0.25 / hi)


def test_a_float_range_with_integer_ends_is_still_asked_as_choices():
    judge = FakeJudge(["2"])
    out = llm_judge(["q"], ["a"], judge=judge, min_score=0.0, max_score=4.0)
    assert judge.calls[0]["choices"] == ["0", "1", "2", "3", "4"]
    assert out[0].score == pytest.approx(0.5)  # 2/4
    assert "Score (0 to 4):" in judge.calls[0]["prompts"][0]  # 4.0 is written as 4


def test_empty_range_is_a_configuration_error():
    with pytest.raises(RewardError, match="max_score > min_score"):
        llm_judge(["q"], ["a"], judge=FakeJudge(["1"]), min_score=5, max_score=5)


def test_empty_batch_asks_nothing_and_returns_nothing():
    judge = FakeJudge([])
    assert llm_judge([], [], judge=judge) == []
    assert rubric([], [], judge=judge, rubric=[]) == []
    assert judge.calls == []


# ---------------------------------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------------------------------


def test_a_template_naming_a_missing_field_fails_at_the_first_call_naming_it():
    judge = FakeJudge(["5"])
    with pytest.raises(RewardError, match="no field 'rubric_notes'.*their fields: .*prompt_id"):
        llm_judge(["q"], ["a"], judge=judge, template="{prompt} {rubric_notes}", **runtime_fields(1))
    with pytest.raises(RewardError, match="no field 'notes'"):  # an empty batch checks it too
        llm_judge([], [], judge=judge, template="{notes}")
    assert judge.calls == []  # the judge is never asked with a broken template


def test_a_field_that_is_not_one_value_per_sample_is_an_error():
    judge = FakeJudge(["5", "5"])
    with pytest.raises(RewardError, match="field 'style' must hold one value per sample \\(2\\), got str"):
        llm_judge(["q", "q"], ["a", "b"], judge=judge, template="{style} {completion}", style="terse")


def test_positional_placeholders_are_rejected():
    with pytest.raises(RewardError, match="need a field name"):
        llm_judge(["q"], ["a"], judge=FakeJudge(["5"]), template="{} {completion}")


def test_runtime_fields_are_all_available_to_templates():
    template = " ".join(f"{{{name}}}" for name in RUNTIME_FIELDS)
    judge = FakeJudge(["5"])
    llm_judge(["q"], ["a"], judge=judge, template=template, **runtime_fields(1))
    assert judge.calls[0]["prompts"] == ["p0 10 stop 64"]


def test_a_judge_returning_the_wrong_number_of_replies_fails_the_batch():
    with pytest.raises(RuntimeError, match="1 replies for 2 prompts"):
        llm_judge(["q", "q"], ["a", "b"], judge=FakeJudge(["5"]))


# ---------------------------------------------------------------------------------------------------
# Pairwise
# ---------------------------------------------------------------------------------------------------

PAIR_TEMPLATE = "{prompt}|A={response_a}|B={response_b}"


def pairwise(judge, completions, references, *, seed=0, prompts=None):
    prompts = prompts or [f"q{i}" for i in range(len(completions))]
    return llm_judge(
        prompts,
        completions,
        judge=judge,
        pairwise=True,
        template=PAIR_TEMPLATE,
        reference=references,
        seed=seed,
        **runtime_fields(len(completions)),
    )


def test_pairwise_maps_the_verdict_back_for_both_positions():
    n = 40
    completions, references = [f"c{i}" for i in range(n)], [f"r{i}" for i in range(n)]
    always_a = FakeJudge(lambda p: "A")
    out = pairwise(always_a, completions, references)
    firsts = [r.info["completion_first"] for r in out]
    assert set(firsts) == {0.0, 1.0}  # both slots occur in this batch
    # a judge that always says A prefers the completion exactly when it was shown as A
    assert scores(out) == firsts
    for i, asked in enumerate(always_a.calls[0]["prompts"]):
        shown = f"q{i}|A=c{i}|B=r{i}" if firsts[i] else f"q{i}|A=r{i}|B=c{i}"
        assert asked == shown
    assert always_a.calls[0]["choices"] == ["A", "B"]
    always_b = pairwise(FakeJudge(lambda p: "B"), completions, references)
    assert scores(always_b) == [1.0 - f for f in firsts]


def test_pairwise_score_follows_the_judges_preference_not_the_slot():
    # the judge prefers the response that says GOOD, wherever it is shown
    def prefers_good(asked: str) -> str:
        return "A" if "A=GOOD" in asked else "B"

    completions = ["GOOD"] * 20 + ["bad"] * 20
    references = ["bad"] * 20 + ["GOOD"] * 20
    out = pairwise(FakeJudge(prefers_good), completions, references)
    assert {r.info["completion_first"] for r in out} == {0.0, 1.0}
    assert scores(out) == [1.0] * 20 + [0.0] * 20


def test_pairwise_positions_are_deterministic_per_seed_and_batch_independent():
    n = 200
    completions, references = [f"c{i}" for i in range(n)], [f"r{i}" for i in range(n)]
    firsts = lambda out: [r.info["completion_first"] for r in out]  # noqa: E731
    seed0 = firsts(pairwise(FakeJudge(lambda p: "A"), completions, references, seed=0))
    assert firsts(pairwise(FakeJudge(lambda p: "A"), completions, references, seed=0)) == seed0
    assert firsts(pairwise(FakeJudge(lambda p: "A"), completions, references, seed=1)) != seed0
    assert 0.4 < sum(seed0) / n < 0.6  # balanced: a fair coin per sample
    # a sample keeps its slot whatever batch it is scored in
    alone = pairwise(FakeJudge(lambda p: "A"), ["c7"], ["r7"], prompts=["q7"])
    assert alone[0].info["completion_first"] == seed0[7]


def test_pairwise_sample_without_reference_fails_and_is_not_asked():
    judge = FakeJudge(lambda p: "A")
    out = pairwise(judge, ["c0", "c1", "c2"], ["r0", None, "r2"])
    assert math.isnan(out[1]) and all(isinstance(out[i], RewardResult) for i in (0, 2))
    assert len(judge.calls[0]["prompts"]) == 2


def test_pairwise_unparseable_verdict_fails_its_sample():
    out = pairwise(FakeJudge(["Both are fine", "B."]), ["c0", "c1"], ["r0", "r1"])
    assert math.isnan(out[0])
    assert out[1].score == 1.0 - out[1].info["completion_first"]


def test_pairwise_needs_the_reference_field():
    with pytest.raises(RewardError, match="no field 'gold'"):
        llm_judge(["q"], ["a"], judge=FakeJudge(["A"]), pairwise=True, reference_field="gold", reference=["r"])


def test_pairwise_default_template_shows_both_responses():
    judge = FakeJudge(["A"])
    out = llm_judge(["2+2?"], ["4"], judge=judge, pairwise=True, reference=["four"])
    asked = judge.calls[0]["prompts"][0]
    assert "Question:\n2+2?\n" in asked and asked.endswith("Better response (A or B):")
    a, b = ("4", "four") if out[0].info["completion_first"] else ("four", "4")
    assert f"Response A:\n{a}\n\nResponse B:\n{b}\n" in asked


# ---------------------------------------------------------------------------------------------------
# Rubric
# ---------------------------------------------------------------------------------------------------


def verdicts(table: dict[str, str]) -> Callable[[str], str]:
    """A judge that answers by the criterion (the text after the last '|')."""
    return lambda asked: table[asked.rsplit("|", 1)[1]]


RUBRIC_TEMPLATE = "{prompt}|{completion}|{criterion}"


def test_rubric_scores_the_weighted_fraction_of_satisfied_criteria():
    judge = FakeJudge(verdicts({"c1": "yes", "c2": "no", "x": "Yes", "y": "yes.", "z": "No"}))
    out = rubric(
        ["q0", "q1"],
        ["a0", "a1"],
        judge=judge,
        template=RUBRIC_TEMPLATE,
        rubric=[
            [{"criterion": "c1", "weight": 1}, {"criterion": "c2", "weight": 3}],
            ["x", "y", {"criterion": "z"}],
        ],
        **runtime_fields(2),
    )
    # sample 0: c1 (w 1) yes, c2 (w 3) no -> 1 / (1 + 3) = 0.25
    # sample 1: x, y, z (w 1 each) yes, yes, no -> 2 / 3
    assert scores(out) == pytest.approx([0.25, 2 / 3])
    assert [r.info for r in out] == [{"criteria": 2, "satisfied": 1}, {"criteria": 3, "satisfied": 2}]
    # one call over all (sample, criterion) pairs, in order, each a yes/no question
    assert judge.calls == [
        {
            "prompts": ["q0|a0|c1", "q0|a0|c2", "q1|a1|x", "q1|a1|y", "q1|a1|z"],
            "choices": ["yes", "no"],
            "regex": None,
        }
    ]


def test_rubric_default_template_and_a_custom_field_name():
    judge = FakeJudge(["yes"])
    out = rubric(["2+2?"], ["4"], judge=judge, rubric_field="checks", checks=[["states 4"]])
    assert out[0].score == 1.0
    asked = judge.calls[0]["prompts"][0]
    assert "Response:\n4\n" in asked and asked.endswith("Criterion: states 4\nAnswer (yes or no):")


@pytest.mark.parametrize(
    "bad",
    [
        [],  # empty
        None,  # the row has no rubric
        [{"criterion": "c", "weight": -1}],  # negative weight
        [{"criterion": "c", "weight": 0}, {"criterion": "d", "weight": 0.0}],  # weights sum to 0
        [{"criterion": "c", "weight": "2"}],  # not a number
        [{"criterion": "c", "weight": float("nan")}],
        [{"text": "c"}],  # unknown key
        ["  "],  # empty criterion
        "be concise",  # a string, not a list
    ],
)
def test_a_bad_rubric_fails_its_sample_only_and_is_not_asked(bad):
    judge = FakeJudge(verdicts({"ok": "yes"}))
    out = rubric(["q0", "q1"], ["a0", "a1"], judge=judge, template=RUBRIC_TEMPLATE, rubric=[bad, ["ok"]])
    assert math.isnan(out[0])
    assert out[1].score == 1.0
    assert judge.calls[0]["prompts"] == ["q1|a1|ok"]


def test_a_rubric_with_an_unparseable_verdict_fails_its_sample():
    judge = FakeJudge(verdicts({"c": "yes", "d": "maybe", "e": "no"}))
    out = rubric(["q0", "q1"], ["a0", "a1"], judge=judge, template=RUBRIC_TEMPLATE, rubric=[["c", "d"], ["e"]])
    assert math.isnan(out[0])
    assert out[1].score == 0.0 and out[1].info == {"criteria": 1, "satisfied": 0}


def test_rubric_needs_its_field():
    with pytest.raises(RewardError, match="no field 'rubric'"):
        rubric(["q"], ["a"], judge=FakeJudge(["yes"]), **runtime_fields(1))


def test_rubric_template_naming_a_missing_field_fails():
    with pytest.raises(RewardError, match="no field 'context'"):
        rubric(["q"], ["a"], judge=FakeJudge(["yes"]), template="{context} {criterion}", rubric=[["c"]])
