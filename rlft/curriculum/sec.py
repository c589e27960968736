"""Self-Evolving Curriculum (SEC): a non-stationary bandit over problem categories.

Chen et al., 2025, "Self-Evolving Curriculum for LLM Reasoning" (arXiv:2505.14970). Each category
(difficulty level, problem type) is an arm. After a step, the reward of every arm that was sampled is
the mean absolute advantage of its samples, a cheap proxy for how much the policy can still learn
there (a category always solved or never solved has |A| = 0 under group-relative advantages). Values
follow TD(0) and categories are drawn by a Boltzmann policy::

    r_c = mean |A_i| over the samples i of category c this step
    Q_c <- Q_c + alpha * (r_c - Q_c)           (only for categories sampled this step)
    P(c) = softmax(Q / temperature)_c

>>> s = SECSampler(["a", "b"], seed=0, alpha=0.5, temperature=0.5)
>>> s.observe([GroupResult(0, "a", rewards=[1.0, 0.0], advantages=[1.0, -1.0])])
>>> s.q.tolist()                                # Q_a = 0 + 0.5 * (1 - 0)
[0.5, 0.0]
>>> s.probabilities().round(4).tolist()         # softmax([0.5, 0] / 0.5) = [e, 1] / (e + 1)
[0.7311, 0.2689]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from annotated_types import Gt, Le

from rlft.curriculum._util import CategorySampler, abs_advantages_by, per_category, softmax
from rlft.curriculum.base import SAMPLERS, GroupResult


@SAMPLERS.register("sec")
class SECSampler(CategorySampler):
    """Categories by softmax(Q / temperature), Q learnt by TD(0) from the mean |advantage| per category;
    within a category, prompts without replacement (each once before any twice).

    Defaults and why:

    * ``alpha = 0.5``: the paper's learning rate in all its experiments. The arm reward is already a
      mean over a category's samples of a step, so it is not very noisy, and a large step size follows
      the non-stationary target (a category's |A| falls as the policy masters it) within a few visits.
    * ``temperature = 0.4``: the paper used 0.2 to 1.0 (0.4 for maths). With GRPO's std normalisation a
      group's mean |A| lies in [0, ~1] (binary rewards: 2 sqrt(p(1-p)), 1.0 at p = 0.5), so a gap of 0.9
      between a learnable and a saturated category gives odds of e^(0.9/0.4) ~ 9.5:1. That focuses
      within tens of steps yet keeps every category drawn often enough (~8% of slots each for 4 arms)
      to notice when its value changes. Estimators without std scaling (``dr_grpo``) give smaller |A|:
      lower the temperature in proportion.
    * ``initial_value = 0.0``: neutral, as in the paper; all categories start equally likely, and a
      category is sampled from the first draw on, so no arm stays unvisited for long. Set it above the
      expected |A| (e.g. 1.0) for optimism when there are many more categories than prompts per step.

    Prompts of categories that no step sampled keep their Q. Prompts without a category share the
    category ``uncategorised``.
    """

    kind = "sec"

    def __init__(
        self,
        categories: int | Sequence[str | None],
        *,
        seed: int = 0,
        alpha: Annotated[float, Gt(0), Le(1)] = 0.5,
        temperature: Annotated[float, Gt(0)] = 0.4,
        initial_value: float = 0.0,
    ):
        super().__init__(categories, seed)
        self.alpha, self.temperature = alpha, temperature
        self.q = np.full(len(self.cats), float(initial_value))  # [K] value per category

    def probabilities(self) -> np.ndarray:
        return softmax(self.q, self.temperature)

    def observe(self, results: Sequence[GroupResult]) -> None:
        for k, values in abs_advantages_by(results, self.cats.of).items():
            self.q[k] += self.alpha * (float(np.mean(values)) - self.q[k])

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), **per_category("q", self.cats.names, self.q)}

    def _state(self) -> dict[str, Any]:
        return {"q": self.q.tolist()}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.q = np.array(state["q"], dtype=np.float64)
