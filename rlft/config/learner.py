"""Optimisation: the policy's ``learner`` group and PPO's optional ``critic``.

>>> LearnerConfig().betas
(0.9, 0.999)
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from rlft.config.base import NonNegative, Positive, Section


class CriticConfig(Section):
    """PPO's learned value model (setting ``critic`` makes the RL stages PPO with GAE advantages).

    A causal-LM backbone with a scalar value head, trained on its own group of ranks with its own
    AdamW. Each step: the critic values the batch, GAE turns token rewards (the outcome reward on the
    last token, minus beta x KL per token with ``algo.kl.placement: reward``) into advantages and
    returns, the critic regresses the returns, and the policy trains on the whitened advantages."""

    model_path: str | None = None
    """Backbone of the value model; None starts from the policy's model (``model.path``)."""
    num_ranks: Annotated[int, Field(ge=1)] = 1
    """Data-parallel critic ranks."""
    lr: Positive = 1e-5
    """AdamW learning rate of the critic (constant)."""
    weight_decay: NonNegative = 0.0
    """AdamW weight decay."""
    max_grad_norm: Positive | None = 1.0
    """Clip the critic's global gradient norm; None disables clipping."""
    micro_batch_size: Annotated[int, Field(ge=1)] | None = None
    """At most this many sequences per forward/backward pass on one critic rank (None: no cap)."""
    max_tokens_per_micro_batch: Annotated[int, Field(ge=1)] | None = 1024
    """Token budget of one pass (rows x longest row), as ``learner.max_tokens_per_micro_batch``."""
    epochs: Annotated[int, Field(ge=1)] = 1
    """Critic optimizer steps per batch."""
    value_clip: Positive | None = 0.2
    """Clip the new value to within this of the old one in the loss (PPO2); None: plain squared error."""
    value_loss_coef: Positive = 0.5
    """Weight of the value loss."""
    gamma: Annotated[float, Field(ge=0, le=1)] = 1.0
    """GAE discount."""
    lam: Annotated[float, Field(ge=0, le=1)] = 0.95
    """GAE lambda."""
    whiten_advantages: bool = True
    """Normalise the advantages over the batch's valid tokens (zero mean, unit variance)."""
    warmup_steps: Annotated[int, Field(ge=0)] = 0
    """RL steps at the start that train only the critic (the policy and its engines stay put)."""


class LearnerConfig(Section):
    num_ranks: Annotated[int, Field(ge=1)] = 1
    """Data-parallel learner ranks (one torch.distributed process each)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device of the learner; ``auto`` takes CUDA when Ray gives the rank a GPU."""
    lr: Positive = 1e-6
    """Peak learning rate of AdamW."""
    weight_decay: NonNegative = 0.0
    """AdamW weight decay."""
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    """AdamW betas."""
    adam_eps: Positive = 1e-8
    """AdamW epsilon."""
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    """Decay after warm-up (to 0 at the last step for linear and cosine)."""
    warmup_steps: Annotated[int, Field(ge=0)] = 0
    """Steps of linear warm-up from 0 to ``lr``."""
    max_grad_norm: Positive | None = 1.0
    """Clip the global gradient norm to this value; None disables clipping."""
    max_consecutive_skips: Annotated[int, Field(ge=1)] = 5
    """Stop the run when this many learner steps in a row are skipped for a non-finite loss or
    gradient (a skipped step leaves weights and optimizer state untouched)."""
    micro_batch_size: Annotated[int, Field(ge=1)] | None = None
    """At most this many sequences per forward/backward pass on one rank (None: no cap). Without a
    token budget it is the fixed number of sequences per pass (gradient accumulation above it)."""
    max_tokens_per_micro_batch: Annotated[int, Field(ge=1)] | None = 1024
    """Token budget of one forward/backward pass: each mini-batch's samples are sorted by length and
    packed first-fit decreasing into passes costing at most this many token positions (rows x longest
    row padded, summed lengths packed); a longer sample gets a pass of its own. The loss and the
    gradient do not depend on the split. None: fixed ``micro_batch_size`` passes in sample order
    (padding each to its longest sequence). Also used for the step-start and reference log-probs.
    1024 measured fastest on a 2-core CPU (``bench/learner.py``); on a GPU raise it (8k-32k)."""
    packing: bool = False
    """Padding-free packing: each pass is one row of whole sequences end to end, positions restarting
    per sequence and attention confined to each (transformers' packed-sequence masks; varlen kernels
    with flash-attention on GPU). Exact; on CPU length-sorted padded passes measured faster."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Compute precision of the policy's forward and backward. ``bf16``: matmuls in bf16 (autocast;
    FSDP's mixed precision on GPU), master weights and AdamW state in fp32, log-probs in fp32. On a CPU
    without AMX-BF16 or AVX512-BF16 it falls back to fp32, and the start-up line says so."""
    ppo_epochs: Annotated[int, Field(ge=1)] = 1
    """Passes over each rollout batch."""
    mini_batches: Annotated[int, Field(ge=1)] = 1
    """Optimizer steps per epoch (the batch is split into this many mini-batches)."""
