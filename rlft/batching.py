"""From scored rollouts to the learner's batch: advantages, filtering, and the batch metrics.

Pure functions on the driver (the learner is algorithm-blind apart from its loss).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from rlft.algorithms import ADVANTAGES
from rlft.types import Rollout, Scores, TrainBatch, TrainSample


def usable(reward: float | None) -> bool:
    """Whether a sample's reward counts: scored (not None, a failed reward) and finite. The one
    filter for failed rewards: advantages, the batch, group signal and the reward metrics use it.

    >>> [usable(x) for x in (1.0, None, float("nan"), 0.0)]
    [True, False, False, True]
    """
    return reward is not None and math.isfinite(reward)


def outcome_advantages(
    rollouts: Sequence[Rollout], rewards: Sequence[float | None], *, estimator: str, params: dict[str, Any] | None = None
) -> list[float | None]:
    """One advantage per rollout from the registered group-relative ``estimator`` (None where the
    reward failed; failed samples are left out of their group's statistics). Computed once per
    scored group: the curriculum observes these and the outcome batch trains on them.

    >>> rs = [Rollout("p", g, [1], [2], [0.0], "stop", 0) for g in (0, 0, 1, 1)]
    >>> outcome_advantages(rs, [1.0, 0.0, None, 1.0], estimator="rloo")
    [1.0, -1.0, None, 0.0]
    """
    if len(rollouts) != len(rewards):
        raise ValueError(f"{len(rewards)} rewards for {len(rollouts)} rollouts")
    kept = [i for i, x in enumerate(rewards) if usable(x)]
    out: list[float | None] = [None] * len(rollouts)
    if kept:
        reward_t = torch.tensor([float(rewards[i]) for i in kept], dtype=torch.float64)  # type: ignore[arg-type]  # [B]
        groups = torch.tensor([rollouts[i].group_id for i in kept])  # [B]
        for i, a in zip(kept, ADVANTAGES.get(estimator)(reward_t, groups, **(params or {})).tolist()):
            out[i] = a
    return out


def build_train_batch(
    rollouts: Sequence[Rollout],
    rewards: Sequence[float | None],
    *,
    advantages: Sequence[float | None] | None = None,
    estimator: str = "grpo",
    params: dict[str, Any] | None = None,
    filter_zero_variance: bool = False,
) -> tuple[TrainBatch, dict[str, float]]:
    """The outcome-advantage batch: each rollout whose reward counts (``usable``) becomes a sample
    with its advantage on every token; failed samples are left out and counted, never scored 0.
    ``advantages`` are the step's (``outcome_advantages``); without them they are computed here.

    With ``filter_zero_variance`` whole groups without signal (``has_signal``) are dropped: their
    advantages are 0, so they would only dilute the loss.

    >>> rs = [Rollout("p", g, [1], [2, 3], [-0.1, -0.2], "stop", 0) for g in (0, 0, 1, 1)]
    >>> batch, m = build_train_batch(rs, [1.0, 0.0, 1.0, 1.0], estimator="rloo",
    ...                              filter_zero_variance=True)
    >>> [s.advantages for s in batch.samples], m["batch/zero_variance_group_fraction"]
    ([[1.0, 1.0], [-1.0, -1.0]], 0.5)
    """
    if len(rollouts) != len(rewards):
        raise ValueError(f"{len(rewards)} rewards for {len(rollouts)} rollouts")
    if advantages is None:
        advantages = outcome_advantages(rollouts, rewards, estimator=estimator, params=params)
    kept = [(r, a) for r, x, a in zip(rollouts, rewards, advantages) if usable(x)]
    metrics: dict[str, float] = {"batch/failed_rewards": float(len(rollouts) - len(kept)),
                                 "batch/rollouts": float(len(rollouts))}
    if not kept:
        return TrainBatch([]), {**metrics, "batch/samples": 0.0, "batch/zero_variance_group_fraction": 0.0}
    signal = group_variances(rollouts, rewards)
    flat = {g for g, s in signal.items() if not s and any(r.group_id == g for r, _ in kept)}
    samples = [TrainSample.from_rollout(r, float(a)) for r, a in kept  # type: ignore[arg-type]
               if not (filter_zero_variance and r.group_id in flat)]
    adv = torch.tensor([float(a) for _, a in kept], dtype=torch.float64)  # type: ignore[arg-type]  # [B]
    metrics.update(
        {
            "batch/samples": float(len(samples)),
            "batch/zero_variance_group_fraction": len(flat) / len({r.group_id for r, _ in kept}),
            "advantage/mean": float(adv.mean()),
            "advantage/std": float(adv.std()) if adv.numel() > 1 else 0.0,
            "advantage/abs_mean": float(adv.abs().mean()),
        }
    )
    demos = [s for s in samples if s.demo_tokens]
    if demos:  # demonstrations or their prefixes in the groups (``rlft.guidance``)
        metrics["batch/demonstrations"] = float(len(demos))
        metrics["advantage/demonstration_mean"] = sum(s.advantages[0] for s in demos) / len(demos)
    return TrainBatch(samples), metrics


def version_lag_metrics(
    rollouts: Sequence[Rollout], rewards: Sequence[float | None], current_version: int
) -> dict[str, float]:
    """How many policy versions behind ``current_version`` the scored samples were generated: the
    one place ``batch/version_lag_*`` is written ({} when no sample counts).

    >>> rs = [Rollout("p", 0, [1], [2], [0.0], "stop", v) for v in (3, 4, 5)]
    >>> version_lag_metrics(rs, [1.0, 0.0, None], 5)
    {'batch/version_lag_mean': 1.5, 'batch/version_lag_max': 2.0}
    """
    lags = [current_version - r.policy_version for r, x in zip(rollouts, rewards) if usable(x)]
    if not lags:
        return {}
    return {"batch/version_lag_mean": sum(lags) / len(lags), "batch/version_lag_max": float(max(lags))}


def reward_metrics(rollouts: Sequence[Rollout], rewards: Sequence[float | None]) -> dict[str, float]:
    """Reward and response-length statistics of a step's rollouts: overall, the pass rate (share of
    scored samples whose total reward is above 0), and the mean reward per dataset ``category``.

    >>> from rlft.types import Rollout
    >>> rs = [Rollout("p", 0, [1], [2, 3], [0.0, 0.0], "stop", 0, metadata={"category": c}) for c in "aab"]
    >>> m = reward_metrics(rs, [1.0, 0.0, None])
    >>> m["reward/pass_rate"], m["reward/category/a/mean"], "reward/category/b/mean" in m
    (0.5, 0.5, False)
    """
    ok = [float(x) for x in rewards if usable(x)]  # type: ignore[arg-type]
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
        if category is not None and usable(x):
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
                **({"demo_tokens": r.demo_tokens} if r.demo_tokens else {}),  # a demonstration, or its prefix
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
    return len({float(r) for r in rewards if usable(r)}) > 1  # type: ignore[arg-type]


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
    advantages: Sequence[float | None],
    *,
    categories: Sequence[str | None] | None,
) -> list[GroupResult]:
    """What the curriculum sampler observes: per drawn prompt (group ``g`` is ``indices[g]``), its
    category, and the rewards and advantages of its samples whose reward counts.

    >>> rs = [Rollout("p", g, [1], [2], [0.0], "stop", 0) for g in (0, 0, 1, 1)]
    >>> res = group_results([7, 3], rs, [1.0, 0.0, None, 1.0], [1.0, -1.0, None, 0.0], categories=None)
    >>> [(r.index, r.rewards, r.advantages) for r in res]
    [(7, [1.0, 0.0], [1.0, -1.0]), (3, [1.0], [0.0])]
    """
    from rlft.curriculum.base import GroupResult

    per_group: dict[int, tuple[list[float], list[float]]] = {g: ([], []) for g in range(len(indices))}
    for r, x, a in zip(rollouts, rewards, advantages):
        if usable(x):
            per_group[r.group_id][0].append(float(x))  # type: ignore[arg-type]
            per_group[r.group_id][1].append(float(a))  # type: ignore[arg-type]
    return [
        GroupResult(
            index=indices[g],
            category=categories[indices[g]] if categories is not None else None,
            rewards=per_group[g][0],
            advantages=per_group[g][1],
        )
        for g in range(len(indices))
    ]
