"""Reward isolation with the real components: child processes of a ``RewardPool`` and ``RewardWorker``
Ray actors. Good, slow, raising, crashing, memory-hungry and badly typed rewards over one batch: a
reward past its time limit is stopped and marked ``timeout`` (it would sleep 60 s and then score),
good samples are scored exactly, failures are marked (never 0), counted by kind, and masked out of
the learner's batch."""

from __future__ import annotations

import os
import textwrap

import psutil
import pytest

from rlft.batching import build_train_batch
from rlft.config import RewardFunctionConfig, load_config
from rlft.types import Rollout
from rewards.compose import combine
from rewards.pool import RewardPool, Sample

TIMEOUT = 1.0

REWARDS = textwrap.dedent(
    """
    import asyncio, os, time
    from rewards import RewardResult, batched

    def good(prompt, completion, *, answer):
        return RewardResult(1.0 if completion == answer else 0.0, {"length": len(completion)})

    def mixed(prompt, completion):
        if completion == "slow":
            time.sleep(60)
        if completion == "raise":
            raise RuntimeError("reward bug")
        if completion == "exit":
            os._exit(3)
        if completion == "segv":
            import signal
            os.kill(os.getpid(), signal.SIGSEGV)
        if completion == "nan":
            return float("nan")
        if completion == "text":
            return "1.0"
        if completion == "hog":
            hog = bytearray(2 * 2**30)
        return 0.5

    async def slow_async(prompt, completion):
        if completion == "slow":
            await asyncio.sleep(60)
        return 0.25

    @batched
    def lengths(prompts, completions, *, num_tokens):
        return [float(n) for n in num_tokens]

    def judged(prompt, completion, *, judge):
        return float(judge.generate([completion], choices=["0", "1"])[0])
    """
)

COMPLETIONS = ["ok", "slow", "raise", "exit", "segv", "nan", "text", "hog", "ok", "bad"]
EXPECTED_ERRORS = {
    "slow": "timeout",
    "raise": "exception",
    "exit": "crash",
    "segv": "crash",
    "nan": "bad_value",
    "text": "bad_value",
    "hog": "memory",
}


@pytest.fixture
def reward_file(tmp_path):
    path = tmp_path / "user_rewards.py"
    path.write_text(REWARDS)
    return path


def _samples() -> list[Sample]:
    return [
        Sample(f"prompt {i}", c, {"answer": "ok", "num_tokens": len(c), "prompt_id": f"p{i}"})
        for i, c in enumerate(COMPLETIONS)
    ]


def _functions(reward_file) -> list[RewardFunctionConfig]:
    return [
        RewardFunctionConfig(path=f"{reward_file}:good"),
        RewardFunctionConfig(path=f"{reward_file}:mixed", weight=2.0),
        RewardFunctionConfig(path=f"{reward_file}:slow_async"),
        RewardFunctionConfig(path=f"{reward_file}:lengths", weight=0.0),
    ]


def test_pool_contains_every_failure_and_scores_the_rest(reward_file):
    with RewardPool(_functions(reward_file), processes=2, timeout_s=TIMEOUT, memory_mb=1024) as pool:
        pool.score(_samples()[:1])  # start the fork server and the children
        out = pool.score(_samples())
        # killed and crashed children were replaced: the pool keeps scoring
        assert pool.restarts >= 1
        assert [o.score for o in pool.score(_samples()[:1])["mixed"]] == [0.5]

    good = out["good"]
    assert [o.score for o in good] == [1.0, 0, 0, 0, 0, 0, 0, 0, 1.0, 0]
    assert good[0].info == {"length": 2} and good[0].returned == "RewardResult"
    mixed = {c: o for c, o in zip(COMPLETIONS, out["mixed"])}
    for completion, kind in EXPECTED_ERRORS.items():
        assert mixed[completion].score is None and mixed[completion].error == kind, (completion, mixed[completion])
    assert "SIGSEGV" in mixed["segv"].message and "exit code 3" in mixed["exit"].message
    assert "RuntimeError: reward bug" in mixed["raise"].message
    assert mixed["ok"].score == 0.5 and mixed["bad"].score == 0.5
    assert [o.score for o in out["slow_async"]] == [0.25, None] + [0.25] * 8
    assert out["slow_async"][1].error == "timeout"
    assert [o.score for o in out["lengths"]] == [float(len(c)) for c in COMPLETIONS]

    scores = combine(out, {"good": 1.0, "mixed": 2.0, "slow_async": 1.0, "lengths": 0.0}, samples=_samples())
    assert scores.totals[0] == 1.0 + 2 * 0.5 + 0.25 and scores.totals[9] == 0 + 2 * 0.5 + 0.25
    assert all(scores.totals[i] is None for i in range(1, 8))
    assert scores.metrics["reward_errors/mixed/crash"] == 2 and scores.metrics["reward_errors/mixed/bad_value"] == 2
    assert scores.metrics["reward/failed_samples"] == 7

    # failed samples are masked: left out of the batch and out of their group's statistics
    rollouts = [Rollout(f"p{i}", 0, [1], [2], [-0.1], "stop", 0) for i in range(len(COMPLETIONS))]
    batch, metrics = build_train_batch(rollouts, scores.totals, estimator="grpo")
    assert len(batch) == 3 and metrics["batch/failed_rewards"] == 7


def test_memory_limit_counts_from_the_process_start_up_size(tmp_path):
    """A small ``memory_mb`` still lets the child load (its torch-carrying start-up size is not counted)
    and caps what a call may allocate on top."""
    path = tmp_path / "alloc.py"
    path.write_text("def alloc(prompt, completion):\n    return float(len(bytearray(int(completion) * 2**20)) > 0)\n")
    with RewardPool([RewardFunctionConfig(path=f"{path}:alloc")], processes=1, memory_mb=64) as pool:
        out = pool.score([Sample("", "16"), Sample("", "512")])["alloc"]
    assert out[0].score == 1.0
    assert out[1].score is None and out[1].error == "memory"


def test_the_pool_selects_its_sandbox_and_tells_sandbox_faults_from_program_faults(tmp_path):
    """The children use ``reward.sandbox``; a fault of the sandbox itself fails the sample with its own
    kind (rlft's or the host's fault), while whatever the program does is scored."""
    path = tmp_path / "runs_code.py"
    path.write_text(
        "from rewards.sandbox import current_sandbox, run_sandboxed\n"
        "def mode(prompt, completion):\n"
        "    return 1.0 if current_sandbox().name == 'weak_process' else 0.0\n"
        "def runs(prompt, completion):\n"
        "    return float(run_sandboxed(completion, timeout_s=30).status == 'ok')\n"
    )
    functions = [RewardFunctionConfig(path=f"{path}:mode"), RewardFunctionConfig(path=f"{path}:runs")]
    with RewardPool(functions, processes=1, sandbox={"name": "weak_process"}) as pool:
        out = pool.score([Sample("", "print(1)"), Sample("", "raise SystemExit(3)")])
    assert [o.score for o in out["mode"]] == [1.0, 1.0]
    assert [o.score for o in out["runs"]] == [1.0, 0.0]  # the program's own failure is a score

    dead = {"name": "remote", "params": {"url": "http://127.0.0.1:9", "retries": 0, "probe": False}}  # nothing listens
    with RewardPool(functions[1:], processes=1, sandbox=dead) as pool:
        out = pool.score([Sample("", "print(1)")])["runs"]
    assert out[0].score is None and out[0].error == "sandbox", out[0]


def test_pool_stops_its_children_on_close(reward_file):
    pool = RewardPool(_functions(reward_file)[:1], processes=2, timeout_s=TIMEOUT)
    pool.score(_samples())
    pids = [c.proc.pid for c in list(pool._slots.queue)]
    pool.close()
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_reward_that_cannot_load_fails_at_start_with_its_error(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def score(prompt, completion):\n    return 1.0\n")
    pool = RewardPool([RewardFunctionConfig(path=f"{bad}:score")], processes=1)
    bad.write_text("raise ImportError('broken on import')\n")  # the child re-imports: now it fails
    try:
        with pytest.raises(RuntimeError, match="could not load the rewards: .*broken on import"):
            pool.score(_samples()[:1])
    finally:
        pool.close()


def test_judge_calls_are_served_by_the_parent(reward_file):
    class Judge:
        def __init__(self):
            self.seen = []

        def generate(self, prompts, **kwargs):
            self.seen.append((prompts, kwargs))
            return ["1" if p == "ok" else "0" for p in prompts]

    judge = Judge()
    fc = [RewardFunctionConfig(path=f"{reward_file}:judged")]
    with RewardPool(fc, processes=1, services={"judge": judge}) as pool:
        out = pool.score(_samples()[:2])
    assert [o.score for o in out["judged"]] == [1.0, 0.0]
    assert judge.seen[0] == (["ok"], {"choices": ["0", "1"]})
    with RewardPool(fc, processes=1) as pool:  # no judge service: the sample fails, clearly
        out = pool.score(_samples()[:1])
    assert out["judged"][0].error == "exception" and "no 'judge' service" in out["judged"][0].message


def test_reward_workers_on_ray_score_a_mixed_batch(ray_session, reward_file):
    from actors.runtime import RewardGroup

    functions = _functions(reward_file)
    cfg = load_config(
        overrides=[
            "reward.num_workers=2",
            "reward.processes_per_worker=1",
            f"reward.timeout_s={TIMEOUT}",
            "reward.memory_mb=1024",
            "cluster.reward.cpus=0.5",
        ]
    )
    group = RewardGroup(cfg, functions)
    try:
        rollouts = [
            Rollout(f"p{i}", i // 2, [1], [2] * (i + 1), [-0.1] * (i + 1), "stop", 0, f"prompt {i}", c, {"answer": "ok"})
            for i, c in enumerate(COMPLETIONS)
        ]
        group.score(rollouts[:2])  # warm-up: fork servers and children
        scores = group.score(rollouts)
        assert scores.totals[0] == 1.0 + 2 * 0.5 + 0.25
        assert [t is None for t in scores.totals] == [c in EXPECTED_ERRORS for c in COMPLETIONS]
        # runtime fields reach the rewards: num_tokens is the completion's token count
        assert scores.metrics["reward/lengths/mean"] == pytest.approx(sum(range(1, 11)) / 10)
        assert scores.metrics["reward_errors/mixed/timeout"] == 1
        assert scores.metrics["reward_errors/mixed/memory"] == 1
        assert len(scores.errors) == cfg.reward.log_errors and "prompt_id p1" in scores.errors[0]
        assert group.restarts() >= 3
    finally:
        group.shutdown()


HOSTILE = {
    "loop": "while True:\n    pass",
    "fork_bomb": "import os\nwhile True:\n    os.fork()",
    "write_outside": "open({outside!r}, 'w').write('pwned')",
    "secret": "import os\nassert os.environ.get('RLFT_TEST_SECRET') == 'hunter2'",
    "socket": "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)",
    "print_1gb": "import sys\nfor _ in range(1024):\n    sys.stdout.write('x' * 2**20)",
}


def test_code_tests_on_reward_workers_contain_hostile_completions(ray_session, tmp_path, monkeypatch):
    """``code_tests`` through real Ray reward workers: a correct solution scores 1, and every hostile
    snippet scores 0 without harming the worker, the machine or the files around it."""
    from actors.runtime import RewardGroup

    monkeypatch.setenv("RLFT_TEST_SECRET", "hunter2")  # the sandbox tests prove the calling env never leaks
    outside = tmp_path / "pwned.txt"
    cfg = load_config(overrides=["reward.functions=[{name: code_tests, params: {timeout_s: 2}}]",
                                 "cluster.reward.cpus=0.5"])
    group = RewardGroup(cfg, list(cfg.reward.functions))
    tests = {"tests": ["assert f() == 1"]}
    completions = {"good": "```python\ndef f():\n    return 1\n```"}
    completions.update({k: v.format(outside=str(outside)) + "\ndef f():\n    return 1" for k, v in HOSTILE.items()})
    rollouts = [
        Rollout(k, i, [1], [2], [-0.1], "stop", 0, "write f", c, tests) for i, (k, c) in enumerate(completions.items())
    ]
    try:
        scores = group.score(rollouts)
    finally:
        group.shutdown()
    by_name = dict(zip(completions, scores.totals))
    assert by_name == {"good": 1.0, **{k: 0.0 for k in HOSTILE}}, scores.errors
    assert not outside.exists()  # and the loop scored 0: stopped at its own 2 s limit, the run went on
