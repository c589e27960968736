"""Reward functions written for TRL or verl, called as written in rlft's isolated reward processes.

rlft's own forms (``rewards.api``) stay the primary API; these two are recognised by a parameter
name that rlft's forms never use, on a function not marked ``@batched``:

- **TRL** (a parameter named ``completions``)::

      def reward(completions, **kwargs) -> list[float]

  called once per chunk of samples, every argument by keyword: ``prompts`` (prompt texts),
  ``completions`` (completion texts), then every sample field as a list with one entry per
  sample (``answer``, the ``data.metadata_fields`` columns, ``prompt_id``, ``num_tokens``,
  ``finish_reason``, ``max_new_tokens``), then the config's ``params`` as they are. TRL's
  ``completion_ids`` and ``trainer_state`` are not passed. A ``None`` in the returned list (TRL's
  "does not apply to this sample", which TRL's weighted sum skips) scores 0.

- **verl** (a parameter named ``solution_str``)::

      def compute_score(data_source, solution_str, ground_truth, extra_info=None) -> float | dict

  called once per sample, by keyword: ``data_source`` = the row's ``data_source`` column (name it in
  ``data.metadata_fields``; ``""`` without it), ``solution_str`` = the completion text,
  ``ground_truth`` = the answer (``data.answer_field``), ``extra_info`` = a dict of every other field
  (the metadata columns, the runtime fields and ``prompt``) updated with the row's own
  ``extra_info`` column where that is a dict; the config's ``params`` are passed as keywords (verl's
  ``reward_kwargs``). A returned dict must hold ``"score"``; its other keys become the result's
  ``info`` (numeric ones are logged as ``reward/<name>/info/<key>``).

Either form may be ``async def``. A function gets the arguments its signature names, or all of
them with ``**kwargs``; a required parameter rlft does not supply fails the call with the names
it does supply. Rewards of these forms cannot ask for the judge engine.

>>> def length_reward(completions, **kwargs):
...     return [float(len(c)) for c in completions]
>>> spec = foreign_spec(length_reward, "length")
>>> spec.form, spec.batched
('trl', True)
>>> spec.fn(["1+1="], ["2"], **spec.call_kwargs({"answer": ["2"]}, {}))
[1.0]
>>> def compute_score(data_source, solution_str, ground_truth, extra_info=None):
...     return {"score": float(solution_str == ground_truth), "acc": 1}
>>> spec = foreign_spec(compute_score, "verl_exact")
>>> spec.fn("1+1=", "2", **spec.call_kwargs({"answer": "2"}, {}))
RewardResult(score=1.0, info={'acc': 1})
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable

from rewards.spec import RewardResult, RewardSpec

Kw = dict[str, Any]

TRL_ARGS = ("prompts", "completions")
"""The arguments rlft maps onto a TRL reward; every other keyword is a sample field or a param."""
TRL_NOT_PASSED = ("completion_ids", "trainer_state")
"""TRL arguments rlft does not have (it carries ``num_tokens``, not the completion's token ids)."""
VERL_ARGS = ("data_source", "solution_str", "ground_truth", "extra_info")
"""The arguments rlft maps onto a verl ``compute_score``; other keywords are the config's params."""

OTHER_FORMS = (
    "TRL's reward(completions, **kwargs) -> list[float] (recognised by a parameter named 'completions'); "
    "verl's compute_score(data_source, solution_str, ground_truth, extra_info=None) -> float | dict "
    "(recognised by a parameter named 'solution_str')"
)
"""The foreign forms, as the wrong-signature error lists them."""


@dataclass(frozen=True)
class ForeignSpec(RewardSpec):
    """A TRL or verl reward behind an adapter with rlft's call (``fn`` is the adapter).

    ``keywords`` are the function's own further parameters (what ``params`` may set) and
    ``accepts_fields`` is None when it takes ``**kwargs`` (any param); the fields are mapped by the
    adapter, which gets them apart from the params.
    """

    form: str = ""  # "trl" or "verl"

    def call_kwargs(self, fields: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """The adapter's keywords: the sample's fields and the config's params, kept apart.

        >>> spec = foreign_spec(lambda completions, **kw: [0.0] * len(completions), "zeros")
        >>> spec.call_kwargs({"answer": ["2"]}, {"scale": 2})
        {'fields': {'answer': ['2']}, 'params': {'scale': 2}}
        """
        return {"fields": dict(fields), "params": dict(params)}


def foreign_form(sig: inspect.Signature) -> str | None:
    """``"verl"``, ``"trl"`` or None: the foreign form a signature has, by its parameter names.

    >>> foreign_form(inspect.signature(lambda completions, **kwargs: []))
    'trl'
    >>> foreign_form(inspect.signature(lambda data_source, solution_str, ground_truth, extra_info=None: 0.0))
    'verl'
    >>> foreign_form(inspect.signature(lambda prompt, completion, **fields: 0.0)) is None
    True
    """
    names = {p.name for p in sig.parameters.values() if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
    if "solution_str" in names:
        return "verl"
    if "completions" in names:
        return "trl"
    return None


def foreign_spec(fn: Callable[..., Any], name: str, sig: inspect.Signature | None = None) -> ForeignSpec | None:
    """``fn`` as a reward spec when its signature is TRL's or verl's form, else None.

    >>> foreign_spec(lambda prompt, completion: 1.0, "rlft_form") is None
    True
    >>> sorted(foreign_spec(lambda completions, solution, *, scale=1.0: [], "acc").keywords)
    ['scale', 'solution']
    """
    sig = sig if sig is not None else inspect.signature(fn)
    form = foreign_form(sig)
    if form is None:
        return None
    params = sig.parameters.values()
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    named = [p.name for p in params if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    mapped = TRL_ARGS if form == "trl" else VERL_ARGS
    keywords = frozenset(n for n in named if n not in mapped and n not in TRL_NOT_PASSED)
    is_async = inspect.iscoroutinefunction(fn)
    adapter = _trl_adapter(fn, sig, name) if form == "trl" else _verl_adapter(fn, sig, name, is_async)
    _copy_identity(fn, adapter)
    return ForeignSpec(
        name=name,
        fn=adapter,
        batched=form == "trl",
        is_async=is_async and form == "verl",  # a TRL coroutine is awaited inside its batched call
        keywords=keywords,
        accepts_fields=None if takes_all else keywords,
        needs_judge=False,
        form=form,
    )


def verl_result(value: Any) -> Any:
    """A verl return value in rlft's terms: a dict's ``"score"`` with its other keys as ``info``.

    >>> verl_result({"score": 1, "acc": True, "pred": "42"})
    RewardResult(score=1, info={'acc': True, 'pred': '42'})
    >>> verl_result(0.5)
    0.5
    >>> verl_result({"acc": 1})
    Traceback (most recent call last):
    ...
    ValueError: verl-style reward returned a dict without a 'score' key (keys: acc)
    """
    if not isinstance(value, dict):
        return value
    if "score" not in value:
        keys = ", ".join(map(str, value))
        raise ValueError(f"verl-style reward returned a dict without a 'score' key (keys: {keys})")
    return RewardResult(value["score"], {k: v for k, v in value.items() if k != "score"})


def trl_results(values: Any) -> list[Any]:
    """A TRL reward's list with ``None`` (does not apply) as 0, the way TRL's weighted sum counts it.

    >>> trl_results([1.0, None, 0.5])
    [1.0, 0.0, 0.5]
    >>> trl_results(1.0)
    Traceback (most recent call last):
    ...
    TypeError: a TRL-style reward returns a list with one float per completion, got float 1.0
    """
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, Iterable):
        raise TypeError(
            "a TRL-style reward returns a list with one float per completion, "
            f"got {type(values).__name__} {values!r:.60}"
        )
    return [0.0 if v is None else v for v in values]


def verl_kwargs(prompt: str, completion: str, fields: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The keywords verl's ``compute_score`` gets for one sample (before they are narrowed to its
    signature).

    >>> kw = verl_kwargs("1+1=", "2", {"answer": "2", "data_source": "gsm8k", "extra_info": {"index": 7},
    ...                  "num_tokens": 1}, {"format_score": 0.1})
    >>> kw["data_source"], kw["solution_str"], kw["ground_truth"], kw["format_score"]
    ('gsm8k', '2', '2', 0.1)
    >>> kw["extra_info"]
    {'num_tokens': 1, 'prompt': '1+1=', 'index': 7}
    """
    extra = {k: v for k, v in fields.items() if k not in ("answer", "data_source", "extra_info")}
    extra["prompt"] = prompt
    row_extra = fields.get("extra_info")
    if isinstance(row_extra, dict):
        extra.update(row_extra)
    mapped = {
        "data_source": fields.get("data_source") or "",
        "solution_str": completion,
        "ground_truth": fields.get("answer"),
        "extra_info": extra,
    }
    return {**params, **mapped}


def _trl_adapter(fn: Callable[..., Any], sig: inspect.Signature, name: str) -> Callable[..., Any]:
    def trl_reward(prompts: list[str], completions: list[str], *, fields: Kw, params: Kw) -> list[Any]:
        kwargs = {**fields, **params, "prompts": list(prompts), "completions": list(completions)}
        values = fn(**_narrowed(kwargs, sig, name, "TRL"))
        if inspect.isawaitable(values):
            values = asyncio.run(_awaited(values))
        return trl_results(values)

    return trl_reward


def _verl_adapter(fn: Callable[..., Any], sig: inspect.Signature, name: str, is_async: bool) -> Callable[..., Any]:
    if is_async:

        async def verl_reward_async(prompt: str, completion: str, *, fields: Kw, params: Kw) -> Any:
            kwargs = _narrowed(verl_kwargs(prompt, completion, fields, params), sig, name, "verl")
            return verl_result(await fn(**kwargs))

        return verl_reward_async

    def verl_reward(prompt: str, completion: str, *, fields: Kw, params: Kw) -> Any:
        return verl_result(fn(**_narrowed(verl_kwargs(prompt, completion, fields, params), sig, name, "verl")))

    return verl_reward


async def _awaited(value: Any) -> Any:
    return await value


def _narrowed(kwargs: dict[str, Any], sig: inspect.Signature, name: str, form: str) -> dict[str, Any]:
    """The keywords ``sig`` takes (all with ``**kwargs``); a required one that is missing fails
    with what rlft supplies."""
    params = sig.parameters.values()
    missing = [
        p.name
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        and p.name not in kwargs
    ]
    if missing:
        where = "list the dataset column in data.metadata_fields, or set it" if form == "TRL" else "set it"
        raise TypeError(
            f"{form}-style reward '{name}' needs {', '.join(repr(m) for m in missing)}, which rlft does not supply; "
            f"it supplies: {', '.join(sorted(kwargs))} ({where} in the reward's params)"
        )
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return kwargs
    by_keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = {p.name for p in params if p.kind in by_keyword}
    return {k: v for k, v in kwargs.items() if k in names}


def _copy_identity(fn: Callable[..., Any], adapter: Callable[..., Any]) -> None:
    """The adapter answers to the user's function's name (error messages, re-registration) and keeps
    its attributes (``__rlft_timeout_s__``); no ``__wrapped__``, so its own signature stays visible."""
    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        if hasattr(fn, attr):
            setattr(adapter, attr, getattr(fn, attr))
    adapter.__dict__.update(getattr(fn, "__dict__", {}))
    adapter.__rlft_foreign__ = fn  # type: ignore[attr-defined]
