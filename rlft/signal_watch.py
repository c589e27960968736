"""A warning when RL steps carry no learning signal.

A group-relative advantage (GRPO and its kin) is 0 for every completion of a group whose rewards
are all equal, so such a *flat* group adds nothing to the policy gradient. When most of a step's
groups are flat, step after step, the policy loss is (close to) exactly 0 and the run does not
learn, silently. ``SignalWatch`` counts the consecutive steps in which at least ``min_fraction`` of
the groups were flat (``signal/flat_steps``) and warns once, after ``patience`` such steps, with the
likely causes and the settings that help.

>>> warnings = []
>>> watch = SignalWatch(patience=2, warn=warnings.append)
>>> watch.observe(1, [[0.0, 0.0], [1.0, 0.0]])          # half the groups flat: not most of them
{'signal/flat_steps': 0.0}
>>> watch.observe(2, [[0.0, 0.0], [0.0, 0.0]]), warnings
({'signal/flat_steps': 1.0}, [])
>>> watch.observe(3, [[0.0, 0.0], [0.0, None]]), len(warnings)
({'signal/flat_steps': 2.0}, 1)
>>> print(warnings[0].splitlines()[0])
steps 2-3: 100% of the groups had rewards all equal (all 0), so their advantages and the policy loss are 0: the run is not learning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rlft.algorithms import ADVANTAGES
from rlft.config import RunConfig
from rlft.batching import has_signal

_HELP = (
    "Likely causes: the task is too hard for the model (every completion fails) or too easy (every one "
    "succeeds), an all-or-nothing reward, or a reward that reads the wrong dataset field "
    "(data.answer_field). Settings that help: algo.dynamic_sampling.enabled=true (draws more prompts "
    "until the groups carry signal), curriculum.name=learnability (prefers prompts solved about half "
    "the time), a higher rollout.temperature or a larger rollout.group_size (more varied completions), "
    "a denser reward (partial credit, or a shaping reward with a small weight), or an SFT warm-up stage."
)


def watches_signal(cfg: RunConfig) -> bool:
    """Whether a flat group means no signal for ``cfg``: critic-free runs with a group-relative
    advantage (with a critic, or a baseline that is not the group's, equal rewards still teach).

    >>> from rlft.config import load_config
    >>> watches_signal(load_config(overrides=["algo.advantage.name=grpo"]))
    True
    """
    return cfg.critic is None and bool(ADVANTAGES.meta(cfg.algo.advantage.name).get("needs_groups"))


class SignalWatch:
    """Counts consecutive steps where at least ``min_fraction`` of the groups are flat, and calls
    ``warn`` once, after ``patience`` of them, with the causes and the remedies. Disabled
    (``enabled=False``), it observes nothing and reports no metric."""

    def __init__(self, *, min_fraction: float = 0.75, patience: int = 5,
                 warn: Callable[[str], object] = print, enabled: bool = True):
        self.min_fraction, self.patience, self.warn, self.enabled = min_fraction, patience, warn, enabled
        self.run = 0  # consecutive flat steps so far
        self.first = 0  # the first step of that run
        self.fractions: list[float] = []  # the flat fraction of each step of the run
        self.values: set[float] = set()  # the rewards the flat groups of the run all had
        self.warned = False

    def observe(self, step: int, groups: Sequence[Sequence[float | None]], expected: int | None = None) -> dict[str, float]:
        """Take one step's group rewards (``expected`` groups asked for: missing ones, e.g. groups
        dynamic sampling did not find, count as flat); returns ``signal/flat_steps``."""
        if not self.enabled:
            return {}
        total = max(len(groups), expected or 0)
        flat = [g for g in groups if not has_signal(g)]
        fraction = (len(flat) + total - len(groups)) / total if total else 1.0
        if fraction >= self.min_fraction:
            if not self.run:
                self.first, self.fractions, self.values = step, [], set()
            self.run += 1
            self.fractions.append(fraction)
            self.values |= {float(r) for g in flat for r in g if r is not None}
        else:
            self.run = 0
        if self.run >= self.patience and not self.warned:
            self.warned = True
            self.warn(self.message(step))
        return {"signal/flat_steps": float(self.run)}

    def message(self, step: int) -> str:
        """The warning for the run of flat steps ending at ``step``."""
        share = sum(self.fractions) / len(self.fractions)
        values = f" (all {next(iter(self.values)):g})" if len(self.values) == 1 else ""
        return (f"steps {self.first}-{step}: {share:.0%} of the groups had rewards all equal{values}, so "
                f"their advantages and the policy loss are 0: the run is not learning.\n{_HELP}")
