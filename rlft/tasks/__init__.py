"""Built-in procedural tasks: data generators with their own exact verifiers.

A task is what ``builtin:<task>[:split]`` data sources read, and the reward used when a run lists
no reward functions. Each one generates its prompts locally (nothing is downloaded) and
deterministically for a seed.

>>> task = get_task("arithmetic")
>>> record = task.generate("eval", 1, seed=0)[0]
>>> record.prompt, task.score(task.reference_completion(record), record.answer)
('57+44=', 1.0)
>>> get_task("sudoku")
Traceback (most recent call last):
...
KeyError: "unknown built-in task 'sudoku'; available tasks: arithmetic, long_addition"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlft.algorithms.registry import Registry, RegistryError
from rlft.data.record import Record
from rlft.tasks import arithmetic, long_addition


@dataclass(frozen=True)
class Task:
    """The functions of one built-in task (see ``rlft.tasks.arithmetic`` for the contract)."""

    name: str
    splits: tuple[str, ...]
    generate: Callable[..., list[Record]]  # (split, n=None, *, seed) -> records
    reference_completion: Callable[[Record], str]  # SFT target text, without EOS
    score: Callable[[str, str], float]  # (completion, answer) -> reward in [0, 1]

    @classmethod
    def of(cls, module: Any) -> Task:
        """The task a module defines by the contract's names (``NAME``, ``SPLITS``, ``generate``, ...)."""
        return cls(module.NAME, tuple(module.SPLITS), module.generate, module.reference_completion, module.score)


TASKS: Registry = Registry("built-in task")
"""Built-in tasks by name: each entry builds its ``Task`` (its keyword-only arguments are the task's
params, checked like every registry's)."""


@TASKS.register(arithmetic.NAME)
def _arithmetic() -> Task:
    return Task.of(arithmetic)


@TASKS.register(long_addition.NAME)
def _long_addition() -> Task:
    return Task.of(long_addition)


def get_task(name: str, **params: Any) -> Task:
    """The built-in task called ``name``, built with ``params``; a ``KeyError`` lists the available ones."""
    try:
        factory = TASKS.get(name)
    except RegistryError:
        available = ", ".join(TASKS.names())
        raise KeyError(f"unknown built-in task '{name}'; available tasks: {available}") from None
    return factory(**TASKS.validate_params(name, params))


__all__ = ["TASKS", "Task", "get_task"]
