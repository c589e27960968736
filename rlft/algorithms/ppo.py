"""PPO with a learned critic: token-level rewards, the value loss, the adaptive KL controller.

Pure tensor functions (no config objects, no models); the driver and the critic actor compose them:

* ``kl_penalized_rewards``: the outcome reward on the last completion token, minus ``coef`` times a
  per-token KL estimate between the behaviour policy and the reference (Ziegler et al. 2019;
  Ouyang et al. 2022, InstructGPT).
* ``rlft.algorithms.gae`` turns those rewards and the critic's values into advantages and returns;
  ``masked_whiten`` normalises the advantages over the batch.
* ``value_loss``: ``0.5 * max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2)`` per token
  (PPO2's clipped value loss; without ``clip`` the plain squared error).
* ``adaptive_kl_coef``: ``beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon)``.
* ``explained_variance``: ``1 - Var(R - V) / Var(R)`` over valid tokens, the critic's fit.

Shapes: ``[B, T]`` tensors are aligned with the completion tokens (``mask`` 1 where a token counts).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlft.algorithms.kl import KL_ESTIMATORS


def last_token_index(mask: Tensor) -> Tensor:
    """``[B]`` index of each row's last valid position (-1 for an empty row)."""
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)  # [B, T]
    return torch.where(mask > 0, positions, torch.full_like(positions, -1)).max(dim=-1).values


def kl_penalized_rewards(
    outcome: Tensor,  # [B]
    logprobs: Tensor,  # [B, T] behaviour policy
    ref_logprobs: Tensor | None,  # [B, T]
    mask: Tensor,  # [B, T]
    *,
    coef: float,
    estimator: str = "k1",
) -> tuple[Tensor, Tensor]:
    """Token-level rewards for PPO: ``-coef * KL_t`` on every valid token plus the outcome reward on
    the last one. Returns ``(token_rewards, kl)`` (``kl`` is the per-token estimate, 0 without a
    reference or off the mask).

    >>> r, kl = kl_penalized_rewards(torch.tensor([1.0]), torch.tensor([[-1.0, -2.0, 0.0]]),
    ...     torch.tensor([[-1.5, -1.0, 0.0]]), torch.tensor([[1.0, 1.0, 0.0]]), coef=0.1)
    >>> r   # KL_t = lp - ref = [0.5, -1.0]; rewards -0.1 * KL, +1 on the last valid token
    tensor([[-0.0500,  1.1000,  0.0000]])
    """
    if logprobs.shape != mask.shape or outcome.shape != mask.shape[:1]:
        raise ValueError(f"outcome [B] and logprobs/mask [B, T] do not match: {tuple(outcome.shape)}, "
                         f"{tuple(logprobs.shape)}, {tuple(mask.shape)}")
    m = mask.to(logprobs.dtype)
    if ref_logprobs is None or coef == 0:
        kl = torch.zeros_like(logprobs)
    else:
        kl = KL_ESTIMATORS.get(estimator)(logprobs, ref_logprobs) * m  # [B, T]
    rewards = kl * -coef + 0.0  # + 0.0: no negative zeros off the mask
    last = last_token_index(mask)  # [B]
    rows = torch.nonzero(last >= 0).squeeze(-1)
    rewards[rows, last[rows]] += outcome[rows].to(rewards.dtype)
    return rewards, kl


def masked_whiten(x: Tensor, mask: Tensor, *, eps: float = 1e-8, shift_mean: bool = True) -> Tensor:
    """``(x - mean) / std`` over the valid positions (unbiased std); 0 off the mask.

    >>> masked_whiten(torch.tensor([[1.0, 3.0, 99.0]]), torch.tensor([[1.0, 1.0, 0.0]]))
    tensor([[-0.7071,  0.7071,  0.0000]])
    """
    m = mask.to(x.dtype)
    n = m.sum()
    if n < 2:
        return torch.zeros_like(x) if shift_mean else x * m
    mean = (x * m).sum() / n
    var = (((x - mean) * m) ** 2).sum() / (n - 1)
    out = (x - mean) if shift_mean else x
    return out / torch.sqrt(var + eps) * m


def value_loss(
    values: Tensor,  # [B, T] current critic
    old_values: Tensor,  # [B, T] critic when the batch was built
    returns: Tensor,  # [B, T]
    *,
    clip: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-token value loss and where the clipped branch was taken (``[B, T]`` each; the caller
    aggregates over the mask). ``0.5 * (V - R)^2``; with ``clip`` c, PPO2's pessimistic
    ``0.5 * max((V - R)^2, (V_old + clamp(V - V_old, -c, c) - R)^2)``.

    >>> v, old, ret = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    >>> value_loss(v, old, ret)[0]
    tensor([[0.5000, 0.5000]])
    >>> loss, clipped = value_loss(v, old, torch.tensor([[2.0, 1.0]]), clip=0.2)
    >>> loss, clipped   # token 0: max(1, 1.8^2) / 2 = 1.62, the clipped branch
    (tensor([[1.6200, 0.5000]]), tensor([[ True, False]]))
    """
    unclipped = (values - returns) ** 2
    if clip is None:
        return 0.5 * unclipped, torch.zeros_like(unclipped, dtype=torch.bool)
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    clipped = (clipped_values - returns) ** 2
    return 0.5 * torch.maximum(unclipped, clipped), clipped > unclipped


def adaptive_kl_coef(coef: float, observed_kl: float, *, target: float, n_steps: int, horizon: int) -> float:
    """The adaptive KL controller of Ziegler et al. (2019): move the coefficient so the observed KL
    tracks ``target``, at most 20% of ``n_steps / horizon`` per update.

    >>> round(adaptive_kl_coef(0.1, observed_kl=12.0, target=6.0, n_steps=100, horizon=1000), 6)  # error clipped to +0.2
    0.102
    >>> round(adaptive_kl_coef(0.1, observed_kl=5.4, target=6.0, n_steps=100, horizon=1000), 6)  # error -0.1
    0.099
    """
    if target <= 0 or horizon <= 0:
        raise ValueError(f"target ({target}) and horizon ({horizon}) must be > 0")
    error = min(max(observed_kl / target - 1.0, -0.2), 0.2)
    return coef * (1.0 + error * n_steps / horizon)


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """``1 - Var(R - V) / Var(R)`` over valid tokens: 1 for a perfect critic, 0 for one that predicts
    the mean, negative for a worse one (NaN when the returns do not vary).

    >>> explained_variance(torch.tensor([[0.5, 1.5]]), torch.tensor([[0.0, 2.0]]), torch.ones(1, 2))
    0.75
    """
    m = mask.to(torch.float64) > 0
    r, v = returns.to(torch.float64)[m], values.to(torch.float64)[m]
    if r.numel() < 2:
        return float("nan")
    var_r = r.var()
    return float("nan") if var_r == 0 else float(1.0 - (r - v).var() / var_r)
