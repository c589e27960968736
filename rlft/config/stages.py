"""The names of a run's stages, as logs, metrics, evaluation keys and reference snapshots use them.

>>> from rlft.config.schema import StageConfig
>>> stage_names([StageConfig(kind="rl", steps=100)])
['rl1']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def stage_names(stages: Sequence[Any]) -> list[str]:
    """Each stage's name: its own ``name``, else its kind and its number among the stages of that
    kind, counted from 1 like steps (``StageConfig``s, or anything with ``kind`` and ``name``).

    >>> from rlft.config.schema import StageConfig
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
