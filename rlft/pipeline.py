"""The asynchronous pipeline's bookkeeping: which upcoming steps are being generated, what has come
back scored, and which groups are too stale to train on. Pure Python; the Ray side that streams
groups out of the engines and into the reward workers is ``actors.stream.StreamingRollouts``.

With ``rollout.max_staleness = k > 0`` the driver keeps the batches of steps ``t .. t + k`` in
flight while the learner trains on step ``t``. Each upcoming step is a ``Ticket``: its prompts are
drawn from the curriculum when the ticket is submitted (``k`` steps early), the engines stream each
prompt's group back as soon as its completions finish, the reward workers score it right away, and
the collector hands every scored group to the curriculum (``observe``), with its outcome advantages,
as it arrives. When step ``t`` runs, it waits only for what is still missing of ticket ``t``.
``PipelinedCollector`` is the step's ``rlft.collect.Collector`` over this bookkeeping.

Why lag stays within ``k``: the ticket of step ``s`` is submitted at the start of step ``s - k``,
after the previous weight push finished, so its groups are sampled by version ``>= s - k`` while
the learner trains step ``s`` at version ``s``. ``split_stale`` still checks it (an engine restarted
mid-run serves older weights until it is given the current ones), and stale groups are dropped and
counted, never trained on.

**Resume.** The tickets in flight are part of the driver's checkpoint as their drawn prompt
indices (plus the groups the curriculum has already observed), not as rollouts: a resumed run
regenerates them, deterministically (the sampling seed is a function of the step), with the restored
policy, so the first ``k`` steps after a resume train on fresher samples than the uninterrupted run
would have. No prompt is drawn twice or skipped, and no group is observed twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from rlft.batching import outcome_advantages
from rlft.collect import Collected, Prompts, StepInfo, check_failures, restart_metrics, sampling_settings
from rlft.config import RunConfig
from rlft.timing import Phases
from rlft.types import Prompt, Rollout, SamplingSettings, Scores

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoredGroup:
    """One prompt's completions, scored: group ``group_id`` of the ticket of step ``step``."""

    step: int
    group_id: int
    rollouts: list[Rollout]
    scores: Scores
    advantages: list[float | None] | None = None  # set once, when the collector receives the group

    @property
    def version(self) -> int:
        """The policy version that sampled the group (the oldest of its rollouts, if they differ)."""
        return min(r.policy_version for r in self.rollouts)


class GroupStream(Protocol):
    """Generates and scores tickets in the background (``actors.stream.StreamingRollouts``)."""

    def submit(self, step: int, prompts: list[Prompt], sampling: SamplingSettings) -> None:
        """Start generating ``prompts`` for ``step`` (group ``i`` is ``prompts[i]``); each group is
        scored as soon as its completions are done."""
        ...

    def poll(self, timeout_s: float | None = None) -> list[ScoredGroup]:
        """The groups scored since the last poll; blocks until there is at least one (or ``timeout_s``)."""
        ...

    def metrics(self) -> dict[str, float]:
        """Counters since the last call (e.g. groups aborted and re-issued)."""
        ...

    def cancel(self) -> None:
        """Drop everything in flight (the run is ending)."""
        ...


@dataclass
class Ticket:
    """An upcoming step: the prompt indices drawn for it and the groups scored so far."""

    step: int
    indices: list[int]
    groups: dict[int, ScoredGroup] = field(default_factory=dict)
    observed: set[int] = field(default_factory=set)  # group ids the curriculum has seen
    submitted: bool = False

    @property
    def complete(self) -> bool:
        return len(self.groups) == len(self.indices)


def lag(version: int, current_version: int) -> int:
    """How many learner updates behind ``current_version`` a sample of ``version`` is.

    >>> lag(3, 5)
    2
    """
    return current_version - version


def split_stale(
    groups: Sequence[ScoredGroup], current_version: int, max_staleness: int
) -> tuple[list[ScoredGroup], list[ScoredGroup]]:
    """``(fresh, stale)``: a group is stale when it was sampled more than ``max_staleness`` versions
    before ``current_version``. Order is kept.

    >>> from rlft.types import Rollout
    >>> g = lambda gid, v: ScoredGroup(0, gid, [Rollout("p", gid, [1], [2], [0.0], "stop", v)], Scores([1.0]))
    >>> fresh, stale = split_stale([g(0, 5), g(1, 4), g(2, 3)], current_version=5, max_staleness=1)
    >>> [x.group_id for x in fresh], [x.group_id for x in stale]
    ([0, 1], [2])
    """
    if max_staleness < 0:
        raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")
    fresh = [g for g in groups if lag(g.version, current_version) <= max_staleness]
    stale = [g for g in groups if lag(g.version, current_version) > max_staleness]
    return fresh, stale


Arrive = Callable[[ScoredGroup, int, bool], ScoredGroup]
"""What a pipeline does with a group it receives: ``(group, prompt_index, first) -> group to keep``."""


class Pipeline:
    """The tickets of the steps in flight, keyed by step (0-based: ticket ``s`` feeds the ``s + 1``-th
    step). ``fill`` submits what is missing, ``wait`` collects one ticket; every group reaches
    ``arrive`` as soon as it has been polled, flagged ``first`` exactly once across a resume."""

    def __init__(self, stream: GroupStream, max_staleness: int):
        if max_staleness < 1:
            raise ValueError(f"the pipeline needs max_staleness >= 1, got {max_staleness}")
        self.stream, self.max_staleness = stream, max_staleness
        self.tickets: dict[int, Ticket] = {}

    def fill(
        self,
        step: int,
        end: int,
        *,
        draw: Callable[[int], list[int]],
        make: Callable[[int, list[int]], tuple[list[Prompt], SamplingSettings]],
        n: int,
    ) -> None:
        """Submit the tickets of steps ``step .. min(step + max_staleness, end - 1)`` that are not
        in flight: ``draw(n)`` picks a new ticket's prompt indices, ``make(step, indices)`` gives its
        prompts and sampling settings. Tickets restored from a checkpoint keep their indices."""
        for s in range(step, min(step + self.max_staleness + 1, end)):
            ticket = self.tickets.get(s)
            if ticket is None:
                ticket = self.tickets[s] = Ticket(s, list(draw(n)))
            if not ticket.submitted:
                prompts, sampling = make(s, ticket.indices)
                self.stream.submit(s, prompts, sampling)
                ticket.submitted = True

    def wait(self, step: int, arrive: Arrive) -> Ticket:
        """Poll until every group of ``step``'s ticket is scored; remove and return the ticket.
        ``arrive`` runs once per group received, for every ticket, as groups arrive."""
        ticket = self.tickets.get(step)
        if ticket is None or not ticket.submitted:
            raise RuntimeError(f"step {step + 1} has no ticket in flight (call fill first)")
        while not ticket.complete:
            for group in self.stream.poll():
                self.add(group, arrive)
        return self.tickets.pop(step)

    def add(self, group: ScoredGroup, arrive: Arrive) -> None:
        """Store what ``arrive(group, prompt_index, first)`` makes of a scored group; ``first`` is
        False when the curriculum observed the group before (a ticket regenerated after a resume).
        Groups of unknown tickets are ignored."""
        ticket = self.tickets.get(group.step)
        if ticket is None or not 0 <= group.group_id < len(ticket.indices):
            return
        first = group.group_id not in ticket.observed
        ticket.observed.add(group.group_id)
        ticket.groups[group.group_id] = arrive(group, ticket.indices[group.group_id], first)

    def state_dict(self) -> list[dict[str, Any]]:
        """The tickets in flight as drawn indices and observed groups (their rollouts are not kept:
        a resume regenerates them)."""
        return [
            {"step": t.step, "indices": list(t.indices), "observed": sorted(t.observed)}
            for t in sorted(self.tickets.values(), key=lambda t: t.step)
        ]

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        """Tickets to regenerate (``fill`` submits them again with their own indices)."""
        self.tickets = {
            int(t["step"]): Ticket(int(t["step"]), list(t["indices"]), observed=set(t["observed"])) for t in state
        }

    def pending_indices(self, step: int) -> list[int] | None:
        """The drawn indices of ``step``'s ticket, when one is waiting (a synchronous run resumed
        from an asynchronous checkpoint trains on them instead of drawing again)."""
        ticket = self.tickets.pop(step, None)
        return None if ticket is None else ticket.indices


class PipelinedCollector:
    """The step's groups from the pipeline (``rollout.max_staleness = k > 0``): top it up to ``k``
    steps ahead (within the stage), wait for what is missing of this step's ticket, drop groups
    sampled more than ``k`` versions ago. Each group's outcome advantages are computed when it
    arrives, and the curriculum observes it then. ``time/generate`` is the wait: the part of
    generation and scoring that training did not hide.

    ``engine`` and ``scorer`` are the roles behind ``stream``; the collector only reads their
    restart counters."""

    def __init__(self, cfg: RunConfig, stream: GroupStream, prompts: Prompts, *, engine: object = None,
                 scorer: object = None, clock: Callable[[], float] = time.perf_counter):
        self.cfg, self.prompts, self.clock, self.roles = cfg, prompts, clock, (engine, scorer)
        self.pipeline = Pipeline(stream, cfg.rollout.max_staleness)

    def collect(self, at: StepInfo) -> Collected:
        cfg, k = self.cfg, self.cfg.rollout.max_staleness
        end = at.step + k + 1 if at.stage_end is None else at.stage_end
        self.pipeline.fill(at.step, end, draw=self.prompts.draw, n=cfg.rollout.prompts_per_step,
                           make=lambda s, idx: (self.prompts.get(idx), sampling_settings(cfg, s)))
        phases = Phases(self.clock, "time/generate", "time/reward")
        with phases("time/generate"):
            ticket = self.pipeline.wait(at.step, self._arrive)
        fresh, stale = split_stale([ticket.groups[g] for g in sorted(ticket.groups)], at.version, k)
        if stale:
            logger.warning("step %d: dropped %d group(s) sampled more than %d version(s) ago",
                           at.step + 1, len(stale), k)
        rollouts = [replace(r, group_id=j) for j, g in enumerate(fresh) for r in g.rollouts]
        scores = Scores.concat([g.scores for g in fresh]) if fresh else Scores([])
        scores = replace(scores, errors=scores.errors[: cfg.reward.log_errors])  # scored group by group
        check_failures(scores, at.step, cfg.reward.max_failure_rate)
        metrics = {"async/stale_dropped": float(len(stale)), "async/steps_in_flight": float(len(self.pipeline.tickets)),
                   **{f"async/{name}": v for name, v in self.pipeline.stream.metrics().items()},
                   **restart_metrics(*self.roles)}
        indices = [ticket.indices[g.group_id] for g in fresh]
        advantages = [a for g in fresh for a in (g.advantages or [])]
        return Collected(indices, rollouts, scores, advantages, metrics, phases.timings,
                         [p.prompt_id for p in self.prompts.get(indices)])

    def _arrive(self, group: ScoredGroup, index: int, first: bool) -> ScoredGroup:
        rollouts = [replace(r, group_id=0) for r in group.rollouts]
        adv = outcome_advantages(rollouts, group.scores.totals, estimator=self.cfg.algo.advantage.name,
                                 params=self.cfg.algo.advantage.params)
        if first:
            self.prompts.observe([index], rollouts, group.scores, adv)
        return replace(group, advantages=adv)

    def state_dict(self) -> list[dict[str, Any]]:
        return self.pipeline.state_dict()

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        self.pipeline.load_state_dict(state)
