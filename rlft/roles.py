"""The roles the driver composes, as Protocols, and the errors that stop a run.

The driver and the evaluation are written against these: fakes in unit tests, Ray actor groups in
production (``actors/runtime.py``). Anything with the methods fits:

>>> from rlft.types import Rollout
>>> class NoReward:
...     def score(self, rollouts: list[Rollout]) -> list[float | None]:
...         return [None for _ in rollouts]
>>> isinstance(NoReward(), RewardScorer), isinstance(NoReward(), RolloutEngine)
(True, False)
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from rlft.config import SFTLossChoice
from rlft.types import Prompt, Rollout, SamplingSettings, Scores, TrainBatch


@runtime_checkable
class RolloutEngine(Protocol):
    def generate(self, prompts: list[Prompt], sampling: SamplingSettings) -> list[Rollout]: ...


@runtime_checkable
class RewardScorer(Protocol):
    def score(self, rollouts: list[Rollout]) -> Scores | list[float | None]: ...


class RewardFailureError(RuntimeError):
    """Too many samples of one step failed their reward (``reward.max_failure_rate``)."""


class NonFiniteError(RuntimeError):
    """The learner skipped ``learner.max_consecutive_skips`` steps in a row for non-finite values."""


class Learner(Protocol):
    def train_step(
        self, batch: TrainBatch, *, sft: SFTLossChoice | None = None, lr: float | None = None
    ) -> dict[str, float]:
        """One update on ``batch``: the RL objective, or with ``sft`` imitation by that SFT objective."""
        ...

    def save_checkpoint(self, path: str, *, weights_only: bool = False) -> str: ...

    def load_checkpoint(self, path: str) -> int: ...

    def set_reference(self, path: str, *, save: bool = False) -> None: ...


class WeightSync(Protocol):
    def push(self, version: int) -> dict[str, float]: ...


class MetricsSink(Protocol):
    def log(self, step: int, metrics: dict[str, float | str]) -> None: ...


@runtime_checkable
class SampleSink(Protocol):
    """A metrics sink that also takes sample tables (``logging.sample_every``)."""

    def log_samples(self, step: int, rows: list[dict[str, Any]]) -> None: ...


@runtime_checkable
class ClosingSink(Protocol):
    """A metrics sink with something to flush and close at the end of a run."""

    def close(self) -> None: ...
