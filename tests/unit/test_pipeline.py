"""The asynchronous pipeline's bookkeeping (rlft.pipeline) and the driver's async loop, against fakes.

The fake stream generates a ticket when the engines would: at submission, with the version the
engines serve then (``wait`` mode: an engine finishes its call before loading new weights)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlft.checkpointing import load_driver_state
from rlft.config import load_config
from rlft.collect import sampling_settings
from rlft.compose import build_driver
from rlft.pipeline import Pipeline, ScoredGroup, lag, split_stale
from rlft.types import Prompt, Rollout, SamplingSettings, Scores, TrainBatch


def group(step: int, gid: int, version: int, reward: float = 1.0) -> ScoredGroup:
    return ScoredGroup(step, gid, [Rollout("p", gid, [1], [2], [0.0], "stop", version)], Scores([reward]))


def observer(log, entry=lambda g, index: (g.step, g.group_id, index)):
    """A pipeline's ``arrive``: records the groups it sees first, keeps them as they are."""

    def arrive(g, index, first):
        if first:
            log.append(entry(g, index))
        return g

    return arrive


# ---------------------------------------------------------------------------- the staleness filter


def test_split_stale_golden():
    # current version 7, bound 2: versions 7, 6, 5 are fresh (lag 0, 1, 2), 4 and 0 are stale
    groups = [group(0, i, v) for i, v in enumerate([7, 4, 6, 5, 0])]
    fresh, stale = split_stale(groups, current_version=7, max_staleness=2)
    assert [g.group_id for g in fresh] == [0, 2, 3]
    assert [g.group_id for g in stale] == [1, 4]
    assert [lag(g.version, 7) for g in stale] == [3, 7]


def test_split_stale_synchronous_bound_keeps_only_the_current_version():
    fresh, stale = split_stale([group(0, 0, 3), group(0, 1, 2)], current_version=3, max_staleness=0)
    assert [g.group_id for g in fresh] == [0] and [g.group_id for g in stale] == [1]
    with pytest.raises(ValueError, match="max_staleness"):
        split_stale([], current_version=0, max_staleness=-1)


def test_a_group_mixing_versions_counts_as_its_oldest():
    g = ScoredGroup(0, 0, [Rollout("p", 0, [1], [2], [0.0], "stop", v) for v in (5, 3)], Scores([1.0, 0.0]))
    assert g.version == 3
    assert split_stale([g], current_version=5, max_staleness=1) == ([], [g])


@given(st.lists(st.integers(0, 20), max_size=30), st.integers(0, 20), st.integers(0, 5))
def test_split_stale_partitions_by_lag(versions, current, k):
    groups = [group(0, i, v) for i, v in enumerate(versions)]
    fresh, stale = split_stale(groups, current, k)
    assert sorted(g.group_id for g in fresh + stale) == list(range(len(versions)))
    assert all(current - g.version <= k for g in fresh) and all(current - g.version > k for g in stale)


# ---------------------------------------------------------------------------- Pipeline


class ListStream:
    """Records submissions; groups are handed to ``poll`` by the test."""

    def __init__(self):
        self.submitted, self.queue = [], []

    def submit(self, step, prompts, sampling):
        self.submitted.append((step, [p.prompt_id for p in prompts]))

    def poll(self, timeout_s=None):
        out, self.queue = self.queue, []
        return out

    def metrics(self):
        return {}

    def cancel(self):
        pass


def test_pipeline_fills_ahead_within_the_stage_and_observes_each_group_once():
    stream, drawn = ListStream(), iter(range(100))
    pipe = Pipeline(stream, max_staleness=2)
    draw = lambda n: [next(drawn) for _ in range(n)]
    make = lambda step, idx: ([Prompt(f"q{i}", [1]) for i in idx], SamplingSettings())
    pipe.fill(0, 10, draw=draw, make=make, n=2)
    assert stream.submitted == [(0, ["q0", "q1"]), (1, ["q2", "q3"]), (2, ["q4", "q5"])]
    pipe.fill(1, 4, draw=draw, make=make, n=2)  # the stage ends at step 4: only ticket 3 is new
    assert stream.submitted[-1] == (3, ["q6", "q7"]) and len(stream.submitted) == 4
    observed = []
    # groups arrive out of order and across tickets; a duplicate delivery is stored, not re-observed
    stream.queue = [group(1, 1, 0), group(0, 1, 0), group(0, 0, 0), group(0, 0, 0)]
    ticket = pipe.wait(0, observer(observed))
    assert observed == [(1, 1, 3), (0, 1, 1), (0, 0, 0)]
    assert sorted(ticket.groups) == [0, 1] and 0 not in pipe.tickets and 1 in pipe.tickets
    with pytest.raises(RuntimeError, match="no ticket"):
        pipe.wait(9, observer([]))


def test_pipeline_state_round_trip_regenerates_with_the_same_prompts_and_observes_nothing_twice():
    stream = ListStream()
    pipe = Pipeline(stream, max_staleness=1)
    pipe.fill(0, 5, draw=lambda n: [4, 2], make=lambda s, idx: ([Prompt(f"q{i}", [1]) for i in idx], SamplingSettings()), n=2)
    pipe.add(group(1, 0, 0), observer([]))
    state = pipe.state_dict()
    assert state == [{"step": 0, "indices": [4, 2], "observed": []}, {"step": 1, "indices": [4, 2], "observed": [0]}]

    again = ListStream()
    restored = Pipeline(again, max_staleness=1)
    restored.load_state_dict(state)
    restored.fill(0, 5, draw=lambda n: pytest.fail("a restored ticket must not draw again"),
                  make=lambda s, idx: ([Prompt(f"q{i}", [1]) for i in idx], SamplingSettings()), n=2)
    assert again.submitted == [(0, ["q4", "q2"]), (1, ["q4", "q2"])]
    seen = []
    restored.add(group(1, 0, 3), observer(seen, lambda g, i: g.group_id))
    restored.add(group(1, 1, 3), observer(seen, lambda g, i: g.group_id))
    assert seen == [1]  # group 0 of step 1 was observed before the checkpoint


# ---------------------------------------------------------------------------- the driver's async loop


class Engine:
    def __init__(self):
        self.version = 0

    def generate(self, prompts, sampling):
        return [Rollout(p.prompt_id, g, list(p.token_ids), [i], [-0.5], "stop", self.version)
                for g, p in enumerate(prompts) for i in range(sampling.n)]


class Stream:
    """Generates at submission with the engine's version (wait mode); delivers groups in reverse."""

    def __init__(self, engine, lag_versions=0):
        self.engine, self.lag_versions, self.ready, self.submissions = engine, lag_versions, [], []

    def submit(self, step, prompts, sampling):
        self.submissions.append((step, self.engine.version, [p.prompt_id for p in prompts], sampling.seed))
        version = max(self.engine.version - self.lag_versions, 0)
        for g, p in enumerate(prompts):
            rs = [Rollout(p.prompt_id, g, list(p.token_ids), [i], [-0.5], "stop", version) for i in range(sampling.n)]
            self.ready.insert(0, ScoredGroup(step, g, rs, Scores([float(i % 2) for i in range(sampling.n)])))

    def poll(self, timeout_s=None):
        out, self.ready = self.ready, []
        return out

    def metrics(self):
        return {"aborted_groups": 0.0}

    def cancel(self):
        self.ready = []


class Scorer:
    def score(self, rollouts):
        return [float(r.completion_ids[0] % 2) for r in rollouts]


class Learner:
    def __init__(self):
        self.batches = []

    def train_step(self, batch: TrainBatch, *, sft=None, lr=None):
        self.batches.append(batch)
        return {"loss": 1.0}

    def save_checkpoint(self, path, *, weights_only=False):
        Path(path, "trainer_state").mkdir(parents=True, exist_ok=True)
        Path(path, "trainer_state", "learner.txt").write_text(str(len(self.batches)))
        return path

    def load_checkpoint(self, path):
        return int(Path(path, "trainer_state", "learner.txt").read_text())


class Sync:
    def __init__(self, engine):
        self.engine = engine

    def push(self, version):
        self.engine.version = version
        return {}


class Observing:
    """Wraps the driver's sampler to record what it observes."""

    def __init__(self, sampler, log):
        self.sampler, self.log = sampler, log

    def __getattr__(self, name):
        return getattr(self.sampler, name)

    def observe(self, results):
        self.log.extend(r.index for r in results)
        self.sampler.observe(results)


class Sink:
    def __init__(self):
        self.rows = []

    def log(self, step, metrics):
        self.rows.append(dict(metrics))


def make_async(overrides=(), lag_versions=0, ckpt=None):
    cfg = load_config(overrides=["rollout.prompts_per_step=3", "rollout.group_size=4", "rollout.max_staleness=1",
                                 "stages=[{kind: rl, steps: 5}]",
                                 "curriculum.name=uniform", *overrides])
    engine = Engine()
    stream, learner = Stream(engine, lag_versions), Learner()
    prompts = [Prompt(f"p{i}", [1, i + 2]) for i in range(7)]
    driver = build_driver(cfg, engine=engine, scorer=Scorer(), learner=learner, weights=Sync(engine),
                    train_prompts=prompts, sink=Sink(), stream=stream, checkpoint_dir=ckpt)
    observed: list[int] = []
    driver.parts.prompts.sampler = Observing(driver.parts.prompts.sampler, observed)
    return driver, stream, learner, observed


def rl_rows(driver):
    return [m for m in driver.sink.rows if m.get("stage") == "rl1"]


def test_async_run_trains_on_batches_at_most_one_version_old():
    driver, stream, learner, observed = make_async()
    summary = driver.run()
    assert summary.steps == 5 and summary.version == 5 and len(learner.batches) == 5
    # ticket s is submitted at the start of step s - 1 (after that step's previous push): version s - 1
    assert [(s, v) for s, v, _, _ in stream.submissions] == [(0, 0), (1, 0), (2, 1), (3, 2), (4, 3)]
    rows = rl_rows(driver)
    assert [r["batch/version_lag_max"] for r in rows] == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert all(r["async/stale_dropped"] == 0.0 for r in rows)
    # nothing generated for steps past the stage; every drawn prompt trained and observed exactly once
    assert driver.parts.collector.pipeline.tickets == {}
    trained = [pid for r in rows for pid in r["prompt_ids"]]
    assert trained == [pid for _, _, pids, _ in stream.submissions for pid in pids]
    assert len(observed) == 15
    # the sampling seeds are the synchronous loop's (a function of the step)
    assert [seed for *_, seed in stream.submissions] == [sampling_settings(driver.cfg, s).seed for s in range(5)]
    # group ids are re-numbered per batch, in prompt order
    assert [s.completion_ids for s in learner.batches[0].samples][:4] == [[0], [1], [2], [3]]


def test_groups_older_than_the_bound_are_dropped_and_counted():
    driver, stream, learner, _ = make_async(lag_versions=1)  # a lagging engine: everything 2 versions old
    driver.run()
    rows = rl_rows(driver)
    # step 3 trains at version 2 on a ticket sampled by version 0: dropped, no update; so step 4
    # (version 2, sampled by 1) is within the bound again, and step 5 (version 3, sampled by 1) is not
    assert [r["async/stale_dropped"] for r in rows] == [0.0, 0.0, 3.0, 0.0, 3.0]
    assert len(learner.batches) == 3 and [r.get("batch/skipped") for r in rows] == [None, None, 1.0, None, 1.0]
    assert [r["batch/version_lag_max"] for r in rows if "batch/version_lag_max" in r] == [0.0, 1.0, 1.0]


def test_resume_regenerates_the_tickets_in_flight_with_the_same_prompts(tmp_path):
    full, full_stream, _, full_observed = make_async()
    full.run()
    expected = [r["prompt_ids"] for r in rl_rows(full)]

    first, _, _, observed_a = make_async(["stages=[{kind: rl, steps: 5}]", "checkpoint.every=2"], ckpt=str(tmp_path))
    first.stage_end = 5
    for _ in range(3):  # then the run dies: its last checkpoint is step 2's
        first.rl_step("rl1")
    ckpt = tmp_path / "step-000002"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000002"]
    state_tickets = load_driver_state(ckpt)["pipeline"]
    assert [t["step"] for t in state_tickets] == [2]  # ticket of step 3 was in flight at step 2's end

    second, second_stream, _, observed_b = make_async(ckpt=str(tmp_path))
    second.restore(ckpt)
    second.run()
    resumed = [r["prompt_ids"] for r in rl_rows(second)]
    assert [r["prompt_ids"] for r in rl_rows(first)][:2] + resumed == expected
    # the regenerated ticket was sampled by the restored policy (version 2), with its own seed
    assert second_stream.submissions[0][:2] == (2, 2)
    assert second_stream.submissions[0][3] == full_stream.submissions[2][3]


def test_a_synchronous_resume_of_an_async_checkpoint_trains_the_drawn_prompts(tmp_path):
    first, _, _, _ = make_async(["checkpoint.every=2"], ckpt=str(tmp_path))
    first.stage_end = 5
    first.rl_step("rl1")
    first.rl_step("rl1")
    drawn = load_driver_state(tmp_path / "step-000002")["pipeline"]
    sync, _, _, _ = make_async(["rollout.max_staleness=0"], ckpt=str(tmp_path))
    sync.restore(tmp_path / "step-000002")
    sync.run()
    first_sync_step = rl_rows(sync)[0]["prompt_ids"]
    assert first_sync_step == [f"p{i}" for i in drawn[0]["indices"]]


def test_async_needs_a_stream_and_rejects_dynamic_sampling():
    cfg = load_config(overrides=["rollout.max_staleness=1"])
    with pytest.raises(ValueError, match="stream"):
        build_driver(cfg, engine=Engine(), scorer=Scorer(), learner=Learner(), weights=Sync(Engine()),
               train_prompts=[Prompt("p", [1])])
    with pytest.raises(ValueError, match="dynamic_sampling"):
        load_config(overrides=["rollout.max_staleness=1", "algo.dynamic_sampling.enabled=true"])
    with pytest.raises(ValueError, match="twice"):
        load_config(overrides=["algo.loss.name=decoupled_ppo", "algo.tis_cap=2.0"])
    with pytest.raises(ValueError, match="colocate"):
        load_config(overrides=["rollout.max_staleness=1", "cluster.colocate=true"])


def test_reward_errors_scored_group_by_group_are_logged_only_up_to_log_errors(caplog):
    driver, stream, _, _ = make_async(["reward.log_errors=2", "reward.max_failure_rate=1.0"])
    submit = stream.submit

    def with_errors(step, prompts, sampling):  # every group reports one reward error
        submit(step, prompts, sampling)
        stream.ready = [dataclasses.replace(g, scores=dataclasses.replace(g.scores, errors=[f"bad {g.group_id}"]))
                        for g in stream.ready]

    stream.submit = with_errors
    driver.stage_end = 1
    with caplog.at_level("WARNING", logger="rlft.collect"):
        driver.rl_step("rl1")
    assert [r.getMessage() for r in caplog.records if "bad" in r.getMessage()] == ["step 1: bad 0", "step 1: bad 1"]
