"""The reward plug-in API: a reward is a plain Python function.

Per sample (sync or ``async def``)::

    from rewards import reward

    @reward("has_answer")
    def has_answer(prompt: str, completion: str, *, answer: str) -> float:
        return 1.0 if answer in completion else 0.0

Batched, for rewards that batch well (models, judges): the dataset fields arrive as lists, one
entry per sample, and the function returns one score per sample::

    @reward("short", batched=True)
    def short(prompts: list[str], completions: list[str], **fields) -> list[float]:
        return [1.0 / (1 + len(c)) for c in completions]

A function need not be registered: ``reward.functions: [{path: ./my_rewards.py:score}]`` loads it from
a file (or ``my_pkg.rewards:score`` from a module); mark a batched one with ``@batched``.

What a reward receives, as keyword arguments, is the dataset row's other columns (``answer`` and the
``data.metadata_fields``) plus what the runtime knows of the sample: ``prompt_id``, ``num_tokens``
(completion length in tokens), ``finish_reason`` (``stop``/``length``) and ``max_new_tokens``. A
function gets only the fields its signature names, or all of them with ``**fields``. The config's
``params`` are passed as keywords too and win over a field of the same name.

Functions written for TRL (``reward(completions, **kwargs) -> list[float]``) or verl
(``compute_score(data_source, solution_str, ground_truth, extra_info=None)``) work as written:
``rewards.foreign`` recognises them by signature and maps the fields onto theirs.

A reward returns a float (ints and bools are accepted) or a ``RewardResult(score, info)`` whose
numeric ``info`` values are logged as means per step. Anything else, a non-finite value, an
exception, a timeout or a crash marks the sample failed: it is left out of the loss and counted,
never scored 0.

>>> @reward("doc_len", batched=True)
... def doc_len(prompts, completions, *, scale: float = 1.0):
...     return [scale * len(c) for c in completions]
>>> spec = get_reward("doc_len")
>>> spec.batched, spec.accepts_fields, sorted(spec.keywords)
(True, frozenset({'scale'}), ['scale'])
>>> _ = REWARDS.pop("doc_len")
"""

from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

from rlft.algorithms.registry import closest

RUNTIME_FIELDS = ("prompt_id", "num_tokens", "finish_reason", "max_new_tokens")
"""Fields the runtime adds to every sample, next to the dataset row's own columns."""


class RewardError(ValueError):
    """A reward that cannot be found, loaded or called as configured."""


@dataclass(frozen=True)
class RewardResult:
    """A score with extra facts to log (numeric ``info`` values are averaged per step).

    >>> RewardResult(1.0, {"matched": 1})
    RewardResult(score=1.0, info={'matched': 1})
    """

    score: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RewardSpec:
    """A reward function with what the runtime needs to call it."""

    name: str
    fn: Callable[..., Any]
    batched: bool
    is_async: bool
    keywords: frozenset[str]  # keyword parameters the function names (fields and params)
    accepts_fields: frozenset[str] | None  # None: takes every field (``**fields``)
    needs_judge: bool  # declares a ``judge`` keyword: served by the run's judge engine
    uses_sandbox: bool = False  # runs code in ``rewards.sandbox``: the run checks the sandbox at start

    def call_kwargs(self, fields: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """The keywords of one call: the fields the function takes, then the params on top."""
        if self.accepts_fields is None:
            chosen = dict(fields)
        else:
            chosen = {k: v for k, v in fields.items() if k in self.accepts_fields}
        chosen.update(params)
        return chosen


REWARDS: dict[str, RewardSpec] = {}
"""Registered rewards by name (built-ins and the user's ``@reward`` functions)."""


def batched(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark ``fn`` as batched: ``fn(prompts, completions, **fields) -> list[float]``."""
    fn.__rlft_batched__ = True  # type: ignore[attr-defined]
    return fn


def reward(
    name: str | Callable[..., Any] | None = None,
    *,
    batched: bool = False,
    timeout_s: float | None = None,
    sandbox: bool = False,
) -> Any:
    """Register a reward function under ``name`` (default: the function's name); ``@reward`` without
    parentheses works too.

    ``timeout_s`` is this reward's default time limit per call (e.g. longer for model judges); a
    config's ``timeout_s`` wins over it, and ``reward.timeout_s`` applies when neither is set. A name
    can be registered once; registering the same function again (a module re-imported) is allowed.
    ``sandbox=True`` declares that it runs code in ``rewards.sandbox``: reward workers then select
    ``reward.sandbox`` when they start and refuse to start where it cannot run.
    """

    def add(fn: Callable[..., Any]) -> Callable[..., Any]:
        if batched:
            fn.__rlft_batched__ = True  # type: ignore[attr-defined]
        if sandbox:
            fn.__rlft_sandbox__ = True  # type: ignore[attr-defined]
        if timeout_s is not None:
            fn.__rlft_timeout_s__ = float(timeout_s)  # type: ignore[attr-defined]
        key = name or fn.__name__
        spec = inspect_reward(fn, key)
        old = REWARDS.get(key)
        if old is not None and _qualname(old.fn) != _qualname(fn):
            raise RewardError(f"reward '{key}' is already registered (by {_qualname(old.fn)}); pick another name")
        REWARDS[key] = spec
        return fn

    if timeout_s is not None and not timeout_s > 0:
        raise RewardError(f"reward timeout_s must be positive, got {timeout_s}")
    if callable(name):  # bare @reward
        fn, name = name, None
        return add(fn)
    return add


def get_reward(name: str) -> RewardSpec:
    """The registered reward ``name``; an unknown name lists the registered ones."""
    _load_builtins()
    try:
        return REWARDS[name]
    except KeyError:
        hint = closest(name, sorted(REWARDS))
        did = f" (did you mean '{hint}'?)" if hint else ""
        raise RewardError(f"unknown reward '{name}'{did}; registered rewards: {', '.join(sorted(REWARDS))}") from None


def reward_names() -> list[str]:
    _load_builtins()
    return sorted(REWARDS)


def inspect_reward(fn: Callable[..., Any], name: str) -> RewardSpec:
    """Check ``fn``'s signature (two positional parameters, then keywords; or TRL's or verl's form,
    see ``rewards.foreign``) and describe it."""
    if not callable(fn):
        raise RewardError(f"reward '{name}' is not a function (got {type(fn).__name__})")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as err:
        raise RewardError(f"reward '{name}': cannot read its signature ({err})") from None
    params = list(sig.parameters.values())
    positional = [
        p for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    is_batched = bool(getattr(fn, "__rlft_batched__", False))
    if not is_batched:  # TRL's and verl's forms, by a parameter name rlft's forms do not use
        from rewards.foreign import foreign_spec

        foreign = foreign_spec(fn, name, sig)
        if foreign is not None:
            return foreign
    first = "(prompts, completions, **fields)" if is_batched else "(prompt, completion, **fields)"
    required_positional = [p for p in positional if p.default is inspect.Parameter.empty]
    if len(positional) < 2 or len(required_positional) > 2:
        from rewards.foreign import OTHER_FORMS

        other = (
            "(without @batched): (prompt, completion, **fields)"
            if is_batched
            else ": (prompts, completions, **fields) marked @batched"
        )
        raise RewardError(
            f"reward '{name}' has the wrong signature {name}{sig}: a reward takes {first}, "
            f"with any further parameters keyword-only; the other accepted forms{other}; {OTHER_FORMS}"
        )
    keywords = {p.name for p in positional[2:]} | {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    return RewardSpec(
        name=name,
        fn=fn,
        batched=is_batched,
        is_async=inspect.iscoroutinefunction(fn),
        keywords=frozenset(keywords),
        accepts_fields=None if var_kw else frozenset(keywords - {"judge"}),
        needs_judge="judge" in keywords,
        uses_sandbox=bool(getattr(fn, "__rlft_sandbox__", False)),
    )


def check_params(spec: RewardSpec, params: dict[str, Any]) -> None:
    """Unknown ``params`` for ``spec`` fail with the closest valid name."""
    if spec.accepts_fields is None:
        return
    for key in params:
        if key not in spec.keywords or key == "judge":
            valid = sorted(spec.keywords - {"judge"})
            hint = closest(key, valid)
            did = f" (did you mean '{hint}'?)" if hint else ""
            raise RewardError(
                f"unknown parameter '{key}' for reward '{spec.name}'{did}; "
                f"valid parameters: {', '.join(valid) or 'none'}"
            )


def as_score(value: Any) -> tuple[float, dict[str, Any]]:
    """A reward's return value as ``(score, info)``; raises ``TypeError``/``ValueError`` for a value
    that is not a finite number or ``RewardResult``.

    >>> as_score(1), as_score(True), as_score(RewardResult(0.5, {"n": 2}))
    ((1.0, {}), (1.0, {}), (0.5, {'n': 2}))
    >>> as_score(float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: reward returned a non-finite score nan
    """
    import numpy as np

    info: dict[str, Any] = {}
    if isinstance(value, RewardResult):
        value, info = value.score, dict(value.info)
    if not isinstance(value, (numbers.Real, np.bool_)):
        raise TypeError(f"reward returned {type(value).__name__} {_short(value)}, expected a float or RewardResult")
    try:
        score = float(value)
    except OverflowError:
        raise ValueError(f"reward returned a score too large for a float: {_short(value)}") from None
    if not math.isfinite(score):
        raise ValueError(f"reward returned a non-finite score {score}")
    return score, info


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"


def _load_builtins() -> None:
    import rewards.builtin  # noqa: F401  (registers the built-in rewards)
