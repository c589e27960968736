"""What a run writes: metric sinks and the report (``logging``, with ``logging.wandb``) and
checkpoints (``checkpoint``).

>>> LoggingConfig().backends
['console', 'jsonl']
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from rlft.config.base import Section


LoggerName = Literal["console", "jsonl", "tensorboard", "wandb"]


class WandbConfig(Section):
    project: str = "rlft"
    """Weights & Biases project."""
    entity: str | None = None
    """Team or user; None: the API key's default entity."""
    name: str | None = None
    """Run name; None: the run directory's name."""
    tags: list[str] = []
    """Tags of the wandb run."""
    mode: Literal["auto", "online", "offline"] = "auto"
    """``auto``: online when an API key is configured (WANDB_API_KEY or ~/.netrc), offline otherwise;
    never prompts. An offline run can be uploaded later with ``wandb sync``."""


class LoggingConfig(Section):
    backends: list[LoggerName] = ["console", "jsonl"]
    """Metric sinks: console, jsonl (always written), tensorboard, wandb."""
    run_root: str = "runs"
    """Directory under which each run gets ``<name>-<timestamp>/``."""
    log_every: Annotated[int, Field(ge=1)] = 1
    """Log metrics every this many steps."""
    progress: Literal["auto", "bar", "lines", "quiet"] = "auto"
    """Console: a live progress bar per stage (``auto`` when the console is a terminal), one compact
    line per step, or nothing but warnings and the summary."""
    sample_every: Annotated[int, Field(ge=0)] = 10
    """Log sample completions (prompt, completion, rewards) every this many RL steps; 0 never."""
    samples_per_step: Annotated[int, Field(ge=1)] = 8
    """Sample completions logged each time."""
    report: bool = True
    """Write the HTML run report (``report/index.html`` with plots) when the run ends."""
    wandb: WandbConfig = WandbConfig()
    """Weights & Biases settings (used when ``wandb`` is among the backends)."""


class CheckpointConfig(Section):
    every: Annotated[int, Field(ge=0)] = 0
    """Save every this many steps (and at the end of the run); 0 saves at the end only."""
    keep_last: Annotated[int, Field(ge=1)] | None = 2
    """Keep this many most recent checkpoints; None keeps all."""
    weights_only: bool = False
    """Save the model only (no optimizer, sampler or RNG state: such a checkpoint cannot resume exactly)."""
    resume: str = "never"
    """``never``, ``auto`` (latest complete checkpoint of the run directory), or a run/checkpoint path."""
    on_interrupt: bool = True
    """Write a checkpoint when the run is interrupted (Ctrl-C / SIGTERM)."""
