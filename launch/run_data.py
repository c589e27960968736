r"""What ``rlft report`` reads from a run directory: ``RunData`` (metrics, samples, config, summary),
read defensively (a half-written last line and non-finite values are skipped), and the metric names
the report's page and plots share.

>>> import tempfile
>>> run = Path(tempfile.mkdtemp())
>>> _ = (run / "metrics.jsonl").write_text('{"step": 1, "stage": "rl1", "reward/mean": 0.5}\n{"step": 2, "rew')
>>> data = load_run(run)
>>> data.series("reward/mean")[1].tolist(), data.skipped_lines, data.stages()
([0.5], 1, [('rl1', 1.0, 1.0)])
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PLOT_FILES = ("reward.png", "eval.png", "kl.png", "entropy.png", "length.png", "timing.png", "sft_loss.png")
TIME_PHASES = ("time/generate", "time/reward", "time/train", "time/sync")

_REWARD_FN = re.compile(r"^reward/(.+)/mean$")
_PASS_K = re.compile(r"^eval/pass@\d+$")


@dataclass
class RunData:
    """What the report reads from a run directory; missing files leave their field empty/None."""

    run_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl, finite numbers and `stage`
    skipped_lines: int = 0  # malformed lines of metrics.jsonl
    metrics_found: bool = False
    samples: list[dict[str, Any]] = field(default_factory=list)
    samples_found: bool = False
    config_text: str | None = None
    config: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    _keys: list[str] | None = field(default=None, repr=False)

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of ``key`` sorted by step; a step logged twice (a resumed run) keeps its last value."""
        by_step = {r["step"]: r[key] for r in self.rows if key in r}
        steps = np.array(sorted(by_step), dtype=float)
        return steps, np.array([by_step[s] for s in steps], dtype=float)

    def keys(self) -> list[str]:
        """Every metric name logged, in first-seen order."""
        if self._keys is None:
            seen: dict[str, None] = {}
            for r in self.rows:
                seen.update(dict.fromkeys(r))
            self._keys = list(seen)
        return self._keys

    def stages(self) -> list[tuple[str, float, float]]:
        """Consecutive segments ``(stage, first_step, last_step)`` in step order."""
        by_step = {r["step"]: r["stage"] for r in self.rows if isinstance(r.get("stage"), str)}
        segments: list[list[Any]] = []
        for step in sorted(by_step):
            if segments and segments[-1][0] == by_step[step]:
                segments[-1][2] = step
            else:
                segments.append([by_step[step], step, step])
        return [(s, a, b) for s, a, b in segments]


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of ``path``, and how many non-empty lines were not one (e.g. a cut last line)."""
    rows, bad = [], 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(obj, dict):
                rows.append(obj)
            else:
                bad += 1
    return rows, bad


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _clean_metrics(row: dict[str, Any]) -> dict[str, Any] | None:
    """Finite numbers plus the ``stage`` string; None when the row has no usable step."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k == "stage" and isinstance(v, str):
            out[k] = v
        elif _finite(v):
            out[k] = float(v)
    return out if "step" in out else None


def load_run(run_dir: Path) -> RunData:
    data = RunData(run_dir=run_dir)
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        data.metrics_found = True
        raw, data.skipped_lines = read_jsonl(metrics)
        data.rows = [r for r in map(_clean_metrics, raw) if r is not None]
    samples = run_dir / "samples.jsonl"
    if samples.is_file():
        data.samples_found = True
        data.samples = [s for s in read_jsonl(samples)[0] if _finite(s.get("step"))]
    config = run_dir / "config.yaml"
    if config.is_file():
        data.config_text = config.read_text(encoding="utf-8", errors="replace")
        try:
            import yaml

            loaded = yaml.safe_load(data.config_text)
            data.config = loaded if isinstance(loaded, dict) else None
        except Exception:  # a broken config still shows as text
            data.config = None
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            loaded = json.loads(summary.read_text(encoding="utf-8"))
            data.summary = loaded if isinstance(loaded, dict) else None
        except ValueError:
            data.summary = None
    return data

