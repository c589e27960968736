"""The sampler protocol, the per-prompt result the driver reports, and the ``SAMPLERS`` registry.

Every sampler is a class built the same way, ``Cls(categories, *, seed, **params)``, where
``categories[i]`` is prompt i's category (None when the data has none; an int ``n`` stands for ``n``
prompts without categories). Its hyperparameters are keyword-only and annotated, so a config's
``curriculum: {name, params}`` is checked against the constructor like an algorithm's::

    >>> from rlft.curriculum import SAMPLERS, build_sampler
    >>> SAMPLERS.validate_params("sec", {"temperature": "0.5"})
    {'temperature': 0.5}
    >>> s = build_sampler("sec", ["easy", "easy", "hard", "hard"], seed=0, params={"alpha": 0.5})
    >>> sorted(s.sample(4))            # both categories are equally likely at first
    [0, 1, 2, 3]
    >>> s.observe([GroupResult(2, "hard", rewards=[1.0, 0.0], advantages=[0.7, -0.7])])
    >>> s.metrics()["curriculum/q/hard"]   # Q <- Q + alpha (mean|A| - Q) = 0 + 0.5 * 0.7
    0.35

A step of the driver: ``indices = sampler.sample(n)``; generate and score those prompts; then
``sampler.observe([GroupResult(...) for each prompt])``; log ``sampler.metrics()``; checkpoint
``sampler.state_dict()``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

from rlft.algorithms.registry import Registry, _keyword_only, _params_model


@dataclass(frozen=True)
class GroupResult:
    """What the driver reports about one sampled prompt after a step.

    ``rewards`` leaves out samples whose reward failed; ``advantages`` are in the same order. A group
    whose advantages were all zero (every sample scored the same) is still reported, with its zeros:
    that is the "no signal" evidence curricula learn from.
    """

    index: int  # the prompt's index in the training set (what sample() returned)
    category: str | None  # the prompt's category (informational: samplers use their own index -> category)
    rewards: list[float]  # the group's scored rewards (failed samples already left out)
    advantages: list[float]  # the group's advantages, same order

    def __post_init__(self) -> None:
        if len(self.rewards) != len(self.advantages):
            raise ValueError(f"{len(self.rewards)} rewards but {len(self.advantages)} advantages")

    def successes(self, threshold: float = 0.0) -> int:
        """Samples whose reward is above ``threshold`` (0 suits 0/1 rewards)."""
        return sum(1 for r in self.rewards if r > threshold)

    @property
    def pass_rate(self) -> float:
        """Share of samples with reward > 0; NaN for a group with no scored sample."""
        return self.successes() / len(self.rewards) if self.rewards else float("nan")

    @property
    def zero_variance(self) -> bool:
        """Every sample scored the same (GRPO-style estimators then give no gradient)."""
        return len(set(self.rewards)) <= 1

    @property
    def mean_abs_advantage(self) -> float:
        return sum(abs(a) for a in self.advantages) / len(self.advantages) if self.advantages else 0.0


@runtime_checkable
class Sampler(Protocol):
    """Chooses the prompts of each step and learns from how they went."""

    def sample(self, n: int) -> list[int]:
        """``n`` prompt indices for the next step."""
        ...

    def observe(self, results: Sequence[GroupResult]) -> None:
        """Update from the groups of the step that ``sample`` chose."""
        ...

    def metrics(self) -> dict[str, float]:
        """Scalars to log, named ``curriculum/...`` (probabilities, values, pool sizes)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the exact same sequence (plain values and CPU tensors)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class SamplerRegistry(Registry):
    """A ``Registry`` of sampler classes: the hyperparameters are the constructor's keyword-only
    arguments except ``seed``, which comes from the run config rather than from ``params``."""

    def register(self, name: str, **meta: Any) -> Callable[[Any], Any]:
        def add(cls: Any) -> Any:
            _check_constructor(name, cls)
            Registry.register(self, name, **meta)(cls)
            # Types and ranges live on __init__ (a class's own hints are its attributes').
            self._param_models[name] = _params_model(name, cls.__init__)
            return cls

        return add

    def params(self, name: str) -> dict[str, inspect.Parameter]:
        params = _keyword_only(self.get(name))
        params.pop("seed", None)
        return params


def _check_constructor(name: str, cls: Any) -> None:
    sig = inspect.signature(cls)
    positional = [p for p in sig.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    seed = sig.parameters.get("seed")
    seed_ok = seed is not None and seed.kind is seed.KEYWORD_ONLY and seed.default is not seed.empty
    if len(positional) != 1 or not seed_ok:
        raise TypeError(
            f"curriculum sampler '{name}' must be constructed as Cls(categories, *, seed=0, **params); "
            f"{cls.__qualname__} has {sig}"
        )


SAMPLERS: SamplerRegistry = SamplerRegistry("curriculum sampler")
"""Sampler classes by name: ``uniform``, ``weighted_sources``, ``sec``, ``dump``, ``learnability``,
``difficulty_pools``; users register their own with ``@SAMPLERS.register("name")``."""


def build_sampler(
    name: str, categories: int | Sequence[str | None], *, seed: int, params: dict[str, Any] | None = None
) -> Sampler:
    """The sampler ``name`` over prompts with these ``categories``; ``params`` are checked first
    (unknown names and out-of-range values raise ``RegistryError`` / ``ParamError``)."""
    cls = SAMPLERS.get(name)
    checked = SAMPLERS.validate_params(name, dict(params or {}))
    return cls(categories, seed=seed, **checked)
