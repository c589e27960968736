"""The driver's loop against fakes: phase order, versions, filtering, evaluation and checkpoint cadence."""

from __future__ import annotations

import pytest

from rlft.config import load_config
from rlft.driver import Driver, RewardFailureError
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

    def train_step(self, batch: TrainBatch, *, supervised=False, lr=None):
        self.calls.append("sft_step" if supervised else "train_step")
        self.batches.append((batch, supervised, lr))
        return {"loss": 1.0}

    def save_pretrained(self, path):
        self.calls.append("save")
        self.saved.append(path)
        return path


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


def make(overrides, reward=lambda r: float(r.completion_ids[0] % 2), sft=False, ckpt=None):
    cfg = load_config(overrides=["rollout.prompts_per_step=3", "rollout.group_size=4", *overrides])
    calls = Calls()
    engine = FakeEngine(calls)
    learner = FakeLearner(calls)
    prompts = [Prompt(f"p{i}", [1, i + 2]) for i in range(5)]
    examples = [TrainSample([1, 2], [3], [1.0])] * 4 if sft else []
    driver = Driver(
        cfg, engine=engine, scorer=FakeScorer(calls, reward), learner=learner,
        weights=FakeSync(calls, engine), train_prompts=prompts, eval_prompts=prompts[:2],
        sft_examples=examples, sink=Sink(), checkpoint_dir=ckpt,
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
    logged = [m for _, m in driver.sink.rows if m.get("stage") == "rl0"]
    # every logged RL step carries its learner, reward and sync metrics and the new version
    assert [(m["version"], m["sync/bytes"], "learner/loss" in m, "reward/mean" in m) for m in logged] == [
        (1.0, 10.0, True, True), (2.0, 10.0, True, True)]
    batch = learner.batches[0][0]
    assert len(batch) == 12 and batch.samples[0].advantages  # 3 prompts x 4 completions
    assert set(summary.evaluations) == {"before_rl0", "after_rl0"}
    # rewards alternate 0, 1 within each group: accuracy of greedy completion 0 is 0
    assert summary.evaluations["after_rl0"]["eval/accuracy"] == 0.0
    # step seeds differ and are reproducible
    seeds = [s.seed for s in engine.seen if s.n == 4]
    assert len(set(seeds)) == 2 and seeds == [driver.sampling(0).seed, driver.sampling(1).seed]


def test_sft_stage_then_rl_syncs_once_after_sft_and_uses_the_stage_lr():
    driver, calls, _, learner = make(
        ["stages=[{kind: sft, steps: 3, batch_size: 2, lr: 0.01}, {kind: rl, steps: 1}]", "evaluation.pass_k=0"],
        sft=True,
    )
    driver.run()
    assert calls[:4] == ["sft_step", "sft_step", "sft_step", "sync"]
    assert [(len(b), sup, lr) for b, sup, lr in learner.batches[:3]] == [(2, True, 0.01)] * 3
    assert driver.version == 4  # 3 SFT steps + 1 RL step


def test_zero_variance_groups_are_filtered_when_configured():
    # all completions of a prompt get the same reward: every group has zero variance
    driver, calls, _, learner = make(
        ["stages=[{kind: rl, steps: 1}]", "algo.filter_zero_variance=true", "evaluation.pass_k=0"],
        reward=lambda r: 1.0,
    )
    metrics = driver.rl_step()
    assert metrics["batch/zero_variance_group_fraction"] == 1.0 and metrics["batch/skipped"] == 1.0
    assert "train_step" not in calls and "sync" not in calls and driver.version == 0

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
    driver.scorer.score = scores
    with caplog.at_level("WARNING", logger="rlft.driver"):
        metrics = driver.rl_step()
    assert metrics["reward/custom/mean"] == 1.0 and metrics["batch/failed_rewards"] == 3.0
    assert len(learner.batches[0][0]) == 9
    assert "step 0: reward 'custom' failed (timeout) on sample 0: slow" in caplog.text


@pytest.mark.parametrize("failing, limit, stops", [(2, 0.5, False), (3, 0.5, True), (4, 1.0, False), (1, 0.0, True)])
def test_a_step_stops_the_run_only_past_the_failure_rate_limit(failing, limit, stops):
    # group size 4: completions 0..failing-1 of every prompt fail -> failed fraction = failing / 4
    driver, calls, _, _ = make(
        ["stages=[{kind: rl, steps: 1}]", f"reward.max_failure_rate={limit}"],
        reward=lambda r: None if r.completion_ids[0] < failing else 1.0,
    )
    if stops:
        with pytest.raises(RewardFailureError, match=f"{failing / 4:.0%} of the samples failed"):
            driver.rl_step()
        assert "train_step" not in calls
    else:
        driver.rl_step()


def test_evaluation_and_checkpoint_cadence(tmp_path):
    driver, calls, _, learner = make(
        ["stages=[{kind: rl, steps: 5}]", "evaluation.every=2", "evaluation.pass_k=2",
         "checkpoint.every=2", "checkpoint.keep_last=2"],
        ckpt=str(tmp_path),
    )
    summary = driver.run()
    assert list(summary.evaluations) == ["before_rl0", "rl0_step2", "rl0_step4", "after_rl0"]
    assert "eval/pass@2" in summary.evaluations["after_rl0"]
    # pass@2: completions 0 and 1 -> one of them is rewarded 1 -> every prompt solved
    assert summary.evaluations["after_rl0"]["eval/pass@2"] == 1.0
    assert [p.rsplit("-", 1)[1] for p in learner.saved] == ["000002", "000004", "000005"]
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
    assert [(r["reward"], r["stage"], r["num_tokens"]) for r in rows] == [(0.0, "rl0", 1), (0.0, "rl0", 1), (1.0, "rl0", 1)]
    assert len({r["prompt_id"] for r in rows}) == 3  # one from each prompt's group
    step_rows = [m for _, m in driver.sink.rows if m.get("stage") == "rl0"]
    assert all(m["throughput/tokens_per_s"] > 0 for m in step_rows)
    evals = [m for _, m in driver.sink.rows if "eval/accuracy" in m]
    assert len(evals) == 2 and all(m["time/eval"] >= 0 for m in evals)
    assert "time/eval" not in driver.summary.evaluations["after_rl0"]
