"""Every field of the run configuration with its default and description, read from the schema
itself (what ``rlft check --describe [SECTION]`` prints).

>>> print(describe("learner.lr"))
learner.lr: 1e-06
    Peak learning rate of AdamW.
"""

from __future__ import annotations

import inspect
import json
import textwrap
import typing
from collections.abc import Iterator
from typing import Any, NamedTuple

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from rlft.algorithms.registry import did_you_mean
from rlft.config.base import ConfigError
from rlft.config.run import RunConfig


class FieldDoc(NamedTuple):
    """One field: its dotted path (``*`` stands for a list index), default as shown, description."""

    path: str
    default: str
    description: str


def sections_of(annotation: Any) -> list[type[BaseModel]]:
    """The config models inside a field's type (``X``, ``X | None``, ``list[X]``).

    >>> from rlft.config.reward import RewardConfig
    >>> [m.__name__ for m in sections_of(RewardConfig.model_fields["functions"].annotation)]
    ['RewardFunctionConfig']
    """
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in sections_of(arg)]


def field_docs(model: type[BaseModel] = RunConfig, prefix: str = "") -> Iterator[FieldDoc]:
    """Every field under ``model`` depth first, in the schema's order; a section's own fields
    follow the line of the section (a list of sections: ``path.*.field``).

    >>> [d.path for d in field_docs()][:3]
    ['name', 'seed', 'plugins']
    """
    for name, info in model.model_fields.items():
        path = prefix + name
        default = info.get_default(call_default_factory=True)
        text = info.description or ""
        if name == "params" and "name" in model.model_fields:
            text += _function_defaults(model)
        yield FieldDoc(path, show_default(default, info.is_required()), text)
        origin = typing.get_origin(info.annotation)
        for sub in sections_of(info.annotation):
            yield from field_docs(sub, f"{path}.*." if origin is list else f"{path}.")


def show_default(value: Any, required: bool = False) -> str:
    """A default as it would be written in YAML (``required`` when the field has none).

    >>> show_default(1e-06), show_default(None), show_default([]), show_default(True), show_default("x")
    ('1e-06', 'null', '[]', 'true', 'x')
    """
    if required or value is PydanticUndefined:
        return "(required)"
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        value = [v.model_dump(mode="json", exclude_defaults=True) for v in value]
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def describe(section: str = "") -> str:
    """The fields under ``section`` (a dotted path such as ``learner`` or ``cluster.rollout``, or a
    single field; empty: all of them), each as ``path: default`` and its description below.

    >>> describe("learner.lrr")
    Traceback (most recent call last):
    ...
    rlft.config.base.ConfigError: no config field or section 'learner.lrr' (did you mean 'learner.lr'?)
    """
    docs = list(field_docs())
    key = section.strip().strip(".")
    if key:
        docs = [d for d in docs if _under(d.path, key)]
    if not docs:
        paths = [d.path for d in field_docs()]
        did = did_you_mean(key, paths) or "; `rlft check --describe` lists them all"
        raise ConfigError(f"no config field or section '{section}'{did}")
    lines = []
    for d in docs:
        lines.append(f"{d.path}: {d.default}")
        text = " ".join(d.description.split())
        lines.extend(textwrap.wrap(text, 100, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(lines)


def _function_defaults(model: type[BaseModel]) -> str:
    """For a ``{name, params}`` choice: the keyword defaults of the function chosen by default,
    which unset ``params`` keep (``{}`` is not "no clipping")."""
    registry = getattr(model, "_registry", None)
    name = model.model_fields["name"].default
    if registry is None or not isinstance(name, str):
        return ""
    try:
        params = inspect.signature(registry.get(name)).parameters.values()
    except (TypeError, ValueError):
        return ""
    shown = [f"{p.name}={p.default!r}" for p in params if p.kind is p.KEYWORD_ONLY and p.default is not p.empty]
    return f" For {name} (the default name): {', '.join(shown)}." if shown else ""


def _under(path: str, key: str) -> bool:
    """``path`` is ``key`` or inside it; a list's ``*`` matches an index (``stages.0.kind``)."""
    parts, want = path.split("."), key.split(".")
    if len(parts) < len(want):
        return False
    return all(p == w or (p == "*" and w.isdigit()) for p, w in zip(parts, want))
