"""From scored rollouts to the learner's batch: advantages, filtering, and the batch metrics.

Pure functions on the driver (the learner is algorithm-blind apart from its loss).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from rlft.algorithms import ADVANTAGES, group_stats
from rlft.types import Rollout, TrainBatch, TrainSample


def build_train_batch(
    rollouts: Sequence[Rollout],
    rewards: Sequence[float | None],
    *,
    estimator: str,
    params: dict[str, Any] | None = None,
    filter_zero_variance: bool = False,
    current_version: int | None = None,
) -> tuple[TrainBatch, dict[str, float]]:
    """Advantages from the registered ``estimator``; samples whose reward failed (``None``) are left
    out of the batch (and out of their group's statistics) and counted, never scored 0.

    With ``filter_zero_variance`` whole groups whose rewards are all equal are dropped: their
    advantages are 0, so they would only dilute the loss. Rollouts of older policy versions are
    accepted (an asynchronous pipeline produces them); their lag is reported.

    >>> from rlft.types import Rollout
    >>> rs = [Rollout("p", g, [1], [2, 3], [-0.1, -0.2], "stop", 0) for g in (0, 0, 1, 1)]
    >>> batch, m = build_train_batch(rs, [1.0, 0.0, 1.0, 1.0], estimator="rloo",
    ...                              filter_zero_variance=True)
    >>> [s.advantages for s in batch.samples], m["batch/zero_variance_group_fraction"]
    ([[1.0, 1.0], [-1.0, -1.0]], 0.5)
    """
    if len(rollouts) != len(rewards):
        raise ValueError(f"{len(rewards)} rewards for {len(rollouts)} rollouts")
    kept = [(r, float(x)) for r, x in zip(rollouts, rewards) if x is not None and math.isfinite(x)]
    failed = len(rollouts) - len(kept)
    metrics: dict[str, float] = {"batch/failed_rewards": float(failed), "batch/rollouts": float(len(rollouts))}
    if not kept:
        return TrainBatch([]), {**metrics, "batch/samples": 0.0, "batch/zero_variance_group_fraction": 0.0}

    reward_t = torch.tensor([x for _, x in kept], dtype=torch.float64)  # [B]
    groups = torch.tensor([r.group_id for r, _ in kept])  # [B]
    adv = ADVANTAGES.get(estimator)(reward_t, groups, **(params or {}))  # [B]
    constant = group_stats(reward_t, groups)["constant"]  # [B] bool
    group_count = len(set(groups.tolist()))
    zero_var_groups = len(set(groups[constant].tolist()))

    samples = [
        TrainSample.from_rollout(r, float(a))
        for (r, _), a, c in zip(kept, adv.tolist(), constant.tolist())
        if not (filter_zero_variance and c)
    ]
    metrics.update(
        {
            "batch/samples": float(len(samples)),
            "batch/zero_variance_group_fraction": zero_var_groups / group_count,
            "advantage/mean": float(adv.mean()),
            "advantage/std": float(adv.std()) if adv.numel() > 1 else 0.0,
            "advantage/abs_mean": float(adv.abs().mean()),
        }
    )
    if current_version is not None:
        lags = [current_version - r.policy_version for r, _ in kept]
        metrics["batch/version_lag_mean"] = sum(lags) / len(lags)
        metrics["batch/version_lag_max"] = float(max(lags))
    return TrainBatch(samples), metrics


def reward_metrics(rollouts: Sequence[Rollout], rewards: Sequence[float | None]) -> dict[str, float]:
    """Reward and response-length statistics of a step's rollouts."""
    ok = [x for x in rewards if x is not None]
    lengths = [len(r.completion_ids) for r in rollouts]
    out = {
        "response/length_mean": sum(lengths) / max(len(lengths), 1),
        "response/length_max": float(max(lengths, default=0)),
        "response/truncated_fraction": sum(r.finish_reason == "length" for r in rollouts) / max(len(rollouts), 1),
    }
    if ok:
        mean = sum(ok) / len(ok)
        out.update(
            {
                "reward/mean": mean,
                "reward/std": math.sqrt(sum((x - mean) ** 2 for x in ok) / len(ok)),
                "reward/min": min(ok),
                "reward/max": max(ok),
            }
        )
    return out
