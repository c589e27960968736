"""Where a run's roles run: per-role resources on a Ray cluster (CPUs, GPUs, custom resources,
placement strategy), the reference model's placement, colocation and the cluster address.

>>> ClusterConfig(rollout={"cpus": 2, "resources": {"node_b": 0.01}}).rollout.resources
{'node_b': 0.01}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from rlft.config.base import NonNegative, Positive, Section

Strategy = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]


class RoleResources(Section):
    """What each worker of one role reserves, and how the role's workers are placed.

    Every role gets its own Ray placement group with one bundle per worker (``strategy``: PACK puts
    them on as few nodes as possible, SPREAD across nodes, STRICT_* insists). ``resources`` names
    custom Ray resources a node advertises (``ray start --resources='{"node_b": 1}'``): asking for a
    small share of one pins the role's workers to the nodes that have it::

        cluster:
          reward: {cpus: 2, resources: {cpu_pool: 0.01}, strategy: SPREAD}
    """

    cpus: NonNegative = 1.0
    """CPUs reserved for each worker."""
    gpus: NonNegative = 0.0
    """GPUs reserved for each worker (a rollout worker reserves this times ``rollout.tensor_parallel_size``)."""
    resources: dict[str, Positive] = {}
    """Custom Ray resources reserved for each worker, e.g. ``{node_b: 0.01}`` to run only on nodes advertising ``node_b``."""
    strategy: Strategy = "PACK"
    """Ray placement-group strategy of the role's workers."""

    @model_validator(mode="after")
    def _reserves_something(self) -> RoleResources:
        if self.cpus <= 0 and self.gpus <= 0 and not self.resources:
            raise ValueError("a role's workers must reserve some cpus, gpus or resources")
        for key in self.resources:
            if key in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ValueError(f"resources: {key!r} is set with cpus/gpus, not as a custom resource")
        return self


class ReferenceResources(RoleResources):
    """Where the frozen reference model (KL penalty, ``algo.kl.coef > 0``) runs."""

    placement: Literal["learner", "separate"] = "learner"
    """``learner``: each learner rank holds a copy next to the policy (no extra actor, more memory per
    rank); ``separate``: one reference actor with its own resources computes the batch's reference
    log-probs before the learner step (frees learner GPU memory for larger policies)."""


class ClusterConfig(Section):
    """Where the run's roles run: the Ray cluster to join, and each role's resources and placement.

    The worker counts live with each role (``rollout.num_workers``, ``learner.num_ranks``,
    ``reward.num_workers``); ``rlft plan`` prints the placement this section implies."""

    address: str | None = None
    """Ray address to join (``auto``, ``ray://host:10001``); None starts an embedded local Ray unless RAY_ADDRESS is set."""
    num_cpus: Annotated[int, Field(ge=1)] | None = None
    """CPUs the embedded Ray advertises; None: the larger of the machine's cores and what the run's roles
    reserve (Ray's CPUs are logical; ``rlft plan`` shows the roles' reservations)."""
    rollout: RoleResources = RoleResources()
    """Each rollout worker (one vLLM engine)."""
    learner: RoleResources = RoleResources()
    """Each learner rank."""
    reward: RoleResources = RoleResources()
    """Each reward worker (its reward processes share its CPUs)."""
    reference: ReferenceResources = ReferenceResources()
    """The reference model: on the learner ranks (default) or a separate actor."""
    critic: RoleResources = RoleResources()
    """Each critic rank (PPO, when ``critic`` is set)."""
    colocate: bool = False
    """Time-share devices between the learner and the rollout engines: rollout worker ``i`` runs in
    learner rank ``i``'s bundle (one placement group, each takes half its GPUs); on GPUs the engines
    sleep (vLLM sleep mode: weights offloaded, KV cache freed) while the learner trains and wake for
    the weight sync. Needs ``rollout.num_workers <= learner.num_ranks``. For small clusters."""
    max_restarts: Annotated[int, Field(ge=0)] = 3
    """Times Ray restarts a dead rollout or reward worker (its lost share of the step is re-issued);
    a learner rank is never restarted mid-run."""
    dashboard: bool = True
    """Start the Ray dashboard with an embedded Ray (its URL is printed); actors are listed by role and rank."""

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        """Name the new key of a flat key from before the per-role sections."""
        if isinstance(data, dict):
            for key in data:
                if key in _RENAMED_CLUSTER_KEYS:
                    raise ValueError(f"cluster.{key} is now cluster.{_RENAMED_CLUSTER_KEYS[key]}")
        return data


_RENAMED_CLUSTER_KEYS = {
    "rollout_cpus_per_worker": "rollout.cpus",
    "rollout_gpus_per_worker": "rollout.gpus",
    "learner_cpus_per_rank": "learner.cpus",
    "learner_gpus_per_rank": "learner.gpus",
    "reward_cpus_per_worker": "reward.cpus",
    "placement_strategy": "<role>.strategy (per role: rollout, learner, reward, reference)",
}
