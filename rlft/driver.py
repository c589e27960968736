"""The step loop, written against Protocols: fakes in unit tests, Ray actors in production.

One RL step reads as its phases::

    prompts  = sampler.sample(n)                      # which prompts (curriculum)
    rollouts = engine.generate(prompts, sampling)     # groups of completions, each with its version
    scores   = scorer.score(rollouts)                 # None marks a failed reward, never 0
    batch    = build_train_batch(rollouts, scores)    # advantages on the driver
    metrics  = learner.train_step(batch)              # policy loss, KL, clip fraction, ...
    sync     = weights.push(version)                  # engines now serve version + 1

A run is a list of stages (``sft``, ``rl``); SFT steps train the same learner on prompt + reference
completion and sync the weights when the stage ends. Rollouts carry the policy version that produced
them and the batch builder accepts older versions, so a later pipeline can overlap generation of
step t+1 with training on step t; this loop is synchronous.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from rlft.batching import build_train_batch, reward_metrics, sample_rows
from rlft.config import RunConfig, StageConfig
from rlft.curriculum import UniformSampler
from rlft.types import Prompt, Rollout, SamplingSettings, Scores, TrainBatch, TrainSample

logger = logging.getLogger(__name__)


class RolloutEngine(Protocol):
    def generate(self, prompts: list[Prompt], sampling: SamplingSettings) -> list[Rollout]: ...


class RewardScorer(Protocol):
    def score(self, rollouts: list[Rollout]) -> Scores | list[float | None]: ...


class RewardFailureError(RuntimeError):
    """Too many samples of one step failed their reward (``reward.max_failure_rate``)."""


class Learner(Protocol):
    def train_step(
        self, batch: TrainBatch, *, supervised: bool = False, lr: float | None = None
    ) -> dict[str, float]: ...

    def save_pretrained(self, path: str) -> str: ...


class WeightSync(Protocol):
    def push(self, version: int) -> dict[str, float]: ...


class MetricsSink(Protocol):
    def log(self, step: int, metrics: dict[str, float | str]) -> None: ...


@dataclass
class RunSummary:
    """What a run did: evaluations by name (e.g. ``before_rl0``, ``after_rl0``) and the last step."""

    evaluations: dict[str, dict[str, float]] = field(default_factory=dict)
    steps: int = 0
    version: int = 0
    checkpoints: list[str] = field(default_factory=list)


class Driver:
    """Runs the stages of ``cfg`` against the given roles."""

    def __init__(
        self,
        cfg: RunConfig,
        *,
        engine: RolloutEngine,
        scorer: RewardScorer,
        learner: Learner,
        weights: WeightSync,
        train_prompts: Sequence[Prompt],
        eval_prompts: Sequence[Prompt] = (),
        sft_examples: Sequence[TrainSample] = (),
        sink: MetricsSink | None = None,
        checkpoint_dir: str | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.cfg = cfg
        self.engine, self.scorer, self.learner, self.weights = engine, scorer, learner, weights
        self.train_prompts, self.eval_prompts = list(train_prompts), list(eval_prompts)
        self.sft_examples = list(sft_examples)
        self.sink, self.checkpoint_dir, self.clock = sink, checkpoint_dir, clock
        self.sampler = UniformSampler(len(self.train_prompts), seed=cfg.seed)
        self.sft_sampler = UniformSampler(len(self.sft_examples), seed=cfg.seed) if self.sft_examples else None
        self.version = 0  # learner steps applied == policy version the engines serve after a sync
        self.step = 0  # global step counter across stages (logging, checkpoints)
        self.summary = RunSummary()

    # ------------------------------------------------------------------------------------------

    def run(self) -> RunSummary:
        for index, stage in enumerate(self.cfg.stages):
            name = stage.name or f"{stage.kind}{index}"
            if stage.kind == "sft":
                self.run_sft(stage, name)
            else:
                self.run_rl(stage, name)
        self.checkpoint()
        self.summary.steps, self.summary.version = self.step, self.version
        return self.summary

    def run_sft(self, stage: StageConfig, name: str) -> None:
        if self.sft_sampler is None:
            raise ValueError(f"stage '{name}' is SFT but the data has no reference completions")
        for _ in range(stage.steps):
            start = self.clock()
            batch = TrainBatch([self.sft_examples[i] for i in self.sft_sampler.sample(stage.batch_size)])
            metrics = self.learner.train_step(batch, supervised=True, lr=stage.lr)
            self.version += 1
            self._finish_step({f"sft/{k}": v for k, v in metrics.items()}, name, start)
        self._sync()  # the engines serve the warmed-up model from here on

    def run_rl(self, stage: StageConfig, name: str) -> None:
        self._evaluate(f"before_{name}")
        every = self.cfg.evaluation.every
        for i in range(stage.steps):
            self.rl_step(name, lr=stage.lr)
            if every and (i + 1) % every == 0 and i + 1 < stage.steps:
                self._evaluate(f"{name}_step{self.step}")
        self._evaluate(f"after_{name}")

    def rl_step(self, stage_name: str = "rl", lr: float | None = None) -> dict[str, float]:
        """One synchronous RL step; returns (and logs) its metrics."""
        cfg, timings = self.cfg, {}
        start = t = self.clock()
        prompts = [self.train_prompts[i] for i in self.sampler.sample(cfg.rollout.prompts_per_step)]
        rollouts = self.engine.generate(prompts, self.sampling(self.step))
        timings["time/generate"], t = self.clock() - t, self.clock()
        scores = self._score(rollouts)
        rewards = scores.totals
        timings["time/reward"], t = self.clock() - t, self.clock()
        batch, batch_metrics = build_train_batch(
            rollouts,
            rewards,
            estimator=cfg.algo.advantage.name,
            params=cfg.algo.advantage.params,
            filter_zero_variance=cfg.algo.filter_zero_variance,
            current_version=self.version,
        )
        self.sampler.observe(rollouts, rewards)
        metrics = {**reward_metrics(rollouts, rewards), **scores.metrics, **batch_metrics, **self.sampler.metrics()}
        tokens = sum(len(r.completion_ids) for r in rollouts)
        metrics["throughput/tokens_per_s"] = tokens / max(timings["time/generate"], 1e-9)
        self._log_samples(rollouts, scores, stage_name)
        if len(batch) == 0:  # everything filtered or failed: no update, nothing to sync
            logger.warning("step %d: no trainable samples (all groups filtered or failed)", self.step)
            metrics["batch/skipped"] = 1.0
            self._finish_step(metrics, stage_name, start)
            return metrics
        learner_metrics = self.learner.train_step(batch, lr=lr)
        self.version += 1
        timings["time/train"], t = self.clock() - t, self.clock()
        metrics.update(self._sync())
        timings["time/sync"] = self.clock() - t
        metrics.update({f"learner/{k}": v for k, v in learner_metrics.items()}, **timings)
        self._finish_step(metrics, stage_name, start)
        return metrics

    # ------------------------------------------------------------------------------------------

    def sampling(self, step: int, *, n: int | None = None, temperature: float | None = None) -> SamplingSettings:
        """Sampling settings of ``step``: seeded per step, so a rerun samples the same completions."""
        r = self.cfg.rollout
        base = self.cfg.seed if r.seed is None else r.seed
        return SamplingSettings(
            n=r.group_size if n is None else n,
            temperature=r.temperature if temperature is None else temperature,
            top_p=r.top_p,
            top_k=r.top_k,
            max_new_tokens=r.max_new_tokens,
            stop=tuple(r.stop),
            seed=base * 1_000_003 + step,
        )

    def evaluate(self) -> dict[str, float]:
        """Greedy accuracy (mean reward of one greedy completion per held-out prompt) and pass@k
        (fraction of prompts with at least one of k sampled completions rewarded > 0)."""
        ev = self.cfg.evaluation
        prompts = self.eval_prompts[: ev.num_prompts] if ev.num_prompts else self.eval_prompts
        if not prompts:
            return {}
        greedy = self.engine.generate(prompts, self.sampling(-1, n=1, temperature=0.0))
        scores = Scores.of(self.scorer.score(greedy)).totals
        out = {
            "eval/accuracy": sum(s or 0.0 for s in scores) / len(scores),
            "eval/failed_rewards": float(sum(s is None for s in scores)),
            "eval/prompts": float(len(prompts)),
        }
        if ev.pass_k:
            sampled = self.engine.generate(prompts, self.sampling(-2, n=ev.pass_k, temperature=ev.temperature))
            solved = {r.group_id for r, s in zip(sampled, Scores.of(self.scorer.score(sampled)).totals) if s and s > 0}
            out[f"eval/pass@{ev.pass_k}"] = len(solved) / len(prompts)
        return out

    # ------------------------------------------------------------------------------------------

    def _evaluate(self, label: str) -> None:
        start = self.clock()
        metrics = self.evaluate()
        if metrics:
            self.summary.evaluations[label] = metrics
            self._log({**metrics, "time/eval": self.clock() - start})

    def _score(self, rollouts: list[Rollout]) -> Scores:
        """Score a step's rollouts; log the first reward errors; stop when too many failed."""
        scores = Scores.of(self.scorer.score(rollouts))
        for error in scores.errors:
            logger.warning("step %d: %s", self.step, error)
        limit = self.cfg.reward.max_failure_rate
        if scores.failed_fraction > limit:
            raise RewardFailureError(
                f"step {self.step}: {scores.failed_fraction:.0%} of the samples failed their reward "
                f"(reward.max_failure_rate={limit:g}); first errors: " + "; ".join(scores.errors[:3])
            )
        return scores

    def _log_samples(self, rollouts: list[Rollout], scores: Scores, stage: str) -> None:
        """Every ``logging.sample_every`` steps, a few completions with their rewards to the sink."""
        every, log = self.cfg.logging.sample_every, getattr(self.sink, "log_samples", None)
        step = self.step + 1  # the step being run (counted when it finishes)
        if log is None or not every or step % every:
            return
        log(step, sample_rows(rollouts, scores, step=step, stage=stage, n=self.cfg.logging.samples_per_step))

    def _sync(self) -> dict[str, float]:
        return self.weights.push(self.version)

    def _finish_step(self, metrics: dict[str, float], stage: str, start: float) -> None:
        """Count the step, log it, and checkpoint on the configured cadence."""
        self.step += 1
        metrics.update({"step": float(self.step), "version": float(self.version), "time/step": self.clock() - start})
        self._log(metrics, stage)
        every = self.cfg.checkpoint.every
        if every and self.step % every == 0:
            self.checkpoint()

    def _log(self, metrics: dict[str, float], stage: str | None = None) -> None:
        """Hand the metrics to the sink, tagged with the stage they belong to."""
        if self.sink is not None:
            self.sink.log(self.step, metrics if stage is None else {**metrics, "stage": stage})

    def checkpoint(self) -> str | None:
        """Save the policy in Hugging Face format under ``checkpoint_dir/step-<N>``."""
        if self.checkpoint_dir is None:
            return None
        path = f"{self.checkpoint_dir}/step-{self.step:06d}"
        if path in self.summary.checkpoints:
            return path
        self.learner.save_pretrained(path)
        self.summary.checkpoints.append(path)
        keep = self.cfg.checkpoint.keep_last
        if keep is not None and len(self.summary.checkpoints) > keep:
            import shutil

            for old in self.summary.checkpoints[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
            self.summary.checkpoints = self.summary.checkpoints[-keep:]
        return path
