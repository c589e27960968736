"""The step loop: a short composition of parts, each replaceable without touching the others.

One RL step reads as its phases::

    collected = collector.collect(at)            # prompts (curriculum) -> scored groups; the
                                                 # curriculum observes each group with its advantages
    batch     = builder.build(collected)         # the learner's batch (outcome advantages, or GAE)
    hook      = builder.before_update(batch)     # e.g. PPO's critic update and warm-up
    metrics   = learner.train_step(batch)        # policy loss, KL, clip fraction, ...
    sync      = weights.push(version)            # engines now serve version + 1
    finish                                       # log, checkpoint on the cadence

The parts are Protocols (``rlft.collect.Collector``, ``rlft.builders.BatchBuilder``,
``rlft.roles.Learner`` / ``WeightSync``): fakes in unit tests, Ray actor groups in production.
``rlft.compose.build_driver`` picks them (``rlft.parts``); a new way to collect or to build a
batch is a new part, not a branch here. An RFT step is such a step with the RFT parts.

A run is a list of stages (``sft``, ``rft``, ``rl``); SFT steps train the same learner on prompt +
reference completion and sync the weights when the stage ends. A stage with ``until`` may end
early on a held-out check (``rlft.stopping``). An RL stage right after an SFT stage measures its KL
against a snapshot of the policy the SFT stage left (``algo.kl.reference``). Where the run stands,
its checkpoints and their restore are ``rlft.run_state.RunState``. A stop request (the first
Ctrl-C / SIGTERM) ends the run after the current step with a checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rlft.batching import reward_metrics, rewards_by_group, sample_rows, version_lag_metrics
from rlft.collect import Collected, StepInfo
from rlft.config import RunConfig, SFTLossChoice, StageConfig, stage_names
from rlft.parts import Parts, StepParts
from rlft.roles import MetricsSink, NonFiniteError, RewardFailureError, SampleSink
from rlft.run_state import RunState, RunSummary, snapshots_reference
from rlft.signal_watch import SignalWatch, watches_signal
from rlft.timing import Phases
from rlft.types import TrainBatch

__all__ = ["Driver", "NonFiniteError", "Parts", "RewardFailureError", "RunSummary", "snapshots_reference"]

logger = logging.getLogger(__name__)


def prefixed(role: str, metrics: dict[str, float]) -> dict[str, float]:
    """``role/name`` for a role's metrics; a name with its own namespace (``perf/mfu``) keeps it.

    >>> prefixed("learner", {"loss": 0.5, "perf/mfu": 0.4})
    {'learner/loss': 0.5, 'perf/mfu': 0.4}
    """
    return {k if "/" in k else f"{role}/{k}": v for k, v in metrics.items()}


class Driver:
    """Runs the stages of ``cfg`` with ``parts`` (``rlft.compose.build_driver`` builds both)."""

    def __init__(self, cfg: RunConfig, parts: Parts, *, sink: MetricsSink | None = None,
                 checkpoint_dir: str | None = None, reference_dir: str | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.cfg, self.parts, self.sink, self.clock = cfg, parts, sink, clock
        samplers = {"sampler": parts.prompts.sampler, "sft_sampler": parts.sft.sampler if parts.sft else None}
        self.state = RunState(cfg, learner=parts.learner, collector=parts.collector, builder=parts.builder,
                              samplers=samplers, checkpoint_dir=checkpoint_dir, reference_dir=reference_dir,
                              log=self._log)
        self.watch = SignalWatch(warn=logger.warning, enabled=watches_signal(cfg))  # steps without signal
        self.stage_end: int | None = None  # the global step at which the current stage ends
        self.stop_requested = False  # set from a signal handler: stop at the next step boundary
        self.served: int | None = 0  # the policy version the engines serve (None: unknown)

    def run(self) -> RunSummary:
        """Run the stages from where the run stands (the start, or a restored checkpoint). On
        Ctrl-C / SIGTERM a checkpoint is written first (``checkpoint.on_interrupt``)."""
        s = self.state
        try:
            for index, (stage, name) in enumerate(zip(self.cfg.stages, stage_names(self.cfg.stages))):
                if index < s.stage_index:
                    continue
                self.stage_end = s.step + stage.steps - s.stage_step
                s.start_stage(stage)
                if stage.kind == "sft":
                    self.run_sft(stage, name)
                else:
                    if s.stage_step == 0 and snapshots_reference(self.cfg, index):
                        s.snapshot_reference(name)
                    self.run_rl(stage, name)
                s.end_stage()
            s.checkpoint()
        except KeyboardInterrupt:
            if self.cfg.checkpoint.on_interrupt:
                s.checkpoint_on_interrupt()
            raise
        s.summary.steps, s.summary.version = s.step, s.version
        return s.summary

    def steps(self, stage: StageConfig, name: str) -> Iterator[int]:
        """The stage's steps still to run (their index in the stage): up to ``stage.steps``, or
        fewer when its ``until`` rule ends it on a held-out check (run on the current weights)."""
        s = self.state
        while s.stage_step < stage.steps:
            if s.stop is not None and s.stop.due(s.stage_step):
                self.push()
                if s.stop.observe(self.evaluate(f"{name}_step{s.step}"), at=s.stage_step):
                    logger.warning("stage %s ends: %s", name, s.stop.reason)
            if s.stop is not None and s.stop.stopped:
                return
            yield s.stage_step

    def run_sft(self, stage: StageConfig, name: str) -> None:
        if self.parts.sft is None:
            raise ValueError(f"stage '{name}' is SFT but the data has no reference completions")
        for _ in self.steps(stage, name):
            start = self.clock()
            self.state.begin_step()
            metrics = self._train(self.parts.sft.batch(stage.batch_size), sft=stage.objective, lr=stage.lr)
            self._finish(prefixed("sft", metrics), name, start)
        self.push()  # the engines serve the warmed-up model from here on

    def run_rl(self, stage: StageConfig, name: str) -> None:
        """An RL or RFT stage: held-out evaluations before and after, the step's parts by kind."""
        if self.state.stage_step == 0:
            self.evaluate(f"before_{name}")
        every = self.cfg.evaluation.every
        for i in self.steps(stage, name):
            self.rl_step(name, stage=stage)
            if every and (i + 1) % every == 0 and i + 1 < stage.steps:
                self.evaluate(f"{name}_step{self.state.step}")
        self.evaluate(f"after_{name}")

    def rl_step(self, stage_name: str = "rl", stage: StageConfig | None = None) -> dict[str, float]:
        """One step of an RL (or RFT) stage: collect -> build -> update -> sync -> finish; returns
        (and logs) its metrics."""
        s, phases, start = self.state, Phases(self.clock), self.clock()
        step = self.parts.for_stage(stage)
        s.begin_step()
        collected = step.collector.collect(StepInfo(s.step, s.version, self.stage_end, stage))
        with phases("time/build"):
            batch, built = step.builder.build(collected, s.version)
        metrics = {**self._observed(collected), **built,
                   **self._update(step, batch, stage.lr if stage else None, phases),
                   **collected.timings, **phases.timings}
        self._log_samples(collected, stage_name)
        self._finish(metrics, stage_name, start)
        return metrics

    def _observed(self, c: Collected) -> dict[str, Any]:
        """What the step's collected data says: rewards, lengths, lag, the curriculum, the signal."""
        groups = list(rewards_by_group(c.rollouts, c.totals).values())
        return {**reward_metrics(c.rollouts, c.totals), **c.scores.metrics,
                **version_lag_metrics(c.rollouts, c.totals, self.state.version), **c.metrics,
                **self.parts.prompts.sampler.metrics(),
                **self.watch.observe(self.state.step + 1, groups, self.cfg.rollout.prompts_per_step),
                "prompt_ids": c.prompt_ids}  # logged: a resumed run's data is checkable

    def _update(self, step: StepParts, batch: TrainBatch, lr: float | None, phases: Phases) -> dict[str, float]:
        """The builder's imitation step (if it asks for one), its hook, the policy update of a
        non-empty batch, and the weight sync when the policy changed."""
        metrics: dict[str, float] = {}
        with phases("time/train"):
            imitation = step.builder.interleaved()
            if imitation is not None:  # e.g. ReLIFT's SFT step on demonstrations, between RL updates
                metrics.update(prefixed("guidance", self._train(imitation[0], sft=imitation[1], lr=lr)))
            if len(batch) == 0:  # everything filtered or failed: no update of its own
                logger.warning("step %d: no trainable samples (all groups filtered or failed)", self.state.step + 1)
                metrics["batch/skipped"], trains = 1.0, False
            else:
                self.state.learner_ahead = True  # the hook may update a critic: past the step's boundary
                hook, trains = step.builder.before_update(batch)
                metrics.update(hook)
                if trains:
                    metrics.update(prefixed("learner", self._train(batch, sft=step.sft, lr=lr)))
        if trains or imitation is not None:
            with phases("time/sync"):
                metrics.update(self.push())
        return metrics

    def _train(self, batch: TrainBatch, *, sft: SFTLossChoice | None = None, lr: float | None = None
               ) -> dict[str, float]:
        """One learner step; counts the version and stops after too many non-finite skips in a row."""
        s = self.state
        s.learner_ahead = True
        metrics = self.parts.learner.train_step(batch, sft=sft, lr=lr)
        s.version += 1
        skipped = metrics.get("skipped_steps", 0.0) >= metrics.get("optimizer_steps", 1.0) > 0
        s.consecutive_skips = s.consecutive_skips + 1 if skipped else 0
        limit = self.cfg.learner.max_consecutive_skips
        if s.consecutive_skips >= limit:
            raise NonFiniteError(
                f"step {s.step + 1}: {s.consecutive_skips} learner steps in a row were skipped for a "
                f"non-finite loss or gradient (learner.max_consecutive_skips={limit}); the weights are those "
                f"of step {s.step + 1 - s.consecutive_skips}. Lower the learning rate or check the rewards."
            )
        return metrics

    def push(self) -> dict[str, float]:
        """The engines get the learner's current weights (nothing to do when they serve them)."""
        if self.served == self.state.version:
            return {}
        metrics = self.parts.weights.push(self.state.version)
        self.served = self.state.version
        return metrics

    def evaluate(self, label: str) -> dict[str, float]:
        """Held-out accuracy, pass@k and mean reward (``rlft.evaluation``), kept under ``label``;
        an evaluation already kept under ``label`` (a resumed run's) is not run again."""
        if label in self.state.summary.evaluations:
            return self.state.summary.evaluations[label]
        start = self.clock()
        metrics = self.parts.evaluate()
        if metrics:
            self.state.summary.evaluations[label] = metrics
            self._log({**metrics, "time/eval": self.clock() - start})
        return metrics

    def _log_samples(self, c: Collected, stage: str) -> None:
        """Every ``logging.sample_every`` steps, a few completions with their rewards to the sink."""
        every, step = self.cfg.logging.sample_every, self.state.step + 1  # the step being run
        if isinstance(self.sink, SampleSink) and every and step % every == 0:
            self.sink.log_samples(step, sample_rows(c.rollouts, c.scores, step=step, stage=stage,
                                                    n=self.cfg.logging.samples_per_step))

    def _finish(self, metrics: dict[str, Any], stage: str, start: float) -> None:
        """Count the step, log it, and checkpoint on the configured cadence."""
        s = self.state
        s.end_step()
        metrics.update({"step": float(s.step), "version": float(s.version), "time/step": self.clock() - start})
        self._log(metrics, stage)
        every = self.cfg.checkpoint.every
        if every and s.step % every == 0:
            s.checkpoint()
        if self.stop_requested:
            raise KeyboardInterrupt("stop requested")

    def _log(self, metrics: dict[str, Any], stage: str | None = None) -> None:
        """Hand the metrics to the sink, tagged with the stage they belong to."""
        if self.sink is not None:
            self.sink.log(self.state.step, metrics if stage is None else {**metrics, "stage": stage})

    def restore(self, checkpoint: str | Path) -> None:
        """Continue from ``checkpoint`` (``RunState.restore``); the engines, which start from the
        base model, get the restored weights."""
        self.state.restore(checkpoint)
        self.served = None
        self.push()
