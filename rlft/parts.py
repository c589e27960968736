"""What a run's steps are made of: ``Parts`` (chosen by ``rlft.compose.parts``) and, for a sampled
step, its ``StepParts``.

An RL step collects with ``Parts.collector`` and builds with ``Parts.builder``; an RFT step
(``kind: rft``) collects with the RFT collector, which samples and keeps the accepted, distinct
completions, builds them into demonstrations, and the policy imitates them with the stage's SFT
objective. The driver asks ``Parts.for_stage`` and runs whatever it gets.

>>> from rlft.config import StageConfig
>>> parts = Parts(collector="rl collector", builder="rl builder", learner=None, weights=None, prompts=None,
...               rft=StepParts("rft collector", "rft builder"))
>>> parts.for_stage(None).collector, parts.for_stage(StageConfig(kind="rl", steps=1)).sft
('rl collector', None)
>>> step = parts.for_stage(StageConfig(kind="rft", steps=1, objective={"name": "dft"}))
>>> step.collector, step.builder, step.sft.name
('rft collector', 'rft builder', 'dft')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from rlft.builders import BatchBuilder
from rlft.collect import Collector, Prompts, SFTExamples
from rlft.config import SFTLossChoice, StageConfig
from rlft.roles import Learner, WeightSync


@dataclass(frozen=True)
class StepParts:
    """How a sampled step gets and uses its data: the collector, the batch builder, and the SFT
    objective the policy imitates the batch with (None: the RL objective)."""

    collector: Collector
    builder: BatchBuilder
    sft: SFTLossChoice | None = None


@dataclass(frozen=True)
class Parts:
    """What a step is made of: how it collects, how it builds a batch, the learner and the weight
    sync; the training prompts and their curriculum, the held-out evaluation, the SFT examples, and
    the collector and builder of RFT stages (``rlft.rft``)."""

    collector: Collector
    builder: BatchBuilder
    learner: Learner
    weights: WeightSync
    prompts: Prompts
    evaluate: Callable[[], dict[str, float]] = dict
    sft: SFTExamples | None = None
    rft: StepParts | None = None

    def for_stage(self, stage: StageConfig | None) -> StepParts:
        """The collector, builder and objective of a step of ``stage`` (None: an RL step)."""
        if stage is not None and stage.kind == "rft":
            if self.rft is None:
                raise ValueError("an RFT stage needs the parts of rlft.rft (rlft.compose builds them)")
            return replace(self.rft, sft=stage.objective)
        return StepParts(self.collector, self.builder)


__all__ = ["Parts", "StepParts"]
