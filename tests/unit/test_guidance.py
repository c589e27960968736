"""Mixed-policy groups (LUFFY): demonstrations inside the groups, their shaped loss, and the config
combinations refused."""

from __future__ import annotations

import math

import pytest
import torch
from test_driver import Calls, FakeEngine, FakeLearner, FakeScorer, FakeSync, Sink

from rlft.algorithms.guidance import shaped_demo_loss
from rlft.collect import StepInfo, sampling_settings
from rlft.compose import build_driver
from rlft.config import load_config
from rlft.training import Objective, micro_batch_loss
from rlft.types import DemoText, Prompt, TrainSample, collate


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
                           demo_tokens=2)]
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
                          demonstration_texts=[DemoText("good", [4])] * 3, sink=Sink())
    return driver, engine, learner


def test_a_mixed_group_samples_one_less_and_its_demonstration_takes_part_in_the_advantage():
    driver, engine, learner = _mixed_driver()
    summary = driver.run()
    steps = [sampling_settings(driver.cfg, step).seed for step in (0, 1)]
    assert [s.n for s in engine.seen if s.seed in steps] == [3, 3]  # each RL step asks for group_size - 1
    batch, sft, _ = learner.batches[0]
    assert sft is None and len(batch) == 8  # 2 groups of 3 samples + 1 demonstration
    demos = [s for s in batch.samples if s.demo_tokens]
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
    with pytest.raises(ValueError, match="the rewards score a demonstration"):
        cfg = load_config(overrides=["algo.guidance={name: mixed}"])
        build_driver(cfg, engine=None, scorer=None, learner=None, weights=None, train_prompts=[Prompt("p", [1])],
                     sft_examples=[TrainSample([1], [2], [1.0])])


def _prefix_driver(params: str, steps: int = 2):
    cfg = load_config(overrides=["rollout.prompts_per_step=2", "rollout.group_size=4", f"stages=[{{kind: rl, steps: {steps}}}]",
                                 "evaluation.pass_k=0", "rollout.max_new_tokens=12",
                                 f"algo.guidance={{name: prefix, params: {params}}}"])
    calls = Calls()
    engine, learner = FakeEngine(calls), FakeLearner(calls)
    prompts = [Prompt(f"p{i}", [1, i + 2], text=f"q{i}") for i in range(3)]
    # demonstration i: the tokens 60..69 and EOS (3), its text "abcdefghij" one character per token
    demos = [TrainSample([1, i + 2], [*range(60, 70), 3], [1.0] * 11) for i in range(3)]
    texts = [DemoText("abcdefghij", list(range(1, 11)))] * 3
    scorer = FakeScorer(calls, lambda r: float(len(r.completion) > 3))
    driver = build_driver(cfg, engine=engine, scorer=scorer, learner=learner, weights=FakeSync(calls, engine),
                          train_prompts=prompts, eval_prompts=prompts[:2], sft_examples=demos,
                          demonstration_texts=texts, sink=Sink())
    return driver, engine, learner


def test_prefixed_samples_continue_their_own_prefix_of_the_demonstration():
    driver, engine, learner = _prefix_driver("{share: 1.0, min_fraction: 0.2, max_fraction: 0.6, anneal: none}")
    collected = driver.parts.collector.collect(StepInfo(0, 0, stage_end=2, stage=driver.cfg.stages[0]))
    asked = [s for s in engine.seen if s.n == 1]
    longest = max(r.demo_tokens for r in collected.rollouts)
    assert len(asked) == 1 and asked[0].max_new_tokens == 12 - longest  # the whole completion fits the budget
    assert len(collected.rollouts) == 8 and [r.group_id for r in collected.rollouts] == [0] * 4 + [1] * 4
    for r in collected.rollouts:
        k = r.demo_tokens
        assert 2 <= k <= 6 and r.completion_ids[:k] == list(range(60, 60 + k))
        assert r.rollout_logprobs[:k] == [0.0] * k and r.rollout_logprobs[k:] == [-0.5]
        assert r.completion == "abcdefghij"[:k] and r.prompt_ids == [1, collected.indices[r.group_id] + 2]
    assert len({r.demo_tokens for r in collected.rollouts}) > 1  # drawn per sample
    again, _, _ = _prefix_driver("{share: 1.0, min_fraction: 0.2, max_fraction: 0.6, anneal: none}")
    same = again.parts.collector.collect(StepInfo(0, 0, stage_end=2, stage=again.cfg.stages[0]))
    assert [r.demo_tokens for r in same.rollouts] == [r.demo_tokens for r in collected.rollouts]  # seeded


def test_prefix_tokens_are_masked_or_imitated():
    driver, engine, learner = _prefix_driver("{share: 1.0, anneal: linear}", steps=4)
    driver.run()
    rows = [m for _, m in driver.sink.rows if m.get("stage") == "rl1"]
    # linear annealing over 4 steps: each prompt is prefixed with probability 1, 0.75, 0.5, 0.25
    assert rows[0]["prefix/samples"] == 8.0 and rows[0]["prefix/tokens_mean"] >= 2
    first, _, _ = learner.batches[0]
    for s in first.samples:
        assert s.demo_tokens > 0 and s.loss_mask == [0] * s.demo_tokens + [1]  # masked: the continuation counts
    imitated, _, learner2 = _prefix_driver("{share: 1.0, anneal: none, prefix_tokens: imitation}")
    imitated.run()
    assert all(s.loss_mask is None and s.demo_tokens for s in learner2.batches[0][0].samples)


def test_stage_progress_and_annealing_golden():
    from rlft.algorithms.guidance import GUIDANCE
    from rlft.config import StageConfig
    from rlft.guidance import stage_progress

    stage = StageConfig(kind="rl", steps=4)
    assert [stage_progress(StepInfo(s, s, stage_end=14, stage=stage)) for s in (10, 12, 13)] == [0.0, 0.5, 0.75]
    settings = GUIDANCE.get("prefix")(share=0.8, min_fraction=0.2, max_fraction=0.6)
    assert settings.at(0.0) == (0.8, 0.2, 0.6) and settings.at(1.0) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="min_fraction"):
        load_config(overrides=["algo.guidance={name: prefix, params: {min_fraction: 0.7, max_fraction: 0.5}}"])
    with pytest.raises(ValueError, match="a critic cannot value"):
        load_config(overrides=["algo.guidance={name: prefix}", "critic={}"])
