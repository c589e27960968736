"""Unit tests for the outcome-level advantage estimators and GAE (rlft/algorithms/advantages.py).

Golden values are worked out by hand in the test (explicit arithmetic on literal numbers), never by
calling the function under test or a re-implementation of it.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from rlft.algorithms import ADVANTAGES, dr_grpo, gae, group_stats, grpo, reinforce_pp_baseline, rloo

F64 = torch.float64
OUTCOME_ESTIMATORS = ["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"]

# One batch used by several golden tests. Group ids are deliberately non-contiguous and interleaved:
#   id 7 -> rewards [1, 0, 0]   (positions 0, 2, 5)
#   id 3 -> rewards [2, 4]      (positions 1, 4)
#   id 9 -> rewards [5, 5]      (positions 3, 6)  constant group
#   id 1 -> rewards [3]         (position 7)      singleton group
GOLDEN_REWARDS = [1.0, 2.0, 0.0, 5.0, 4.0, 0.0, 5.0, 3.0]
GOLDEN_IDS = [7, 3, 7, 9, 3, 7, 9, 1]


def _golden(dtype=F64):
    return torch.tensor(GOLDEN_REWARDS, dtype=dtype), torch.tensor(GOLDEN_IDS)


# ---------------------------------------------------------------------------------------------------
# Registry coverage
# ---------------------------------------------------------------------------------------------------


def test_registry_holds_exactly_the_documented_estimators():
    assert ADVANTAGES.names() == sorted(OUTCOME_ESTIMATORS)
    for name in OUTCOME_ESTIMATORS:
        assert ADVANTAGES.meta(name) == {"needs_groups": True}
    assert ADVANTAGES.get("grpo") is grpo
    assert ADVANTAGES.get("dr_grpo") is dr_grpo
    assert ADVANTAGES.get("rloo") is rloo
    assert ADVANTAGES.get("reinforce_pp_baseline") is reinforce_pp_baseline


# ---------------------------------------------------------------------------------------------------
# Golden values
# ---------------------------------------------------------------------------------------------------


def test_group_stats_golden():
    rewards, ids = _golden()
    s = group_stats(rewards, ids)
    # group 7: mean 1/3, unbiased var ((2/3)^2 + 2 * (1/3)^2) / 2 = 1/3
    # group 3: mean 3, unbiased var (1 + 1) / 1 = 2
    # group 9: mean 5, var 0; group 1 (singleton): mean 3, std 0 by convention
    std7 = ((4 / 9 + 1 / 9 + 1 / 9) / 2) ** 0.5
    std3 = ((1.0 + 1.0) / 1) ** 0.5
    assert_close(s["count"], torch.tensor([3.0, 2.0, 3.0, 2.0, 2.0, 3.0, 2.0, 1.0], dtype=F64))
    assert_close(s["sum"], torch.tensor([1.0, 6.0, 1.0, 10.0, 6.0, 1.0, 10.0, 3.0], dtype=F64))
    assert_close(
        s["mean"], torch.tensor([1 / 3, 3.0, 1 / 3, 5.0, 3.0, 1 / 3, 5.0, 3.0], dtype=F64)
    )
    assert_close(s["std"], torch.tensor([std7, std3, std7, 0.0, std3, std7, 0.0, 0.0], dtype=F64))
    assert s["constant"].tolist() == [False, False, False, True, False, False, True, True]


def test_grpo_golden():
    rewards, ids = _golden()
    eps = 1e-6
    std7 = ((4 / 9 + 1 / 9 + 1 / 9) / 2) ** 0.5  # 0.5773502691896257
    std3 = 2.0**0.5  # 1.4142135623730951
    expected = torch.tensor(
        [
            (1.0 - 1 / 3) / (std7 + eps),
            (2.0 - 3.0) / (std3 + eps),
            (0.0 - 1 / 3) / (std7 + eps),
            0.0,  # constant group
            (4.0 - 3.0) / (std3 + eps),
            (0.0 - 1 / 3) / (std7 + eps),
            0.0,  # constant group
            0.0,  # singleton
        ],
        dtype=F64,
    )
    assert_close(grpo(rewards, ids), expected)


def test_grpo_golden_custom_eps_and_no_std():
    rewards, ids = _golden()
    std7 = ((4 / 9 + 1 / 9 + 1 / 9) / 2) ** 0.5
    std3 = 2.0**0.5
    eps = 0.5
    expected = torch.tensor(
        [
            (2 / 3) / (std7 + eps),
            -1.0 / (std3 + eps),
            (-1 / 3) / (std7 + eps),
            0.0,
            1.0 / (std3 + eps),
            (-1 / 3) / (std7 + eps),
            0.0,
            0.0,
        ],
        dtype=F64,
    )
    assert_close(grpo(rewards, ids, eps=eps), expected)
    expected_centred = torch.tensor([2 / 3, -1.0, -1 / 3, 0.0, 1.0, -1 / 3, 0.0, 0.0], dtype=F64)
    assert_close(grpo(rewards, ids, scale_by_std=False), expected_centred)


def test_grpo_docstring_example():
    out = grpo(torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([7, 7, 3, 3]), eps=0.0)
    # mean 0.5, unbiased std sqrt((0.25 + 0.25) / 1) = 0.7071067811865476
    expected = torch.tensor([0.5 / 0.7071067811865476, -0.5 / 0.7071067811865476, 0.0, 0.0])
    assert_close(out, expected)


def test_dr_grpo_golden():
    rewards, ids = _golden()
    # r - group mean, no std division
    expected = torch.tensor(
        [1.0 - 1 / 3, 2.0 - 3.0, 0.0 - 1 / 3, 0.0, 4.0 - 3.0, 0.0 - 1 / 3, 0.0, 0.0], dtype=F64
    )
    assert_close(dr_grpo(rewards, ids), expected)


def test_rloo_golden():
    rewards, ids = _golden()
    # group 7 [1, 0, 0]: 1 - (0+0)/2 = 1, 0 - (1+0)/2 = -0.5 (twice)
    # group 3 [2, 4]:    2 - 4 = -2, 4 - 2 = 2
    expected = torch.tensor([1.0, -2.0, -0.5, 0.0, 2.0, -0.5, 0.0, 0.0], dtype=F64)
    assert_close(rloo(rewards, ids), expected)


def test_rloo_docstring_example_and_scaling_identity():
    out = rloo(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0, 0, 0]))
    assert_close(out, torch.tensor([1.0, -0.5, -0.5]))
    # G/(G-1) * (r_i - mean): 3/2 * (1 - 1/3) = 1, 3/2 * (0 - 1/3) = -0.5
    assert_close(out, torch.tensor([1.5 * (2 / 3), 1.5 * (-1 / 3), 1.5 * (-1 / 3)]))


def test_reinforce_pp_baseline_golden():
    rewards, ids = _golden()
    eps = 1e-6
    centred = [2 / 3, -1.0, -1 / 3, 0.0, 1.0, -1 / 3, 0.0, 0.0]  # constant/singleton groups -> 0
    # batch mean of the centred values is 0; unbiased batch std over B = 8 values:
    # sum of squares = 4/9 + 1 + 1/9 + 1 + 1/9 = 8/3 -> var = (8/3) / 7
    batch_std = ((8 / 3) / 7) ** 0.5  # 0.6172133998483676
    expected = torch.tensor([c / (batch_std + eps) for c in centred], dtype=F64)
    assert_close(reinforce_pp_baseline(rewards, ids), expected)
    expected_eps = torch.tensor([c / (batch_std + 0.25) for c in centred], dtype=F64)
    assert_close(reinforce_pp_baseline(rewards, ids, eps=0.25), expected_eps)


def test_reinforce_pp_baseline_keeps_relative_scale_of_groups():
    # Two groups whose spreads differ by 10x: GRPO would give both +-0.707, the batch std keeps 10x.
    rewards = torch.tensor([0.0, 1.0, 0.0, 10.0], dtype=F64)
    ids = torch.tensor([0, 0, 1, 1])
    # centred: [-0.5, 0.5, -5, 5]; mean 0; unbiased var = (0.25 + 0.25 + 25 + 25) / 3
    std = ((0.25 + 0.25 + 25.0 + 25.0) / 3) ** 0.5
    expected = torch.tensor([-0.5, 0.5, -5.0, 5.0], dtype=F64) / (std + 1e-6)
    assert_close(reinforce_pp_baseline(rewards, ids), expected)


def test_gae_golden():
    rewards = torch.tensor([[0.0, 0.0, 1.0]], dtype=F64)
    values = torch.tensor([[0.5, 0.6, 0.7]], dtype=F64)
    mask = torch.ones(1, 3)
    gamma, lam = 0.9, 0.8
    # t=2: delta = 1 + 0.9*0 - 0.7 = 0.3;          A2 = 0.3
    # t=1: delta = 0 + 0.9*0.7 - 0.6 = 0.03;       A1 = 0.03 + 0.72*0.3 = 0.246
    # t=0: delta = 0 + 0.9*0.6 - 0.5 = 0.04;       A0 = 0.04 + 0.72*0.246 = 0.21712
    a2 = 1.0 - 0.7
    a1 = (0.9 * 0.7 - 0.6) + 0.9 * 0.8 * a2
    a0 = (0.9 * 0.6 - 0.5) + 0.9 * 0.8 * a1
    adv, ret = gae(rewards, values, mask, gamma=gamma, lam=lam)
    assert_close(adv, torch.tensor([[a0, a1, a2]], dtype=F64))
    assert_close(adv, torch.tensor([[0.21712, 0.246, 0.3]], dtype=F64))
    assert_close(ret, torch.tensor([[a0 + 0.5, a1 + 0.6, a2 + 0.7]], dtype=F64))


def test_gae_golden_masked_middle_and_trailing_padding():
    # Row 0: middle position masked (e.g. tool output) with junk reward/value that must be ignored.
    # Row 1: trailing padding with junk reward/value; the last valid token is terminal.
    rewards = torch.tensor([[0.0, 5.0, 1.0], [0.0, 1.0, 7.0]], dtype=F64)
    values = torch.tensor([[0.5, 9.0, 0.7], [0.5, 0.6, 3.0]], dtype=F64)
    mask = torch.tensor([[1, 0, 1], [1, 1, 0]])
    g, lam = 0.9, 0.8
    # row 0: t=2: A = 1 - 0.7 = 0.3; t=1 skipped; t=0: delta = 0.9*0.7 - 0.5 = 0.13, A = 0.13 + 0.72*0.3
    r0_a2 = 1.0 - 0.7
    r0_a0 = (g * 0.7 - 0.5) + g * lam * r0_a2  # 0.346
    # row 1: t=1 is terminal: A = 1 - 0.6 = 0.4; t=0: delta = 0.9*0.6 - 0.5 = 0.04, A = 0.04 + 0.72*0.4
    r1_a1 = 1.0 - 0.6
    r1_a0 = (g * 0.6 - 0.5) + g * lam * r1_a1  # 0.328
    adv, ret = gae(rewards, values, mask, gamma=g, lam=lam)
    assert_close(adv, torch.tensor([[r0_a0, 0.0, r0_a2], [r1_a0, r1_a1, 0.0]], dtype=F64))
    assert_close(adv, torch.tensor([[0.346, 0.0, 0.3], [0.328, 0.4, 0.0]], dtype=F64))
    assert_close(
        ret, torch.tensor([[r0_a0 + 0.5, 0.0, r0_a2 + 0.7], [r1_a0 + 0.5, r1_a1 + 0.6, 0.0]], dtype=F64)
    )


def test_gae_docstring_example():
    a, r = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2), gamma=1.0, lam=1.0)
    # t=1: 1 - 0.5 = 0.5; t=0: (0 + 0.5 - 0.5) + 0.5 = 0.5
    assert_close(a, torch.tensor([[0.5, 0.5]]))
    assert_close(r, torch.tensor([[1.0, 1.0]]))


def test_gae_lam_zero_is_one_step_td():
    rewards = torch.tensor([[0.2, 0.0, 1.0]], dtype=F64)
    values = torch.tensor([[1.0, 2.0, 3.0]], dtype=F64)
    adv, _ = gae(rewards, values, torch.ones(1, 3), gamma=0.5, lam=0.0)
    # A_t = r_t + 0.5 * V_{t+1} - V_t, with V after the last token = 0
    expected = torch.tensor([[0.2 + 0.5 * 2.0 - 1.0, 0.0 + 0.5 * 3.0 - 2.0, 1.0 - 3.0]], dtype=F64)
    assert_close(adv, expected)


# ---------------------------------------------------------------------------------------------------
# Properties (hypothesis)
# ---------------------------------------------------------------------------------------------------

reward_values = st.one_of(
    st.sampled_from([0.0, 1.0, -1.0, 0.5]),  # small set: constant groups and ties are common
    st.floats(-100.0, 100.0, allow_nan=False, allow_infinity=False),
)
groups_strategy = st.lists(st.lists(reward_values, min_size=1, max_size=6), min_size=1, max_size=6)


def _flatten(groups: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    rewards = [r for g in groups for r in g]
    ids = [i for i, g in enumerate(groups) for _ in g]
    return torch.tensor(rewards, dtype=F64), torch.tensor(ids)


@settings(max_examples=50, deadline=None)
@given(groups=groups_strategy)
def test_grpo_has_zero_mean_per_nonconstant_group(groups):
    rewards, ids = _flatten(groups)
    adv = grpo(rewards, ids)
    for gid, g in enumerate(groups):
        sel = adv[ids == gid]
        if len(set(g)) > 1:
            # |A| <= sqrt(G - 1) <= sqrt(5), so an absolute tolerance is meaningful
            assert abs(sel.sum().item()) < 1e-9
            assert sel.abs().max().item() > 0  # a non-constant group does carry signal


@settings(max_examples=50, deadline=None)
@given(
    groups=groups_strategy,
    constant=st.lists(
        st.tuples(st.floats(-100.0, 100.0, allow_nan=False), st.integers(1, 5)), min_size=1, max_size=3
    ),
    name=st.sampled_from(OUTCOME_ESTIMATORS),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_constant_and_singleton_groups_give_exact_zero_and_never_nan(groups, constant, name, dtype):
    # Append constant groups (size 1 == singleton, or several equal rewards) after the random ones.
    all_groups = list(groups) + [[value] * size for value, size in constant]
    rewards, ids = _flatten(all_groups)
    rewards = rewards.to(dtype)
    adv = ADVANTAGES.get(name)(rewards, ids)
    assert adv.dtype == dtype
    assert adv.shape == rewards.shape
    assert not torch.isnan(adv).any()
    assert torch.isfinite(adv).all()
    for gid, g in enumerate(all_groups):
        if len(set(rewards[ids == gid].tolist())) == 1:
            assert (adv[ids == gid] == 0).all(), (name, g, adv[ids == gid])


@pytest.mark.parametrize("name", OUTCOME_ESTIMATORS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_constant_groups_with_inexact_float_mean_are_exactly_zero(name, dtype):
    # In floating point mean([0.1] * 3) != 0.1 and mean([0.7] * 7) != 0.7, so "r - mean" alone is a
    # tiny non-zero number (~1e-17) that the std division would blow up: the estimator must test for
    # constant groups explicitly.
    rewards = torch.tensor([0.1] * 3 + [0.7] * 7 + [0.0, 1.0], dtype=dtype)
    ids = torch.tensor([0] * 3 + [1] * 7 + [2, 2])
    adv = ADVANTAGES.get(name)(rewards, ids)
    assert (adv[:10] == 0).all(), adv
    assert (adv[10:] != 0).all()


@settings(max_examples=50, deadline=None)
@given(groups=groups_strategy)
def test_rloo_equals_leave_one_out_loop_definition(groups):
    rewards, ids = _flatten(groups)
    adv = rloo(rewards, ids).tolist()
    k = 0
    for g in groups:
        for i in range(len(g)):
            others = [g[j] for j in range(len(g)) if j != i]
            if len(others) == 0 or len(set(g)) == 1:
                expected = 0.0
            else:
                expected = g[i] - sum(others) / len(others)
            assert math.isclose(adv[k], expected, rel_tol=1e-9, abs_tol=1e-9), (g, i, adv[k], expected)
            k += 1


@settings(max_examples=50, deadline=None)
@given(
    groups=groups_strategy,
    raw_ids=st.lists(st.integers(-(10**9), 10**9), min_size=6, max_size=6, unique=True),
    perm_seed=st.integers(0, 2**16),
    name=st.sampled_from(OUTCOME_ESTIMATORS),
)
def test_arbitrary_group_ids_match_contiguous_relabelling(groups, raw_ids, perm_seed, name):
    rewards, dense_ids = _flatten(groups)
    # Shuffle the samples so groups are interleaved, then give every group an arbitrary id.
    perm = torch.randperm(len(rewards), generator=torch.Generator().manual_seed(perm_seed))
    rewards, dense_ids = rewards[perm], dense_ids[perm]
    arbitrary = torch.tensor([raw_ids[i] for i in dense_ids.tolist()])
    # Relabel to contiguous ids in order of first appearance.
    first_seen: dict[int, int] = {}
    for v in arbitrary.tolist():
        first_seen.setdefault(v, len(first_seen))
    contiguous = torch.tensor([first_seen[v] for v in arbitrary.tolist()])
    fn = ADVANTAGES.get(name)
    assert_close(fn(rewards, arbitrary), fn(rewards, contiguous))


def test_arbitrary_group_ids_example():
    rewards = torch.tensor([1.0, 0.0, 0.0, 2.0], dtype=F64)
    for name in OUTCOME_ESTIMATORS:
        fn = ADVANTAGES.get(name)
        assert_close(
            fn(rewards, torch.tensor([42, 7, 42, 7])), fn(rewards, torch.tensor([0, 1, 0, 1]))
        )
    # and the grouping really is by id: [1, 0] in group 42, [0, 2] in group 7
    assert_close(
        dr_grpo(rewards, torch.tensor([42, 7, 42, 7])), torch.tensor([0.5, -1.0, -0.5, 1.0], dtype=F64)
    )


token_row = st.lists(
    st.tuples(st.floats(-5.0, 5.0, allow_nan=False), st.floats(-5.0, 5.0, allow_nan=False), st.booleans()),
    min_size=1,
    max_size=8,
)


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(token_row, min_size=1, max_size=4))
def test_gae_gamma_lam_one_zero_values_is_reward_to_go(rows):
    T = max(len(r) for r in rows)
    rows = [r + [(0.0, 0.0, False)] * (T - len(r)) for r in rows]
    rewards = torch.tensor([[x[0] for x in r] for r in rows], dtype=F64)
    mask = torch.tensor([[x[2] for x in r] for r in rows])
    values = torch.zeros_like(rewards)
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    for b, r in enumerate(rows):
        for t in range(T):
            if r[t][2]:
                expected = sum(r[s][0] for s in range(t, T) if r[s][2])  # reward-to-go over valid tokens
            else:
                expected = 0.0
            assert math.isclose(adv[b, t].item(), expected, abs_tol=1e-9), (r, t)
            assert math.isclose(ret[b, t].item(), expected, abs_tol=1e-9)


@settings(max_examples=50, deadline=None)
@given(
    row=token_row,
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
)
def test_gae_masked_positions_are_skipped(row, gamma, lam):
    """Masked positions give 0 and the valid ones equal GAE on the sequence with the masked ones removed."""
    rewards = torch.tensor([[x[0] for x in row]], dtype=F64)
    values = torch.tensor([[x[1] for x in row]], dtype=F64)
    mask = torch.tensor([[x[2] for x in row]])
    adv, ret = gae(rewards, values, mask, gamma=gamma, lam=lam)
    keep = mask[0]
    assert (adv[0][~keep] == 0).all()
    assert (ret[0][~keep] == 0).all()
    if keep.any():
        c_adv, c_ret = gae(
            rewards[:, keep], values[:, keep], torch.ones(1, int(keep.sum())), gamma=gamma, lam=lam
        )
        assert_close(adv[:, keep], c_adv)
        assert_close(ret[:, keep], c_ret)


def test_gae_masked_position_in_middle_equals_removed_example():
    full, _ = gae(
        torch.tensor([[1.0, 100.0, 2.0, 3.0]], dtype=F64),
        torch.tensor([[0.1, 50.0, 0.2, 0.3]], dtype=F64),
        torch.tensor([[1, 0, 1, 1]]),
        gamma=0.7,
        lam=0.6,
    )
    short, _ = gae(
        torch.tensor([[1.0, 2.0, 3.0]], dtype=F64),
        torch.tensor([[0.1, 0.2, 0.3]], dtype=F64),
        torch.ones(1, 3),
        gamma=0.7,
        lam=0.6,
    )
    assert full[0, 1] == 0
    assert_close(full[:, [0, 2, 3]], short)


# ---------------------------------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OUTCOME_ESTIMATORS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outcome_estimators_keep_dtype(name, dtype):
    rewards, ids = _golden(dtype)
    out = ADVANTAGES.get(name)(rewards, ids)
    assert out.dtype == dtype
    assert out.shape == (8,)


def test_float32_values_match_float64_golden():
    r32, ids = _golden(torch.float32)
    r64, _ = _golden(F64)
    for name in OUTCOME_ESTIMATORS:
        fn = ADVANTAGES.get(name)
        assert_close(fn(r32, ids), fn(r64, ids).to(torch.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gae_keeps_dtype(dtype):
    r = torch.tensor([[0.0, 1.0]], dtype=dtype)
    v = torch.tensor([[0.5, 0.5]], dtype=dtype)
    adv, ret = gae(r, v, torch.ones(1, 2, dtype=torch.bool), gamma=0.9, lam=0.9)
    assert adv.dtype == dtype and ret.dtype == dtype


@pytest.mark.parametrize("name", OUTCOME_ESTIMATORS)
def test_outcome_estimators_reject_mismatched_shapes(name):
    fn = ADVANTAGES.get(name)
    with pytest.raises(ValueError):
        fn(torch.zeros(3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError):
        fn(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError):
        fn(torch.zeros(4), torch.zeros(2, 2, dtype=torch.long))


def test_gae_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        gae(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3), gamma=1.0, lam=1.0)
    with pytest.raises(ValueError):
        gae(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 4), gamma=1.0, lam=1.0)
    with pytest.raises(ValueError):
        gae(torch.zeros(3), torch.zeros(3), torch.ones(3), gamma=1.0, lam=1.0)


@pytest.mark.parametrize("name", OUTCOME_ESTIMATORS)
def test_single_sample_batch_is_zero(name):
    out = ADVANTAGES.get(name)(torch.tensor([3.0]), torch.tensor([5]))
    assert out.tolist() == [0.0]


def test_advantage_params_are_validated_against_signature():
    assert ADVANTAGES.validate_params("grpo", {"eps": "0.001"}) == {"eps": 0.001}
    with pytest.raises(ValueError):
        ADVANTAGES.validate_params("grpo", {"eps": -1.0})
    with pytest.raises(ValueError):
        ADVANTAGES.validate_params("reinforce_pp_baseline", {"eps": 0.0})
    with pytest.raises(ValueError):
        ADVANTAGES.validate_params("rloo", {"eps": 1e-6})


def test_integer_rewards_give_float_advantages():
    # Rewards built from Python ints or bools are int64; the result must not be truncated to 0.
    adv = grpo(torch.tensor([1, 0, 1, 0]), torch.tensor([0, 0, 0, 0]))
    assert adv.is_floating_point()
    # mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.5773502691896257
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5, 0.5, -0.5]) / (0.5773502691896257 + 1e-6))
    assert rloo(torch.tensor([1, 0]), torch.tensor([0, 0])).tolist() == [1.0, -1.0]
    assert reinforce_pp_baseline(torch.tensor([True, False]), torch.tensor([0, 0])).is_floating_point()
