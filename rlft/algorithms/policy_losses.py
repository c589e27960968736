"""Policy losses, per token, for the GRPO/PPO family.

Every loss in ``POLICY_LOSSES`` has the signature ``fn(inputs: PolicyLossInputs, **params) -> LossOutput``
and returns a per-token loss ``[B, T]`` (0 where ``mask`` is 0) for ``aggregate`` to reduce, plus
metrics as 0-dim tensors (no ``.item()`` here, so nothing forces a device sync).

Conventions:

* ``ratio = exp(logprobs - old_logprobs)``; log-ratios are clamped to [-20, 20] before ``exp`` so a
  stale sample cannot overflow the loss.
* Losses whose published objective is ``w * A * log pi`` (REINFORCE, CISPO, TOPR) are written as
  ``-w * A * exp(logprobs - sg(logprobs))``: the same gradient, and a value of ``-w * A``. So with
  ``logprobs == old_logprobs`` (ratio 1) every loss here equals ``-A`` per token.
* ``sg`` is ``detach`` (stop-gradient).

Truncated importance sampling against the behaviour policy (vLLM's ``rollout_logprobs``) is not a
loss of its own: ``compute_policy_loss(..., tis_cap=C)`` multiplies any loss by
``truncated_importance_weights`` (below). ``decoupled_ppo`` is the loss for stale (asynchronous)
rollouts: PPO's clip around the learner's step-start policy, times a behaviour importance weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Callable

import torch
from annotated_types import Ge, Gt
from torch import Tensor

from rlft.algorithms.registry import Registry

LOG_RATIO_CLAMP = 20.0


@dataclass(frozen=True)
class PolicyLossInputs:
    """Token-level inputs of a policy loss; every tensor is ``[B, T]`` over completion tokens."""

    logprobs: Tensor  # current policy, carries the gradient
    old_logprobs: Tensor  # learner's policy at the start of the step (proximal policy)
    advantages: Tensor  # token-level advantages (an outcome advantage broadcast over its sequence)
    mask: Tensor  # 1 for completion tokens that count, 0 for padding / excluded tokens
    rollout_logprobs: Tensor | None = None  # behaviour policy (the rollout engine), when known

    def __post_init__(self) -> None:
        shape = self.logprobs.shape
        for name in ("old_logprobs", "advantages", "mask", "rollout_logprobs"):
            t = getattr(self, name)
            if t is not None and t.shape != shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, logprobs has {tuple(shape)}")


@dataclass(frozen=True)
class LossOutput:
    """A per-token loss ``[B, T]`` and its metrics (0-dim tensors, detached)."""

    per_token: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


PolicyLossFn = Callable[..., LossOutput]
POLICY_LOSSES: Registry[PolicyLossFn] = Registry("policy loss")


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over positions where ``mask`` is set (0 when there are none)."""
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp(min=1)


def _log_ratio(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def _surrogate(logprobs: Tensor) -> Tensor:
    """1 in value, ``d log pi`` in gradient: turns ``w * A * log pi`` objectives into ``w * A`` values."""
    return torch.exp(logprobs - logprobs.detach())


def _clipped_objective(
    ratio: Tensor, adv: Tensor, mask: Tensor, clip_low: float, clip_high: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """``max(-A * ratio, -A * clip(ratio, 1 - clip_low, 1 + clip_high))`` per token."""
    unclipped = -adv * ratio  # [B, T]
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # [B, T]
    loss = torch.maximum(unclipped, clipped)
    metrics = {
        "clip_fraction": masked_mean((clipped > unclipped).to(ratio.dtype), mask).detach(),
        "ratio_mean": masked_mean(ratio, mask).detach(),
    }
    return loss, metrics


@POLICY_LOSSES.register("ppo_clip")
def ppo_clip(
    inputs: PolicyLossInputs,
    *,
    clip_low: Annotated[float, Gt(0)] = 0.2,
    clip_high: Annotated[float, Gt(0)] = 0.2,
    dual_clip: Annotated[float, Gt(1)] | None = None,
) -> LossOutput:
    """PPO clipped surrogate (Schulman et al. 2017) with asymmetric bounds (DAPO "clip-higher").

    ``l_t = max(-A r_t, -A clip(r_t, 1 - clip_low, 1 + clip_high))``; with ``dual_clip = c > 1``
    (Ye et al. 2020) tokens with ``A < 0`` are further bounded: ``l_t = min(l_t, -c A)``.
    DAPO (Yu et al. 2025) uses ``clip_low=0.2, clip_high=0.28``.
    """
    x = inputs
    ratio = torch.exp(_log_ratio(x.logprobs, x.old_logprobs))  # [B, T]
    loss, metrics = _clipped_objective(ratio, x.advantages, x.mask, clip_low, clip_high)
    if dual_clip is not None:
        bound = -dual_clip * x.advantages  # [B, T], positive where A < 0
        dual = (x.advantages < 0) & (loss > bound)
        loss = torch.where(dual, bound, loss)
        metrics["dual_clip_fraction"] = masked_mean(dual.to(ratio.dtype), x.mask).detach()
    metrics["approx_kl"] = masked_mean(
        0.5 * _log_ratio(x.logprobs, x.old_logprobs) ** 2, x.mask
    ).detach()
    return LossOutput(loss * x.mask, metrics)


def sequence_log_ratio(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> Tensor:
    """Length-normalised sequence log-ratio ``mean_t (logprobs - old_logprobs)`` over valid tokens. [B]"""
    m = mask.to(logprobs.dtype)
    return ((logprobs - old_logprobs) * m).sum(-1) / m.sum(-1).clamp(min=1)


@POLICY_LOSSES.register("gspo")
def gspo(
    inputs: PolicyLossInputs,
    *,
    clip_low: Annotated[float, Gt(0)] = 3e-4,
    clip_high: Annotated[float, Gt(0)] = 4e-4,
) -> LossOutput:
    """Group Sequence Policy Optimization (Zheng et al. 2025).

    One ratio per sequence, ``s_i = exp(mean_t(logprobs - old_logprobs))``, clipped with the paper's
    tight bounds (defaults 3e-4 / 4e-4) and shared by the sequence's tokens. Written in the paper's
    GSPO-token form, ``s_i,t = sg(s_i) * pi_t / sg(pi_t)``: the value equals ``s_i`` and, aggregated
    with ``seq-mean-token-mean``, the gradient equals GSPO's sequence-level gradient.
    """
    x = inputs
    seq = sequence_log_ratio(x.logprobs, x.old_logprobs, x.mask).clamp(
        -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP
    )  # [B]
    ratio = torch.exp(seq.detach().unsqueeze(-1) + x.logprobs - x.logprobs.detach())  # [B, T]
    loss, metrics = _clipped_objective(ratio, x.advantages, x.mask, clip_low, clip_high)
    return LossOutput(loss * x.mask, metrics)


@POLICY_LOSSES.register("cispo")
def cispo(
    inputs: PolicyLossInputs,
    *,
    clip_high: Annotated[float, Gt(0)] = 0.28,
    clip_low: Annotated[float, Gt(0)] | None = None,
) -> LossOutput:
    """Clipped IS-weight Policy Optimization (MiniMax-M1, 2025).

    ``l_t = -sg(clip(r_t, max=1 + clip_high)) * A * log pi_t``: the importance weight is clipped, not
    the update, so every token (also the rare, high-ratio ones) keeps a gradient. ``clip_low`` adds the
    optional lower bound ``1 - clip_low`` (the paper leaves it off).
    """
    x = inputs
    ratio = torch.exp(_log_ratio(x.logprobs, x.old_logprobs)).detach()  # [B, T]
    low = None if clip_low is None else 1.0 - clip_low
    weight = ratio.clamp(min=low, max=1.0 + clip_high)
    loss = -weight * x.advantages * _surrogate(x.logprobs)
    metrics = {
        "clip_fraction": masked_mean((weight != ratio).to(ratio.dtype), x.mask),
        "ratio_mean": masked_mean(ratio, x.mask),
    }
    return LossOutput(loss * x.mask, metrics)


@POLICY_LOSSES.register("topr")
def topr(inputs: PolicyLossInputs) -> LossOutput:
    """Tapered Off-Policy REINFORCE (Le Roux et al. 2025).

    Sequences with ``A >= 0`` get the plain REINFORCE gradient (weight 1); sequences with ``A < 0`` get
    the stop-gradient weight ``clip(pi(y)/mu(y), 0, 1)``, the *sequence* probability ratio between the
    current policy and the behaviour policy ``mu`` (``rollout_logprobs`` when given, else
    ``old_logprobs``). Stable without a KL term and far off-policy. The sign is the advantage's, so
    any baseline in the advantage decides which samples count as negative.
    """
    x = inputs
    behaviour = x.rollout_logprobs if x.rollout_logprobs is not None else x.old_logprobs
    m = x.mask.to(x.logprobs.dtype)
    seq_log_ratio = ((x.logprobs - behaviour) * m).sum(-1).clamp(max=0.0)  # [B], log of min(ratio, 1)
    neg_weight = torch.exp(seq_log_ratio).detach().unsqueeze(-1)  # [B, 1]
    weight = torch.where(x.advantages >= 0, torch.ones_like(x.logprobs), neg_weight)  # [B, T]
    loss = -weight * x.advantages * _surrogate(x.logprobs)
    negative = (x.advantages < 0).to(m.dtype)
    metrics = {
        "negative_fraction": masked_mean(negative, x.mask),
        "negative_weight_mean": (weight * negative * m).sum() / (negative * m).sum().clamp(min=1),
    }
    return LossOutput(loss * x.mask, {k: v.detach() for k, v in metrics.items()})


@POLICY_LOSSES.register("decoupled_ppo", needs_rollout_logprobs=True)
def decoupled_ppo(
    inputs: PolicyLossInputs,
    *,
    clip_low: Annotated[float, Gt(0)] = 0.2,
    clip_high: Annotated[float, Gt(0)] = 0.2,
    behaviour_cap: Annotated[float, Gt(1)] | None = 5.0,
) -> LossOutput:
    """Decoupled PPO for stale rollouts (Hilton et al. 2022, "Batch size-invariance for policy
    optimization"; AReaL, Fu et al. 2025, "AReaL: a large-scale asynchronous RL system").

    PPO's clip keeps the update near the *proximal* policy (``old_logprobs``, the learner at step
    start); the samples come from the *behaviour* policy (``rollout_logprobs``, an older engine
    version in an asynchronous pipeline), corrected by an importance weight::

        r_t = exp(logprobs - old_logprobs)                # clipped, carries the gradient
        w_t = sg(exp(old_logprobs - rollout_logprobs))    # behaviour weight, a constant
        l_t = w_t * max(-A r_t, -A clip(r_t, 1 - clip_low, 1 + clip_high))

    With ``behaviour_cap = c`` (None: no cap; ``c > 1``, since a cap below 1 would drop on-policy
    tokens) tokens with ``w_t > c`` are *masked out* (weight 0, no gradient), as AReaL does: a token
    that stale carries no trustworthy signal. TIS
    (``tis_cap``) instead *truncates* the weight to ``c`` and keeps the token. The behaviour weight
    is already applied here, so leave ``tis_cap`` unset with this loss (it would apply it twice).
    When ``rollout_logprobs == old_logprobs`` (no lag, no engine mismatch) ``w_t = 1`` and this is
    ``ppo_clip``. Needs ``rollout_logprobs``.

    Metrics, all over the valid tokens (masked-out ones included, so they add up over micro-batches):
    ``clip_fraction``, ``ratio_mean``, ``approx_kl`` as in ``ppo_clip``;
    ``behaviour_weight_mean`` is the mean weight as applied (0 on masked-out tokens) and
    ``behaviour_masked_fraction`` the share of tokens masked out, both over valid tokens.

    >>> lp = torch.zeros(1, 2)                  # ratio 1 on both tokens, A = +1 and -1
    >>> x = PolicyLossInputs(lp, lp, torch.tensor([[1.0, -1.0]]), torch.ones(1, 2),
    ...                      rollout_logprobs=torch.tensor([[-0.5, -2.0]]))   # w = e^0.5, e^2
    >>> decoupled_ppo(x).per_token              # -w A = -e^0.5; e^2 = 7.39 > 5: masked out
    tensor([[-1.6487,  0.0000]])
    """
    x = inputs
    if x.rollout_logprobs is None:
        raise ValueError(
            "decoupled_ppo needs rollout_logprobs (the behaviour policy's log-probs of the sampled tokens)"
        )
    ratio = torch.exp(_log_ratio(x.logprobs, x.old_logprobs))  # [B, T]
    loss, metrics = _clipped_objective(ratio, x.advantages, x.mask, clip_low, clip_high)
    weight = torch.exp(_log_ratio(x.old_logprobs, x.rollout_logprobs)).detach()  # [B, T]
    if behaviour_cap is not None:
        masked_out = weight > behaviour_cap  # [B, T]
        weight = torch.where(masked_out, torch.zeros_like(weight), weight)
        metrics["behaviour_masked_fraction"] = masked_mean(masked_out.to(weight.dtype), x.mask)
    else:
        metrics["behaviour_masked_fraction"] = masked_mean(torch.zeros_like(weight), x.mask)
    metrics["behaviour_weight_mean"] = masked_mean(weight, x.mask)
    metrics["approx_kl"] = masked_mean(0.5 * _log_ratio(x.logprobs, x.old_logprobs) ** 2, x.mask)
    return LossOutput(loss * weight * x.mask, {k: v.detach() for k, v in metrics.items()})


@POLICY_LOSSES.register("reinforce")
def reinforce(inputs: PolicyLossInputs) -> LossOutput:
    """On-policy REINFORCE (Williams 1992): gradient ``-A * d log pi_t``, value ``-A``.

    No importance ratio: use it when samples come from the current policy (one update per batch), or
    add ``tis_cap`` to correct for the rollout engine's numerics.
    """
    x = inputs
    return LossOutput(-x.advantages * _surrogate(x.logprobs) * x.mask, {})


def truncated_importance_weights(
    old_logprobs: Tensor,  # [B, T]
    rollout_logprobs: Tensor,  # [B, T]
    *,
    cap: float,
) -> Tensor:
    """Truncated importance sampling (TIS; Yao et al. 2025, "Your efficient RL framework secretly
    brings you off-policy RL training"): ``min(exp(old_logprobs - rollout_logprobs), cap)``, detached.

    Corrects for the mismatch between the rollout engine (vLLM kernels, sampling numerics) and the
    learner's own computation of the same policy. [B, T]
    """
    if cap <= 0:
        raise ValueError(f"TIS cap must be > 0, got {cap}")
    return torch.exp(_log_ratio(old_logprobs, rollout_logprobs)).clamp(max=cap).detach()


def compute_policy_loss(
    name: str,
    inputs: PolicyLossInputs,
    params: dict[str, Any] | None = None,
    *,
    tis_cap: float | None = None,
) -> LossOutput:
    """Run the registered loss ``name``; with ``tis_cap`` multiply it by the TIS weights.

    >>> x = PolicyLossInputs(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2))
    >>> compute_policy_loss("ppo_clip", x).per_token
    tensor([[-1., -1.]])
    """
    out = POLICY_LOSSES.get(name)(inputs, **(params or {}))
    if tis_cap is None:
        return out
    if inputs.rollout_logprobs is None:
        raise ValueError("tis_cap is set but the batch has no rollout_logprobs")
    w = truncated_importance_weights(inputs.old_logprobs, inputs.rollout_logprobs, cap=tis_cap)
    metrics = dict(out.metrics)
    metrics["tis_weight_mean"] = masked_mean(w, inputs.mask)
    metrics["tis_capped_fraction"] = masked_mean((w >= tis_cap).to(w.dtype), inputs.mask)
    return LossOutput(out.per_token * w, metrics)
