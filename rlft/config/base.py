"""What every config section shares: the base model (unknown keys fail, instances are frozen), the
error a bad config raises, and the numeric field types.

>>> class Demo(Section):
...     rate: Positive = 1.0
>>> Demo(rate=0.5).rate
0.5
>>> Demo(rat=0.5)
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for Demo
...
"""

from __future__ import annotations

import typing
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from rlft.algorithms.registry import Registry


class ConfigError(ValueError):
    """A config that failed validation; the message names every bad field by its dotted path."""


class Section(BaseModel):
    """Base of every config model: unknown keys fail, values are validated, instances are frozen."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True
    )


Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]


class Choice(Section):
    """A registered function chosen by name, with hyperparameters checked against its signature
    (``_registry`` names the ``rlft.algorithms.registry.Registry`` of each subclass)."""

    _registry: typing.ClassVar[Registry]

    name: str
    """Registered name of the function."""
    params: dict[str, Any] = {}
    """Keyword hyperparameters of the function; unset ones keep the function's defaults."""

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        cls._registry.get(name)  # raises with the valid names
        return name

    @field_validator("params")
    @classmethod
    def _known_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if name is None:  # the name itself failed; that error is reported
            return params
        return cls._registry.validate_params(name, params)
