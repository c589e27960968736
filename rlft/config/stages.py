"""A run as stages (``stages``: SFT, RFT and RL steps, in order) and the names of a run's stages,
as logs, metrics, evaluation keys and reference snapshots use them.

A stage runs ``steps`` steps, or ends earlier on a held-out signal (``until``: a threshold or a
plateau of an evaluation metric, checked every ``until.every`` steps):

>>> stage = StageConfig(kind="sft", steps=2000, until={"metric": "eval/accuracy", "threshold": 0.3})
>>> stage.until.every, stage.objective.name
(50, 'nll')
>>> stage_names([StageConfig(kind="rl", steps=100)])
['rl1']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from rlft.algorithms.sft_losses import SFT_LOSSES
from rlft.config.base import Choice, NonNegative, Section


class SFTLossChoice(Choice):
    _registry = SFT_LOSSES
    name: str = "nll"
    """SFT objective from ``rlft.algorithms.SFT_LOSSES``: ``nll`` (plain SFT), ``dft`` (each token's NLL
    weighted by its probability), ``asft`` (DFT anchored by a KL term to the reference model), or a plugin's."""


class UntilConfig(Section):
    """End a stage on a held-out signal instead of its step count (``steps`` stays the ceiling).

    Every ``every`` steps of the stage the engines get the current weights and the held-out
    evaluation runs (``rlft.evaluation``, logged as ``<stage>_step<N>``); the stage ends when
    ``metric`` reaches ``threshold``, or when it has not improved on its best value by more than
    ``min_delta`` for ``patience`` evaluations in a row (a plateau). Give either or both."""

    metric: str = "eval/accuracy"
    """An evaluation metric (``eval/accuracy``, ``eval/mean@<k>``, ``eval/pass@<k>``, ``eval/mean_reward``)."""
    threshold: float | None = None
    """End when the metric is at or past this value (at or below it with ``mode: min``)."""
    patience: Annotated[int, Field(ge=1)] | None = None
    """End after this many evaluations in a row without an improvement of more than ``min_delta``."""
    min_delta: NonNegative = 0.0
    """The smallest change of the metric that counts as an improvement."""
    every: Annotated[int, Field(ge=1)] = 50
    """Steps of the stage between two checks."""
    mode: Literal["max", "min"] = "max"
    """``max``: higher is better; ``min``: lower is better."""

    @model_validator(mode="after")
    def _one_signal(self) -> UntilConfig:
        if self.threshold is None and self.patience is None:
            raise ValueError("until: give a threshold, a patience, or both")
        if not self.metric.startswith("eval/"):
            raise ValueError(f"until.metric must be a held-out evaluation metric (eval/...), got {self.metric!r}")
        return self


class RFTConfig(Section):
    """Rejection-sampling fine-tuning (``kind: rft``): each step samples completions of
    ``rollout.prompts_per_step`` prompts, keeps those the rewards accept, de-duplicates them and
    trains on them with the stage's SFT ``objective``."""

    samples: Annotated[int, Field(ge=1)] = 8
    """Completions sampled per prompt (in the first round, with ``allocation``)."""
    threshold: float = 1.0
    """A completion is accepted when its total reward is at least this (failed rewards never are)."""
    dedup: Literal["none", "exact", "normalized", "equations"] = "equations"
    """Which accepted completions of one prompt count as the same: ``exact`` text, ``normalized``
    text (whitespace and case), or the same list of intermediate ``equations`` (the RFT paper's
    reasoning paths; text without equations falls back to ``normalized``); ``none`` keeps all."""
    max_per_prompt: Annotated[int, Field(ge=1)] | None = None
    """Keep at most this many distinct accepted completions per prompt (None: all)."""
    allocation: Literal["fixed", "uniform", "difficulty"] = "fixed"
    """DART's difficulty-aware allocation: ``fixed`` samples ``samples`` per prompt once;
    ``uniform`` samples more, in rounds of ``samples``, for prompts with fewer than ``target``
    accepted completions; ``difficulty`` wants more for harder prompts (``target`` scaled by the
    prompt's first-round failure rate, at least 1). Both stop at ``max_samples`` per prompt."""
    target: Annotated[int, Field(ge=1)] = 4
    """DART: accepted completions wanted per prompt."""
    max_samples: Annotated[int, Field(ge=1)] = 32
    """DART: the budget of samples per prompt."""

    @model_validator(mode="after")
    def _budget(self) -> RFTConfig:
        if self.max_samples < self.samples:
            raise ValueError(f"rft.max_samples ({self.max_samples}) must be >= rft.samples ({self.samples})")
        return self


class StageConfig(Section):
    kind: Literal["sft", "rl", "rft"]
    """``sft``: supervised steps on prompt + reference completion (loss on response tokens only);
    ``rl``: the sample -> score -> learn loop; ``rft``: rejection-sampling fine-tuning, supervised
    steps on the policy's own accepted samples (``rft``)."""
    steps: Annotated[int, Field(ge=1)]
    """Learner steps in this stage (the ceiling, with ``until``)."""
    until: UntilConfig | None = None
    """End the stage early on a held-out signal (threshold or plateau); None: run all ``steps``."""
    objective: SFTLossChoice = SFTLossChoice()
    """SFT and RFT stages: the imitation objective (``nll``, ``dft``, ``asft``)."""
    rft: RFTConfig | None = None
    """RFT stages: sampling, acceptance and de-duplication; None: the defaults."""
    name: str | None = None
    """Label in logs, metrics and evaluation keys (``before_<name>``); defaults to ``<kind><n>``, n
    counting the stages of that kind from 1 (SFT then RL: ``sft1``, ``rl1``)."""
    lr: NonNegative | None = None
    """Peak learning rate of this stage; None uses ``learner.lr``. 0 freezes the policy while
    everything else runs (generation, rewards, learner passes, weight syncs): a control run."""
    batch_size: Annotated[int, Field(ge=1)] = 64
    """SFT only: examples per step (RL steps use rollout.prompts_per_step x group_size)."""

    @model_validator(mode="after")
    def _fits_kind(self) -> StageConfig:
        if self.rft is not None and self.kind != "rft":
            raise ValueError(f"stage kind '{self.kind}' has an rft section: only kind 'rft' takes one")
        if self.kind == "rl" and self.objective != SFTLossChoice():
            raise ValueError("an RL stage has no SFT objective: set it on sft or rft stages")
        return self

    @property
    def rft_settings(self) -> RFTConfig:
        """The stage's RFT settings (the defaults when it names none)."""
        return self.rft or RFTConfig()


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
