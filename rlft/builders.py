"""What a batch holds: a ``BatchBuilder`` turns a step's scored groups into the learner's batch.

``build`` makes the ``TrainBatch`` (and its metrics) from a ``rlft.collect.Collected``;
``before_update`` is the one hook between the batch and the policy update (PPO trains its critic
there, and holds the policy back during the critic's warm-up). Two builders ship:

* ``OutcomeBuilder``: one outcome advantage per completion, the ones the collector computed and
  the curriculum observed (GRPO, Dr. GRPO, RLOO, REINFORCE++ baseline);
* ``rlft.ppo_step.CriticBuilder``: PPO with a learned critic (GAE over its values, the KL in the
  reward, the critic's update and warm-up).

Builders that bring demonstrations into RL stages (``rlft.guidance``) are new classes too. A builder
is any object with these methods; subclassing ``BatchBuilder`` gives the stateless defaults:

>>> from rlft.collect import Collected
>>> from rlft.config import load_config
>>> from rlft.types import Rollout, Scores, TrainSample
>>> class WithDemos(BatchBuilder):  # the outcome batch plus a fixed demonstration
...     def __init__(self, cfg, demo):
...         self.outcome, self.demo = OutcomeBuilder(cfg), demo
...     def build(self, collected, version):
...         batch, metrics = self.outcome.build(collected, version)
...         return TrainBatch([*batch.samples, self.demo]), {**metrics, "batch/demos": 1.0}
>>> rs = [Rollout("p", 0, [1], [i], [0.0], "stop", 0) for i in range(2)]
>>> collected = Collected([0], rs, Scores([1.0, 0.0]), [0.7, -0.7])
>>> batch, m = WithDemos(load_config(), TrainSample([1], [3], [1.0])).build(collected, version=0)
>>> [s.advantages for s in batch.samples], m["batch/demos"]
([[0.7], [-0.7], [1.0]], 1.0)
"""

from __future__ import annotations

from typing import Any, Protocol

from rlft.batching import build_train_batch
from rlft.collect import Collected
from rlft.config import RunConfig, SFTLossChoice
from rlft.types import TrainBatch


class BatchBuilder(Protocol):
    """Scored groups -> the learner's batch, with one hook before the policy update."""

    def build(self, collected: Collected, version: int) -> tuple[TrainBatch, dict[str, float]]:
        """The batch of a step whose data is ``collected``, the learner being at ``version``."""
        ...

    def before_update(self, batch: TrainBatch) -> tuple[dict[str, float], bool]:
        """Runs before the policy update of a non-empty batch: its metrics, and whether the policy
        trains on the batch this step (False: no update, no weight sync)."""
        return {}, True

    def interleaved(self) -> tuple[TrainBatch, SFTLossChoice] | None:
        """An SFT batch (and its objective) for one imitation step before this step's RL update,
        whether or not the RL batch is empty (ReLIFT, ``rlft.guidance``); None: no such step."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to continue the builder exactly."""
        return {}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue from ``state_dict``'s output (None: the checkpoint holds no builder state)."""

    def save_checkpoint(self, path: str) -> None:
        """Write the builder's own models (a critic) into the checkpoint directory ``path``."""

    def load_checkpoint(self, path: str) -> None:
        """Load them back from ``path``."""


class OutcomeBuilder(BatchBuilder):
    """The outcome-advantage batch (``rlft.batching.build_train_batch``) with the advantages the
    collector computed; groups without signal are dropped with ``algo.filter_zero_variance`` (and
    with dynamic sampling)."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg

    def build(self, collected: Collected, version: int) -> tuple[TrainBatch, dict[str, float]]:
        algo = self.cfg.algo
        return build_train_batch(collected.rollouts, collected.totals, advantages=collected.advantages,
                                 filter_zero_variance=algo.filter_zero_variance or algo.dynamic_sampling.enabled)
