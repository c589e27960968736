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

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class ConfigError(ValueError):
    """A config that failed validation; the message names every bad field by its dotted path."""


class Section(BaseModel):
    """Base of every config model: unknown keys fail, values are validated, instances are frozen."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True
    )


Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
