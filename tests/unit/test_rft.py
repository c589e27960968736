"""RFT with DART allocation (``rlft.rft``): equations, de-duplication keys, the allocation rule, the
collector's rounds and budget, and the imitation batch; golden values worked out by hand."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlft.collect import Collected, Prompts, StepInfo, sampling_settings, select
from rlft.config import StageConfig, load_config
from rlft.rft import ImitationBuilder, RFTCollector, accepts, distinct, equations, reasoning_key, wanted
from rlft.types import Prompt, Rollout


def kept(c: Collected) -> Collected:
    """The kept part of an RFT step's ``Collected`` (the samples with an advantage), with the whole
    step's metrics; the collector also returns the rest, with advantage None."""
    at = [i for i, a in enumerate(c.advantages) if a is not None]
    return Collected(c.indices, [c.rollouts[i] for i in at], select(c.scores, at), [1.0] * len(at),
                     c.metrics, c.timings, c.prompt_ids)

REWARD = {"1": 1.0, "0": 0.0, "h": 0.5, "x": None}  # a completion's last character -> its reward

# prompt -> the completions it gets, in order across calls (cycled)
SCRIPTS = {
    "a": ["1+1=2 #1", "1 + 1 = 2, yes #1", "2*1=2 #1", "no #0"],  # 3 of 4 accepted, 2 distinct paths
    "b": ["4-1=3 #0", "oops #x", "2+1=3 #1", "3 #0"],  # 1 of 4 accepted, 1 failed reward
    "c": ["0 #0"],  # never accepted
}


class Scripted:
    """Engine and scorer: prompt p's k-th completion (counted over every call) is ``scripts[p][k]``
    (cycled), 2 tokens each; its reward is ``REWARD`` of its last character."""

    def __init__(self, scripts: dict[str, list[str]]):
        self.scripts, self.served = scripts, dict.fromkeys(scripts, 0)
        self.calls: list[tuple[list[str], int, int | None]] = []

    def generate(self, prompts, sampling):
        self.calls.append(([p.prompt_id for p in prompts], sampling.n, sampling.seed))
        out = []
        for g, p in enumerate(prompts):
            for _ in range(sampling.n):
                script = self.scripts[p.prompt_id]
                text = script[self.served[p.prompt_id] % len(script)]
                self.served[p.prompt_id] += 1
                out.append(Rollout(p.prompt_id, g, list(p.token_ids), [len(text), 0], [-0.1, -0.2], "stop", 3,
                                   completion=text))
        return out

    def score(self, rollouts):
        return [REWARD[r.completion[-1]] for r in rollouts]


class InOrder(Prompts):
    """The dataset's prompts in order, cycled; every observation recorded."""

    def __init__(self, cfg, prompts):
        super().__init__(cfg, prompts)
        self.next, self.observed = 0, []

    def draw(self, n):
        out = [(self.next + i) % len(self.prompts) for i in range(n)]
        self.next += n
        return out

    def observe(self, indices, rollouts, scores, advantages):
        self.observed.append((list(indices), [r.group_id for r in rollouts], list(scores.totals), list(advantages)))
        super().observe(indices, rollouts, scores, advantages)


def make(scripts=SCRIPTS):
    cfg = load_config(overrides=[f"rollout.prompts_per_step={len(scripts)}", "reward.max_failure_rate=1.0",
                                 "algo.advantage.name=grpo"])
    engine = Scripted(scripts)
    prompts = InOrder(cfg, [Prompt(pid, [i + 1]) for i, pid in enumerate(scripts)])
    ticks = itertools.count()  # every phase lasts one tick
    return RFTCollector(cfg, engine, engine, prompts, clock=lambda: float(next(ticks))), engine, prompts


def at(step=0, **rft):
    return StepInfo(step, 0, stage=StageConfig(kind="rft", steps=1, rft=rft))


# --- the pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("7+5=12,4+8+1=13;432", ("7+5=12", "4+8+1=13")),
    ("3 * 4 = 12 so 12+1=13", ("3*4=12", "12+1=13")),
    ("She sold 48/2 = 24 clips in May, 48+24=72 in all. #### 72", ("48/2=24", "48+24=72")),
    ("(1.5 + 2) * 2 = 7.0", ("(1.5+2)*2=7.0",)),
    ("5 - 8 = -3", ("5-8=-3",)),
    ("He has 12 apples. 12*3=36.", ("12*3=36",)),
    ("x = 4 and y=5", ()),
    ("", ()),
])
def test_equations(text, expected):
    assert equations(text) == expected


def test_reasoning_keys():
    text = "  3 * 4 = 12\n\tSo   12 "
    assert reasoning_key(text, "exact") == text
    assert reasoning_key(text, "normalized") == "3 * 4 = 12 so 12"
    assert reasoning_key(text, "equations") == ("3*4=12",)
    assert reasoning_key(" The  Answer\nis 7", "equations") == "the answer is 7"  # no equation: normalized
    assert reasoning_key("3*4=12", "equations") != reasoning_key("3*4=12", "normalized")  # tuple vs text
    a, b = reasoning_key("same", "none"), reasoning_key("same", "none")
    assert a != b and len({a, b}) == 2
    with pytest.raises(ValueError, match="valid modes: none, exact, normalized, equations"):
        reasoning_key("x", "fuzzy")


def test_distinct_with_limits():
    texts = ["1+1=2 #1", "1 + 1 = 2 yes", "2*1=2", "1+1=2 #1", "two"]
    assert distinct(texts, "equations") == [0, 2, 4]
    assert distinct(texts, "exact") == [0, 1, 2, 4]
    assert distinct(texts, "none") == [0, 1, 2, 3, 4]
    assert distinct(texts, "equations", limit=2) == [0, 2]
    assert distinct(texts, "equations", limit=10) == [0, 2, 4]
    assert distinct(texts, "none", limit=0) == []
    assert distinct([], "exact") == []


def test_dart_rule():
    # difficulty: max(1, ceil(target * failed / scored))
    assert [wanted(a, 8, allocation="difficulty", target=4) for a in range(9)] == [4, 4, 3, 3, 2, 2, 1, 1, 1]
    assert [wanted(a, 3, allocation="difficulty", target=5) for a in range(4)] == [5, 4, 2, 1]
    assert wanted(0, 0, allocation="difficulty", target=6) == 6  # nothing scored: the hardest
    assert [wanted(a, 8, allocation="uniform", target=4) for a in (0, 4, 8)] == [4, 4, 4]
    assert [wanted(a, 8, allocation="fixed", target=4) for a in (0, 4, 8)] == [0, 4, 8]
    with pytest.raises(ValueError, match="valid allocations: fixed, uniform, difficulty"):
        wanted(1, 2, allocation="proportional", target=4)
    with pytest.raises(ValueError, match="within"):
        wanted(3, 2, allocation="uniform", target=4)


def test_acceptance():
    assert [accepts(x, 0.5) for x in (0.5, 0.49, None, float("nan"), float("inf"), 1.0)] == [
        True, False, False, False, False, True]


# --- the collector -------------------------------------------------------------------------------


def test_fixed_allocation_keeps_the_accepted_distinct_completions():
    collector, engine, prompts = make()
    c = kept(collector.collect(at(samples=4)))
    assert engine.calls == [(["a", "b", "c"], 4, sampling_settings(collector.cfg, 0).seed)]
    assert c.indices == [0, 1, 2] and c.prompt_ids == ["a", "b", "c"]
    assert [(r.group_id, r.completion) for r in c.rollouts] == [(0, "1+1=2 #1"), (0, "2*1=2 #1"), (1, "2+1=3 #1")]
    assert c.totals == [1.0, 1.0, 1.0] and c.advantages == [1.0, 1.0, 1.0]
    assert all(c.prompt_ids[r.group_id] == r.prompt_id for r in c.rollouts)
    assert c.timings == {"time/generate": 1.0, "time/reward": 1.0}
    assert c.metrics == {
        "rft/sampled": 12.0, "rft/accepted": 4.0, "rft/accepted_fraction": 4 / 12, "rft/kept": 3.0,
        "rft/kept_fraction": 3 / 12, "rft/distinct_per_prompt": 1.5, "rft/prompts_without": 1 / 3,
        "rft/rounds": 1.0, "throughput/tokens_per_s": 24.0,
    }
    # the curriculum saw each drawn prompt once, the whole first round, with its group advantages
    assert len(prompts.observed) == 1
    indices, groups, totals, advantages = prompts.observed[0]
    assert indices == [0, 1, 2] and groups == [0] * 4 + [1] * 4 + [2] * 4
    assert totals[4:8] == [0.0, None, 1.0, 0.0] and advantages[5] is None and advantages[8:] == [0.0] * 4


def test_dedup_modes_and_cap():
    by_mode = {mode: [r.completion for r in kept(make()[0].collect(at(samples=4, dedup=mode))).rollouts]
               for mode in ("none", "exact", "normalized", "equations")}
    assert by_mode["equations"] == ["1+1=2 #1", "2*1=2 #1", "2+1=3 #1"]
    assert by_mode["none"] == by_mode["exact"] == by_mode["normalized"] == [
        "1+1=2 #1", "1 + 1 = 2, yes #1", "2*1=2 #1", "2+1=3 #1"]
    c = kept(make()[0].collect(at(samples=8, dedup="none", max_per_prompt=2)))
    assert [(r.group_id, r.completion) for r in c.rollouts] == [
        (0, "1+1=2 #1"), (0, "1 + 1 = 2, yes #1"), (1, "2+1=3 #1"), (1, "2+1=3 #1")]
    assert c.metrics["rft/accepted"] == 8.0 and c.metrics["rft/kept"] == 4.0


def test_uniform_allocation_samples_more_only_where_short_and_within_budget():
    collector, engine, prompts = make()
    c = kept(collector.collect(at(samples=4, allocation="uniform", target=4, max_samples=10)))
    seeds = [seed for *_, seed in engine.calls]
    assert [(ids, n) for ids, n, _ in engine.calls] == [(["a", "b", "c"], 4), (["a", "b", "c"], 4), (["b", "c"], 2)]
    assert seeds[0] == sampling_settings(collector.cfg, 0).seed and len(set(seeds)) == 3  # fresh seed per round
    assert engine.served == {"a": 8, "b": 10, "c": 10}  # a reached 6 >= 4 in round 2; b, c ran out of budget
    assert [(r.group_id, r.completion) for r in c.rollouts] == [(0, "1+1=2 #1"), (0, "2*1=2 #1"), (1, "2+1=3 #1")]
    assert {k: c.metrics[k] for k in ("rft/sampled", "rft/accepted", "rft/kept", "rft/rounds")} == {
        "rft/sampled": 28.0, "rft/accepted": 8.0, "rft/kept": 3.0, "rft/rounds": 3.0}
    assert c.metrics["throughput/tokens_per_s"] == 56 / 3 and c.timings["time/generate"] == 3.0
    assert len(prompts.observed) == 1 and len(prompts.observed[0][1]) == 12  # the first round only


def test_difficulty_allocation_wants_more_of_hard_prompts():
    collector, engine, _ = make()
    c = kept(collector.collect(at(samples=4, allocation="difficulty", target=4, max_samples=10)))
    # a: 1 of 4 failed -> wants 1, has 3; b: 2 of 3 scored failed -> wants 3; c: wants 4
    assert [(ids, n) for ids, n, _ in engine.calls] == [(["a", "b", "c"], 4), (["b", "c"], 4), (["b", "c"], 2)]
    assert c.metrics["rft/accepted"] == 5.0 and c.metrics["rft/sampled"] == 24.0


def test_uniform_stops_when_every_prompt_has_its_target():
    scripts = {"a": ["1+1=2 #1", "2+2=4 #1", "nope #0"], "b": ["9 #1"]}
    collector, engine, _ = make(scripts)
    c = kept(collector.collect(at(samples=3, allocation="uniform", target=3, max_samples=30)))
    # a: 2 accepted of 3 per round -> 4 after round 2; b: 3 after round 1
    assert [(ids, n) for ids, n, _ in engine.calls] == [(["a", "b"], 3), (["a"], 3)]
    assert [r.group_id for r in c.rollouts] == [0, 0, 1] and c.metrics["rft/rounds"] == 2.0


def test_failed_rewards_are_never_accepted():
    scripts = {"a": ["1+1=2 #x", "1+1=2 #h", "1+1=3 #0"]}
    collector, _, _ = make(scripts)
    c = kept(collector.collect(at(samples=6, threshold=0.0, dedup="none")))
    assert [r.completion for r in c.rollouts] == ["1+1=2 #h", "1+1=3 #0"] * 2 and c.totals == [0.5, 0.0] * 2
    assert c.scores.per_reward == {} and c.metrics["rft/accepted"] == 4.0


def test_nothing_accepted_is_an_empty_step():
    collector, _, prompts = make({"a": ["0 #0"], "b": ["1 #x"]})
    c = kept(collector.collect(at(samples=2, allocation="uniform", max_samples=4)))
    assert c.rollouts == [] and c.totals == [] and c.advantages == []
    assert c.indices == [0, 1] and c.prompt_ids == ["a", "b"] and len(prompts.observed) == 1
    assert c.metrics["rft/kept"] == 0.0 and c.metrics["rft/prompts_without"] == 1.0
    assert c.metrics["rft/distinct_per_prompt"] == 0.0 and c.metrics["rft/sampled"] == 8.0
    batch, m = ImitationBuilder().build(c, version=0)
    assert len(batch) == 0 and m == {"batch/samples": 0.0, "batch/tokens": 0.0}


def test_without_a_stage_the_defaults_apply_and_restarts_are_reported():
    class Restarting(Scripted):
        def restart_metrics(self):
            return {"restarts/rollout": 2.0}

    cfg = load_config(overrides=["rollout.prompts_per_step=1"])
    engine = Restarting({"a": ["1+1=2 #1"]})
    c = kept(RFTCollector(cfg, engine, engine, Prompts(cfg, [Prompt("a", [1])])).collect(StepInfo(0, 0)))
    assert [n for _, n, _ in engine.calls] == [8] and len(c.rollouts) == 1  # RFTConfig(): 8 samples, equations
    assert c.metrics["restarts/rollout"] == 2.0


def test_state_round_trip_trains_on_prompts_already_drawn():
    collector, engine, prompts = make()
    state = [{"step": 4, "indices": [2, 0], "observed": []}]
    collector.load_state_dict(state)
    assert collector.state_dict() == state
    c = kept(collector.collect(at(step=4, samples=1)))
    assert engine.calls[0][0] == ["c", "a"] and c.indices == [2, 0] and prompts.next == 0  # not drawn again
    assert collector.state_dict() == []


def test_imitation_builder():
    collector, _, _ = make()
    c = kept(collector.collect(at(samples=4)))
    batch, m = ImitationBuilder().build(c, version=7)
    assert [(s.prompt_ids, s.completion_ids, s.advantages) for s in batch.samples] == [
        ([1], [8, 0], [1.0, 1.0]), ([1], [8, 0], [1.0, 1.0]), ([2], [8, 0], [1.0, 1.0])]
    assert all(s.rollout_logprobs is None and s.loss_mask is None and s.policy_version == 3 for s in batch.samples)
    assert m == {"batch/samples": 3.0, "batch/tokens": 6.0}
    assert ImitationBuilder().before_update(batch) == ({}, True)


# --- invariants ----------------------------------------------------------------------------------

TEXTS = ["1+1=2 #1", "1 + 1 = 2 #1", "2+2=4 #h", "Four #1", "four #0", "3*3=9 #x", "2+2=4 #1"]


@settings(max_examples=60, deadline=None)
@given(
    scripts=st.lists(st.lists(st.sampled_from(TEXTS), min_size=1, max_size=6), min_size=1, max_size=3),
    samples=st.integers(1, 4),
    extra=st.integers(0, 6),
    threshold=st.sampled_from([0.0, 0.5, 1.0]),
    dedup=st.sampled_from(["none", "exact", "normalized", "equations"]),
    allocation=st.sampled_from(["fixed", "uniform", "difficulty"]),
    target=st.integers(1, 6),
    max_per_prompt=st.one_of(st.none(), st.integers(1, 3)),
)
def test_kept_within_accepted_within_sampled(scripts, samples, extra, threshold, dedup, allocation, target,
                                             max_per_prompt):
    named = {f"p{i}": s for i, s in enumerate(scripts)}
    collector, engine, prompts = make(named)
    rft = dict(samples=samples, max_samples=samples + extra, threshold=threshold, dedup=dedup,
               allocation=allocation, target=target, max_per_prompt=max_per_prompt)
    c = kept(collector.collect(at(**rft)))
    m = c.metrics
    assert m["rft/kept"] == len(c.rollouts) <= m["rft/accepted"] <= m["rft/sampled"] == sum(engine.served.values())
    assert all(n <= samples + extra for n in engine.served.values())
    assert len(prompts.observed) == 1 and len(prompts.observed[0][1]) == samples * len(named)
    assert len(c.totals) == len(c.advantages) == len(c.rollouts)
    assert all(t is not None and t >= threshold for t in c.totals)
    for g in range(len(c.indices)):
        mine = [r.completion for r in c.rollouts if r.group_id == g]
        assert all(r.prompt_id == c.prompt_ids[g] for r in c.rollouts if r.group_id == g)
        if max_per_prompt is not None:
            assert len(mine) <= max_per_prompt
        if dedup != "none":
            assert len({reasoning_key(t, dedup) for t in mine}) == len(mine)
