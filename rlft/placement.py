"""The placement a config implies: each role's workers, what each reserves, and where they fit.

Pure planning, no Ray: ``plan_run(cfg)`` lists the roles' placement groups (one bundle per worker)
as the runtime will ask Ray for them; ``fit(plan, nodes)`` simulates Ray's placement of those groups
on a cluster's nodes (their total resources) and names what is missing when they do not fit. This is
what ``rlft plan`` prints and what ``rlft submit`` checks before it submits a job.

>>> from rlft.config import load_config
>>> cfg = load_config(overrides=["rollout.num_workers=2", "cluster.rollout.gpus=1", "cluster.learner.gpus=1",
...                              "learner.num_ranks=2"])
>>> p = plan_run(cfg)
>>> p.totals()
{'CPU': 5.0, 'GPU': 4.0}
>>> fit(p, [Node("a", "10.0.0.1", {"CPU": 8, "GPU": 2})])
Traceback (most recent call last):
...
rlft.placement.PlacementError: the run needs 4 GPU, the cluster has 2 (rollout 2 x 1, learner 2 x 1)
>>> placement = fit(p, [Node("a", "10.0.0.1", {"CPU": 8, "GPU": 2}), Node("b", "10.0.0.2", {"CPU": 8, "GPU": 2})])
>>> placement.nodes["rollout"], placement.nodes["learner"]
(['a', 'a'], ['b', 'b'])

The simulation is greedy (Ray's own scheduler may find a packing it misses, and other jobs may hold
some of the resources it counts as free): ``rlft submit --force`` skips the check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rlft.config import RunConfig

ROLE_ORDER = ("rollout", "learner", "reference", "critic", "judge", "reward")
"""The order in which the runtime reserves the roles' placement groups."""


class PlacementError(ValueError):
    """The roles' workers do not fit on the cluster's nodes; the message names the role and what is missing."""


@dataclass(frozen=True)
class Node:
    """One node of a cluster: its Ray node id, IP address and total resources
    (``{"CPU": 16, "GPU": 8, "node_b": 1}``)."""

    node_id: str
    address: str
    resources: Mapping[str, float]


@dataclass(frozen=True)
class RolePlan:
    """The workers of one role: ``count`` of them, each reserving ``bundle``, in the placement group
    ``group`` placed with ``strategy``. Colocated roles share the group (and its bundles); each of
    their workers then asks for ``worker`` out of its shared bundle (its share of the bundle's GPUs).
    A role in another role's group with neither a bundle nor a ``worker`` has no workers of its own
    (the reference copy on the learner ranks). The runtime builds every role's workers from this
    record (``actors.group.WorkerGroup.from_plan``)."""

    role: str
    count: int
    bundle: Mapping[str, float]
    strategy: str
    group: str
    note: str = ""
    worker: Mapping[str, float] | None = None

    @property
    def reserves(self) -> Mapping[str, float]:
        """What each worker of the role asks Ray for: ``worker`` when set, else its ``bundle``."""
        return self.bundle if self.worker is None else self.worker

    @property
    def has_workers(self) -> bool:
        """False for a role that lives inside another role's workers (the reference on the learner ranks)."""
        return self.group == self.role or bool(self.bundle) or self.worker is not None

    @property
    def gpus(self) -> float:
        """The GPUs each worker reserves (0: it runs on CPU)."""
        return float(self.reserves.get("GPU", 0.0))


@dataclass(frozen=True)
class GroupPlan:
    """One placement group: its bundles in order and its strategy."""

    name: str
    strategy: str
    bundles: tuple[Mapping[str, float], ...]


@dataclass(frozen=True)
class Plan:
    roles: tuple[RolePlan, ...]
    groups: tuple[GroupPlan, ...]

    def totals(self) -> dict[str, float]:
        """Every resource the run reserves, summed over all bundles (CPU and GPU first)."""
        total: dict[str, float] = {}
        for g in self.groups:
            for b in g.bundles:
                for k, v in b.items():
                    total[k] = total.get(k, 0.0) + v
        return {k: total[k] for k in sorted(total, key=_resource_order)}

    def role(self, name: str) -> RolePlan | None:
        return next((r for r in self.roles if r.role == name), None)

    def group(self, name: str) -> GroupPlan | None:
        return next((g for g in self.groups if g.name == name), None)

    def shares_group(self, role: str) -> bool:
        """Whether ``role``'s workers live in bundles of a placement group that another role's
        workers live in too (``cluster.colocate``): the group is reserved once, for both."""
        r = self.role(role)
        return (r is not None and r.has_workers
                and any(o.role != role and o.group == r.group and o.has_workers for o in self.roles))


@dataclass(frozen=True)
class Placement:
    """Where ``fit`` put each role's workers (``nodes[role][rank]`` is a node id) and what is left."""

    nodes: dict[str, list[str]]
    free: dict[str, dict[str, float]] = field(default_factory=dict)


def _bundle(cpus: float, gpus: float, resources: Mapping[str, float]) -> dict[str, float]:
    b = {"CPU": float(cpus)} if cpus > 0 else {}
    if gpus > 0:
        b["GPU"] = float(gpus)
    b.update({k: float(v) for k, v in resources.items()})
    return b


def plan_run(cfg: RunConfig) -> Plan:
    """The roles' placement groups that a run of ``cfg`` reserves, in the runtime's order."""
    c = cfg.cluster
    tp = cfg.rollout.tensor_parallel_size
    n_roll, n_learn = cfg.rollout.num_workers, cfg.learner.num_ranks
    roles: list[RolePlan] = []
    groups: list[GroupPlan] = []

    learner_bundle = _bundle(c.learner.cpus, c.learner.gpus, c.learner.resources)
    if c.colocate:
        # rollout worker i lives in learner rank i's bundle and shares its GPUs: each asks for half
        roll_each = _bundle(c.rollout.cpus, 0, c.rollout.resources)
        shared = [_merge(learner_bundle, roll_each) if i < n_roll else dict(learner_bundle) for i in range(n_learn)]
        half = c.learner.gpus / 2
        roles.append(RolePlan("rollout", n_roll, roll_each, c.learner.strategy, "learner",
                              note="colocated: shares learner ranks' GPUs",
                              worker=_bundle(c.rollout.cpus, half, c.rollout.resources)))
        roles.append(RolePlan("learner", n_learn, learner_bundle, c.learner.strategy, "learner",
                              worker=_bundle(c.learner.cpus, half, c.learner.resources)))
        groups.append(GroupPlan("learner", c.learner.strategy, tuple(shared)))
    else:
        roll = _bundle(c.rollout.cpus, c.rollout.gpus * tp, c.rollout.resources)
        roles.append(RolePlan("rollout", n_roll, roll, c.rollout.strategy, "rollout",
                              note=f"tensor parallel {tp}" if tp > 1 else ""))
        groups.append(GroupPlan("rollout", c.rollout.strategy, tuple(dict(roll) for _ in range(n_roll))))
        roles.append(RolePlan("learner", n_learn, learner_bundle, c.learner.strategy, "learner"))
        groups.append(GroupPlan("learner", c.learner.strategy, tuple(dict(learner_bundle) for _ in range(n_learn))))

    if cfg.uses_reference:
        ref = c.reference
        if ref.placement == "separate":
            b = _bundle(ref.cpus, ref.gpus, ref.resources)
            roles.append(RolePlan("reference", 1, b, ref.strategy, "reference"))
            groups.append(GroupPlan("reference", ref.strategy, (b,)))
        else:
            roles.append(RolePlan("reference", n_learn, {}, c.learner.strategy, "learner",
                                  note="a copy on each learner rank"))

    if cfg.critic is not None:
        b = _bundle(c.critic.cpus, c.critic.gpus, c.critic.resources)
        roles.append(RolePlan("critic", cfg.critic.num_ranks, b, c.critic.strategy, "critic", note="PPO value model"))
        groups.append(GroupPlan("critic", c.critic.strategy, tuple(dict(b) for _ in range(cfg.critic.num_ranks))))

    if cfg.reward.judge is not None:
        j = _bundle(cfg.reward.judge.num_cpus, cfg.reward.judge.num_gpus, {})
        roles.append(RolePlan("judge", 1, j, "PACK", "judge", note="vLLM judge engine"))
        groups.append(GroupPlan("judge", "PACK", (j,)))

    rw = _bundle(c.reward.cpus, c.reward.gpus, c.reward.resources)
    n_rw = cfg.reward.num_workers
    roles.append(RolePlan("reward", n_rw, rw, c.reward.strategy, "reward",
                          note=f"{cfg.reward.processes_per_worker} processes each"))
    groups.append(GroupPlan("reward", c.reward.strategy, tuple(dict(rw) for _ in range(n_rw))))

    return Plan(tuple(roles), tuple(groups))


def embedded_cpus(plan: Plan, cores: int, configured: int | None = None) -> int:
    """The CPUs a one-machine (embedded) Ray advertises for a run: ``cluster.num_cpus`` when set,
    else the larger of the machine's cores and what the run's roles reserve. Ray's CPUs are
    logical: more of them than cores over-commits the machine, it does not make a run wait.

    >>> from rlft.config import load_config
    >>> embedded_cpus(plan_run(load_config()), cores=2)     # rollout, learner and reward: 1 CPU each
    3
    >>> embedded_cpus(plan_run(load_config()), cores=16), embedded_cpus(plan_run(load_config()), 2, configured=2)
    (16, 2)
    """
    if configured is not None:
        return configured
    need = plan.totals().get("CPU", 0.0)
    return max(int(cores), int(-(-need // 1)))


def does_not_fit(plan: Plan, nodes: Sequence[Node], where: str) -> str | None:
    """None when the run's roles fit on ``nodes``, else what ``rlft plan`` says about it: the reason
    and the plan's table (checked before any actor starts, instead of waiting for Ray to give up).

    >>> from rlft.config import load_config
    >>> print(does_not_fit(plan_run(load_config()), [Node("a", "10.0.0.1", {"CPU": 2})], "this machine"))
    the run does not fit on this machine: the run needs 3 CPU, the cluster has 2 (rollout 1 x 1, learner 1 x 1, reward 1 x 1)
    role     workers  each   strategy  note
    rollout  1        CPU 1  PACK
    learner  1        CPU 1  PACK
    reward   1        CPU 1  PACK      2 processes each
    total: CPU 3
    """
    try:
        fit(plan, nodes)
    except PlacementError as err:
        return f"the run does not fit on {where}: {err}\n{format_plan(plan)}"
    return None


def _merge(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0.0) + v
    return out


# --------------------------------------------------------------------------------------------------
# Fitting on nodes


def fit(plan: Plan, nodes: Sequence[Node]) -> Placement:
    """Place every group's bundles on ``nodes`` the way Ray would (PACK: fewest nodes, SPREAD:
    distinct nodes where possible, STRICT_*: insist), in the runtime's order; raise
    ``PlacementError`` naming the first role that does not fit and why."""
    if not nodes:
        raise PlacementError("the cluster has no alive nodes")
    _check_totals(plan, nodes)
    free = {n.node_id: {k: float(v) for k, v in n.resources.items()} for n in nodes}
    by_group: dict[str, list[str]] = {}
    for g in plan.groups:
        where = _place_group(g, free)
        if where is None:
            raise PlacementError(_why_not(g, plan, nodes, free))
        by_group[g.name] = where
    result = {r.role: by_group[r.group][: r.count] for r in plan.roles if r.bundle and r.group in by_group}
    for r in plan.roles:  # roles without bundles of their own (the reference on the learner ranks)
        result.setdefault(r.role, by_group.get(r.group, [])[: r.count])
    return Placement(result, free)


def _check_totals(plan: Plan, nodes: Sequence[Node]) -> None:
    have: dict[str, float] = {}
    for n in nodes:
        for k, v in n.resources.items():
            have[k] = have.get(k, 0.0) + float(v)
    for key, need in plan.totals().items():
        if need > have.get(key, 0.0) + 1e-9:
            parts = ", ".join(f"{r.role} {r.count} x {_num(r.bundle[key])}" for r in plan.roles if key in r.bundle)
            raise PlacementError(
                f"the run needs {_num(need)} {key}, the cluster has {_num(have.get(key, 0.0))} ({parts})"
            )


def _fits(bundle: Mapping[str, float], avail: Mapping[str, float]) -> bool:
    return all(avail.get(k, 0.0) + 1e-9 >= v for k, v in bundle.items())


def _take(bundle: Mapping[str, float], avail: dict[str, float]) -> None:
    for k, v in bundle.items():
        avail[k] = avail.get(k, 0.0) - v


def _place_group(g: GroupPlan, free: dict[str, dict[str, float]]) -> list[str] | None:
    """Node ids by bundle, with ``free`` updated; None (and ``free`` untouched) when it cannot fit."""
    trial = {n: dict(a) for n, a in free.items()}
    order = _preferred(g, trial)
    where: list[str] = []
    if g.strategy in ("PACK", "STRICT_PACK"):
        total = _merge_all(g.bundles)
        one = next((n for n in order if _fits(total, trial[n])), None)
        if one is not None:
            for b in g.bundles:
                _take(b, trial[one])
            where = [one] * len(g.bundles)
        elif g.strategy == "STRICT_PACK":
            return None
        else:  # PACK across nodes: fill the node already in use first
            for b in g.bundles:
                used = [n for n in dict.fromkeys(where) if _fits(b, trial[n])]
                n = used[0] if used else next((n for n in order if _fits(b, trial[n])), None)
                if n is None:
                    return None
                _take(b, trial[n])
                where.append(n)
    else:  # SPREAD / STRICT_SPREAD: a node not used by this group yet, else (SPREAD only) any
        for b in g.bundles:
            fresh = [n for n in order if n not in where and _fits(b, trial[n])]
            n = fresh[0] if fresh else None
            if n is None and g.strategy == "SPREAD":
                n = next((m for m in order if _fits(b, trial[m])), None)
            if n is None:
                return None
            _take(b, trial[n])
            where.append(n)
    free.update(trial)
    return where


_PLAIN = ("CPU", "memory", "object_store_memory")


def _preferred(g: GroupPlan, free: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Nodes in the order a group tries them: plain nodes first, then nodes with GPUs the group does
    not need (as Ray keeps CPU-only work off GPU nodes), then nodes with custom resources it does
    not ask for, so a role pinned to a special node later still finds it free."""
    needed = {k for b in g.bundles for k in b}

    def extras(node: str) -> int:
        return sum(1 if k == "GPU" else 2 for k, v in free[node].items()
                   if v > 0 and k not in needed and k not in _PLAIN and not k.startswith(("node:", "accelerator_type:")))

    return sorted(free, key=extras)  # stable: ties keep the cluster's order


def _merge_all(bundles: Sequence[Mapping[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for b in bundles:
        out = _merge(out, b)
    return out


def _why_not(g: GroupPlan, plan: Plan, nodes: Sequence[Node], free: Mapping[str, Mapping[str, float]]) -> str:
    roles = [r.role for r in plan.roles if r.group == g.name and r.bundle]
    what = " and ".join(roles)
    each = _fmt(g.bundles[0]) if g.bundles else "{}"
    missing = sorted({k for b in g.bundles for k in b if not any(k in n.resources for n in nodes)})
    if missing:
        reason = f"no node advertises {', '.join(missing)} (start one with ray start --resources=...)"
    elif not any(_fits(b, n.resources) for b in g.bundles for n in nodes):
        reason = "no single node is big enough for one worker"
    elif g.strategy == "STRICT_SPREAD":
        reason = f"STRICT_SPREAD needs {len(g.bundles)} distinct nodes with room"
    elif g.strategy == "STRICT_PACK":
        reason = "STRICT_PACK needs one node with room for all of them"
    else:
        reason = "not enough room left after the roles placed before it"
    used = set(plan.totals())
    names = _names(nodes)
    state = "; ".join(
        f"{names[n.node_id]}: {_fmt(_only(free[n.node_id], used))} free of {_fmt(_only(n.resources, used))}"
        for n in nodes
    )
    return (f"cannot place {what}: {len(g.bundles)} bundle(s) of {each} with {g.strategy}: {reason}. "
            f"Nodes: {state}")


# --------------------------------------------------------------------------------------------------
# Printing


def format_plan(plan: Plan, placement: Placement | None = None, nodes: Sequence[Node] = ()) -> str:
    """The plan as a table (role, workers, each worker's reservation, strategy, nodes) and the
    totals; with a ``placement``, the node each role's workers land on."""
    names = _names(nodes)
    rows = [("role", "workers", "each", "strategy", "placed on" if placement else "note")]
    for r in plan.roles:
        each = _fmt(r.bundle) if r.bundle else "(on the learner ranks)"
        if placement is not None:
            counts: dict[str, int] = {}
            for n in placement.nodes.get(r.role, []):
                counts[names.get(n, n)] = counts.get(names.get(n, n), 0) + 1
            last = ", ".join(f"{n} x{k}" for n, k in counts.items())
            if r.note:
                last += f"  ({r.note})"
        else:
            last = r.note
        strategy = r.strategy if r.group == r.role else f"{r.strategy} ({r.group} group)"
        rows.append((r.role, str(r.count), each, strategy, last))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in rows]
    lines.append(f"total: {_fmt(plan.totals())}")
    return "\n".join(line.rstrip() for line in lines)


def _names(nodes: Sequence[Node]) -> dict[str, str]:
    """A display name per node: its address, with a short node id where addresses repeat."""
    seen: dict[str, int] = {}
    for n in nodes:
        seen[n.address] = seen.get(n.address, 0) + 1
    return {n.node_id: n.address if n.address and seen[n.address] == 1 else f"{n.address or 'node'} ({n.node_id[:6]})"
            for n in nodes}


def _only(resources: Mapping[str, float], keys: set[str]) -> dict[str, float]:
    return {k: v for k, v in resources.items() if k in keys}


def _resource_order(key: str) -> tuple[int, str]:
    return ({"CPU": 0, "GPU": 1}.get(key, 2), key)


def _num(v: float) -> str:
    return f"{v:g}"


def _fmt(resources: Mapping[str, float]) -> str:
    keys = sorted(resources, key=_resource_order)
    return ", ".join(f"{k} {_num(resources[k])}" for k in keys) if keys else "nothing"
