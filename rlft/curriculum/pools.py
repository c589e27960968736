"""Difficulty pools: easy / normal / hard by observed pass rate, sampled with fixed ratios.

Each prompt sits in one pool. After every visit its pass-rate estimate (a Beta posterior, as in
``learnability``) decides where it goes::

    p_i > easy_above  -> easy        p_i < hard_below -> hard        otherwise -> normal

and each draw fills ``mix`` shares of the batch from the pools (an empty pool's share is spread over
the others in proportion to theirs). Within a pool prompts are taken least recently drawn first, ties
broken at random: a fixed pool is walked without replacement, and a prompt that moves keeps its turn.

>>> s = DifficultyPoolsSampler(["normal", "normal", "hard"], seed=0)
>>> s.pool_of(2), s.pool_of(0)           # a category naming a pool places its prompts there first
('hard', 'normal')
>>> s.observe([GroupResult(0, "normal", rewards=[1.0] * 8, advantages=[0.0] * 8)])
>>> s.pool_of(0)                          # p = (1 + 8) / (2 + 8) = 0.9 > 0.8
'easy'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from annotated_types import Ge, Gt, Le

from rlft.curriculum._util import (
    PassRates,
    allocate,
    category_labels,
    draw_rng,
    from_tensor,
    header_state,
    load_header_state,
    to_tensor,
)
from rlft.curriculum.base import SAMPLERS, GroupResult

POOLS = ("easy", "normal", "hard")
EASY, NORMAL, HARD = range(3)
DEFAULT_MIX = {"easy": 0.1, "normal": 0.8, "hard": 0.1}

Probability = Annotated[float, Ge(0), Le(1)]


@SAMPLERS.register("difficulty_pools")
class DifficultyPoolsSampler:
    """Fixed shares of each batch from the easy, normal and hard pools; prompts move between pools as
    their estimated pass rate crosses ``easy_above`` / ``hard_below``.

    Defaults and why:

    * ``easy_above = 0.8``, ``hard_below = 0.2``: with 8 samples a group solved 8/8 (p = 0.9 under the
      prior) is easy and 0/8 (p = 0.1) is hard after a single visit, while 7/8 or 1/8 stay normal.
    * ``mix = {"easy": 0.1, "normal": 0.8, "hard": 0.1}``: most of the compute on prompts that give
      signal, a little on easy ones (against forgetting) and on hard ones (they may become solvable;
      their estimate only changes when they are drawn).
    * ``prior = 1.0`` (uniform Beta), ``decay = 0.5`` per visit: pool membership should follow the
      current policy, so the estimate weighs the last visit as much as all earlier ones together.
    * ``retire_after = None``; an integer k takes out for good the prompts solved by every sample on
      each of their last k visits. ``success_threshold = 0.0``: a sample is solved when its reward is
      above it.

    A prompt starts in ``normal``, or in the pool its category names (``easy``/``normal``/``hard``, e.g.
    from a difficulty field). If every pool with a positive share is empty, the non-empty pools share
    equally; if every prompt is retired, draws are uniform over all of them.
    """

    kind = "difficulty_pools"

    def __init__(
        self,
        categories: int | Sequence[str | None],
        *,
        seed: int = 0,
        easy_above: Probability = 0.8,
        hard_below: Probability = 0.2,
        mix: dict[Literal["easy", "normal", "hard"], Annotated[float, Ge(0)]] | None = None,
        prior: Annotated[float, Gt(0)] = 1.0,
        decay: Annotated[float, Gt(0), Le(1)] = 0.5,
        retire_after: Annotated[int, Ge(1)] | None = None,
        success_threshold: float = 0.0,
    ):
        if not hard_below <= easy_above:
            raise ValueError(f"hard_below ({hard_below}) must not exceed easy_above ({easy_above})")
        mix = DEFAULT_MIX if mix is None else mix
        unknown = set(mix) - set(POOLS)
        if unknown:
            raise ValueError(f"mix names unknown pools {sorted(unknown)}; pools: {', '.join(POOLS)}")
        self.mix = np.array([float(mix.get(name, 0.0)) for name in POOLS])
        if not self.mix.sum() > 0:
            raise ValueError("mix gives every pool share 0; nothing could be sampled")
        labels = category_labels(categories)
        self.size, self.seed, self.draws = len(labels), seed, 0
        self.easy_above, self.hard_below, self.retire_after = easy_above, hard_below, retire_after
        self.rates = PassRates(self.size, prior=prior, decay=decay, success_threshold=success_threshold)
        start = {"easy": EASY, "hard": HARD}
        self.pool = np.array([start.get(label, NORMAL) for label in labels], dtype=np.int64)  # [N]
        self.last = np.full(self.size, -1, dtype=np.int64)  # [N] draw that last took the prompt

    def pool_of(self, index: int) -> str:
        return POOLS[self.pool[index]]

    def retired(self) -> np.ndarray:  # [N] bool
        if self.retire_after is None:
            return np.zeros(self.size, dtype=bool)
        return self.rates.streak >= self.retire_after

    def _active(self) -> np.ndarray:
        active = ~self.retired()
        return active if active.any() else np.ones(self.size, dtype=bool)

    def shares(self, active: np.ndarray | None = None) -> np.ndarray:  # [3] effective share per pool
        active = self._active() if active is None else active
        sizes = np.bincount(self.pool[active], minlength=len(POOLS))
        share = self.mix * (sizes > 0)
        if not share.sum() > 0:
            share = (sizes > 0).astype(np.float64)
        return share / share.sum()

    def sample(self, n: int) -> list[int]:
        if n < 0:
            raise ValueError(f"cannot sample {n} prompts")
        rng = draw_rng(self.seed, 3, self.draws)
        stamp, self.draws = self.draws, self.draws + 1
        active = self._active()
        slots = allocate(rng, self.shares(active), n)
        out = np.empty(n, dtype=np.int64)
        for k in np.unique(slots):
            where = np.flatnonzero(slots == k)
            members = np.flatnonzero(active & (self.pool == k))
            out[where] = self._take(rng, members, len(where), stamp)
        return out.tolist()

    def _take(self, rng: np.random.Generator, members: np.ndarray, count: int, stamp: int) -> list[int]:
        """The ``count`` least recently drawn members, ties at random."""
        chosen: list[int] = []
        while len(chosen) < count:
            m = min(count - len(chosen), members.size)
            keys = self.last[members] + rng.random(members.size)
            top = np.argpartition(keys, m - 1)[:m]
            picked = members[top[np.argsort(keys[top], kind="stable")]]
            self.last[picked] = stamp
            chosen.extend(picked.tolist())
        return chosen

    def observe(self, results: Sequence[GroupResult]) -> None:
        touched = np.array(self.rates.update(results), dtype=np.int64)
        if touched.size:
            p = self.rates.estimate()[touched]
            pool = np.where(p > self.easy_above, EASY, np.where(p < self.hard_below, HARD, NORMAL))
            self.pool[touched] = pool

    def metrics(self) -> dict[str, float]:
        active = self._active()
        sizes = np.bincount(self.pool[active], minlength=len(POOLS))
        out = {f"curriculum/pool/{name}": float(s) for name, s in zip(POOLS, sizes)}
        out.update({f"curriculum/share/{name}": float(s) for name, s in zip(POOLS, self.shares(active))})
        out["curriculum/retired"] = float(self.retired().sum())
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            **header_state(self),
            "pool": to_tensor(self.pool),
            "last": to_tensor(self.last),
            **self.rates.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_header_state(self, state)
        self.pool = from_tensor(state["pool"], np.int64)
        self.last = from_tensor(state["last"], np.int64)
        self.rates.load_state_dict(state)
