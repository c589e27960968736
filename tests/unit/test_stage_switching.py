"""Stages that end on a held-out signal (``until``), and RFT stages, through the driver with fakes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_driver import Calls, FakeEngine, FakeLearner, FakeScorer, FakeSync, Sink, _interrupt_after, make

from rlft.checkpointing import load_driver_state
from rlft.compose import build_driver
from rlft.config import UntilConfig, load_config
from rlft.stopping import StopRule, first_stop
from rlft.types import Prompt, TrainSample


def test_threshold_golden():
    rule = StopRule(UntilConfig(threshold=0.5, every=10))
    assert [rule.due(n) for n in (0, 5, 10, 20)] == [False, False, True, True]
    assert not rule.observe({"eval/accuracy": 0.2}, at=10) and not rule.due(10)  # checked once per step count
    assert rule.observe({"eval/accuracy": 0.5}, at=20)  # at the threshold counts
    assert rule.stopped and not rule.due(30)
    assert rule.reason == "eval/accuracy 0.5 reached the threshold 0.5 after 20 steps"


def test_plateau_golden():
    # best 0.3 at the 2nd check; 0.32 and 0.35 are gains of 0.05 or less: no progress (min_delta 0.05)
    until = UntilConfig(metric="eval/mean@4", patience=2, min_delta=0.05)
    assert first_stop([0.1, 0.3, 0.32, 0.35], until) == 3
    assert first_stop([0.1, 0.3, 0.32, 0.36, 0.37], until) is None  # 0.36 beats 0.3 by more than 0.05
    assert first_stop([0.1, 0.3, 0.32, 0.36, 0.37, 0.3], until) == 5
    # lower is better: 2.0 -> 1.0 is progress, 0.95 is not (min_delta 0.1), nor is 1.2
    assert first_stop([2.0, 1.0, 0.95, 1.2], UntilConfig(mode="min", patience=2, min_delta=0.1)) == 3
    # the threshold ends it first when both are given
    assert first_stop([0.1, 0.9], UntilConfig(threshold=0.8, patience=1)) == 1


def test_until_is_checked_when_the_config_loads():
    with pytest.raises(ValueError, match="give a threshold, a patience, or both"):
        UntilConfig()
    with pytest.raises(ValueError, match="held-out evaluation metric"):
        UntilConfig(metric="reward/mean", threshold=1.0)
    with pytest.raises(KeyError, match="eval/mean@8.*eval/accuracy"):
        StopRule(UntilConfig(metric="eval/mean@8", threshold=0.1)).observe({"eval/accuracy": 0.3}, at=50)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(0, 1), max_size=12), cut=st.integers(0, 12),
       threshold=st.one_of(st.none(), st.floats(0, 1)), patience=st.one_of(st.none(), st.integers(1, 4)),
       min_delta=st.sampled_from([0.0, 0.01, 0.1]), mode=st.sampled_from(["max", "min"]))
def test_a_rule_restored_from_its_state_decides_as_the_uninterrupted_one(values, cut, threshold, patience,
                                                                         min_delta, mode):
    if threshold is None and patience is None:
        patience = 1
    until = UntilConfig(threshold=threshold, patience=patience, min_delta=min_delta, mode=mode, every=1)
    straight = first_stop(values, until)
    rule, decided = StopRule(until), None
    for i, v in enumerate(values):
        if i == cut:  # a checkpoint, then a fresh process
            rule = StopRule(until, rule.state_dict())
        if rule.observe({"eval/accuracy": v}, at=i + 1):
            decided = i
            break
    assert decided == straight
    # the threshold, when given, is never passed by an earlier check than the one that stops
    if straight is not None and threshold is not None and patience is None:
        sign = 1 if mode == "max" else -1
        assert all(sign * (v - threshold) < 0 for v in values[:straight])


def _until_run(overrides=(), ckpt=None):
    """An SFT stage of at most 20 steps that ends once greedy accuracy reaches 1, checked every 2
    steps: the fake reward is 1 for what the engines sample at policy version 6 or later."""
    stages = ("stages=[{kind: sft, steps: 20, batch_size: 2, until: {threshold: 1.0, every: 2}}, "
              "{kind: rl, steps: 2}]")
    return make([stages, "evaluation.pass_k=0", *overrides], reward=lambda r: float(r.policy_version >= 6),
                sft=True, ckpt=ckpt)


def test_an_sft_stage_ends_on_its_threshold_with_the_engines_evaluated_on_current_weights():
    driver, calls, engine, learner = _until_run()
    summary = driver.run()
    evals = summary.evaluations
    assert [k for k in evals if k.startswith("sft1")] == ["sft1_step2", "sft1_step4", "sft1_step6"]
    assert [evals[k]["eval/accuracy"] for k in ("sft1_step2", "sft1_step4", "sft1_step6")] == [0.0, 0.0, 1.0]
    # 6 SFT steps, then the RL stage's 2; each check first syncs the weights it evaluates
    assert summary.version == 8 and [b[1] is not None for b in learner.batches] == [True] * 6 + [False] * 2
    assert calls[:4] == ["sft_step", "sft_step", "sync", "generate_greedy"]
    sft_end = calls.index("train_step")
    assert calls[:sft_end].count("sync") == 3  # no second sync at the stage's end: the engines serve version 6
    assert driver.state.stage_index == 2 and driver.state.stop is None


def test_an_until_stage_resumes_exactly(tmp_path):
    straight, *_ = _until_run(ckpt=str(tmp_path / "a"))
    straight.run()
    first, *_ = _until_run(["checkpoint.every=3"], ckpt=str(tmp_path / "b"))
    first.parts.learner.train_step = _interrupt_after(first.parts.learner.train_step, calls=5)
    with pytest.raises(KeyboardInterrupt):
        first.run()
    resumed, calls, engine, _ = _until_run(ckpt=str(tmp_path / "b"))
    resumed.restore(tmp_path / "b" / "step-000003")
    assert resumed.state.stop is None and resumed.state.stage_step == 3
    summary = resumed.run()
    assert summary.version == 8 and summary.evaluations == straight.state.summary.evaluations


def test_an_rft_stage_imitates_the_accepted_distinct_samples_with_its_objective():
    stage = ("stages=[{kind: rft, steps: 2, objective: {name: dft}, "
             "rft: {samples: 4, dedup: exact, max_per_prompt: 1}}]")
    driver, calls, engine, learner = make([stage, "evaluation.pass_k=0"])  # odd completion tokens are right
    summary = driver.run()
    assert set(summary.evaluations) == {"before_rft1", "after_rft1"}
    assert calls.count("sft_step") == 2 and calls.count("sync") == 2  # imitation steps, each synced
    for batch, sft, _ in learner.batches:
        assert sft.name == "dft"
        # 3 prompts x 4 samples, 2 accepted each, 1 kept per prompt: the first accepted (token 1)
        assert [s.completion_ids for s in batch.samples] == [[1]] * 3
        assert all(s.advantages == [1.0] for s in batch.samples)
    rows = [m for _, m in driver.sink.rows if m.get("stage") == "rft1"]
    assert [(r["rft/sampled"], r["rft/accepted"], r["rft/kept"]) for r in rows] == [(12.0, 6.0, 3.0)] * 2
    assert rows[0]["reward/mean"] == 0.5  # over every sample of the step, not the kept ones


def test_stage_kinds_and_their_sections_must_fit():
    with pytest.raises(ValueError, match="only kind 'rft' takes one"):
        load_config(overrides=["stages=[{kind: rl, steps: 2, rft: {samples: 4}}]"])
    with pytest.raises(ValueError, match="an RL stage has no SFT objective"):
        load_config(overrides=["stages=[{kind: rl, steps: 2, objective: {name: dft}}]"])
    with pytest.raises(ValueError, match="max_samples"):
        load_config(overrides=["stages=[{kind: rft, steps: 2, rft: {samples: 8, max_samples: 4}}]"])
    with pytest.raises(ValueError, match="unknown SFT objective 'dtf'.*did you mean 'dft'"):
        load_config(overrides=["stages=[{kind: sft, steps: 2, objective: {name: dtf}}]"])


def _relift_run(overrides=(), ckpt=None):
    """ReLIFT in an RL stage over prompts 0-4 whose demonstrations are the tokens 100-104: the fake
    reward solves only what the engines sample after an SFT step (policy version >= 1), so the first
    step's groups all fail and fill the buffer."""
    cfg = load_config(overrides=["rollout.prompts_per_step=3", "rollout.group_size=4", "stages=[{kind: rl, steps: 3}]",
                                 "evaluation.pass_k=0", "algo.guidance={name: relift, params: {batch_size: 2, objective: dft}}",
                                 *overrides])
    calls = Calls()
    engine, learner = FakeEngine(calls), FakeLearner(calls)
    prompts = [Prompt(f"p{i}", [1, i + 2]) for i in range(5)]
    demos = [TrainSample([1, i + 2], [100 + i], [1.0]) for i in range(5)]
    reward = FakeScorer(calls, lambda r: float(r.policy_version >= 1 and r.completion_ids[0] % 2))
    driver = build_driver(cfg, engine=engine, scorer=reward, learner=learner, weights=FakeSync(calls, engine),
                          train_prompts=prompts, eval_prompts=prompts[:2], sft_examples=demos, sink=Sink(),
                          checkpoint_dir=ckpt)
    return driver, calls, learner


def test_relift_runs_an_sft_step_on_the_failed_prompts_demonstrations_between_rl_steps():
    driver, calls, learner = _relift_run()
    driver.run()
    rows = [m for _, m in driver.sink.rows if m.get("stage") == "rl1"]
    # step 1: its 3 prompts fail (nothing is solved at version 0) and are buffered; 2 of them make the
    # SFT step on their demonstrations (oldest first), then the RL update; one sync covers both
    first = [int(p[1:]) for p in rows[0]["prompt_ids"]]
    kinds = [("sft" if sft is not None else "rl", [s.completion_ids[0] for s in batch.samples][:2])
             for batch, sft, _ in learner.batches]
    assert kinds[0] == ("sft", [100 + first[0], 100 + first[1]]) and kinds[1][0] == "rl"
    assert all(sft.name == "dft" for _, sft, _ in learner.batches if sft is not None)
    assert rows[0]["relift/failed_prompts"] == 3.0 and rows[0]["relift/added"] == 3.0
    assert "guidance/loss" in rows[0] and "learner/loss" in rows[0] and rows[0]["version"] == 2.0
    assert calls[calls.index("sft_step"):][:3] == ["sft_step", "train_step", "sync"]
    # from version 1 on, odd completions are right: no more failures, the third prompt waits alone
    assert [r["relift/failed_prompts"] for r in rows[1:]] == [0.0, 0.0]
    assert driver.parts.builder.state_dict() == {"buffer": [first[2]], "sft_steps": 1}
    assert "guidance/loss" not in rows[1] and [r["version"] for r in rows] == [2.0, 3.0, 4.0]


def test_relift_needs_demonstrations_and_its_buffer_survives_a_resume(tmp_path):
    with pytest.raises(ValueError, match="needs a reference solution for every training prompt"):
        make(["algo.guidance={name: relift}"], sft=False)
    with pytest.raises(ValueError, match="4 demonstrations for 5 training prompts"):
        make(["algo.guidance={name: relift}"], sft=True)
    stages = "stages=[{kind: rl, steps: 4}]"
    straight, *_ = _relift_run([stages], ckpt=str(tmp_path / "a"))
    straight.run()
    first, *_ = _relift_run([stages, "checkpoint.every=1", "checkpoint.keep_last=null"], ckpt=str(tmp_path / "b"))
    first.run()
    resumed, *_ = _relift_run([stages], ckpt=str(tmp_path / "c"))
    resumed.restore(tmp_path / "b" / "step-000001")
    assert resumed.parts.builder.buffer == load_driver_state(tmp_path / "b" / "step-000001")["builder"]["buffer"]
    assert len(resumed.parts.builder.buffer) == 1
    resumed.run()
    assert resumed.parts.builder.state_dict() == straight.parts.builder.state_dict()
    assert resumed.state.version == straight.state.version
