"""Small frozen records that cross actor boundaries.

They hold plain Python lists (no tensors), so Ray serialises them cheaply and they read the same in
every process. The learner turns a ``TrainBatch`` into padded tensors itself (``collate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Prompt:
    """One prompt to generate from, already tokenised."""

    prompt_id: str  # stable id (dataset row), logged and used by the curriculum
    token_ids: list[int]
    text: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)  # answer, category, ... for rewards


@dataclass(frozen=True)
class SamplingSettings:
    """What a rollout worker needs to sample a group; built from ``RolloutConfig``."""

    n: int = 1  # completions per prompt (the group size)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 128
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Rollout:
    """One sampled completion with everything the learner and the rewards need."""

    prompt_id: str
    group_id: int  # completions of one prompt in one step share it
    prompt_ids: list[int]
    completion_ids: list[int]
    rollout_logprobs: list[float]  # log-probability of each sampled token under the sampling distribution
    finish_reason: FinishReason
    policy_version: int  # version of the weights the engine served when it sampled this
    prompt: str = ""
    completion: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    demo_tokens: int = 0  # leading completion tokens from a demonstration (``rlft.guidance``), not sampled

    def __post_init__(self) -> None:
        if len(self.rollout_logprobs) != len(self.completion_ids):
            raise ValueError(
                f"{len(self.rollout_logprobs)} logprobs for {len(self.completion_ids)} completion tokens"
            )


@dataclass(frozen=True)
class Scores:
    """The rewards of a batch of rollouts: the weighted total per sample (None = the sample's reward
    failed, never a silent 0), metrics (per-reward means, error counts by kind) and the first error
    reports, each naming the reward, the error and the offending sample.

    A scorer may return a plain list of totals instead; ``Scores.of`` accepts both.

    >>> Scores.of([1.0, None]).failed_fraction
    0.5
    """

    totals: list[float | None]
    metrics: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    per_reward: dict[str, list[float | None]] = field(default_factory=dict)  # each reward's value per sample

    @property
    def failed_fraction(self) -> float:
        return sum(t is None for t in self.totals) / len(self.totals) if self.totals else 0.0

    @staticmethod
    def of(value: Scores | list[float | None]) -> Scores:
        return value if isinstance(value, Scores) else Scores(list(value))

    @staticmethod
    def concat(parts: list[Scores]) -> Scores:
        """Several batches' scores as one (dynamic sampling's rounds): totals and per-reward values
        concatenated, counts summed, means weighted by batch size.

        >>> a = Scores([1.0, None], {"reward/x/mean": 1.0, "reward/x/failed": 1.0}, per_reward={"x": [1.0, None]})
        >>> b = Scores([0.0, 0.0], {"reward/x/mean": 0.0, "reward/x/failed": 0.0}, per_reward={"x": [0.0, 0.0]})
        >>> m = Scores.concat([a, b]); m.totals, m.metrics["reward/x/failed"], m.metrics["reward/failed_fraction"]
        ([1.0, None, 0.0, 0.0], 1.0, 0.25)
        """
        totals = [t for part in parts for t in part.totals]
        keys = [k for part in parts for k in part.per_reward]
        per_reward = {k: [v for part in parts for v in part.per_reward.get(k, [None] * len(part.totals))] for k in dict.fromkeys(keys)}
        metrics: dict[str, float] = {}
        for key in dict.fromkeys(k for part in parts for k in part.metrics):
            present = [(part.metrics[key], len(part.totals)) for part in parts if key in part.metrics]
            if key.startswith("reward_errors/") or key.endswith("/failed") or key == "reward/failed_samples":
                metrics[key] = sum(v for v, _ in present)
            else:
                metrics[key] = sum(v * n for v, n in present) / max(sum(n for _, n in present), 1)
        failed = sum(t is None for t in totals)
        metrics.update({"reward/failed_samples": float(failed), "reward/failed_fraction": failed / max(len(totals), 1)})
        return Scores(totals, metrics, [e for part in parts for e in part.errors], per_reward)


@dataclass(frozen=True)
class DemoText:
    """A demonstration's text and where each of its tokens ends in it, so a prefix of its tokens has
    its text (rewards read text): ``token_ends[k]`` is the character offset after token ``k``.

    >>> DemoText("7+5=12", [1, 2, 3, 4, 6]).prefix(3)
    '7+5'
    """

    text: str
    token_ends: list[int] = field(default_factory=list)

    def prefix(self, tokens: int) -> str:
        return self.text[: self.token_ends[tokens - 1]] if tokens > 0 else ""


@dataclass(frozen=True)
class TrainSample:
    """One sequence for the learner: prompt + completion tokens and the completion's advantages."""

    prompt_ids: list[int]
    completion_ids: list[int]
    advantages: list[float]  # one per completion token (an outcome advantage repeated)
    rollout_logprobs: list[float] | None = None
    loss_mask: list[int] | None = None  # 1 = the token counts; None: every completion token counts
    ref_logprobs: list[float] | None = None  # from a separate reference actor; None: the learner's own
    returns: list[float] | None = None  # PPO: the critic's regression targets (GAE returns)
    old_values: list[float] | None = None  # PPO: the critic's values when the batch was built
    policy_version: int | None = None  # engine version that sampled it (``Rollout.policy_version``); None: SFT
    demo_tokens: int = 0  # leading completion tokens from a demonstration, off-policy (``Rollout.demo_tokens``)

    def __post_init__(self) -> None:
        n = len(self.completion_ids)
        for name in ("advantages", "rollout_logprobs", "loss_mask", "ref_logprobs", "returns", "old_values"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries for {n} completion tokens")
        if not 0 <= self.demo_tokens <= n:
            raise ValueError(f"demo_tokens {self.demo_tokens} is not within the {n} completion tokens")

    @property
    def length(self) -> int:
        """Prompt + completion tokens (the sequence the learner's forward pass reads)."""
        return len(self.prompt_ids) + len(self.completion_ids)

    @staticmethod
    def from_rollout(rollout: Rollout, advantage: float) -> TrainSample:
        return TrainSample(
            prompt_ids=list(rollout.prompt_ids),
            completion_ids=list(rollout.completion_ids),
            advantages=[float(advantage)] * len(rollout.completion_ids),
            rollout_logprobs=list(rollout.rollout_logprobs),
            policy_version=rollout.policy_version,
            demo_tokens=rollout.demo_tokens,
        )


@dataclass(frozen=True)
class TrainBatch:
    """The samples of one learner step (before splitting across ranks and micro-batches)."""

    samples: list[TrainSample]

    def __len__(self) -> int:
        return len(self.samples)

    def num_tokens(self) -> int:
        """Completion tokens that count in the loss (the ``token-mean`` denominator)."""
        return sum(
            len(s.completion_ids) if s.loss_mask is None else sum(s.loss_mask) for s in self.samples
        )

    def shard(self, rank: int, world_size: int) -> TrainBatch:
        """The contiguous slice of samples for ``rank``; shards differ in size by at most one."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        n = len(self.samples)
        start = rank * n // world_size
        end = (rank + 1) * n // world_size
        return TrainBatch(self.samples[start:end])


@dataclass(frozen=True)
class Collated:
    """Right-padded tensors for a forward pass over prompt + completion.

    Completion tensors are aligned with ``input_ids[:, 1:]`` (the next-token targets): position ``t``
    of ``mask``/``advantages``/``rollout_logprobs`` scores the token ``input_ids[:, t + 1]``.
    """

    input_ids: torch.Tensor  # [B, L] long
    attention_mask: torch.Tensor  # [B, L] long
    mask: torch.Tensor  # [B, L-1] float, 1 on completion tokens that count
    advantages: torch.Tensor  # [B, L-1] float
    rollout_logprobs: torch.Tensor | None  # [B, L-1] float
    ref_logprobs: torch.Tensor | None = None  # [B, L-1] float, when every sample carries them
    returns: torch.Tensor | None = None  # [B, L-1] float, when every sample carries them
    old_values: torch.Tensor | None = None  # [B, L-1] float, when every sample carries them
    policy_versions: torch.Tensor | None = None  # [B] long, when every sample carries one
    demonstrations: torch.Tensor | None = None  # [B, L-1] float, 1 on demonstration tokens, when there are any


def collate(samples: list[TrainSample], pad_id: int = 0) -> Collated:
    """Pad ``samples`` to one length. Example::

        >>> c = collate([TrainSample([5, 6], [7], [1.0]), TrainSample([5], [8, 9], [2.0, 2.0])])
        >>> c.input_ids.tolist(), c.mask.tolist(), c.policy_versions
        ([[5, 6, 7], [5, 8, 9]], [[0.0, 1.0], [1.0, 1.0]], None)
        >>> collate([TrainSample([5], [7], [1.0], policy_version=3), TrainSample([5], [8], [1.0], policy_version=2)]).policy_versions
        tensor([3, 2])
        >>> collate([TrainSample([5], [7], [1.0]), TrainSample([5], [8, 9], [1.0, 1.0], demo_tokens=1)]).demonstrations
        tensor([[0., 0.],
                [1., 0.]])
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    length = max(len(s.prompt_ids) + len(s.completion_ids) for s in samples)
    b = len(samples)
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)
    attention = torch.zeros((b, length), dtype=torch.long)
    mask = torch.zeros((b, length - 1))
    adv = torch.zeros((b, length - 1))
    have_lp = all(s.rollout_logprobs is not None for s in samples)
    lp = torch.zeros((b, length - 1)) if have_lp else None
    optional = {name: torch.zeros((b, length - 1)) if all(getattr(s, name) is not None for s in samples) else None
                for name in ("ref_logprobs", "returns", "old_values")}
    for i, s in enumerate(samples):
        p, c = len(s.prompt_ids), len(s.completion_ids)
        if p == 0:
            raise ValueError(f"sample {i} has an empty prompt: the first completion token needs a context")
        input_ids[i, : p + c] = torch.tensor(s.prompt_ids + s.completion_ids, dtype=torch.long)
        attention[i, : p + c] = 1
        # completion token k sits at input position p + k and is predicted at position p + k - 1
        sl = slice(p - 1, p - 1 + c)
        mask[i, sl] = torch.tensor(s.loss_mask if s.loss_mask is not None else [1] * c, dtype=torch.float)
        adv[i, sl] = torch.tensor(s.advantages, dtype=torch.float)
        if lp is not None:
            lp[i, sl] = torch.tensor(s.rollout_logprobs, dtype=torch.float)
        for name, tensor in optional.items():
            if tensor is not None:
                tensor[i, sl] = torch.tensor(getattr(s, name), dtype=torch.float)
    versions = [s.policy_version for s in samples]
    policy_versions = None if None in versions else torch.tensor(versions, dtype=torch.long)
    demos = None
    if any(s.demo_tokens for s in samples):
        demos = torch.zeros((b, length - 1))
        for i, s in enumerate(samples):
            p = len(s.prompt_ids)
            demos[i, p - 1: p - 1 + s.demo_tokens] = 1.0
        demos *= (mask != 0)
    return Collated(input_ids, attention, mask, adv, lp, **optional, policy_versions=policy_versions,
                    demonstrations=demos)
