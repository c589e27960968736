"""What every metric sink reads the same way: a row (a step's metrics, or one sample completion),
its numeric metrics, and the per-reward names of sample rows.

>>> numeric({"step": 3, "stage": "rl1", "reward/mean": 1, "early_stop": True})
{'reward/mean': 1.0}
>>> reward_names([{"rewards": {"accuracy": 1.0}}, {"rewards": {"format": 0.0, "accuracy": 0.0}}])
['accuracy', 'format']
"""

from __future__ import annotations

import numbers
from typing import Any, Mapping, Sequence

Row = Mapping[str, Any]


def reward_names(rows: Sequence[Row]) -> list[str]:
    """The per-reward names of ``rows``, in order of first appearance."""
    names: dict[str, None] = {}
    for r in rows:
        for n in r.get("rewards") or {}:
            names.setdefault(str(n), None)
    return list(names)


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics (not ``stage``, not the ``step`` echo, not booleans) as floats."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if k != "step" and isinstance(v, numbers.Real) and not isinstance(v, bool)
    }
