"""DUMP: distribution-level curriculum by UCB over data sources.

Wang et al., 2025, "DUMP: Automated Distribution-Level Curriculum Learning for RL-based LLM
Post-training" (arXiv:2504.09710). The learnability of a source d is the expected absolute advantage of
its samples, estimated over a sliding window; a UCB bonus favours sources drawn rarely, and the scores
are normalised into probabilities by a softmax::

    score_d = mean(|A| over the last `window` samples of d) + c * sqrt(2 ln(N + 1) / (n_d + 1))
    P(d)    = softmax(score / temperature)_d

``n_d`` counts the scored samples (completions) of d so far and ``N = sum_d n_d``. The ``+ 1`` terms
(as in the authors' code) keep the bonus finite: a source never drawn gets the largest bonus,
``c * sqrt(2 ln(N + 1))``, so every source is tried early.

>>> s = DUMPSampler(["a", "b"], seed=0)
>>> s.observe([GroupResult(0, "a", rewards=[1.0, 0.0, 1.0, 0.0], advantages=[0.5, -0.5, 1.0, -1.0])])
>>> s.scores().round(4).tolist()   # a: 0.75 + sqrt(2 ln 5 / 5);  b (unseen): 0 + sqrt(2 ln 5)
[1.5524, 1.7941]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from annotated_types import Ge, Gt

from rlft.curriculum._util import CategorySampler, abs_advantages_by, per_category, softmax
from rlft.curriculum.base import SAMPLERS, GroupResult


@SAMPLERS.register("dump")
class DUMPSampler(CategorySampler):
    """Sources (categories) by softmax of UCB scores on their recent mean |advantage|; within a source,
    prompts without replacement.

    Defaults, from the authors' implementation: ``c = 1.0`` (UCB1's exploration weight; the ``2`` under
    the root is UCB1's), ``window = 300`` samples (about 40 groups of 8: recent enough to track a
    policy that improves, long enough to average out a few lucky groups) and ``temperature = 0.1``
    (mean |A| differs by O(0.1-1) between sources under GRPO's std normalisation, so 0.1 makes the
    schedule decisive; the UCB bonus, not the softmax, does the exploring: a source drawn rarely sees
    its bonus grow like sqrt(ln N) until it is drawn again). Scale ``temperature`` with the |A| of
    estimators without std normalisation.
    """

    kind = "dump"

    def __init__(
        self,
        categories: int | Sequence[str | None],
        *,
        seed: int = 0,
        c: Annotated[float, Ge(0)] = 1.0,
        window: Annotated[int, Ge(1)] = 300,
        temperature: Annotated[float, Gt(0)] = 0.1,
    ):
        super().__init__(categories, seed)
        self.c, self.window, self.temperature = c, window, temperature
        self.recent: list[deque[float]] = [deque(maxlen=window) for _ in self.cats.names]
        self.counts = np.zeros(len(self.cats), dtype=np.int64)  # [K] scored samples per source

    def mean_abs_advantage(self) -> np.ndarray:  # [K]
        return np.array([float(np.mean(r)) if r else 0.0 for r in self.recent])

    def scores(self) -> np.ndarray:  # [K]
        total = float(self.counts.sum())
        bonus = self.c * np.sqrt(2.0 * np.log(total + 1.0) / (self.counts + 1.0))
        return self.mean_abs_advantage() + bonus

    def probabilities(self) -> np.ndarray:
        return softmax(self.scores(), self.temperature)

    def observe(self, results: Sequence[GroupResult]) -> None:
        for k, values in abs_advantages_by(results, self.cats.of).items():
            self.recent[k].extend(values)
            self.counts[k] += len(values)

    def metrics(self) -> dict[str, float]:
        names = self.cats.names
        adv = per_category("adv", names, self.mean_abs_advantage())
        return {**super().metrics(), **adv, **per_category("score", names, self.scores())}

    def _state(self) -> dict[str, Any]:
        return {"recent": [list(r) for r in self.recent], "counts": self.counts.tolist()}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.recent = [deque(r, maxlen=self.window) for r in state["recent"]]
        self.counts = np.array(state["counts"], dtype=np.int64)
