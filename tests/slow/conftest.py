"""The slow tier's shared start and its learning criteria.

Every RL run starts from one SFT-warmed checkpoint of the built-in task (``sft_checkpoint``) and is
judged by ``learned`` on three measures:

* ``eval/mean@8`` on the 500 held-out prompts: the mean reward of 8 sampled completions per prompt
  (4,000 samples, standard error ~0.005) must rise by at least ``MIN_SAMPLED_GAIN``;
* the training reward (``reward/mean``, 256 samples a step) averaged over the last 50 steps must
  exceed its average over the first 50 by at least ``MIN_SAMPLED_GAIN``;
* greedy held-out accuracy (500 prompts, one completion each) must not fall by more than
  ``MAX_GREEDY_DROP``.

Why these and not a large greedy gain: the SFT checkpoint is a different model on machines whose
CPUs take other kernel paths (fp32 rounding differs, and 1,000 steps at a constant learning rate
amplify it). Measured greedy accuracy after SFT: 26.3 % on one machine kind, 15.3 % on another,
and 8-87 % across seeds; GRPO at lr 3e-4 then gained +22 and +4 to +7 points. The sampled
measures rise clearly from every start seen, and a sign-flipped control makes them fall.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from launch.cli import EMBEDDED
from launch.train import train
from rlft.config import load_config

SFT_STEPS = 1000
K = 8
COMMON = ["evaluation.num_prompts=500", f"evaluation.pass_k={K}", "checkpoint.keep_last=1"]  # as the RL runs
MIN_SAMPLED_GAIN = 0.02
MAX_GREEDY_DROP = 0.02
WINDOW = 50


@pytest.fixture(scope="session")
def sft_checkpoint(tmp_path_factory) -> str:
    """The embedded default's SFT stage alone (1000 steps): the policy every RL test starts from."""
    run_dir = tmp_path_factory.mktemp("sft")
    cfg = load_config(EMBEDDED, [f"stages=[{{kind: sft, steps: {SFT_STEPS}, batch_size: 64, lr: 3.0e-3}}]", *COMMON])
    summary = train(cfg, run_dir, quiet=True)
    return summary.checkpoints[-1]


class Learning:
    """What one RL stage did: held-out measures before and after, and the training reward's trend.
    The RL runs evaluate with ``COMMON`` (500 held-out prompts, ``pass_k`` 8)."""

    MIN_GAIN = MIN_SAMPLED_GAIN

    def __init__(self, summary: Any, run_dir: Path, stage: str = "rl0"):
        self.before, self.after = summary.evaluations[f"before_{stage}"], summary.evaluations[f"after_{stage}"]
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        self.rows = [r for r in rows if r.get("stage") == stage]
        rewards = [r["reward/mean"] for r in self.rows if "reward/mean" in r]
        self.train_first = sum(rewards[:WINDOW]) / WINDOW
        self.train_last = sum(rewards[-WINDOW:]) / WINDOW

    def gain(self, key: str) -> float:
        return self.after[key] - self.before[key]

    def __str__(self) -> str:
        return (f"greedy accuracy {self.before['eval/accuracy']:.3f} -> {self.after['eval/accuracy']:.3f}, "
                f"mean@{K} {self.before[f'eval/mean@{K}']:.3f} -> {self.after[f'eval/mean@{K}']:.3f}, "
                f"training reward first/last {WINDOW} steps {self.train_first:.3f} -> {self.train_last:.3f}")

    def assert_learned(self, what: str) -> None:
        print(f"{what}: {self}")
        assert self.gain(f"eval/mean@{K}") >= MIN_SAMPLED_GAIN, f"{what} did not raise held-out mean@{K}: {self}"
        assert self.train_last - self.train_first >= MIN_SAMPLED_GAIN, f"{what}: the training reward did not rise: {self}"
        assert self.gain("eval/accuracy") >= -MAX_GREEDY_DROP, f"{what} lowered greedy held-out accuracy: {self}"


@pytest.fixture
def learned() -> Callable[[Any, Path], Learning]:
    """``learned(summary, run_dir)``: the ``Learning`` of a finished run's RL stage."""
    return Learning
