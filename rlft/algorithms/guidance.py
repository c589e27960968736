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

Policy shaping: a demonstration token the policy gives probability 0.5, advantage 1, gamma 0.1:
``f(p) = 0.5 / 0.6``, and the gradient through ``log p`` is ``-A * gamma * p / (p + gamma)**2``.

>>> import math
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

import torch
from annotated_types import Ge, Gt
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


__all__ = ["GUIDANCE", "Mixed", "ReLIFT", "mixed", "relift", "shaped_demo_loss"]
