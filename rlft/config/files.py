"""Loading a run configuration from YAML and dotted overrides, validating it with errors that name
the key (and the closest valid one), and writing the resolved config back.

>>> parse_override("algo.loss.params.clip_high=0.28")
(['algo', 'loss', 'params', 'clip_high'], 0.28)
>>> apply_overrides({"learner": {"lr": 1e-5}}, ["learner.lr=0.001", "stages=[{kind: rl, steps: 2}]"])
{'learner': {'lr': 0.001}, 'stages': [{'kind': 'rl', 'steps': 2}]}
"""

from __future__ import annotations

import copy
import types
import typing
from pathlib import Path
from typing import Any

import pydantic
import yaml
from pydantic import BaseModel

from rlft.algorithms.registry import did_you_mean
from rlft.config.base import ConfigError
from rlft.config.run import RunConfig


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"algo.loss.params.clip_high=0.28"`` -> ``(["algo", "loss", "params", "clip_high"], 0.28)``.

    The value is read as YAML, so ``true``, ``null``, ``[a, b]`` and ``{k: v}`` work.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{text}' must look like dotted.key=value")
    path = key.strip().split(".")
    if any(not part for part in path):
        raise ConfigError(f"override '{text}' has an empty key segment")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{text}': value is not valid YAML ({err})") from None
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of the raw config ``data`` with dotted ``key=value`` overrides set (validated later)."""
    data = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            where = ".".join(path[: i + 1])
            if isinstance(node, list):
                node = node[_list_index(part, node, where)]
            elif isinstance(node, dict):
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
            else:
                raise ConfigError(f"override '{text}': '{'.'.join(path[:i])}' is not a section")
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"override '{text}': '{where}' is a value, not a section")
        last = path[-1]
        if isinstance(node, list):
            node[_list_index(last, node, text)] = value
        else:
            node[last] = value
    return data


def _list_index(part: str, node: list[Any], where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"'{where}': '{part}' is not an index of a list of {len(node)} items")
    return int(part)


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    base_dir: str | Path | None = None,
) -> RunConfig:
    """Read a YAML file (or the defaults when ``path`` is None), apply overrides, validate.

    Relative plugin and reward file paths resolve against ``base_dir``: by default the config file's
    directory (the working directory without a file). Raises ``ConfigError`` naming each bad field by
    its dotted path, with the closest valid key.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping, got {type(loaded).__name__}")
        data = loaded or {}
        base_dir = path.parent if base_dir is None else base_dir
    return validate_config(apply_overrides(data, list(overrides)), base_dir=base_dir)


def validate_config(data: dict[str, Any], base_dir: str | Path | None = None) -> RunConfig:
    """Validate a raw mapping into a ``RunConfig``; plugin paths resolve against ``base_dir``."""
    try:
        return RunConfig.model_validate(data, context={"base_dir": base_dir})
    except pydantic.ValidationError as err:
        raise ConfigError(format_errors(err)) from None


def format_errors(err: pydantic.ValidationError) -> str:
    """One line per error: ``dotted.path: message`` (with the closest valid key for unknown keys)."""
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        where = ".".join(loc)
        if e["type"] == "extra_forbidden":
            valid = _valid_keys(e["loc"][:-1])
            msg = f"unknown key{did_you_mean(loc[-1], valid)}; valid keys: {', '.join(valid)}"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] not in ("value_error", "assertion_error", "missing"):
                msg += f" (got {e['input']!r})"
        lines.append(f"  {where}: {msg}" if loc else f"  {msg}")
    return "invalid config:\n" + "\n".join(lines)


def _valid_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the model found at ``loc`` inside ``RunConfig``."""
    model: Any = RunConfig
    for part in loc:
        if isinstance(part, int):
            continue  # list index: the element type was taken when entering the list
        model = _unwrap(model.model_fields[part].annotation)
    return sorted(model.model_fields) if _is_model(model) else []


def _unwrap(annotation: Any) -> Any:
    """The model type inside ``X | None`` or ``list[X]``, else the annotation itself."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            if _is_model(arg):
                return arg
    return annotation


def _is_model(x: Any) -> bool:
    return isinstance(x, type) and issubclass(x, BaseModel)


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML; ``load_config`` of it gives an equal object.

    With a critic, ``algo.advantage`` is left out: GAE makes the advantages, and a config that
    names an estimator beside a critic is refused (so a run's ``config.yaml`` could not be resumed).
    """
    data = cfg.model_dump(mode="json")
    if cfg.critic is not None:
        data["algo"].pop("advantage", None)
    return yaml.safe_dump(data, sort_keys=False)


def save_config(cfg: RunConfig, path: str | Path) -> Path:
    """Write the resolved config to ``path`` (the run directory's ``config.yaml``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_config(cfg))
    return path
