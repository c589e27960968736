"""The one place a run's config picks the parts of its step.

``build_driver`` makes a ``rlft.driver.Driver`` from the roles (any objects with the
``rlft.roles`` Protocols: Ray actor groups in production, fakes in tests):

* the collector: ``PipelinedCollector`` with ``rollout.max_staleness > 0`` (it needs ``stream``),
  else ``SyncCollector`` (dynamic sampling included), which ``algo.guidance`` may make mix
  demonstrations into groups or continue their prefixes (``rlft.guidance.guided_collector``);
* the batch builder: ``CriticBuilder`` with ``critic:`` in the config (it needs ``critic``; the
  learner then also serves the KL's reference log-probs), else ``OutcomeBuilder``;
* around it, the builder of ``algo.guidance`` (``rlft.guidance``, e.g. ReLIFT), which takes
  ``sft_examples`` as the training prompts' demonstrations (``sft_examples[i]`` for prompt ``i``);
* for ``kind: rft`` stages: ``rlft.rft.RFTCollector`` and ``ImitationBuilder``.

>>> from rlft.config import load_config
>>> from rlft.types import Prompt, Rollout
>>> class Echo:  # engine and scorer at once: completion i of a group is token i, odd ones rewarded
...     def generate(self, prompts, sampling):
...         return [Rollout(p.prompt_id, g, list(p.token_ids), [i], [0.0], "stop", 0)
...                 for g, p in enumerate(prompts) for i in range(sampling.n)]
...     def score(self, rollouts):
...         return [float(r.completion_ids[0] % 2) for r in rollouts]
>>> class Learner:
...     def train_step(self, batch, *, sft=None, lr=None):
...         return {"samples": float(len(batch))}
>>> class Weights:
...     def push(self, version):
...         return {}
>>> cfg = load_config(overrides=["rollout.prompts_per_step=2", "rollout.group_size=4"])
>>> echo, prompts = Echo(), [Prompt("a", [1]), Prompt("b", [2])]
>>> driver = build_driver(cfg, engine=echo, scorer=echo, learner=Learner(), weights=Weights(), train_prompts=prompts)
>>> m = driver.rl_step()
>>> m["learner/samples"], m["reward/mean"], type(driver.parts.collector).__name__
(8.0, 0.5, 'SyncCollector')

To use a part of your own, start from the defaults (``parts``) and replace one:

>>> import dataclasses
>>> from rlft.driver import Driver
>>> chosen = parts(cfg, engine=echo, scorer=echo, learner=Learner(), weights=Weights(), train_prompts=prompts)
>>> driver = Driver(cfg, dataclasses.replace(chosen, builder=OutcomeBuilder(cfg)))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from rlft.builders import BatchBuilder, OutcomeBuilder
from rlft.collect import Collector, Prompts, SFTExamples
from rlft.config import RunConfig
from rlft.driver import Driver
from rlft.evaluation import Evaluator
from rlft.guidance import build_guidance, guided_collector
from rlft.parts import Parts, StepParts
from rlft.pipeline import GroupStream, PipelinedCollector
from rlft.ppo_step import Critic, CriticBuilder
from rlft.rft import ImitationBuilder, RFTCollector
from rlft.roles import Learner, MetricsSink, RewardScorer, RolloutEngine, WeightSync
from rlft.types import DemoText, Prompt, TrainSample


def parts(
    cfg: RunConfig,
    *,
    engine: RolloutEngine,
    scorer: RewardScorer,
    learner: Learner,
    weights: WeightSync,
    train_prompts: Sequence[Prompt],
    eval_prompts: Sequence[Prompt] = (),
    sft_examples: Sequence[TrainSample] = (),
    demonstration_texts: Sequence[DemoText] = (),
    critic: Critic | None = None,
    stream: GroupStream | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Parts:
    """The parts ``cfg`` asks for. ``stream`` (generating and scoring upcoming steps in the
    background) is required with ``rollout.max_staleness > 0``; ``critic`` with ``cfg.critic``.
    ``sft_examples[i]`` is training prompt ``i``'s reference solution (SFT stages, guidance), and
    ``demonstration_texts[i]`` its text (the rewards score demonstrations, and prefixes of them)."""
    prompts = Prompts(cfg, train_prompts)
    collector: Collector
    if cfg.rollout.max_staleness > 0:
        if stream is None:
            raise ValueError("rollout.max_staleness > 0 needs a stream that generates ahead (actors.stream)")
        collector = PipelinedCollector(cfg, stream, prompts, engine=engine, scorer=scorer, clock=clock)
    else:
        collector = guided_collector(cfg, engine, scorer, prompts, sft_examples, demonstration_texts, clock=clock)
    builder: BatchBuilder
    if cfg.critic is not None:
        if critic is None:
            raise ValueError("the config has a critic section but no critic was given")
        builder = CriticBuilder(cfg, critic, learner)  # type: ignore[arg-type]  # the learner scores the reference
    else:
        builder = OutcomeBuilder(cfg)
    builder = build_guidance(cfg, builder, sft_examples, len(train_prompts))  # demonstrations inside RL stages, if asked for
    rft = StepParts(RFTCollector(cfg, engine, scorer, prompts, clock=clock), ImitationBuilder())  # kind: rft stages
    return Parts(collector, builder, learner, weights, prompts, Evaluator(cfg, engine, scorer, eval_prompts),
                 SFTExamples(sft_examples, seed=cfg.seed) if sft_examples else None, rft)


def build_driver(
    cfg: RunConfig,
    *,
    sink: MetricsSink | None = None,
    checkpoint_dir: str | None = None,
    reference_dir: str | None = None,
    clock: Callable[[], float] = time.perf_counter,
    **roles: Any,
) -> Driver:
    """A driver with the parts ``cfg`` asks for; ``roles`` are ``parts``'s keywords (``engine``,
    ``scorer``, ``learner``, ``weights``, ``train_prompts``, ...). ``reference_dir`` receives the
    policy snapshots that RL stages after an SFT stage measure their KL against."""
    return Driver(cfg, parts(cfg, clock=clock, **roles), sink=sink, checkpoint_dir=checkpoint_dir,
                  reference_dir=reference_dir, clock=clock)
