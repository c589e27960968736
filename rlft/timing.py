"""One way to time the phases of a step.

>>> ticks = iter([0.0, 1.5, 2.0, 2.25, 3.0, 4.0])
>>> phases = Phases(lambda: next(ticks))
>>> with phases("time/generate"):
...     pass
>>> with phases("time/reward"):
...     pass
>>> with phases("time/generate"):   # a phase run twice adds up
...     pass
>>> phases.timings
{'time/generate': 2.5, 'time/reward': 0.25}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Phases:
    """Seconds spent in each named phase, summed over the times it ran (``timings``)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter, *names: str):
        self.clock = clock
        self.timings: dict[str, float] = dict.fromkeys(names, 0.0)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = self.clock()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + self.clock() - start
