"""``rlft export``: a run's checkpoint as a plain Hugging Face model directory.

A checkpoint directory already is one (plus ``trainer_state/``); export copies just the model files,
so the result can be shared, uploaded, or served by vLLM without the training state.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rlft.checkpointing import CheckpointError, list_checkpoints, step_dir_name


def find_checkpoint(run_dir: Path, step: int | None = None) -> Path:
    """``run_dir/checkpoints/step-N`` (the latest complete one without ``step``); a checkpoint
    directory given directly is returned as it is."""
    if (run_dir / "config.json").is_file():
        return run_dir
    root = run_dir / "checkpoints" if (run_dir / "checkpoints").is_dir() else run_dir
    found = list_checkpoints(root, resumable=False)
    if step is not None:
        found = [p for p in found if p.name == step_dir_name(step)]
    if not found:
        which = f"step {step}" if step is not None else "any step"
        available = ", ".join(p.name for p in list_checkpoints(root, resumable=False)) or "none"
        raise CheckpointError(f"no complete checkpoint for {which} under {root} (available: {available})")
    return found[-1]


def export(run_dir: Path, out_dir: Path, *, step: int | None = None) -> Path:
    """Copy the model files (weights, config, tokenizer) of a checkpoint to ``out_dir``."""
    source = find_checkpoint(run_dir, step)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise CheckpointError(f"{out_dir} exists and is not empty")
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("trainer_state"))
    if out_dir.exists():
        out_dir.rmdir()
    tmp.rename(out_dir)
    return out_dir
