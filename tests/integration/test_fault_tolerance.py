"""Dead workers mid-step on a real local Ray, killed the hard way (SIGKILL of the actor's process).

* A rollout engine dies mid-``generate``: Ray restarts it, it gets the last pushed weights from the
  learner, its share of the prompts is re-issued; the step returns every rollout, sampled by the
  pushed policy (identical to the same call without the kill), and the restart is counted. One
  that dies right before a weight sync gets the new weights all the same.
* A reward worker dies mid-``score``: its share is re-scored on the restarted worker.
* No restarts left: the next call raises ``WorkerDiedError`` naming the role and rank, at once.
* A learner rank dies: ``WorkerDiedError(role="learner")`` although its peer waits in a collective.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time

import pytest
import torch
from ray import cloudpickle

from actors.group import WorkerDiedError, WorkerGroup
from actors.runtime import LearnerGroup, RewardGroup, RolloutGroup, WeightPush
from rlft.algorithms import ADVANTAGES
from rlft.config import RewardFunctionConfig, load_config
from rlft.types import Prompt, Rollout, SamplingSettings, TrainBatch, TrainSample

# Ray workers cannot import this test module by name: ship its functions and classes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# a hang guard, not a timing: a group that waited for every rank instead of failing on the first
# death would block here until gloo's own timeout (30 min)
pytestmark = pytest.mark.timeout(900)

TEXTS = ["12+34=", "7*8=", "hello ", "99-9=", "ab", "x+y="]
HANG_GUARD_S = 300.0  # a generous bound on a wait that should end in seconds; the assertions are not timings


def _pid(_actor_self) -> int:
    return os.getpid()


def _pid_of(group: WorkerGroup, rank: int) -> int:
    """The process id of ``rank``'s actor; ask while it is idle (calls run one at a time)."""
    import ray

    return ray.get(group.actors[rank].__ray_call__.remote(_pid))


def _kill(group: WorkerGroup, rank: int) -> None:
    """SIGKILL the process of ``rank``'s (idle) actor, as the OOM killer or a crash would."""
    os.kill(_pid_of(group, rank), signal.SIGKILL)


def _in_thread(fn, *args):
    """Run ``fn(*args)`` in a thread; returns (thread, box) where box gets "result" or "error"."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn(*args)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            box["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


# ------------------------------------------------------------------------------ group level


class Sleeper:
    def __init__(self, rank: int):
        self.rank, self.state, self.calls = rank, "fresh", 0

    def work(self, x: int, seconds: float = 0.0) -> tuple[int, int, str]:
        self.calls += 1
        time.sleep(seconds)
        return self.rank, x, self.state

    def count(self) -> int:
        return self.calls

    def set_state(self, state: str) -> None:
        self.state = state


def test_group_reissues_only_the_lost_rank_and_restores_it(ray_session):
    """Mid-call and between-call deaths: the hook restores state before the re-issued call, only
    the lost rank runs again, restarts are counted, and a spent restart budget is final."""
    restored: list[int] = []
    with WorkerGroup("sleeper", Sleeper, 2, args=lambda r: ((r,), {}), num_cpus=0.25, max_restarts=2) as g:

        def restore(rank: int) -> None:
            restored.append(rank)
            g.actors[rank].set_state.remote("restored")  # ordered before the re-issued call

        g.call(Sleeper.set_state, "restored")
        assert g.call_each_retrying(Sleeper.work, [(1,), (2,)], on_restart=restore) == [
            (0, 1, "restored"),
            (1, 2, "restored"),
        ]
        pid = _pid_of(g, 1)
        thread, box = _in_thread(
            lambda: g.call_each_retrying(Sleeper.work, [(3,), (4,)], on_restart=restore, seconds=3.0)
        )
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)  # mid-call
        thread.join(120)
        assert box.get("result") == [(0, 3, "restored"), (1, 4, "restored")], box
        assert restored == [1] and g.restarts_by_rank == [0, 1] and g.restarts == 1
        assert g.call(Sleeper.count) == [2, 1]  # rank 0's call ran once; rank 1's new actor ran one

        _kill(g, 0)  # between calls: Ray restarts it silently; the next call notices the new actor
        time.sleep(3.0)
        assert g.call_each_retrying(Sleeper.work, [(5,), (6,)], on_restart=restore) == [
            (0, 5, "restored"),
            (1, 6, "restored"),
        ]
        assert restored == [1, 0] and g.restarts == 2

        _kill(g, 1)  # rank 1's second and last restart
        assert g.call_each_retrying(Sleeper.work, [(7,), (8,)])[1] == (1, 8, "fresh")  # no hook given
        assert g.restarts_by_rank == [1, 2]
        _kill(g, 1)  # none left
        with pytest.raises(WorkerDiedError, match="sleeper worker rank 1 died") as err:
            g.call_each_retrying(Sleeper.work, [(9,), (10,)], seconds=3600.0)
        assert (err.value.role, err.value.rank) == ("sleeper", 1)
        # raised while rank 0's hour-long call still runs: its next call is still queued behind it
        ready, _ = ray_session.wait([g.actors[0].count.remote()], timeout=2.0)
        assert ready == []


# ------------------------------------------------------------------------------ rollouts


@pytest.fixture(scope="module")
def runtime(ray_session, tiny_model_dir):
    cfg = load_config(
        overrides=[
            "rollout.num_workers=2",
            "rollout.max_new_tokens=200",
            "learner.num_ranks=2",
            "learner.lr=3e-3",
            "learner.micro_batch_size=16",
            "cluster.rollout.cpus=0.5",
            "cluster.learner.cpus=0.5",
        ]
    )
    rollouts = RolloutGroup(cfg, tiny_model_dir, max_restarts=1)
    learners = LearnerGroup(cfg, tiny_model_dir, total_steps=4)
    weights = WeightPush(learners, rollouts)
    yield cfg, rollouts, learners, weights
    learners.shutdown()  # the last test kills a rank: shutting down still works
    rollouts.shutdown()


def _prompts(tiny_model_dir) -> list[Prompt]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    return [Prompt(f"p{i}", [tok.bos_token_id, *tok(t)["input_ids"]], t) for i, t in enumerate(TEXTS)]


def _batch(rollouts: list[Rollout]) -> TrainBatch:
    digits = [sum(c.isdigit() for c in r.completion) / max(len(r.completion), 1) for r in rollouts]
    rewards = torch.tensor(digits)  # a made-up deterministic reward
    adv = ADVANTAGES["grpo"](rewards, torch.tensor([r.group_id for r in rollouts]))
    return TrainBatch([TrainSample.from_rollout(r, float(a)) for r, a in zip(rollouts, adv)])


def test_rollout_worker_killed_mid_generate_is_restored_and_reissued(runtime, tiny_model_dir):
    cfg, rollouts, learners, weights = runtime
    prompts = _prompts(tiny_model_dir)
    small = SamplingSettings(n=4, temperature=1.0, max_new_tokens=12, seed=3)
    before = rollouts.generate(prompts, small)
    learners.train_step(_batch(before))
    weights.push(1)  # the engines now serve trained weights, version 1
    assert weights.version == 1 and rollouts.versions() == [1, 1]
    # the step moved the policy: the base model's samples (which a restarted engine would give
    # without the learner's weights) are not the pushed policy's
    trained = rollouts.generate(prompts, small)
    assert [r.rollout_logprobs for r in trained] != [r.rollout_logprobs for r in before]

    sampling = SamplingSettings(n=24, temperature=1.0, max_new_tokens=200, seed=7)
    start = time.monotonic()
    reference = rollouts.generate(prompts, sampling)  # the same call, undisturbed
    seconds = time.monotonic() - start
    pid = _pid_of(rollouts.workers, 1)
    thread, box = _in_thread(rollouts.generate, prompts, sampling)
    time.sleep(0.3 * seconds)  # about a third into the call
    assert thread.is_alive()
    os.kill(pid, signal.SIGKILL)
    thread.join(600)
    assert "error" not in box, box.get("error")
    out = box["result"]
    # every rollout is back, sampled by the pushed policy on both engines (rank 1's share by the
    # restarted engine after it got version 1 from the learner): identical to the undisturbed call
    assert len(out) == len(prompts) * 24
    assert sorted({r.group_id for r in out}) == list(range(len(prompts)))
    assert {r.policy_version for r in out} == {1}
    assert [r.completion_ids for r in out] == [r.completion_ids for r in reference]
    pairs = [(a, b) for x, y in zip(out, reference) for a, b in zip(x.rollout_logprobs, y.rollout_logprobs)]
    assert max(abs(a - b) for a, b in pairs) < 1e-4
    assert rollouts.versions() == [1, 1]
    assert rollouts.workers.restarts_by_rank == [0, 1]
    assert rollouts.restart_metrics() == {"restarts/rollout": 1.0}
    # the run goes on: the next call works
    assert {r.policy_version for r in rollouts.generate(prompts, small)} == {1}

    # an engine that dies right before a sync: the push waits for it to be back and pushes again
    # (or, if Ray had it back before the push reached it, the next generate sees the new engine)
    _kill(rollouts.workers, 0)
    weights.push(2)
    assert rollouts.versions() == [2, 2]
    assert {r.policy_version for r in rollouts.generate(prompts, small)} == {2}
    assert rollouts.workers.restarts_by_rank == [1, 1]

    # rank 1 has used its one restart: the next death ends the call at once, naming it
    _kill(rollouts.workers, 1)
    with pytest.raises(WorkerDiedError, match="rollout worker rank 1 died") as err:
        rollouts.generate(prompts, small)
    assert (err.value.role, err.value.rank) == ("rollout", 1)


def test_dead_learner_rank_is_reported_while_its_peer_waits(runtime, tiny_model_dir):
    """Rank 0 enters the step's collectives and waits for rank 1; rank 1's death still surfaces."""
    cfg, rollouts, learners, weights = runtime
    batch = TrainBatch([
        TrainSample.from_rollout(
            Rollout(f"p{i}", i, [2, 5, 6], [7, 8, 9], [-1.0, -1.0, -1.0], "stop", 2), float(i % 2) - 0.5
        )
        for i in range(4)
    ])
    _kill(learners.workers, 1)
    # the dead rank is named, not rank 0 (which fails in its collective, or waits in it): the group
    # reports the first death it sees; a wait for every rank would hang on the gloo timeout instead
    with pytest.raises(WorkerDiedError, match="learner worker rank 1 died") as err:
        learners.train_step(batch)
    assert (err.value.role, err.value.rank) == ("learner", 1)


# ------------------------------------------------------------------------------ rewards

REWARDS = textwrap.dedent(
    """
    import time

    def slow_length(prompt, completion):
        time.sleep(0.25)
        with open({log!r}, "a") as f:  # one line per sample scored
            f.write("x\\n")
        return float(len(completion))
    """
)


def _reward_group(tmp_path, max_restarts: int) -> RewardGroup:
    path = tmp_path / "slow_rewards.py"
    path.write_text(REWARDS.format(log=str(tmp_path / "scored.log")))
    cfg = load_config(
        overrides=[
            "reward.num_workers=2",
            "reward.processes_per_worker=1",
            "reward.timeout_s=30",
            "cluster.reward.cpus=0.25",
        ]
    )
    return RewardGroup(cfg, [RewardFunctionConfig(path=f"{path}:slow_length")], max_restarts=max_restarts)


def _rollouts(n: int) -> list[Rollout]:
    return [Rollout(f"p{i}", i, [1], [2], [-0.1], "stop", 0, "prompt", "x" * i) for i in range(n)]


def test_reward_worker_killed_mid_score_is_reissued(ray_session, tmp_path):
    group = _reward_group(tmp_path, max_restarts=1)
    try:
        batch = _rollouts(24)  # 12 samples x 0.25 s per worker
        group.score(batch[:2])  # warm-up: fork servers and children
        pid = _pid_of(group.workers, 1)
        thread, box = _in_thread(group.score, batch)
        time.sleep(1.0)
        assert thread.is_alive()
        os.kill(pid, signal.SIGKILL)
        thread.join(300)
        assert "error" not in box, box.get("error")
        assert box["result"].totals == [float(i) for i in range(24)]  # every sample, none failed
        assert group.restart_metrics() == {"restarts/reward": 1.0}
        assert group.score(batch[:4]).totals == [0.0, 1.0, 2.0, 3.0]
    finally:
        group.shutdown()


def test_no_restarts_dead_reward_worker_fails_the_call_at_once(ray_session, tmp_path):
    group = _reward_group(tmp_path, max_restarts=0)
    try:
        group.score(_rollouts(2))
        pid = _pid_of(group.workers, 1)
        # rank 0's share alone takes 240 x 0.25 s = 60 s
        thread, box = _in_thread(group.score, _rollouts(480))
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        thread.join(HANG_GUARD_S)
        assert not thread.is_alive(), "the call still waits for rank 0 although rank 1 is dead"
        scored = len((tmp_path / "scored.log").read_text().splitlines()) - 2  # less the warm-up's
        err = box.get("error")
        assert isinstance(err, WorkerDiedError), err
        assert (err.role, err.rank) == ("reward", 1) and "reward worker rank 1 died" in str(err)
        assert scored < 240, f"the error came after rank 0 had scored its whole share ({scored} samples)"
    finally:
        group.shutdown()
