"""Several rewards into one score per sample, and what to log about them.

The total is the weighted sum of the configured rewards. A sample with any failed reward has no
total (``None``): it is excluded from the loss and from its group's advantage statistics, and
counted. Metrics per reward ``k``: ``reward/k/mean`` (over the samples it scored),
``reward/k/failed``, ``reward_errors/k/<kind>`` and ``reward/k/info/<name>`` (the mean of each
numeric ``info`` value of a ``RewardResult``).

>>> from rewards.pool import Outcome
>>> scores = combine(
...     {"correct": [Outcome(1.0), Outcome(0.0), Outcome(1.0)],
...      "format": [Outcome(1.0), Outcome(1.0), Outcome(None, error="timeout", message="slow")]},
...     {"correct": 1.0, "format": 0.5},
... )
>>> scores.totals, scores.metrics["reward/format/mean"], scores.metrics["reward_errors/format/timeout"]
([1.5, 0.5, None], 1.0, 1.0)
>>> scores.errors
["reward 'format' failed (timeout) on sample 2: slow"]
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

from rlft.types import Scores
from rewards.pool import Outcome, Sample


def combine(
    outcomes: Mapping[str, Sequence[Outcome]],
    weights: Mapping[str, float],
    *,
    samples: Sequence[Sample] | None = None,
    max_errors: int = 3,
    excerpt: int = 200,
) -> Scores:
    """The weighted total per sample, per-reward metrics, and the first ``max_errors`` error reports
    (with the sample's prompt id, prompt and completion when ``samples`` are given)."""
    if set(outcomes) != set(weights):
        raise ValueError(f"outcomes for {sorted(outcomes)} but weights for {sorted(weights)}")
    n = len(next(iter(outcomes.values()), []))
    totals: list[float | None] = [0.0] * n
    metrics: dict[str, float] = {}
    errors: list[str] = []
    for key, column in outcomes.items():
        if len(column) != n:
            raise ValueError(f"reward '{key}' has {len(column)} outcomes for {n} samples")
        ok = [o.score for o in column if o.score is not None]
        if ok:
            metrics[f"reward/{key}/mean"] = sum(ok) / len(ok)
        metrics[f"reward/{key}/failed"] = float(n - len(ok))
        for name, values in _info_values(column).items():
            metrics[f"reward/{key}/info/{name}"] = sum(values) / len(values)
        for i, o in enumerate(column):
            if o.score is None:
                totals[i] = None
                kind = o.error or "unknown"
                metrics[f"reward_errors/{key}/{kind}"] = metrics.get(f"reward_errors/{key}/{kind}", 0.0) + 1
                if len(errors) < max_errors:
                    errors.append(_report(key, kind, o.message, i, samples, excerpt))
            elif totals[i] is not None:
                totals[i] += weights[key] * o.score
    failed = sum(t is None for t in totals)
    metrics["reward/failed_samples"] = float(failed)
    metrics["reward/failed_fraction"] = failed / n if n else 0.0
    per_reward = {key: [o.score for o in column] for key, column in outcomes.items()}
    return Scores(totals, metrics, errors, per_reward)


def _info_values(column: Sequence[Outcome]) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    for o in column:
        for name, v in o.info.items():
            if isinstance(v, numbers.Real):
                values.setdefault(name, []).append(float(v))
    return values


def _report(key: str, kind: str, message: str, index: int, samples: Sequence[Sample] | None, excerpt: int) -> str:
    text = f"reward '{key}' failed ({kind}) on sample {index}: {message}"
    if samples is not None:
        s = samples[index]
        pid = s.fields.get("prompt_id")
        text += f" | prompt_id {pid} | prompt {s.prompt[:excerpt]!r} | completion {s.completion[:excerpt]!r}"
    return text
