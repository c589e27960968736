"""The run configuration: one pydantic v2 tree, loaded from YAML plus dotted overrides.

>>> cfg = load_config(overrides=["algo.advantage.name=rloo", "learner.lr=3e-6"])
>>> cfg.algo.advantage.name, cfg.learner.lr
('rloo', 3e-06)
>>> load_config(overrides=["algo.loss.params.clip_hgih=0.28"])
Traceback (most recent call last):
...
rlft.config.base.ConfigError: invalid config:
  algo.loss.params: unknown parameter 'clip_hgih' for policy loss 'ppo_clip' (did you mean 'clip_high'?); valid parameters: clip_high, clip_low, dual_clip

Every model forbids unknown keys and is frozen: a resolved config is never mutated; derive a new one
with ``apply_overrides`` or ``model_copy(update=...)``. Each field's docstring is its description (shown
with its default by ``rlft check --describe``, ``rlft.config.describe``, and in
``RunConfig.model_json_schema()``). The schema's defaults are the only defaults a config file gets.

The sections are in their own modules (``rlft.config.run`` holds the root, ``RunConfig``; the rest are
listed in ``rlft.config.schema``, which also exports them all); loading, overrides and dumping are in
``rlft.config.files``.
"""

from rlft.config.base import ConfigError, Section
from rlft.config.cluster import ClusterConfig, ReferenceResources, RoleResources
from rlft.config.files import (
    apply_overrides,
    dump_config,
    format_errors,
    load_config,
    parse_override,
    save_config,
    validate_config,
)
from rlft.config.schema import (
    AdvantageChoice,
    AlgoConfig,
    CheckpointConfig,
    CriticConfig,
    CurriculumConfig,
    DataConfig,
    DataSourceConfig,
    DynamicSamplingConfig,
    EvalConfig,
    JudgeConfig,
    SandboxConfig,
    KLConfig,
    LearnerConfig,
    LoggingConfig,
    ModelConfig,
    PolicyLossChoice,
    RewardConfig,
    RewardFunctionConfig,
    RolloutConfig,
    RunConfig,
    StageConfig,
    WandbConfig,
)
from rlft.config.stages import RFTConfig, SFTLossChoice, UntilConfig, stage_names

__all__ = [
    "AdvantageChoice",
    "AlgoConfig",
    "CheckpointConfig",
    "ClusterConfig",
    "ConfigError",
    "CriticConfig",
    "CurriculumConfig",
    "DataConfig",
    "DataSourceConfig",
    "DynamicSamplingConfig",
    "EvalConfig",
    "JudgeConfig",
    "SandboxConfig",
    "KLConfig",
    "LearnerConfig",
    "LoggingConfig",
    "ModelConfig",
    "PolicyLossChoice",
    "ReferenceResources",
    "RewardConfig",
    "RewardFunctionConfig",
    "RoleResources",
    "RolloutConfig",
    "RunConfig",
    "Section",
    "RFTConfig",
    "SFTLossChoice",
    "StageConfig",
    "UntilConfig",
    "WandbConfig",
    "apply_overrides",
    "dump_config",
    "format_errors",
    "load_config",
    "parse_override",
    "save_config",
    "stage_names",
    "validate_config",
]
