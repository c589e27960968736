"""The roles of a run as typed groups, built from a ``RunConfig``: what the driver talks to.

* ``RolloutGroup``: ``rollout.num_workers`` RolloutWorkers; prompts are spread across them by
  estimated cost (longest first), group ids stay global, results come back in prompt order.
* ``LearnerGroup``: ``learner.num_ranks`` LearnerWorkers in one torch.distributed group; a batch is
  sharded across ranks; weights are pushed to the rollout engines straight from rank 0 (they never
  pass through the driver).
* ``RewardGroup``: ``reward.num_workers`` RewardWorkers (and the judge engine actor when
  ``reward.judge`` is set); samples are split evenly across workers, outcomes combined by weight.

Each role is placed as ``rlft.placement.plan_run(cfg)`` plans it from ``cluster.<role>`` (cpus,
gpus, custom resources, strategy; ``rlft plan`` prints that plan): every group takes its role's
``RolePlan`` (``WorkerGroup.from_plan``), and a caller that builds several passes the one ``plan``
to all. With ``cluster.reference.placement: separate`` the learner group also owns one
``ReferenceWorker`` that scores each RL batch; with ``cluster.colocate`` a ``Colocation`` reserves
the plan's shared placement group once, whose bundle ``i`` holds learner rank ``i`` and rollout
worker ``i`` (the engines sleep while the learner trains). The PPO critic's group is
``actors.critic.CriticGroup``.

Each actor receives only its own config sections.

**Restarts.** Rollout and reward workers are restarted by Ray when they die (``max_restarts``, by
default ``cluster.max_restarts``): a step whose worker dies re-issues that worker's share once
it is back (``WorkerGroup.call_each_retrying``), after giving a restarted engine the weights of the
last push (``WeightPush`` sets ``RolloutGroup.on_restart``); ``restart_metrics()`` counts them. A
learner rank cannot be restarted (its peers hold the step's collective state): it dies as
``WorkerDiedError(role="learner")``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

from actors.group import SharedPlacement, WorkerGroup, reserve
from actors.learner import LearnerWorker
from actors.reference import ReferenceWorker
from actors.reward import RewardWorker
from actors.rollout import CONTROL_GROUP, RolloutWorker
from actors.weight_sync import SyncStats
from rlft.balance import assign_balanced
from rlft.algorithms.sft_losses import needs_reference
from rlft.config import RewardFunctionConfig, RunConfig
from rlft.config.stages import SFTLossChoice
from rlft.placement import Plan, RolePlan, plan_run
from rlft.types import Prompt, Rollout, SamplingSettings, Scores, TrainBatch, TrainSample
from rewards.compose import combine
from rewards.pool import Sample, runtime_sample


def _max_restarts(cfg: RunConfig, given: int | None) -> int:
    return cfg.cluster.max_restarts if given is None else given


def planned(plan: Plan, role: str) -> RolePlan:
    """``role``'s entry of ``plan`` (a group built for a role the config does not plan is a bug)."""
    found = plan.role(role)
    if found is None:
        raise ValueError(f"the run's plan has no {role} role")
    return found


class Colocation:
    """The one placement group that colocated learner ranks and rollout engines share
    (``cluster.colocate``), reserved once from the plan's shared group: bundle ``i`` holds learner
    rank ``i`` and rollout worker ``i``, each reserving half of the bundle's GPUs (the plan's
    ``RolePlan.worker``), so Ray gives them the same devices."""

    def __init__(self, cfg: RunConfig, plan: Plan | None = None):
        plan = plan or plan_run(cfg)
        if not plan.shares_group("rollout"):
            raise ValueError("Colocation needs cluster.colocate: the plan gives the rollout workers their own group")
        group = plan.group(planned(plan, "rollout").group)
        assert group is not None
        self.group = reserve([dict(b) for b in group.bundles], group.strategy, "colocated learner+rollout")

    def placement(self, n: int) -> SharedPlacement:
        return SharedPlacement(self.group, range(n))

    @staticmethod
    def of(plan: Plan, role: RolePlan, colocation: Colocation | None) -> SharedPlacement | None:
        """The shared bundles ``role``'s workers go in, or None where the plan gives them a group
        of their own."""
        if not plan.shares_group(role.role):
            return None
        if colocation is None:
            raise ValueError(f"the plan puts the {role.role} workers in the shared {role.group} group "
                             "(cluster.colocate): pass the Colocation that reserved it")
        return colocation.placement(role.count)

    def shutdown(self) -> None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(self.group)


class RolloutGroup:
    """The rollout engines of a run.

    ``on_restart(rank)`` is called when engine ``rank`` was restarted (it then serves the base
    model, version 0), before its share of a ``generate`` is re-issued; ``WeightPush`` sets it to
    push the current weights into that engine.

    ``abortable=True`` creates the engines with the ``CONTROL_GROUP`` concurrency group, so
    ``request_abort`` reaches them while a ``RolloutWorker.generate_stream`` runs (an asynchronous
    pipeline streams from ``workers.stream(rank, RolloutWorker.generate_stream, ...)``)."""

    def __init__(
        self,
        cfg: RunConfig,
        model_path: str,
        *,
        max_restarts: int | None = None,
        plan: Plan | None = None,
        colocation: Colocation | None = None,
        abortable: bool = False,
    ):
        rollout, model = cfg.rollout, cfg.model
        plan = plan or plan_run(cfg)
        role = planned(plan, "rollout")
        # the concurrency group request_abort runs in, beside a stream (None: not abortable)
        self.control_group = CONTROL_GROUP if abortable else None
        self.on_restart: Callable[[int], Any] | None = None
        # colocated engines sleep between their generate calls (the learner has the GPU then)
        self.colocated, self.asleep = plan.shares_group("rollout"), False
        self.workers: WorkerGroup[RolloutWorker] = WorkerGroup.from_plan(
            role,
            RolloutWorker,
            args=lambda rank: (
                (model_path, rollout, model),
                {"seed": cfg.seed, "worker_index": rank, "sleep_mode": self.colocated},
            ),
            placement=Colocation.of(plan, role, colocation),
            max_restarts=_max_restarts(cfg, max_restarts),
            concurrency_groups={self.control_group: 1} if self.control_group else None,
        )
        self.workers.call_each_retrying(RolloutWorker.ready, [()] * self.workers.n)

    def generate(self, prompts: list[Prompt], sampling: SamplingSettings) -> list[Rollout]:
        """``sampling.n`` rollouts per prompt; prompt ``i`` of the list has group id ``i``."""
        costs = [len(p.token_ids) + sampling.max_new_tokens for p in prompts]
        bins = assign_balanced(costs, self.workers.n)
        per_rank = [([prompts[i] for i in b], sampling, 0, b) for b in bins]
        self.wake()
        results = self.workers.call_each_retrying(
            RolloutWorker.generate, per_rank, on_restart=self.on_restart
        )
        if self.colocated:  # True only where the engines could sleep (not on CPU: no sleep mode)
            self.asleep = any(self.workers.call(RolloutWorker.sleep))
        by_group: dict[int, list[Rollout]] = {}
        for rollouts in results:
            for r in rollouts:
                by_group.setdefault(r.group_id, []).append(r)
        return [r for g in range(len(prompts)) for r in by_group.get(g, [])]

    @property
    def abortable(self) -> bool:
        """Whether ``request_abort`` can reach the engines during a stream (``abortable=True``)."""
        return self.control_group is not None

    def request_abort(self, upto_call_id: int) -> None:
        """Make every engine abort its ``generate_stream`` calls with ``call_id <= upto_call_id``
        (running or queued; see ``RolloutWorker.request_abort``); returns once all have recorded it.
        Needs ``abortable=True``."""
        if not self.abortable:
            raise RuntimeError("request_abort needs a RolloutGroup created with abortable=True")
        self.workers.call_in_group(self.control_group, RolloutWorker.request_abort, upto_call_id)

    def wake(self) -> None:
        """Wake colocated engines that sleep (before sampling or loading weights)."""
        if self.asleep:
            self.workers.call(RolloutWorker.wake_up)
            self.asleep = False

    def versions(self) -> list[int]:
        return self.workers.call(RolloutWorker.version)

    def restart_metrics(self) -> dict[str, float]:
        """Engines restarted so far (cumulative over the run)."""
        return {"restarts/rollout": float(self.workers.restarts)}

    def shutdown(self) -> None:
        self.workers.shutdown()


class LearnerGroup:
    """The data-parallel learner ranks of a run (rank 0 holds the full weights for syncs)."""

    def __init__(
        self,
        cfg: RunConfig,
        model_path: str,
        *,
        total_steps: int,
        plan: Plan | None = None,
        colocation: Colocation | None = None,
    ):
        plan = plan or plan_run(cfg)
        role = planned(plan, "learner")
        n = role.count
        # Rank 0's node hosts the rendezvous: find its address and a free port there first.
        group: WorkerGroup[LearnerWorker] = WorkerGroup.from_plan(
            role, LearnerWorker, placement=Colocation.of(plan, role, colocation), start=False
        )
        addr, port = group.rendezvous()
        # the reference role: a copy on each learner rank, or one actor in a group of its own
        ref = plan.role("reference")
        separate = ref is not None and ref.has_workers
        group.start(
            lambda rank: (
                (rank, n, addr, port, model_path, cfg.model, cfg.learner, cfg.algo),
                {
                    "temperature": cfg.rollout.temperature,
                    "max_len": cfg.rollout.max_new_tokens,
                    "total_steps": total_steps,
                    "seed": cfg.seed,
                    "reference_model": not separate,
                    "anchor_reference": cfg.anchors_to_reference,
                    "plugins": list(cfg.plugins),
                },
            )
        )
        self.workers = group
        self.reference: WorkerGroup[ReferenceWorker] | None = None
        if ref is not None and separate:
            device = "cuda" if ref.gpus > 0 else "cpu"
            self.reference = WorkerGroup.from_plan(
                ref,
                ReferenceWorker,
                args=lambda rank: (
                    (model_path, cfg.model),
                    {
                        "temperature": cfg.rollout.temperature,
                        "micro_batch_size": cfg.learner.micro_batch_size,
                        "max_tokens_per_micro_batch": cfg.learner.max_tokens_per_micro_batch,
                        "precision": cfg.learner.precision,
                        "device": device,
                    },
                ),
                max_restarts=cfg.cluster.max_restarts,  # stateless: a restarted copy is the same
            )
            self.reference.call_each_retrying(ReferenceWorker.ready, [()])
        self.n = n
        self.model_path = self.reference_path = model_path
        self.sync_backend = cfg.rollout.weight_sync
        self.sync_params = dict(cfg.rollout.weight_sync_params)

    def train_step(
        self, batch: TrainBatch, *, sft: SFTLossChoice | None = None, lr: float | None = None
    ) -> dict[str, float]:
        """One learner step on ``batch`` (sharded across ranks); the global metrics.
        ``sft`` makes it an SFT step with that objective; ``lr`` overrides the peak learning rate.
        With a separate reference actor, it scores the batch first when the step reads the
        reference (``learner/reference_s``: its seconds)."""
        timing: dict[str, float] = {}
        reads_reference = sft is None or needs_reference(sft.name)
        if self.reference is not None and reads_reference and any(s.ref_logprobs is None for s in batch.samples):
            start = time.perf_counter()
            batch = self.with_reference_logprobs(batch)
            timing["reference_s"] = time.perf_counter() - start
        shards = [(batch.shard(rank, self.n),) for rank in range(self.n)]
        metrics = self.workers.call_each(LearnerWorker.train_step, shards, sft=sft, lr=lr)[0]
        return {**metrics, **timing}

    def reference_logprobs(self, samples: list[TrainSample]) -> list[list[float]]:
        """Completion-token log-probs of ``samples`` under the reference model (the separate
        reference actor, or the learner ranks' own copy): PPO's KL penalty in the reward."""
        if self.reference is not None:
            return self.reference.call_each_retrying(ReferenceWorker.logprobs, [(samples,)],
                                                     on_restart=self._reload_reference)[0]
        return self.workers.call(LearnerWorker.compute_logprobs, samples, reference=True)[0]

    def with_reference_logprobs(self, batch: TrainBatch) -> TrainBatch:
        """``batch`` with every sample's ``ref_logprobs`` from the separate reference actor."""
        assert self.reference is not None
        (ref,) = self.reference.call_each_retrying(ReferenceWorker.logprobs, [(batch.samples,)],
                                                   on_restart=self._reload_reference)
        return TrainBatch([replace(s, ref_logprobs=lp) for s, lp in zip(batch.samples, ref)])

    def push_weights(
        self, rollouts: RolloutGroup, version: int, *, ranks: list[int] | None = None
    ) -> SyncStats:
        """Make every rollout engine (or the engines of ``ranks``) serve the learner's current
        weights as ``version``."""
        actors = rollouts.workers.actors
        results = self.workers.call(
            LearnerWorker.push_weights,
            self.sync_backend,
            self.sync_params,
            version,
            actors if ranks is None else [actors[r] for r in ranks],
        )
        return results[0]

    def describe(self) -> str:
        """How the learner computes (precision, micro-batching, device), for the start-up line."""
        return self.workers.call(LearnerWorker.describe)[0]

    def check_sees(self, path: str) -> None:
        """Raise ``CheckpointError`` unless every learner rank's node sees ``path`` (a file the
        driver just wrote in the run directory): the ranks write checkpoints there themselves, and a
        checkpoint on one node's local disk is lost to the driver and to ``--resume``."""
        from rlft.checkpointing import CheckpointError

        seen = self.workers.call(LearnerWorker.sees, path)
        if not all(seen):
            blind = ", ".join(f"{w['rank']} ({w['node_ip']})" for w, ok in zip(self.workers.nodes(), seen) if not ok)
            raise CheckpointError(
                f"the run directory {Path(path).parent} is not visible from the node(s) of learner rank(s) "
                f"{blind}: their checkpoints would land on "
                "that node's local disk. Put the run directory on storage every node mounts (--run-dir), "
                "or keep the learner on the driver's node (cluster.learner.resources)."
            )

    def save_pretrained(self, path: str) -> str:
        return self.workers.call(LearnerWorker.save_pretrained, path)[0]

    def save_checkpoint(self, path: str, *, weights_only: bool = False) -> str:
        """Weights in Hugging Face format and (unless ``weights_only``) every rank's training state."""
        return self.workers.call(LearnerWorker.save_checkpoint, path, weights_only=weights_only)[0]

    def load_checkpoint(self, path: str) -> int:
        """Restore every rank from ``path``; the restored version."""
        return self.workers.call(LearnerWorker.load_checkpoint, path)[0]

    def set_reference(self, path: str, *, save: bool = False) -> None:
        """Make the model at ``path`` the KL reference on every rank (or on the separate reference
        actor); with ``save``, the current policy is first written there. A reference actor that
        Ray restarts later reloads it."""
        self.workers.call(LearnerWorker.set_reference, path, save=save)
        self.reference_path = path
        if self.reference is not None:
            self.reference.call_each_retrying(ReferenceWorker.load, [(path,)], on_restart=self._reload_reference)

    def _reload_reference(self, rank: int) -> None:
        """A restarted reference actor comes back with ``model.path``: give it the current reference."""
        assert self.reference is not None
        if self.reference_path != self.model_path:
            self.reference.call_each(ReferenceWorker.load, [(self.reference_path,)])

    def shutdown(self) -> None:
        try:
            self.workers.close_and_shutdown(LearnerWorker.close)
        finally:
            if self.reference is not None:
                self.reference.shutdown()


class RewardGroup:
    """The reward workers of a run (and its judge engine, for model-based rewards)."""

    def __init__(
        self,
        cfg: RunConfig,
        functions: list[RewardFunctionConfig],
        *,
        base_dir: str | None = None,
        judge_model_path: str | None = None,
        max_restarts: int | None = None,
        plan: Plan | None = None,
    ):
        r = cfg.reward
        plan = plan or plan_run(cfg)
        # the judge engine actor, in the placement group the plan gives the judge role
        self.judge: Any = None
        self.judge_group: WorkerGroup[Any] | None = None
        if r.judge is not None:
            from actors.judge import JudgeWorker

            judge, judge_path = r.judge, judge_model_path or r.judge.model
            self.judge_group = WorkerGroup.from_plan(
                planned(plan, "judge"), JudgeWorker, args=lambda rank: ((judge_path, judge), {"seed": cfg.seed})
            )
            try:
                self.judge_group.call(JudgeWorker.ready)
            except BaseException:
                self.judge_group.shutdown()
                raise
            self.judge = self.judge_group.actors[0]
        options = dict(
            plugins=list(cfg.plugins),
            base_dir=base_dir,
            processes=r.processes_per_worker,
            timeout_s=r.timeout_s,
            memory_mb=r.memory_mb,
            judge=self.judge,
            sandbox=r.sandbox.model_dump(),
        )
        self.workers: WorkerGroup[RewardWorker] = WorkerGroup.from_plan(
            planned(plan, "reward"),
            RewardWorker,
            args=lambda rank: ((list(functions),), options),
            max_restarts=_max_restarts(cfg, max_restarts),
        )
        self.keys = self.workers.call_each_retrying(RewardWorker.ready, [()] * self.workers.n)[0]
        self.weights = {fc.key: fc.weight for fc in functions}
        self.max_new_tokens = cfg.rollout.max_new_tokens
        self.log_errors = r.log_errors

    def score(self, rollouts: list[Rollout]) -> Scores:
        """Every reward on every rollout, split evenly across the workers; the weighted totals."""
        samples = [to_sample(r, self.max_new_tokens) for r in rollouts]
        n = self.workers.n
        size = -(-len(samples) // n) if samples else 0
        parts = [(samples[i * size : (i + 1) * size],) for i in range(n)]
        results = self.workers.call_each_retrying(RewardWorker.score, parts)  # stateless: no hook
        merged = {k: [o for res in results for o in res[k]] for k in self.keys}
        return combine(merged, self.weights, samples=samples, max_errors=self.log_errors)

    def restarts(self) -> int:
        """Reward processes replaced after timeouts or crashes, over all workers (a worker restarted
        by Ray starts counting again from 0; see ``restart_metrics`` for those)."""
        return sum(self.workers.call(RewardWorker.restarts))

    def restart_metrics(self) -> dict[str, float]:
        """Reward workers restarted so far (cumulative over the run)."""
        return {"restarts/reward": float(self.workers.restarts)}

    def shutdown(self) -> None:
        try:
            self.workers.close_and_shutdown(RewardWorker.close)
        finally:
            if self.judge_group is not None:
                self.judge_group.shutdown()


def to_sample(rollout: Rollout, max_new_tokens: int) -> Sample:
    """What the rewards see of a rollout: the texts, the row's fields, and the runtime's facts."""
    return runtime_sample(
        rollout.prompt,
        rollout.completion,
        rollout.metadata,
        prompt_id=rollout.prompt_id,
        num_tokens=len(rollout.completion_ids),
        finish_reason=rollout.finish_reason,
        max_new_tokens=max_new_tokens,
    )


class WeightPush:
    """The driver's ``WeightSync``: learner rank 0 pushes to every rollout engine; sync metrics.

    It remembers the last version pushed (``version``) and becomes the rollout group's restart hook:
    an engine restarted by Ray gets that version's weights from the learner before it samples
    again. The learner's weights must still be those of the last push whenever the engines sample
    (the synchronous step: generate, score, train, push); before the first push a restarted engine
    serves the base model, which is version 0."""

    def __init__(self, learners: LearnerGroup, rollouts: RolloutGroup):
        self.learners, self.rollouts = learners, rollouts
        self.version: int | None = None
        rollouts.on_restart = self.restore

    def push(self, version: int) -> dict[str, float]:
        self.rollouts.wake()  # colocated engines sleep while the learner trains
        try:
            stats = self.learners.push_weights(self.rollouts, version)
        except Exception:
            # An engine that died during the push: once Ray has it back, push again (to all: the
            # others may have loaded it already, reloading is the simple safe way). A worker dead
            # for good raises WorkerDiedError naming its rank.
            if not self.rollouts.workers.recover():
                raise
            stats = self.learners.push_weights(self.rollouts, version)
        self.version = version
        return dict(sync_metrics(stats))

    def restore(self, rank: int) -> None:
        """Give the restarted engine ``rank`` the weights of the last push."""
        if self.version is not None:
            self.learners.push_weights(self.rollouts, self.version, ranks=[rank])


def sync_metrics(stats: SyncStats) -> Mapping[str, Any]:
    """``SyncStats`` as ``sync/<field>`` metrics."""
    return {f"sync/{k}": v for k, v in asdict(stats).items()}
