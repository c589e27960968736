"""Prompt samplers. Each has ``sample(n)``, ``observe(...)``, ``state_dict()``/``load_state_dict()``."""

from rlft.curriculum.uniform import UniformSampler

__all__ = ["UniformSampler"]
