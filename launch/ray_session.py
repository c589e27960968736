"""Ray for ``rlft train``: an embedded one-machine Ray sized from the run's own plan, or a joined
cluster, and the check that the run's roles fit before any actor starts.

An embedded Ray advertises ``cluster.num_cpus`` CPUs when that is set, else the larger of the
machine's cores and what the roles reserve (``rlft.placement.embedded_cpus``): a run whose roles
ask for three CPUs on a two-core machine starts, it does not wait for a placement that never comes.
On a cluster, a run whose roles cannot be placed on the alive nodes stops at once with what
``rlft plan`` says (exit 2). ``RLFT_SKIP_PLACEMENT_CHECK=1`` skips that check (an autoscaling
cluster that grows when asked; ``rlft submit --force`` sets it for the job).
"""

from __future__ import annotations

import os
from typing import Any

from rlft.config import RunConfig
from rlft.placement import Node, PlacementError, does_not_fit, embedded_cpus, plan_run

SKIP_CHECK_ENV = "RLFT_SKIP_PLACEMENT_CHECK"


def start_ray(cfg: RunConfig, address: str | None, *, log_to_driver: bool) -> Any:
    """``ray.init``: join ``address``, or start an embedded Ray sized for the run; Ray's context."""
    import ray

    if address:
        return ray.init(address=address)
    cpus = embedded_cpus(plan_run(cfg), os.cpu_count() or 1, cfg.cluster.num_cpus)
    return ray.init(num_cpus=cpus, include_dashboard=cfg.cluster.dashboard, log_to_driver=log_to_driver)


def alive_nodes() -> list[Node]:
    """The connected Ray's alive nodes with their total resources."""
    import ray

    return [Node(n["NodeID"], n.get("NodeManagerAddress", ""), dict(n.get("Resources") or {}))
            for n in ray.nodes() if n.get("Alive")]


def check_run_fits(cfg: RunConfig, nodes: list[Node], where: str) -> None:
    """Raise ``PlacementError`` with ``rlft plan``'s message when the run's roles do not fit on
    ``nodes`` (unless ``RLFT_SKIP_PLACEMENT_CHECK`` is set)."""
    if os.environ.get(SKIP_CHECK_ENV, "").strip() not in ("", "0"):
        return
    why = does_not_fit(plan_run(cfg), nodes, where)
    if why is not None:
        raise PlacementError(
            f"{why}\nNothing was started: lower the roles' resources or worker counts (cluster.<role>.cpus/gpus, "
            f"rollout.num_workers, ...; on one machine cluster.num_cpus: null sizes Ray for the run), or set "
            f"{SKIP_CHECK_ENV}=1 for a cluster that grows when asked"
        )
