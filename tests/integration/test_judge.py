"""The judge engine (actors/judge.py) as a Ray actor on the tiny model, and the model-based rewards
(rewards/judge.py) served by it.

The tiny model is random, so its verdicts mean nothing; what is tested is the plumbing: structured
outputs hold a random model to the allowed answers, and every reward gets a finite score in [0, 1]
for every sample through a client that forwards to the actor (as the reward workers' does).
"""

from __future__ import annotations

import math
import re

import pytest
import ray

from rewards.api import RewardResult
from rewards.judge import SCORE_REGEX, llm_judge, rubric
from rlft.config import load_config
from rlft.types import Rollout

PROMPTS = ["What is 2 + 2?", "Name a prime number.", "hello world", "(4 + 5) * 2 ="]
COMPLETIONS = ["4", "9", "hi", "18"]
SCORES = [str(s) for s in range(11)]


class ActorJudge:
    """The judge client a reward receives: ``generate`` forwarded to the judge actor."""

    def __init__(self, actor):
        self.actor = actor
        self.calls = 0

    def generate(self, prompts, **kwargs):
        import ray

        self.calls += 1
        return ray.get(self.actor.generate.remote(prompts, **kwargs))


def _judged_config(tiny_model_dir):
    return load_config(
        overrides=[
            f"reward.judge.model={tiny_model_dir}",
            "reward.functions=[{name: llm_judge}, {name: rubric, weight: 0.5}]",
            "cluster.reward.cpus=0.5",
        ]
    )


@pytest.fixture(scope="module")
def judged_group(ray_session, tiny_model_dir):
    """A run's reward group with ``reward.judge`` set: it starts the judge engine actor, and its
    reward workers serve the judge rewards' ``judge.generate`` calls from their isolated processes."""
    from actors.runtime import RewardGroup

    cfg = _judged_config(tiny_model_dir)
    group = RewardGroup(cfg, list(cfg.reward.functions))
    yield group
    group.shutdown()


@pytest.fixture(scope="module")
def judge_actor(judged_group):
    assert isinstance(judged_group.judge, ray.actor.ActorHandle)
    return judged_group.judge


def test_the_judge_engine_runs_in_the_placement_group_the_plan_gives_it(judged_group, tiny_model_dir):
    from rlft.placement import plan_run

    planned = plan_run(_judged_config(tiny_model_dir)).group("judge")
    pg = judged_group.judge_group.placement_group
    table = ray.util.placement_group_table(pg)
    assert list(table["bundles"].values()) == [dict(b) for b in planned.bundles] == [{"CPU": 1.0}]
    assert table["strategy"] == planned.strategy
    where = ray.get(judged_group.judge.__ray_call__.remote(lambda _: ray.get_runtime_context().get_placement_group_id()))
    assert where == pg.id.hex()


def test_judge_rewards_run_end_to_end_through_the_reward_workers(judged_group):
    rollouts = [
        Rollout(f"p{i}", i, [1], [2], [-0.1], "stop", 0, p, c, {"rubric": ["is correct", {"criterion": "is short", "weight": 2}]})
        for i, (p, c) in enumerate(zip(PROMPTS, COMPLETIONS))
    ]
    scores = judged_group.score(rollouts)
    assert scores.errors == [] and len(scores.totals) == len(PROMPTS)
    assert all(0.0 <= t <= 1.5 for t in scores.totals), scores.totals  # llm_judge in [0, 1] + 0.5 * rubric
    assert scores.metrics["reward/rubric/info/criteria"] == 2.0
    assert 0.0 <= scores.metrics["reward/llm_judge/info/judge_score"] <= 10.0


def test_choices_hold_a_random_model_to_the_allowed_answers(judge_actor):
    judge = ActorJudge(judge_actor)
    for choices in (SCORES, ["yes", "no"], ["A", "B"]):
        replies = judge.generate(PROMPTS, choices=choices)
        assert len(replies) == len(PROMPTS)
        assert set(replies) <= set(choices), replies


def test_regex_holds_the_reply_to_a_full_match(judge_actor):
    replies = ActorJudge(judge_actor).generate(PROMPTS, regex=SCORE_REGEX, max_new_tokens=12)
    assert all(re.fullmatch(SCORE_REGEX, r) for r in replies), replies


def test_unconstrained_replies_are_free_text_within_the_token_budget(judge_actor):
    replies = ActorJudge(judge_actor).generate(PROMPTS, max_new_tokens=5)
    # one character per token in the tiny vocabulary; a random model does not answer with a score
    assert all(isinstance(r, str) and len(r) <= 5 for r in replies)
    assert not set(replies) <= set(SCORES), replies


def test_choices_and_regex_together_are_refused(judge_actor):
    with pytest.raises(ValueError, match="not both"):
        ActorJudge(judge_actor).generate(PROMPTS, choices=["A"], regex="A")


@pytest.mark.parametrize(
    "reward, kwargs",
    [
        (llm_judge, {}),
        (llm_judge, {"min_score": 1, "max_score": 5}),
        (llm_judge, {"min_score": 0, "max_score": 1.5}),  # asked by regex
        (llm_judge, {"pairwise": True, "reference": ["4", "7", "hello", "18"]}),
        (rubric, {"rubric": [["is correct"], ["is a prime", {"criterion": "is short", "weight": 2}]] * 2}),
    ],
    ids=["pointwise", "pointwise-1-5", "pointwise-regex", "pairwise", "rubric"],
)
def test_rewards_served_by_the_actor_score_every_sample(judge_actor, reward, kwargs):
    judge = ActorJudge(judge_actor)
    runtime = {  # what the runtime adds to every batched call
        "prompt_id": [f"p{i}" for i in range(4)],
        "num_tokens": [1, 1, 2, 2],
        "finish_reason": ["stop"] * 4,
        "max_new_tokens": [8] * 4,
    }
    out = reward(PROMPTS, COMPLETIONS, judge=judge, **kwargs, **runtime)
    assert judge.calls == 1  # one engine call per batch
    assert len(out) == len(PROMPTS)
    assert all(isinstance(r, RewardResult) for r in out), out
    assert all(math.isfinite(r.score) and 0.0 <= r.score <= 1.0 for r in out), out
