"""Every example config loads, and the example plugin's loss works."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import rlft.algorithms as A
from rlft.config import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# run configs; ``ray up`` cluster-launcher files (examples/cluster/ray-cluster-*.yaml) are tested in test_docker
CONFIGS = sorted(p for p in EXAMPLES.rglob("*.yaml") if not p.name.startswith("ray-cluster"))


def test_there_are_examples():
    assert len(CONFIGS) >= 6


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_config_loads(path):
    cfg = load_config(path)
    assert cfg.name


def test_custom_loss_example_registers_and_computes():
    cfg = load_config(EXAMPLES / "custom_loss" / "config.yaml")
    assert cfg.algo.loss.name == "clipped_reinforce"
    logprobs = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    inputs = A.PolicyLossInputs(
        logprobs=logprobs,
        old_logprobs=logprobs.detach(),
        advantages=torch.tensor([[3.0, -0.5]]),
        mask=torch.tensor([[1.0, 1.0]]),
    )
    out = A.compute_policy_loss(cfg.algo.loss.name, inputs, cfg.algo.loss.params)
    # advantages clipped to +-1.5: [3.0, -0.5] -> [1.5, -0.5]; the loss is -A per token.
    torch.testing.assert_close(out.per_token, torch.tensor([[-1.5, 0.5]]))
    torch.testing.assert_close(out.metrics["adv_clip_fraction"], torch.tensor(0.5))
    out.per_token.sum().backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-1.5, 0.5]]))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_rewards_resolve(path):
    from rewards.loading import load_rewards, reward_functions

    cfg = load_config(path)
    loaded = load_rewards(cfg)
    assert [r.key for r in loaded] == [f.key for f in reward_functions(cfg)]


def test_custom_reward_example_functions():
    import asyncio

    from rewards.api import inspect_reward
    from rewards.loading import load_rewards

    cfg = load_config(EXAMPLES / "custom_reward" / "config.yaml")
    fns = {r.key: r for r in load_rewards(cfg)}
    assert fns["correct"].spec.fn("12+30=", "42\njunk", answer="42") == 1.0
    near = fns["close_enough"].spec.fn("", "44", answer="42", **fns["close_enough"].params)
    assert (near.score, near.info) == (1.0, {"parsed": 1, "off_by": 2})
    assert fns["close_enough"].spec.fn("", "x", answer="42").info == {"parsed": 0}
    assert fns["remote_style"].spec.is_async and asyncio.run(fns["remote_style"].spec.fn("", "a42", answer="42")) == 1.0
    brevity = fns["brevity"].spec
    assert brevity.batched and brevity.fn(["", ""], ["1", "123"], num_tokens=[1, 3], max_new_tokens=[6, 6]) == [5 / 6, 0.5]
    assert inspect_reward(brevity.fn, "b").accepts_fields == {"num_tokens", "max_new_tokens"}
