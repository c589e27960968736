"""How rewards become a loss: ``algo`` (advantage estimator, policy loss, KL, aggregation) and the
prompt sampler ``curriculum``: each a ``{name, params}`` choice over its registry.

>>> AlgoConfig(loss={"name": "gspo"}).loss.params
{}
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from rlft.algorithms import ADVANTAGES, KL_ESTIMATORS, POLICY_LOSSES, AggregationMode
from rlft.algorithms.guidance import GUIDANCE, guidance_settings
from rlft.config.base import Choice, NonNegative, Positive, Section
from rlft.curriculum import SAMPLERS


class AdvantageChoice(Choice):
    _registry = ADVANTAGES
    name: str = "grpo"
    """Advantage estimator from ``rlft.algorithms.ADVANTAGES`` (grpo, dr_grpo, rloo, reinforce_pp_baseline, or a plugin's)."""


class PolicyLossChoice(Choice):
    _registry = POLICY_LOSSES
    name: str = "ppo_clip"
    """Policy loss from ``rlft.algorithms.POLICY_LOSSES`` (ppo_clip, gspo, cispo, topr, decoupled_ppo, reinforce, or a plugin's)."""


class KLConfig(Section):
    estimator: str = "k3"
    """KL estimator from ``rlft.algorithms.KL_ESTIMATORS``: k1, k2 or k3."""
    coef: NonNegative = 0.0
    """Weight beta of the KL term; 0 disables it and no reference model is loaded."""
    placement: Literal["loss", "reward"] = "loss"
    """``loss``: add beta * KL to the policy loss (GRPO); ``reward``: subtract it from token rewards (PPO, needs ``critic``)."""
    target: Positive | None = None
    """Adaptive KL controller (``placement: reward``): the sequence KL (summed over tokens, averaged
    over the batch) that beta is steered towards; None keeps beta fixed."""
    horizon: Annotated[int, Field(ge=1)] = 10000
    """Adaptive KL controller: samples over which beta may change by at most 20%."""
    reference: Literal["after_sft", "base"] = "after_sft"
    """The frozen model the KL is measured against. ``after_sft``: an RL stage that follows an SFT
    stage measures it against the policy as that SFT stage left it (snapshotted into
    ``RUN_DIR/reference/<stage>/`` and kept in checkpoints), so the KL is 0 at the stage's first
    step; other RL stages keep the reference they had (``model.path`` at first). ``base``: always
    ``model.path``."""

    @field_validator("estimator")
    @classmethod
    def _known(cls, name: str) -> str:
        KL_ESTIMATORS.get(name)
        return name


class DynamicSamplingConfig(Section):
    enabled: bool = False
    """DAPO dynamic sampling: drop groups whose rewards are all equal and draw more prompts until the
    step has ``rollout.prompts_per_step`` groups with signal."""
    max_extra_rounds: Annotated[int, Field(ge=0)] = 3
    """Extra generation rounds per step at most; when they run out the step trains on the groups it
    has (logged as ``sampling/groups_short``), it never fails."""


class AlgoConfig(Section):
    advantage: AdvantageChoice = AdvantageChoice()
    """How outcome rewards become advantages."""
    loss: PolicyLossChoice = PolicyLossChoice()
    """The per-token policy loss."""
    aggregation: AggregationMode = "token-mean"
    """Reduction of the per-token loss: token-mean, seq-mean-token-mean or seq-mean-token-sum-norm."""
    kl: KLConfig = KLConfig()
    """KL regularisation towards the frozen reference model."""
    tis_cap: Positive | None = None
    """Truncated importance sampling cap C against the rollout engine's logprobs; None disables."""
    filter_zero_variance: bool = False
    """Drop groups whose rewards are all equal (they carry no advantage) before the learner step."""
    dynamic_sampling: DynamicSamplingConfig = DynamicSamplingConfig()
    """Refill the batch with fresh prompts for the groups dropped for zero variance (DAPO)."""
    guidance: GuidanceChoice | None = None
    """Demonstrations inside RL stages (``rlft.guidance``): ``{name: relift, params: {batch_size: 32}}``;
    None: RL on the policy's own samples only."""

    @model_validator(mode="after")
    def _one_behaviour_weight(self) -> AlgoConfig:
        if self.tis_cap is not None and self.loss.name == "decoupled_ppo":
            raise ValueError(
                "decoupled_ppo already weights each token by exp(old_logprobs - rollout_logprobs) (capped "
                "by its behaviour_cap): remove algo.tis_cap, which would apply that weight twice"
            )
        return self


class GuidanceChoice(Choice):
    _registry = GUIDANCE
    name: str
    """Guidance method from ``rlft.algorithms.guidance.GUIDANCE``: ``relift`` (an SFT step on the
    demonstrations of prompts no sample solved, between RL steps)."""

    @model_validator(mode="after")
    def _settings(self) -> GuidanceChoice:
        guidance_settings(self)  # the method's own checks (e.g. its SFT objective's name)
        return self


class CurriculumConfig(Choice):
    _registry = SAMPLERS
    name: str = "uniform"
    """Prompt sampler from ``rlft.curriculum.SAMPLERS``: uniform, weighted_sources, sec, dump,
    learnability, difficulty_pools (or a plugin's); see the README's Curriculum section."""
    category_field: str = "category"
    """The prompt metadata field that names its category (a dataset column in ``data.metadata_fields``;
    the built-in task has ``category`` and ``difficulty``)."""
