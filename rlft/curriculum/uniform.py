"""Uniform sampling without replacement, reshuffled every epoch.

>>> s = UniformSampler(5, seed=0)
>>> first = s.sample(3) + s.sample(2)
>>> sorted(first)        # one epoch visits every index once
[0, 1, 2, 3, 4]
>>> state = s.state_dict(); a = s.sample(4)
>>> s.load_state_dict(state); s.sample(4) == a   # resume continues exactly
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rlft.curriculum.base import SAMPLERS


@SAMPLERS.register("uniform")
class UniformSampler:
    """Indices ``0..size-1`` in a seeded random order per epoch; a draw may span two epochs.

    ``categories`` is the dataset size, or the prompts' categories (ignored: every prompt is equally
    likely), so the driver builds it like any other sampler.
    """

    def __init__(self, categories: int | Sequence[str | None], *, seed: int = 0):
        size = categories if isinstance(categories, int) else len(categories)
        if size < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed = size, seed
        self.epoch, self.position = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=gen).tolist()

    def sample(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            if self.position == self.size:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            take = min(n - len(out), self.size - self.position)
            out.extend(self._order[self.position : self.position + take])
            self.position += take
        return out

    def observe(self, *_: Any, **__: Any) -> None:
        """Uniform sampling learns nothing from results."""

    def metrics(self) -> dict[str, float]:
        return {"curriculum/epoch": float(self.epoch)}

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "size": self.size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["size"] != self.size:
            raise ValueError(f"sampler state is for {state['size']} prompts, the dataset has {self.size}")
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
        self._order = self._permutation(self.epoch)
