"""Guidance inside RL stages: demonstrations that help where the policy's own samples cannot.

``algo.guidance: {name, params}`` picks one method of ``rlft.algorithms.guidance.GUIDANCE``; its
``BUILDERS`` entry is a ``BatchBuilder`` around the RL stage's own (``OutcomeBuilder``, or PPO's
``CriticBuilder``), made with the run's demonstrations (the dataset's ``data.solution_field``, a built-in task's reference solutions: one
per training prompt, as SFT stages use them).

``relift`` (ReLIFT, Ma et al. 2025, "Learning What Reinforcement Learning Can't"): RL keeps what
the model can do; the prompts it cannot solve at all (no sample of the group reaches ``solved_at``)
go into a buffer, and once the buffer holds ``batch_size`` of them one SFT step on their
demonstrations runs right before the step's RL update (``BatchBuilder.interleaved``), then RL goes
on. The buffer is part of checkpoints; the SFT step is a policy version of its own.

>>> from rlft.collect import Collected
>>> from rlft.config import load_config
>>> from rlft.types import Rollout, Scores, TrainSample
>>> demos = [TrainSample([1], [10 + i], [1.0]) for i in range(4)]  # prompt i's reference solution
>>> cfg = load_config(overrides=["algo.guidance={name: relift, params: {batch_size: 2}}"])
>>> relift = build_guidance(cfg, OutcomeBuilder(cfg), demos)
>>> def step(indices, rewards):  # two samples per prompt
...     rs = [Rollout(f"p{i}", g, [1], [2], [0.0], "stop", 0) for g, i in enumerate(indices) for _ in range(2)]
...     return Collected(indices, rs, Scores(rewards), [0.0] * len(rs))
>>> _, m = relift.build(step([0, 1], [0.0, 0.0, 1.0, 0.0]), version=0)  # prompt 0 failed, 1 was solved once
>>> m["relift/buffer"], relift.interleaved() is None
(1.0, True)
>>> _, m = relift.build(step([2, 3], [0.0, 0.0, 0.0, 1.0]), version=1)  # prompt 2 failed: the buffer is full
>>> batch, objective = relift.interleaved()
>>> [s.completion_ids for s in batch.samples], objective.name, relift.state_dict()
([[10], [12]], 'nll', {'buffer': [], 'sft_steps': 1})
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rlft.algorithms.guidance import GUIDANCE, ReLIFT
from rlft.batching import rewards_by_group, usable
from rlft.builders import BatchBuilder, OutcomeBuilder
from rlft.collect import Collected
from rlft.config import RunConfig, SFTLossChoice
from rlft.types import TrainBatch, TrainSample

class ReLIFTBuilder(BatchBuilder):
    """The inner builder's batch, plus a buffer of the prompts no sample solved; when the buffer
    holds ``batch_size`` prompts, ``interleaved`` hands their demonstrations (oldest first) to one SFT
    step with ``objective``. A prompt already waiting is not added twice."""

    def __init__(self, inner: BatchBuilder, demonstrations: Sequence[TrainSample], settings: ReLIFT):
        self.inner, self.demos = inner, list(demonstrations)
        self.batch_size, self.solved_at = settings.batch_size, settings.solved_at
        self.objective = SFTLossChoice(name=settings.objective, params=settings.objective_params)
        self.buffer: list[int] = []  # prompt indices waiting for an SFT step, oldest first
        self.sft_steps = 0

    def build(self, collected: Collected, version: int) -> tuple[TrainBatch, dict[str, float]]:
        batch, metrics = self.inner.build(collected, version)
        groups = rewards_by_group(collected.rollouts, collected.totals)
        failed = [collected.indices[g] for g, rewards in sorted(groups.items())
                  if any(usable(r) for r in rewards)
                  and not any(usable(r) and r >= self.solved_at for r in rewards)]  # type: ignore[operator]
        added = [i for i in dict.fromkeys(failed) if i not in self.buffer]
        self.buffer += added
        return batch, {**metrics, "relift/failed_prompts": float(len(failed)), "relift/added": float(len(added)),
                       "relift/buffer": float(len(self.buffer))}

    def interleaved(self) -> tuple[TrainBatch, SFTLossChoice] | None:
        if len(self.buffer) < self.batch_size:
            return None
        chosen, self.buffer = self.buffer[: self.batch_size], self.buffer[self.batch_size:]
        self.sft_steps += 1
        return TrainBatch([self.demos[i] for i in chosen]), self.objective

    def before_update(self, batch: TrainBatch) -> tuple[dict[str, float], bool]:
        return self.inner.before_update(batch)

    def state_dict(self) -> dict[str, Any]:
        inner = self.inner.state_dict()
        return {"buffer": list(self.buffer), "sft_steps": self.sft_steps, **({"inner": inner} if inner else {})}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        state = state or {}
        self.buffer, self.sft_steps = list(state.get("buffer", [])), int(state.get("sft_steps", 0))
        self.inner.load_state_dict(state.get("inner"))

    def save_checkpoint(self, path: str) -> None:
        self.inner.save_checkpoint(path)

    def load_checkpoint(self, path: str) -> None:
        self.inner.load_checkpoint(path)


def build_guidance(cfg: RunConfig, inner: BatchBuilder, demonstrations: Sequence[TrainSample],
                   prompts: int | None = None) -> BatchBuilder:
    """The builder ``algo.guidance`` asks for around ``inner`` (``inner`` itself without guidance);
    ``demonstrations[i]`` is training prompt ``i``'s reference solution (of ``prompts``)."""
    g = cfg.algo.guidance
    if g is None:
        return inner
    if GUIDANCE.meta(g.name).get("needs_demonstrations"):
        if not demonstrations:
            raise ValueError(f"algo.guidance '{g.name}' needs a reference solution for every training prompt "
                             "(data.solution_field, or a builtin: task)")
        if prompts is not None and len(demonstrations) != prompts:
            raise ValueError(f"algo.guidance '{g.name}': {len(demonstrations)} demonstrations for {prompts} "
                             "training prompts (one each, in order)")
    settings = GUIDANCE.get(g.name)(**g.params)
    return BUILDERS[type(settings)](inner, demonstrations, settings)


BUILDERS: dict[type, Callable[..., BatchBuilder]] = {ReLIFT: ReLIFTBuilder}
"""The batch builder of each guidance method's settings (``rlft.algorithms.guidance``)."""


__all__ = ["BUILDERS", "ReLIFTBuilder", "build_guidance"]
