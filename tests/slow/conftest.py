"""The slow tier's shared start: one SFT-warmed checkpoint of the built-in task for every RL run."""

from __future__ import annotations

import pytest

from launch.cli import EMBEDDED
from launch.train import train
from rlft.config import load_config

SFT_STEPS = 1000
COMMON = ["evaluation.num_prompts=300", "evaluation.pass_k=0", "checkpoint.keep_last=1"]  # as the RL runs


@pytest.fixture(scope="session")
def sft_checkpoint(tmp_path_factory) -> str:
    """The embedded default's SFT stage alone (1000 steps): the policy every RL test starts from."""
    run_dir = tmp_path_factory.mktemp("sft")
    cfg = load_config(EMBEDDED, [f"stages=[{{kind: sft, steps: {SFT_STEPS}, batch_size: 64, lr: 3.0e-3}}]", *COMMON])
    summary = train(cfg, run_dir, quiet=True)
    return summary.checkpoints[-1]
