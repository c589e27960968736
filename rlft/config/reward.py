"""Reward functions and the reward workers: ``reward`` (functions, workers, judge, sandbox).

>>> RewardFunctionConfig(name="exact_match").key, RewardFunctionConfig(path="pkg.mod:score").key
('exact_match', 'score')
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from rlft.config.base import NonNegative, Positive, Section


class RewardFunctionConfig(Section):
    name: str | None = None
    """A registered reward's name (e.g. ``exact_match``, ``math_verify``; ``rlft check`` lists them)."""
    path: str | None = None
    """Or a user function: ``my_pkg.rewards:score`` (module) or ``./my_rewards.py:score`` (file)."""
    label: str | None = None
    """Name of this reward in metrics and logs (default: ``name``, or the function's name)."""
    weight: float = 1.0
    """Weight of this reward in the weighted sum."""
    params: dict[str, Any] = {}
    """Keyword arguments passed to the reward function (they win over dataset fields of the same name)."""
    timeout_s: Positive | None = None
    """Per-call time limit of this reward; None takes ``reward.timeout_s``."""

    @field_validator("path")
    @classmethod
    def _absolute_file(cls, path: str | None, info: ValidationInfo) -> str | None:
        """A relative ``file.py:function`` resolves against the config file's directory (else the
        working directory) once, here, so every process reads the same file."""
        if path is None or ":" not in path:
            return path
        target, _, fn = path.rpartition(":")
        if not (target.endswith(".py") or "/" in target) or Path(target).expanduser().is_absolute():
            return path
        base = Path((info.context or {}).get("base_dir") or Path.cwd())
        return f"{(base / target).resolve()}:{fn}"

    @model_validator(mode="after")
    def _one_source(self) -> RewardFunctionConfig:
        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of 'name' or 'path' for a reward function")
        if self.path is not None and ":" not in self.path:
            raise ValueError(
                f"reward path {self.path!r} must name the function: 'module:function' or 'file.py:function'"
            )
        return self

    @property
    def key(self) -> str:
        """The reward's name in metrics: ``label``, else ``name``, else the function's name."""
        return self.label or self.name or str(self.path).rsplit(":", 1)[1]


class JudgeConfig(Section):
    model: str
    """Judge model: a local Hugging Face directory (or ``builtin:tiny`` for tests)."""
    max_new_tokens: Annotated[int, Field(ge=1)] = 16
    """Tokens the judge may write per verdict."""
    temperature: NonNegative = 0.0
    """Judge sampling temperature (0 = greedy, reproducible verdicts)."""
    num_gpus: NonNegative = 0.0
    """GPUs of the judge engine actor (0 on CPU)."""
    num_cpus: Positive = 1.0
    """CPUs of the judge engine actor."""
    engine_kwargs: dict[str, Any] = {}
    """Extra ``vllm.LLM`` arguments of the judge engine (CPU-safe defaults are applied first)."""


class SandboxConfig(Section):
    """Where rewards run untrusted code (``code_tests``; your own rewards through ``rewards.sandbox``)."""

    name: Annotated[str, Field(min_length=1)] = "namespaces"
    """``rewards.sandbox.SANDBOXES``: ``namespaces`` (default; Linux namespaces, seccomp), ``remote``
    (an HTTP service, ``params: {url: ...}``) or ``weak_process`` (WEAK: no OS isolation)."""
    params: dict[str, Any] = {}
    """Keyword parameters of the backend (checked against its factory when reward workers start)."""


class RewardConfig(Section):
    functions: list[RewardFunctionConfig] = []
    """Reward functions, summed by weight; empty uses the built-in task's own verifier."""
    num_workers: Annotated[int, Field(ge=1)] = 1
    """Reward worker actors; samples are spread across them."""
    processes_per_worker: Annotated[int, Field(ge=1)] = 2
    """Isolated processes per reward worker that run the reward calls."""
    timeout_s: Positive = 5.0
    """Per-call time limit; a reward that exceeds it marks the sample failed (not a score of 0)."""
    memory_mb: Annotated[int, Field(ge=64)] = 2048
    """Memory (address space, MiB) a reward call may allocate on top of its process's start-up size."""
    max_failure_rate: Annotated[float, Field(ge=0, le=1)] = 0.5
    """A step whose fraction of failed samples exceeds this stops the run with an error."""
    log_errors: Annotated[int, Field(ge=0)] = 3
    """The first N reward errors of each step are logged with their sample."""
    judge: JudgeConfig | None = None
    """The judge engine for model-based rewards (``llm_judge``, ``rubric``)."""
    sandbox: SandboxConfig = SandboxConfig()
    """The sandbox for rewards that run code; the run refuses to start where it cannot run."""

    @model_validator(mode="after")
    def _unique_keys(self) -> RewardConfig:
        keys = [f.key for f in self.functions]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"reward names must be unique, {', '.join(dupes)} repeats: give each a 'label'")
        return self
