"""A run as stages (``stages``: SFT and RL steps, in order) and the names of a run's stages, as
logs, metrics, evaluation keys and reference snapshots use them.

>>> stage_names([StageConfig(kind="rl", steps=100)])
['rl1']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import Field

from rlft.config.base import NonNegative, Section


class StageConfig(Section):
    kind: Literal["sft", "rl"]
    """``sft``: supervised steps on prompt + reference completion (loss on response tokens only);
    ``rl``: the sample -> score -> learn loop."""
    steps: Annotated[int, Field(ge=1)]
    """Learner steps in this stage."""
    name: str | None = None
    """Label in logs, metrics and evaluation keys (``before_<name>``); defaults to ``<kind><n>``, n
    counting the stages of that kind from 1 (SFT then RL: ``sft1``, ``rl1``)."""
    lr: NonNegative | None = None
    """Peak learning rate of this stage; None uses ``learner.lr``. 0 freezes the policy while
    everything else runs (generation, rewards, learner passes, weight syncs): a control run."""
    batch_size: Annotated[int, Field(ge=1)] = 64
    """SFT only: examples per step (RL steps use rollout.prompts_per_step x group_size)."""


def default_stages() -> list[StageConfig]:
    """One RL stage of 100 steps: a run's stages when its config gives none."""
    return [StageConfig(kind="rl", steps=100)]


def stage_names(stages: Sequence[Any]) -> list[str]:
    """Each stage's name: its own ``name``, else its kind and its number among the stages of that
    kind, counted from 1 like steps (``StageConfig``s, or anything with ``kind`` and ``name``).

    >>> stage_names([StageConfig(kind="sft", steps=5), StageConfig(kind="rl", steps=5),
    ...              StageConfig(kind="sft", steps=5), StageConfig(kind="rl", steps=5, name="final")])
    ['sft1', 'rl1', 'sft2', 'final']
    """
    counts: dict[str, int] = {}
    names = []
    for stage in stages:
        counts[stage.kind] = counts.get(stage.kind, 0) + 1
        names.append(stage.name or f"{stage.kind}{counts[stage.kind]}")
    return names
