"""KL-divergence estimators between the current policy and a frozen reference policy.

Each estimator in ``KL_ESTIMATORS`` maps ``(logprobs [B, T], ref_logprobs [B, T]) -> [B, T]``, a
per-token estimate of KL(pi || pi_ref) from tokens sampled from pi (Schulman 2020, "Approximating KL
divergence"). With ``log_ratio = logprobs - ref_logprobs``:

* ``k1 = log_ratio``: unbiased, high variance, can be negative per token;
* ``k2 = 0.5 * log_ratio**2``: biased, low variance, >= 0;
* ``k3 = exp(-log_ratio) - 1 + log_ratio``: unbiased, low variance, >= 0 (GRPO's choice).

Use them as a loss term ``beta * aggregate(k, mask, ...)`` or fold ``-beta * k`` into PPO's token
rewards. The log-ratio is clamped to [-20, 20] so ``k3`` stays finite far from the reference.

A token the policy gives probability 0.5 and the reference 0.25 (``log_ratio = log 2``):

>>> import math
>>> lp, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
>>> [round(KL_ESTIMATORS.get(name)(lp, ref).item(), 4) for name in ("k1", "k2", "k3")]
[0.6931, 0.2402, 0.1931]
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from rlft.algorithms.registry import Registry

KLFn = Callable[[Tensor, Tensor], Tensor]
KL_ESTIMATORS: Registry[KLFn] = Registry("KL estimator")

_CLAMP = 20.0


def _log_ratio(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)} and ref_logprobs {tuple(ref_logprobs.shape)} differ"
        )
    return (logprobs - ref_logprobs).clamp(-_CLAMP, _CLAMP)


@KL_ESTIMATORS.register("k1")
def k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """``log pi - log pi_ref``. [B, T]"""
    return _log_ratio(logprobs, ref_logprobs)


@KL_ESTIMATORS.register("k2")
def k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """``0.5 * (log pi - log pi_ref)**2``. [B, T]"""
    return 0.5 * _log_ratio(logprobs, ref_logprobs) ** 2


@KL_ESTIMATORS.register("k3")
def k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """``pi_ref/pi - 1 - log(pi_ref/pi)``, written with ``log_ratio = log pi - log pi_ref``. [B, T]"""
    log_ratio = _log_ratio(logprobs, ref_logprobs)
    # expm1: exp(-x) - 1 cancels catastrophically in float32 for small x (wrong sign at x = 1e-4).
    return torch.expm1(-log_ratio) + log_ratio
