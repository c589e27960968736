"""The reward registry and the ``@reward`` decorator: ``REWARDS``, a ``RewardRegistry`` (the one
``Registry`` class of every plug-in point, holding ``RewardSpec`` objects), and how a function's signature
becomes a ``RewardSpec`` (``inspect_reward``) and its params are checked (``check_params``).
Public through ``rewards.api``; the built-in rewards (``rewards.builtin``, ``rewards.code``,
``rewards.judge``) register through this module, which never imports them.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from rewards.foreign import OTHER_FORMS, foreign_spec
from rewards.spec import RewardError, RewardSpec
from rlft.algorithms.registry import Registry, RegistryError, _where, did_you_mean


class RewardNameError(RewardError, RegistryError):
    """An unknown or taken reward name: a ``RewardError`` to the reward code, a ``RegistryError``
    like every registry's."""


class RewardRegistry(Registry[RewardSpec]):
    """The ``Registry`` of rewards: ``name -> RewardSpec``, the spec ``inspect_reward`` makes of the
    function. What differs from the algorithm registries, and why:

    * a reward's params are its keyword parameters (positional ones after the first two, keyword-only
      ones), ``judge`` excepted; one with ``**fields`` takes any (``check_params``). They are not
      coerced: they are handed to the user's function as written in the config;
    * registering the same function again (same module and qualname: a module re-imported) is allowed;
    * its errors are ``RewardError`` (a taken or unknown name: ``RewardNameError``, a ``RegistryError``
      too), and an unknown name lists the "registered rewards".

    >>> r = RewardRegistry("reward")
    >>> @r.register("has_answer")
    ... def has_answer(prompt, completion, *, answer, strict: bool = False):
    ...     return float(answer in completion)
    >>> r.get("has_answer").keywords == {"answer", "strict"}, r.validate_params("has_answer", {"strict": True})
    (True, {'strict': True})
    >>> r.get("has_anwser")
    Traceback (most recent call last):
    ...
    rewards.registry.RewardNameError: unknown reward 'has_anwser' (did you mean 'has_answer'?); registered rewards: has_answer
    """

    def register(  # type: ignore[override]
        self,
        name: str | None = None,
        *,
        batched: bool = False,
        timeout_s: float | None = None,
        sandbox: bool = False,
        **meta: Any,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator adding a reward function under ``name`` (default: its ``__name__``); the options
        are ``@reward``'s. Returns the function unchanged."""
        if timeout_s is not None and not timeout_s > 0:
            raise RewardError(f"reward timeout_s must be positive, got {timeout_s}")

        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            if batched:
                fn.__rlft_batched__ = True  # type: ignore[attr-defined]
            if sandbox:
                fn.__rlft_sandbox__ = True  # type: ignore[attr-defined]
            if timeout_s is not None:
                fn.__rlft_timeout_s__ = float(timeout_s)  # type: ignore[attr-defined]
            key = name or fn.__name__
            spec = inspect_reward(fn, key)
            old = self._fns.get(key)
            if old is not None and _where(old.fn) != _where(fn):
                raise RewardNameError(
                    f"{self.kind} '{key}' is already registered (by {_where(old.fn)}); pick another name"
                )
            self._fns[key] = spec
            self._meta[key] = dict(meta)
            return fn

        return add

    def get(self, name: str) -> RewardSpec:
        """The spec registered as ``name``; an unknown name lists the registered ones."""
        if name not in self._fns:
            names = self.names()
            raise RewardNameError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, names)}; registered {self.kind}s: {', '.join(names)}"
            )
        return self._fns[name]

    __getitem__ = get

    def unregister(self, name: str) -> RewardSpec:
        spec = self.get(name)
        del self._fns[name], self._meta[name]
        return spec

    def params(self, name: str) -> dict[str, inspect.Parameter]:
        """The params ``name`` names in its signature (with ``**fields`` it takes others too)."""
        spec = self.get(name)
        fn = getattr(spec.fn, "__rlft_foreign__", spec.fn)  # TRL/verl: the user's own signature
        named = spec.keywords - {"judge"}
        return {n: p for n, p in inspect.signature(fn).parameters.items() if n in named}

    def validate_params(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """``check_params`` for the reward ``name``; returns ``params`` as given."""
        check_params(self.get(name), params)
        return dict(params)


REWARDS: RewardRegistry = RewardRegistry("reward")
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
    """Register a reward function in ``REWARDS`` under ``name`` (default: the function's name);
    ``@reward`` without parentheses works too.

    ``timeout_s`` is this reward's default time limit per call (e.g. longer for model judges); a
    config's ``timeout_s`` wins over it, and ``reward.timeout_s`` applies when neither is set. A name
    can be registered once; registering the same function again (a module re-imported) is allowed.
    ``sandbox=True`` declares that it runs code in ``rewards.sandbox``: reward workers then select
    ``reward.sandbox`` when they start and refuse to start where it cannot run.
    """
    if callable(name):  # bare @reward
        return REWARDS.register(batched=batched, timeout_s=timeout_s, sandbox=sandbox)(name)
    return REWARDS.register(name, batched=batched, timeout_s=timeout_s, sandbox=sandbox)


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


