"""Unit tests for the KL estimators (rlft/algorithms/kl.py) and loss aggregation
(rlft/algorithms/aggregation.py).

Expected values are worked out by hand in the test (explicit arithmetic on literal numbers), never by
calling the function under test or a re-implementation of it.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from rlft.algorithms import AGGREGATION_MODES, KL_ESTIMATORS, aggregate, k1, k2, k3

F64 = torch.float64
KL_NAMES = ["k1", "k2", "k3"]


def t(values, dtype=F64):
    return torch.tensor(values, dtype=dtype)


# ---------------------------------------------------------------------------------------------------
# KL estimators
# ---------------------------------------------------------------------------------------------------


def test_kl_registry_holds_exactly_k1_k2_k3():
    assert KL_ESTIMATORS.names() == KL_NAMES
    assert KL_ESTIMATORS.get("k1") is k1
    assert KL_ESTIMATORS.get("k2") is k2
    assert KL_ESTIMATORS.get("k3") is k3


# log_ratio = logprobs - ref_logprobs = [[0, 1, -1], [0.5, -2, 3]]
KL_LP = [[-1.0, -0.5, -2.0], [-0.25, -3.0, 1.0]]
KL_REF = [[-1.0, -1.5, -1.0], [-0.75, -1.0, -2.0]]


def test_k1_golden():
    assert_close(k1(t(KL_LP), t(KL_REF)), t([[0.0, 1.0, -1.0], [0.5, -2.0, 3.0]]))


def test_k2_golden():
    # 0.5 * log_ratio**2
    expected = t([[0.0, 0.5 * 1.0, 0.5 * 1.0], [0.5 * 0.25, 0.5 * 4.0, 0.5 * 9.0]])
    assert_close(k2(t(KL_LP), t(KL_REF)), expected)


def test_k3_golden():
    # exp(-log_ratio) - 1 + log_ratio
    e = math.e
    expected = t(
        [
            [1.0 - 1.0 + 0.0, 1 / e - 1.0 + 1.0, e - 1.0 - 1.0],
            [e**-0.5 - 1.0 + 0.5, e**2 - 1.0 - 2.0, e**-3 - 1.0 + 3.0],
        ]
    )
    assert_close(k3(t(KL_LP), t(KL_REF)), expected)
    assert_close(
        k3(t(KL_LP), t(KL_REF)),
        t([[0.0, 0.36787944117144233, 0.7182818284590451], [0.10653065971263342, 4.38905609893065, 2.049787068367864]]),
    )


def test_kl_log_ratio_is_clamped_to_20():
    lp = t([[30.0, -30.0]])
    ref = t([[0.0, 0.0]])
    assert_close(k1(lp, ref), t([[20.0, -20.0]]))
    assert_close(k2(lp, ref), t([[0.5 * 400.0, 0.5 * 400.0]]))
    # exp(-20) - 1 + 20 and exp(20) - 1 - 20: finite
    assert_close(k3(lp, ref), t([[math.exp(-20.0) - 1.0 + 20.0, math.exp(20.0) - 1.0 - 20.0]]))
    assert torch.isfinite(k3(lp.float(), ref.float())).all()


def test_kl_gradients_by_hand():
    # d k1 / d lp = 1; d k2 / d lp = log_ratio; d k3 / d lp = 1 - exp(-log_ratio)
    lp = t([[-0.5, -1.0, 0.0]]).requires_grad_(True)
    ref = t([[-1.0, -1.0, -2.0]])  # log_ratio [0.5, 0, 2]
    (g1,) = torch.autograd.grad(k1(lp, ref).sum(), lp)
    (g2,) = torch.autograd.grad(k2(lp, ref).sum(), lp)
    (g3,) = torch.autograd.grad(k3(lp, ref).sum(), lp)
    assert_close(g1, t([[1.0, 1.0, 1.0]]))
    assert_close(g2, t([[0.5, 0.0, 2.0]]))
    assert_close(g3, t([[1.0 - math.exp(-0.5), 0.0, 1.0 - math.exp(-2.0)]]))


@settings(max_examples=50, deadline=None)
@given(
    lr=st.lists(st.one_of(st.just(0.0), st.floats(-25.0, 25.0, allow_nan=False)), min_size=1, max_size=8),
    ref_offset=st.floats(-3.0, 0.0),
)
def test_k2_k3_are_nonnegative_and_zero_at_equality(lr, ref_offset):
    ref = torch.full((1, len(lr)), ref_offset, dtype=F64)
    lp = ref + t([lr])
    equal = lp == ref
    for fn in (k2, k3):
        out = fn(lp, ref)
        assert torch.isfinite(out).all()
        # k3 = exp(-x) - 1 + x loses everything to cancellation for |x| < 1e-16 and can then be a
        # rounding error below 0 (about -|x|), hence the tiny tolerance.
        assert (out >= -1e-15).all()
        assert (out[equal] == 0).all()
        # a clear disagreement gives a clearly positive estimate
        assert (out[(lp - ref).abs() > 0.1] > 1e-3).all()


@pytest.mark.parametrize("name", KL_NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kl_keeps_dtype_and_shape(name, dtype):
    out = KL_ESTIMATORS.get(name)(t(KL_LP, dtype), t(KL_REF, dtype))
    assert out.dtype == dtype
    assert out.shape == (2, 3)


@pytest.mark.parametrize("name", KL_NAMES)
def test_kl_rejects_mismatched_shapes(name):
    with pytest.raises(ValueError):
        KL_ESTIMATORS.get(name)(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        KL_ESTIMATORS.get(name)(torch.zeros(2, 3), torch.zeros(3, 2))


# ---------------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------------


def test_aggregation_modes_are_the_documented_three():
    assert AGGREGATION_MODES == ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def test_aggregate_docstring_examples():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert_close(aggregate(loss, mask, "token-mean"), torch.tensor((1.0 + 2.0 + 3.0 + 4.0) / 4))
    assert_close(aggregate(loss, mask, "seq-mean-token-mean"), torch.tensor(((1.0 + 2.0 + 3.0) / 3 + 4.0 / 1) / 2))
    assert_close(
        aggregate(loss, mask, "seq-mean-token-sum-norm", max_len=4),
        torch.tensor(((1.0 + 2.0 + 3.0) / 4 + 4.0 / 4) / 2),
    )


# Masked positions hold junk (100) that must never count; row 2 has no valid token at all.
AGG_LOSS = [[1.0, 2.0, 3.0, 100.0], [4.0, 100.0, 6.0, 100.0], [100.0, 100.0, 100.0, 100.0]]
AGG_MASK = [[1, 1, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]]


def test_aggregate_token_mean_golden():
    loss, mask = t(AGG_LOSS), torch.tensor(AGG_MASK)
    # (1 + 2 + 3 + 4 + 6) / 5 valid tokens
    assert_close(aggregate(loss, mask, "token-mean"), t((1.0 + 2.0 + 3.0 + 4.0 + 6.0) / 5))
    # global_tokens replaces the local count
    assert_close(aggregate(loss, mask, "token-mean", global_tokens=8), t((1.0 + 2.0 + 3.0 + 4.0 + 6.0) / 8))
    assert_close(
        aggregate(loss, mask, "token-mean", global_tokens=torch.tensor(10.0, dtype=F64)), t(16.0 / 10)
    )


def test_aggregate_seq_mean_token_mean_golden():
    loss, mask = t(AGG_LOSS), torch.tensor(AGG_MASK)
    # row 0: (1+2+3)/3 = 2; row 1: (4+6)/2 = 5; row 2 has no tokens and is left out -> (2 + 5) / 2
    assert_close(aggregate(loss, mask, "seq-mean-token-mean"), t(((1.0 + 2.0 + 3.0) / 3 + (4.0 + 6.0) / 2) / 2))
    assert_close(aggregate(loss, mask, "seq-mean-token-mean", global_seqs=4), t((2.0 + 5.0) / 4))


def test_aggregate_seq_mean_token_sum_norm_golden():
    loss, mask = t(AGG_LOSS), torch.tensor(AGG_MASK)
    # default max_len = T = 4: row 0: 6/4, row 1: 10/4; row 2 left out
    assert_close(aggregate(loss, mask, "seq-mean-token-sum-norm"), t(((1.0 + 2.0 + 3.0) / 4 + (4.0 + 6.0) / 4) / 2))
    # constant normaliser max_len = 10
    assert_close(
        aggregate(loss, mask, "seq-mean-token-sum-norm", max_len=10), t(((1.0 + 2.0 + 3.0) / 10 + (4.0 + 6.0) / 10) / 2)
    )
    assert_close(
        aggregate(loss, mask, "seq-mean-token-sum-norm", max_len=10, global_seqs=5),
        t((6.0 / 10 + 10.0 / 10) / 5),
    )


def test_aggregate_modes_weigh_lengths_differently():
    # A long sequence of loss 1 and a short one of loss 3.
    loss = t([[1.0, 1.0, 1.0, 1.0], [3.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    assert_close(aggregate(loss, mask, "token-mean"), t((4 * 1.0 + 3.0) / 5))  # 1.4
    assert_close(aggregate(loss, mask, "seq-mean-token-mean"), t((1.0 + 3.0) / 2))  # 2.0
    assert_close(aggregate(loss, mask, "seq-mean-token-sum-norm"), t((4.0 / 4 + 3.0 / 4) / 2))  # 0.875


def test_aggregate_gradients_by_hand():
    loss = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]).requires_grad_(True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    (g,) = torch.autograd.grad(aggregate(loss, mask, "token-mean"), loss)
    assert_close(g, t([[1 / 5, 1 / 5, 0.0], [1 / 5, 1 / 5, 1 / 5]]))
    (g,) = torch.autograd.grad(aggregate(loss, mask, "seq-mean-token-mean"), loss)
    assert_close(g, t([[1 / 2 / 2, 1 / 2 / 2, 0.0], [1 / 3 / 2, 1 / 3 / 2, 1 / 3 / 2]]))
    (g,) = torch.autograd.grad(aggregate(loss, mask, "seq-mean-token-sum-norm", max_len=8), loss)
    assert_close(g, t([[1 / 8 / 2, 1 / 8 / 2, 0.0], [1 / 8 / 2, 1 / 8 / 2, 1 / 8 / 2]]))


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_aggregate_all_masked_is_zero_not_nan(mode):
    out = aggregate(torch.ones(2, 3), torch.zeros(2, 3), mode)
    assert out.item() == 0.0


# --- sharding: the shard values, each with the global count, add up to the unsharded value --------

batch_strategy = st.integers(2, 6).flatmap(
    lambda b: st.integers(1, 5).flatmap(
        lambda t_: st.tuples(
            st.lists(
                st.lists(st.floats(-10.0, 10.0, allow_nan=False), min_size=t_, max_size=t_),
                min_size=b,
                max_size=b,
            ),
            st.lists(st.lists(st.booleans(), min_size=t_, max_size=t_), min_size=b, max_size=b),
            st.integers(1, b - 1),
        )
    )
)


@settings(max_examples=50, deadline=None)
@given(batch=batch_strategy, dtype=st.sampled_from([torch.float32, torch.float64]))
def test_token_mean_shards_sum_to_unsharded(batch, dtype):
    values, mask_rows, split = batch
    loss, mask = t(values, dtype), torch.tensor(mask_rows)
    n_tokens = int(mask.sum())
    if n_tokens == 0:
        mask[0, 0] = True  # a step with no valid token at all is a separate case (see module notes)
        n_tokens = 1
    full = aggregate(loss, mask, "token-mean")
    shards = [
        aggregate(loss[:split], mask[:split], "token-mean", global_tokens=n_tokens),
        aggregate(loss[split:], mask[split:], "token-mean", global_tokens=n_tokens),
    ]
    assert_close(shards[0] + shards[1], full)
    # and the unsharded value is the hand-written token mean
    expected = sum(v for row, mrow in zip(values, mask.tolist()) for v, m in zip(row, mrow) if m) / n_tokens
    assert_close(full, torch.tensor(expected, dtype=dtype))


@settings(max_examples=50, deadline=None)
@given(
    batch=batch_strategy,
    mode=st.sampled_from(["seq-mean-token-mean", "seq-mean-token-sum-norm"]),
    extra_len=st.integers(0, 3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_seq_modes_shards_sum_to_unsharded(batch, mode, extra_len, dtype):
    values, mask_rows, split = batch
    loss, mask = t(values, dtype), torch.tensor(mask_rows)
    if not mask.any():
        mask[0, 0] = True
    n_seqs = int(mask.any(-1).sum())  # sequences with at least one valid token
    max_len = loss.shape[1] + extra_len
    kw = {"max_len": max_len} if mode == "seq-mean-token-sum-norm" else {}
    full = aggregate(loss, mask, mode, **kw)
    shards = [
        aggregate(loss[:split], mask[:split], mode, global_seqs=n_seqs, **kw),
        aggregate(loss[split:], mask[split:], mode, global_seqs=n_seqs, **kw),
    ]
    assert_close(shards[0] + shards[1], full)
    # hand-written loop definition of the unsharded value
    per_seq = []
    for row, mrow in zip(values, mask.tolist()):
        valid = [v for v, m in zip(row, mrow) if m]
        if valid:
            per_seq.append(sum(valid) / (len(valid) if mode == "seq-mean-token-mean" else max_len))
    assert_close(full, torch.tensor(sum(per_seq) / len(per_seq), dtype=dtype))


def test_sum_norm_micro_batches_with_different_padding_agree_given_max_len():
    # The same two sequences, padded to T=3 in one micro-batch and T=5 in another.
    a = aggregate(t([[1.0, 2.0, 0.0]]), torch.tensor([[1, 1, 0]]), "seq-mean-token-sum-norm", max_len=8)
    b = aggregate(t([[1.0, 2.0, 0.0, 0.0, 0.0]]), torch.tensor([[1, 1, 0, 0, 0]]), "seq-mean-token-sum-norm", max_len=8)
    assert_close(a, b)
    assert_close(a, t((1.0 + 2.0) / 8))


# --- edge cases ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_aggregate_keeps_dtype_and_returns_a_scalar(mode, dtype):
    out = aggregate(t(AGG_LOSS, dtype), torch.tensor(AGG_MASK, dtype=torch.bool), mode)
    assert out.dtype == dtype
    assert out.dim() == 0


def test_aggregate_rejects_mismatched_shapes_unknown_mode_and_bad_max_len():
    with pytest.raises(ValueError):
        aggregate(torch.zeros(2, 3), torch.ones(2, 4), "token-mean")
    with pytest.raises(ValueError):
        aggregate(torch.zeros(3), torch.ones(3), "token-mean")
    with pytest.raises(ValueError):
        aggregate(torch.zeros(2, 3), torch.ones(2, 3), "token-sum")
    with pytest.raises(ValueError):
        aggregate(torch.zeros(2, 3), torch.ones(2, 3), "seq-mean-token-sum-norm", max_len=0)


# Regression tests for bugs found while writing this file.


def test_aggregate_with_a_zero_global_count_is_zero_not_nan():
    # A step in which every sample is masked (e.g. every reward failed): 0 and finite gradients.
    loss = torch.ones(2, 3, requires_grad=True)
    mask = torch.zeros(2, 3)
    assert aggregate(loss, mask, "token-mean", global_tokens=0).item() == 0.0
    out = aggregate(loss, mask, "seq-mean-token-mean", global_seqs=0)
    assert out.item() == 0.0
    out.backward()
    assert torch.isfinite(loss.grad).all()


def test_k3_float32_small_log_ratio_is_nonnegative_and_accurate():
    lp = torch.tensor([[1e-4, -1e-8]], dtype=torch.float32)
    out = k3(lp, torch.zeros_like(lp))
    assert (out >= 0).all(), out
    # x^2/2 - x^3/6 = 5e-9 - 1.7e-13 for x = 1e-4; exp(-x) - 1 + x gave -1.66e-8 in float32
    torch.testing.assert_close(out[0, 0], torch.tensor(0.5e-8), rtol=1e-3, atol=0.0)
