"""Reduction of a per-token loss ``[B, T]`` to a scalar.

Modes (``AGGREGATION_MODES``):

* ``token-mean``: ``sum(loss * mask) / N_tokens``, every valid token of the *global* batch weighs the
  same (DAPO). Pass ``global_tokens`` (the token count of the whole batch across data-parallel ranks
  and micro-batches) and the shard values add up exactly to the full-batch value.
* ``seq-mean-token-mean``: mean over sequences of each sequence's token mean (GRPO's original form).
  Sequences without a valid token are left out. Shards add up with ``global_seqs``.
* ``seq-mean-token-sum-norm``: mean over sequences of ``sum_t loss / max_len`` (Dr. GRPO), a constant
  normaliser that removes the length bias. ``max_len`` defaults to ``T``; pass the configured maximum
  response length so micro-batches with different padding agree. Shards add up with ``global_seqs``.

>>> import torch
>>> loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
>>> mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
>>> aggregate(loss, mask, "token-mean")
tensor(2.5000)
>>> aggregate(loss, mask, "seq-mean-token-mean")
tensor(3.)
>>> aggregate(loss, mask, "seq-mean-token-sum-norm", max_len=4)
tensor(1.2500)
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

AggregationMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
AGGREGATION_MODES: tuple[str, ...] = get_args(AggregationMode)


def aggregate(
    per_token: Tensor,  # [B, T]
    mask: Tensor,  # [B, T]
    mode: str,
    *,
    global_tokens: int | float | Tensor | None = None,
    global_seqs: int | float | Tensor | None = None,
    max_len: int | None = None,
) -> Tensor:
    """Reduce ``per_token`` over the valid positions of ``mask`` with ``mode`` (see the module doc)."""
    if per_token.shape != mask.shape or per_token.dim() != 2:
        raise ValueError(
            f"per_token and mask must share one [B, T] shape, got {tuple(per_token.shape)} "
            f"and {tuple(mask.shape)}"
        )
    m = mask.to(per_token.dtype)
    masked = per_token * m  # [B, T]
    if mode == "token-mean":
        return masked.sum() / _count(m.sum(), global_tokens)
    tokens_per_seq = m.sum(-1)  # [B]
    has_tokens = (tokens_per_seq > 0).to(per_token.dtype)  # [B]
    n_seqs = _count(has_tokens.sum(), global_seqs)
    if mode == "seq-mean-token-mean":
        seq_loss = masked.sum(-1) / tokens_per_seq.clamp(min=1)  # [B]
    elif mode == "seq-mean-token-sum-norm":
        norm = per_token.shape[-1] if max_len is None else max_len
        if norm <= 0:
            raise ValueError(f"max_len must be > 0, got {norm}")
        seq_loss = masked.sum(-1) / norm  # [B]
    else:
        raise ValueError(f"unknown aggregation mode '{mode}'; valid modes: {', '.join(AGGREGATION_MODES)}")
    return (seq_loss * has_tokens).sum() / n_seqs


def _count(local: Tensor, global_count: int | float | Tensor | None) -> Tensor:
    """The denominator: the global count when given, else the local one; at least 1, so a step
    whose tokens are all masked (e.g. every reward failed) gives a loss of 0, not NaN."""
    count = local if global_count is None else torch.as_tensor(global_count, dtype=local.dtype, device=local.device)
    return count.clamp(min=1)
