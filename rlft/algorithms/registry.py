"""Name -> function registries for the algorithm core.

Each registry holds functions of one uniform signature (positional tensors first, then keyword-only
hyperparameters). Hyperparameters are annotated, optionally with ``annotated_types`` constraints, so a
config can be checked against the function's own signature before any model is built::

    >>> from rlft.algorithms import ADVANTAGES
    >>> ADVANTAGES.validate_params("grpo", {"eps": 1e-5})
    {'eps': 1e-05}
    >>> ADVANTAGES.validate_params("grpo", {"epss": 1e-5})
    Traceback (most recent call last):
    ...
    rlft.algorithms.registry.ParamError: unknown parameter 'epss' for advantage estimator 'grpo' (did you mean 'eps'?); valid parameters: eps, scale_by_std

Users add their own entries from their own module::

    from rlft.algorithms import ADVANTAGES

    @ADVANTAGES.register("my_estimator")
    def my_estimator(rewards, group_ids, *, temperature: float = 1.0):
        ...
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

import pydantic

F = TypeVar("F", bound=Callable[..., Any])


class RegistryError(KeyError, ValueError):
    """An unknown or duplicate name in a registry (a ValueError too, so config validation reports it)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ParamError(ValueError):
    """Hyperparameters that do not match a registered function's keyword-only arguments."""


def closest(name: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """The closest spelling of ``name`` among ``choices``, or None when nothing is close."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return match[0] if match else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest spelling of ``name`` among ``choices``, else ``""``:
    the one hint every "unknown name" message in rlft carries.

    >>> did_you_mean("clip_hgih", ["clip_high", "clip_low"]), did_you_mean("zzz", ["clip_high"])
    (" (did you mean 'clip_high'?)", '')
    """
    hint = closest(name, tuple(choices))
    return f" (did you mean '{hint}'?)" if hint else ""


class Registry(Generic[F]):
    """A mapping from names to functions of one kind (``kind`` names it in messages)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._fns: dict[str, F] = {}
        self._param_models: dict[str, type[pydantic.BaseModel]] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[F], F]:
        """Decorator adding ``fn`` under ``name``; a name can be registered once only.

        ``meta`` holds facts the config checks need (e.g. ``needs_groups=True`` for estimators that
        compare the samples of one prompt); read them back with ``meta(name)``.
        """

        def add(fn: F) -> F:
            if name in self._fns:
                raise RegistryError(
                    f"{self.kind} '{name}' is already registered (by {_where(self._fns[name])}); "
                    "pick another name"
                )
            self._param_models[name] = _params_model(name, fn)
            self._fns[name] = fn
            self._meta[name] = dict(meta)
            return fn

        return add

    def unregister(self, name: str) -> F:
        """Remove ``name`` and return its function (e.g. to replace a plugin in a notebook)."""
        fn = self.get(name)
        del self._fns[name], self._param_models[name], self._meta[name]
        return fn

    def snapshot(self) -> tuple[dict[str, Any], ...]:
        """Every entry as it is now, for ``restore`` (a test or notebook that registers freely)."""
        return dict(self._fns), dict(self._param_models), {n: dict(m) for n, m in self._meta.items()}

    def restore(self, snapshot: tuple[dict[str, Any], ...]) -> None:
        """Put back the entries of a ``snapshot``: names registered since go, names removed return.

        >>> reg = Registry("thing")
        >>> before = reg.snapshot()
        >>> _ = reg.register("a")(lambda x: x)
        >>> reg.restore(before); reg.names()
        []
        """
        fns, models, meta = snapshot
        self._fns, self._param_models = dict(fns), dict(models)
        self._meta = {n: dict(m) for n, m in meta.items()}

    def get(self, name: str) -> F:
        """The function registered as ``name``; an unknown name lists the valid ones."""
        try:
            return self._fns[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self.names())}; "
                f"valid names: {', '.join(self.names())}"
            ) from None

    __getitem__ = get

    def meta(self, name: str) -> dict[str, Any]:
        """The ``meta`` keywords ``name`` was registered with."""
        self.get(name)
        return dict(self._meta[name])

    def names(self) -> list[str]:
        return sorted(self._fns)

    def params(self, name: str) -> dict[str, inspect.Parameter]:
        """The keyword-only hyperparameters of ``name``, by name."""
        return _keyword_only(self.get(name))

    def validate_params(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Check ``params`` against the signature of ``name``: names, types and annotated ranges.

        Returns the validated values (coerced, e.g. ``"0.2"`` -> ``0.2``) for the keys given; defaults
        are left to the function. Raises ``ParamError`` naming the parameter and its closest spelling.
        """
        valid = sorted(self.params(name))
        for key in params:
            if key not in valid:
                listed = ", ".join(valid) if valid else "none"
                raise ParamError(
                    f"unknown parameter '{key}' for {self.kind} '{name}'{did_you_mean(key, valid)}; "
                    f"valid parameters: {listed}"
                )
        try:
            checked = self._param_models[name].model_validate(params)
        except pydantic.ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
            )
            raise ParamError(f"bad parameter for {self.kind} '{name}': {problems}") from None
        return {key: getattr(checked, key) for key in params}

    def __contains__(self, name: object) -> bool:
        return name in self._fns

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._fns)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind!r}, {self.names()})"


def _keyword_only(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    sig = inspect.signature(fn)
    return {n: p for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _params_model(name: str, fn: Callable[..., Any]) -> type[pydantic.BaseModel]:
    """A pydantic model whose fields are ``fn``'s keyword-only arguments (types, ranges, defaults)."""
    hints = _type_hints(fn)
    fields: dict[str, Any] = {}
    for pname, param in _keyword_only(fn).items():
        annotation = hints.get(pname, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[pname] = (annotation, default)
    return pydantic.create_model(
        f"Params_{name}", __config__=pydantic.ConfigDict(extra="forbid", strict=False), **fields
    )


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolved forward references: fall back to no type checking
        return {}


def _where(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"
