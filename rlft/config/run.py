"""The root of the run configuration, ``RunConfig``: every section, and the checks that span
sections (its validators).

>>> RunConfig().rollout.group_size >= 2
True
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, model_validator

from rlft.algorithms import ADVANTAGES
from rlft.config.algo import AlgoConfig, CurriculumConfig
from rlft.config.cluster import ClusterConfig
from rlft.config.data import DataConfig, ModelConfig
from rlft.config.evaluation import EvalConfig, check_correct
from rlft.config.learner import CriticConfig, LearnerConfig
from rlft.config.outputs import CheckpointConfig, LoggingConfig
from rlft.config.base import Section
from rlft.config.reward import RewardConfig
from rlft.config.rollout import RolloutConfig
from rlft.algorithms.guidance import GUIDANCE
from rlft.algorithms.sft_losses import needs_reference
from rlft.config.stages import StageConfig, default_stages
from rlft.plugins import import_plugin, resolve_plugin


class RunConfig(Section):
    """The whole run. Each actor receives only its own section."""

    name: str = "rlft"
    """Run name, used for the run directory and the loggers."""
    seed: int = 0
    """Global seed for Python, NumPy, torch, data order and sampling."""
    plugins: list[str] = []
    """Modules or .py files to import first; they may register advantages, losses and more."""
    model: ModelConfig = ModelConfig()
    """The policy model."""
    data: DataConfig = DataConfig()
    """Prompt datasets."""
    rollout: RolloutConfig = RolloutConfig()
    """Generation by the rollout workers."""
    reward: RewardConfig = RewardConfig()
    """Reward functions and reward workers."""
    algo: AlgoConfig = AlgoConfig()
    """Advantage estimator, policy loss, aggregation, KL."""
    learner: LearnerConfig = LearnerConfig()
    """Optimisation on the learner group."""
    critic: CriticConfig | None = None
    """PPO's value model; None (default) runs critic-free (GRPO-family) RL."""
    curriculum: CurriculumConfig = CurriculumConfig()
    """Prompt sampling."""
    logging: LoggingConfig = LoggingConfig()
    """Metrics, dashboards and the run directory."""
    cluster: ClusterConfig = ClusterConfig()
    """Ray cluster and per-role resources."""
    checkpoint: CheckpointConfig = CheckpointConfig()
    """Checkpointing and resume."""
    stages: list[StageConfig] = Field(default_factory=default_stages, min_length=1)
    """The run as a list of stages, e.g. SFT warm-up then RL; default: one RL stage of 100 steps."""
    evaluation: EvalConfig = EvalConfig()
    """Held-out evaluation: greedy accuracy and pass@k."""

    @model_validator(mode="before")
    @classmethod
    def _import_plugins(cls, data: Any, info: ValidationInfo) -> Any:
        """Import the plugins first (they register names the rest is checked against); file paths
        become absolute, so every process that reads this config finds the same files."""
        if isinstance(data, dict) and data.get("plugins"):
            base_dir = (info.context or {}).get("base_dir")
            specs = [resolve_plugin(str(spec), base_dir) for spec in data["plugins"]]
            for spec in specs:
                import_plugin(spec)
            data = {**data, "plugins": specs}
        return data

    @property
    def anchors_to_reference(self) -> bool:
        """Whether an SFT objective of the run (ASFT) reads the reference model's log-probs."""
        return any(needs_reference(stage.objective.name) for stage in self.stages)  # an RL stage's is nll

    @property
    def needs_demonstrations(self) -> bool:
        """Whether ``algo.guidance`` trains on the training prompts' reference solutions."""
        g = self.algo.guidance
        return g is not None and bool(GUIDANCE.meta(g.name).get("needs_demonstrations"))

    @property
    def uses_reference(self) -> bool:
        """Whether the run needs the frozen reference model: a KL term, or an anchored SFT objective.

        >>> from rlft.config import load_config
        >>> load_config().uses_reference, load_config(overrides=["algo.kl.coef=0.1"]).uses_reference
        (False, True)
        >>> load_config(overrides=["stages=[{kind: sft, steps: 5, objective: {name: asft}}]"]).uses_reference
        True
        """
        return self.algo.kl.coef > 0 or self.anchors_to_reference

    @model_validator(mode="after")
    def _correct_names_a_reward(self) -> RunConfig:
        """``evaluation.correct.reward`` is one of the run's rewards (by its name in metrics)."""
        check_correct(self.evaluation.correct, [f.key for f in self.reward.functions], self.data.train_path)
        return self

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        estimator = self.algo.advantage.name
        if self.critic is None and ADVANTAGES.meta(estimator).get("needs_groups") and self.rollout.group_size < 2:
            raise ValueError(
                f"rollout.group_size must be >= 2 for the group-relative estimator '{estimator}', "
                f"got {self.rollout.group_size}"
            )
        batch = self.rollout.prompts_per_step * self.rollout.group_size
        needed = self.learner.mini_batches * self.learner.num_ranks
        if batch < needed:
            raise ValueError(
                f"a step's batch of {batch} completions (rollout.prompts_per_step x group_size) cannot "
                f"fill learner.mini_batches x num_ranks = {needed} shards"
            )
        if self.cluster.colocate and self.rollout.num_workers > self.learner.num_ranks:
            raise ValueError(
                f"cluster.colocate runs each rollout worker in a learner rank's bundle: "
                f"rollout.num_workers ({self.rollout.num_workers}) must be <= learner.num_ranks "
                f"({self.learner.num_ranks})"
            )
        if self.critic is not None and "advantage" in self.algo.model_fields_set:
            raise ValueError(
                "with a critic, advantages come from GAE over the critic's values (critic.gamma, "
                "critic.lam): remove algo.advantage"
            )
        if self.critic is None and self.algo.kl.placement == "reward" and self.algo.kl.coef > 0:
            raise ValueError("algo.kl.placement 'reward' puts the KL into PPO's token rewards: it needs a critic")
        if self.rollout.max_staleness > 0 and self.algo.dynamic_sampling.enabled:
            raise ValueError(
                "algo.dynamic_sampling refills a step's batch with extra rounds, which the asynchronous "
                "pipeline (rollout.max_staleness > 0) does not do: use algo.filter_zero_variance instead"
            )
        g = self.algo.guidance
        if g is not None:
            meta = GUIDANCE.meta(g.name)
            if self.critic is not None and meta.get("with_critic") is False:
                raise ValueError(
                    f"algo.guidance '{g.name}' puts demonstrations into the groups, which a critic cannot value "
                    "(GAE needs the critic's values on tokens the policy did not sample): use the GRPO family "
                    "(remove critic:), or guidance 'relift'")
            if self.rollout.max_staleness > 0 and meta.get("with_pipeline") is False:
                raise ValueError(f"algo.guidance '{g.name}' mixes demonstrations into the groups the synchronous "
                                 "collector generates: set rollout.max_staleness to 0")
            demos = int(g.params.get("demos_per_group", 0))
            if demos >= self.rollout.group_size:
                raise ValueError(f"algo.guidance '{g.name}': demos_per_group ({demos}) must leave samples in "
                                 f"each group of rollout.group_size {self.rollout.group_size}")
        if self.rollout.max_staleness > 0 and self.cluster.colocate:
            raise ValueError(
                "cluster.colocate time-shares each GPU between a learner rank and an engine, so nothing can "
                "overlap: set rollout.max_staleness to 0"
            )
        if self.cluster.colocate and (self.cluster.rollout.gpus > 0 or self.cluster.learner.gpus > 1
                                      or self.rollout.tensor_parallel_size > 1):
            raise ValueError(
                "cluster.colocate shares each learner rank's GPU with one engine: set cluster.learner.gpus "
                "to 1 (or 0 on CPU), leave cluster.rollout.gpus unset and rollout.tensor_parallel_size at 1"
            )
        return self
