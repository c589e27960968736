"""A fixed mix over categories (data sources), uniform without replacement within each.

>>> s = WeightedSourcesSampler(["gsm8k"] * 4 + ["code"] * 4, seed=0, weights={"gsm8k": 3, "code": 1})
>>> batch = s.sample(8)
>>> sum(i < 4 for i in batch)     # 3:1 of 8 prompts, exactly (systematic allocation)
6
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import numpy as np
from annotated_types import Ge

from rlft.algorithms.registry import did_you_mean
from rlft.curriculum._util import CategorySampler
from rlft.curriculum.base import SAMPLERS, GroupResult


@SAMPLERS.register("weighted_sources")
class WeightedSourcesSampler(CategorySampler):
    """Each slot of a draw picks a category with probability ``weights[c] / sum(weights)``, then that
    category's next prompt (every prompt of a category once before any twice).

    ``weights`` maps category names (the dataset's category field, or the source name) to non-negative
    weights; they need not sum to 1. A category left out of ``weights`` is never drawn; a name that is
    no category of the data is an error (a typo would otherwise silently drop a source). Prompts
    without a category are the category ``uncategorised``. Categories get floor or ceil of their
    expected count per draw (systematic sampling), so small batches still follow the mix.
    """

    kind = "weighted_sources"

    def __init__(
        self,
        categories: int | Sequence[str | None],
        *,
        seed: int = 0,
        weights: dict[str, Annotated[float, Ge(0)]] | None = None,
    ):
        super().__init__(categories, seed)
        names = self.cats.names
        if weights is None:  # an even mix (with data.sources the driver passes their weights)
            weights = {name: 1.0 for name in names}
        for key in weights:
            if key not in names:
                raise ValueError(
                    f"weights name the category '{key}'{did_you_mean(key, names)}, which no prompt has; "
                    f"categories: {', '.join(names)}"
                )
        self.weights = np.array([float(weights.get(name, 0.0)) for name in names])
        if not self.weights.sum() > 0:
            raise ValueError("weights give every category weight 0; nothing could be sampled")

    def probabilities(self) -> np.ndarray:
        return self.weights / self.weights.sum()

    def observe(self, results: Sequence[GroupResult]) -> None:
        """A fixed mix learns nothing from results."""
