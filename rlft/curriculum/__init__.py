"""Prompt samplers (curricula) behind one protocol and one registry.

Each sampler has ``sample(n) -> list[int]``, ``observe(list[GroupResult])``, ``metrics()`` and
``state_dict()`` / ``load_state_dict()``, and is built as ``Cls(categories, *, seed, **params)``;
``build_sampler(name, categories, seed=..., params=...)`` does that from a config, checking ``params``
against the constructor first.

* ``uniform``: without replacement, reshuffled every epoch.
* ``weighted_sources``: a fixed mix over categories (data sources).
* ``sec``: Self-Evolving Curriculum, a TD(0) bandit over categories on mean |advantage|.
* ``dump``: DUMP, UCB over sources on their recent mean |advantage|.
* ``learnability``: prompts weighted by p (1 - p) of their estimated pass rate.
* ``difficulty_pools``: easy / normal / hard pools by pass rate, mixed in fixed ratios.
"""

from rlft.curriculum.base import SAMPLERS, GroupResult, Sampler, SamplerRegistry, build_sampler
from rlft.curriculum.dump import DUMPSampler
from rlft.curriculum.learnability import LearnabilitySampler
from rlft.curriculum.pools import DifficultyPoolsSampler
from rlft.curriculum.sec import SECSampler
from rlft.curriculum.uniform import UniformSampler
from rlft.curriculum.weighted import WeightedSourcesSampler

__all__ = [
    "SAMPLERS",
    "DUMPSampler",
    "DifficultyPoolsSampler",
    "GroupResult",
    "LearnabilitySampler",
    "SECSampler",
    "Sampler",
    "SamplerRegistry",
    "UniformSampler",
    "WeightedSourcesSampler",
    "build_sampler",
]
