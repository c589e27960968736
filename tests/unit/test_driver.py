"""The driver's loop against fakes: phase order, versions, filtering, evaluation and checkpoint cadence."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlft.config import load_config
from rlft.checkpointing import CheckpointError
from rlft.collect import sampling_settings
from rlft.compose import build_driver
from rlft.driver import RewardFailureError
from rlft.types import Prompt, Rollout, SamplingSettings, Scores, TrainBatch, TrainSample


class Calls(list):
    """The order in which the fakes were called."""


class FakeEngine:
    """Each prompt's i-th completion is the token ``i``; reward is decided by the scorer."""

    def __init__(self, calls: Calls):
        self.calls, self.version, self.seen = calls, 0, []

    def generate(self, prompts, sampling: SamplingSettings):
        self.calls.append("generate" if sampling.temperature > 0 or sampling.n > 1 else "generate_greedy")
        self.seen.append(sampling)
        return [
            Rollout(p.prompt_id, g, list(p.token_ids), [i], [-0.5], "stop", self.version)
            for g, p in enumerate(prompts)
            for i in range(sampling.n)
        ]


class FakeScorer:
    def __init__(self, calls: Calls, reward):
        self.calls, self.reward = calls, reward

    def score(self, rollouts):
        self.calls.append("score")
        return [self.reward(r) for r in rollouts]


class FakeLearner:
    def __init__(self, calls: Calls):
        self.calls, self.batches, self.saved = calls, [], []

    def train_step(self, batch: TrainBatch, *, sft=None, lr=None):
        self.calls.append("sft_step" if sft is not None else "train_step")
        self.batches.append((batch, sft, lr))
        return {"loss": 1.0}

    def save_checkpoint(self, path, *, weights_only=False):
        """Writes a stand-in weights file, and its version as the training state."""
        self.calls.append("save")
        self.saved.append(path)
        Path(path, "model.safetensors").write_text("weights")
        if not weights_only:
            Path(path, "trainer_state").mkdir(exist_ok=True)
            Path(path, "trainer_state", "learner.txt").write_text(str(len([b for b in self.batches])))
        return path

    def load_checkpoint(self, path):
        self.calls.append("load")
        return int(Path(path, "trainer_state", "learner.txt").read_text())

    def set_reference(self, path, *, save=False):
        """Records the reference; a save writes a stand-in snapshot directory."""
        self.calls.append("snapshot_reference" if save else "load_reference")
        if save:
            Path(path).mkdir(parents=True, exist_ok=True)


class FakeSync:
    def __init__(self, calls: Calls, engine: FakeEngine):
        self.calls, self.engine, self.versions = calls, engine, []

    def push(self, version):
        self.calls.append("sync")
        self.versions.append(version)
        self.engine.version = version
        return {"sync/bytes": 10.0}


class Sink:
    def __init__(self):
        self.rows = []

    def log(self, step, metrics):
        self.rows.append((step, dict(metrics)))


def make(overrides, reward=lambda r: float(r.completion_ids[0] % 2), sft=False, ckpt=None, reference_dir=None):
    cfg = load_config(overrides=["rollout.prompts_per_step=3", "rollout.group_size=4", *overrides])
    calls = Calls()
    engine = FakeEngine(calls)
    learner = FakeLearner(calls)
    prompts = [Prompt(f"p{i}", [1, i + 2]) for i in range(5)]
    examples = [TrainSample([1, 2], [3], [1.0])] * 4 if sft else []
    driver = build_driver(
        cfg, engine=engine, scorer=FakeScorer(calls, reward), learner=learner,
        weights=FakeSync(calls, engine), train_prompts=prompts, eval_prompts=prompts[:2],
        sft_examples=examples, sink=Sink(), checkpoint_dir=ckpt, reference_dir=reference_dir,
    )
    return driver, calls, engine, learner


def test_rl_step_runs_the_phases_in_order_and_advances_versions():
    driver, calls, engine, learner = make(["stages=[{kind: rl, steps: 2}]", "evaluation.pass_k=0"])
    summary = driver.run()
    assert calls == [
        "generate_greedy", "score",                       # evaluation before RL
        "generate", "score", "train_step", "sync",         # step 1
        "generate", "score", "train_step", "sync",         # step 2
        "generate_greedy", "score",                       # evaluation after RL
    ]
    assert summary.version == 2 and summary.steps == 2
    logged = [m for _, m in driver.sink.rows if m.get("stage") == "rl1"]
    # every logged RL step carries its learner, reward and sync metrics and the new version
    assert [(m["version"], m["sync/bytes"], "learner/loss" in m, "reward/mean" in m) for m in logged] == [
        (1.0, 10.0, True, True), (2.0, 10.0, True, True)]
    batch = learner.batches[0][0]
    assert len(batch) == 12  # 3 prompts x 4 completions
    # GRPO over each group's rewards 0, 1, 0, 1: (r - 0.5) / sqrt(1/3) (unbiased std) on every token
    for sample in batch.samples:
        expected = 0.5 / (1 / 3) ** 0.5 * (1 if sample.completion_ids[0] % 2 else -1)
        assert sample.advantages == pytest.approx([expected] * len(sample.completion_ids), abs=1e-5)
    assert set(summary.evaluations) == {"before_rl1", "after_rl1"}  # stages count from 1, like steps
    # rewards alternate 0, 1 within each group: accuracy of greedy completion 0 is 0
    assert summary.evaluations["after_rl1"]["eval/accuracy"] == 0.0
    # step seeds differ and are reproducible
    seeds = [s.seed for s in engine.seen if s.n == 4]
    assert len(set(seeds)) == 2 and seeds == [sampling_settings(driver.cfg, 0).seed, sampling_settings(driver.cfg, 1).seed]


def test_sft_stage_then_rl_syncs_once_after_sft_and_uses_the_stage_lr():
    driver, calls, _, learner = make(
        ["stages=[{kind: sft, steps: 3, batch_size: 2, lr: 0.01}, {kind: rl, steps: 1}]", "evaluation.pass_k=0"],
        sft=True,
    )
    driver.run()
    assert calls[:4] == ["sft_step", "sft_step", "sft_step", "sync"]
    assert [(len(b), sft.name, lr) for b, sft, lr in learner.batches[:3]] == [(2, "nll", 0.01)] * 3
    assert driver.state.version == 4  # 3 SFT steps + 1 RL step


def test_an_rl_stage_at_lr_0_hands_the_learner_0_not_its_default():
    driver, _, _, learner = make(["stages=[{kind: rl, steps: 2, lr: 0}]", "evaluation.pass_k=0"])
    driver.run()
    assert [lr for _, _, lr in learner.batches] == [0.0, 0.0] and driver.state.version == 2  # steps and syncs still run


def test_zero_variance_groups_are_filtered_when_configured():
    # all completions of a prompt get the same reward: every group has zero variance
    driver, calls, _, learner = make(
        ["stages=[{kind: rl, steps: 1}]", "algo.filter_zero_variance=true", "evaluation.pass_k=0"],
        reward=lambda r: 1.0,
    )
    metrics = driver.rl_step()
    assert metrics["batch/zero_variance_group_fraction"] == 1.0 and metrics["batch/skipped"] == 1.0
    assert "train_step" not in calls and "sync" not in calls and driver.state.version == 0

    driver, calls, _, learner = make(["stages=[{kind: rl, steps: 1}]", "evaluation.pass_k=0"], reward=lambda r: 1.0)
    driver.rl_step()
    assert len(learner.batches[0][0]) == 12  # kept (with zero advantages) when not filtering


def test_failed_rewards_are_excluded_and_counted():
    driver, _, _, learner = make(
        ["stages=[{kind: rl, steps: 1}]"], reward=lambda r: None if r.completion_ids[0] == 3 else float(r.completion_ids[0])
    )
    metrics = driver.rl_step()
    assert metrics["batch/failed_rewards"] == 3.0 and len(learner.batches[0][0]) == 9


def test_a_scorer_may_return_scores_whose_metrics_and_errors_reach_the_log(caplog):
    def scores(rollouts):
        totals = [None if r.completion_ids[0] == 0 else 1.0 for r in rollouts]
        return Scores(totals, {"reward/custom/mean": 1.0}, ["reward 'custom' failed (timeout) on sample 0: slow"])

    driver, _, _, learner = make(["stages=[{kind: rl, steps: 1}]"], reward=None)
    driver.parts.collector.scorer.score = scores
    with caplog.at_level("WARNING", logger="rlft.collect"):
        metrics = driver.rl_step()
    assert metrics["reward/custom/mean"] == 1.0 and metrics["batch/failed_rewards"] == 3.0
    assert len(learner.batches[0][0]) == 9
    assert "step 1: reward 'custom' failed (timeout) on sample 0: slow" in caplog.text  # as the console counts


@pytest.mark.parametrize("failing, limit, stops", [(2, 0.5, False), (3, 0.5, True), (4, 1.0, False), (1, 0.0, True)])
def test_a_step_stops_the_run_only_past_the_failure_rate_limit(failing, limit, stops):
    # group size 4: completions 0..failing-1 of every prompt fail -> failed fraction = failing / 4
    driver, calls, _, learner = make(
        ["stages=[{kind: rl, steps: 1}]", f"reward.max_failure_rate={limit}"],
        reward=lambda r: None if r.completion_ids[0] < failing else 1.0,
    )
    if stops:
        with pytest.raises(RewardFailureError, match=f"{failing / 4:.0%} of the samples failed"):
            driver.rl_step()
        assert "train_step" not in calls
    else:
        driver.rl_step()
        logged = driver.sink.rows[-1][1]
        assert logged["batch/failed_rewards"] == 3 * failing and logged["batch/rollouts"] == 12
        if failing < 4:  # the step trains on the samples that were scored
            assert [len(b[0]) for b in learner.batches] == [3 * (4 - failing)] and "sync" in calls
        else:  # nothing scored: the step is skipped, the policy stays
            assert learner.batches == [] and logged["batch/skipped"] == 1.0 and "sync" not in calls


def test_evaluation_and_checkpoint_cadence(tmp_path):
    driver, calls, _, learner = make(
        ["stages=[{kind: rl, steps: 5}]", "evaluation.every=2", "evaluation.pass_k=2",
         "checkpoint.every=2", "checkpoint.keep_last=2"],
        ckpt=str(tmp_path),
    )
    summary = driver.run()
    assert list(summary.evaluations) == ["before_rl1", "rl1_step2", "rl1_step4", "after_rl1"]
    assert "eval/pass@2" in summary.evaluations["after_rl1"]
    # pass@2: completions 0 and 1 -> one of them is rewarded 1 -> every prompt solved
    assert summary.evaluations["after_rl1"]["eval/pass@2"] == 1.0
    assert summary.evaluations["after_rl1"]["eval/mean@2"] == 0.5  # rewards 0 and 1 for every prompt
    # written under step-N.tmp, then renamed into place
    assert [p.rsplit("-", 1)[1] for p in learner.saved] == ["000002.tmp", "000004.tmp", "000005.tmp"]
    assert [p.rsplit("-", 1)[1] for p in summary.checkpoints] == ["000004", "000005"]


def test_sft_stage_without_examples_fails_clearly():
    driver, *_ = make(["stages=[{kind: sft, steps: 1}]"])
    with pytest.raises(ValueError, match="no reference completions"):
        driver.run()


def test_sample_completions_reach_the_sink_on_their_cadence_with_their_rewards():
    class SampleSink(Sink):
        def __init__(self):
            super().__init__()
            self.samples = []

        def log_samples(self, step, rows):
            self.samples.append((step, rows))

    driver, _, _, _ = make(
        ["stages=[{kind: rl, steps: 4}]", "logging.sample_every=2", "logging.samples_per_step=3", "evaluation.pass_k=0"]
    )
    driver.sink = SampleSink()
    driver.run()
    assert [step for step, _ in driver.sink.samples] == [2, 4]
    rows = driver.sink.samples[0][1]
    # 12 rollouts (3 prompts x 4): rows 0, 6 (rounded from 5.5) and 11; reward = completion token % 2
    assert [(r["reward"], r["stage"], r["num_tokens"]) for r in rows] == [(0.0, "rl1", 1), (0.0, "rl1", 1), (1.0, "rl1", 1)]
    assert len({r["prompt_id"] for r in rows}) == 3  # one from each prompt's group
    step_rows = [m for _, m in driver.sink.rows if m.get("stage") == "rl1"]
    assert all(m["throughput/tokens_per_s"] > 0 for m in step_rows)
    evals = [m for _, m in driver.sink.rows if "eval/accuracy" in m]
    assert len(evals) == 2 and all(m["time/eval"] >= 0 for m in evals)
    assert "time/eval" not in driver.state.summary.evaluations["after_rl1"]


def _prompt_ids(driver):
    return [m["prompt_ids"] for _, m in driver.sink.rows if "prompt_ids" in m]


def test_a_restored_driver_continues_exactly_where_the_checkpoint_left_off(tmp_path):
    stages = "stages=[{kind: sft, steps: 2, batch_size: 2}, {kind: rl, steps: 4}]"
    straight, _, _, _ = make([stages, "evaluation.pass_k=0"], sft=True, ckpt=str(tmp_path / "a"))
    straight.run()

    first, _, _, _ = make([stages, "evaluation.pass_k=0", "checkpoint.every=4"], sft=True, ckpt=str(tmp_path / "b"))
    first.parts.learner.train_step = _interrupt_after(first.parts.learner.train_step, calls=5)  # dies in step 5
    with pytest.raises(KeyboardInterrupt):
        first.run()
    resumed, calls, engine, learner = make([stages, "evaluation.pass_k=0"], sft=True, ckpt=str(tmp_path / "b"))
    assert load_config(tmp_path / "b" / "step-000004" / "trainer_state" / "config.yaml") == first.cfg
    resumed.restore(tmp_path / "b" / "step-000004")
    assert (resumed.state.step, resumed.state.version, resumed.state.stage_index, resumed.state.stage_step) == (4, 4, 1, 2)
    assert calls[:2] == ["load", "sync"] and engine.version == 4  # the engines serve the restored weights
    resumed.run()
    assert _prompt_ids(first)[:2] + _prompt_ids(resumed) == _prompt_ids(straight)  # no prompt replayed or skipped
    assert resumed.state.summary.evaluations == straight.state.summary.evaluations  # "before_rl1" kept from the checkpoint
    assert [s for _, m in resumed.sink.rows for s in [m.get("step")] if s] == [5.0, 6.0]


def _interrupt_after(train_step, calls):
    count = [0]

    def wrapped(batch, **kw):
        count[0] += 1
        if count[0] == calls:
            raise KeyboardInterrupt
        return train_step(batch, **kw)

    return wrapped


def test_an_interrupt_checkpoints_the_last_step_boundary_never_a_half_step(tmp_path):
    driver, calls, _, learner = make(["stages=[{kind: rl, steps: 5}]", "evaluation.pass_k=0"], ckpt=str(tmp_path))
    scorer = driver.parts.collector.scorer.score
    count = [0]

    def score_then_interrupt(rollouts):
        count[0] += 1
        if count[0] == 4:  # evaluation, steps 1, 2, then Ctrl-C while scoring step 3
            raise KeyboardInterrupt
        return scorer(rollouts)

    driver.parts.collector.scorer.score = score_then_interrupt
    with pytest.raises(KeyboardInterrupt):
        driver.run()
    saved = tmp_path / "step-000002"
    from rlft.checkpointing import load_driver_state

    state = load_driver_state(saved)
    # the sampler is saved as it was before step 3 drew its prompts: a resume draws them again
    assert (state["step"], state["stage_step"]) == (2, 2)
    assert (state["sampler"]["epoch"], state["sampler"]["position"]) == (1, 1)  # 6 of 5 prompts drawn

    # interrupted inside the learner update: no checkpoint (the last periodic one is the resume point)
    driver, *_ = make(["stages=[{kind: rl, steps: 5}]", "evaluation.pass_k=0"], ckpt=str(tmp_path / "c"))
    driver.parts.learner.train_step = _interrupt_after(driver.parts.learner.train_step, calls=2)
    with pytest.raises(KeyboardInterrupt):
        driver.run()
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())


def test_consecutive_non_finite_skips_stop_the_run():
    from rlft.driver import NonFiniteError

    driver, _, _, learner = make(["stages=[{kind: rl, steps: 10}]", "learner.max_consecutive_skips=3"])
    results = iter([0, 1, 1, 0, 1, 1, 1])  # skipped optimizer steps per learner step

    def train_step(batch, **kw):
        return {"loss": 1.0, "optimizer_steps": 1.0, "skipped_steps": float(next(results))}

    learner.train_step = train_step
    with pytest.raises(NonFiniteError, match="3 learner steps in a row were skipped"):
        driver.run()
    assert driver.state.step == 6  # the 7th step stopped the run; a non-skipped step resets the count


def test_a_failed_checkpoint_keeps_the_previous_one_and_the_run_goes_on(tmp_path):
    driver, _, _, learner = make(["stages=[{kind: rl, steps: 4}]", "checkpoint.every=2", "evaluation.pass_k=0"],
                                 ckpt=str(tmp_path))
    save = learner.save_checkpoint

    def disk_full_after_first(path, **kw):
        if len(learner.saved) >= 1:
            Path(path, "partial.bin").write_text("half")
            raise OSError(28, "No space left on device")
        return save(path, **kw)

    learner.save_checkpoint = disk_full_after_first
    summary = driver.run()
    assert summary.steps == 4 and driver.state.failed_checkpoints == 2  # step 4 and the final one failed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000002"]  # intact; no .tmp left behind
    assert (tmp_path / "step-000002" / "model.safetensors").read_text() == "weights"


def test_a_stop_request_ends_the_run_after_the_step_with_an_exact_checkpoint(tmp_path):
    driver, _, _, learner = make(["stages=[{kind: rl, steps: 5}]", "evaluation.pass_k=0"], ckpt=str(tmp_path))
    train_step = learner.train_step

    def request_stop_in_step_2(batch, **kw):
        if len(learner.batches) == 1:
            driver.stop_requested = True  # what the first Ctrl-C / SIGTERM does
        return train_step(batch, **kw)

    learner.train_step = request_stop_in_step_2
    with pytest.raises(KeyboardInterrupt):
        driver.run()
    from rlft.checkpointing import load_driver_state

    state = load_driver_state(tmp_path / "step-000002")  # step 2 finished, then the run stopped
    assert (state["step"], state["version"], state["stage_step"]) == (2, 2, 2)


def test_restart_counts_of_the_roles_reach_the_step_metrics():
    driver, *_ = make(["stages=[{kind: rl, steps: 1}]", "evaluation.pass_k=0"])
    driver.parts.collector.engine.restart_metrics = lambda: {"restarts/rollout": 2.0}
    driver.parts.collector.scorer.restart_metrics = lambda: {"restarts/reward": 1.0}
    metrics = driver.rl_step()
    assert (metrics["restarts/rollout"], metrics["restarts/reward"]) == (2.0, 1.0)


def _signal_only_from_p1_p3(r):
    """Groups of p1 and p3 have reward variance (completions alternate 0/1); the others are constant."""
    return float(r.completion_ids[0] % 2) if r.prompt_id in ("p1", "p3") else 1.0


@pytest.mark.parametrize("sampler", ["uniform", "learnability", "sec"])
def test_dynamic_sampling_refills_the_batch_with_groups_that_have_signal(sampler):
    driver, calls, _, learner = make(
        ["stages=[{kind: rl, steps: 1}]", "algo.dynamic_sampling.enabled=true",
         "algo.dynamic_sampling.max_extra_rounds=10", f"curriculum.name={sampler}", "evaluation.pass_k=0"],
        reward=_signal_only_from_p1_p3,
    )
    metrics = driver.rl_step()
    batch = learner.batches[0][0]
    assert len(batch) == 12  # 3 groups x 4, all with signal
    assert metrics["batch/zero_variance_group_fraction"] == 0.0 and metrics["sampling/groups_short"] == 0.0
    assert metrics["sampling/rounds"] > 1 and calls.count("generate") == metrics["sampling/rounds"]
    assert set(metrics["prompt_ids"]) <= {"p1", "p3"} and len(metrics["prompt_ids"]) == 3
    low, high = sorted({round(s.advantages[0], 6) for s in batch.samples})  # GRPO on 0/1 rewards: +-0.866
    assert low == -high and high > 0


def test_dynamic_sampling_trains_on_what_it_has_when_rounds_run_out():
    driver, _, _, learner = make(
        ["stages=[{kind: rl, steps: 1}]", "algo.dynamic_sampling.enabled=true",
         "algo.dynamic_sampling.max_extra_rounds=0", "evaluation.pass_k=0"],
        reward=lambda r: 1.0,  # no group ever has signal
    )
    metrics = driver.rl_step()
    assert metrics["sampling/rounds"] == 1.0 and metrics["sampling/groups_short"] == 3.0
    assert metrics["batch/skipped"] == 1.0 and not learner.batches  # nothing to train on, no crash


def _stages(*kinds):
    return "stages=[" + ", ".join(f"{{kind: {k}, steps: 2, batch_size: 2}}" for k in kinds) + "]"


@pytest.mark.parametrize(
    "kinds, overrides, snapshots",
    [
        (("sft", "rl"), [], ["rl1"]),
        (("sft", "rl", "rl"), [], ["rl1"]),  # the second RL stage keeps the first one's reference
        (("sft", "rl", "sft", "rl"), [], ["rl1", "rl2"]),  # named per kind: sft1 rl1 sft2 rl2
        (("rl", "rl"), [], []),  # no SFT before: model.path stays the reference
        (("sft", "rl"), ["algo.kl.reference=base"], []),
        (("sft", "rl"), ["algo.kl.coef=0"], []),  # no KL term, no reference model at all
    ],
)
def test_an_rl_stage_after_sft_measures_its_kl_against_the_sft_policy(tmp_path, kinds, overrides, snapshots):
    driver, calls, _, _ = make([_stages(*kinds), "algo.kl.coef=0.1", "evaluation.pass_k=0", *overrides],
                               sft=True, reference_dir=str(tmp_path))
    driver.run()
    assert calls.count("snapshot_reference") == len(snapshots) and "load_reference" not in calls
    assert sorted(p.name for p in tmp_path.iterdir()) == snapshots
    if snapshots:  # taken after the SFT stage's last step and sync, before the RL stage's first step
        first = calls.index("snapshot_reference")
        assert calls[first - 2:first] == ["sft_step", "sync"] and "train_step" not in calls[:first]
        assert driver.state.reference == str(tmp_path / snapshots[-1]) == driver.state.state_dict()["reference"]


def test_a_resumed_rl_stage_reloads_its_reference_snapshot_and_takes_no_new_one(tmp_path):
    overrides = [_stages("sft", "rl"), "algo.kl.coef=0.1", "evaluation.pass_k=0", "checkpoint.every=3"]
    first, _, _, _ = make(overrides, sft=True, ckpt=str(tmp_path / "ckpt"), reference_dir=str(tmp_path / "ref"))
    first.parts.learner.train_step = _interrupt_after(first.parts.learner.train_step, calls=4)  # dies in RL step 2
    with pytest.raises(KeyboardInterrupt):
        first.run()
    resumed, calls, _, _ = make(overrides, sft=True, ckpt=str(tmp_path / "ckpt"), reference_dir=str(tmp_path / "ref"))
    resumed.restore(tmp_path / "ckpt" / "step-000003")
    assert resumed.state.reference == str(tmp_path / "ref" / "rl1")
    assert calls[:3] == ["load", "load_reference", "sync"]
    resumed.run()
    assert "snapshot_reference" not in calls

    (tmp_path / "ref" / "rl1").rmdir()
    gone, _, _, _ = make(overrides, sft=True, ckpt=str(tmp_path / "ckpt"), reference_dir=str(tmp_path / "ref"))
    with pytest.raises(CheckpointError, match="reference snapshot .* is gone"):
        gone.restore(tmp_path / "ckpt" / "step-000003")


def test_a_snapshot_without_a_reference_directory_fails_clearly():
    driver, _, _, _ = make([_stages("sft", "rl"), "algo.kl.coef=0.1", "evaluation.pass_k=0"], sft=True)
    with pytest.raises(ValueError, match="directory for the reference snapshot"):
        driver.run()


def test_evaluation_golden_accuracy_pass_at_k_and_mean_at_k():
    """Two held-out prompts, 4 samples each (completion tokens 0..3), greedy completion token 0.
    p0 is rewarded only for token 3, p1's reward fails for token 2 (never correct) and is 0 otherwise:
    accuracy 0, pass@4 = 1/2 (p0 solved once), mean@4 = 1/8 correct; mean reward 1/7 over the 7
    samples scored."""
    def reward(r):
        if r.prompt_id == "p1" and r.completion_ids[0] == 2:
            return None
        return float(r.prompt_id == "p0" and r.completion_ids[0] == 3)

    driver, _, _, _ = make(["evaluation.pass_k=4"], reward=reward)
    out = driver.parts.evaluate()
    assert out == {"eval/accuracy": 0.0, "eval/failed_rewards": 0.0, "eval/prompts": 2.0,
                   "eval/mean_reward": 0.0, "eval/pass@4": 0.5, "eval/mean@4": 0.125,
                   "eval/mean_reward@4": pytest.approx(1 / 7)}
