"""The placement planner (``rlft.placement``): golden plans from configs, fitting on nodes with
each strategy, errors that name what is missing, and ``rlft plan``."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from launch.cli import main
from rlft.config import ConfigError, load_config
from rlft.placement import Node, PlacementError, fit, format_plan, plan_run


def _cfg(*overrides: str):
    return load_config(overrides=list(overrides))


def test_default_plan_is_one_cpu_per_role():
    p = plan_run(_cfg())
    assert [(r.role, r.count, dict(r.bundle)) for r in p.roles] == [
        ("rollout", 1, {"CPU": 1.0}), ("learner", 1, {"CPU": 1.0}), ("reward", 1, {"CPU": 1.0})]
    assert p.totals() == {"CPU": 3.0}


def test_gpu_plan_counts_tensor_parallel_custom_resources_and_the_judge():
    p = plan_run(_cfg(
        "rollout.num_workers=2", "rollout.tensor_parallel_size=2", "cluster.rollout.gpus=1",
        "learner.num_ranks=4", "cluster.learner.gpus=1", "cluster.learner.cpus=4",
        "reward.num_workers=3", "cluster.reward.cpus=2", "cluster.reward.resources={cpu_pool: 0.5}",
        "reward.judge={model: builtin:tiny, num_gpus: 1}",
    ))
    by_role = {r.role: (r.count, dict(r.bundle)) for r in p.roles}
    assert by_role == {
        "rollout": (2, {"CPU": 1.0, "GPU": 2.0}),
        "learner": (4, {"CPU": 4.0, "GPU": 1.0}),
        "reward": (3, {"CPU": 2.0, "cpu_pool": 0.5}),
        "judge": (1, {"CPU": 1.0, "GPU": 1.0}),
    }
    # 2 + 16 + 6 + 1 CPUs; 4 + 4 + 1 GPUs; 3 x 0.5 cpu_pool
    assert p.totals() == {"CPU": 25.0, "GPU": 9.0, "cpu_pool": 1.5}


def test_reference_placement_learner_adds_nothing_separate_adds_one_actor():
    on_learner = plan_run(_cfg("algo.kl.coef=0.1", "learner.num_ranks=2"))
    assert on_learner.role("reference").bundle == {} and on_learner.totals() == {"CPU": 4.0}
    separate = plan_run(_cfg("algo.kl.coef=0.1", "cluster.reference={placement: separate, gpus: 1, cpus: 2}"))
    assert dict(separate.role("reference").bundle) == {"CPU": 2.0, "GPU": 1.0}
    assert separate.totals() == {"CPU": 5.0, "GPU": 1.0}
    assert plan_run(_cfg("cluster.reference.placement=separate")).role("reference") is None  # no KL, no reference


def test_colocated_rollout_shares_the_learner_bundles():
    p = plan_run(_cfg("cluster.colocate=true", "learner.num_ranks=2", "cluster.learner.gpus=1",
                      "rollout.num_workers=2", "cluster.rollout.cpus=0.5"))
    (group,) = [g for g in p.groups if g.name == "learner"]
    assert [dict(b) for b in group.bundles] == [{"CPU": 1.5, "GPU": 1.0}] * 2
    assert {g.name for g in p.groups} == {"learner", "reward"}
    assert p.totals() == {"CPU": 4.0, "GPU": 2.0}  # 2 x 1.5 + 1 reward; the GPUs are shared


def test_each_worker_reserves_its_bundle_and_colocated_workers_split_the_shared_gpus():
    """What the runtime asks Ray for (``RolePlan.reserves``, ``WorkerGroup.from_plan``) comes from
    the plan: a role's bundle, or for colocated roles each worker's share of the shared bundle."""
    p = plan_run(_cfg("cluster.colocate=true", "learner.num_ranks=2", "cluster.learner.gpus=1",
                      "cluster.learner.resources={node_a: 0.1}", "rollout.num_workers=2", "cluster.rollout.cpus=0.5"))
    assert p.shares_group("rollout") and p.shares_group("learner") and not p.shares_group("reward")
    rollout, learner = p.role("rollout"), p.role("learner")
    assert dict(rollout.reserves) == {"CPU": 0.5, "GPU": 0.5} and rollout.gpus == 0.5
    assert dict(learner.reserves) == {"CPU": 1.0, "GPU": 0.5, "node_a": 0.1}
    # the two workers of bundle i together take exactly that bundle
    (bundle, _) = p.group("learner").bundles
    assert {k: rollout.reserves.get(k, 0) + learner.reserves.get(k, 0) for k in bundle} == dict(bundle)

    plain = plan_run(_cfg("algo.kl.coef=0.1", "critic={num_ranks: 2}", "cluster.critic.gpus=1",
                          "rollout.group_size=1", "reward.judge={model: builtin:tiny, num_cpus: 2}"))
    for r in plain.roles:
        assert r.reserves == r.bundle and not plain.shares_group(r.role)
    assert plain.role("critic").gpus == 1.0 and plain.role("judge").reserves == {"CPU": 2.0}
    assert plain.group("judge").bundles == ({"CPU": 2.0},) and plain.group("judge").strategy == "PACK"
    # the reference copy on the learner ranks has no workers (nor group) of its own
    reference = plain.role("reference")
    assert reference.group == "learner" and not reference.has_workers and plain.group("reference") is None


def test_colocate_needs_a_learner_rank_per_rollout_worker():
    with pytest.raises(ConfigError, match=r"rollout.num_workers \(2\) must be <= learner.num_ranks \(1\)"):
        _cfg("cluster.colocate=true", "rollout.num_workers=2")
    for bad in ("cluster.rollout.gpus=1", "cluster.learner.gpus=2", "rollout.tensor_parallel_size=2"):
        with pytest.raises(ConfigError, match="shares each learner rank's GPU with one engine"):
            _cfg("cluster.colocate=true", bad)


def test_old_flat_cluster_keys_name_their_replacement():
    with pytest.raises(ConfigError, match=r"cluster.rollout_cpus_per_worker is now cluster.rollout.cpus"):
        _cfg("cluster.rollout_cpus_per_worker=2")
    with pytest.raises(ConfigError, match=r"must reserve some cpus, gpus or resources"):
        _cfg("cluster.reward.cpus=0")
    with pytest.raises(ConfigError, match=r"'GPU' is set with cpus/gpus"):
        _cfg("cluster.reward.resources={GPU: 1}")


NODES = [Node("a", "10.0.0.1", {"CPU": 8, "GPU": 4}), Node("b", "10.0.0.2", {"CPU": 8, "GPU": 4})]


def test_pack_fills_one_node_before_the_next_and_spread_uses_distinct_nodes():
    packed = fit(plan_run(_cfg("rollout.num_workers=2", "cluster.rollout.gpus=1")), NODES)
    assert packed.nodes == {"rollout": ["a", "a"], "learner": ["a"], "reward": ["a"]}
    spread = fit(plan_run(_cfg("rollout.num_workers=2", "cluster.rollout={gpus: 1, strategy: SPREAD}")), NODES)
    assert spread.nodes["rollout"] == ["a", "b"]
    # PACK spills over when one node is not enough: 3 + 3 GPUs on 4-GPU nodes
    spill = fit(plan_run(_cfg("rollout.num_workers=6", "cluster.rollout.gpus=1")), NODES)
    assert spill.nodes["rollout"] == ["a"] * 4 + ["b"] * 2


def test_strict_strategies_fail_where_they_cannot_hold():
    with pytest.raises(PlacementError, match=r"cannot place rollout.*STRICT_PACK needs one node"):
        fit(plan_run(_cfg("rollout.num_workers=6", "cluster.rollout={gpus: 1, strategy: STRICT_PACK}")), NODES)
    with pytest.raises(PlacementError, match=r"STRICT_SPREAD needs 3 distinct nodes"):
        fit(plan_run(_cfg("rollout.num_workers=3", "cluster.rollout={cpus: 1, strategy: STRICT_SPREAD}")), NODES)


def test_errors_name_the_role_and_what_is_missing():
    with pytest.raises(PlacementError, match=r"^the run needs 10 GPU, the cluster has 8 \(rollout 2 x 4, learner 2 x 1\)$"):
        fit(plan_run(_cfg("rollout.num_workers=2", "cluster.rollout.gpus=4", "learner.num_ranks=2",
                          "cluster.learner.gpus=1")), NODES)
    with pytest.raises(PlacementError, match=r"cannot place learner.*no single node is big enough"):
        fit(plan_run(_cfg("cluster.learner.gpus=6")), NODES)
    with pytest.raises(PlacementError, match=r"the cluster has 0 \(reward 1 x 0.01\)"):
        fit(plan_run(_cfg("cluster.reward.resources={node_b: 0.01}")), NODES)
    with pytest.raises(PlacementError, match="no alive nodes"):
        fit(plan_run(_cfg()), [])


def test_roles_without_a_custom_resource_keep_off_the_node_that_has_it():
    """The node_b node is listed first and could host everything; rollout and learner still go to
    the plain node, so the reward worker pinned to node_b finds room there (as Ray schedules it)."""
    nodes = [Node("nb", "10.0.0.9", {"CPU": 2, "node_b": 1, "memory": 1e10, "node:10.0.0.9": 1}),
             Node("head", "10.0.0.1", {"CPU": 4, "GPU": 1})]
    placement = fit(plan_run(_cfg("cluster.reward.resources={node_b: 0.01}", "cluster.reward.cpus=2")), nodes)
    assert placement.nodes == {"rollout": ["head"], "learner": ["head"], "reward": ["nb"]}
    with pytest.raises(PlacementError) as err:
        fit(plan_run(_cfg("cluster.reward.resources={node_b: 0.01}", "cluster.reward.cpus=3")), nodes)
    assert "10.0.0.9: CPU 2, node_b 1 free of CPU 2, node_b 1" in str(err.value)
    assert "memory" not in str(err.value) and "node:" not in str(err.value)


def test_nodes_sharing_an_address_are_told_apart():
    nodes = [Node("aaaaaaaa1", "192.0.2.2", {"CPU": 4}), Node("bbbbbbbb2", "192.0.2.2", {"CPU": 4})]
    plan = plan_run(_cfg("rollout.num_workers=2", "cluster.rollout={cpus: 3, strategy: STRICT_SPREAD}"))
    table = format_plan(plan, fit(plan, nodes), nodes)
    assert "192.0.2.2 (aaaaaa) x1, 192.0.2.2 (bbbbbb) x1" in table


def test_a_custom_resource_pins_the_role_to_the_node_that_has_it():
    nodes = [Node("head", "127.0.0.1", {"CPU": 4}), Node("nb", "127.0.0.2", {"CPU": 2, "node_b": 1})]
    placement = fit(plan_run(_cfg("cluster.reward.resources={node_b: 0.01}", "reward.num_workers=2",
                                  "cluster.reward.cpus=0.5")), nodes)
    assert placement.nodes == {"rollout": ["head"], "learner": ["head"], "reward": ["nb", "nb"]}
    table = format_plan(plan_run(_cfg("cluster.reward.resources={node_b: 0.01}")), placement, nodes)
    assert "reward   1        CPU 1, node_b 0.01  PACK      127.0.0.2 x2" in table
    assert table.splitlines()[-1] == "total: CPU 3, node_b 0.01"


@settings(max_examples=60, deadline=None)
@given(
    workers=st.lists(st.integers(1, 4), min_size=3, max_size=3),
    gpus=st.sampled_from([0, 0.5, 1, 2]),
    strategy=st.sampled_from(["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]),
    nodes=st.lists(st.tuples(st.integers(1, 16), st.integers(0, 8)), min_size=1, max_size=4),
)
def test_a_fit_never_overcommits_a_node_and_places_every_worker(workers, gpus, strategy, nodes):
    cfg = _cfg(f"rollout.num_workers={workers[0]}", f"learner.num_ranks={workers[1]}",
               f"reward.num_workers={workers[2]}", f"cluster.rollout={{gpus: {gpus}, strategy: {strategy}}}",
               "rollout.prompts_per_step=8")
    cluster = [Node(f"n{i}", f"10.0.0.{i}", {"CPU": c, "GPU": g}) for i, (c, g) in enumerate(nodes)]
    plan = plan_run(cfg)
    try:
        placement = fit(plan, cluster)
    except PlacementError:
        return
    used: dict[str, dict[str, float]] = {n.node_id: {} for n in cluster}
    for r in plan.roles:
        assert len(placement.nodes[r.role]) == r.count
        for node in placement.nodes[r.role]:
            for k, v in r.bundle.items():
                used[node][k] = used[node].get(k, 0) + v
    for n in cluster:
        assert all(v <= n.resources.get(k, 0) + 1e-9 for k, v in used[n.node_id].items())
    if strategy == "STRICT_SPREAD":
        assert len(set(placement.nodes["rollout"])) == workers[0]


def test_rlft_plan_prints_the_table_and_exits_1_when_it_does_not_fit(capsys):
    assert main(["plan", "rollout.num_workers=2", "cluster.rollout.gpus=1", "--nodes", "2", "--node-gpus", "1",
                 "--node-cpus", "4"]) == 0
    out = capsys.readouterr().out
    assert "on 2 node(s) of CPU 4, GPU 1" in out and "rollout  2        CPU 1, GPU 1  PACK      node-0 x1, node-1 x1" in out
    assert main(["plan", "cluster.reward.resources={node_b: 0.01}", "--node-cpus", "4"]) == 1
    assert "does not fit: the run needs 0.01 node_b, the cluster has 0" in capsys.readouterr().err
    assert main(["plan", "cluster.reward.resources={node_b: 0.01}", "--node-cpus", "4",
                 "--node-resource", "node_b=1"]) == 0


# --------------------------------------------------------------------------------------------------
# rlft train: an embedded Ray sized from the run's plan, and the check before any actor starts


def test_an_embedded_ray_gets_what_the_roles_reserve_when_the_machine_has_fewer_cores():
    from rlft.placement import embedded_cpus

    two_ranks = plan_run(_cfg("learner.num_ranks=2", "cluster.learner.cpus=2", "reward.num_workers=2"))
    assert embedded_cpus(two_ranks, cores=2) == 7  # rollout 1 + learner 2 x 2 + reward 2 x 1
    assert embedded_cpus(plan_run(_cfg("cluster.reward.cpus=0.5")), cores=2) == 3  # 2.5 rounds up
    assert embedded_cpus(two_ranks, cores=32) == 32
    assert embedded_cpus(two_ranks, cores=2, configured=4) == 4  # cluster.num_cpus as given


class _FakeRay:
    def __init__(self, nodes=()):
        self.kwargs, self._nodes = None, list(nodes)

    def init(self, **kwargs):
        self.kwargs = kwargs
        return "context"

    def nodes(self):
        return self._nodes


def test_train_starts_the_embedded_ray_with_the_plans_cpus(monkeypatch):
    """Two roles plus a reward worker on two cores: Ray gets 3 CPUs, not the 2 cores (no 120 s wait)."""
    import sys

    from launch import ray_session

    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(ray_session.os, "cpu_count", lambda: 2)
    assert ray_session.start_ray(_cfg(), None, log_to_driver=False) == "context"
    assert fake.kwargs["num_cpus"] == 3
    ray_session.start_ray(_cfg("cluster.num_cpus=8"), None, log_to_driver=True)
    assert fake.kwargs["num_cpus"] == 8
    ray_session.start_ray(_cfg(), "ray://head:10001", log_to_driver=True)
    assert fake.kwargs == {"address": "ray://head:10001"}


def test_a_run_that_cannot_fit_the_cluster_stops_before_any_actor_with_plans_message(monkeypatch, capsys, tmp_path):
    import sys

    import launch.train
    from launch import ray_session

    fake = _FakeRay([{"NodeID": "n1", "NodeManagerAddress": "10.0.0.1", "Alive": True, "Resources": {"CPU": 2.0}},
                     {"NodeID": "n0", "NodeManagerAddress": "10.0.0.9", "Alive": False, "Resources": {"CPU": 64.0}}])
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "ray", fake)
        nodes = ray_session.alive_nodes()
    assert nodes == [Node("n1", "10.0.0.1", {"CPU": 2.0})]
    cfg = _cfg("learner.num_ranks=2")
    with pytest.raises(PlacementError) as err:
        ray_session.check_run_fits(cfg, nodes, "the cluster at ray://head:10001")
    text = str(err.value)
    assert text.startswith("the run does not fit on the cluster at ray://head:10001: the run needs 4 CPU, the "
                           "cluster has 2 (rollout 1 x 1, learner 2 x 1, reward 1 x 1)\n")
    assert format_plan(plan_run(cfg)) in text and "Nothing was started" in text
    monkeypatch.setenv(ray_session.SKIP_CHECK_ENV, "1")  # an autoscaling cluster (rlft submit --force)
    ray_session.check_run_fits(cfg, nodes, "the cluster")
    monkeypatch.delenv(ray_session.SKIP_CHECK_ENV)

    def train(cfg, run_dir, **kwargs):  # what launch.train does once Ray is up, before any actor
        ray_session.check_run_fits(cfg, nodes, "the cluster at ray://head:10001")

    monkeypatch.setattr(launch.train, "train", train)
    assert main(["train", "learner.num_ranks=2", "--run-dir", str(tmp_path / "run")]) == 2
    out = capsys.readouterr().err
    assert "rlft: the run does not fit on the cluster at ray://head:10001: the run needs 4 CPU" in out
    assert "Traceback" not in out
