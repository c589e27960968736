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

>>> from rlft.builders import OutcomeBuilder
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

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any

from rlft.algorithms.guidance import GUIDANCE, Mixed, Prefix, ReLIFT, guidance_settings
from rlft.batching import rewards_by_group, usable
from rlft.builders import BatchBuilder
from rlft.collect import Collected, Prompts, StepInfo, SyncCollector, restart_metrics
from rlft.config import RunConfig, SFTLossChoice
from rlft.roles import RewardScorer, RolloutEngine
from rlft.types import DemoText, Prompt, Rollout, SamplingSettings, TrainBatch, TrainSample

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
    settings = guidance_settings(g)
    return BUILDERS[type(settings)](inner, demonstrations, settings)


class MixedEngine:
    """The RL collector's engine with demonstrations in every group (LUFFY): for a group of ``n`` it
    samples ``n - per_group`` completions and adds the prompt's demonstration ``per_group`` times,
    as rollouts whose every token is a demonstration's (``demo_tokens``) (rollout log-probs 0: the demonstrator's probability is
    taken as 1). They are scored with the samples, so they take part in the group's advantage, and
    carry their group's policy version (they have none of their own): lag and staleness treat a
    mixed group as its samples. Evaluation and RFT stages use the plain engine."""

    def __init__(self, engine: RolloutEngine, prompts: Sequence[Prompt], demonstrations: Sequence[TrainSample],
                 texts: Sequence[DemoText], per_group: int):
        self.engine, self.per_group = engine, per_group
        self.demos = {p.prompt_id: (d, t) for p, d, t in zip(prompts, demonstrations, texts)}

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingSettings) -> list[Rollout]:
        k = self.per_group
        sampled = self.engine.generate(prompts, dataclasses.replace(sampling, n=sampling.n - k))
        out: list[Rollout] = []
        for g, prompt in enumerate(prompts):
            group = [r for r in sampled if r.group_id == g]
            demo, text = self.demos[prompt.prompt_id]
            version = min((r.policy_version for r in group), default=0)
            out += group + [Rollout(prompt.prompt_id, g, list(prompt.token_ids), list(demo.completion_ids),
                                    [0.0] * len(demo.completion_ids), "stop", version, prompt.text, text.text,
                                    dict(group[0].metadata) if group else dict(prompt.metadata),
                                    demo_tokens=len(demo.completion_ids))
                            for _ in range(k)]
        return out

    def restart_metrics(self) -> dict[str, float]:
        return restart_metrics(self.engine)


class PrefixCollector(SyncCollector):
    """The synchronous collector with Prefix-RFT's prefixes: in each round, each prompt is prefixed
    with probability ``share`` (annealed over the stage), and then every sample of its group
    continues its own prefix of the prompt's demonstration, ``min_fraction`` to ``max_fraction`` of
    the demonstration's tokens (drawn per sample, annealed too; its EOS never). The draws are seeded
    by the round's sampling seed, so a resumed run draws the same. A prefixed sample is returned as
    prompt -> prefix + continuation, with ``demo_tokens`` = the prefix's length and rollout
    log-probs 0 on it; its continuation may be ``rollout.max_new_tokens`` minus the prefix long."""

    def __init__(self, cfg: RunConfig, engine: RolloutEngine, scorer: RewardScorer, prompts: Prompts,
                 demonstrations: Sequence[TrainSample], texts: Sequence[DemoText], settings: Prefix, **kw: Any):
        super().__init__(cfg, engine, scorer, prompts, **kw)
        self.settings = settings
        self.demos = {p.prompt_id: (d, t) for p, d, t in zip(prompts.prompts, demonstrations, texts)}

    def generate(self, at: StepInfo, prompts: list[Prompt], settings: SamplingSettings) -> list[Rollout]:
        share, low, high = self.settings.at(stage_progress(at))
        rng = random.Random(f"prefix:{settings.seed}")
        plain = [g for g in range(len(prompts)) if rng.random() >= share]
        cut = [(g, j, self._length(prompts[g], rng.uniform(low, high))) for g in range(len(prompts))
               if g not in plain for j in range(settings.n)]
        out = [dataclasses.replace(r, group_id=plain[r.group_id])
               for r in (self.engine.generate([prompts[g] for g in plain], settings) if plain else [])]
        if cut:
            budget = settings.max_new_tokens
            asked = [self._prefixed(prompts[g], k) for g, _, k in cut]
            one = dataclasses.replace(settings, n=1, seed=(settings.seed or 0) + 7_919,
                                      max_new_tokens=max(1, budget - max(k for _, _, k in cut)))
            for r in self.engine.generate(asked, one):
                g, _, k = cut[r.group_id]
                demo, text = self.demos[prompts[g].prompt_id]
                out.append(dataclasses.replace(
                    r, group_id=g, prompt_ids=list(prompts[g].token_ids), prompt=prompts[g].text,
                    completion_ids=list(demo.completion_ids[:k]) + list(r.completion_ids),
                    rollout_logprobs=[0.0] * k + list(r.rollout_logprobs), completion=text.prefix(k) + r.completion,
                    demo_tokens=k))
        return sorted(out, key=lambda r: r.group_id)  # stable: each group's samples in their order

    def _length(self, prompt: Prompt, fraction: float) -> int:
        """Prefix tokens for ``fraction`` of the prompt's demonstration (its EOS excluded)."""
        demo, text = self.demos[prompt.prompt_id]
        return min(round(fraction * len(text.token_ends)), len(text.token_ends), len(demo.completion_ids) - 1)

    def _prefixed(self, prompt: Prompt, k: int) -> Prompt:
        demo, text = self.demos[prompt.prompt_id]
        return dataclasses.replace(prompt, token_ids=list(prompt.token_ids) + list(demo.completion_ids[:k]),
                                   text=prompt.text + text.prefix(k))


def stage_progress(at: StepInfo) -> float:
    """How far through its stage a step is, from 0 (first step) towards 1 (0 outside a stage).

    >>> from rlft.config import StageConfig
    >>> stage_progress(StepInfo(15, 15, stage_end=20, stage=StageConfig(kind="rl", steps=10)))
    0.5
    """
    if at.stage is None or at.stage_end is None:
        return 0.0
    return (at.step - (at.stage_end - at.stage.steps)) / at.stage.steps


class PrefixBuilder(BatchBuilder):
    """The inner builder's batch with the prefix tokens of prefixed samples out of the loss
    (``prefix_tokens: masked``); with ``imitation`` they stay in, and the learner trains them by
    imitation (``rlft.training.Objective.demo_sft_coef``)."""

    def __init__(self, inner: BatchBuilder, demonstrations: Sequence[TrainSample], settings: Prefix):
        self.inner, self.masked = inner, settings.prefix_tokens == "masked"

    def build(self, collected: Collected, version: int) -> tuple[TrainBatch, dict[str, float]]:
        batch, metrics = self.inner.build(collected, version)
        prefixed = [s for s in batch.samples if s.demo_tokens]
        if prefixed:
            metrics["prefix/samples"] = float(len(prefixed))
            metrics["prefix/tokens_mean"] = sum(s.demo_tokens for s in prefixed) / len(prefixed)
        if self.masked:
            batch = TrainBatch([dataclasses.replace(s, loss_mask=_masked(s)) if s.demo_tokens else s
                                for s in batch.samples])
        return batch, metrics

    def before_update(self, batch: TrainBatch) -> tuple[dict[str, float], bool]:
        return self.inner.before_update(batch)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self.inner.load_state_dict(state)


def _masked(s: TrainSample) -> list[int]:
    mask = list(s.loss_mask) if s.loss_mask is not None else [1] * len(s.completion_ids)
    return [0] * s.demo_tokens + mask[s.demo_tokens:]


def guided_collector(cfg: RunConfig, engine: RolloutEngine, scorer: RewardScorer, prompts: Prompts,
                     demonstrations: Sequence[TrainSample], texts: Sequence[DemoText], **kw: Any) -> SyncCollector:
    """The synchronous collector of RL steps: with ``algo.guidance`` ``mixed`` its engine mixes
    demonstrations into the groups (``MixedEngine``), with ``prefix`` it is a ``PrefixCollector``."""
    settings = guidance_settings(cfg.algo.guidance)
    if isinstance(settings, (Mixed, Prefix)) and len(texts) != len(demonstrations):
        raise ValueError(f"{len(texts)} demonstration texts for {len(demonstrations)} demonstrations: the "
                         "rewards score a demonstration (or a prefix of one) by its text")
    if isinstance(settings, Mixed):
        engine = MixedEngine(engine, prompts.prompts, demonstrations, texts, settings.demos_per_group)
    if isinstance(settings, Prefix):
        return PrefixCollector(cfg, engine, scorer, prompts, demonstrations, texts, settings, **kw)
    return SyncCollector(cfg, engine, scorer, prompts, **kw)


BUILDERS: dict[type, Callable[..., BatchBuilder]] = {
    ReLIFT: ReLIFTBuilder,
    Mixed: lambda inner, demos, settings: inner,  # the groups bring the demonstrations (``MixedEngine``)
    Prefix: PrefixBuilder,
}
"""The batch builder of each guidance method's settings (``rlft.algorithms.guidance``)."""


__all__ = ["BUILDERS", "MixedEngine", "PrefixBuilder", "PrefixCollector", "ReLIFTBuilder", "build_guidance",
           "guided_collector", "stage_progress"]
