"""PPO with a critic on the driver: GAE batches with hand-computed values, the critic warm-up, the
adaptive KL coefficient, and the critic's state in checkpoints (against fakes: no Ray, no models)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlft.config import ConfigError, load_config
from rlft.compose import build_driver
from rlft.placement import plan_run
from rlft.ppo_step import CriticBuilder, build_advantages
from rlft.types import Prompt, TrainSample

from test_driver import Calls, FakeEngine, FakeLearner, FakeScorer, FakeSync, Sink


def test_gae_batch_golden_values_with_a_kl_penalty():
    """One sample, 2 tokens, outcome 1, beta 0.5, k1 KL = lp - ref = [0.2, -0.4], values [0.5, 0.25],
    gamma 1, lambda 1: token rewards [-0.1, 1.2]; returns are the reward-to-go [1.1, 1.2];
    advantages R - V = [0.6, 0.95]."""
    s = [TrainSample([1], [5, 6], [0.0, 0.0], rollout_logprobs=[-1.0, -2.0])]
    out, m = build_advantages(s, [1.0], [[0.5, 0.25]], [[-1.2, -1.6]], kl_coef=0.5, kl_estimator="k1",
                              gamma=1.0, lam=1.0, whiten=False)
    assert out[0].returns == pytest.approx([1.1, 1.2])
    assert out[0].advantages == pytest.approx([0.6, 0.95])
    assert out[0].old_values == [0.5, 0.25] and out[0].ref_logprobs == [-1.2, -1.6]
    assert m["ppo/kl"] == pytest.approx(-0.2)  # the sequence KL estimate (k1 may be negative)
    assert m["critic/values_mean"] == pytest.approx(0.375)


def test_gae_discounting_and_whitening():
    """gamma 0.5, lambda 0: A_t = r_t + 0.5 V_{t+1} - V_t with values 0 -> A = rewards = [0, 1] per
    sample; whitening over the 4 tokens [0, 1, 0, 3] -> mean 1, std sqrt(2)."""
    s = [TrainSample([1], [5, 6], [0.0, 0.0], rollout_logprobs=[0.0, 0.0]),
         TrainSample([1], [7, 8], [0.0, 0.0], rollout_logprobs=[0.0, 0.0])]
    out, _ = build_advantages(s, [1.0, 3.0], [[0.0, 0.0]] * 2, None, kl_coef=0.0, gamma=0.5, lam=0.0, whiten=True)
    root2 = 2 ** 0.5
    assert out[0].advantages == pytest.approx([-1 / root2, 0.0], abs=1e-6)
    assert out[1].advantages == pytest.approx([-1 / root2, 2 / root2], abs=1e-6)
    assert out[1].returns == pytest.approx([0.0, 3.0])  # lambda 0: one-step targets r_t + gamma V_{t+1}, V = 0


def test_a_loss_mask_gap_keeps_the_reward_on_the_last_counted_token():
    s = [TrainSample([1], [5, 6, 7], [0.0] * 3, rollout_logprobs=[0.0] * 3, loss_mask=[1, 1, 0])]
    out, _ = build_advantages(s, [2.0], [[0.0, 0.0, 0.0]], None, kl_coef=0.0, lam=1.0, whiten=False)
    assert out[0].returns == [2.0, 2.0, 0.0] and out[0].advantages == [2.0, 2.0, 0.0]


class FakeCritic:
    """Values: a constant that moves halfway to the mean return at each train step."""

    def __init__(self, calls: Calls):
        self.calls, self.value, self.batches = calls, 0.0, []

    def values(self, batch):
        self.calls.append("values")
        return [[self.value] * len(s.completion_ids) for s in batch.samples]

    def train_step(self, batch):
        self.calls.append("critic_step")
        self.batches.append(batch)
        returns = [r for s in batch.samples for r in s.returns]
        self.value += 0.5 * (sum(returns) / len(returns) - self.value)
        return {"value_loss": 0.1, "value_clip_fraction": 0.0}

    def save_checkpoint(self, path):
        Path(path, "critic").mkdir()
        Path(path, "critic", "value.txt").write_text(repr(self.value))
        return path

    def load_checkpoint(self, path):
        self.value = float(Path(path, "critic", "value.txt").read_text())


class RefLearner(FakeLearner):
    def reference_logprobs(self, samples):
        self.calls.append("reference")
        return [[-1.0] * len(s.completion_ids) for s in samples]


def make_ppo(overrides, ckpt=None):
    cfg = load_config(overrides=["rollout.prompts_per_step=3", "rollout.group_size=2", "evaluation.pass_k=0",
                                 "critic={warmup_steps: 2, lam: 1.0}", *overrides])
    calls = Calls()
    engine, learner, critic = FakeEngine(calls), RefLearner(calls), FakeCritic(calls)
    prompts = [Prompt(f"p{i}", [1, i + 2]) for i in range(5)]
    driver = build_driver(cfg, engine=engine, scorer=FakeScorer(calls, lambda r: 1.0), learner=learner,
                    weights=FakeSync(calls, engine), train_prompts=prompts, eval_prompts=prompts[:1], sink=Sink(),
                    checkpoint_dir=ckpt, critic=critic)
    return driver, calls, learner, critic


def test_the_critic_warms_up_alone_then_both_train_each_step():
    driver, calls, learner, critic = make_ppo(["stages=[{kind: rl, steps: 4}]"])
    driver.run()
    steps = [c for c in calls if c in ("values", "critic_step", "train_step", "sync", "reference")]
    assert steps == ["values", "critic_step"] * 2 + ["values", "critic_step", "train_step", "sync"] * 2
    assert driver.state.version == 2  # two policy updates after the two warm-up steps
    rows = [m for _, m in driver.sink.rows if m.get("stage") == "rl1"]
    assert [m.get("critic/warmup", 0.0) for m in rows] == [1.0, 1.0, 0.0, 0.0]
    assert all("critic/value_loss" in m and "critic/explained_variance" in m for m in rows)
    # returns are the outcome (1.0) everywhere; the advantages the policy saw are R - V, whitened:
    # after the two warm-up steps V = 0.75 on every token (0 -> 0.5 -> 0.75), so R - V = 0.25 everywhere
    # and whitened 0 (the unwhitened 0.25: the next test)
    assert all(r == 1.0 for s in critic.batches[0].samples for r in s.returns)
    first = learner.batches[0][0].samples
    assert [a for s in first for a in s.advantages] == [0.0] * sum(len(s.completion_ids) for s in first)
    assert all(s.returns == [1.0] * len(s.completion_ids) for s in first)


def test_unwhitened_advantages_are_the_returns_minus_the_values():
    driver, _, learner, _ = make_ppo(["stages=[{kind: rl, steps: 3}]", "critic.whiten_advantages=false"])
    driver.run()
    first = learner.batches[0][0].samples  # V = 0.75 after the two warm-up steps; R = 1
    assert [a for s in first for a in s.advantages] == pytest.approx([0.25] * sum(len(s.completion_ids) for s in first))


def test_the_adaptive_kl_coefficient_follows_the_observed_kl_and_survives_a_restore(tmp_path):
    # behaviour logprobs -0.5 (FakeEngine), reference -1.0: k1 KL 0.5 per token, one token per sample
    over = ["stages=[{kind: rl, steps: 3}]", "algo.kl={coef: 0.1, placement: reward, estimator: k1, target: 0.25, horizon: 60}"]
    driver, calls, _, _ = make_ppo([*over, "checkpoint.every=2"], ckpt=str(tmp_path / "c"))
    driver.run()
    coefs = [m["ppo/kl_coef"] for _, m in driver.sink.rows if m.get("stage") == "rl1"]
    # KL 0.5 vs target 0.25: error clipped to +0.2, 6 samples per step over a horizon of 60: x1.02 per step
    assert coefs == pytest.approx([0.1, 0.102, 0.10404])
    assert calls.count("reference") == 3
    resumed, _, _, critic = make_ppo(over, ckpt=str(tmp_path / "c"))
    resumed.restore(tmp_path / "c" / "step-000002")
    assert resumed.parts.builder.kl_coef == pytest.approx(0.10404) and resumed.parts.builder.critic_steps == 2
    saved = float((tmp_path / "c" / "step-000002" / "critic" / "value.txt").read_text())
    assert saved != 0.0 and critic.value == saved  # the critic's own state came back with the step


def test_ppo_config_is_checked():
    with pytest.raises(ConfigError, match="remove algo.advantage"):
        load_config(overrides=["critic={}", "algo.advantage.name=rloo"])
    with pytest.raises(ConfigError, match="needs a critic"):
        load_config(overrides=["algo.kl={coef: 0.1, placement: reward}"])
    cfg = load_config(overrides=["critic={num_ranks: 2}", "cluster.critic={cpus: 2}", "rollout.group_size=1"])
    assert {r.role: (r.count, dict(r.bundle)) for r in plan_run(cfg).roles}["critic"] == (2, {"CPU": 2.0})


def test_critic_builder_without_a_critic_config_is_refused():
    with pytest.raises(ValueError, match="needs cfg.critic"):
        CriticBuilder(load_config(), FakeCritic(Calls()), RefLearner(Calls()))


def test_an_interrupt_after_the_critic_moved_writes_no_half_step_checkpoint(tmp_path):
    """The critic updates before the policy: once it has moved, the step's start is no longer a
    consistent resume point, so an interrupt there leaves the last periodic checkpoint in charge."""
    driver, _, learner, critic = make_ppo(["stages=[{kind: rl, steps: 4}]", "critic.warmup_steps=0"],
                                          ckpt=str(tmp_path / "c"))

    update = critic.train_step

    def interrupted_right_after(batch):
        update(batch)
        raise KeyboardInterrupt  # Ctrl-C lands after the critic's update, before the policy's

    critic.train_step = interrupted_right_after
    with pytest.raises(KeyboardInterrupt):
        driver.run()
    assert len(critic.batches) == 1 and learner.batches == [] and not (tmp_path / "c").exists()
