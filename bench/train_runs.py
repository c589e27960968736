"""What the training benchmarks share: one whole ``launch.train`` run, timed, its console captured."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any


def train_run(cfg: Any, run_dir: Path) -> tuple[Any, float]:
    """One whole ``launch.train`` run in this process; its summary and wall seconds. Its console
    output goes to ``run_dir/console.log``."""
    from launch.train import train

    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(run_dir / "console.log", "w") as log, contextlib.redirect_stdout(log):
        summary = train(cfg, run_dir, quiet=True)
    return summary, time.perf_counter() - start
