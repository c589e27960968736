"""Outcome-level advantage estimators and GAE.

Every estimator in ``ADVANTAGES`` has the signature::

    fn(rewards: Tensor[B], group_ids: Tensor[B] (long), **params) -> Tensor[B]

where samples that share a ``group_id`` are completions of the same prompt. Group ids are arbitrary
integers (they need not be contiguous or sorted). A group whose rewards are all equal, or that holds a
single sample, carries no learning signal: its advantages are exactly 0, never NaN.
"""

from __future__ import annotations

from typing import Annotated

import torch
from annotated_types import Ge, Gt
from torch import Tensor

from rlft.algorithms.registry import Registry

ADVANTAGES: Registry = Registry("advantage estimator")


def _group_index(group_ids: Tensor) -> tuple[Tensor, int]:
    """Dense group index in [0, n_groups) for every sample, and the number of groups."""
    if group_ids.dim() != 1:
        raise ValueError(f"group_ids must be 1-D [B], got shape {tuple(group_ids.shape)}")
    _, index = torch.unique(group_ids, return_inverse=True)  # [B]
    return index, int(index.max().item()) + 1 if index.numel() else 0


def _out_dtype(rewards: Tensor) -> torch.dtype:
    """Advantages keep a float reward dtype; integer or bool rewards give the default float dtype."""
    return rewards.dtype if rewards.is_floating_point() else torch.get_default_dtype()


def _check(rewards: Tensor, group_ids: Tensor) -> None:
    if rewards.dim() != 1 or rewards.shape != group_ids.shape:
        raise ValueError(
            f"rewards and group_ids must both be 1-D of the same length, got "
            f"{tuple(rewards.shape)} and {tuple(group_ids.shape)}"
        )


def group_stats(rewards: Tensor, group_ids: Tensor) -> dict[str, Tensor]:
    """Per-sample statistics of the sample's group (all [B]).

    ``count`` (group size), ``sum``, ``mean``, ``std`` (unbiased, Bessel-corrected; 0 for singletons)
    and ``constant`` (True where every reward of the group is equal, singletons included).
    """
    _check(rewards, group_ids)
    index, n = _group_index(group_ids)
    r = rewards.to(torch.float64)  # exact group sums for the small B of a step
    zeros = r.new_zeros(n)  # [n_groups], on the rewards' device
    count = zeros.index_add(0, index, torch.ones_like(r))
    total = zeros.index_add(0, index, r)
    mean = total / count
    sq = zeros.index_add(0, index, (r - mean[index]) ** 2)
    std = torch.sqrt(sq / (count - 1).clamp(min=1))
    rmax = r.new_full((n,), -torch.inf).scatter_reduce(0, index, r, "amax")
    rmin = r.new_full((n,), torch.inf).scatter_reduce(0, index, r, "amin")
    return {
        "count": count[index],
        "sum": total[index],
        "mean": mean[index],
        "std": std[index],
        "constant": (rmax == rmin)[index],
    }


@ADVANTAGES.register("grpo", needs_groups=True)
def grpo(
    rewards: Tensor,  # [B]
    group_ids: Tensor,  # [B]
    *,
    scale_by_std: bool = True,
    eps: Annotated[float, Ge(0)] = 1e-6,
) -> Tensor:
    """Group-relative advantage (GRPO, Shao et al. 2024, "DeepSeekMath").

    ``A_i = (r_i - mean_g r) / (std_g r + eps)`` with the unbiased group standard deviation;
    ``scale_by_std=False`` keeps only the mean subtraction. Constant and singleton groups give 0.

    >>> grpo(torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([7, 7, 3, 3]), eps=0.0)
    tensor([ 0.7071, -0.7071,  0.0000,  0.0000])
    """
    s = group_stats(rewards, group_ids)
    adv = rewards.to(torch.float64) - s["mean"]
    if scale_by_std:
        adv = adv / (s["std"] + eps)
    return torch.where(s["constant"], 0.0, adv).to(_out_dtype(rewards))


@ADVANTAGES.register("dr_grpo", needs_groups=True)
def dr_grpo(rewards: Tensor, group_ids: Tensor) -> Tensor:  # [B], [B] -> [B]
    """Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training"): ``A_i = r_i - mean_g r``.

    No division by the group std (that term biases updates towards easy and hard prompts). Pair it
    with the ``seq-mean-token-sum-norm`` aggregation to also remove the response-length bias.
    """
    return grpo(rewards, group_ids, scale_by_std=False)


@ADVANTAGES.register("rloo", needs_groups=True)
def rloo(rewards: Tensor, group_ids: Tensor) -> Tensor:  # [B], [B] -> [B]
    """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024).

    ``A_i = r_i - mean_{j != i} r_j = G/(G-1) * (r_i - mean_g r)``; singleton groups give 0.

    >>> rloo(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0, 0, 0]))
    tensor([ 1.0000, -0.5000, -0.5000])
    """
    s = group_stats(rewards, group_ids)
    r = rewards.to(torch.float64)
    others = (s["sum"] - r) / (s["count"] - 1).clamp(min=1)
    return torch.where(s["constant"], 0.0, r - others).to(_out_dtype(rewards))


@ADVANTAGES.register("reinforce_pp_baseline", needs_groups=True)
def reinforce_pp_baseline(
    rewards: Tensor,  # [B]
    group_ids: Tensor,  # [B]
    *,
    eps: Annotated[float, Gt(0)] = 1e-6,
) -> Tensor:
    """REINFORCE++ with a group baseline (Hu et al. 2025, "REINFORCE++").

    Subtract the group mean, then divide by the standard deviation of those centred values over the
    whole batch (unbiased): ``A_i = (r_i - mean_g r) / (std_batch(r - mean_g r) + eps)``. Normalising
    by the batch rather than the group keeps the relative scale of groups. Constant groups give 0.
    """
    s = group_stats(rewards, group_ids)
    centred = torch.where(s["constant"], 0.0, rewards.to(torch.float64) - s["mean"])
    scale = centred.std() if centred.numel() > 1 else centred.new_zeros(())
    return (centred / (scale + eps)).to(_out_dtype(rewards))


def gae(
    token_rewards: Tensor,  # [B, T]
    values: Tensor,  # [B, T]
    mask: Tensor,  # [B, T]
    *,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over token sequences.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` and ``A_t = delta_t + gamma * lam * A_{t+1}``, where
    ``t+1`` is the next *valid* token (masked positions are skipped, so interleaved tool output or
    padding does not break the recursion) and the value after the last valid token is 0 (terminal).
    Returns ``(advantages, returns)`` with ``returns = advantages + values``; both are 0 where
    ``mask`` is 0. No whitening here: the caller decides (PPO whitens over the batch).

    >>> a, r = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2),
    ...            gamma=1.0, lam=1.0)
    >>> a
    tensor([[0.5000, 0.5000]])
    """
    if not (token_rewards.shape == values.shape == mask.shape) or token_rewards.dim() != 2:
        raise ValueError(
            "token_rewards, values and mask must share one [B, T] shape, got "
            f"{tuple(token_rewards.shape)}, {tuple(values.shape)}, {tuple(mask.shape)}"
        )
    m = mask.to(values.dtype)
    batch, length = values.shape
    next_value = values.new_zeros(batch)  # [B] value of the next valid token (0 after the last)
    next_adv = values.new_zeros(batch)  # [B]
    advantages = torch.zeros_like(values)
    for t in reversed(range(length)):
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = delta + gamma * lam * next_adv
        advantages[:, t] = adv_t * m[:, t]
        # A masked position leaves the carried value and advantage untouched.
        next_adv = torch.where(m[:, t] > 0, adv_t, next_adv)
        next_value = torch.where(m[:, t] > 0, values[:, t], next_value)
    returns = (advantages + values) * m
    return advantages, returns
