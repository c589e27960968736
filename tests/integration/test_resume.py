"""Exact resume with the real runtime: run A trains 2 SFT steps then 7 RL steps (with a KL term)
straight; run B trains, is killed with SIGKILL (its whole process tree, no clean shutdown) once its
step-6 checkpoint exists, and resumes with ``rlft train --resume`` to step 9. B's steps 7-9 must equal
A's: the same prompts, the same metrics (the KL too: the RL stage measures it against the snapshot
of the SFT policy, which the resumed run must reload), and final weights equal bitwise (CPU, fixed
seeds, fp32: the learner's update, vLLM's seeded sampling and the weight sync are deterministic, and
a checkpoint restores every bit of state that feeds them).

Twice: GRPO with the KL in the loss (and ReLIFT's buffer of unsolved prompts), and PPO with a learned critic (its warm-up, its value model and
optimizer, GAE over KL-penalised token rewards with the adaptive KL coefficient), whose critic
weights must also come back bitwise."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

RLFT = str(Path(sys.executable).parent / "rlft")
REWARD = """
def odd_digits(prompt, completion):
    return sum(c in "13579" for c in completion) / max(len(completion), 1)
"""
RUN = [
    "stages=[{kind: sft, steps: 2, batch_size: 8}, {kind: rl, steps: 7}]",
    "rollout.prompts_per_step=4",
    "rollout.group_size=4",
    "learner.lr=1e-3",
    "checkpoint.every=3",
    "checkpoint.keep_last=null",
    "evaluation.num_prompts=4",
    "evaluation.pass_k=0",
    "cluster.dashboard=false",
    "logging.progress=lines",
]
VOLATILE = ("time", "time/", "throughput/", "sync/seconds", "sync/load_seconds", "learner/tokens_per_s", "sft/tokens_per_s",
            "guidance/tokens_per_s", "perf/")
PPO_EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "ppo.yaml")  # critic, KL in the reward
ARGS = {
    # the embedded default (no config file): the KL in the loss; ReLIFT's SFT steps on the reference
    # solutions of the prompts no sample solved (all digits odd: almost none), 6 prompts at a time
    "grpo": [*RUN, "algo.kl.coef=0.1", "algo.guidance={name: relift, params: {batch_size: 6}}"],
    "ppo": [PPO_EXAMPLE, *RUN, "critic.warmup_steps=2", "critic.epochs=2", "critic.micro_batch_size=8",
            "learner.warmup_steps=0", "algo.kl.coef=0.1", "algo.kl.target=0.5", "algo.kl.horizon=100"],
}


def _rows(run_dir: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if r.get("stage") == "rl1"}


def _stable(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(VOLATILE)}


def _kill_session(sid: int) -> None:
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.pid) == sid:
                p.kill()
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass


@pytest.mark.parametrize("algo", ["grpo", "ppo"])
def test_killed_run_resumes_exactly(tmp_path, algo):
    # an absolute path: a relative one resolves against the config file's directory (examples/ for PPO)
    run = [*ARGS[algo], f"reward.functions=[{{path: {tmp_path / 'my_rewards.py'}:odd_digits}}]"]
    (tmp_path / "my_rewards.py").write_text(REWARD)
    a, b = tmp_path / "a", tmp_path / "b"
    out = subprocess.run([RLFT, "train", *run, "--run-dir", str(a)], capture_output=True, text=True,
                         timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]

    proc = subprocess.Popen([RLFT, "train", *run, "--run-dir", str(b)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=tmp_path, start_new_session=True)
    deadline = time.time() + 600
    while not (b / "checkpoints" / "step-000006").is_dir():
        assert proc.poll() is None, "run B ended before its step-6 checkpoint"
        assert time.time() < deadline, "run B did not reach its step-6 checkpoint"
        time.sleep(0.2)
    _kill_session(proc.pid)  # SIGKILL to the driver, Ray and every actor: no clean shutdown
    proc.wait(timeout=60)
    time.sleep(2)
    killed_at = max(_rows(b), default=0)

    out = subprocess.run([RLFT, "train", "--resume", str(b)], capture_output=True, text=True, timeout=900,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    rows_a, rows_b = _rows(a), _rows(b)
    # versions: 2 SFT steps, then one per RL step (PPO: after its 2 critic-only warm-up steps), plus
    # ReLIFT's SFT steps (GRPO)
    version = int(rows_a[6]["version"])
    assert version == 4 if algo == "ppo" else version > 6
    assert "rlft: resumed from" in out.stdout and f"step 6, policy version {version}" in out.stdout

    assert sorted(rows_b) == list(range(3, 10)), f"killed at step {killed_at}; rows {sorted(rows_b)}"
    assert [rows_b[s]["prompt_ids"] for s in range(3, 10)] == [rows_a[s]["prompt_ids"] for s in range(3, 10)]
    # the first RL step starts from the SFT policy, which is also its reference; then the KL grows
    if algo == "grpo":
        assert rows_a[3]["learner/kl"] == 0.0 and rows_a[9]["learner/kl"] > 0.0
        # the checkpoint held prompts waiting in ReLIFT's buffer, and SFT steps on them ran after it
        assert rows_a[6]["relift/buffer"] > 0 and any("guidance/loss" in rows_a[s] for s in (7, 8, 9))
    else:  # measured on the engine's samples: the same weights up to the engine's numerics
        assert abs(rows_a[3]["ppo/kl"]) < 1e-3
        assert [rows_a[s].get("critic/warmup", 0.0) for s in (3, 4, 5)] == [1.0, 1.0, 0.0]
        assert rows_a[9]["ppo/kl_coef"] != 0.1  # the adaptive coefficient moved, and resumed where it was
    assert (b / "reference" / "rl1" / "model.safetensors").is_file()
    for step in (7, 8, 9):
        sa, sb = _stable(rows_a[step]), _stable(rows_b[step])
        assert sa.keys() == sb.keys(), step
        for key in sa:
            expected = pytest.approx(sa[key], rel=1e-6, abs=1e-9) if isinstance(sa[key], float) else sa[key]
            assert sb[key] == expected, (step, key, sa[key], sb[key])
    wa = load_file(a / "checkpoints" / "step-000009" / "model.safetensors")
    wb = load_file(b / "checkpoints" / "step-000009" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(wa[k].equal(wb[k]) for k in wa), "final weights differ"
    if algo == "ppo":
        ca, cb = (torch.load(r / "checkpoints" / "step-000009" / "critic" / "value_model.pt") for r in (a, b))
        assert ca.keys() == cb.keys() and all(ca[k].equal(cb[k]) for k in ca), "final critic weights differ"
    # the resumed run also kept its earlier evaluation and wrote a complete, exportable checkpoint
    summary = json.loads((b / "summary.json").read_text())
    assert set(summary["evaluations"]) == {"before_rl1", "after_rl1"}
    out = subprocess.run([RLFT, "export", str(b), str(tmp_path / "exported")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "exported" / "trainer_state").exists()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "exported")
