"""Checkpoint directories: written atomically, found again, pruned.

A checkpoint is ``<checkpoint_dir>/step-NNNNNN/``: the policy in Hugging Face format (safetensors,
config, tokenizer: ``AutoModelForCausalLM.from_pretrained`` loads it) and, unless the run saves
weights only, ``trainer_state/``: each learner rank's optimizer, version and RNG state, and the
driver's state (step, stage position, sampler states, RNG states, evaluations so far).

It is written under ``step-NNNNNN.tmp`` and renamed into place when complete, so a checkpoint cut off
mid-write (a crash, a full disk) is never mistaken for one: only ``step-NNNNNN`` directories count,
and resuming needs ``trainer_state/driver.pt`` in them.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for step in (3, 6):
...     with atomic_dir(root / step_dir_name(step)) as tmp:
...         _ = (tmp / "trainer_state").mkdir(), (tmp / "trainer_state" / DRIVER_STATE).write_bytes(b"x")
>>> (root / "step-000009.tmp").mkdir()            # an interrupted write
>>> latest_checkpoint(root).name, [p.name for p in list_checkpoints(root)]
('step-000006', ['step-000003', 'step-000006'])
"""

from __future__ import annotations

import os
import random
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

DRIVER_STATE = "driver.pt"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was asked for, or one that does not fit the run."""


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh ``<final>.tmp`` to fill; on success it is renamed to ``final`` (replacing an
    older directory of that name), on any error it is removed and ``final`` is left as it was."""
    final = Path(final)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        _fsync_tree(tmp)
        if final.exists():
            old = final.with_name(final.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_tree(path: Path) -> None:
    """Flush every file's data to disk before the rename makes the checkpoint visible."""
    for file in path.rglob("*"):
        if file.is_file():
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def list_checkpoints(checkpoint_dir: str | Path, *, resumable: bool = True) -> list[Path]:
    """Complete checkpoints in step order (``resumable``: only those with the training state)."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        match = _STEP_DIR.match(p.name)
        if match and p.is_dir() and (not resumable or (p / "trainer_state" / DRIVER_STATE).is_file()):
            found.append((int(match.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The newest complete, resumable checkpoint, or None."""
    found = list_checkpoints(checkpoint_dir)
    return found[-1] if found else None


def resolve_resume(target: str | Path) -> Path:
    """A checkpoint to resume from: a ``step-N`` directory itself, or the latest in a run directory
    (``<run>/checkpoints``) or a checkpoint directory."""
    path = Path(target)
    if (path / "trainer_state" / DRIVER_STATE).is_file():
        return path
    for root in (path / "checkpoints", path):
        latest = latest_checkpoint(root)
        if latest is not None:
            return latest
    raise CheckpointError(
        f"no complete checkpoint with training state under {path} (a weights-only checkpoint cannot "
        "resume a run; checkpoints cut off mid-write are ignored)"
    )


def prune(checkpoint_dir: str | Path, keep_last: int | None) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints; the removed paths."""
    if keep_last is None:
        return []
    found = list_checkpoints(checkpoint_dir, resumable=False)
    removed = found[:-keep_last] if keep_last > 0 else found
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


def rng_state() -> dict[str, Any]:
    """The driver process's Python, NumPy and torch RNG states."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_driver_state(checkpoint: Path, state: dict[str, Any]) -> None:
    (checkpoint / "trainer_state").mkdir(parents=True, exist_ok=True)
    torch.save(state, checkpoint / "trainer_state" / DRIVER_STATE)


def load_driver_state(checkpoint: Path) -> dict[str, Any]:
    return torch.load(checkpoint / "trainer_state" / DRIVER_STATE, weights_only=False)
