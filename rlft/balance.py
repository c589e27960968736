"""Spreading work across workers.

>>> assign_balanced([5, 1, 1, 1, 4], 2)
[[0, 2], [4, 1, 3]]
"""

from __future__ import annotations

import heapq
from typing import Sequence


def assign_balanced(costs: Sequence[float], n_bins: int) -> list[list[int]]:
    """Assign item indices to ``n_bins`` so the largest bin's total cost is small.

    Longest-processing-time-first greedy (each item, costliest first, goes to the currently
    lightest bin; ties to the lower bin): within 4/3 of the optimum. Within a bin, indices keep
    the order in which they were assigned. Deterministic.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    bins: list[list[int]] = [[] for _ in range(n_bins)]
    heap = [(0.0, b) for b in range(n_bins)]  # (load, bin)
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    for i in order:
        load, b = heapq.heappop(heap)
        bins[b].append(i)
        heapq.heappush(heap, (load + float(costs[i]), b))
    return bins
