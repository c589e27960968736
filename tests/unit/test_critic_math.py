"""Unit tests for PPO's critic-side math (rlft/algorithms/ppo.py): the value loss, the adaptive KL
controller, KL-penalised token rewards, whitening and explained variance.

Expected values are worked out by hand in the comments (explicit arithmetic on literal numbers),
never by calling the function under test or a re-implementation of it.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from rlft.algorithms.ppo import (
    adaptive_kl_coef,
    explained_variance,
    kl_penalized_rewards,
    masked_whiten,
    value_loss,
)

F64 = torch.float64


def t(values, dtype=F64):
    return torch.tensor(values, dtype=dtype)


# ---------------------------------------------------------------------------------------------------
# value_loss
# ---------------------------------------------------------------------------------------------------

# Five tokens, clip c = 0.5:
#   V      = [ 1.0, 2.0, -1.0, 1.0, -2.0]
#   V_old  = [ 0.0, 2.5,  0.0, 0.0,  0.0]
#   R      = [ 0.0, 3.0,  1.0, 2.0, -3.0]
VALUES = [[1.0, 2.0, -1.0, 1.0, -2.0]]
OLD = [[0.0, 2.5, 0.0, 0.0, 0.0]]
RETURNS = [[0.0, 3.0, 1.0, 2.0, -3.0]]


def test_value_loss_without_clip_is_half_the_squared_error():
    # (V - R)^2 = [1, 1, 4, 1, 1] -> halves
    loss, clipped = value_loss(t(VALUES), t(OLD), t(RETURNS))
    assert_close(loss, t([[0.5, 0.5, 2.0, 0.5, 0.5]]))
    assert not clipped.any()


def test_value_loss_with_clip_takes_the_pessimistic_branch_per_token():
    # V_clip = V_old + clamp(V - V_old, -0.5, 0.5) = [0.5, 2.0, -0.5, 0.5, -0.5]
    # unclipped (V - R)^2      = [1,    1, 4,    1,    1   ]
    # clipped   (V_clip - R)^2 = [0.25, 1, 2.25, 2.25, 6.25]
    # 0.5 * max                = [0.5, 0.5, 2.0, 1.125, 3.125]; the clipped branch wins on tokens 3, 4
    loss, clipped = value_loss(t(VALUES), t(OLD), t(RETURNS), clip=0.5)
    assert_close(loss, t([[0.5, 0.5, 2.0, 1.125, 3.125]]))
    assert clipped.tolist() == [[False, False, False, True, True]]


def test_value_loss_clip_is_inactive_within_the_trust_region():
    # |V - V_old| = [0.1, 0.2] <= 0.25: V_clip = V, both branches equal: 0.5 * [(0.1-1)^2, (-0.2-0)^2]
    loss, clipped = value_loss(t([[0.1, -0.2]]), t([[0.0, 0.0]]), t([[1.0, 0.0]]), clip=0.25)
    assert_close(loss, t([[0.405, 0.02]]))
    assert not clipped.any()


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(*(st.floats(-10, 10, allow_nan=False) for _ in range(3))), min_size=1, max_size=16
    ),
    clip=st.floats(0.01, 5.0),
)
def test_clipped_value_loss_bounds_the_plain_one_and_equals_it_inside_the_clip(rows, clip):
    v, old, ret = (t([[r[i] for r in rows]]) for i in range(3))
    plain, _ = value_loss(v, old, ret)
    clipped, _ = value_loss(v, old, ret, clip=clip)
    assert (clipped >= plain).all()  # the max of the two branches
    inside = (v - old).abs() <= clip
    assert_close(clipped[inside], plain[inside], rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------------------------
# adaptive_kl_coef
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("observed", "n_steps", "horizon", "expected"),
    [
        (6.6, 100, 1000, 0.1 * (1 + 0.1 * 0.1)),  # KL 10% over target: error +0.1, scaled by 100/1000
        (5.7, 100, 1000, 0.1 * (1 - 0.05 * 0.1)),  # 5% under: error -0.05
        (60.0, 100, 1000, 0.1 * (1 + 0.2 * 0.1)),  # 10x over: error clamped to +0.2
        (0.0, 100, 1000, 0.1 * (1 - 0.2 * 0.1)),  # no KL at all: error clamped to -0.2
        (60.0, 1000, 1000, 0.1 * 1.2),  # a whole horizon at once: the full 20%
        (0.0, 500, 1000, 0.1 * 0.9),  # half a horizon: half of -20%
        (6.0, 100, 1000, 0.1),  # on target: unchanged
    ],
)
def test_adaptive_kl_coef(observed, n_steps, horizon, expected):
    assert adaptive_kl_coef(0.1, observed, target=6.0, n_steps=n_steps, horizon=horizon) == pytest.approx(expected)


@pytest.mark.parametrize(("target", "horizon"), [(0.0, 1000), (-1.0, 1000), (6.0, 0)])
def test_adaptive_kl_coef_rejects_non_positive_target_or_horizon(target, horizon):
    with pytest.raises(ValueError, match="must be > 0"):
        adaptive_kl_coef(0.1, 1.0, target=target, n_steps=1, horizon=horizon)


# ---------------------------------------------------------------------------------------------------
# kl_penalized_rewards
# ---------------------------------------------------------------------------------------------------


def test_kl_penalized_rewards_put_the_outcome_on_the_last_valid_token():
    outcome = t([2.0, 5.0, 3.0])
    logprobs = t([[-1.0, -2.0, -0.5, -3.0], [-1.0, -1.0, -1.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    ref = t([[-1.5, -1.0, -1.0, -1.0], [0.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 1.0]])
    # row 0: a gap and trailing padding (last valid index 2); row 1: empty; row 2: all valid
    mask = t([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    rewards, kl = kl_penalized_rewards(outcome, logprobs, ref, mask, coef=0.2, estimator="k1")
    # k1 = lp - ref on the mask: row 0 [0.5, -, 0.5, -], row 2 [0, 1, 0, -1]; rewards -0.2 * k1
    assert_close(kl, t([[0.5, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, -1.0]]))
    assert_close(
        rewards,
        t([[-0.1, 0.0, -0.1 + 2.0, 0.0],  # the outcome on index 2, not on the padded index 3
           [0.0, 0.0, 0.0, 0.0],  # an empty row gets nothing, not even its outcome
           [0.0, -0.2, 0.0, 0.2 + 3.0]]),
    )


def test_kl_penalized_rewards_without_reference_or_coefficient_are_the_outcome_alone():
    outcome, lp, ref, mask = t([1.5]), t([[-1.0, -2.0, -3.0]]), t([[0.0, 0.0, 0.0]]), t([[1, 1, 0]])
    for reference, coef in ((None, 0.5), (ref, 0.0)):
        rewards, kl = kl_penalized_rewards(outcome, lp, reference, mask, coef=coef)
        assert_close(rewards, t([[0.0, 1.5, 0.0]]))
        assert_close(kl, t([[0.0, 0.0, 0.0]]))


def test_kl_penalized_rewards_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="do not match"):
        kl_penalized_rewards(t([1.0, 2.0]), t([[0.0, 0.0]]), None, t([[1, 1]]), coef=0.1)


# ---------------------------------------------------------------------------------------------------
# masked_whiten
# ---------------------------------------------------------------------------------------------------


def test_masked_whiten_uses_only_the_valid_positions():
    x = t([[1.0, 3.0, 99.0], [5.0, -7.0, 0.0]])
    mask = t([[1, 1, 0], [1, 0, 0]])
    # valid values 1, 3, 5: mean 3, unbiased variance (4 + 0 + 4) / 2 = 4, std 2
    assert_close(masked_whiten(x, mask), t([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    # shift_mean=False only scales: x / 2 on the mask
    assert_close(masked_whiten(x, mask, shift_mean=False), t([[0.5, 1.5, 0.0], [2.5, 0.0, 0.0]]))


def test_masked_whiten_of_fewer_than_two_values():
    x, one = t([[4.0, 9.0]]), t([[1, 0]])
    assert_close(masked_whiten(x, one), t([[0.0, 0.0]]))
    assert_close(masked_whiten(x, one, shift_mean=False), t([[4.0, 0.0]]))


# ---------------------------------------------------------------------------------------------------
# explained_variance
# ---------------------------------------------------------------------------------------------------

# returns 0, 1, 2, 3 (mean 1.5, unbiased variance (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3) and a
# masked-out position whose huge value must not count
EV_RETURNS, EV_MASK = t([[0.0, 1.0, 2.0, 3.0, 1e6]]), t([[1, 1, 1, 1, 0]])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0, 1.0, 2.0, 3.0, -5.0], 1.0),  # perfect critic: Var(R - V) = 0
        ([1.5, 1.5, 1.5, 1.5, -5.0], 0.0),  # predicts the mean: Var(R - V) = Var(R)
        ([2.5, 2.5, 2.5, 2.5, -5.0], 0.0),  # a constant offset costs nothing (variance, not MSE)
        # reversed: R - V = [-3, -1, 1, 3], variance 20/3; 1 - (20/3) / (5/3) = -3
        ([3.0, 2.0, 1.0, 0.0, -5.0], -3.0),
    ],
)
def test_explained_variance(values, expected):
    assert explained_variance(t([values]), EV_RETURNS, EV_MASK) == pytest.approx(expected, abs=1e-12)


def test_explained_variance_is_nan_without_variance_to_explain():
    assert math.isnan(explained_variance(t([[0.0, 1.0]]), t([[2.0, 2.0]]), t([[1, 1]])))  # constant returns
    assert math.isnan(explained_variance(t([[0.0, 1.0]]), t([[2.0, 3.0]]), t([[1, 0]])))  # one token
