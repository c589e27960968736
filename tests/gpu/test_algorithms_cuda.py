"""The device-agnostic maths gives the same values on CUDA as on CPU."""

from __future__ import annotations

import torch

import rlft.algorithms as A


def test_losses_and_advantages_match_cpu_on_cuda():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.rand(16, generator=gen)
    groups = torch.arange(16) // 4
    lp, old, ro = (torch.randn(16, 12, generator=gen) * 0.1 - 1 for _ in range(3))
    mask = (torch.rand(16, 12, generator=gen) > 0.2).float()
    for est in A.ADVANTAGES.names():
        cpu = A.ADVANTAGES[est](rewards, groups)
        torch.testing.assert_close(A.ADVANTAGES[est](rewards.cuda(), groups.cuda()).cpu(), cpu)
    adv = A.ADVANTAGES["grpo"](rewards, groups)[:, None].expand(16, 12).contiguous()
    for name in A.POLICY_LOSSES.names():
        cpu_in = A.PolicyLossInputs(lp, old, adv, mask, ro)
        gpu_in = A.PolicyLossInputs(lp.cuda(), old.cuda(), adv.cuda(), mask.cuda(), ro.cuda())
        cpu = A.aggregate(A.compute_policy_loss(name, cpu_in, tis_cap=2.0).per_token, mask, "token-mean")
        gpu = A.aggregate(A.compute_policy_loss(name, gpu_in, tis_cap=2.0).per_token, mask.cuda(), "token-mean")
        torch.testing.assert_close(gpu.cpu(), cpu)
