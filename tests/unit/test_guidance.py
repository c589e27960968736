"""Mixed-policy groups (LUFFY): demonstrations inside the groups, their shaped loss, and the config
combinations refused."""

from __future__ import annotations

import math

import pytest
import torch
from test_driver import Calls, FakeEngine, FakeLearner, FakeScorer, FakeSync, Sink

from rlft.algorithms.guidance import shaped_demo_loss
from rlft.collect import sampling_settings
from rlft.compose import build_driver
from rlft.config import load_config
from rlft.training import Objective, micro_batch_loss
from rlft.types import Prompt, TrainSample, collate


def test_shaped_weight_golden_and_its_gradient_boosts_unlikely_tokens():
    gamma = 0.1
    lp = torch.log(torch.tensor([[0.01, 0.5, 0.99]])).requires_grad_(True)
    loss = shaped_demo_loss(lp, torch.ones(1, 3), gamma=gamma)
    torch.testing.assert_close(loss, -torch.tensor([[0.01 / 0.11, 0.5 / 0.6, 0.99 / 1.09]]))
    loss.sum().backward()
    # d/dlogp of -p/(p+g) = -g p / (p+g)^2; relative to a plain ratio's gradient (-p) that is g/(p+g)
    expected = -torch.tensor([gamma * p / (p + gamma) ** 2 for p in (0.01, 0.5, 0.99)]).unsqueeze(0)
    torch.testing.assert_close(lp.grad, expected)
    ratio_weight = lp.grad / -lp.detach().exp()
    assert ratio_weight[0, 0] > 5 * ratio_weight[0, 2]  # the unlikely token's gradient is boosted


def test_demonstration_tokens_take_the_shaped_loss_and_sampled_ones_the_policy_loss():
    samples = [TrainSample([1], [2, 3], [1.0, 1.0], rollout_logprobs=[-1.0, -1.0], policy_version=0),
               TrainSample([1], [4, 5], [-0.5, -0.5], rollout_logprobs=[0.0, 0.0], policy_version=0,
                           demonstration=True)]
    c = collate(samples)
    logprobs = torch.tensor([[-1.0, -1.0], [math.log(0.5), math.log(0.2)]], requires_grad=True)
    obj = Objective("ppo_clip", {}, "token-mean", demo_gamma=0.1, demo_sft_coef=0.5)
    out = micro_batch_loss(obj, logprobs=logprobs, old_logprobs=logprobs.detach(), advantages=c.advantages,
                           mask=c.mask, rollout_logprobs=c.rollout_logprobs, demonstrations=c.demonstrations,
                           global_tokens=4, global_seqs=2, max_len=2)
    # sampled row: ratio 1, loss -A = -1 per token; demo row: 0.5 * f(p) - 0.5 * log p (A = -0.5)
    demo = [0.5 * p / (p + 0.1) - 0.5 * math.log(p) for p in (0.5, 0.2)]
    assert out.loss.item() == pytest.approx((-1.0 - 1.0 + sum(demo)) / 4, rel=1e-6)
    # without the shaping the same batch is the plain policy loss on every token
    plain = micro_batch_loss(Objective("ppo_clip", {}, "token-mean"), logprobs=logprobs, old_logprobs=logprobs.detach(),
                             advantages=c.advantages, mask=c.mask, global_tokens=4, global_seqs=2, max_len=2)
    assert plain.loss.item() == pytest.approx((-2.0 + 0.5 + 0.5) / 4, rel=1e-6)


def _mixed_driver(overrides=()):
    cfg = load_config(overrides=["rollout.prompts_per_step=2", "rollout.group_size=4", "stages=[{kind: rl, steps: 2}]",
                                 "evaluation.pass_k=2", "algo.guidance={name: mixed, params: {demos_per_group: 1}}",
                                 *overrides])
    calls = Calls()
    engine, learner = FakeEngine(calls), FakeLearner(calls)
    prompts = [Prompt(f"p{i}", [1, i + 2], text=f"q{i}") for i in range(3)]
    demos = [TrainSample([1, i + 2], [50 + i, 3], [1.0, 1.0]) for i in range(3)]
    # completions are the tokens 0, 1, 2, ...: nothing sampled is right; the demonstrations ("good") are
    scorer = FakeScorer(calls, lambda r: 1.0 if r.completion == "good" else 0.0)
    driver = build_driver(cfg, engine=engine, scorer=scorer, learner=learner, weights=FakeSync(calls, engine),
                          train_prompts=prompts, eval_prompts=prompts[:2], sft_examples=demos,
                          demonstration_texts=["good"] * 3, sink=Sink())
    return driver, engine, learner


def test_a_mixed_group_samples_one_less_and_its_demonstration_takes_part_in_the_advantage():
    driver, engine, learner = _mixed_driver()
    summary = driver.run()
    steps = [sampling_settings(driver.cfg, step).seed for step in (0, 1)]
    assert [s.n for s in engine.seen if s.seed in steps] == [3, 3]  # each RL step asks for group_size - 1
    batch, sft, _ = learner.batches[0]
    assert sft is None and len(batch) == 8  # 2 groups of 3 samples + 1 demonstration
    demos = [s for s in batch.samples if s.demonstration]
    assert [s.completion_ids for s in demos] and all(s.completion_ids[0] >= 50 for s in demos) and len(demos) == 2
    assert all(s.rollout_logprobs == [0.0, 0.0] for s in demos)
    # GRPO over rewards [0, 0, 0, 1]: the demonstration gets +1.5 (unbiased std 0.5), each sample -0.5
    assert [round(s.advantages[0], 4) for s in batch.samples[:4]] == [-0.5, -0.5, -0.5, 1.5]
    # its version is its group's; evaluation used the plain engine (n = pass_k, nothing mixed in)
    assert {s.policy_version for s in batch.samples[:4]} == {0}
    assert summary.evaluations["after_rl1"]["eval/accuracy"] == 0.0 and 2 in [s.n for s in engine.seen]


@pytest.mark.parametrize("overrides, message", [
    (["critic={}"], "a critic cannot value"),
    (["rollout.max_staleness=1"], "set rollout.max_staleness to 0"),
    (["algo.guidance={name: mixed, params: {demos_per_group: 4}}"], "must leave samples in each group"),
    (["algo.guidance={name: mixed, params: {gamma: 0}}"], "gamma"),
], ids=["critic", "pipeline", "whole-group", "gamma"])
def test_mixed_groups_refuse_what_they_cannot_do(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(overrides=["rollout.group_size=4", "algo.guidance={name: mixed}", *overrides])


def test_demonstrations_need_their_texts():
    with pytest.raises(ValueError, match="the rewards score a demonstration by its text"):
        cfg = load_config(overrides=["algo.guidance={name: mixed}"])
        build_driver(cfg, engine=None, scorer=None, learner=None, weights=None, train_prompts=[Prompt("p", [1])],
                     sft_examples=[TrainSample([1], [2], [1.0])])
