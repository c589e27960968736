"""The algorithm core: pure tensor functions and their registries.

* ``ADVANTAGES``: outcome-level estimators ``fn(rewards[B], group_ids[B], **params) -> [B]``
  (``grpo``, ``dr_grpo``, ``rloo``, ``reinforce_pp_baseline``), and ``gae`` for token-level PPO.
* ``POLICY_LOSSES``: ``fn(PolicyLossInputs, **params) -> LossOutput`` (``ppo_clip``, ``gspo``,
  ``cispo``, ``topr``, ``reinforce``, ``decoupled_ppo`` for stale rollouts); ``compute_policy_loss``
  adds truncated importance sampling.
* ``SFT_LOSSES``: imitation objectives ``fn(logprobs, ref_logprobs, **params) -> [B, T]`` (``nll``,
  ``dft``, ``asft``) for SFT and RFT stages and the SFT parts of RL stages.
* ``KL_ESTIMATORS``: ``k1``, ``k2``, ``k3`` over ``(logprobs, ref_logprobs) -> [B, T]``.
* ``aggregate``: per-token loss -> scalar (``token-mean``, ``seq-mean-token-mean``,
  ``seq-mean-token-sum-norm``).

Nothing here imports ray, vllm or the config: functions take tensors and keyword hyperparameters.
"""

from rlft.algorithms.advantages import ADVANTAGES, dr_grpo, gae, group_stats, grpo, reinforce_pp_baseline, rloo
from rlft.algorithms.aggregation import AGGREGATION_MODES, AggregationMode, aggregate
from rlft.algorithms.kl import KL_ESTIMATORS, k1, k2, k3
from rlft.algorithms.policy_losses import (
    POLICY_LOSSES,
    LossOutput,
    PolicyLossInputs,
    compute_policy_loss,
    cispo,
    decoupled_ppo,
    gspo,
    masked_mean,
    ppo_clip,
    reinforce,
    sequence_log_ratio,
    topr,
    truncated_importance_weights,
)
from rlft.algorithms.registry import ParamError, Registry, RegistryError
from rlft.algorithms.sft_losses import SFT_LOSSES

__all__ = [
    "ADVANTAGES",
    "AGGREGATION_MODES",
    "AggregationMode",
    "KL_ESTIMATORS",
    "LossOutput",
    "POLICY_LOSSES",
    "ParamError",
    "PolicyLossInputs",
    "Registry",
    "RegistryError",
    "SFT_LOSSES",
    "aggregate",
    "cispo",
    "compute_policy_loss",
    "decoupled_ppo",
    "dr_grpo",
    "gae",
    "group_stats",
    "grpo",
    "gspo",
    "k1",
    "k2",
    "k3",
    "masked_mean",
    "ppo_clip",
    "reinforce",
    "reinforce_pp_baseline",
    "rloo",
    "sequence_log_ratio",
    "topr",
    "truncated_importance_weights",
]
