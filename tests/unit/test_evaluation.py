"""Evaluation counts correct answers (one named reward over a threshold), not the shaped total."""

from __future__ import annotations

import pytest

from rlft.config import ConfigError, load_config
from rlft.config.evaluation import CorrectConfig
from rlft.evaluation import correct_flags, correct_reward, greedy_metrics, sampled_metrics
from rlft.types import Rollout, Scores

from test_driver import make

TWO = "reward.functions=[{name: exact_match}, {name: regex_format, label: format, weight: 0.2}]"


class ShapedScorer:
    """No completion is correct (``exact_match`` 0) but every one is well formatted (``format`` 1):
    the weighted total is 0.2 for every sample, as the combined scorer reports it."""

    def score(self, rollouts):
        n = len(rollouts)
        return Scores([0.2] * n, per_reward={"exact_match": [0.0] * n, "format": [1.0] * n})


def test_a_format_reward_alone_is_not_accuracy_nor_pass_at_k():
    """The issue's case: a format reward gave 'accuracy 20 %, pass@4 100 %' with no correct answer."""
    driver, _, _, _ = make(["data.train_path=d.jsonl", TWO, "evaluation.pass_k=4"])
    driver.parts.evaluate.scorer = ShapedScorer()
    out = driver.parts.evaluate()
    assert out["eval/accuracy"] == 0.0 and out["eval/pass@4"] == 0.0 and out["eval/mean@4"] == 0.0
    assert out["eval/mean_reward"] == pytest.approx(0.2) and out["eval/mean_reward@4"] == pytest.approx(0.2)


def test_evaluation_correct_chooses_the_reward_and_threshold():
    driver, _, _, _ = make(["data.train_path=d.jsonl", TWO, "evaluation.pass_k=4",
                            "evaluation.correct={reward: format, threshold: 0.5}"])
    driver.parts.evaluate.scorer = ShapedScorer()
    out = driver.parts.evaluate()
    assert (out["eval/accuracy"], out["eval/pass@4"]) == (1.0, 1.0)
    driver, _, _, _ = make(["data.train_path=d.jsonl", TWO, "evaluation.pass_k=0",
                            "evaluation.correct={reward: format, threshold: 1.5}"])
    driver.parts.evaluate.scorer = ShapedScorer()
    assert driver.parts.evaluate()["eval/accuracy"] == 0.0


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.train_path=builtin:arithmetic"], "arithmetic"),  # the task's verifier, unnamed
        (["data.train_path=builtin:arithmetic",  # the verifier wins over a shaping reward listed first
          "reward.functions=[{name: regex_format, label: fmt}, {name: builtin_task, label: verify}]"], "verify"),
        (["data.train_path=d.jsonl", TWO], "exact_match"),  # else the first reward function
        (["data.train_path=d.jsonl", TWO, "evaluation.correct={reward: format}"], "format"),
    ],
)
def test_the_default_correct_reward(overrides, expected):
    correct = correct_reward(load_config(overrides=overrides))
    assert (correct.reward, correct.threshold) == (expected, 1.0)


def test_no_reward_at_all_asks_to_choose():
    cfg = load_config(overrides=["data.train_path=d.jsonl"])
    with pytest.raises(ConfigError, match=r"evaluation.correct: \{reward: <its name>"):
        correct_reward(cfg)


def test_an_unknown_correct_reward_fails_at_load_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"'exact_mach' is not one of the run's rewards \(did you mean "
                                          r"'exact_match'\?\); they are: exact_match, format"):
        load_config(overrides=["data.train_path=d.jsonl", TWO, "evaluation.correct={reward: exact_mach}"])
    with pytest.raises(ConfigError, match="they are: arithmetic"):
        load_config(overrides=["data.train_path=builtin:arithmetic", "evaluation.correct={reward: exact_match}"])


def test_correct_flags_use_the_named_reward_never_a_failed_one_and_name_the_choices():
    s = Scores([1.0, 0.7, None], per_reward={"ok": [1.0, 0.5, None], "fmt": [0.0, 1.0, 1.0]})
    assert correct_flags(s, CorrectConfig(reward="ok", threshold=0.5)) == [True, True, False]
    assert correct_flags(s, CorrectConfig(reward="ok")) == [True, False, False]
    with pytest.raises(ConfigError, match="'nope' is not one of the rewards scored: ok, fmt"):
        correct_flags(s, CorrectConfig(reward="nope"))


def test_metrics_by_hand():
    """Greedy totals 1.2, None, 0.2 (exact 1, failed, 0): accuracy 1/3, mean reward 0.7 over the two
    scored. Sampled, 2 prompts x 2: exact 0,0 | 1,0 -> pass@2 1/2, mean@2 1/4, mean reward 0.45."""
    correct = CorrectConfig(reward="exact")
    greedy = Scores([1.2, None, 0.2], per_reward={"exact": [1.0, None, 0.0], "fmt": [1.0, 1.0, 1.0]})
    assert greedy_metrics(greedy, correct) == {"eval/accuracy": pytest.approx(1 / 3), "eval/failed_rewards": 1.0,
                                               "eval/prompts": 3.0, "eval/mean_reward": pytest.approx(0.7)}
    rollouts = [Rollout("p", g, [1], [2], [0.0], "stop", 0) for g in (0, 0, 1, 1)]
    sampled = Scores([0.2, 0.2, 1.2, 0.2], per_reward={"exact": [0.0, 0.0, 1.0, 0.0], "fmt": [1.0] * 4})
    assert sampled_metrics(rollouts, sampled, correct, k=2, prompts=2) == {
        "eval/pass@2": 0.5, "eval/mean@2": 0.25, "eval/mean_reward@2": pytest.approx(0.45)}
