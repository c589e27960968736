"""Model-based rewards: ``llm_judge`` (pointwise scores or pairwise preferences) and ``rubric``.

Both are batched rewards that declare a ``judge`` keyword, so the runtime hands them a judge client
(see ``rewards.api``): an object with one method, ::

    judge.generate(prompts, *, max_new_tokens=None, choices=None, regex=None) -> list[str]

returning one reply per prompt. In a run it forwards to the judge engine actor
(``actors.judge.JudgeWorker``, one vLLM engine); in tests any object with that method does. This
module stays pure Python: it formats prompts, asks the judge once per batch, and parses verdicts.

**Constrained verdicts.** Every question goes out with ``choices`` (the integer scores, ``A``/``B``,
``yes``/``no``) or, for non-integer score ranges, a number ``regex``. The judge engine turns them
into vLLM structured outputs, so a served judge can only answer with a verdict that parses. Replies
are still parsed leniently (the first number, the first standalone ``A``/``B``, the first
``yes``/``no``), so a client that ignores the constraints works too.

**Failures.** One call scores a whole batch, so a sample whose verdict does not parse (or whose
rubric or reference is unusable) gets ``float("nan")``: the runtime marks a non-finite score failed,
leaves that sample out of the loss and counts it, while the batch's other samples keep their
scores. Configuration errors (a template naming a field the samples lack, ``max_score <= min_score``)
raise ``RewardError`` at the first call and fail the batch with a message naming the culprit.

**Templates** are ``str.format`` templates. They may name ``{prompt}``, ``{completion}`` and any
field of the samples (dataset columns and the runtime's ``prompt_id``, ``num_tokens``,
``finish_reason``, ``max_new_tokens``), plus per reward: ``{min_score}``/``{max_score}``
(pointwise), ``{response_a}``/``{response_b}`` (pairwise), ``{criterion}`` (rubric). Fields arrive
as lists, one entry per sample; a template takes the sample's own entry.

**Judge biases and what is done about them.**

* *Position bias* (pairwise judges prefer the first, sometimes the second, answer): the completion's
  slot (A or B) is drawn per sample from a hash of ``seed``, the prompt, the completion and the
  reference, so it is reproducible, independent of how the runtime splits batches, and balanced on
  average; ``info["completion_first"]`` records it (its per-step mean should be near 0.5, and a win
  rate that differs by slot measures the judge's bias).
* *Verbosity bias* (longer answers judged better): the default templates tell the judge to ignore
  length. That does not remove the bias; pair a judge reward with a length-shaping reward
  (``length_penalty``) in a weighted sum when it matters.
* *Scale bias* (judges bunch scores at a few values): pointwise scores are clamped to
  ``[min_score, max_score]`` and normalised to ``[0, 1]``; group-relative advantages then remove
  each prompt's offset. The raw score stays in ``info["judge_score"]``.

>>> class Fake:
...     def generate(self, prompts, *, max_new_tokens=None, choices=None, regex=None):
...         return ["7" for _ in prompts]
>>> llm_judge(["2+2?"], ["4"], judge=Fake())
[RewardResult(score=0.7, info={'judge_score': 7.0})]
"""

from __future__ import annotations

import hashlib
import logging
import math
import numbers
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from rewards.registry import reward
from rewards.spec import RewardError, RewardResult

log = logging.getLogger(__name__)

FAILED = float("nan")
"""The score of a sample whose verdict could not be had (the runtime marks it failed)."""

DEFAULT_TEMPLATE = """\
Rate the response to the question on a scale from {min_score} (wrong or useless) to {max_score} \
(correct, complete and clear). Judge correctness and helpfulness only; do not reward length.

Question:
{prompt}

Response:
{completion}

Score ({min_score} to {max_score}):"""

PAIRWISE_TEMPLATE = """\
Which response answers the question better? Judge correctness and helpfulness only; ignore the \
order of the responses and their length.

Question:
{prompt}

Response A:
{response_a}

Response B:
{response_b}

Better response (A or B):"""

RUBRIC_TEMPLATE = """\
Does the response satisfy the criterion? Answer yes or no.

Question:
{prompt}

Response:
{completion}

Criterion: {criterion}
Answer (yes or no):"""

MAX_CHOICES = 101
"""Integer score ranges up to this many values are asked as ``choices``; wider ones as a regex."""

SCORE_REGEX = r"-?[0-9]{1,4}(\.[0-9]{1,3})?"
"""The verdict constraint of non-integer (or very wide) score ranges."""

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_A_OR_B = re.compile(r"\b([AB])\b")
_YES_OR_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


class Judge(Protocol):
    """What a model-based reward is handed as ``judge``."""

    def generate(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int | None = None,
        choices: list[str] | None = None,
        regex: str | None = None,
    ) -> list[str]: ...


# ------------------------------------------------------------------------------------ the rewards


@reward("llm_judge", batched=True)
def llm_judge(
    prompts: list[str],
    completions: list[str],
    *,
    judge: Judge,
    template: str | None = None,
    min_score: float = 0,
    max_score: float = 10,
    pairwise: bool = False,
    reference_field: str = "reference",
    seed: int = 0,
    **fields: Any,
) -> list[RewardResult | float]:
    """A judge model's verdict on each completion, in ``[0, 1]``.

    Pointwise (default): the judge scores the completion from ``min_score`` to ``max_score``; the
    score is ``(s - min_score) / (max_score - min_score)`` with ``s`` clamped to the range.
    ``template`` defaults to ``DEFAULT_TEMPLATE``.

    Pairwise (``pairwise=True``): the judge compares the completion with the sample's reference
    answer (the field ``reference_field``) in a randomised order; 1.0 if it prefers the
    completion, else 0.0. ``template`` defaults to ``PAIRWISE_TEMPLATE``. A sample without a
    reference fails (NaN).
    """
    if pairwise:
        return _pairwise(
            prompts, completions, judge, template or PAIRWISE_TEMPLATE, reference_field, seed, fields
        )
    return _pointwise(prompts, completions, judge, template or DEFAULT_TEMPLATE, min_score, max_score, fields)


@reward("rubric", batched=True)
def rubric(
    prompts: list[str],
    completions: list[str],
    *,
    judge: Judge,
    rubric_field: str = "rubric",
    template: str = RUBRIC_TEMPLATE,
    **fields: Any,
) -> list[RewardResult | float]:
    """The weighted fraction of the sample's rubric criteria that the judge says are satisfied.

    Each sample's ``rubric_field`` holds a list of criteria, each a string (weight 1) or
    ``{"criterion": str, "weight": float}``. Every (sample, criterion) pair is one yes/no question;
    all of a batch's questions go to the judge in one call. A sample whose rubric is unusable
    (empty, a negative or non-numeric weight, weights summing to 0) or whose verdict does not parse
    fails (NaN). ``info`` counts the criteria and the satisfied ones.
    """
    n = len(prompts)
    rubrics: list[list[tuple[str, float]] | None] = []
    for raw in column(fields, rubric_field, n):
        try:
            rubrics.append(parse_rubric(raw))
        except ValueError as err:
            log.warning("rubric: a sample fails: %s", err)
            rubrics.append(None)
    owner = [i for i, criteria in enumerate(rubrics) if criteria for _ in criteria]
    columns = {**fields, "prompt": prompts, "completion": completions}
    per_question: dict[str, list[Any]] = {}
    for name in template_fields(template):
        if name != "criterion":
            values = column(columns, name, n)
            per_question[name] = [values[i] for i in owner]
    per_question["criterion"] = [text for criteria in rubrics if criteria for text, _ in criteria]
    replies = iter(ask(judge, render(template, per_question, len(owner)), choices=["yes", "no"]))
    results: list[RewardResult | float] = []
    for criteria in rubrics:
        if criteria is None:
            results.append(FAILED)
            continue
        verdicts = [first_match(_YES_OR_NO, next(replies)) for _ in criteria]
        if None in verdicts:
            results.append(FAILED)
            continue
        met = [v.lower() == "yes" for v in verdicts]
        total = sum(w for _, w in criteria)
        score = sum(w for (_, w), ok in zip(criteria, met) if ok) / total
        results.append(RewardResult(score, {"criteria": len(criteria), "satisfied": sum(met)}))
    return results


def _pointwise(
    prompts: list[str],
    completions: list[str],
    judge: Judge,
    template: str,
    min_score: float,
    max_score: float,
    fields: dict[str, Any],
) -> list[RewardResult | float]:
    if not max_score > min_score:
        raise RewardError(f"llm_judge needs max_score > min_score (got {min_score} and {max_score})")
    n = len(prompts)
    columns = {
        **fields,
        "prompt": prompts,
        "completion": completions,
        "min_score": [f"{min_score:g}"] * n,
        "max_score": [f"{max_score:g}"] * n,
    }
    replies = ask(judge, render(template, columns, n), **score_constraint(min_score, max_score))
    results: list[RewardResult | float] = []
    for reply in replies:
        score = parse_score(reply)
        if score is None:
            results.append(FAILED)
        else:
            results.append(RewardResult(normalise(score, min_score, max_score), {"judge_score": score}))
    return results


def _pairwise(
    prompts: list[str],
    completions: list[str],
    judge: Judge,
    template: str,
    reference_field: str,
    seed: int,
    fields: dict[str, Any],
) -> list[RewardResult | float]:
    n = len(prompts)
    references = column(fields, reference_field, n)
    first = [completion_first(seed, p, c, r) for p, c, r in zip(prompts, completions, references)]
    columns = {
        **fields,
        "prompt": prompts,
        "completion": completions,
        "response_a": [c if f else r for c, r, f in zip(completions, references, first)],
        "response_b": [r if f else c for c, r, f in zip(completions, references, first)],
    }
    asked = [i for i in range(n) if references[i] is not None]
    questions = render(template, columns, n)
    replies = dict(zip(asked, ask(judge, [questions[i] for i in asked], choices=["A", "B"])))
    results: list[RewardResult | float] = []
    for i in range(n):
        verdict = first_match(_A_OR_B, replies[i]) if i in replies else None
        if verdict is None:
            results.append(FAILED)
        else:
            won = (verdict == "A") == first[i]
            results.append(RewardResult(float(won), {"completion_first": float(first[i])}))
    return results


# ------------------------------------------------------------------------------------ the pieces


def ask(judge: Judge, prompts: list[str], **constraint: Any) -> list[str]:
    """The judge's replies to ``prompts`` (no call for none); a wrong reply count is an error."""
    if not prompts:
        return []
    replies = list(judge.generate(prompts, **constraint))
    if len(replies) != len(prompts):
        raise RuntimeError(f"the judge returned {len(replies)} replies for {len(prompts)} prompts")
    return replies


def template_fields(template: str) -> list[str]:
    """The field names a ``str.format`` template refers to (the part before any ``.`` or ``[``).

    >>> template_fields("{prompt} -> {meta[lang]} ({prompt}, {row.id})")
    ['meta', 'prompt', 'row']
    """
    names = set()
    for _, name, _, _ in string.Formatter().parse(template):
        if name is None:
            continue
        base = re.split(r"[.\[]", name, maxsplit=1)[0]
        if not base or base.isdigit():
            raise RewardError(f"judge template placeholders need a field name, got '{{{name}}}'")
        names.add(base)
    return sorted(names)


def column(columns: Mapping[str, Any], name: str, n: int) -> Sequence[Any]:
    """The field ``name``: one value per sample. A missing or malformed field is a ``RewardError``.

    >>> column({"reference": ["4", "9"]}, "reference", 2)
    ['4', '9']
    >>> column({"answer": ["4"]}, "reference", 1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    rewards.spec.RewardError: the samples have no field 'reference' (...); their fields: answer
    """
    if name not in columns:
        have = ", ".join(sorted(columns)) or "none"
        raise RewardError(
            f"the samples have no field '{name}' (named by the judge template or a parameter); "
            f"their fields: {have}"
        )
    values = columns[name]
    if not isinstance(values, (list, tuple)) or len(values) != n:
        got = f"{len(values)} values" if isinstance(values, (list, tuple)) else type(values).__name__
        raise RewardError(f"field '{name}' must hold one value per sample ({n}), got {got}")
    return values


def render(template: str, columns: Mapping[str, Any], n: int) -> list[str]:
    """``template`` formatted for each of ``n`` rows with the rows' own field values.

    >>> render("{prompt} = {answer}", {"prompt": ["1+1", "2+2"], "answer": [2, 4], "x": None}, 2)
    ['1+1 = 2', '2+2 = 4']
    """
    values = {name: column(columns, name, n) for name in template_fields(template)}
    return [template.format(**{name: v[i] for name, v in values.items()}) for i in range(n)]


def score_constraint(min_score: float, max_score: float) -> dict[str, Any]:
    """The verdict constraint for a score range: the integers as ``choices`` when the range has
    integer ends and at most ``MAX_CHOICES`` values, else ``SCORE_REGEX``.

    >>> score_constraint(0, 3)
    {'choices': ['0', '1', '2', '3']}
    >>> score_constraint(0, 0.5) == {"regex": SCORE_REGEX}
    True
    """
    lo, hi = float(min_score), float(max_score)
    if lo.is_integer() and hi.is_integer() and hi - lo < MAX_CHOICES:
        return {"choices": [str(s) for s in range(int(lo), int(hi) + 1)]}
    return {"regex": SCORE_REGEX}


def parse_score(reply: str) -> float | None:
    """The first number in a judge's reply, or None.

    >>> parse_score("7"), parse_score("Score: -2.5 of 10"), parse_score("great!")
    (7.0, -2.5, None)
    """
    found = _NUMBER.search(reply)
    return float(found.group()) if found else None


def normalise(score: float, min_score: float, max_score: float) -> float:
    """``score`` clamped to ``[min_score, max_score]`` and mapped to ``[0, 1]``.

    >>> normalise(7, 0, 10), normalise(12, 0, 10), normalise(3, 1, 5)
    (0.7, 1.0, 0.5)
    """
    clamped = min(max(score, min_score), max_score)
    return (clamped - min_score) / (max_score - min_score)


def first_match(pattern: re.Pattern[str], reply: str) -> str | None:
    """The first group of the first match of ``pattern`` in ``reply``, or None.

    >>> first_match(_A_OR_B, "Answer: B."), first_match(_A_OR_B, "AB"), first_match(_YES_OR_NO, "Yes.")
    ('B', None, 'Yes')
    """
    found = pattern.search(reply)
    return found.group(1) if found else None


def completion_first(seed: int, prompt: str, completion: str, reference: Any) -> bool:
    """Whether the completion is shown as response A in a pairwise question: a fair coin drawn from a
    hash of ``seed`` and the sample, so the same sample gets the same slot in any batch.

    >>> completion_first(0, "2+2?", "4", "4") == completion_first(0, "2+2?", "4", "4")
    True
    """
    key = "\x00".join((str(seed), prompt, completion, str(reference)))
    return hashlib.blake2b(key.encode(), digest_size=8).digest()[0] % 2 == 0


def parse_rubric(criteria: Any) -> list[tuple[str, float]]:
    """A rubric as ``(criterion, weight)`` pairs; ``ValueError`` says what is wrong with a bad one.

    >>> parse_rubric(["cites a source", {"criterion": "is polite", "weight": 2}])
    [('cites a source', 1.0), ('is polite', 2.0)]
    >>> parse_rubric([{"criterion": "short", "weight": -1}])
    Traceback (most recent call last):
    ...
    ValueError: criterion 'short' has weight -1; weights must be finite numbers >= 0
    """
    if not isinstance(criteria, (list, tuple)) or not criteria:
        raise ValueError(f"a rubric is a non-empty list of criteria, got {criteria!r:.80}")
    parsed = [_criterion(item) for item in criteria]
    if sum(w for _, w in parsed) <= 0:
        raise ValueError("a rubric's weights sum to 0")
    return parsed


def _criterion(item: Any) -> tuple[str, float]:
    if isinstance(item, str):
        text, weight = item, 1.0
    elif isinstance(item, Mapping) and set(item) <= {"criterion", "weight"} and isinstance(item.get("criterion"), str):
        text, weight = item["criterion"], item.get("weight", 1.0)
    else:
        raise ValueError(f"a criterion is a string or {{'criterion': str, 'weight': float}}, got {item!r:.80}")
    if not text.strip():
        raise ValueError("a rubric has an empty criterion")
    number = isinstance(weight, numbers.Real) and not isinstance(weight, bool)
    if not (number and math.isfinite(weight) and weight >= 0):
        raise ValueError(f"criterion {text!r} has weight {weight!r}; weights must be finite numbers >= 0")
    return text, float(weight)
