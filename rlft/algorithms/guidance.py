"""Guidance methods for RL stages (``algo.guidance: {name, params}``): the registry and each
method's settings, checked when the config loads. ``rlft.guidance`` builds the batch builders.

* ``relift`` (ReLIFT, Ma et al. 2025, "Learning What Reinforcement Learning Can't"): prompts no
  sample of the group solved go into a buffer; once it holds ``batch_size`` of them, one SFT step
  on their demonstrations runs between RL steps.
* ``mixed`` (LUFFY, Yan et al. 2025, "Learning to Reason under Off-Policy Guidance"): each group
  holds ``demos_per_group`` demonstrations in place of as many samples; they take part in the
  group's advantage, and their tokens are trained through the shaped weight ``shaped_demo_loss``
  instead of the clipped on-policy ratio (optionally plus an SFT term, ``sft_coef``: SRFT's
  single-stage SFT + RL).
* ``prefix`` (Prefix-RFT, Huang et al. 2025, "Blending Supervised and Reinforcement Fine-Tuning
  with Prefix Sampling"): for a share of prompts the policy continues a prefix of the
  demonstration; the prefix is off-policy (masked, or trained by imitation), the continuation
  on-policy; share and prefix length anneal towards 0 over the stage.

Policy shaping: a demonstration token the policy gives probability 0.5, advantage 1, gamma 0.1:
``f(p) = 0.5 / 0.6``, and the gradient through ``log p`` is ``-A * gamma * p / (p + gamma)**2``.

>>> import math, torch
>>> lp = torch.tensor([[math.log(0.5)]], requires_grad=True)
>>> loss = shaped_demo_loss(lp, torch.ones(1, 1), gamma=0.1)
>>> loss.backward()
>>> round(loss.item(), 4), round(lp.grad.item(), 4)
(-0.8333, -0.1389)

>>> GUIDANCE.get("relift")(batch_size=16)
ReLIFT(batch_size=16, solved_at=1.0, objective='nll', objective_params={})
>>> GUIDANCE.get("relift")(objective="dtf")
Traceback (most recent call last):
...
rlft.algorithms.registry.RegistryError: unknown SFT objective 'dtf' (did you mean 'dft'?); valid names: asft, dft, nll
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Callable

import math
from typing import Literal

from annotated_types import Ge, Gt, Le
from torch import Tensor

from rlft.algorithms.registry import Registry
from rlft.algorithms.sft_losses import SFT_LOSSES

GUIDANCE: Registry[Callable[..., Any]] = Registry("guidance")
"""Guidance methods by name; each returns its settings (a frozen dataclass)."""


@dataclass(frozen=True)
class ReLIFT:
    batch_size: int
    solved_at: float
    objective: str
    objective_params: dict[str, Any] = field(default_factory=dict)


@GUIDANCE.register("relift", needs_demonstrations=True)
def relift(*, batch_size: Annotated[int, Ge(1)] = 32, solved_at: float = 1.0, objective: str = "nll",
           objective_params: dict[str, Any] | None = None) -> ReLIFT:
    """ReLIFT: an SFT step with the SFT ``objective`` (``nll``, ``dft``, ``asft``) on the
    demonstrations of ``batch_size`` prompts that no sample solved (every total reward below
    ``solved_at``), between RL steps."""
    params = SFT_LOSSES.validate_params(objective, objective_params or {})
    return ReLIFT(batch_size, solved_at, objective, dict(params))


def shaped_demo_loss(logprobs: Tensor, advantages: Tensor, *, gamma: float) -> Tensor:
    """``-A * f(p)`` with ``f(p) = p / (p + gamma)``, ``p = exp(logprobs)``: LUFFY's policy shaping
    for off-policy demonstration tokens. The demonstrator's probability is taken as 1, so the
    importance ratio is ``p`` itself; ``f`` reweights its gradient by ``gamma / (p + gamma)``,
    which boosts the low-probability tokens a plain ratio would hardly move, and nothing is
    clipped. [B, T]"""
    p = logprobs.exp()
    return -advantages * p / (p + gamma)


@dataclass(frozen=True)
class Mixed:
    demos_per_group: int
    gamma: float
    sft_coef: float


@GUIDANCE.register("mixed", needs_demonstrations=True, with_critic=False, with_pipeline=False)
def mixed(*, demos_per_group: Annotated[int, Ge(1)] = 1, gamma: Annotated[float, Gt(0)] = 0.1,
          sft_coef: Annotated[float, Ge(0)] = 0.0) -> Mixed:
    """Mixed-policy groups (LUFFY): ``demos_per_group`` demonstrations replace as many samples of
    each group; their tokens are trained through the shaped weight with ``gamma``, plus
    ``sft_coef`` times their NLL (0: none)."""
    return Mixed(demos_per_group, gamma, sft_coef)


@dataclass(frozen=True)
class Prefix:
    share: float
    min_fraction: float
    max_fraction: float
    anneal: str
    prefix_tokens: str
    imitation_coef: float

    def at(self, progress: float) -> tuple[float, float, float]:
        """``(share, min_fraction, max_fraction)`` at ``progress`` (0 to 1) through the stage: each
        scaled by the annealing factor (cosine: ``(1 + cos(pi * t)) / 2``; linear: ``1 - t``; none: 1).

        >>> Prefix(0.5, 0.2, 0.8, "cosine", "masked", 1.0).at(0.5)
        (0.25, 0.1, 0.4)
        """
        t = min(max(progress, 0.0), 1.0)
        factor = {"cosine": 0.5 * (1 + math.cos(math.pi * t)), "linear": 1 - t, "none": 1.0}[self.anneal]
        return tuple(round(x * factor, 12) for x in (self.share, self.min_fraction, self.max_fraction))  # type: ignore[return-value]


@GUIDANCE.register("prefix", needs_demonstrations=True, with_critic=False, with_pipeline=False)
def prefix(*, share: Annotated[float, Ge(0), Le(1)] = 0.5, min_fraction: Annotated[float, Ge(0), Le(1)] = 0.2,
           max_fraction: Annotated[float, Ge(0), Le(1)] = 0.8, anneal: Literal["cosine", "linear", "none"] = "cosine",
           prefix_tokens: Literal["masked", "imitation"] = "masked",
           imitation_coef: Annotated[float, Ge(0)] = 1.0) -> Prefix:
    """Prefix sampling (Prefix-RFT): for a ``share`` of the step's prompts each sample continues a
    prefix of the prompt's demonstration, ``min_fraction`` to ``max_fraction`` of its tokens (drawn
    per sample); share and fractions anneal over the stage (``anneal``). Prefix tokens are
    ``masked`` out of the loss, or trained by ``imitation`` (``imitation_coef`` times their NLL); the
    continuation by its RL advantage."""
    if min_fraction > max_fraction:
        raise ValueError(f"prefix: min_fraction ({min_fraction}) must be <= max_fraction ({max_fraction})")
    return Prefix(share, min_fraction, max_fraction, anneal, prefix_tokens, imitation_coef)


def guidance_settings(choice: Any) -> Any:
    """The settings of a ``{name, params}`` guidance choice (``algo.guidance``); None for None.

    >>> guidance_settings(None), type(guidance_settings(type("C", (), {"name": "mixed", "params": {}}))).__name__
    (None, 'Mixed')
    """
    return None if choice is None else GUIDANCE.get(choice.name)(**choice.params)


__all__ = ["GUIDANCE", "Mixed", "Prefix", "ReLIFT", "guidance_settings", "mixed", "prefix", "relift",
           "shaped_demo_loss"]
