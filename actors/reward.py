"""RewardWorker: one Ray actor that scores samples with the run's reward functions.

The worker itself never runs a reward: it owns a ``rewards.pool.RewardPool`` whose child processes
do, each call under a time and a memory limit, so a reward that hangs, crashes or eats memory costs
one sample, never the worker or the run. Several workers (``reward.num_workers``) spread a step's
samples across the cluster's CPUs.

Model-based rewards (``llm_judge``, ``rubric``) reach the judge engine actor (``actors.judge``)
through the worker: a child's ``judge.generate`` call comes up the pipe and the worker forwards it
to the judge actor with Ray.
"""

from __future__ import annotations

from typing import Any

from rlft.config import RewardFunctionConfig
from rewards.pool import Outcome, RewardPool, Sample


class JudgeClient:
    """``generate`` on the judge engine actor, as a plain blocking call (the pool's service)."""

    def __init__(self, actor: Any, timeout_s: float | None = None):
        self.actor, self.timeout_s = actor, timeout_s

    def generate(self, prompts: list[str], **kwargs: Any) -> list[str]:
        import ray

        return ray.get(self.actor.generate.remote(prompts, **kwargs), timeout=self.timeout_s)


class RewardWorker:
    """Scores samples in isolated processes; returns every reward's outcome per sample."""

    def __init__(
        self,
        functions: list[RewardFunctionConfig],
        *,
        plugins: list[str] | None = None,
        base_dir: str | None = None,
        processes: int = 2,
        timeout_s: float = 5.0,
        memory_mb: int = 2048,
        judge: Any = None,
        sandbox: dict[str, Any] | None = None,
    ) -> None:
        services = {"judge": JudgeClient(judge)} if judge is not None else {}
        self.pool = RewardPool(
            functions,
            plugins=plugins or [],
            base_dir=base_dir,
            processes=processes,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            services=services,
            sandbox=sandbox,
        )

    def ready(self) -> list[str]:
        """The reward keys this worker serves (the call returns once the worker is built)."""
        return self.pool.keys

    def score(self, samples: list[Sample]) -> dict[str, list[Outcome]]:
        return self.pool.score(samples)

    def restarts(self) -> int:
        """Reward processes replaced so far after a timeout or a crash."""
        return self.pool.restarts

    def close(self) -> None:
        self.pool.close()
