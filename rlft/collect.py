"""How a step gets its data: a ``Collector`` turns "the next step's prompts" into scored groups.

A collector draws the step's prompts from the curriculum (``Prompts``), has them generated and
scored, and returns one ``Collected``: the groups it keeps for training (flat rollouts whose group
``g`` is the prompt ``indices[g]``), their scores and outcome advantages, its metrics and timings.
It lets the curriculum observe every group it scored, each once, as soon as it is scored (with the
same advantages the batch trains on): observation is part of collection because a collector that
draws again within a step (dynamic sampling) or ahead of it (the pipeline) must draw with what it
has just seen.

Two collectors ship: ``SyncCollector`` (generate, score; with dynamic sampling more rounds until
the step's groups carry signal) and ``rlft.pipeline.PipelinedCollector`` (``rollout.max_staleness``:
upcoming steps are generated while the learner trains). Multi-turn episodes are a third, as a new
class. Any object with these methods fits::

    class Replay:  # trains on groups collected earlier, e.g. from disk
        def collect(self, at: StepInfo) -> Collected: ...
        def state_dict(self) -> list[dict]: ...      # what a checkpoint must hold to continue
        def load_state_dict(self, state: list[dict]) -> None: ...
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rlft.batching import group_results, group_variances, outcome_advantages
from rlft.config import RunConfig, StageConfig
from rlft.curriculum import UniformSampler, build_sampler
from rlft.curriculum.base import Sampler
from rlft.roles import RewardFailureError, RewardScorer, RolloutEngine
from rlft.timing import Phases
from rlft.types import Prompt, Rollout, SamplingSettings, Scores, TrainBatch, TrainSample

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepInfo:
    """Where the run is when a step collects: the 0-based global ``step``, the policy ``version``
    the learner is at, ``stage_end``, the global step at which the current stage ends, and the
    ``stage``'s config (both None: a step run on its own, outside a stage)."""

    step: int
    version: int
    stage_end: int | None = None
    stage: StageConfig | None = None


@dataclass(frozen=True)
class Collected:
    """A step's scored groups: rollout group ``g`` was sampled from prompt ``indices[g]``;
    ``advantages`` (one per rollout, None where the reward failed) are the ones the curriculum
    observed; ``metrics`` and ``timings`` (``time/generate``, ``time/reward``) are logged as they are.

    >>> c = Collected([4], [Rollout("p4", 0, [1], [2], [0.0], "stop", 0)], Scores([1.0]), [0.0], prompt_ids=["p4"])
    >>> c.totals, c.indices
    ([1.0], [4])
    """

    indices: list[int]
    rollouts: list[Rollout]
    scores: Scores
    advantages: list[float | None]
    metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    prompt_ids: list[str] = field(default_factory=list)  # the drawn prompts' ids, logged (a resume is checkable)

    @property
    def totals(self) -> list[float | None]:
        return self.scores.totals


class Collector(Protocol):
    """Turns the next step's prompts into scored groups (``Collected``)."""

    def collect(self, at: StepInfo) -> Collected: ...

    def state_dict(self) -> list[dict[str, Any]]:
        """Prompts drawn for steps not trained yet (``{"step", "indices", "observed"}`` each)."""
        ...

    def load_state_dict(self, state: list[dict[str, Any]]) -> None: ...


@runtime_checkable
class Restartable(Protocol):
    """A role whose workers Ray restarts (``actors.runtime``): it counts them for the step's metrics."""

    def restart_metrics(self) -> dict[str, float]: ...


def restart_metrics(*roles: object) -> dict[str, float]:
    """The run's restart counters of the roles that have them."""
    out: dict[str, float] = {}
    for role in roles:
        if isinstance(role, Restartable):
            out.update(role.restart_metrics())
    return out


def sampler_setup(cfg: RunConfig) -> tuple[str, dict[str, Any]]:
    """The metadata field that names a prompt's category, and the sampler's params. With
    ``data.sources`` and ``weighted_sources`` without weights, the sources' own weights are used
    (and their names as categories).

    >>> from rlft.config import load_config
    >>> sampler_setup(load_config(overrides=["curriculum.name=weighted_sources",
    ...     "data.sources=[{path: a.jsonl, weight: 3}, {path: b.jsonl}]"]))
    ('source', {'weights': {'a': 3.0, 'b': 1.0}})
    """
    c, sources = cfg.curriculum, cfg.data.sources
    params = dict(c.params)
    if c.name == "weighted_sources" and "weights" not in params and sources:
        return "source", {**params, "weights": {s.label: s.weight for s in sources}}
    return c.category_field, params


class Prompts:
    """The training prompts and the curriculum sampler that draws from them; ``observe`` tells the
    sampler how each drawn prompt's group did (rewards and the step's advantages)."""

    def __init__(self, cfg: RunConfig, prompts: Sequence[Prompt]):
        self.prompts = list(prompts)
        field_name, params = sampler_setup(cfg)
        self.categories = [None if p.metadata.get(field_name) is None else str(p.metadata[field_name])
                           for p in self.prompts]
        self.sampler: Sampler = build_sampler(cfg.curriculum.name, self.categories, seed=cfg.seed, params=params)

    def draw(self, n: int) -> list[int]:
        return list(self.sampler.sample(n))

    def get(self, indices: Sequence[int]) -> list[Prompt]:
        return [self.prompts[i] for i in indices]

    def observe(self, indices: Sequence[int], rollouts: Sequence[Rollout], scores: Scores,
                advantages: Sequence[float | None]) -> None:
        self.sampler.observe(group_results(indices, rollouts, scores.totals, advantages, categories=self.categories))


def sampling_settings(cfg: RunConfig, step: int, *, n: int | None = None,
                      temperature: float | None = None) -> SamplingSettings:
    """Sampling settings of ``step``: seeded per step, so a rerun samples the same completions
    (evaluation uses steps -1 and -2).

    >>> from rlft.config import load_config
    >>> cfg = load_config(overrides=["seed=3"])
    >>> sampling_settings(cfg, 5).seed, sampling_settings(cfg, 0, n=1, temperature=0.0).temperature
    (3000014, 0.0)
    """
    r = cfg.rollout
    base = cfg.seed if r.seed is None else r.seed
    return SamplingSettings(
        n=r.group_size if n is None else n,
        temperature=r.temperature if temperature is None else temperature,
        top_p=r.top_p,
        top_k=r.top_k,
        max_new_tokens=r.max_new_tokens,
        stop=tuple(r.stop),
        seed=base * 1_000_003 + step,
    )


def check_failures(scores: Scores, step: int, max_failure_rate: float) -> None:
    """Log the first reward errors of ``step`` (0-based); stop the run when more than
    ``max_failure_rate`` of the samples failed (``RewardFailureError``)."""
    for error in scores.errors:
        logger.warning("step %d: %s", step + 1, error)  # the step being run, as the console counts
    if scores.failed_fraction > max_failure_rate:
        raise RewardFailureError(
            f"step {step + 1}: {scores.failed_fraction:.0%} of the samples failed their reward "
            f"(reward.max_failure_rate={max_failure_rate:g}); first errors: " + "; ".join(scores.errors[:3])
        )


def select(scores: Scores, chosen: Sequence[int]) -> Scores:
    """The scores of the samples at ``chosen`` (the metrics kept as they were for the batch)."""
    return Scores(
        [scores.totals[i] for i in chosen],
        dict(scores.metrics),
        list(scores.errors),
        {k: [v[i] for i in chosen] for k, v in scores.per_reward.items()},
    )


class SyncCollector:
    """Draw ``rollout.prompts_per_step`` prompts, generate their groups and score them; the
    curriculum observes every group.

    With dynamic sampling (DAPO, ``algo.dynamic_sampling``) only groups whose rewards differ are
    kept, and more prompts are drawn (a fresh seed per round) until ``n`` such groups are in hand
    or ``max_extra_rounds`` run out; then the step goes on with what it has. Group ids stay unique
    across rounds."""

    def __init__(self, cfg: RunConfig, engine: RolloutEngine, scorer: RewardScorer, prompts: Prompts,
                 *, clock: Callable[[], float] = time.perf_counter):
        self.cfg, self.engine, self.scorer, self.prompts, self.clock = cfg, engine, scorer, prompts, clock
        self.drawn: dict[int, list[int]] = {}  # resumed from a pipelined checkpoint: drawn, not trained

    def collect(self, at: StepInfo) -> Collected:
        cfg, ds, n = self.cfg, self.cfg.algo.dynamic_sampling, self.cfg.rollout.prompts_per_step
        kept_idx: list[int] = []
        kept: list[Rollout] = []
        parts: list[Scores] = []
        advantages: list[float | None] = []
        sampled = zero_variance = rounds = 0
        phases = Phases(self.clock, "time/generate", "time/reward")
        while True:
            drawn = self.drawn.pop(at.step, None) if not rounds else None
            indices = drawn if drawn is not None else self.prompts.draw(n - len(kept_idx) if ds.enabled else n)
            settings = sampling_settings(cfg, at.step)
            if rounds:
                settings = dataclasses.replace(settings, seed=(settings.seed or 0) + 1_000_003 * 7919 * rounds)
            with phases("time/generate"):
                rollouts = self.generate(at, self.prompts.get(indices), settings)
            with phases("time/reward"):
                scores = Scores.of(self.scorer.score(rollouts))
                check_failures(scores, at.step, cfg.reward.max_failure_rate)
            adv = outcome_advantages(rollouts, scores.totals, estimator=cfg.algo.advantage.name,
                                     params=cfg.algo.advantage.params)
            self.prompts.observe(indices, rollouts, scores, adv)
            rounds += 1
            sampled += len(indices)
            signal = group_variances(rollouts, scores.totals)
            zero_variance += sum(not v for v in signal.values())
            keep = [g for g in range(len(indices)) if signal.get(g, False) or not ds.enabled][: n - len(kept_idx)]
            remap = {g: len(kept_idx) + j for j, g in enumerate(keep)}
            chosen = [i for i, r in enumerate(rollouts) if r.group_id in remap]
            kept += [dataclasses.replace(rollouts[i], group_id=remap[rollouts[i].group_id]) for i in chosen]
            advantages += [adv[i] for i in chosen]
            parts.append(select(scores, chosen))
            kept_idx += [indices[g] for g in keep]
            if not ds.enabled or len(kept_idx) >= n or rounds > ds.max_extra_rounds:
                break
        tokens = sum(len(r.completion_ids) for r in kept)
        metrics = {"sampling/rounds": float(rounds), "sampling/prompts": float(sampled),
                   "sampling/zero_variance_fraction": zero_variance / max(sampled, 1),
                   "throughput/tokens_per_s": tokens / max(phases.timings["time/generate"], 1e-9),
                   **restart_metrics(self.engine, self.scorer)}
        if ds.enabled:
            metrics["sampling/groups_short"] = float(n - len(kept_idx))
            if len(kept_idx) < n:
                logger.warning("step %d: dynamic sampling found %d of %d groups with signal in %d rounds",
                               at.step + 1, len(kept_idx), n, rounds)
        scores = Scores.concat(parts) if len(parts) > 1 else parts[0]
        return Collected(kept_idx, kept, scores, advantages, metrics, phases.timings,
                         [p.prompt_id for p in self.prompts.get(kept_idx)])

    def generate(self, at: StepInfo, prompts: list[Prompt], settings: SamplingSettings) -> list[Rollout]:
        """One round's groups of ``prompts`` (a subclass may change what is generated, e.g. prefixes)."""
        return self.engine.generate(prompts, settings)

    def state_dict(self) -> list[dict[str, Any]]:
        return [{"step": s, "indices": list(i), "observed": []} for s, i in sorted(self.drawn.items())]

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        """Prompts a pipelined run drew for steps it had not trained: trained on, not drawn again."""
        self.drawn = {int(t["step"]): list(t["indices"]) for t in state}


class SFTExamples:
    """The reference completions of SFT stages (prompt + completion, advantage 1 on each token),
    drawn uniformly; its sampler's state is part of the run's."""

    def __init__(self, examples: Sequence[TrainSample], seed: int):
        self.examples = list(examples)
        self.sampler = UniformSampler(len(self.examples), seed=seed)

    def batch(self, n: int) -> TrainBatch:
        return TrainBatch([self.examples[i] for i in self.sampler.sample(n)])
