"""Adaptive stage switching: end a stage on a held-out signal instead of a fixed step count.

A stage with ``until`` (``rlft.config.UntilConfig``) is checked every ``until.every`` of its steps:
the held-out evaluation runs on the current weights and ``StopRule.observe`` decides whether the
stage is done. It is done when the metric reaches ``threshold``, or when ``patience`` checks in a
row brought no improvement of more than ``min_delta`` over the best value so far (a plateau);
``steps`` stays the ceiling. The rule is pure bookkeeping, so a checkpoint holds it
(``state_dict``) and a resumed run decides exactly as the uninterrupted one.

A warm-up that ends once greedy accuracy passes 30 %, checked every 50 steps:

>>> from rlft.config import UntilConfig
>>> rule = StopRule(UntilConfig(metric="eval/accuracy", threshold=0.3))
>>> [rule.due(n) for n in (0, 49, 50)]
[False, False, True]
>>> rule.observe({"eval/accuracy": 0.12}, at=50), rule.observe({"eval/accuracy": 0.31}, at=100)
(False, True)
>>> rule.reason
'eval/accuracy 0.31 reached the threshold 0.3 after 100 steps'

The same decisions for a whole sequence of checks at once (``first_stop``): a plateau with
patience 2 ends at the fourth check, two checks after the best value 0.5.

>>> first_stop([0.1, 0.5, 0.52, 0.49], UntilConfig(patience=2, min_delta=0.05))
3
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rlft.config import UntilConfig


class StopRule:
    """The ``until`` decision of one stage, fed one held-out evaluation per check."""

    def __init__(self, until: UntilConfig, state: Mapping[str, Any] | None = None):
        self.until = until
        self.best: float | None = None  # the best value seen so far
        self.stale = 0  # checks in a row without an improvement over ``best`` of more than min_delta
        self.checked_at = 0  # the stage step of the last check (0: none yet)
        self.stopped = False
        self.reason = ""
        if state:
            self.load_state_dict(state)

    def due(self, stage_step: int) -> bool:
        """Whether a check is due after ``stage_step`` steps of the stage (and not done yet)."""
        return (not self.stopped and stage_step > 0 and stage_step % self.until.every == 0
                and stage_step != self.checked_at)

    def observe(self, metrics: Mapping[str, float], at: int) -> bool:
        """Take the evaluation made after ``at`` steps of the stage; True when the stage is done."""
        u = self.until
        if u.metric not in metrics:
            raise KeyError(f"until.metric {u.metric!r} is not among the evaluation's metrics: "
                           f"{', '.join(sorted(metrics)) or 'none (evaluation.num_prompts is 0?)'}")
        value, sign = float(metrics[u.metric]), 1.0 if u.mode == "max" else -1.0
        self.checked_at = at
        if self.best is None or sign * (value - self.best) > u.min_delta:
            self.best, self.stale = value, 0
        else:  # a gain of min_delta or less is no progress, and does not move the bar (as Keras' EarlyStopping)
            self.stale += 1
        if u.threshold is not None and sign * (value - u.threshold) >= 0:
            self.stopped, self.reason = True, f"{u.metric} {value:.4g} reached the threshold {u.threshold:g} after {at} steps"
        elif u.patience is not None and self.stale >= u.patience:
            self.stopped, self.reason = True, (
                f"{u.metric} plateaued at {self.best:.4g} (no gain over {u.min_delta:g} in {u.patience} "
                f"checks) after {at} steps")
        return self.stopped

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "stale": self.stale, "checked_at": self.checked_at,
                "stopped": self.stopped, "reason": self.reason}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.stale = state["best"], int(state["stale"])
        self.checked_at, self.stopped, self.reason = int(state["checked_at"]), bool(state["stopped"]), state["reason"]


def first_stop(values: Sequence[float], until: UntilConfig) -> int | None:
    """The index of the check at which ``until`` ends the stage, for the metric's ``values`` at
    successive checks; None when it never does.

    >>> first_stop([0.1, 0.2, 0.35, 0.5], UntilConfig(threshold=0.3))
    2
    >>> first_stop([3.0, 2.0, 1.9, 1.95], UntilConfig(metric="eval/loss", mode="min", patience=2, min_delta=0.2))
    3
    >>> first_stop([0.1, 0.2], UntilConfig(patience=5)) is None
    True
    """
    rule = StopRule(until)
    for i, value in enumerate(values):
        if rule.observe({until.metric: value}, at=(i + 1) * until.every):
            return i
    return None


__all__ = ["StopRule", "first_stop"]
