"""From scored rollouts to the learner's batch: advantages, filtering, and the batch metrics.

Pure functions on the driver (the learner is algorithm-blind apart from its loss).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from rlft.algorithms import ADVANTAGES, group_stats
from rlft.types import Rollout, Scores, TrainBatch, TrainSample


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
    """Reward and response-length statistics of a step's rollouts: overall, the pass rate (share of
    scored samples whose total reward is above 0), and the mean reward per dataset ``category``.

    >>> from rlft.types import Rollout
    >>> rs = [Rollout("p", 0, [1], [2, 3], [0.0, 0.0], "stop", 0, metadata={"category": c}) for c in "aab"]
    >>> m = reward_metrics(rs, [1.0, 0.0, None])
    >>> m["reward/pass_rate"], m["reward/category/a/mean"], "reward/category/b/mean" in m
    (0.5, 0.5, False)
    """
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
                "reward/pass_rate": sum(x > 0 for x in ok) / len(ok),
            }
        )
    by_category: dict[str, list[float]] = {}
    for r, x in zip(rollouts, rewards):
        category = r.metadata.get("category")
        if category is not None and x is not None:
            by_category.setdefault(str(category), []).append(x)
    for category, values in sorted(by_category.items()):
        out[f"reward/category/{category}/mean"] = sum(values) / len(values)
    return out


def sample_rows(
    rollouts: Sequence[Rollout], scores: Scores, *, step: int, stage: str, n: int
) -> list[dict[str, Any]]:
    """``n`` completions spread evenly over the step's rollouts, as rows for sample tables: texts,
    total and per-reward rewards (None = failed), finish reason, length, version and category.

    >>> from rlft.types import Rollout, Scores
    >>> rs = [Rollout(f"p{i}", i, [1], [2], [0.0], "stop", 3, "1+1=", str(i)) for i in range(5)]
    >>> rows = sample_rows(rs, Scores([1.0, 0.0, None, 1.0, 0.0], per_reward={"ok": [1.0, 0.0, None, 1.0, 0.0]}),
    ...                    step=7, stage="rl", n=3)
    >>> [(r["prompt_id"], r["reward"], r["rewards"]) for r in rows]
    [('p0', 1.0, {'ok': 1.0}), ('p2', None, {'ok': None}), ('p4', 0.0, {'ok': 0.0})]
    """
    if not rollouts or n <= 0:
        return []
    n = min(n, len(rollouts))
    picks = sorted({round(i * (len(rollouts) - 1) / max(n - 1, 1)) for i in range(n)})
    rows = []
    for i in picks:
        r = rollouts[i]
        rows.append(
            {
                "step": step,
                "stage": stage,
                "prompt_id": r.prompt_id,
                "prompt": r.prompt,
                "completion": r.completion,
                "reward": scores.totals[i],
                "rewards": {key: values[i] for key, values in scores.per_reward.items()},
                "finish_reason": r.finish_reason,
                "num_tokens": len(r.completion_ids),
                "policy_version": r.policy_version,
                "category": r.metadata.get("category"),
            }
        )
    return rows


def rewards_by_group(rollouts: Sequence[Rollout], rewards: Sequence[float | None]) -> dict[int, list[float | None]]:
    """The rewards of ``rollouts`` by ``group_id``, groups in order of first appearance.

    >>> from rlft.types import Rollout
    >>> rs = [Rollout("p", g, [1], [2], [0.0], "stop", 0) for g in (0, 1, 0)]
    >>> rewards_by_group(rs, [1.0, None, 0.0])
    {0: [1.0, 0.0], 1: [None]}
    """
    groups: dict[int, list[float | None]] = {}
    for r, x in zip(rollouts, rewards):
        groups.setdefault(r.group_id, []).append(x)
    return groups


def has_signal(rewards: Sequence[float | None]) -> bool:
    """Whether a group's scored rewards differ (failed ones, None, left out): only then do
    group-relative advantages carry a signal.

    >>> has_signal([1.0, 0.0, None]), has_signal([1.0, 1.0, None]), has_signal([None, None])
    (True, False, False)
    """
    return len({float(r) for r in rewards if r is not None}) > 1


def group_variances(rollouts: Sequence[Rollout], rewards: Sequence[float | None]) -> dict[int, bool]:
    """Per group id: True when its scored rewards differ (the group carries an advantage signal).

    >>> from rlft.types import Rollout
    >>> rs = [Rollout("p", g, [1], [2], [0.0], "stop", 0) for g in (0, 0, 1, 1)]
    >>> group_variances(rs, [1.0, 0.0, 1.0, 1.0])
    {0: True, 1: False}
    """
    return {g: has_signal(values) for g, values in rewards_by_group(rollouts, rewards).items()}


def group_results(
    indices: Sequence[int],
    rollouts: Sequence[Rollout],
    rewards: Sequence[float | None],
    *,
    categories: Sequence[str | None] | None,
    estimator: str,
    params: dict[str, Any] | None = None,
) -> list[GroupResult]:
    """What the curriculum sampler observes: per drawn prompt (group ``g`` is ``indices[g]``), its
    category, scored rewards and advantages (failed samples left out).

    >>> from rlft.types import Rollout
    >>> rs = [Rollout("p", g, [1], [2], [0.0], "stop", 0) for g in (0, 0, 1, 1)]
    >>> res = group_results([7, 3], rs, [1.0, 0.0, None, 1.0], categories=None, estimator="rloo")
    >>> [(r.index, r.rewards, r.advantages) for r in res]
    [(7, [1.0, 0.0], [1.0, -1.0]), (3, [1.0], [0.0])]
    """
    from rlft.curriculum.base import GroupResult

    kept = [(r.group_id, float(x)) for r, x in zip(rollouts, rewards) if x is not None and math.isfinite(x)]
    advantages: list[float] = []
    if kept:
        reward_t = torch.tensor([x for _, x in kept], dtype=torch.float64)
        groups = torch.tensor([g for g, _ in kept])
        advantages = ADVANTAGES.get(estimator)(reward_t, groups, **(params or {})).tolist()
    per_group: dict[int, tuple[list[float], list[float]]] = {g: ([], []) for g in range(len(indices))}
    for (g, x), a in zip(kept, advantages):
        per_group[g][0].append(x)
        per_group[g][1].append(a)
    return [
        GroupResult(
            index=indices[g],
            category=categories[indices[g]] if categories is not None else None,
            rewards=per_group[g][0],
            advantages=per_group[g][1],
        )
        for g in range(len(indices))
    ]
