"""The step as parts: a third Collector and a third BatchBuilder run with the unchanged Driver, the
README's "how to add" examples run as written, each concept is computed once, and checkpoints of
the driver before the split resume."""

from __future__ import annotations

import dataclasses
import ast
import re
from pathlib import Path

import pytest
from rlft.algorithms import ADVANTAGES
from rlft.batching import build_train_batch, outcome_advantages
from rlft.builders import BatchBuilder, OutcomeBuilder
from rlft.checkpointing import CheckpointError, load_driver_state, save_driver_state
from rlft.collect import Collected, StepInfo
from rlft.compose import build_driver, parts
from rlft.config import load_config
from rlft.driver import Driver
from rlft.types import Prompt, Rollout, Scores, TrainBatch, TrainSample

from test_driver import Calls, FakeEngine, FakeLearner, FakeScorer, FakeSync, Sink
from test_ppo_step import make_ppo

ROOT = Path(__file__).resolve().parents[2]


class TwoTurnCollector:
    """A stand-in for multi-turn episodes: each prompt's group is two turns long, the second turn's
    completion appended to the first; it draws through the curriculum and lets it observe."""

    def __init__(self, cfg, engine, scorer, prompts):
        self.cfg, self.engine, self.scorer, self.prompts = cfg, engine, scorer, prompts
        self.episodes = 0

    def collect(self, at: StepInfo) -> Collected:
        indices = self.prompts.draw(self.cfg.rollout.prompts_per_step)
        first = self.engine.generate(self.prompts.get(indices), _settings(self.cfg, at.step))
        rollouts = [dataclasses.replace(r, completion_ids=[*r.completion_ids, 9],
                                        rollout_logprobs=[*r.rollout_logprobs, -0.1]) for r in first]
        scores = Scores.of(self.scorer.score(rollouts))
        adv = outcome_advantages(rollouts, scores.totals, estimator="rloo")
        self.prompts.observe(indices, rollouts, scores, adv)
        self.episodes += len(rollouts)
        return Collected(indices, rollouts, scores, adv, {"episodes/total": float(self.episodes)},
                         {"time/generate": 0.0}, [p.prompt_id for p in self.prompts.get(indices)])

    def state_dict(self):
        return [{"step": -1, "indices": [], "observed": [], "episodes": self.episodes}]

    def load_state_dict(self, state):
        self.episodes = state[0]["episodes"] if state else 0


class WithDemonstrations(BatchBuilder):
    """Outcome batches plus one demonstration per step, cycling through a list (its position is state)."""

    def __init__(self, cfg, demos):
        self.outcome, self.demos, self.next = OutcomeBuilder(cfg), demos, 0

    def build(self, collected, version):
        batch, metrics = self.outcome.build(collected, version)
        demo = self.demos[self.next % len(self.demos)]
        self.next += 1
        return TrainBatch([*batch.samples, demo]), {**metrics, "batch/demos": 1.0}

    def state_dict(self):
        return {"next": self.next}

    def load_state_dict(self, state):
        self.next = state["next"] if state else 0


def _settings(cfg, step):
    from rlft.collect import sampling_settings

    return sampling_settings(cfg, step)


def _third_parts_driver(ckpt=None, steps=3):
    cfg = load_config(overrides=["rollout.prompts_per_step=2", "rollout.group_size=2", "evaluation.pass_k=0",
                                 f"stages=[{{kind: rl, steps: {steps}}}]", "checkpoint.every=2"])
    calls = Calls()
    engine, learner = FakeEngine(calls), FakeLearner(calls)
    scorer = FakeScorer(calls, lambda r: float(r.completion_ids[0] % 2))
    prompts = [Prompt(f"p{i}", [1, i + 2]) for i in range(4)]
    chosen = parts(cfg, engine=engine, scorer=scorer, learner=learner, weights=FakeSync(calls, engine),
                   train_prompts=prompts)
    demos = [TrainSample([1], [7], [1.0]), TrainSample([1], [8], [1.0])]
    chosen = dataclasses.replace(chosen, collector=TwoTurnCollector(cfg, engine, scorer, chosen.prompts),
                                 builder=WithDemonstrations(cfg, demos))
    return Driver(cfg, chosen, sink=Sink(), checkpoint_dir=ckpt), calls, learner


def test_a_third_collector_and_builder_run_steps_with_the_unchanged_driver(tmp_path):
    driver, calls, learner = _third_parts_driver(str(tmp_path))
    summary = driver.run()
    assert summary.steps == 3 and summary.version == 3
    batches = [b for b, _, _ in learner.batches]
    # every batch: 2 prompts x 2 two-turn completions, then the step's demonstration
    assert [len(b) for b in batches] == [5, 5, 5]
    assert all(s.completion_ids[-1] == 9 for b in batches for s in b.samples[:4])
    assert [b.samples[-1].completion_ids for b in batches] == [[7], [8], [7]]
    rows = [m for _, m in driver.sink.rows if m.get("stage") == "rl1"]
    assert [r["episodes/total"] for r in rows] == [4.0, 8.0, 12.0] and all(r["batch/demos"] == 1.0 for r in rows)
    # the parts' own state is in the checkpoint, and a restore gives it back
    state = load_driver_state(tmp_path / "step-000002")
    assert state["builder"] == {"next": 2} and state["pipeline"][0]["episodes"] == 8
    resumed, _, _ = _third_parts_driver(str(tmp_path))
    resumed.restore(tmp_path / "step-000002")
    assert resumed.parts.builder.next == 2 and resumed.parts.collector.episodes == 8
    resumed.run()
    assert [b.samples[-1].completion_ids for b, _, _ in resumed.parts.learner.batches] == [[7]]


def test_the_driver_module_names_no_concrete_part():
    """The driver composes Protocols: which collector or builder a run uses is decided in rlft.compose."""
    source = (ROOT / "rlft" / "driver.py").read_text()
    names = {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Attribute)}
    for name in ("SyncCollector", "PipelinedCollector", "OutcomeBuilder", "CriticBuilder", "max_staleness",
                 "critic", "getattr", "stream", "pipeline"):
        assert name not in names, name
    assert len(source.splitlines()) < 250
    assert len(re.findall(r"^    def ", source.split("class Driver")[1], flags=re.M)) <= 15


# ---------------------------------------------------------------------------- one computation per concept


def test_advantages_are_computed_once_per_round_and_shared_by_the_curriculum_and_the_batch():
    calls = []

    @ADVANTAGES.register("counted_rloo", needs_groups=True)
    def counted_rloo(rewards, group_ids):
        calls.append(len(rewards))
        return ADVANTAGES.get("rloo")(rewards, group_ids)

    try:
        cfg = load_config(overrides=["rollout.prompts_per_step=3", "rollout.group_size=4", "evaluation.pass_k=0",
                                     "algo.advantage.name=counted_rloo", "stages=[{kind: rl, steps: 2}]"])
        c = Calls()
        engine, learner = FakeEngine(c), FakeLearner(c)
        driver = build_driver(cfg, engine=engine, scorer=FakeScorer(c, lambda r: float(r.completion_ids[0] % 2)),
                              learner=learner, weights=FakeSync(c, engine),
                              train_prompts=[Prompt(f"p{i}", [1, i]) for i in range(5)])
        observed = []
        observe = driver.parts.prompts.sampler.observe
        driver.parts.prompts.sampler.observe = lambda results: (observed.extend(results), observe(results))
        driver.run()
    finally:
        ADVANTAGES.unregister("counted_rloo")
    assert calls == [12, 12]  # one computation per step, over its 3 groups x 4 samples
    seen = [a for r in observed for a in r.advantages]
    trained = [s.advantages[0] for b, _, _ in learner.batches for s in b.samples]
    assert seen == trained and len(seen) == 24


def test_the_curriculum_observes_outcome_advantages_under_ppo_while_the_learner_trains_on_gae():
    driver, calls, learner, critic = make_ppo(["stages=[{kind: rl, steps: 3}]", "critic.warmup_steps=0"])
    observed = []
    observe = driver.parts.prompts.sampler.observe
    driver.parts.prompts.sampler.observe = lambda results: (observed.extend(results), observe(results))
    driver.run()
    # every reward is 1: the group-relative outcome advantages are 0; the learner's batch is GAE's
    assert len(observed) == 9 and all(a == 0.0 for r in observed for a in r.advantages)
    batches = [b for b, _, _ in learner.batches]
    assert len(batches) == 3 and all(s.returns is not None and s.old_values is not None
                                     for b in batches for s in b.samples)


@pytest.mark.parametrize("rewards", [[1.0, None, float("nan"), 0.0], [None, None], [2.0, 2.0, 1.0, float("inf")]])
def test_one_filter_for_failed_rewards_everywhere(rewards):
    rs = [Rollout("p", 0, [1], [i], [0.0], "stop", 3) for i in range(len(rewards))]
    adv = outcome_advantages(rs, rewards, estimator="grpo")
    batch, m = build_train_batch(rs, rewards, advantages=adv)
    finite = [x for x in rewards if x is not None and x == x and abs(x) != float("inf")]
    assert sum(a is not None for a in adv) == len(batch) == len(finite) == m["batch/samples"]
    assert m["batch/failed_rewards"] == len(rewards) - len(finite)


def test_version_lag_is_written_once_by_the_driver_for_every_builder():
    for make_driver in (lambda: make_ppo(["stages=[{kind: rl, steps: 1}]", "critic.warmup_steps=0"])[0],
                        lambda: _third_parts_driver(steps=1)[0]):
        driver = make_driver()
        m = driver.rl_step()
        assert (m["batch/version_lag_mean"], m["batch/version_lag_max"]) == (0.0, 0.0)


# ---------------------------------------------------------------------------- checkpoints of before the split


def _to_old_format(path: Path) -> None:
    """A driver state as the driver before the split wrote it: the critic's state under ``ppo``."""
    state = load_driver_state(path)
    builder = state.pop("builder")
    if builder:
        state["ppo"] = builder
    save_driver_state(path, state)


def test_a_checkpoint_written_before_the_split_resumes(tmp_path):
    driver, *_ = make_ppo(["stages=[{kind: rl, steps: 3}]", "critic.warmup_steps=1", "checkpoint.every=2"],
                          ckpt=str(tmp_path))
    driver.run()
    _to_old_format(tmp_path / "step-000002")
    assert "builder" not in load_driver_state(tmp_path / "step-000002")
    resumed, *_ = make_ppo(["stages=[{kind: rl, steps: 3}]", "critic.warmup_steps=1"], ckpt=str(tmp_path))
    resumed.restore(tmp_path / "step-000002")
    assert resumed.parts.builder.critic_steps == 2 and resumed.state.step == 2
    # a PPO run cannot continue a run without a critic: the message says why
    with pytest.raises(CheckpointError, match="no critic state"):
        resumed.state.load_state_dict({**resumed.state.state_dict(), "builder": {}})


# ---------------------------------------------------------------------------- the README's examples


def _readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Architecture: one step, composable parts", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_how_to_add_examples_run():
    blocks = _readme_blocks()
    assert len(blocks) == 3  # a collector, a batch builder, a registry entry
    c = Calls()
    engine = FakeEngine(c)
    namespace = {"engine": engine, "scorer": FakeScorer(c, lambda r: float(r.completion_ids[0] % 2)),
                 "learner": FakeLearner(c), "weights": FakeSync(c, engine),
                 "prompts": [Prompt(f"p{i}", [1, i + 2]) for i in range(4)]}
    try:
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
    finally:
        if "sign" in ADVANTAGES:
            ADVANTAGES.unregister("sign")
    assert namespace["summary"].steps == 2  # the collector and builder examples ran a stage
    assert namespace["advantages"].tolist() == [1.0, -1.0, 0.0, 0.0]
