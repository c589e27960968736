"""The reward registry and the ``@reward`` decorator: ``REWARDS`` by name, and how a function's
signature becomes a ``RewardSpec`` (``inspect_reward``) and its params are checked (``check_params``).
Public through ``rewards.api``; the built-in rewards (``rewards.builtin``, ``rewards.code``,
``rewards.judge``) register through this module, which never imports them.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from rewards.foreign import OTHER_FORMS, foreign_spec
from rewards.spec import RewardError, RewardSpec
from rlft.algorithms.registry import did_you_mean


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
        foreign = foreign_spec(fn, name, sig)
        if foreign is not None:
            return foreign
    first = "(prompts, completions, **fields)" if is_batched else "(prompt, completion, **fields)"
    required_positional = [p for p in positional if p.default is inspect.Parameter.empty]
    if len(positional) < 2 or len(required_positional) > 2:
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
            raise RewardError(
                f"unknown parameter '{key}' for reward '{spec.name}'{did_you_mean(key, valid)}; "
                f"valid parameters: {', '.join(valid) or 'none'}"
            )


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"
