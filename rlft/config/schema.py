"""Every section of the run configuration in one namespace (kept for ``from rlft.config.schema
import ...``; ``rlft.config`` exports the same names). Each concern has its own module:

- ``rlft.config.run``: ``RunConfig``, the root, and the checks that span sections;
- ``rlft.config.data``: ``model``, ``data``; ``rlft.config.rollout``: ``rollout``;
  ``rlft.config.reward``: ``reward``; ``rlft.config.algo``: ``algo``, ``curriculum``;
  ``rlft.config.learner``: ``learner``, ``critic``; ``rlft.config.outputs``: ``logging``,
  ``checkpoint``; ``rlft.config.stages``: ``stages``; ``rlft.config.evaluation``: ``evaluation``;
  ``rlft.config.cluster``: ``cluster``; ``rlft.config.base``: what they share.

>>> StageConfig(kind="rl", steps=100, lr=0.0).lr      # 0: a control run, the policy stays
0.0
>>> RunConfig().rollout.group_size >= 2
True
"""

from __future__ import annotations

from rlft.config.algo import (
    AdvantageChoice,
    AlgoConfig,
    CurriculumConfig,
    DynamicSamplingConfig,
    KLConfig,
    PolicyLossChoice,
)
from rlft.config.base import Choice
from rlft.config.cluster import ClusterConfig
from rlft.config.data import DataConfig, DataSourceConfig, ModelConfig
from rlft.config.evaluation import EvalConfig
from rlft.config.learner import CriticConfig, LearnerConfig
from rlft.config.outputs import CheckpointConfig, LoggerName, LoggingConfig, WandbConfig
from rlft.config.reward import JudgeConfig, RewardConfig, RewardFunctionConfig, SandboxConfig
from rlft.config.rollout import RolloutConfig
from rlft.config.run import RunConfig
from rlft.config.stages import StageConfig

__all__ = [
    "AdvantageChoice", "AlgoConfig", "CheckpointConfig", "Choice", "ClusterConfig", "CriticConfig",
    "CurriculumConfig", "DataConfig", "DataSourceConfig", "DynamicSamplingConfig", "EvalConfig",
    "JudgeConfig", "KLConfig", "LearnerConfig", "LoggerName", "LoggingConfig", "ModelConfig",
    "PolicyLossChoice", "RewardConfig", "RewardFunctionConfig", "RolloutConfig", "RunConfig",
    "SandboxConfig", "StageConfig", "WandbConfig",
]  # fmt: skip
