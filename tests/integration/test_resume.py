"""Exact resume with the real runtime: run A trains 6 RL steps straight; run B trains, is killed with
SIGKILL (its whole process tree, no clean shutdown) once its step-3 checkpoint exists, and resumes
with ``rlft train --resume`` to step 6. B's steps 4-6 must equal A's: the same prompts, the same
metrics, and final weights equal bitwise (CPU, fixed seeds, fp32: the learner's update, vLLM's
seeded sampling and the weight sync are deterministic, and a checkpoint restores every bit of state
that feeds them)."""

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
from safetensors.torch import load_file

RLFT = str(Path(sys.executable).parent / "rlft")
REWARD = """
def odd_digits(prompt, completion):
    return sum(c in "13579" for c in completion) / max(len(completion), 1)
"""
RUN = [
    "stages=[{kind: rl, steps: 6}]",
    "rollout.prompts_per_step=4",
    "rollout.group_size=4",
    "learner.lr=1e-3",
    "checkpoint.every=3",
    "checkpoint.keep_last=null",
    "evaluation.num_prompts=4",
    "evaluation.pass_k=0",
    "reward.functions=[{path: ./my_rewards.py:odd_digits}]",
    "cluster.dashboard=false",
    "logging.progress=lines",
]
VOLATILE = ("time", "time/", "throughput/", "sync/seconds", "sync/load_seconds")


def _rows(run_dir: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if r.get("stage") == "rl0"}


def _stable(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith(VOLATILE)}


def _kill_session(sid: int) -> None:
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.pid) == sid:
                p.kill()
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass


def test_killed_run_resumes_exactly(tmp_path):
    (tmp_path / "my_rewards.py").write_text(REWARD)
    a, b = tmp_path / "a", tmp_path / "b"
    out = subprocess.run([RLFT, "train", *RUN, "--run-dir", str(a)], capture_output=True, text=True,
                         timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]

    proc = subprocess.Popen([RLFT, "train", *RUN, "--run-dir", str(b)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=tmp_path, start_new_session=True)
    deadline = time.time() + 600
    while not (b / "checkpoints" / "step-000003").is_dir():
        assert proc.poll() is None, "run B ended before its step-3 checkpoint"
        assert time.time() < deadline, "run B did not reach its step-3 checkpoint"
        time.sleep(0.2)
    _kill_session(proc.pid)  # SIGKILL to the driver, Ray and every actor: no clean shutdown
    proc.wait(timeout=60)
    time.sleep(2)
    killed_at = max(_rows(b), default=0)

    out = subprocess.run([RLFT, "train", "--resume", str(b)], capture_output=True, text=True, timeout=900,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "rlft: resumed from" in out.stdout and "step 3, policy version 3" in out.stdout

    rows_a, rows_b = _rows(a), _rows(b)
    assert sorted(rows_b) == [1, 2, 3, 4, 5, 6], f"killed at step {killed_at}; rows {sorted(rows_b)}"
    assert [rows_b[s]["prompt_ids"] for s in range(1, 7)] == [rows_a[s]["prompt_ids"] for s in range(1, 7)]
    for step in (4, 5, 6):
        sa, sb = _stable(rows_a[step]), _stable(rows_b[step])
        assert sa.keys() == sb.keys(), step
        for key in sa:
            expected = pytest.approx(sa[key], rel=1e-6, abs=1e-9) if isinstance(sa[key], float) else sa[key]
            assert sb[key] == expected, (step, key, sa[key], sb[key])
    wa = load_file(a / "checkpoints" / "step-000006" / "model.safetensors")
    wb = load_file(b / "checkpoints" / "step-000006" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(wa[k].equal(wb[k]) for k in wa), "final weights differ"
    # the resumed run also kept its earlier evaluation and wrote a complete, exportable checkpoint
    summary = json.loads((b / "summary.json").read_text())
    assert set(summary["evaluations"]) == {"before_rl0", "after_rl0"}
    out = subprocess.run([RLFT, "export", str(b), str(tmp_path / "exported")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "exported" / "trainer_state").exists()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "exported")
