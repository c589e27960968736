"""The step loop, written against Protocols: fakes in unit tests, Ray actors in production.

One RL step reads as its phases::

    prompts  = sampler.sample(n)                      # which prompts (curriculum)
    rollouts = engine.generate(prompts, sampling)     # groups of completions, each with its version
    scores   = scorer.score(rollouts)                 # None marks a failed reward, never 0
    sampler.observe(group_results)                    # how each prompt did (rewards, advantages)
    ...                                               # dynamic sampling: more rounds until n groups carry signal
    batch    = build_train_batch(rollouts, scores)    # advantages on the driver
    (PPO)      ppo.build_batch / ppo.train_critic     # with a critic: GAE advantages, then the critic's update
    metrics  = learner.train_step(batch)              # policy loss, KL, clip fraction, ...
    sync     = weights.push(version)                  # engines now serve version + 1

A run is a list of stages (``sft``, ``rl``); SFT steps train the same learner on prompt + reference
completion and sync the weights when the stage ends. An RL stage right after an SFT stage measures
its KL against a snapshot of the policy the SFT stage left (``algo.kl.reference``).

With ``rollout.max_staleness = k > 0`` the first three phases become a pipeline (``rlft.pipeline``):
the batches of the next ``k`` steps are generated, and their groups scored and observed one by one
as they finish, while the learner trains; a step waits only for what is missing of its own batch,
drops groups older than ``k`` versions, and trains on the rest.

The driver's position (step, stage, step in stage, samplers, RNG, evaluations) is its
``state_dict``; with the learner's own state it makes a checkpoint (``checkpoint``), which
``restore`` continues from exactly. A stop request (the first Ctrl-C / SIGTERM) ends the run after
the current step with a checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlft.batching import build_train_batch, group_results, group_variances, reward_metrics, rewards_by_group, sample_rows
from rlft.checkpointing import (
    CheckpointError,
    atomic_dir,
    list_checkpoints,
    load_driver_state,
    prune,
    rng_state,
    save_driver_state,
    set_rng_state,
    step_dir_name,
)
from rlft.config import RunConfig, StageConfig, save_config, stage_names
from rlft.curriculum import UniformSampler, build_sampler
from rlft.evaluation import correct_reward, evaluate
from rlft.pipeline import GroupStream, Pipeline, ScoredGroup, split_stale
from rlft.types import Prompt, Rollout, SamplingSettings, Scores, TrainBatch, TrainSample
from rlft.ppo_step import Critic, PPOStep
from rlft.roles import Learner, MetricsSink, NonFiniteError, RewardFailureError, RewardScorer, RolloutEngine, WeightSync
from rlft.signal_watch import SignalWatch, watches_signal

logger = logging.getLogger(__name__)


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


def snapshots_reference(cfg: RunConfig, index: int) -> bool:
    """Whether RL stage ``index`` measures its KL against the policy as the SFT stage right before
    it left it (``algo.kl.reference: after_sft`` with a KL term), rather than the reference it had.

    >>> from rlft.config import load_config
    >>> sft_then_rl = ["algo.kl.coef=0.1", "stages=[{kind: sft, steps: 5}, {kind: rl, steps: 5}]"]
    >>> snapshots_reference(load_config(overrides=sft_then_rl), 1)
    True
    >>> snapshots_reference(load_config(overrides=[*sft_then_rl, "algo.kl.reference=base"]), 1)
    False
    """
    kl = cfg.algo.kl
    return kl.coef > 0 and kl.reference == "after_sft" and index > 0 and cfg.stages[index - 1].kind == "sft"


def _category(value: Any) -> str | None:
    return None if value is None else str(value)


def _select(scores: Scores, chosen: list[int]) -> Scores:
    """The scores of the samples at ``chosen`` (metrics kept as they were for the round)."""
    return Scores(
        [scores.totals[i] for i in chosen],
        dict(scores.metrics),
        list(scores.errors),
        {k: [v[i] for i in chosen] for k, v in scores.per_reward.items()},
    )


@dataclass
class RunSummary:
    """What a run did: evaluations by name (e.g. ``before_rl1``, ``after_rl1``) and the last step."""

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
        critic: Critic | None = None,
        stream: GroupStream | None = None,
        reference_dir: str | None = None,
    ):
        """``critic`` (with ``cfg.critic`` set) makes the RL steps PPO with GAE advantages; the
        learner then also serves the reference log-probs of the KL penalty (``reference_logprobs``).
        ``stream`` generates and scores upcoming steps in the background; it is required with
        ``rollout.max_staleness > 0``. ``reference_dir`` receives the policy snapshots that RL stages
        after an SFT stage measure their KL against (``snapshots_reference``)."""
        self.cfg = cfg
        self.ppo = PPOStep(cfg, critic, learner) if critic is not None else None  # type: ignore[arg-type]
        self.engine, self.scorer, self.learner, self.weights = engine, scorer, learner, weights
        self.train_prompts, self.eval_prompts = list(train_prompts), list(eval_prompts)
        self.sft_examples = list(sft_examples)
        self.sink, self.checkpoint_dir, self.clock = sink, checkpoint_dir, clock
        self.reference_dir = reference_dir
        self.reference: str | None = None  # the KL reference snapshot in use; None: model.path
        field_name, params = sampler_setup(cfg)
        self.categories = [_category(p.metadata.get(field_name)) for p in self.train_prompts]
        self.sampler = build_sampler(cfg.curriculum.name, self.categories, seed=cfg.seed, params=params)
        self.sft_sampler = UniformSampler(len(self.sft_examples), seed=cfg.seed) if self.sft_examples else None
        k = cfg.rollout.max_staleness
        if k > 0 and stream is None:
            raise ValueError("rollout.max_staleness > 0 needs a stream that generates ahead (actors.stream)")
        self.pipeline = Pipeline(stream, k) if k > 0 and stream is not None else None
        self._drawn: dict[int, list[int]] = {}  # a sync run resumed from an async checkpoint: drawn, untrained
        self._stage_end: int | None = None  # the global step at which the current RL stage ends
        self.version = 0  # learner steps applied == policy version the engines serve after a sync
        self.step = 0  # global step counter across stages (logging, checkpoints)
        self.stage_index, self.stage_step = 0, 0  # where the run is: stage, steps done in it
        self.consecutive_skips = 0  # learner steps in a row skipped for non-finite loss/gradients
        self.watch = SignalWatch(warn=logger.warning, enabled=watches_signal(cfg))  # steps without signal
        self.correct = correct_reward(cfg) if self.eval_prompts else None  # what evaluation counts correct
        self.summary = RunSummary()
        self._boundary: dict[str, Any] | None = None  # driver state at the start of the current step
        self._learner_ahead = False  # the learner applied an update the driver has not counted yet
        self.failed_checkpoints = 0
        self.stop_requested = False  # set from a signal handler: stop at the next step boundary
        self._in_step = False

    # ------------------------------------------------------------------------------------------

    def run(self) -> RunSummary:
        """Run the stages from where the driver stands (the start, or a restored checkpoint). On
        Ctrl-C / SIGTERM a checkpoint is written first (``checkpoint.on_interrupt``)."""
        try:
            names = stage_names(self.cfg.stages)  # sft1, rl1, ...: counted from 1, like steps
            for index, (stage, name) in enumerate(zip(self.cfg.stages, names)):
                if index < self.stage_index:
                    continue
                if stage.kind == "sft":
                    self.run_sft(stage, name)
                else:
                    if self.stage_step == 0 and snapshots_reference(self.cfg, index):
                        self._snapshot_reference(name)
                    self.run_rl(stage, name)
                self.stage_index, self.stage_step = index + 1, 0
            self.checkpoint()
        except KeyboardInterrupt:
            if self.cfg.checkpoint.on_interrupt:
                self._checkpoint_on_interrupt()
            raise
        self.summary.steps, self.summary.version = self.step, self.version
        return self.summary

    def run_sft(self, stage: StageConfig, name: str) -> None:
        if self.sft_sampler is None:
            raise ValueError(f"stage '{name}' is SFT but the data has no reference completions")
        for _ in range(self.stage_step, stage.steps):
            start = self._begin_step()
            batch = TrainBatch([self.sft_examples[i] for i in self.sft_sampler.sample(stage.batch_size)])
            metrics = self._train(batch, supervised=True, lr=stage.lr)
            self._finish_step({f"sft/{k}": v for k, v in metrics.items()}, name, start)
        self._sync()  # the engines serve the warmed-up model from here on

    def run_rl(self, stage: StageConfig, name: str) -> None:
        if self.stage_step == 0:
            self._evaluate(f"before_{name}")
        every = self.cfg.evaluation.every
        self._stage_end = self.step + stage.steps - self.stage_step
        for i in range(self.stage_step, stage.steps):
            self.rl_step(name, lr=stage.lr)
            if every and (i + 1) % every == 0 and i + 1 < stage.steps:
                self._evaluate(f"{name}_step{self.step}")
        self._evaluate(f"after_{name}")

    def _snapshot_reference(self, stage_name: str) -> None:
        """The policy as it stands becomes the KL reference, saved to ``reference_dir/<stage>``."""
        if self.reference_dir is None:
            raise ValueError("algo.kl.reference 'after_sft' needs a directory for the reference snapshot")
        path = str(Path(self.reference_dir) / stage_name)
        self.learner.set_reference(path, save=True)
        self.reference = path

    def rl_step(self, stage_name: str = "rl", lr: float | None = None) -> dict[str, float]:
        """One RL step (its batch from the pipeline with ``max_staleness > 0``); returns (and logs) its metrics."""
        cfg, timings = self.cfg, {}
        start = t = self._begin_step()
        collect = self._collect_async if self.pipeline is not None else self._collect
        indices, rollouts, scores, sampling_metrics = collect(cfg.rollout.prompts_per_step, timings)
        prompts = [self.train_prompts[i] for i in indices]
        rewards = scores.totals
        t = self.clock()
        if self.ppo is not None:  # token-level advantages from the critic's values (GAE)
            batch, batch_metrics = self.ppo.build_batch(rollouts, rewards, current_version=self.version)
        else:
            batch, batch_metrics = build_train_batch(
                rollouts,
                rewards,
                estimator=cfg.algo.advantage.name,
                params=cfg.algo.advantage.params,
                filter_zero_variance=cfg.algo.filter_zero_variance or cfg.algo.dynamic_sampling.enabled,
                current_version=self.version,
            )
        metrics = {
            **reward_metrics(rollouts, rewards),
            **scores.metrics,
            **batch_metrics,
            **sampling_metrics,
            **self.sampler.metrics(),
            **self.watch.observe(self.step + 1, list(rewards_by_group(rollouts, rewards).values()),
                               cfg.rollout.prompts_per_step),
        }
        metrics["prompt_ids"] = [p.prompt_id for p in prompts]  # logged: a resumed run's data is checkable
        for role in (self.engine, self.scorer):  # workers Ray restarted (run totals), when the role has them
            restarts = getattr(role, "restart_metrics", None)
            if restarts is not None:
                metrics.update(restarts())
        tokens = sum(len(r.completion_ids) for r in rollouts)
        if self.pipeline is None:  # async: generation overlaps training, time/step is the measure
            metrics["throughput/tokens_per_s"] = tokens / max(timings["time/generate"], 1e-9)
        self._log_samples(rollouts, scores, stage_name)
        if len(batch) == 0:  # everything filtered or failed: no update, nothing to sync
            logger.warning("step %d: no trainable samples (all groups filtered or failed)", self.step + 1)
            metrics["batch/skipped"] = 1.0
            self._finish_step(metrics, stage_name, start)
            return metrics
        if self.ppo is not None:
            self._learner_ahead = True  # the critic moves first: an interrupt from here on is past the boundary
            metrics.update(self.ppo.train_critic(batch))
            self.ppo.end_step()
            if not self.ppo.policy_trains():  # critic warm-up: the policy and its engines stay put
                metrics["critic/warmup"] = 1.0
                timings["time/train"] = self.clock() - t
                self._finish_step({**metrics, **timings}, stage_name, start)
                return metrics
        learner_metrics = self._train(batch, lr=lr)
        timings["time/train"], t = self.clock() - t, self.clock()
        metrics.update(self._sync())
        timings["time/sync"] = self.clock() - t
        metrics.update({f"learner/{k}": v for k, v in learner_metrics.items()}, **timings)
        self._finish_step(metrics, stage_name, start)
        return metrics

    def _collect(self, n: int, timings: dict[str, float]) -> tuple[list[int], list[Rollout], Scores, dict[str, float]]:
        """Draw ``n`` prompts, generate their groups and score them; the sampler observes every group.

        With dynamic sampling (DAPO) only groups whose rewards differ are kept, and more prompts are
        drawn (a fresh seed per round) until ``n`` such groups are in hand or
        ``max_extra_rounds`` run out; then the step goes on with what it has. Group ids stay unique
        across rounds. Returns the kept prompts' indices, their rollouts, scores and round metrics."""
        ds = self.cfg.algo.dynamic_sampling
        kept_idx: list[int] = []
        kept: list[Rollout] = []
        parts: list[Scores] = []
        sampled = zero_variance = rounds = 0
        timings.setdefault("time/generate", 0.0)
        timings.setdefault("time/reward", 0.0)
        while True:
            want = n if not ds.enabled else n - len(kept_idx)
            drawn = self._drawn.pop(self.step, None) if not rounds else None
            indices = drawn if drawn is not None else self.sampler.sample(want)
            settings = self.sampling(self.step)
            if rounds:
                settings = dataclasses.replace(settings, seed=(settings.seed or 0) + 1_000_003 * 7919 * rounds)
            t = self.clock()
            rollouts = self.engine.generate([self.train_prompts[i] for i in indices], settings)
            timings["time/generate"] += self.clock() - t
            t = self.clock()
            scores = self._score(rollouts)
            timings["time/reward"] += self.clock() - t
            self._observe(indices, rollouts, scores.totals)
            rounds += 1
            sampled += len(indices)
            signal = group_variances(rollouts, scores.totals)
            zero_variance += sum(not v for v in signal.values())
            keep = [g for g in range(len(indices)) if signal.get(g, False) or not ds.enabled]
            keep = keep[: n - len(kept_idx)]
            offset = len(kept_idx)
            remap = {g: offset + j for j, g in enumerate(keep)}
            chosen = [i for i, r in enumerate(rollouts) if r.group_id in remap]
            kept += [dataclasses.replace(rollouts[i], group_id=remap[rollouts[i].group_id]) for i in chosen]
            parts.append(_select(scores, chosen))
            kept_idx += [indices[g] for g in keep]
            if not ds.enabled or len(kept_idx) >= n or rounds > ds.max_extra_rounds:
                break
        metrics = {"sampling/rounds": float(rounds), "sampling/prompts": float(sampled),
                   "sampling/zero_variance_fraction": zero_variance / max(sampled, 1)}
        if ds.enabled:
            metrics["sampling/groups_short"] = float(n - len(kept_idx))
            if len(kept_idx) < n:
                logger.warning("step %d: dynamic sampling found %d of %d groups with signal in %d rounds",
                               self.step + 1, len(kept_idx), n, rounds)
        return kept_idx, kept, Scores.concat(parts) if len(parts) > 1 else parts[0], metrics

    def _collect_async(self, n: int, timings: dict[str, float]) -> tuple[list[int], list[Rollout], Scores, dict[str, float]]:
        """This step's groups from the pipeline: top it up to ``max_staleness`` steps ahead (within
        the stage), wait for what is missing of this step's ticket, drop stale groups. Every group
        was observed by the sampler when it arrived. ``time/generate`` is the wait: the part of
        generation and scoring that training did not hide."""
        assert self.pipeline is not None
        k = self.cfg.rollout.max_staleness
        end = self._stage_end if self._stage_end is not None else self.step + k + 1
        self.pipeline.fill(self.step, end, draw=self.sampler.sample, make=self._ticket_inputs, n=n)
        t = self.clock()
        ticket = self.pipeline.wait(self.step, self._observe_group)
        timings["time/generate"], timings["time/reward"] = self.clock() - t, 0.0
        groups = [ticket.groups[g] for g in sorted(ticket.groups)]
        fresh, stale = split_stale(groups, self.version, k)
        if stale:
            logger.warning("step %d: dropped %d group(s) sampled more than %d version(s) ago",
                           self.step + 1, len(stale), k)
        rollouts = [dataclasses.replace(r, group_id=j) for j, g in enumerate(fresh) for r in g.rollouts]
        scores = Scores.concat([g.scores for g in fresh]) if fresh else Scores([])
        scores = dataclasses.replace(scores, errors=scores.errors[: self.cfg.reward.log_errors])  # scored per group
        self._check_failures(scores)
        metrics = {"async/stale_dropped": float(len(stale)), "async/steps_in_flight": float(len(self.pipeline.tickets)),
                   **{f"async/{name}": v for name, v in self.pipeline.stream.metrics().items()}}
        return [ticket.indices[g.group_id] for g in fresh], rollouts, scores, metrics

    def _ticket_inputs(self, step: int, indices: list[int]) -> tuple[list[Prompt], SamplingSettings]:
        return [self.train_prompts[i] for i in indices], self.sampling(step)

    def _observe_group(self, group: ScoredGroup, index: int) -> None:
        rollouts = [dataclasses.replace(r, group_id=0) for r in group.rollouts]
        self._observe([index], rollouts, group.scores.totals)

    def _observe(self, indices: list[int], rollouts: list[Rollout], totals: list[float | None]) -> None:
        """Tell the sampler how each drawn prompt's group did (rewards and advantages)."""
        self.sampler.observe(
            group_results(
                indices,
                rollouts,
                totals,
                categories=self.categories,
                estimator=self.cfg.algo.advantage.name,
                params=self.cfg.algo.advantage.params,
            )
        )

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
        """Held-out accuracy, pass@k and mean reward (``rlft.evaluation``): accuracy and pass@k
        count the answers ``evaluation.correct`` calls correct, not the total reward."""
        ev = self.cfg.evaluation
        prompts = self.eval_prompts[: ev.num_prompts] if ev.num_prompts else self.eval_prompts
        sampled = self.sampling(-2, n=ev.pass_k, temperature=ev.temperature) if ev.pass_k else None
        return evaluate(self.engine, self.scorer, prompts, self.correct,  # type: ignore[arg-type]
                        greedy=self.sampling(-1, n=1, temperature=0.0), sampled=sampled)

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
        self._check_failures(scores)
        return scores

    def _check_failures(self, scores: Scores) -> None:
        """Log the first reward errors; stop when too many samples failed (``reward.max_failure_rate``)."""
        for error in scores.errors:
            logger.warning("step %d: %s", self.step + 1, error)  # the step being run, as the console counts
        limit = self.cfg.reward.max_failure_rate
        if scores.failed_fraction > limit:
            raise RewardFailureError(
                f"step {self.step + 1}: {scores.failed_fraction:.0%} of the samples failed their reward "
                f"(reward.max_failure_rate={limit:g}); first errors: " + "; ".join(scores.errors[:3])
            )

    def _log_samples(self, rollouts: list[Rollout], scores: Scores, stage: str) -> None:
        """Every ``logging.sample_every`` steps, a few completions with their rewards to the sink."""
        every, log = self.cfg.logging.sample_every, getattr(self.sink, "log_samples", None)
        step = self.step + 1  # the step being run (counted when it finishes)
        if log is None or not every or step % every:
            return
        log(step, sample_rows(rollouts, scores, step=step, stage=stage, n=self.cfg.logging.samples_per_step))

    def _sync(self) -> dict[str, float]:
        return self.weights.push(self.version)

    def _begin_step(self) -> float:
        """Remember the state at the step's start (an interrupt checkpoint is taken from it)."""
        self._boundary = self.state_dict()
        self._in_step = True
        return self.clock()

    def _train(self, batch: TrainBatch, *, supervised: bool = False, lr: float | None = None) -> dict[str, float]:
        """One learner step; counts the version and stops after too many non-finite skips in a row."""
        self._learner_ahead = True
        metrics = self.learner.train_step(batch, supervised=supervised, lr=lr)
        self.version += 1
        skipped = metrics.get("skipped_steps", 0.0) >= metrics.get("optimizer_steps", 1.0) > 0
        self.consecutive_skips = self.consecutive_skips + 1 if skipped else 0
        limit = self.cfg.learner.max_consecutive_skips
        if self.consecutive_skips >= limit:
            raise NonFiniteError(
                f"step {self.step + 1}: {self.consecutive_skips} learner steps in a row were skipped for a "
                f"non-finite loss or gradient (learner.max_consecutive_skips={limit}); the weights are those "
                f"of step {self.step + 1 - self.consecutive_skips}. Lower the learning rate or check the rewards."
            )
        return metrics

    def _finish_step(self, metrics: dict[str, Any], stage: str, start: float) -> None:
        """Count the step, log it, and checkpoint on the configured cadence."""
        self.step += 1
        self.stage_step += 1
        self._learner_ahead = self._in_step = False
        metrics.update({"step": float(self.step), "version": float(self.version), "time/step": self.clock() - start})
        self._log(metrics, stage)
        every = self.cfg.checkpoint.every
        if every and self.step % every == 0:
            self.checkpoint()
        if self.stop_requested:
            raise KeyboardInterrupt("stop requested")

    def _log(self, metrics: dict[str, float], stage: str | None = None) -> None:
        """Hand the metrics to the sink, tagged with the stage they belong to."""
        if self.sink is not None:
            self.sink.log(self.step, metrics if stage is None else {**metrics, "stage": stage})

    def checkpoint(self, state: dict[str, Any] | None = None) -> str | None:
        """Write ``checkpoint_dir/step-<N>`` atomically: the policy in Hugging Face format and (unless
        ``checkpoint.weights_only``) the learner's and the driver's state; then prune to
        ``keep_last``. A failure (a full disk, an unwritable directory) is logged and counted; the
        previous checkpoints stay intact and the run goes on."""
        if self.checkpoint_dir is None:
            return None
        state = state or self.state_dict()
        path = Path(self.checkpoint_dir) / step_dir_name(state["step"])
        if str(path) in self.summary.checkpoints:
            return str(path)
        weights_only = self.cfg.checkpoint.weights_only
        try:
            with atomic_dir(path) as tmp:
                self.learner.save_checkpoint(str(tmp), weights_only=weights_only)
                if self.ppo is not None and not weights_only:
                    self.ppo.critic.save_checkpoint(str(tmp))
                if not weights_only:
                    save_driver_state(tmp, state)
                    save_config(self.cfg, tmp / "trainer_state" / "config.yaml")
        except OSError as err:
            self.failed_checkpoints += 1
            logger.error("checkpoint at step %d failed, the previous ones are intact: %s", state["step"], err)
            self._log({"checkpoint/failed": float(self.failed_checkpoints)})
            return None
        self.summary.checkpoints.append(str(path))
        for old in prune(self.checkpoint_dir, self.cfg.checkpoint.keep_last):
            if str(old) in self.summary.checkpoints:
                self.summary.checkpoints.remove(str(old))
        return str(path)

    def _checkpoint_on_interrupt(self) -> None:
        """A checkpoint of the last step boundary; none when the learner is ahead of the driver
        (interrupted inside its update: the boundary's weights are gone), so a resume never
        replays or skips a step."""
        if self._learner_ahead:
            logger.warning("interrupted during a learner update: the last periodic checkpoint is the resume point")
            return
        state = self._boundary if self._in_step else self.state_dict()
        try:
            path = self.checkpoint(state)
        except Exception as err:  # the actors may be going down with the interrupt
            logger.warning("no checkpoint on interrupt: %s: %s", type(err).__name__, err)
            return
        if path:
            logger.warning("interrupted: checkpoint %s written; resume with rlft train --resume", path)

    def state_dict(self) -> dict[str, Any]:
        """Everything the driver needs to continue exactly (the learner saves its own state)."""
        return {
            "step": self.step,
            "version": self.version,
            "stage_index": self.stage_index,
            "stage_step": self.stage_step,
            "consecutive_skips": self.consecutive_skips,
            "reference": self.reference,
            "sampler": self.sampler.state_dict(),
            "sft_sampler": self.sft_sampler.state_dict() if self.sft_sampler else None,
            "evaluations": copy.deepcopy(self.summary.evaluations),
            "rng": rng_state(),
            "pipeline": self.pipeline.state_dict() if self.pipeline is not None else
                        [{"step": s, "indices": list(i), "observed": []} for s, i in sorted(self._drawn.items())],
            **({"ppo": self.ppo.state_dict()} if self.ppo is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.version = state["step"], state["version"]
        self.stage_index, self.stage_step = state["stage_index"], state["stage_step"]
        self.consecutive_skips = state["consecutive_skips"]
        self.reference = state.get("reference")  # absent in checkpoints older than the snapshots
        self.sampler.load_state_dict(state["sampler"])
        if self.sft_sampler is not None and state["sft_sampler"] is not None:
            self.sft_sampler.load_state_dict(state["sft_sampler"])
        self.summary.evaluations = copy.deepcopy(state["evaluations"])
        set_rng_state(state["rng"])
        tickets = state.get("pipeline", [])  # drawn prompts of steps in flight: regenerated, not redrawn
        if self.pipeline is not None:
            self.pipeline.load_state_dict(tickets)
        else:
            self._drawn = {int(t["step"]): list(t["indices"]) for t in tickets}
        if self.ppo is not None:
            if "ppo" not in state:
                raise CheckpointError("the checkpoint has no critic state (it was written by a run without one)")
            self.ppo.load_state_dict(state["ppo"])

    def restore(self, checkpoint: str | Path) -> None:
        """Continue from ``checkpoint``: the learner's and the driver's state, then the engines get
        the restored weights (they start from the base model)."""
        state = load_driver_state(Path(checkpoint))
        version = self.learner.load_checkpoint(str(checkpoint))
        if version != state["version"]:
            raise CheckpointError(f"{checkpoint}: learner version {version} != driver version {state['version']}")
        self.load_state_dict(state)
        if self.reference is not None:
            if not Path(self.reference).is_dir():
                raise CheckpointError(f"{checkpoint}: its KL reference snapshot {self.reference} is gone")
            self.learner.set_reference(self.reference)
        if self.ppo is not None:
            self.ppo.critic.load_checkpoint(str(checkpoint))
        self.summary.checkpoints = [str(p) for p in list_checkpoints(Path(checkpoint).parent, resumable=False)]
        self._sync()
