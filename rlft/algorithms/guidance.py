"""Guidance methods for RL stages (``algo.guidance: {name, params}``): the registry and each
method's settings, checked when the config loads. ``rlft.guidance`` builds the batch builders.

* ``relift`` (ReLIFT, Ma et al. 2025, "Learning What Reinforcement Learning Can't"): prompts no
  sample of the group solved go into a buffer; once it holds ``batch_size`` of them, one SFT step
  on their demonstrations runs between RL steps.

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

from annotated_types import Ge

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


__all__ = ["GUIDANCE", "ReLIFT", "relift"]
