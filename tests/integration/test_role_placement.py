"""Per-role placement on a real local Ray: custom resources, a separate reference actor (same loss
as the learner's own copy), and colocated learner ranks and rollout engines in shared bundles."""

from __future__ import annotations

import pytest
import ray
import torch

from actors.group import PlacementError, WorkerGroup
from actors.rollout import RolloutWorker
from actors.runtime import Colocation, LearnerGroup, RolloutGroup, WeightPush
from rlft.checkpointing import CheckpointError
from rlft.config import load_config
from rlft.placement import plan_run
from rlft.types import Prompt, SamplingSettings, TrainBatch, TrainSample


class _Probe:
    def ping(self) -> str:
        return "pong"


ray.cloudpickle.register_pickle_by_value(__import__(__name__))


def test_a_role_asking_for_a_resource_no_node_has_fails_fast_and_names_it(ray_session):
    with pytest.raises(PlacementError, match=r"node_b.*rlft plan"):
        WorkerGroup("reward", _Probe, 1, num_cpus=0.1, resources={"node_b": 0.01}, placement_timeout_s=3)


def test_nodes_reports_where_each_rank_runs(ray_session):
    with WorkerGroup("probe", _Probe, 2, num_cpus=0.1) as group:
        where = group.nodes()
    node = ray.get_runtime_context().get_node_id()
    assert [w["rank"] for w in where] == [0, 1] and {w["node_id"] for w in where} == {node}


def test_a_group_from_the_plan_reserves_the_roles_bundles_and_strategy(ray_session):
    """``WorkerGroup.from_plan``: the role's count, bundle and strategy are those ``rlft plan`` shows."""
    plan = plan_run(load_config(overrides=["reward.num_workers=2", "cluster.reward={cpus: 0.25, strategy: SPREAD}"]))
    role = plan.role("reward")
    with WorkerGroup.from_plan(role, _Probe) as group:
        assert group.call(_Probe.ping) == ["pong", "pong"]
        table = ray.util.placement_group_table(group.placement_group)
        assert list(table["bundles"].values()) == [dict(b) for b in plan.group("reward").bundles]
        assert table["strategy"] == "SPREAD"


def test_a_colocated_role_needs_the_shared_group_reserved_once(ray_session):
    cfg = load_config(overrides=["cluster.colocate=true"])
    with pytest.raises(ValueError, match=r"rollout workers in the shared learner group .*Colocation"):
        RolloutGroup(cfg, "unused-model-path")
    with pytest.raises(ValueError, match="needs cluster.colocate"):
        Colocation(load_config())


def _batch(tiny_model_dir) -> TrainBatch:
    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(8):
        prompt = torch.randint(4, 60, (3 + i % 3,), generator=g).tolist()
        completion = torch.randint(4, 60, (4 + i % 2,), generator=g).tolist()
        adv = [float(i % 3 - 1)] * len(completion)
        samples.append(TrainSample(prompt, completion, adv, rollout_logprobs=[-3.0] * len(completion)))
    return TrainBatch(samples)


def test_a_separate_reference_actor_gives_the_learners_own_kl_and_loss(ray_session, tiny_model_dir):
    """Same weights, same temperature: the KL term and the loss of a step are those of the learner's
    own reference copy (the policy moves after step 1, so step 2's KL is not zero)."""
    batch = _batch(tiny_model_dir)
    results = {}
    for placement in ("learner", "separate"):
        cfg = load_config(overrides=[
            "algo.kl.coef=0.5", "learner.lr=0.05", "learner.micro_batch_size=4",
            f"cluster.reference.placement={placement}", "cluster.reference.cpus=0.5",
            "cluster.learner.cpus=0.5", "rollout.temperature=0.8",
        ])
        learners = LearnerGroup(cfg, tiny_model_dir, total_steps=2)
        try:
            assert (learners.reference is not None) == (placement == "separate")
            if placement == "learner":  # the run directory must be visible where the ranks write
                learners.check_sees(tiny_model_dir)
                with pytest.raises(CheckpointError, match=r"not visible from the node\(s\) of learner rank\(s\) 0 \("):
                    learners.check_sees("/nonexistent-rlft-run/config.yaml")
            results[placement] = [learners.train_step(batch) for _ in range(2)]
        finally:
            learners.shutdown()
    own, separate = results["learner"], results["separate"]
    assert own[1]["kl"] > 1e-4  # the second step sees a moved policy
    for a, b in zip(own, separate):
        assert b["kl"] == pytest.approx(a["kl"], rel=1e-4, abs=1e-7)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-7)
    assert "reference_s" in separate[0] and "reference_s" not in own[0]


def test_a_reference_snapshot_reaches_the_separate_actor_and_survives_its_restart(
    ray_session, tiny_model_dir, tmp_path
):
    """``set_reference(save=True)`` (an RL stage after SFT): the separate reference actor then scores
    with the policy's current weights, and a reference actor restarted by Ray reloads the snapshot
    rather than coming back with ``model.path``."""
    from actors.learner import LearnerWorker

    samples = _batch(tiny_model_dir).samples
    cfg = load_config(overrides=[
        "algo.kl.coef=0.5", "learner.lr=0.05", "learner.micro_batch_size=4", "cluster.reference.placement=separate",
        "cluster.reference.cpus=0.5", "cluster.learner.cpus=0.5",
    ])
    learners = LearnerGroup(cfg, tiny_model_dir, total_steps=3)
    try:
        base = learners.reference_logprobs(samples)
        learners.train_step(TrainBatch(samples))  # the policy moves away from model.path
        policy = learners.workers.call(LearnerWorker.compute_logprobs, samples)[0]
        assert max(abs(a - b) for x, y in zip(base, policy) for a, b in zip(x, y)) > 1e-3
        learners.set_reference(str(tmp_path / "ref"), save=True)
        assert (tmp_path / "ref" / "model.safetensors").is_file()
        assert learners.reference_logprobs(samples) == policy
        assert learners.train_step(TrainBatch(samples))["kl"] == 0.0  # reference == policy at the step start
        learners.reference.kill(0, no_restart=False)  # Ray restarts it from its constructor (model.path)
        assert learners.reference_logprobs(samples) == policy
        assert learners.reference.restarts == 1
    finally:
        learners.shutdown()


def test_colocated_rollout_and_learner_share_bundles_and_still_sync(ray_session, tiny_model_dir):
    cfg = load_config(overrides=[
        "cluster.colocate=true", "cluster.rollout.cpus=0.5", "cluster.learner.cpus=0.5",
        "rollout.max_new_tokens=6", "rollout.temperature=0", "learner.lr=0.05",
    ])
    colocation = Colocation(cfg)
    rollouts = learners = None
    try:
        rollouts = RolloutGroup(cfg, tiny_model_dir, colocation=colocation)
        learners = LearnerGroup(cfg, tiny_model_dir, total_steps=1, colocation=colocation)
        assert rollouts.workers.placement_group.id == learners.workers.placement_group.id
        table = ray.util.placement_group_table(colocation.group)  # the plan's shared group, reserved once
        assert list(table["bundles"].values()) == [dict(b) for b in plan_run(cfg).group("learner").bundles]
        assert rollouts.workers.bundle_indices == learners.workers.bundle_indices == [0]
        assert rollouts.workers.nodes()[0]["node_id"] == learners.workers.nodes()[0]["node_id"]
        push = WeightPush(learners, rollouts)
        prompt = [Prompt("p0", [1, 5, 6, 7], "x")]
        before = rollouts.generate(prompt, SamplingSettings(n=1, max_new_tokens=6, temperature=0))
        # after sampling the engines are asked to make room for the learner; on CPU vLLM has no
        # sleep mode, so they report that they stayed awake and the group does not wait for a wake-up
        assert rollouts.asleep is False and rollouts.workers.call(RolloutWorker.sleep) == [False]
        learners.train_step(_batch(tiny_model_dir))
        push.push(1)
        assert not rollouts.asleep and rollouts.versions() == [1]
        after = rollouts.generate(prompt, SamplingSettings(n=1, max_new_tokens=6, temperature=0))
        assert after[0].policy_version == 1 and before[0].policy_version == 0
    finally:
        for group in (learners, rollouts):
            if group is not None:
                group.shutdown()
        colocation.shutdown()
