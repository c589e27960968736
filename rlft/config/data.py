"""The policy model and the prompt data: ``model``, ``data`` (with ``data.sources``).

>>> DataSourceConfig(path="builtin:arithmetic").label, DataSourceConfig(path="/d/mix.jsonl").label
('arithmetic', 'mix')
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from rlft.algorithms.registry import did_you_mean
from rlft.config.base import Section


class ModelConfig(Section):
    path: str = "builtin:tiny"
    """Hugging Face model id or local directory; ``builtin:tiny`` is rlft's tiny character-level model."""
    tokenizer: str | None = None
    """Tokenizer id or directory; None uses the model's."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype of the learner and of the rollout engines."""
    trust_remote_code: bool = False
    """Allow model code shipped with the checkpoint (needed by some hub models)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""


class DataSourceConfig(Section):
    path: str
    """A training set (the formats of ``data.train_path``)."""
    weight: Annotated[float, Field(gt=0)] = 1.0
    """Its share of the prompts drawn by the ``weighted_sources`` sampler."""
    name: str | None = None
    """Its name in metrics and as the prompts' ``source`` category (default: the file's stem or the task)."""

    @property
    def label(self) -> str:
        """``name``, else the task of a ``builtin:`` path, else the file or directory stem."""
        if self.name:
            return self.name
        if self.path.startswith("builtin:"):
            return self.path.split(":")[1]
        return Path(self.path).stem


class DataConfig(Section):
    train_path: str = "builtin:arithmetic"
    """Training prompts: a .jsonl/.parquet file, a ``datasets`` directory saved to disk, or ``builtin:<task>``."""
    eval_path: str | None = None
    """Held-out prompts for evaluation (same formats); None uses the built-in task's held-out split."""
    prompt_field: str = "prompt"
    """Column holding the prompt: text, or a list of chat messages (``{role, content}``, TRL's
    conversational format, verl's rows). Every ``*_field`` may be a dotted path into nested fields."""
    answer_field: str | None = "answer"
    """Column holding the reference answer passed to the rewards (e.g. ``reward_model.ground_truth``);
    None when the rewards need none."""
    solution_field: str | None = None
    """Column holding the reference completion that SFT stages train on (text, or one assistant
    message); None: a chat prompt's last message when it is the assistant's (the built-in tasks
    bring their own)."""
    metadata_fields: list[str] = []
    """Further columns passed to rewards and the curriculum (e.g. category, difficulty, tests),
    under their names as written here."""
    chat_template: str = "auto"
    """Apply the tokenizer's chat template: ``auto`` when the tokenizer has one, ``on`` (it must),
    ``off``, or a Jinja chat template given here (for a tokenizer without one, or to replace it).
    Chat-message prompts need one."""
    system_prompt: str | None = None
    """System message prepended when a chat template is applied (to chat prompts that have none)."""
    max_prompt_tokens: Annotated[int, Field(ge=1)] | None = None
    """Prompts longer than this after templating are handled by ``too_long``; None: the model's context
    minus ``rollout.max_new_tokens`` (always the limit when smaller)."""
    too_long: Literal["skip", "error"] = "error"
    """What to do with a prompt over the limit (``max_prompt_tokens``, or what the model's context leaves
    for ``rollout.max_new_tokens``): drop it (counted and reported) or fail."""
    sources: list[DataSourceConfig] = []
    """Several training sets mixed (replaces ``train_path``): each prompt's ``source`` metadata names
    its set, for ``curriculum.category_field: source`` (``weighted_sources`` takes the weights)."""

    @field_validator("chat_template", mode="before")
    @classmethod
    def _chat_template(cls, value: Any) -> Any:
        """YAML reads a bare ``off``/``on`` as a boolean: take it as the mode it spells."""
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, str) and value not in ("auto", "on", "off") and "{{" not in value and "{%" not in value:
            did = did_you_mean(value, ["auto", "on", "off"])
            raise ValueError(
                f"chat_template must be auto, on, off or a Jinja chat template, got {value!r}{did}"
            )
        return value

    @model_validator(mode="after")
    def _unique_sources(self) -> DataConfig:
        labels = [s.label for s in self.sources]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"data source names must be unique, {', '.join(dupes)} repeats: give each a 'name'")
        return self
