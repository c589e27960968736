"""``rlft train`` as a user runs it: a short real run on an embedded Ray, and a clean Ctrl-C."""

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

RLFT = str(Path(sys.executable).parent / "rlft")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SHORT = [
    # SFT ends on its plateau rule at its second held-out check (no gain over 1.0 is possible), one
    # RFT step imitates its accepted samples with DFT (every sample accepted), then two RL steps
    "stages=[{kind: sft, steps: 4, batch_size: 16, until: {patience: 1, min_delta: 1.0, every: 1}}, "
    "{kind: rft, steps: 1, objective: {name: dft}, rft: {samples: 4, threshold: -10}}, {kind: rl, steps: 2}]",
    "rollout.prompts_per_step=4",
    "rollout.group_size=4",
    "evaluation.num_prompts=8",
    "evaluation.pass_k=2",
]


def _session_processes(sid: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.pid) == sid:
                out.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    return out


USER_REWARD = """
from rewards import RewardResult

def score(prompt, completion, *, answer):
    correct = completion.strip() == answer
    return RewardResult(1.0 if correct else 0.0, {"chars": len(completion)})
"""


def test_short_train_run_with_a_user_reward_file_writes_the_run_directory(tmp_path):
    """The built-in task scored by a user's reward loaded from a file path (plus a built-in shaping
    reward) and trained with the README's custom loss from a plugin file, end to end: reward workers
    and the learner rank on Ray import what the config names, per-reward metrics in the run's log."""
    (tmp_path / "my_rewards.py").write_text(USER_REWARD)
    run_dir = tmp_path / "run"
    rewards = (
        "reward.functions=[{path: ./my_rewards.py:score}, "
        "{name: length_penalty, weight: 0.1, params: {cache_tokens: 2}}]"
    )
    monitoring = ["logging.backends=[console, jsonl, tensorboard, wandb]", "logging.sample_every=1"]
    custom_loss = [f"plugins=[{EXAMPLES / 'custom_loss' / 'my_losses.py'}]",
                   "algo.loss={name: clipped_reinforce, params: {max_abs_advantage: 1.5}}",
                   # one reference solution in place of a sample in each group, scored with them (LUFFY)
                   "algo.guidance={name: mixed, params: {demos_per_group: 1, sft_coef: 0.1}}"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_BASE_URL": "http://127.0.0.1:9"}
    out = subprocess.run(
        [RLFT, "train", *SHORT, rewards, *monitoring, *custom_loss, "--run-dir", str(run_dir)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "held-out accuracy before rl1:" in out.stdout and f"run directory: {run_dir}" in out.stdout
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    stages = [r.get("stage") for r in rows if "stage" in r]
    assert stages == ["sft1"] * 2 + ["rft1"] + ["rl1"] * 2  # stages count from 1 per kind
    [rft] = [r for r in rows if r.get("stage") == "rft1"]
    assert rft["rft/sampled"] == 16 and rft["rft/kept"] >= 4 and rft["learner/sequences"] == rft["rft/kept"]
    rl = [r for r in rows if r.get("stage") == "rl1"]
    assert all("reward/mean" in r and "learner/loss" in r and "sync/bytes" in r for r in rl)
    assert all(0 <= r["learner/adv_clip_fraction"] <= 1 for r in rl)  # the plugin's loss ran in the learner actor
    # each group: 3 samples and the prompt's reference solution, which the user's reward scores 1
    assert all(r["batch/demonstrations"] == 4 and r["batch/samples"] == 16 for r in rl)
    assert all(r["advantage/demonstration_mean"] > 0 for r in rl)
    assert all(r["reward/failed_samples"] == 0 and "reward/length_penalty/mean" in r for r in rl)
    assert all(0 <= r["reward/score/mean"] <= 1 and r["reward/score/info/chars"] > 0 for r in rl)
    assert "rewards: score (weight 1, timeout 5 s), length_penalty (weight 0.1" in out.stdout
    assert [r["version"] for r in rl] == [4, 5]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["evaluations"]) == {"sft1_step1", "sft1_step2", "before_rft1", "after_rft1",
                                           "before_rl1", "after_rl1"}
    assert "eval/pass@2" in summary["evaluations"]["after_rl1"]
    assert (run_dir / "config.yaml").is_file()
    placement = json.loads((run_dir / "placement.json").read_text())
    assert {role: [w["rank"] for w in ws] for role, ws in placement.items()} == {
        "rollout": [0], "learner": [0], "reward": [0]}
    assert all(w["node_id"] and w["node_ip"] for ws in placement.values() for w in ws)
    assert f"rlft: placement: rollout on {placement['rollout'][0]['node_ip']}" in out.stdout
    log = (run_dir / "train.log").read_text()
    assert log.count("stage=rl1") == 2 and log.count("stage=sft1") == 2 and log.count("stage=rft1") == 1
    assert "stage sft1 ends: eval/accuracy plateaued at" in log
    # monitoring: samples, TensorBoard scalars, the offline wandb run, the report
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert {r["step"] for r in samples} == {3, 4, 5} and all("score" in r["rewards"] for r in samples)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("reward/mean")] == [3, 4, 5]
    assert [e.step for e in events.Scalars("sft/loss")] == [1, 2]
    wandb_files = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(wandb_files) == 1 and b"reward/mean" in wandb_files[0].read_bytes()
    assert "wandb: " in out.stdout and "wandb sync" in out.stdout
    assert "rlft: Ray dashboard at http://" in out.stdout
    assert (run_dir / "report" / "index.html").is_file() and (run_dir / "report" / "reward.png").is_file()
    assert f"rlft: report {run_dir / 'report' / 'index.html'}" in out.stdout
    from transformers import AutoModelForCausalLM

    final = Path(summary["checkpoints"][-1])
    assert final.name == "step-000005"
    AutoModelForCausalLM.from_pretrained(final)  # a plain Hugging Face model directory


def test_a_reward_failing_past_the_limit_stops_the_run_with_a_clear_error(tmp_path):
    (tmp_path / "broken.py").write_text(
        "def score(prompt, completion, *, answer):\n    raise KeyError('no verifier for ' + answer)\n"
    )
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [RLFT, "train", "stages=[{kind: rl, steps: 3}]", "rollout.prompts_per_step=2", "rollout.group_size=2",
         "evaluation.num_prompts=2", "evaluation.pass_k=0", "reward.functions=[{path: ./broken.py:score}]",
         "--run-dir", str(run_dir)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    # the first step is step 1, as the console counts it
    assert "rlft: stopped: step 1: 100% of the samples failed their reward (reward.max_failure_rate=0.5)" in out.stderr
    assert "KeyError: 'no verifier for" in out.stderr
    log = (run_dir / "train.log").read_text()  # the first errors, with their samples, are in the run's log
    assert "reward 'score' failed (exception) on sample 0: KeyError" in log and "completion" in log


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_checkpoints_stops_cleanly_and_leaves_nothing_running(tmp_path, sig):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [RLFT, "train", "stages=[{kind: sft, steps: 100000, batch_size: 8}]", "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, start_new_session=True,
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 600
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "the run did not start training in time"
        time.sleep(1)
    proc.send_signal(sig)
    try:
        output, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("rlft train did not stop within 120 s of Ctrl-C")
    assert proc.returncode == 130, output[-3000:]
    assert "interrupted; actors stopped" in output
    # the step in flight finished, a checkpoint of it was written, and the way back is printed
    assert "stopping after the current step" in output and f"rlft train --resume {run_dir}" in output
    from rlft.checkpointing import latest_checkpoint, load_driver_state

    latest = latest_checkpoint(run_dir / "checkpoints")
    assert latest is not None and load_driver_state(latest)["step"] >= 2
    deadline = time.time() + 30  # Ray's last processes may take a moment to exit
    while (left := _session_processes(proc.pid)) and time.time() < deadline:
        time.sleep(1)
    assert left == [], [p.cmdline() for p in left]
