"""The curriculum samplers: update rules by hand, behaviour on a synthetic environment, state
round-trips, and the registry's checks of names and parameters."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlft.algorithms.registry import ParamError, RegistryError
from rlft.curriculum import (
    SAMPLERS,
    DifficultyPoolsSampler,
    DUMPSampler,
    GroupResult,
    LearnabilitySampler,
    Sampler,
    SECSampler,
    UniformSampler,
    WeightedSourcesSampler,
    build_sampler,
)
from rlft.curriculum._util import allocate, draw_rng

# ---------------------------------------------------------------------------------------------
# A synthetic environment with no model: four categories of 50 prompts with fixed true pass rates.

RATES = {"never": 0.0, "half": 0.5, "mostly": 0.95, "always": 1.0}
PER_CATEGORY, GROUP, PROMPTS_PER_STEP = 50, 8, 16
CATEGORIES = [c for c in RATES for _ in range(PER_CATEGORY)]

PARAMS: dict[str, dict[str, Any]] = {
    "uniform": {},
    "weighted_sources": {"weights": {"never": 1, "half": 2, "mostly": 1}},
    "sec": {},
    "dump": {},
    "learnability": {"retire_after": 3},
    "difficulty_pools": {"retire_after": 3},
}


def grpo(rewards: np.ndarray) -> np.ndarray:
    """GRPO advantages of one group: (r - mean) / (std + 1e-6), zeros when every reward is equal."""
    if rewards.std() == 0:
        return np.zeros_like(rewards)
    return (rewards - rewards.mean()) / (rewards.std(ddof=1) + 1e-6)


def play(indices: list[int], step: int, seed: int = 0) -> list[GroupResult]:
    """Bernoulli(p) rewards per sample, a function of (seed, step, prompt) only, so a replay after a
    resume sees the same results for the same prompts."""
    results = []
    for slot, i in enumerate(indices):
        category = CATEGORIES[i]
        rng = draw_rng(seed, step, slot, i)
        rewards = (rng.random(GROUP) < RATES[category]).astype(np.float64)
        results.append(GroupResult(i, category, rewards.tolist(), grpo(rewards).tolist()))
    return results


def run(sampler: Sampler, steps: int, *, first_step: int = 0) -> list[list[int]]:
    drawn = []
    for step in range(first_step, first_step + steps):
        indices = sampler.sample(PROMPTS_PER_STEP)
        sampler.observe(play(indices, step))
        drawn.append(indices)
    return drawn


def category_shares(drawn: list[list[int]]) -> dict[str, float]:
    flat = [CATEGORIES[i] for batch in drawn for i in batch]
    return {c: flat.count(c) / len(flat) for c in RATES}


# ---------------------------------------------------------------------------------------------
# Behaviour on the synthetic environment


@pytest.mark.parametrize("name", ["sec", "dump", "learnability"])
def test_adaptive_samplers_focus_on_the_category_with_signal(name):
    sampler = build_sampler(name, CATEGORIES, seed=0, params={})
    drawn = run(sampler, 200)
    shares = category_shares(drawn[100:])
    # measured at seed 0: sec 0.70, dump 0.98, learnability 0.70 (uniform 0.25)
    assert shares["half"] >= 0.6, shares
    assert shares["never"] < 0.15 and shares["always"] < 0.15, shares


def test_uniform_spreads_evenly():
    shares = category_shares(run(build_sampler("uniform", CATEGORIES, seed=0, params={}), 200)[100:])
    assert all(abs(s - 0.25) < 0.02 for s in shares.values()), shares


def test_difficulty_pools_move_saturated_prompts_out_of_normal():
    sampler = DifficultyPoolsSampler(CATEGORIES, seed=0)
    assert sampler.metrics()["curriculum/pool/normal"] == len(CATEGORIES)
    drawn = run(sampler, 200)
    for i, category in enumerate(CATEGORIES):
        if category == "never":
            assert sampler.pool_of(i) == "hard"
        elif category == "always":
            assert sampler.pool_of(i) == "easy"
    metrics = sampler.metrics()
    assert PER_CATEGORY <= metrics["curriculum/pool/hard"] <= PER_CATEGORY + 3  # a 0/8 by chance
    assert metrics["curriculum/pool/normal"] >= PER_CATEGORY - 5  # ... and rarely that easy
    shares = category_shares(drawn[100:])
    assert shares["half"] >= 0.6 and abs(shares["never"] - 0.1) < 0.02, shares  # measured 0.80, 0.10


def test_learnability_retires_prompts_solved_every_time():
    sampler = LearnabilitySampler(CATEGORIES, seed=0, retire_after=2)
    always = np.array([c == "always" for c in CATEGORIES])
    for step in range(150):
        retired = set(np.flatnonzero(sampler.retired()).tolist())
        indices = sampler.sample(PROMPTS_PER_STEP)
        assert not retired & set(indices)  # retired prompts are never drawn again
        sampler.observe(play(indices, step))
    retired = sampler.retired()
    low = np.array([c in ("never", "half") for c in CATEGORIES])
    assert not retired[low].any()  # (p = 0.95 prompts solved 8/8 twice in a row retire too: 44%)
    assert retired[always].mean() > 0.9  # each always-solved prompt visited twice is out
    assert (retired[always] == (sampler.rates.visits[always] >= 2)).all()
    assert sampler.metrics()["curriculum/retired"] == retired.sum()


# ---------------------------------------------------------------------------------------------
# Update rules by hand


def test_sec_td0_update_and_softmax():
    s = SECSampler(["a", "a", "b", "c"], seed=0, alpha=0.5, temperature=0.4)
    np.testing.assert_allclose(s.probabilities(), [1 / 3] * 3)
    s.observe([GroupResult(0, "a", rewards=[1, 0, 1, 0], advantages=[1.0, -1.0, 1.0, -1.0])])
    assert s.q.tolist() == [0.5, 0.0, 0.0]  # Q_a = 0 + 0.5 (1 - 0); b and c were not sampled
    # Two groups of a and one of b in a step: the arm reward pools the samples of the category.
    s.observe([
        GroupResult(0, "a", rewards=[1, 0], advantages=[1.0, -1.0]),
        GroupResult(1, "a", rewards=[1, 0, 0, 0], advantages=[0.6, -0.2, -0.2, -0.2]),
        GroupResult(2, "b", rewards=[1, 1], advantages=[0.0, 0.0]),
        GroupResult(3, "c", rewards=[], advantages=[]),  # every sample failed: no evidence
        GroupResult(3, "c", rewards=[1.0], advantages=[float("nan")]),  # a bad value is left out
    ])
    r_a = (1 + 1 + 0.6 + 0.2 * 3) / 6
    q_a = 0.5 + 0.5 * (r_a - 0.5)
    np.testing.assert_allclose(s.q, [q_a, 0.0, 0.0])
    z = [math.exp(q_a / 0.4), 1.0, 1.0]
    np.testing.assert_allclose(s.probabilities(), [v / sum(z) for v in z])
    m = s.metrics()
    assert m["curriculum/q/a"] == pytest.approx(q_a) and m["curriculum/p/b"] == pytest.approx(1 / sum(z))


def test_dump_ucb_scores():
    s = DUMPSampler(["a", "b", "c"], seed=0, c=0.5, window=3, temperature=0.2)
    np.testing.assert_allclose(s.scores(), [0.0, 0.0, 0.0])  # N = 0: no bonus anywhere
    s.observe([
        GroupResult(0, "a", rewards=[0] * 5, advantages=[0.1, -0.2, 0.3, -0.4, 0.5]),
        GroupResult(1, "b", rewards=[1, 0], advantages=[1.0, -1.0]),
    ])
    # a keeps its last 3 |A| (window); n_a = 5, n_b = 2, n_c = 0, N = 7
    expected = [
        (0.3 + 0.4 + 0.5) / 3 + 0.5 * math.sqrt(2 * math.log(8) / 6),
        1.0 + 0.5 * math.sqrt(2 * math.log(8) / 3),
        0.0 + 0.5 * math.sqrt(2 * math.log(8) / 1),  # unvisited: the largest bonus
    ]
    np.testing.assert_allclose(s.scores(), expected)
    z = np.exp(np.array(expected) / 0.2)
    np.testing.assert_allclose(s.probabilities(), z / z.sum())
    assert s.metrics()["curriculum/adv/b"] == 1.0


def test_learnability_weights_from_the_prior_and_visits():
    s = LearnabilitySampler(3, seed=0, prior=1.0, decay=0.5, floor=0.01)
    np.testing.assert_allclose(s.weights(), [0.25 + 0.01] * 3)  # p = 1/2 before any visit
    s.observe([GroupResult(0, None, rewards=[1, 1] + [0] * 6, advantages=[0.0] * 8)])
    p = (1 + 2) / (2 + 8)
    np.testing.assert_allclose(s.weights()[0], p * (1 - p) + 0.01)
    s.observe([GroupResult(0, None, rewards=[1] * 8, advantages=[0.0] * 8)])
    solved, failed = 0.5 * 2 + 8, 0.5 * 6  # forgetting per visit
    p = (1 + solved) / (2 + solved + failed)
    np.testing.assert_allclose(s.weights()[0], p * (1 - p) + 0.01)
    # Jeffreys' default prior: one visit with every sample failed gives p = 0.5 / 9
    d = LearnabilitySampler(2, seed=0)
    d.observe([GroupResult(1, None, rewards=[0.0] * 8, advantages=[0.0] * 8)])
    np.testing.assert_allclose(d.weights(), [0.25 + 0.01, (0.5 / 9) * (8.5 / 9) + 0.01])


def test_learnability_draws_in_proportion_to_weight():
    s = LearnabilitySampler(2, seed=3, prior=1.0, floor=0.0)
    s.observe([GroupResult(1, None, rewards=[1] * 8, advantages=[0.0] * 8)])  # p = 0.9: w = 0.09
    w = s.weights()
    draws = 4000
    ones = sum(s.sample(1)[0] for _ in range(draws))
    expected = draws * w[1] / w.sum()
    assert abs(ones - expected) < 4 * math.sqrt(expected), (ones, expected)


def test_success_threshold_for_shaped_rewards():
    s = LearnabilitySampler(1, seed=0, prior=1.0, success_threshold=0.5)
    s.observe([GroupResult(0, None, rewards=[0.1] * 7 + [1.1], advantages=[0.0] * 8)])  # format bonus only
    assert s.rates.estimate()[0] == pytest.approx((1 + 1) / (2 + 8))


def test_difficulty_pools_start_move_and_share():
    s = DifficultyPoolsSampler(["easy", "hard", "normal", None, None], seed=0)
    assert [s.pool_of(i) for i in range(5)] == ["easy", "hard", "normal", "normal", "normal"]
    s.observe([
        GroupResult(0, "easy", rewards=[0] * 8, advantages=[0.0] * 8),  # p = 1/10 -> hard
        GroupResult(2, "normal", rewards=[1] * 7 + [0], advantages=[0.0] * 8),  # p = 8/10: not above 0.8
        GroupResult(3, None, rewards=[1] * 8, advantages=[0.0] * 8),  # p = 9/10 -> easy
    ])
    assert [s.pool_of(i) for i in range(5)] == ["hard", "hard", "normal", "easy", "normal"]
    np.testing.assert_allclose(s.shares(), [0.1, 0.8, 0.1])
    only_normal = DifficultyPoolsSampler(4, seed=0, mix={"normal": 0.5, "hard": 0.5})
    np.testing.assert_allclose(only_normal.shares(), [0.0, 1.0, 0.0])  # the empty hard pool's share moves
    assert sorted(only_normal.sample(4)) == [0, 1, 2, 3]  # least recently drawn first
    with pytest.raises(ValueError, match="hard_below"):
        DifficultyPoolsSampler(4, seed=0, easy_above=0.3, hard_below=0.5)


def test_weighted_sources_follow_the_mix_without_replacement_within_a_source():
    cats = ["a"] * 6 + ["b"] * 3 + ["c"] * 5
    s = WeightedSourcesSampler(cats, seed=0, weights={"a": 2.0, "b": 1.0})  # c left out: never drawn
    drawn = [s.sample(9) for _ in range(4)]
    for batch in drawn:
        assert sorted(cats[i] for i in batch) == ["a"] * 6 + ["b"] * 3
    a_order = [i for batch in drawn for i in batch if cats[i] == "a"]
    assert sorted(a_order[:6]) == sorted(a_order[6:12]) == list(range(6))  # epochs per category
    m = s.metrics()
    assert (m["curriculum/p/a"], m["curriculum/p/b"], m["curriculum/p/c"]) == (2 / 3, 1 / 3, 0.0)
    with pytest.raises(ValueError, match=r"category 'aa' \(did you mean 'a'\?\)"):
        WeightedSourcesSampler(cats, seed=0, weights={"aa": 1.0})
    with pytest.raises(ValueError, match="weight 0"):
        WeightedSourcesSampler(cats, seed=0, weights={"a": 0.0})


@given(
    probs=st.lists(st.floats(0, 10), min_size=1, max_size=6).filter(lambda p: sum(p) > 0),
    n=st.integers(0, 64),
    seed=st.integers(0, 2**32),
)
def test_allocation_is_floor_or_ceil_of_the_expected_count(probs, n, seed):
    ids = allocate(draw_rng(seed), np.array(probs), n)
    counts = np.bincount(ids, minlength=len(probs))
    expected = n * np.array(probs) / sum(probs)
    assert len(ids) == n and len(counts) == len(probs)
    assert (counts >= np.floor(expected - 1e-9)).all() and (counts <= np.ceil(expected + 1e-9)).all()


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(sorted(set(PARAMS) - {"uniform"})), n=st.integers(1, 200), seed=st.integers(0, 1000)
)
def test_a_draw_repeats_a_prompt_only_when_its_group_runs_out(name, n, seed):
    """Within one draw a prompt comes back only when its category (or pool) is asked for more
    prompts than it holds; learnability samples the whole set without replacement. (``uniform`` keeps
    its historical behaviour: a draw that spans two epochs may repeat a prompt.)"""
    sampler = build_sampler(name, CATEGORIES, seed=seed, params=PARAMS[name])
    run(sampler, 3)
    if isinstance(sampler, DifficultyPoolsSampler):
        group = sampler.pool.copy()
    elif isinstance(sampler, LearnabilitySampler):
        group = np.zeros(len(CATEGORIES), dtype=np.int64)
    else:
        group = sampler.cats.of
    batch = sampler.sample(n)
    assert len(batch) == n and all(0 <= i < len(CATEGORIES) for i in batch)
    for g in set(group[batch].tolist()):
        members = [i for i in batch if group[i] == g]
        if len(members) <= (group == g).sum():
            assert len(set(members)) == len(members)


# ---------------------------------------------------------------------------------------------
# State round-trips


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(sorted(PARAMS)), k=st.integers(0, 25), m=st.integers(1, 8), seed=st.integers(0, 99)
)
def test_state_round_trip_continues_the_same_sequence(name, k, m, seed):
    sampler = build_sampler(name, CATEGORIES, seed=seed, params=PARAMS[name])
    run(sampler, k)
    buffer = io.BytesIO()
    torch.save(sampler.state_dict(), buffer)  # what a checkpoint does; must load with weights_only
    expected = run(sampler, m, first_step=k)
    resumed = build_sampler(name, CATEGORIES, seed=seed + 1, params=PARAMS[name])  # seed comes from state
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert run(resumed, m, first_step=k) == expected
    assert resumed.metrics() == pytest.approx(sampler.metrics(), nan_ok=True)


def test_state_dict_is_a_snapshot():
    s = SECSampler(CATEGORIES, seed=0)
    state = s.state_dict()
    run(s, 5)
    t = SECSampler(CATEGORIES, seed=0)
    t.load_state_dict(state)
    assert t.q.tolist() == [0.0] * 4 and t.draws == 0


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_state_of_another_dataset_is_refused(name):
    state = build_sampler(name, CATEGORIES, seed=0, params=PARAMS[name]).state_dict()
    other = build_sampler(name, CATEGORIES[:-1], seed=0, params=PARAMS[name])
    with pytest.raises(ValueError, match="prompts"):
        other.load_state_dict(state)


def test_state_of_another_sampler_is_refused():
    with pytest.raises(ValueError, match="from a 'sec' sampler, this one is 'dump'"):
        DUMPSampler(CATEGORIES, seed=0).load_state_dict(SECSampler(CATEGORIES, seed=0).state_dict())


# ---------------------------------------------------------------------------------------------
# Registry, construction, protocol


def test_registry_names_and_protocol():
    assert SAMPLERS.names() == [
        "difficulty_pools", "dump", "learnability", "sec", "uniform", "weighted_sources"
    ]
    for name in SAMPLERS:
        sampler = build_sampler(name, CATEGORIES, seed=0, params=PARAMS[name])
        assert isinstance(sampler, Sampler)
        assert all(k.startswith("curriculum/") and isinstance(v, float) for k, v in sampler.metrics().items())


def test_unknown_sampler_name():
    expected = r"unknown curriculum sampler 'secc' \(did you mean 'sec'\?\); valid names: difficulty_pools, "
    with pytest.raises(RegistryError, match=expected):
        build_sampler("secc", CATEGORIES, seed=0, params={})


def test_params_are_checked_against_the_constructor():
    assert SAMPLERS.validate_params("dump", {"window": "50"}) == {"window": 50}
    assert list(SAMPLERS.params("sec")) == ["alpha", "temperature", "initial_value"]
    typo = r"unknown parameter 'temprature' for curriculum sampler 'sec' \(did you mean 'temperature'\?\)"
    with pytest.raises(ParamError, match=typo):
        build_sampler("sec", CATEGORIES, seed=0, params={"temprature": 0.3})
    with pytest.raises(ParamError, match="unknown parameter 'seed'"):  # the seed comes from the run
        SAMPLERS.validate_params("sec", {"seed": 3})
    with pytest.raises(ParamError, match="temperature: Input should be greater than 0"):
        SAMPLERS.validate_params("sec", {"temperature": 0})
    with pytest.raises(ParamError, match="alpha: Input should be less than or equal to 1"):
        SAMPLERS.validate_params("sec", {"alpha": 1.5})
    with pytest.raises(ParamError, match="weights"):
        SAMPLERS.validate_params("weighted_sources", {"weights": {"a": -1.0}})
    # without weights: an even mix (or, with data.sources, the sources' own weights)
    assert SAMPLERS.validate_params("weighted_sources", {}) == {}
    even = WeightedSourcesSampler(["a", "a", "b", "b"], seed=0)
    assert list(even.probabilities()) == [0.5, 0.5]
    with pytest.raises(ParamError, match=r"mix\.medium"):
        SAMPLERS.validate_params("difficulty_pools", {"mix": {"medium": 1.0}})
    with pytest.raises(ParamError, match="retire_after"):
        SAMPLERS.validate_params("learnability", {"retire_after": 0})
    with pytest.raises(ParamError, match="valid parameters: none"):
        SAMPLERS.validate_params("uniform", {"shuffle": True})


def test_user_sampler_registers_and_builds():
    @SAMPLERS.register("first_k")
    class FirstK:
        def __init__(self, categories, *, seed: int = 0, k: int = 1):
            self.k = k

        def sample(self, n):
            return list(range(min(n, self.k)))

    try:
        assert build_sampler("first_k", 5, seed=0, params={"k": "2"}).sample(5) == [0, 1]
        with pytest.raises(RegistryError, match="already registered"):
            SAMPLERS.register("first_k")(FirstK)
    finally:
        SAMPLERS.unregister("first_k")

    class NoSeed:
        def __init__(self, categories, *, k: int = 1): ...

    with pytest.raises(TypeError, match=r"Cls\(categories, \*, seed=0, \*\*params\)"):
        SAMPLERS.register("no_seed")(NoSeed)
    assert "no_seed" not in SAMPLERS


def test_uniform_accepts_a_size_or_categories():
    a, b = UniformSampler(7, seed=4), build_sampler("uniform", ["x"] * 7, seed=4, params={})
    assert [a.sample(3) for _ in range(5)] == [b.sample(3) for _ in range(5)]
    a.observe(play([0], 0))  # learns nothing, accepts the protocol's argument
    with pytest.raises(ValueError, match="empty"):
        UniformSampler([], seed=0)


def test_prompts_without_category_share_one():
    s = SECSampler([None, None, "x"], seed=0)
    assert s.cats.names == ["uncategorised", "x"]
    assert set(s.metrics()) == {
        "curriculum/entropy",
        "curriculum/p/uncategorised",
        "curriculum/p/x",
        "curriculum/q/uncategorised",
        "curriculum/q/x",
    }
    assert s.metrics()["curriculum/entropy"] == pytest.approx(math.log(2))


def test_many_categories_log_summaries_only():
    s = DUMPSampler([str(i) for i in range(100)], seed=0)
    assert set(s.metrics()) == {"curriculum/entropy"}


def test_group_result():
    g = GroupResult(3, "a", rewards=[1.0, 0.0, 0.5, 0.0], advantages=[1.0, -1.0, 0.5, -0.5])
    assert g.pass_rate == 0.5 and not g.zero_variance and g.mean_abs_advantage == 0.75
    assert GroupResult(0, None, [1.0, 1.0], [0.0, 0.0]).zero_variance
    empty = GroupResult(0, None, [], [])
    assert math.isnan(empty.pass_rate) and empty.mean_abs_advantage == 0.0
    with pytest.raises(ValueError, match="2 rewards but 1 advantages"):
        GroupResult(0, None, [1.0, 0.0], [0.5])
    with pytest.raises(IndexError, match="index 200"):
        SECSampler(CATEGORIES, seed=0).observe([GroupResult(200, None, [1.0], [0.0])])
