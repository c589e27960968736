"""Micro-batches by token budget, padding-free packing, and the learner's precision.

Pure torch and Python: the learner, the critic and the reference actor call these.

**Token budget.** ``plan_micro_batches`` sorts a mini-batch's samples by length and packs them,
first-fit decreasing, into micro-batches whose *cost* stays within ``max_tokens``: the padded size
``rows x longest`` (padded layout) or the summed lengths (packed layout). A sample longer than the
budget gets a micro-batch of its own. Because every loss is divided by the counts of the global
mini-batch, the split changes the order of floating-point sums and nothing else.

**Packing.** ``ForwardBatch.packed`` lays several sequences end to end in one row, with position ids
that restart at 0 for each sequence; transformers (>= 4.53) then confines attention to each sequence
(a block-diagonal causal mask with SDPA, varlen kernels with flash-attention). ``ForwardBatch.padded``
maps the row's per-token outputs back to the padded ``[B, L-1]`` layout of ``rlft.types.collate``, so
the loss code sees the same tensors either way.

>>> lengths = [3, 9, 4, 8]
>>> plan_micro_batches(lengths, max_tokens=18)          # padded cost: rows x longest
[[1, 3], [0, 2]]
>>> plan_micro_batches(lengths, max_tokens=12, packed=True)   # packed cost: summed lengths
[[0, 1], [2, 3]]
>>> plan_micro_batches(lengths, max_seqs=3)            # no budget: fixed counts, in order
[[0, 1, 2], [3]]
>>> from rlft.types import TrainSample
>>> fb = ForwardBatch.packed([TrainSample([5], [6, 7], [1.0, 1.0]), TrainSample([8, 9], [4], [1.0])])
>>> fb.inputs["input_ids"].tolist(), fb.inputs["position_ids"].tolist()
([[5, 6, 7, 8, 9, 4]], [[0, 1, 2, 0, 1, 2]])
>>> fb.padded(torch.arange(1.0, 6.0).unsqueeze(0))   # row outputs 1..5 -> [B=2, L-1=2]
tensor([[1., 2.],
        [4., 5.]])
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

Precision = Literal["fp32", "bf16"]


def plan_micro_batches(
    lengths: Sequence[int],
    *,
    max_tokens: int | None = None,
    max_seqs: int | None = None,
    packed: bool = False,
) -> list[list[int]]:
    """Indices of ``lengths`` grouped into micro-batches.

    With ``max_tokens``: first-fit decreasing over the samples sorted longest first (ties keep their
    order), each micro-batch holding at most ``max_seqs`` samples and costing at most ``max_tokens``
    (``rows x longest`` padded, ``sum`` packed) unless it is a single sample; within a micro-batch the
    samples keep their order. Without it: consecutive groups of ``max_seqs`` samples in their given
    order (all of them when ``max_seqs`` is None).
    """
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}")
    if max_seqs is not None and max_seqs < 1:
        raise ValueError(f"max_seqs must be >= 1 or None, got {max_seqs}")
    n = len(lengths)
    if max_tokens is None:
        size = max_seqs or max(n, 1)
        return [list(range(i, min(i + size, n))) for i in range(0, n, size)]
    order = sorted(range(n), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    costs: list[tuple[int, int]] = []  # (longest, summed) of each bin
    for i in order:
        length = lengths[i]
        for b, (longest, summed) in enumerate(costs):
            if max_seqs is not None and len(bins[b]) >= max_seqs:
                continue
            cost = summed + length if packed else (len(bins[b]) + 1) * max(longest, length)
            if cost <= max_tokens:
                bins[b].append(i)
                costs[b] = (max(longest, length), summed + length)
                break
        else:
            bins.append([i])
            costs.append((length, length))
    # within a pass the samples keep their batch order: a plan of one pass is then the old single
    # padded pass exactly, bit for bit (the rows' order sets the order of the gradient's sums)
    return [sorted(b) for b in bins]


@dataclass(frozen=True)
class ForwardBatch:
    """The model inputs of one micro-batch and the map from its outputs to the padded layout.

    ``inputs``: keyword arguments of the causal LM (``input_ids`` and ``attention_mask`` padded;
    ``input_ids`` and ``position_ids`` packed). ``ids``: the token ids whose next-token outputs the
    caller computes (``[rows, width]``). ``index``/``valid``: for packed rows, where padded position
    ``[b, t]`` sits in the row's ``[1, width-1]`` outputs (None when padded)."""

    inputs: dict[str, Tensor]
    index: Tensor | None = None  # [B, L-1] long
    valid: Tensor | None = None  # [B, L-1] bool
    tokens: int = 0  # real (non-padding) tokens
    slots: int = 0  # token positions the forward pass computes

    @property
    def ids(self) -> Tensor:
        return self.inputs["input_ids"]

    @staticmethod
    def padded_from(input_ids: Tensor, attention_mask: Tensor) -> ForwardBatch:
        """The padded layout of ``collate``'s tensors."""
        return ForwardBatch({"input_ids": input_ids, "attention_mask": attention_mask},
                            tokens=int(attention_mask.sum()), slots=input_ids.numel())

    @staticmethod
    def packed(samples: Sequence[Any]) -> ForwardBatch:
        """All ``samples`` (``TrainSample``s) end to end in one row, positions restarting per sample."""
        seqs = [list(s.prompt_ids) + list(s.completion_ids) for s in samples]
        lengths = [len(x) for x in seqs]
        if not seqs or min(lengths) < 1:
            raise ValueError("packing needs at least one non-empty sample")
        width = max(lengths) - 1  # the padded layout's [B, L-1]
        starts = torch.tensor([0, *lengths[:-1]]).cumsum(0)  # [B]
        t = torch.arange(width)  # [L-1]
        valid = t.unsqueeze(0) < (torch.tensor(lengths) - 1).unsqueeze(1)  # [B, L-1]
        index = torch.where(valid, starts.unsqueeze(1) + t.unsqueeze(0), 0)
        ids = torch.tensor([tok for x in seqs for tok in x], dtype=torch.long).unsqueeze(0)
        positions = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
        total = sum(lengths)
        return ForwardBatch({"input_ids": ids, "position_ids": positions}, index, valid, tokens=total, slots=total)

    def to(self, device: torch.device) -> ForwardBatch:
        move = (lambda t: None if t is None else t.to(device))  # noqa: E731
        return ForwardBatch({k: v.to(device) for k, v in self.inputs.items()}, move(self.index),
                            move(self.valid), self.tokens, self.slots)

    def padded(self, per_token: Tensor) -> Tensor:
        """Per-token outputs ``[rows, width-1]`` aligned with ``ids[:, 1:]``, in the padded
        ``[B, L-1]`` layout (zeros where there is no token). Differentiable."""
        if self.index is None:
            return per_token
        flat = per_token.reshape(-1)[self.index]  # [B, L-1]
        return torch.where(self.valid, flat, flat.new_zeros(()))


# ----------------------------------------------------------------------------------------------
# Precision


def cpu_bf16_support() -> str | None:
    """The bf16 matrix instructions of this CPU (``"AMX-BF16"``, ``"AVX512-BF16"``), or None."""
    probes = (("AMX-BF16", "_is_amx_tile_supported", "amx_bf16"), ("AVX512-BF16", "_is_avx512_bf16_supported", "avx512_bf16"))
    flags = _cpu_flags()
    for name, probe, flag in probes:
        check = getattr(torch.cpu, probe, None)
        try:
            if (check() if check is not None else False) or flag in flags:
                return name
        except RuntimeError:
            continue
    return None


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_precision(requested: Precision, device_type: str, cpu_bf16: str | None) -> tuple[Precision, str]:
    """The precision the learner computes in, and the sentence the run's start-up line says.

    ``bf16`` needs a GPU or a CPU with bf16 matrix instructions; elsewhere the learner computes in
    fp32 and says why (bf16 emulated on such a CPU is slower than fp32, and no more exact).

    >>> resolve_precision("bf16", "cpu", None)[0]
    'fp32'
    >>> resolve_precision("bf16", "cpu", "AMX-BF16")
    ('bf16', 'bf16 compute, fp32 master weights and optimizer (CPU with AMX-BF16)')
    """
    if requested == "fp32":
        return "fp32", "fp32"
    if requested != "bf16":
        raise ValueError(f"unknown learner.precision {requested!r}; valid: fp32, bf16")
    if device_type == "cpu" and cpu_bf16 is None:
        return "fp32", "fp32 (bf16 asked, but this CPU has neither AMX-BF16 nor AVX512-BF16)"
    where = f"CPU with {cpu_bf16}" if device_type == "cpu" else device_type.upper()
    return "bf16", f"bf16 compute, fp32 master weights and optimizer ({where})"


def autocast(device_type: str, precision: Precision) -> contextlib.AbstractContextManager[Any]:
    """The context the model's forward runs in: bf16 autocast, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# Dense bf16 peak of known accelerators (TFLOP/s, without sparsity), for model-FLOPs utilisation.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


def mfu(params: int, tokens: float, seconds: float, device_name: str) -> float | None:
    """Model-FLOPs utilisation: ``6 x params x tokens / seconds`` (forward + backward) over the
    device's dense bf16 peak (``PEAK_BF16_TFLOPS``, whatever the learner's precision, so runs compare);
    None for a device not in the table.

    >>> round(mfu(1_000_000_000, 10_000, 1.0, "NVIDIA H100 80GB HBM3"), 4)
    0.0607
    """
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name.upper()), None)
    if peak is None or seconds <= 0:
        return None
    return 6.0 * params * tokens / seconds / (peak * 1e12)


# ----------------------------------------------------------------------------------------------
# No-grad passes over many samples (step-start and reference log-probs, critic values)


@torch.no_grad()
def per_completion_token(
    forward: Any,
    samples: Sequence[Any],
    *,
    pad_id: int,
    max_tokens: int | None = None,
    max_seqs: int | None = None,
) -> list[list[float]]:
    """``forward(collated) -> [b, L-1]`` (aligned with ``input_ids[:, 1:]``) over ``samples``
    (``TrainSample``s) in micro-batches planned by ``plan_micro_batches``; each sample's
    completion-token entries as a list, in the samples' order."""
    from rlft.types import collate

    lengths = [s.length for s in samples]
    result: list[list[float]] = [[] for _ in samples]
    for idx in plan_micro_batches(lengths, max_tokens=max_tokens, max_seqs=max_seqs):
        out = forward(collate([samples[i] for i in idx], pad_id)).float().cpu()  # [b, L-1]
        for row, i in enumerate(idx):
            p, c = len(samples[i].prompt_ids), len(samples[i].completion_ids)
            result[i] = out[row, p - 1 : p - 1 + c].tolist()
    return result


@torch.no_grad()
def sequence_logprobs(
    model: torch.nn.Module,
    samples: Sequence[Any],
    *,
    pad_id: int,
    device: torch.device,
    temperature: float = 1.0,
    max_tokens: int | None = None,
    max_seqs: int | None = None,
    precision: Precision = "fp32",
) -> list[list[float]]:
    """Completion-token log-probs of ``samples`` under ``model``, one list per sample, without
    gradients, in micro-batches of at most ``max_tokens`` token positions / ``max_seqs`` sequences."""
    from rlft.training import token_logprobs

    def logprobs(batch: Any) -> Tensor:
        ids = batch.input_ids.to(device)
        with autocast(device.type, precision):
            logits = model(input_ids=ids, attention_mask=batch.attention_mask.to(device), use_cache=False).logits
        return token_logprobs(logits, ids, temperature)

    return per_completion_token(logprobs, samples, pad_id=pad_id, max_tokens=max_tokens, max_seqs=max_seqs)
