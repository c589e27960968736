"""Held-out evaluation settings: cadence, pass@k, and which answers count as correct.

>>> EvalConfig(correct={"reward": "exact_match"}).correct
CorrectConfig(reward='exact_match', threshold=1.0)
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from rlft.algorithms.registry import did_you_mean
from rlft.config.base import NonNegative, Section


class CorrectConfig(Section):
    reward: str
    """The reward whose score decides correctness: its name in metrics (``label``, else ``name``,
    else the function's name; for a built-in task without ``reward.functions``, the task's name)."""
    threshold: float = 1.0
    """A completion is correct when that reward scores at least this."""


class EvalConfig(Section):
    every: Annotated[int, Field(ge=0)] = 0
    """Evaluate every this many RL steps; 0: only before and after each RL stage."""
    num_prompts: Annotated[int, Field(ge=1)] | None = None
    """Held-out prompts per evaluation; None uses the whole held-out split."""
    pass_k: Annotated[int, Field(ge=0)] = 4
    """k of pass@k (k samples per prompt at ``temperature``); 0 skips pass@k."""
    temperature: NonNegative = 1.0
    """Sampling temperature of the pass@k samples (accuracy is always greedy)."""
    correct: CorrectConfig | None = None
    """Which answers count as correct in accuracy and pass@k, e.g. ``{reward: exact_match,
    threshold: 1.0}``; None: the built-in task's verifier, else the first reward function."""


def check_correct(correct: CorrectConfig | None, reward_keys: list[str], train_path: str) -> None:
    """Raise when ``correct`` names none of the run's rewards: ``reward_keys`` (the names of
    ``reward.functions``), or the built-in task's verifier (its task's name) when there are none.

    >>> check_correct(CorrectConfig(reward="arithmetc"), [], "builtin:arithmetic")
    Traceback (most recent call last):
    ...
    ValueError: evaluation.correct.reward 'arithmetc' is not one of the run's rewards (did you mean 'arithmetic'?); they are: arithmetic
    """
    keys = reward_keys or ([train_path.split(":")[1]] if train_path.startswith("builtin:") else [])
    if correct is not None and keys and correct.reward not in keys:
        did = did_you_mean(correct.reward, keys)
        raise ValueError(f"evaluation.correct.reward '{correct.reward}' is not one of the run's rewards{did}; "
                         f"they are: {', '.join(keys)}")
