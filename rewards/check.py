"""``rlft check``'s reward report: call every configured reward on a few dataset rows, in the same
isolated processes training uses, and say what came back before any training time is spent.

For each reward: how many calls succeeded, the type(s) returned, the value range, the mean time per
call, and the errors by kind with the first message. Rewards that need the judge engine are listed
but not called (the engine starts with the run). ``reference_warning`` says when the reference
answers score 0 on every checked row (a wrong answer field, or a reward that misses correct answers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rlft.config import RewardFunctionConfig
from rewards.loading import load_reward
from rewards.pool import Outcome, RewardPool, Sample


@dataclass
class RewardReport:
    """What one reward did on the check samples."""

    key: str
    calls: int = 0
    ok: int = 0
    returned: set[str] = field(default_factory=set)
    low: float | None = None
    high: float | None = None
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    first_error: str = ""
    skipped: str = ""
    scores: list[float | None] = field(default_factory=list)  # per check sample, None where it failed

    def line(self) -> str:
        if self.skipped:
            return f"reward {self.key}: not called ({self.skipped})"
        text = f"reward {self.key}: {self.ok}/{self.calls} calls ok"
        if self.ok:
            text += (
                f", returned {'/'.join(sorted(self.returned))}, values in [{self.low:g}, {self.high:g}], "
                f"{1000 * self.seconds / self.calls:.2f} ms per call"
            )
        if self.errors:
            kinds = ", ".join(f"{k} x{n}" for k, n in sorted(self.errors.items()))
            text += f"; FAILED: {kinds}; first: {self.first_error}"
        return text


def report(key: str, outcomes: Sequence[Outcome]) -> RewardReport:
    """Summarise one reward's outcomes.

    >>> outcomes = [Outcome(1.0, returned="float", seconds=0.002), Outcome(None, error="timeout", message="slow")]
    >>> report("r", outcomes).line()
    'reward r: 1/2 calls ok, returned float, values in [1, 1], 1.00 ms per call; FAILED: timeout x1; first: slow'
    """
    rep = RewardReport(key, calls=len(outcomes), scores=[o.score for o in outcomes])
    for o in outcomes:
        rep.seconds += o.seconds
        if o.score is None:
            kind = o.error or "unknown"
            rep.errors[kind] = rep.errors.get(kind, 0) + 1
            rep.first_error = rep.first_error or o.message
            continue
        rep.ok += 1
        rep.returned.add(o.returned or "?")
        rep.low = o.score if rep.low is None else min(rep.low, o.score)
        rep.high = o.score if rep.high is None else max(rep.high, o.score)
    return rep


def check_rewards(
    functions: Sequence[RewardFunctionConfig],
    samples: Sequence[Sample],
    *,
    plugins: Sequence[str] = (),
    timeout_s: float = 5.0,
    memory_mb: int = 2048,
    sandbox: dict[str, Any] | None = None,
) -> list[RewardReport]:
    """Call each reward (except judge-served ones) on ``samples`` in one isolated process."""
    reports: dict[str, RewardReport] = {}
    callable_ = []
    for fc in functions:
        loaded = load_reward(fc, default_timeout_s=timeout_s)
        if loaded.spec.needs_judge:
            reports[fc.key] = RewardReport(fc.key, skipped="needs the judge engine, which starts with the run")
        else:
            callable_.append(fc)
    if callable_ and samples:
        with RewardPool(
            callable_, plugins=plugins, processes=1, timeout_s=timeout_s, memory_mb=memory_mb, sandbox=sandbox
        ) as pool:
            for key, outcomes in pool.score(list(samples)).items():
                reports[key] = report(key, outcomes)
    return [reports[fc.key] for fc in functions if fc.key in reports]


def reference_warning(
    functions: Sequence[RewardFunctionConfig], samples: Sequence[Sample], reports: Sequence[RewardReport]
) -> str | None:
    """A warning when every checked row's reference answer scores 0 or less in total (the weighted
    sum of the rewards): most often the answer comes from the wrong field, or the reward does not
    recognise a correct answer. None when some reference scores above 0, when no row has a reference
    answer, or when a reward was not called (a judge-served one may be the one that scores them).

    Reference samples are the rows' non-empty completions (what ``rlft check`` sends: the reference
    completion, or the bare answer, and an empty completion per row), of rows with an ``answer``.

    >>> fc = [RewardFunctionConfig(name="exact_match"), RewardFunctionConfig(name="regex_format", weight=0.5)]
    >>> rows = [Sample("1+1=", "2", {"answer": "2"}), Sample("1+1=", "", {"answer": "2"}),
    ...         Sample("2+2=", "4", {"answer": "4"}), Sample("2+2=", "", {"answer": "4"})]
    >>> reps = [RewardReport("exact_match", scores=[0.0, 0.0, 0.0, 0.0]),
    ...         RewardReport("regex_format", scores=[0.0, 1.0, 0.0, 1.0])]
    >>> print(reference_warning(fc, rows, reps))
    the reference answers score 0 or less on all 2 checked rows (weighted total of exact_match, regex_format: at most 0): check that data.answer_field names the column of correct answers and that the reward recognises a correct answer (the check sends the reference completion, or the bare answer, as the completion)
    >>> reps[0].scores[2] = 1.0
    >>> reference_warning(fc, rows, reps) is None
    True
    """
    if not reports or any(rep.skipped for rep in reports):
        return None
    weights = {fc.key: fc.weight for fc in functions}
    totals = []
    for i, sample in enumerate(samples):
        answer = sample.fields.get("answer")
        if not isinstance(answer, str) or not answer or not sample.completion:
            continue
        scores = [rep.scores[i] if i < len(rep.scores) else None for rep in reports]
        if all(s is not None for s in scores):
            totals.append(sum(weights.get(rep.key, 1.0) * s for rep, s in zip(reports, scores)))
    if not totals or max(totals) > 0:
        return None
    names = ", ".join(rep.key for rep in reports)
    return (
        f"the reference answers score 0 or less on all {len(totals)} checked rows (weighted total of {names}: "
        f"at most {max(totals):g}): check that data.answer_field names the column of correct answers and that "
        "the reward recognises a correct answer (the check sends the reference completion, or the bare answer, as the "
        "completion)"
    )
