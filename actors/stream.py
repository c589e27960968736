"""StreamingRollouts: the Ray side of the asynchronous pipeline (``rollout.max_staleness > 0``).

It implements ``rlft.pipeline.GroupStream`` over a ``RolloutGroup`` and a ``RewardGroup``:

* ``submit(step, prompts, sampling)`` spreads a step's prompts over the engines (balanced by cost,
  as ``RolloutGroup.generate`` does) as streaming calls (``RolloutWorker.generate_stream``): each
  engine yields a prompt's group as soon as its ``n`` completions are done.
* Each group goes to the least busy reward worker the moment it arrives; ``poll`` returns the
  groups whose scores are in, from every step in flight, in the order they finish.
* Weight updates (``rollout.inflight_updates``): ``wait`` needs nothing here, since an engine runs
  one call at a time and a weight load queued behind a streaming call starts when it ends; with
  ``abort``, ``AbortThenPush`` asks the engines to abort their unfinished groups, loads the weights,
  and re-issues those groups (same prompts, same seeds) under the new weights
  (``async/aborted_groups``).

A rollout engine that dies mid-stream is restarted by Ray (``cluster.max_restarts``), given the
last pushed weights (``RolloutGroup.on_restart``) and its unfinished groups re-issued; a reward
worker that dies has its group re-scored once it is back.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayActorError

from actors.group import WorkerDiedError
from actors.rollout import Aborted, RolloutWorker
from actors.runtime import RewardGroup, RolloutGroup, WeightPush, to_sample
from rlft.balance import assign_balanced
from rlft.pipeline import ScoredGroup
from rlft.types import Prompt, Rollout, SamplingSettings
from rewards.compose import combine


@dataclass
class _Call:
    """One streaming generate call: which step's groups it makes, on which engine."""

    step: int
    rank: int
    call_id: int
    prompts: dict[int, Prompt]  # group id -> prompt
    sampling: SamplingSettings
    done: set[int] = field(default_factory=set)  # groups received or aborted

    def missing(self) -> list[int]:
        return [g for g in self.prompts if g not in self.done]


@dataclass
class _Scoring:
    step: int
    group_id: int
    rank: int
    rollouts: list[Rollout]
    samples: list[Any]


class StreamingRollouts:
    """Generates and scores upcoming steps in the background (see the module docstring)."""

    def __init__(self, rollouts: RolloutGroup, rewards: RewardGroup):
        self.rollouts, self.rewards = rollouts, rewards
        self._call_ids = itertools.count(1)
        self._streams: dict[Any, _Call] = {}  # ObjectRefGenerator -> its call
        self._scoring: dict[Any, _Scoring] = {}  # ObjectRef of RewardWorker.score -> its group
        self._reward_load = [0] * rewards.workers.n
        self._ready: list[ScoredGroup] = []
        self._aborted: list[tuple[int, int, Prompt, SamplingSettings]] = []  # to re-issue
        self._counts: Counter[str] = Counter()

    # -------------------------------------------------------------------- GroupStream

    def submit(self, step: int, prompts: list[Prompt], sampling: SamplingSettings) -> None:
        self._issue(step, list(range(len(prompts))), prompts, sampling)

    def poll(self, timeout_s: float | None = None) -> list[ScoredGroup]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._ready:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._pump(left) and deadline is not None and time.monotonic() >= deadline:
                break
        out, self._ready = self._ready, []
        return out

    def metrics(self) -> dict[str, float]:
        out = {"aborted_groups": 0.0} if self.rollouts.abortable else {}
        out.update({k: float(v) for k, v in self._counts.items()})
        self._counts.clear()
        return out

    def cancel(self) -> None:
        """Abort what the engines are generating (when they can abort) and forget everything."""
        if self._streams and self.rollouts.abortable:
            self.rollouts.request_abort(max(c.call_id for c in self._streams.values()))
        self._streams.clear()
        self._scoring.clear()
        self._ready.clear()
        self._aborted.clear()

    # -------------------------------------------------------------------- abort mode

    def abort_in_flight(self) -> int:
        """Ask the engines to stop every unfinished group of the calls issued so far; the call
        id up to which they abort (0: nothing was running)."""
        if not self._streams:
            return 0
        upto = max(c.call_id for c in self._streams.values())
        self.rollouts.request_abort(upto)
        return upto

    def reissue(self, upto: int) -> None:
        """After the weights are loaded: wait for the aborted calls to end (their finished groups
        go to the reward workers as usual) and issue their unfinished groups again."""
        while any(c.call_id <= upto for c in self._streams.values()):
            self._pump(None)
        aborted, self._aborted = self._aborted, []
        self._counts["aborted_groups"] += len(aborted)
        by_call: dict[tuple[int, SamplingSettings], list[tuple[int, Prompt]]] = {}
        for step, gid, prompt, sampling in aborted:
            by_call.setdefault((step, sampling), []).append((gid, prompt))
        for (step, sampling), groups in by_call.items():
            self._issue(step, [g for g, _ in groups], [p for _, p in groups], sampling)

    # -------------------------------------------------------------------- internals

    def _issue(self, step: int, group_ids: list[int], prompts: list[Prompt], sampling: SamplingSettings) -> None:
        costs = [len(p.token_ids) + sampling.max_new_tokens for p in prompts]
        for rank, chosen in enumerate(assign_balanced(costs, self.rollouts.workers.n)):
            if not chosen:
                continue
            call_id = next(self._call_ids)
            gids = [group_ids[i] for i in chosen]
            gen = self.rollouts.workers.stream(
                rank, RolloutWorker.generate_stream, [prompts[i] for i in chosen], sampling, gids, call_id
            )
            self._streams[gen] = _Call(step, rank, call_id, {g: prompts[i] for g, i in zip(gids, chosen)}, sampling)

    def _pump(self, timeout_s: float | None) -> bool:
        """Handle everything that is ready (waiting up to ``timeout_s`` for the first); False on timeout."""
        waitables = [*self._streams, *self._scoring]
        if not waitables:
            raise RuntimeError("the pipeline polled with nothing in flight")
        ready, _ = ray.wait(waitables, num_returns=1, timeout=timeout_s)
        if not ready:
            return False
        more, _ = ray.wait(waitables, num_returns=len(waitables), timeout=0)
        for item in {id(x): x for x in [*ready, *more]}.values():
            if item in self._streams:
                self._advance(item)
            else:
                self._finish_scoring(item)
        return True

    def _advance(self, gen: Any) -> None:
        """Take the next item of a streaming call: a finished group (sent to be scored), the
        ``Aborted`` list, or the end of the call."""
        call = self._streams[gen]
        try:
            ref = next(gen)
        except StopIteration:
            del self._streams[gen]
            if call.missing():  # a call only ends early through Aborted
                raise RuntimeError(f"rollout engine {call.rank} ended a call without groups {call.missing()}")
            return
        try:
            item = ray.get(ref)
        except RayActorError as err:
            del self._streams[gen]
            self._restart_rollout(call, err)
            return
        if isinstance(item, Aborted):
            for gid in item.group_ids:
                self._aborted.append((call.step, gid, call.prompts[gid], call.sampling))
            call.done.update(item.group_ids)
            return
        gid = item[0].group_id
        call.done.add(gid)
        self._score(call.step, gid, item)

    def _restart_rollout(self, call: _Call, err: BaseException) -> None:
        """The engine of ``call`` died: once Ray has restarted it (with the current weights),
        issue the groups it had not returned again; dead for good raises ``WorkerDiedError``."""
        if call.rank not in self.rollouts.workers.recover(self.rollouts.on_restart):
            raise WorkerDiedError("rollout", call.rank, err) from err
        missing = call.missing()
        self._issue(call.step, missing, [call.prompts[g] for g in missing], call.sampling)

    def _score(self, step: int, group_id: int, rollouts: list[Rollout], rank: int | None = None) -> None:
        samples = [to_sample(r, self.rewards.max_new_tokens) for r in rollouts]
        if rank is None:
            rank = min(range(len(self._reward_load)), key=self._reward_load.__getitem__)
        self._reward_load[rank] += 1
        ref = self.rewards.workers.actors[rank].score.remote(samples)
        self._scoring[ref] = _Scoring(step, group_id, rank, rollouts, samples)

    def _finish_scoring(self, ref: Any) -> None:
        job = self._scoring.pop(ref)
        self._reward_load[job.rank] -= 1
        try:
            result = ray.get(ref)
        except RayActorError as err:
            if job.rank not in self.rewards.workers.recover():
                raise WorkerDiedError("reward", job.rank, err) from err
            self._score(job.step, job.group_id, job.rollouts, rank=job.rank)
            return
        merged = {k: result[k] for k in self.rewards.keys}
        scores = combine(merged, self.rewards.weights, samples=job.samples, max_errors=self.rewards.log_errors)
        self._ready.append(ScoredGroup(job.step, job.group_id, job.rollouts, scores))


class AbortThenPush:
    """The driver's ``WeightSync`` with ``rollout.inflight_updates: abort``: engines abort their
    unfinished groups, take the new weights, and the aborted groups are generated again under them."""

    def __init__(self, push: WeightPush, stream: StreamingRollouts):
        self.inner, self.stream = push, stream

    def push(self, version: int) -> dict[str, float]:
        upto = self.stream.abort_in_flight()
        metrics = self.inner.push(version)
        if upto:
            self.stream.reissue(upto)
        return metrics
