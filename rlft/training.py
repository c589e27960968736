"""Pure torch helpers of the learner: token log-probabilities, entropy, the LR schedule, batch
splitting and the loss of one micro-batch.

Nothing here knows about Ray, vLLM, processes or configs: the learner actor (``actors/learner.py``)
gathers the global counts across ranks and passes them in as numbers.

Alignment follows ``rlft.types.collate``: for ``input_ids [B, L]`` every per-token tensor is
``[B, L-1]`` and position ``t`` scores the token ``input_ids[:, t + 1]`` (predicted from the logits
at position ``t``).

>>> import torch
>>> logits = torch.zeros(1, 3, 4)                     # a uniform model over 4 tokens
>>> token_logprobs(logits, torch.tensor([[0, 1, 2]]))  # log(1/4) for each next token
tensor([[-1.3863, -1.3863]])
>>> token_entropy(logits, 1.0)                        # log(4)
tensor([[1.3863, 1.3863]])
>>> [round(lr_factor(s, warmup_steps=2, total_steps=6, schedule="linear"), 2) for s in range(7)]
[0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from rlft.algorithms import KL_ESTIMATORS, SFT_LOSSES, LossOutput, PolicyLossInputs, aggregate, compute_policy_loss
from rlft.algorithms.guidance import shaped_demo_loss
from rlft.algorithms.sft_losses import needs_reference

Schedule = Literal["constant", "linear", "cosine"]


# Tokens per chunk of token_logprobs / token_entropy: at a 152k vocabulary one float32 chunk is ~0.6 GB,
# against ~10 GB for a float32 log-softmax of 16k tokens; at that size a chunk's Python loop costs nothing.
LOGPROB_CHUNK_TOKENS = 1024


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _check_chunk_tokens(chunk_tokens: int) -> None:
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")


def _upcast(x: Tensor) -> Tensor:
    """float32 for half-precision logits (a logsumexp over the vocabulary in bf16 loses digits)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _compute_dtype(logits: Tensor) -> torch.dtype:
    """The dtype ``_upcast`` gives ``logits``: float64 stays, everything else is float32."""
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def _scaled(chunk: Tensor, temperature: float) -> Tensor:
    """``chunk / temperature`` in float32 (or float64): the ``z`` of ``softmax(z)``. [n, V]"""
    z = _upcast(chunk)
    return z / temperature if temperature != 1.0 else z


def _flat_targets(input_ids: Tensor) -> Tensor:
    """Target of every flattened position: ``input_ids[:, t + 1]``, and a dummy 0 at each row's last
    position (its output is dropped), so the logits need no ``[B, L-1, V]`` slice. [B*L]"""
    targets = torch.zeros_like(input_ids, dtype=torch.long)  # [B, L]
    targets[:, :-1] = input_ids[:, 1:]
    return targets.reshape(-1)


def _logprobs_forward(
    logits: Tensor, targets: Tensor, temperature: float, chunk_tokens: int
) -> tuple[Tensor, Tensor]:
    """``(log p(target), logsumexp(z))`` of each row of ``logits [N, V]``, ``chunk_tokens`` rows at a
    time. ([N], [N])"""
    n = logits.shape[0]
    out = torch.empty(n, dtype=_compute_dtype(logits), device=logits.device)
    lse = torch.empty_like(out)
    for start in range(0, n, chunk_tokens):
        rows = slice(start, start + chunk_tokens)
        out[rows], lse[rows] = _chunk_logprobs(logits[rows], targets[rows], temperature)
    return out, lse


def _chunk_logprobs(chunk: Tensor, targets: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """``(log p(target), logsumexp(z))`` of one chunk ``[n, V]``; its float32 work dies on return
    (a loop variable would keep the last chunk's alive while the next one is built). ([n], [n])"""
    z = _scaled(chunk, temperature)  # [n, V]
    lse = torch.logsumexp(z, dim=-1)  # [n]
    return z.gather(-1, targets[:, None]).squeeze(-1) - lse, lse


def _logprobs_backward(
    grad_out: Tensor,
    logits: Tensor,
    targets: Tensor,
    lse: Tensor,
    temperature: float,
    chunk_tokens: int,
) -> Tensor:
    """d sum(grad_out * log p(target)) / d logits = ``g * (onehot(target) - p) / temperature``, with
    ``p`` recomputed from the saved ``lse`` one chunk at a time. [N, V], the logits' dtype"""
    grad = torch.empty_like(logits)
    for start in range(0, logits.shape[0], chunk_tokens):
        rows = slice(start, start + chunk_tokens)
        grad[rows] = _chunk_grad(grad_out[rows], logits[rows], targets[rows], lse[rows], temperature)
    return grad


def _chunk_grad(g: Tensor, chunk: Tensor, targets: Tensor, lse: Tensor, temperature: float) -> Tensor:
    """``g * (onehot(target) - p) / temperature`` for one chunk ``[n, V]``, in float32. [n, V]"""
    g = g[:, None].to(lse.dtype)  # [n, 1]
    p = (_scaled(chunk, temperature) - lse[:, None]).exp_()  # [n, V]
    grad_z = p.mul_(-g).scatter_add_(-1, targets[:, None], g)
    return grad_z.div_(temperature) if temperature != 1.0 else grad_z


class _ChunkedTokenLogprobs(torch.autograd.Function):
    """Autograd of ``_logprobs_forward``: saves the logits as they are, the targets and ``lse [N]``,
    never a float32 ``[N, V]`` copy; the backward recomputes the softmax chunk by chunk."""

    @staticmethod
    def forward(
        ctx: Any, logits: Tensor, targets: Tensor, temperature: float, chunk_tokens: int
    ) -> Tensor:
        out, lse = _logprobs_forward(logits, targets, temperature, chunk_tokens)
        ctx.save_for_backward(logits, targets, lse)
        ctx.temperature, ctx.chunk_tokens = temperature, chunk_tokens
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, None, None, None]:
        logits, targets, lse = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        grad = _logprobs_backward(grad_out, logits, targets, lse, ctx.temperature, ctx.chunk_tokens)
        return grad, None, None, None


def token_logprobs(
    logits: Tensor,
    input_ids: Tensor,
    temperature: float = 1.0,
    *,
    chunk_tokens: int = LOGPROB_CHUNK_TOKENS,
) -> Tensor:
    """Log-probability of each next token under ``softmax(logits / temperature)``. [B, L-1]

    ``logits [B, L, V]`` are a causal LM's outputs for ``input_ids [B, L]``. Computed over the
    flattened ``B * L`` tokens, ``chunk_tokens`` at a time, as ``gather - logsumexp``; the backward
    recomputes each chunk's softmax from the saved logsumexp. The peak extra memory is one float32
    ``[chunk_tokens, V]`` chunk (a few, transiently) instead of a ``[B, L, V]`` log-softmax: the
    vocabulary dominates the activations of LLMs. Half-precision logits are upcast to float32 one
    chunk at a time; the result is float32 (float64 for float64 logits).

    >>> logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [9.0, 9.0]]])
    >>> token_logprobs(logits, torch.tensor([[1, 0, 1]]))   # p(0 | pos 0) = 1/2, p(1 | pos 1) = 1/(1+e^2)
    tensor([[-0.6931, -2.1269]])
    >>> token_logprobs(logits, torch.tensor([[1, 0, 1]]), temperature=2.0)[0, 1]  # 1/(1+e^1)
    tensor(-1.3133)
    >>> token_logprobs(logits, torch.tensor([[1, 0, 1]]), chunk_tokens=1)   # same values, any chunk
    tensor([[-0.6931, -2.1269]])
    """
    _check_temperature(temperature)
    _check_chunk_tokens(chunk_tokens)
    if logits.dim() != 3 or input_ids.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits [B, L, V] and input_ids [B, L], got {tuple(logits.shape)} "
            f"and {tuple(input_ids.shape)}"
        )
    b, length, v = logits.shape
    flat = logits.reshape(b * length, v)  # a view for a contiguous model output
    targets = _flat_targets(input_ids)  # [B*L]
    out = _ChunkedTokenLogprobs.apply(flat, targets, temperature, chunk_tokens)  # [B*L]
    return out.view(b, length)[:, :-1]


@torch.no_grad()
def token_entropy(
    logits: Tensor, temperature: float = 1.0, *, chunk_tokens: int = LOGPROB_CHUNK_TOKENS
) -> Tensor:
    """Entropy of each next-token distribution ``softmax(logits / temperature)``, aligned like
    ``token_logprobs`` (position ``t`` is the distribution that picks token ``t + 1``). [B, L-1]

    ``H = logsumexp(z) - sum(softmax(z) * z)`` over the flattened tokens, ``chunk_tokens`` at a time
    (half precision upcast per chunk), without gradients: it is a metric of detached logits.

    >>> token_entropy(torch.tensor([[[0.0, 0.0], [50.0, 0.0], [0.0, 0.0]]]))  # fair coin, certain
    tensor([[0.6931, 0.0000]])
    """
    _check_temperature(temperature)
    _check_chunk_tokens(chunk_tokens)
    if logits.dim() != 3:
        raise ValueError(f"expected logits [B, L, V], got {tuple(logits.shape)}")
    b, length, v = logits.shape
    flat = logits.reshape(b * length, v)  # [B*L, V], a view for a contiguous model output
    out = torch.empty(b * length, dtype=_compute_dtype(logits), device=logits.device)
    for start in range(0, b * length, chunk_tokens):
        rows = slice(start, start + chunk_tokens)
        out[rows] = _chunk_entropy(_scaled(flat[rows], temperature))
    return out.view(b, length)[:, :-1]


def _chunk_entropy(z: Tensor) -> Tensor:
    """Entropy of ``softmax(z)`` for each row of ``z [n, V]``. [n]"""
    lse = torch.logsumexp(z, dim=-1)  # [n]
    p = (z - lse[:, None]).exp_()  # [n, V]
    # a -inf logit (a masked token) has p = 0 and contributes 0, not 0 * -inf = nan
    zero = p == 0
    return lse - p.mul_(z).masked_fill_(zero, 0.0).sum(-1)


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: Schedule) -> float:
    """Multiplier of the peak learning rate at training step ``step`` (counted from 0).

    Linear warm-up over the first ``warmup_steps`` steps, ``(step + 1) / warmup_steps``, so the first
    step already learns (a factor of 0 would waste it); then ``constant`` stays at 1, ``linear`` and
    ``cosine`` decay to 0 at ``step == total_steps`` (one past the last step) and stay there.

    >>> lr_factor(0, warmup_steps=4, total_steps=10, schedule="constant")
    0.25
    >>> lr_factor(7, warmup_steps=0, total_steps=10, schedule="constant")
    1.0
    >>> lr_factor(5, warmup_steps=0, total_steps=10, schedule="cosine")
    0.5
    """
    if step < 0 or warmup_steps < 0 or total_steps < 1:
        raise ValueError(
            f"need step >= 0, warmup_steps >= 0, total_steps >= 1; got {step}, {warmup_steps}, {total_steps}"
        )
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr schedule '{schedule}'; valid: constant, linear, cosine")


def split_evenly(n: int, parts: int) -> list[range]:
    """``parts`` contiguous index ranges covering ``range(n)``, sizes differing by at most one (the
    same rule as ``TrainBatch.shard``). Some ranges are empty when ``n < parts``.

    >>> [list(r) for r in split_evenly(5, 2)]
    [[0, 1], [2, 3, 4]]
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    return [range(i * n // parts, (i + 1) * n // parts) for i in range(parts)]


def counted_sequences(mask: Tensor) -> int:
    """Sequences with at least one valid token: the denominator of the ``seq-mean-*`` modes
    (``aggregate`` leaves the others out too). ``mask [B, T]``."""
    return int((mask.sum(-1) > 0).sum().item())


def logprob_mismatch(a: Tensor, b: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Sum and max of ``|a - b|`` over valid tokens (for learner-vs-rollout log-prob drift; the caller
    divides the sum by the global token count). Returns 0-dim tensors.

    >>> logprob_mismatch(torch.tensor([[0.0, -1.0]]), torch.tensor([[0.5, 0.0]]), torch.tensor([[1, 0]]))
    (tensor(0.5000), tensor(0.5000))
    """
    diff = (a - b).abs() * mask.to(a.dtype)  # [B, T]
    return diff.sum(), (diff.max() if diff.numel() else diff.new_zeros(()))


def staleness_sums(
    old_logprobs: Tensor,  # [B, T]
    rollout_logprobs: Tensor | None,  # [B, T]
    mask: Tensor,  # [B, T]
    policy_versions: Tensor | None,  # [B]
    version: int,
) -> dict[str, Tensor]:
    """One micro-batch's sums and maxima (0-dim tensors) for the learner's off-policy metrics; the
    caller adds the sums (max-reduces the ``*_max`` entries) over micro-batches and ranks, then divides.

    * ``mismatch_{sum,tokens,max}``: ``|old_logprobs - rollout_logprobs|`` over all counted tokens
      (when ``rollout_logprobs`` are given).
    * ``mismatch_lag0_{sum,tokens,max}``: the same over the sequences sampled by exactly ``version``
      (the learner's weights at step start), so only rollout-engine numerics remain, not staleness
      (needs both ``rollout_logprobs`` and ``policy_versions``).
    * ``version_lag_{sum,tokens,max}``: the lag ``version - policy_version``, *token-weighted* (each
      counted token carries its sequence's lag, as it weighs in a ``token-mean`` loss); the max is
      over sequences with a counted token and ``-inf`` when there are none (needs ``policy_versions``).

    >>> old, ro = torch.zeros(2, 2), torch.tensor([[0.0, 0.1], [0.5, 0.5]])
    >>> s = staleness_sums(old, ro, torch.tensor([[1, 1], [1, 0]]), torch.tensor([3, 2]), version=3)
    >>> [round(float(s[k]), 4) for k in ("mismatch_sum", "mismatch_lag0_sum", "mismatch_lag0_tokens")]
    [0.6, 0.1, 2.0]
    >>> float(s["version_lag_sum"]), float(s["version_lag_tokens"]), float(s["version_lag_max"])
    (1.0, 3.0, 1.0)
    """
    out: dict[str, Tensor] = {}
    if rollout_logprobs is not None:
        out["mismatch_sum"], out["mismatch_max"] = logprob_mismatch(old_logprobs, rollout_logprobs, mask)
        out["mismatch_tokens"] = mask.sum()
        if policy_versions is not None:
            lag0 = mask * (policy_versions == version).unsqueeze(-1).to(mask.dtype)  # [B, T]
            out["mismatch_lag0_sum"], out["mismatch_lag0_max"] = logprob_mismatch(old_logprobs, rollout_logprobs, lag0)
            out["mismatch_lag0_tokens"] = lag0.sum()
    if policy_versions is not None:
        tokens = mask.sum(-1)  # [B]
        lag = (version - policy_versions).to(tokens.dtype)  # [B]
        out["version_lag_sum"] = (lag * tokens).sum()
        out["version_lag_tokens"] = tokens.sum()
        out["version_lag_max"] = torch.where(tokens > 0, lag, -math.inf).max()
    return out


@dataclass(frozen=True)
class Objective:
    """What the learner optimises, with the hyperparameters resolved (built once from the config)."""

    loss_name: str
    loss_params: dict[str, Any]
    aggregation: str
    tis_cap: float | None = None
    kl_estimator: str = "k3"
    kl_coef: float = 0.0  # > 0 adds ``kl_coef * aggregate(KL)`` to the loss
    supervised: bool = False  # SFT: ``loss_name`` is an SFT objective (``SFT_LOSSES``), no policy loss
    # demonstration tokens, instead of the policy loss: LUFFY's shaped weight (with ``demo_gamma``)
    # plus ``demo_sft_coef`` times their NLL (SRFT; Prefix-RFT's imitation of a prefix alone)
    demo_gamma: float | None = None
    demo_sft_coef: float = 0.0

    @property
    def needs_reference(self) -> bool:
        """Whether the loss reads the reference policy's log-probs (a KL term, or ASFT's anchor)."""
        return needs_reference(self.loss_name) if self.supervised else self.kl_coef > 0


def sft_objective(name: str = "nll", params: dict[str, Any] | None = None) -> Objective:
    """The objective of an SFT step with the SFT loss ``name`` (``rlft.algorithms.SFT_LOSSES``),
    averaged over the demonstration tokens of the whole batch.

    >>> sft_objective("asft", {"kl_coef": 0.1}).needs_reference, SFT_OBJECTIVE.loss_name
    (True, 'nll')
    """
    return Objective(name, dict(SFT_LOSSES.validate_params(name, params or {})), "token-mean", supervised=True)


SFT_OBJECTIVE = sft_objective()


@dataclass(frozen=True)
class MicroBatchLoss:
    """The loss of one micro-batch, already divided by the global counts, and its metric sums."""

    loss: Tensor  # 0-dim, carries the gradient: policy + KL term
    policy_loss: Tensor  # 0-dim, detached
    kl_loss: Tensor  # 0-dim, detached (0 without a KL term)
    token_sums: dict[str, Tensor]  # metric * valid tokens, for token-weighted averages across ranks


def micro_batch_loss(
    objective: Objective,
    *,
    logprobs: Tensor,  # [B, T], carries the gradient
    old_logprobs: Tensor,  # [B, T]
    advantages: Tensor,  # [B, T]
    mask: Tensor,  # [B, T]
    rollout_logprobs: Tensor | None = None,  # [B, T]
    ref_logprobs: Tensor | None = None,  # [B, T]
    demonstrations: Tensor | None = None,  # [B, T], 1 on off-policy demonstration tokens
    global_tokens: float,
    global_seqs: float,
    max_len: int,
) -> MicroBatchLoss:
    """Policy loss (+ KL term) of one micro-batch, normalised by the counts of the *global*
    mini-batch: summing the results over micro-batches and data-parallel ranks gives exactly the loss
    of the whole mini-batch, whatever the split.

    >>> obj = Objective("reinforce", {}, "token-mean")
    >>> out = micro_batch_loss(obj, logprobs=torch.zeros(1, 2), old_logprobs=torch.zeros(1, 2),
    ...     advantages=torch.ones(1, 2), mask=torch.ones(1, 2), global_tokens=4, global_seqs=2, max_len=2)
    >>> out.loss   # two of the mini-batch's four tokens, each with loss -A = -1
    tensor(-0.5000)
    """
    inputs = PolicyLossInputs(logprobs, old_logprobs, advantages, mask, rollout_logprobs)
    if objective.supervised:  # SFT: e.g. -log pi of each response token; advantages are ignored
        anchor = ref_logprobs if objective.needs_reference else None
        out = LossOutput(SFT_LOSSES.get(objective.loss_name)(logprobs, anchor, **objective.loss_params) * mask)
    else:
        out = compute_policy_loss(objective.loss_name, inputs, objective.loss_params, tis_cap=objective.tis_cap)
        if demonstrations is not None and (objective.demo_gamma is not None or objective.demo_sft_coef > 0):
            # demonstration tokens: no ratio to a behaviour policy, no clipping
            demo = -objective.demo_sft_coef * logprobs
            if objective.demo_gamma is not None:
                demo = demo + shaped_demo_loss(logprobs, advantages, gamma=objective.demo_gamma)
            out = LossOutput(torch.where(demonstrations > 0, demo, out.per_token), out.metrics)
    norm = dict(global_tokens=max(global_tokens, 1.0), global_seqs=max(global_seqs, 1.0), max_len=max_len)
    policy = aggregate(out.per_token, mask, objective.aggregation, **norm)
    n_tokens = mask.sum()
    token_sums = {k: v.detach() * n_tokens for k, v in out.metrics.items()}
    loss, kl_loss = policy, policy.new_zeros(())
    if ref_logprobs is not None:
        kl = KL_ESTIMATORS.get(objective.kl_estimator)(logprobs, ref_logprobs)  # [B, T]
        token_sums["kl"] = (kl.detach() * mask).sum()
        if objective.kl_coef > 0:
            kl_loss = objective.kl_coef * aggregate(kl, mask, objective.aggregation, **norm)
            loss = policy + kl_loss
    return MicroBatchLoss(loss, policy.detach(), kl_loss.detach(), token_sums)


def loss_metric_names(objective: Objective) -> list[str]:
    """Names of the metrics the configured loss reports, found by running it on a 1x1 dummy batch:
    every rank needs the same list before any collective, even a rank with no samples."""
    if objective.supervised:
        return []
    one = torch.zeros(1, 1)
    inputs = PolicyLossInputs(one, one, one, torch.ones(1, 1), one)
    out = compute_policy_loss(objective.loss_name, inputs, objective.loss_params, tis_cap=objective.tis_cap)
    return sorted(out.metrics)
