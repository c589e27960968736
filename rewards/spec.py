"""What a reward is to the runtime: ``RewardSpec``, its ``RewardResult``, the ``RewardError`` of a
reward that cannot be found, loaded or called, and the check of a returned score (``as_score``).
Public through ``rewards.api``; this module imports no reward, so the modules that define rewards can
import it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

RUNTIME_FIELDS = ("prompt_id", "num_tokens", "finish_reason", "max_new_tokens")
"""Fields the runtime adds to every sample, next to the dataset row's own columns."""


class RewardError(ValueError):
    """A reward that cannot be found, loaded or called as configured."""


@dataclass(frozen=True)
class RewardResult:
    """A score with extra facts to log (numeric ``info`` values are averaged per step).

    >>> RewardResult(1.0, {"matched": 1})
    RewardResult(score=1.0, info={'matched': 1})
    """

    score: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RewardSpec:
    """A reward function with what the runtime needs to call it."""

    name: str
    fn: Callable[..., Any]
    batched: bool
    is_async: bool
    keywords: frozenset[str]  # keyword parameters the function names (fields and params)
    accepts_fields: frozenset[str] | None  # None: takes every field (``**fields``)
    needs_judge: bool  # declares a ``judge`` keyword: served by the run's judge engine
    uses_sandbox: bool = False  # runs code in ``rewards.sandbox``: the run checks the sandbox at start

    def call_kwargs(self, fields: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """The keywords of one call: the fields the function takes, then the params on top."""
        if self.accepts_fields is None:
            chosen = dict(fields)
        else:
            chosen = {k: v for k, v in fields.items() if k in self.accepts_fields}
        chosen.update(params)
        return chosen


def as_score(value: Any) -> tuple[float, dict[str, Any]]:
    """A reward's return value as ``(score, info)``; raises ``TypeError``/``ValueError`` for a value
    that is not a finite number or ``RewardResult``.

    >>> as_score(1), as_score(True), as_score(RewardResult(0.5, {"n": 2}))
    ((1.0, {}), (1.0, {}), (0.5, {'n': 2}))
    >>> as_score(float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: reward returned a non-finite score nan
    """
    import numpy as np

    info: dict[str, Any] = {}
    if isinstance(value, RewardResult):
        value, info = value.score, dict(value.info)
    if not isinstance(value, (numbers.Real, np.bool_)):
        raise TypeError(f"reward returned {type(value).__name__} {_short(value)}, expected a float or RewardResult")
    try:
        score = float(value)
    except OverflowError:
        raise ValueError(f"reward returned a score too large for a float: {_short(value)}") from None
    if not math.isfinite(score):
        raise ValueError(f"reward returned a non-finite score {score}")
    return score, info


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
