"""DAPO dynamic sampling on the built-in task with the real runtime: prompts whose reward is constant
by construction give zero-variance groups; the driver draws more prompts until every step trains on
a full batch with none of them, and logs the extra generation rounds. Every sample continues a prefix
of its prompt's reference answer (Prefix-RFT's prefix sampling, share 1): vLLM generates from prompt +
prefix, and the rewards score prefix + continuation."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

RLFT = str(Path(sys.executable).parent / "rlft")
REWARD = """
def half_constant(prompt, completion):
    # constant for an even first operand (no signal); otherwise a value that differs between almost
    # any two completions (a checksum of the text), so those groups carry signal
    if int(prompt.split("+")[0]) % 2 == 0:
        return 1.0
    return sum(map(ord, completion)) % 97 / 97
"""


def test_dynamic_sampling_fills_full_batches_without_zero_variance_groups(tmp_path):
    (tmp_path / "my_rewards.py").write_text(REWARD)
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [RLFT, "train", "stages=[{kind: rl, steps: 3}]", "rollout.prompts_per_step=6", "rollout.group_size=4",
         "algo.dynamic_sampling.enabled=true", "algo.dynamic_sampling.max_extra_rounds=8",
         "curriculum.name=learnability", "reward.functions=[{path: ./my_rewards.py:half_constant}]",
         "evaluation.num_prompts=4", "evaluation.pass_k=0", "cluster.dashboard=false",
         "algo.guidance={name: prefix, params: {share: 1.0, min_fraction: 0.5, max_fraction: 0.9, anneal: none}}",
         "logging.sample_every=1", "logging.samples_per_step=24", "--run-dir", str(run_dir)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.get("stage") == "rl1"]
    assert len(steps) == 3
    for r in steps:
        assert r["batch/samples"] == 24 and r["batch/zero_variance_group_fraction"] == 0.0  # full, all signal
        assert r["sampling/groups_short"] == 0.0 and len(r["prompt_ids"]) == 6
    # about half of the drawn prompts are constant: extra rounds were needed and are logged
    assert sum(r["sampling/rounds"] for r in steps) > 3
    assert all(r["sampling/zero_variance_fraction"] > 0 for r in steps if r["sampling/rounds"] > 1)
    assert all(r["curriculum/seen"] > 0 for r in steps)  # the learnability sampler observed the groups
    # each sample continued 1-3 tokens of its reference answer (1-3 digits), masked out of the loss
    assert all(r["prefix/samples"] == 24 and 1 <= r["prefix/tokens_mean"] <= 3 for r in steps)
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 72
    for s in samples:
        a, b = map(int, re.search(r"(\d+)\+(\d+)=", s["prompt"]).groups())
        assert s["completion"].startswith(str(a + b)[: s["demo_tokens"]]), s
