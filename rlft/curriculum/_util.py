"""Pieces the samplers share: seeded generators per draw, category bookkeeping, cycles through each
category without replacement, per-prompt pass-rate tables, and low-variance allocation of a draw.

Every random choice a sampler makes comes from ``draw_rng(seed, salt, draw)``: a fresh
``numpy.random.Generator`` keyed by the run seed, the sampler's purpose and a counter kept in its
``state_dict``. Resuming from a state therefore continues the exact sequence, with no generator state to
pickle.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from rlft.curriculum.base import GroupResult

UNCATEGORISED = "uncategorised"
"""The category name given to prompts whose category is None (data without a category field)."""

MAX_CATEGORY_METRICS = 32
"""Per-category metrics are logged only up to this many categories (a run with one category per
prompt would otherwise log thousands of series)."""


def draw_rng(seed: int, *key: int) -> np.random.Generator:
    """A generator determined by ``seed`` and ``key`` alone (negative seeds are folded into range)."""
    return np.random.default_rng([seed % 2**64, *key])


def category_labels(categories: int | Sequence[Any]) -> list[str]:
    """Prompt i's category as a string; an int ``n`` means ``n`` prompts without categories."""
    if isinstance(categories, (int, np.integer)):
        labels = [UNCATEGORISED] * int(categories)
    else:
        labels = [UNCATEGORISED if c is None else str(c) for c in categories]
    if not labels:
        raise ValueError("cannot sample from an empty dataset")
    return labels


def allocate(rng: np.random.Generator, probs: np.ndarray, n: int) -> np.ndarray:
    """``n`` category ids drawn with probabilities ``probs``, in random order.

    Systematic sampling: category k gets floor(n p_k) or ceil(n p_k) slots, so E[count_k] = n p_k exactly
    as with i.i.d. draws but with far less batch-to-batch noise (a 50/50 mix of 16 prompts is 8/8).

    >>> np.bincount(allocate(draw_rng(0, 1), np.array([0.5, 0.5]), 16)).tolist()
    [8, 8]
    >>> np.bincount(allocate(draw_rng(0, 2), np.array([0.7, 0.3, 0.0]), 10), minlength=3).tolist()
    [7, 3, 0]
    """
    probs = np.asarray(probs, dtype=np.float64)
    if not probs.max(initial=0.0) > 0:
        raise ValueError("all categories have probability 0")
    cum = np.cumsum(probs / probs.max())  # scaled first: tiny (subnormal) weights keep their ratios
    points = (rng.random() + np.arange(n)) / n * cum[-1]  # all below cum[-1]: zero-mass tails never hit
    ids = np.searchsorted(cum, points, side="right")
    ids = np.minimum(ids, np.flatnonzero(np.diff(cum, prepend=0.0) > 0)[-1])  # guard a rounding at the top
    return rng.permutation(ids)


def softmax(x: np.ndarray, temperature: float) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64) / temperature
    z = np.exp(z - z.max())
    return z / z.sum()


def per_category(prefix: str, names: Sequence[str], values: Iterable[float]) -> dict[str, float]:
    """``{"curriculum/<prefix>/<name>": value}``, or nothing beyond ``MAX_CATEGORY_METRICS`` categories."""
    if len(names) > MAX_CATEGORY_METRICS:
        return {}
    return {f"curriculum/{prefix}/{name}": float(v) for name, v in zip(names, values)}


def entropy(probs: np.ndarray) -> float:
    """Shannon entropy (nats) of a categorical distribution: log K when uniform, 0 when one-hot."""
    p = probs[probs > 0]
    return float(-(p * np.log(p)).sum())


def abs_advantages_by(results: Iterable[GroupResult], of: np.ndarray) -> dict[int, list[float]]:
    """|advantage| of every scored sample this step, grouped by the id ``of[result.index]``
    (non-finite advantages are left out: one bad value must not poison a category's value for good)."""
    out: dict[int, list[float]] = {}
    for r in results:
        check_index(r.index, len(of))
        values = [abs(a) for a in r.advantages if math.isfinite(a)]
        if values:
            out.setdefault(int(of[r.index]), []).extend(values)
    return out


def check_index(index: int, size: int) -> None:
    if not 0 <= index < size:
        raise IndexError(f"observed prompt index {index}, but the sampler holds {size} prompts")


def check_state(state: dict[str, Any], kind: str, size: int) -> None:
    """Refuse a state saved by another kind of sampler or for another dataset size."""
    if state.get("kind", kind) != kind:
        raise ValueError(f"sampler state is from a '{state['kind']}' sampler, this one is '{kind}'")
    if state["size"] != size:
        raise ValueError(f"sampler state is for {state['size']} prompts, the dataset has {size}")


def header_state(sampler: Any) -> dict[str, Any]:
    """What every sampler's state starts with: its kind, dataset size, seed and draw counter."""
    return {"kind": sampler.kind, "size": sampler.size, "seed": sampler.seed, "draws": sampler.draws}


def load_header_state(sampler: Any, state: dict[str, Any]) -> None:
    """Check ``state`` fits ``sampler`` (``check_state``), then restore its seed and draw counter."""
    check_state(state, sampler.kind, sampler.size)
    sampler.seed, sampler.draws = state["seed"], state["draws"]


def to_tensor(a: np.ndarray) -> torch.Tensor:
    """Arrays in a state dict travel as tensors: ``torch.load(weights_only=True)`` accepts them."""
    return torch.from_numpy(np.array(a, copy=True))


def from_tensor(t: Any, dtype: Any) -> np.ndarray:
    return np.array(t.numpy() if isinstance(t, torch.Tensor) else t, dtype=dtype, copy=True)


class Categories:
    """Category ids per prompt and a cycle through each category without replacement.

    Each category is walked in a seeded random order; when one is used up its next epoch starts in a
    fresh order. So within a category every prompt is drawn once before any is drawn twice, whatever
    the other categories do; and a draw that runs into the next epoch does not repeat a prompt it
    already took (those are moved to the end of the new epoch), unless it asks for more prompts than
    the category holds.
    """

    def __init__(self, categories: int | Sequence[Any], seed: int):
        labels = category_labels(categories)
        self.names = sorted(set(labels))
        ids = {name: k for k, name in enumerate(self.names)}
        self.of = np.array([ids[label] for label in labels], dtype=np.int64)  # [N] category id per prompt
        self.size, self.seed = len(labels), seed
        order = np.argsort(self.of, kind="stable")
        self.members = np.split(order, np.cumsum(np.bincount(self.of, minlength=len(self.names)))[:-1])
        self.epoch = [0] * len(self.names)
        self.position = [0] * len(self.names)
        self.deferred: list[list[int]] = [[] for _ in self.names]  # moved to the end of the current epoch
        self._orders: dict[int, tuple[int, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.names)

    def _order(self, k: int) -> np.ndarray:
        cached = self._orders.get(k)
        if cached is None or cached[0] != self.epoch[k]:
            perm = draw_rng(self.seed, 1, k, self.epoch[k]).permutation(self.members[k])
            if self.deferred[k]:
                later = np.isin(perm, self.deferred[k])
                perm = np.concatenate([perm[~later], perm[later]])
            cached = self._orders[k] = (self.epoch[k], perm)
        return cached[1]

    def take(self, k: int, count: int) -> list[int]:
        """The next ``count`` prompts of category ``k`` (spans epochs when ``count`` exceeds what is left)."""
        out: list[int] = []
        size = len(self.members[k])
        while len(out) < count:
            if self.position[k] == size:
                taken = sorted(set(out))
                self.epoch[k], self.position[k] = self.epoch[k] + 1, 0
                self.deferred[k] = taken if len(taken) < size else []
            take = min(count - len(out), size - self.position[k])
            out.extend(self._order(k)[self.position[k] : self.position[k] + take].tolist())
            self.position[k] += take
        return out

    def draw(self, rng: np.random.Generator, probs: np.ndarray, n: int) -> list[int]:
        """``n`` prompts: a category per slot by ``allocate``, then that category's next prompt."""
        slots = allocate(rng, probs, n)
        out = np.empty(n, dtype=np.int64)
        for k in np.unique(slots):
            where = np.flatnonzero(slots == k)
            out[where] = self.take(int(k), len(where))
        return out.tolist()

    def state_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "epoch": list(self.epoch),
            "position": list(self.position),
            "deferred": [list(d) for d in self.deferred],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["names"]) != self.names:
            raise ValueError(f"sampler state has categories {state['names']}, the dataset has {self.names}")
        self.epoch, self.position = list(state["epoch"]), list(state["position"])
        self.deferred = [list(d) for d in state["deferred"]]
        self._orders.clear()


class PassRates:
    """Per-prompt solve counts with a Beta prior and forgetting per visit.

    After a visit with s solved samples out of t: ``solved <- decay*solved + s``,
    ``failed <- decay*failed + (t - s)``; the estimate is the posterior mean
    ``p = (prior + solved) / (2 prior + solved + failed)`` (0.5 for a prompt never seen).
    ``streak`` counts the visits in a row on which every sample was solved (for retirement).
    """

    def __init__(self, size: int, *, prior: float, decay: float, success_threshold: float):
        self.prior, self.decay, self.threshold = prior, decay, success_threshold
        self.solved = np.zeros(size)
        self.failed = np.zeros(size)
        self.visits = np.zeros(size, dtype=np.int64)
        self.streak = np.zeros(size, dtype=np.int64)

    def update(self, results: Iterable[GroupResult]) -> list[int]:
        """Fold in a step's groups; returns the indices that changed (groups with no sample are skipped)."""
        touched = []
        for r in results:
            check_index(r.index, len(self.solved))
            total = len(r.rewards)
            if total == 0:
                continue
            s = r.successes(self.threshold)
            i = r.index
            self.solved[i] = self.decay * self.solved[i] + s
            self.failed[i] = self.decay * self.failed[i] + (total - s)
            self.visits[i] += 1
            self.streak[i] = self.streak[i] + 1 if s == total else 0
            touched.append(i)
        return touched

    def estimate(self) -> np.ndarray:  # [N]
        return (self.prior + self.solved) / (2 * self.prior + self.solved + self.failed)

    def state_dict(self) -> dict[str, Any]:
        return {
            "solved": to_tensor(self.solved),
            "failed": to_tensor(self.failed),
            "visits": to_tensor(self.visits),
            "streak": to_tensor(self.streak),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.solved = from_tensor(state["solved"], np.float64)
        self.failed = from_tensor(state["failed"], np.float64)
        self.visits = from_tensor(state["visits"], np.int64)
        self.streak = from_tensor(state["streak"], np.int64)


class CategorySampler:
    """Base of the samplers that choose a category per slot, then the next prompt of that category.

    Subclasses give ``probabilities()`` over ``self.cats.names`` and learn in ``observe``; their own
    state goes through ``_state`` / ``_load_state``.
    """

    kind = ""

    def __init__(self, categories: int | Sequence[Any], seed: int):
        self.seed = seed
        self.cats = Categories(categories, seed)
        self.size = self.cats.size
        self.draws = 0  # sample() calls so far: keys the generator of the next one

    def probabilities(self) -> np.ndarray:  # [K] over self.cats.names
        raise NotImplementedError

    def sample(self, n: int) -> list[int]:
        if n < 0:
            raise ValueError(f"cannot sample {n} prompts")
        rng = draw_rng(self.seed, 0, self.draws)
        self.draws += 1
        return self.cats.draw(rng, self.probabilities(), n)

    def observe(self, results: Sequence[GroupResult]) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        probs = self.probabilities()
        return {"curriculum/entropy": entropy(probs), **per_category("p", self.cats.names, probs)}

    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {**header_state(self), "categories": self.cats.state_dict(), **self._state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_header_state(self, state)
        self.cats.load_state_dict(state["categories"])
        self.cats.seed = self.seed
        self._load_state(state)
