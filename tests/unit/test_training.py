"""Unit tests for the learner's pure helpers (rlft/training.py).

Golden values are worked out by hand (explicit arithmetic on literal numbers); properties are
checked with hypothesis.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from rlft.training import (
    Objective,
    counted_sequences,
    logprob_mismatch,
    loss_metric_names,
    lr_factor,
    micro_batch_loss,
    split_evenly,
    token_entropy,
    token_logprobs,
)
from rlft.types import TrainBatch, TrainSample, collate

F64 = torch.float64


# ---------------------------------------------------------------------------------------------------
# token_logprobs / token_entropy: golden values
# ---------------------------------------------------------------------------------------------------

# One sequence of 3 tokens over a vocabulary of 3; the logits at position 2 are never used.
LOGITS = torch.tensor([[[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0], [7.0, 7.0, 7.0]]])
IDS = torch.tensor([[2, 1, 0]])


def test_token_logprobs_golden():
    # position 0: uniform over 3 -> log(1/3); position 1: probs (2, 1, 1) / 4, target 0 -> log(1/2)
    assert_close(token_logprobs(LOGITS, IDS), torch.tensor([[math.log(1 / 3), math.log(1 / 2)]]))


def test_token_logprobs_with_temperature_golden():
    # temperature 2 halves the logits: position 1 becomes (sqrt 2, 1, 1) / (sqrt 2 + 2)
    r2 = math.sqrt(2.0)
    expected = torch.tensor([[math.log(1 / 3), math.log(r2 / (r2 + 2))]])
    assert_close(token_logprobs(LOGITS, IDS, temperature=2.0), expected)


def test_token_entropy_golden():
    # uniform over 3 -> log 3; (1/2, 1/4, 1/4) -> 1/2 log 2 + 2 * 1/4 log 4 = 1.5 log 2
    expected = torch.tensor([[math.log(3.0), 1.5 * math.log(2.0)]])
    assert_close(token_entropy(LOGITS), expected)


def test_token_entropy_with_temperature_golden():
    # temperature 0.5 doubles the logits: position 1 becomes (4, 1, 1) / 6
    p = [4 / 6, 1 / 6, 1 / 6]
    expected = torch.tensor([[math.log(3.0), -sum(x * math.log(x) for x in p)]])
    assert_close(token_entropy(LOGITS, temperature=0.5), expected)


def test_masked_vocabulary_entries_are_finite():
    # a -inf logit is a token with probability 0: it changes neither the entropy nor the others' logprobs
    logits = torch.tensor([[[0.0, 0.0, -math.inf], [0.0, 0.0, 0.0]]])
    assert_close(token_entropy(logits), torch.tensor([[math.log(2.0)]]))
    assert_close(token_logprobs(logits, torch.tensor([[0, 1]])), torch.tensor([[math.log(0.5)]]))


def test_token_logprobs_alignment_matches_collate():
    # collate's convention: position t of the mask scores input_ids[:, t + 1]
    c = collate([TrainSample([1, 2], [3], [1.0])])
    logits = torch.zeros(1, 3, 5)
    logits[0, 1, 3] = 10.0  # position 1 predicts token 3 with near certainty
    lp = token_logprobs(logits, c.input_ids)
    assert c.mask.tolist() == [[0.0, 1.0]]
    assert lp[0, 1] > -1e-3 and lp[0, 0] == pytest.approx(-math.log(5.0))


def test_token_logprobs_of_bf16_logits_are_float32_and_close():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    ids = torch.randint(0, 11, (2, 5))
    lp = token_logprobs(logits.to(torch.bfloat16), ids)
    assert lp.dtype == torch.float32
    assert_close(lp, token_logprobs(logits, ids), atol=0.05, rtol=0.0)


def test_token_logprobs_carry_gradients():
    logits = torch.zeros(1, 2, 2, requires_grad=True)
    token_logprobs(logits, torch.tensor([[0, 1]])).sum().backward()
    # d log softmax(z)_1 / dz = onehot(1) - softmax(z) = (-1/2, 1/2)
    assert_close(logits.grad[0, 0], torch.tensor([-0.5, 0.5]))
    assert_close(logits.grad[0, 1], torch.zeros(2))


@pytest.mark.parametrize("fn", [token_logprobs, token_entropy])
def test_bad_temperature_and_shapes_are_rejected(fn):
    args = (LOGITS, IDS) if fn is token_logprobs else (LOGITS,)
    with pytest.raises(ValueError, match="temperature"):
        fn(*args, temperature=0.0)
    with pytest.raises(ValueError, match=r"\[B, L, V\]"):
        fn(LOGITS[0], *args[1:])


# ---------------------------------------------------------------------------------------------------
# token_logprobs / token_entropy: properties
# ---------------------------------------------------------------------------------------------------

logit_tensors = st.integers(0, 2**31 - 1).map(
    lambda seed: torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(seed), dtype=F64) * 5
)
temperatures = st.floats(0.1, 5.0)


@settings(max_examples=50, deadline=None)
@given(logits=logit_tensors, temperature=temperatures)
def test_logprobs_of_every_next_token_sum_to_one(logits, temperature):
    v = logits.shape[-1]
    total = torch.zeros(2, 3, dtype=torch.float32)
    for token in range(v):
        ids = torch.full((2, 4), token)
        total += token_logprobs(logits, ids, temperature).exp()
    assert_close(total, torch.ones(2, 3))


@settings(max_examples=50, deadline=None)
@given(logits=logit_tensors, temperature=temperatures)
def test_entropy_is_between_zero_and_log_vocab(logits, temperature):
    h = token_entropy(logits, temperature)
    assert (h >= -1e-5).all() and (h <= math.log(logits.shape[-1]) + 1e-5).all()


@settings(max_examples=50, deadline=None)
@given(logits=logit_tensors, t=st.floats(0.1, 2.0), factor=st.floats(1.1, 3.0))
def test_entropy_grows_with_temperature(logits, t, factor):
    assert (token_entropy(logits, t * factor) >= token_entropy(logits, t) - 1e-5).all()


@settings(max_examples=50, deadline=None)
@given(logits=logit_tensors, shift=st.floats(-50, 50))
def test_logprobs_ignore_a_constant_shift_of_the_logits(logits, shift):
    ids = torch.randint(0, 6, (2, 4), generator=torch.Generator().manual_seed(1))
    assert_close(token_logprobs(logits + shift, ids), token_logprobs(logits, ids), atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------------
# token_logprobs / token_entropy: chunked over tokens == the plain full log-softmax
# ---------------------------------------------------------------------------------------------------

B, L, V = 3, 5, 11  # N = B * L = 15 flattened tokens
CHUNKS = pytest.mark.parametrize(
    "chunk",
    [1, 4, 5, 15, 64],
    ids=["chunk1", "chunk4-uneven", "chunk5-divides", "chunk15-all", "chunk64-larger"],
)
TEMPERATURES = pytest.mark.parametrize("temperature", [1.0, 0.7], ids=["t1", "t0.7"])
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])


def _random_case(seed: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(B, L, V, generator=g)).to(dtype)
    return logits, torch.randint(0, V, (B, L), generator=g)


def _reference_logprobs(logits: torch.Tensor, ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """The memory-hungry definition: a float32 log-softmax of every position, then the gather."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)  # [B, L, V]
    return logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)  # [B, L-1]


def _reference_entropy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    z = logits[:, :-1].float() / temperature
    p = torch.softmax(z, dim=-1)
    return -torch.where(p > 0, p * torch.log_softmax(z, dim=-1), 0.0).sum(-1)


@DTYPES
@TEMPERATURES
@CHUNKS
def test_chunked_logprobs_match_the_full_log_softmax(dtype, temperature, chunk):
    logits, ids = _random_case(0, dtype)
    logits.requires_grad_(True)
    got = token_logprobs(logits, ids, temperature, chunk_tokens=chunk)
    expected = _reference_logprobs(logits, ids, temperature)
    assert got.dtype == torch.float32 and got.shape == (B, L - 1)
    assert_close(got, expected, atol=1e-6, rtol=1e-6)
    upstream = torch.randn(B, L - 1, generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad(got, logits, upstream)
    (expected_grad,) = torch.autograd.grad(expected, logits, upstream)
    assert grad.dtype == dtype
    tol = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else {}  # bf16: one rounding of the same fp32
    assert_close(grad, expected_grad, **tol)
    assert (grad[:, -1] == 0).all()  # the last position predicts nothing


def test_chunked_logprobs_accept_non_contiguous_logits():
    logits, ids = _random_case(2)
    # [B, L, V] laid out as [L, B, V]: not contiguous, so the flattening must copy
    strided = logits.transpose(0, 1).contiguous().transpose(0, 1).requires_grad_(True)
    assert not strided.is_contiguous()
    got = token_logprobs(strided, ids, 0.7, chunk_tokens=4)
    expected = _reference_logprobs(strided, ids, 0.7)
    assert_close(got, expected, atol=1e-6, rtol=1e-6)
    upstream = torch.randn(B, L - 1)
    (grad,) = torch.autograd.grad(got, strided, upstream)
    assert_close(grad, torch.autograd.grad(expected, strided, upstream)[0])


def test_chunked_logprobs_pass_gradcheck_in_float64():
    logits, ids = _random_case(3)
    x = logits[:2, :4, :6].to(F64).requires_grad_(True)
    ids = ids[:2, :4] % 6
    assert torch.autograd.gradcheck(lambda z: token_logprobs(z, ids, 0.7, chunk_tokens=3), (x,))
    assert torch.autograd.gradcheck(lambda z: token_logprobs(z, ids, chunk_tokens=100), (x,))


def test_chunked_logprobs_work_without_autograd():
    logits, ids = _random_case(4)
    expected = _reference_logprobs(logits, ids, 0.7)
    with torch.no_grad():
        under_no_grad = token_logprobs(logits.clone().requires_grad_(True), ids, 0.7, chunk_tokens=4)
    plain = token_logprobs(logits, ids, 0.7, chunk_tokens=4)  # requires_grad False
    for got in (under_no_grad, plain):
        assert got.grad_fn is None and not got.requires_grad
        assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_chunked_logprobs_save_no_float32_copy_of_the_logits():
    # the tensors kept for backward: the bf16 logits themselves, the targets and lse [N], no fp32 [N, V]
    logits, ids = _random_case(5, torch.bfloat16)
    logits.requires_grad_(True)
    saved: list[tuple[tuple[int, ...], torch.dtype]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append((tuple(t.shape), t.dtype))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        lp = token_logprobs(logits, ids, 0.7, chunk_tokens=4)
    lp.sum().backward()  # the saved tensors are enough for the backward
    assert ((B * L, V), torch.bfloat16) in saved
    assert not [s for s in saved if s[1] != torch.bfloat16 and len(s[0]) > 1 and s[0][-1] == V], saved
    assert sum(math.prod(shape) for shape, dtype in saved if dtype == torch.float32) <= B * L


@pytest.mark.parametrize("fn", [token_logprobs, token_entropy], ids=["logprobs", "entropy"])
def test_empty_batches_and_single_tokens_give_empty_results(fn):
    for b, length in ((0, 4), (2, 1)):
        args = (torch.zeros(b, length, V), torch.zeros(b, length, dtype=torch.long))
        out = fn(*args[: 2 if fn is token_logprobs else 1], chunk_tokens=4)
        assert out.shape == (b, length - 1) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="chunk_tokens"):
        fn(*(LOGITS, IDS)[: 2 if fn is token_logprobs else 1], chunk_tokens=0)


@DTYPES
@TEMPERATURES
@CHUNKS
def test_chunked_entropy_matches_the_full_softmax(dtype, temperature, chunk):
    logits, _ = _random_case(6, dtype)
    logits[0, 1, :4] = -math.inf  # masked tokens: p = 0, no nan
    logits[2, 3, 1:] = -math.inf  # a single allowed token: entropy 0
    got = token_entropy(logits, temperature, chunk_tokens=chunk)
    assert got.dtype == torch.float32 and got.shape == (B, L - 1) and torch.isfinite(got).all()
    assert_close(got, _reference_entropy(logits, temperature), atol=1e-5, rtol=1e-5)
    assert got[2, 3] == 0.0


def test_entropy_carries_no_gradient():
    logits, _ = _random_case(7)
    assert not token_entropy(logits.requires_grad_(True), chunk_tokens=4).requires_grad


# ---------------------------------------------------------------------------------------------------
# lr_factor
# ---------------------------------------------------------------------------------------------------


def test_lr_factor_warmup_golden():
    got = [lr_factor(s, warmup_steps=4, total_steps=100, schedule="constant") for s in range(6)]
    assert got == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_lr_factor_linear_golden():
    # warm-up 2, then 1 - (step - 2) / 8
    got = [lr_factor(s, warmup_steps=2, total_steps=10, schedule="linear") for s in (0, 1, 2, 6, 9, 10, 50)]
    assert got == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.125, 0.0, 0.0])


def test_lr_factor_cosine_golden():
    # no warm-up: 0.5 * (1 + cos(pi * step / 8))
    got = [lr_factor(s, warmup_steps=0, total_steps=8, schedule="cosine") for s in (0, 2, 4, 6, 8)]
    expected = [1.0, 0.5 * (1 + math.sqrt(0.5)), 0.5, 0.5 * (1 - math.sqrt(0.5)), 0.0]
    assert got == pytest.approx(expected)


def test_lr_factor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown lr schedule"):
        lr_factor(0, warmup_steps=0, total_steps=10, schedule="step")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        lr_factor(-1, warmup_steps=0, total_steps=10, schedule="constant")
    with pytest.raises(ValueError):
        lr_factor(0, warmup_steps=0, total_steps=0, schedule="constant")


@settings(max_examples=100, deadline=None)
@given(
    warmup=st.integers(0, 20),
    total=st.integers(1, 200),
    schedule=st.sampled_from(["constant", "linear", "cosine"]),
)
def test_lr_factor_rises_then_never_increases(warmup, total, schedule):
    steps = range(max(total, warmup) + 5)
    f = [lr_factor(s, warmup_steps=warmup, total_steps=total, schedule=schedule) for s in steps]
    assert all(0.0 <= x <= 1.0 for x in f)
    assert all(a < b for a, b in zip(f[:warmup], f[1:warmup]))  # strictly rising warm-up
    if warmup:
        assert f[warmup - 1] == 1.0  # the last warm-up step reaches the peak
    assert all(a >= b - 1e-12 for a, b in zip(f[warmup:], f[warmup + 1 :]))


# ---------------------------------------------------------------------------------------------------
# Batch splitting and small helpers
# ---------------------------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 40), parts=st.integers(1, 8))
def test_split_evenly_covers_in_order_and_matches_shard(n, parts):
    ranges = split_evenly(n, parts)
    assert [i for r in ranges for i in r] == list(range(n))
    assert max(map(len, ranges)) - min(map(len, ranges)) <= 1
    batch = TrainBatch([TrainSample([i], [i], [0.0]) for i in range(n)])
    for rank, r in enumerate(ranges):
        assert [s.prompt_ids[0] for s in batch.shard(rank, parts).samples] == list(r)


def test_counted_sequences():
    assert counted_sequences(torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])) == 2


def test_logprob_mismatch_golden():
    a = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, 0.0, 0.0]])
    b = torch.tensor([[-1.5, -2.0, -1.0], [-0.25, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    total, peak = logprob_mismatch(a, b, mask)
    assert total.item() == pytest.approx(0.5 + 0.0 + 2.0 + 0.25) and peak.item() == 2.0


# ---------------------------------------------------------------------------------------------------
# micro_batch_loss
# ---------------------------------------------------------------------------------------------------


def test_micro_batch_loss_golden_with_kl():
    # reinforce at ratio 1: per-token loss -A; k1 KL = logprobs - ref = 0.5 on every token
    obj = Objective("reinforce", {}, "token-mean", kl_estimator="k1", kl_coef=0.1)
    lp = torch.tensor([[-1.0, -1.0, -1.0]])
    out = micro_batch_loss(
        obj, logprobs=lp, old_logprobs=lp, advantages=torch.tensor([[2.0, 2.0, 9.0]]),
        mask=torch.tensor([[1.0, 1.0, 0.0]]), ref_logprobs=lp - 0.5,
        global_tokens=4, global_seqs=2, max_len=3,
    )
    assert out.policy_loss.item() == pytest.approx((-2.0 - 2.0) / 4)
    assert out.kl_loss.item() == pytest.approx(0.1 * (0.5 + 0.5) / 4)
    assert out.loss.item() == pytest.approx(-1.0 + 0.025)
    assert out.token_sums["kl"].item() == pytest.approx(1.0)


def test_micro_batch_loss_reports_kl_without_adding_it_when_coef_is_zero():
    obj = Objective("reinforce", {}, "token-mean", kl_estimator="k1", kl_coef=0.0)
    lp = torch.zeros(1, 2)
    out = micro_batch_loss(
        obj, logprobs=lp, old_logprobs=lp, advantages=torch.ones(1, 2), mask=torch.ones(1, 2),
        ref_logprobs=lp - 1.0, global_tokens=2, global_seqs=1, max_len=2,
    )
    assert out.loss.item() == pytest.approx(-1.0) and out.kl_loss.item() == 0.0
    assert out.token_sums["kl"].item() == pytest.approx(2.0)


def test_loss_metric_names_follow_the_loss_and_tis():
    assert loss_metric_names(Objective("reinforce", {}, "token-mean")) == []
    names = loss_metric_names(Objective("ppo_clip", {"clip_high": 0.28}, "token-mean", tis_cap=2.0))
    assert {"clip_fraction", "tis_weight_mean"} <= set(names)
    # decoupled_ppo needs rollout_logprobs: the dummy batch brings them
    for params in ({}, {"behaviour_cap": None, "clip_high": 0.28}):
        assert loss_metric_names(Objective("decoupled_ppo", params, "token-mean")) == [
            "approx_kl", "behaviour_masked_fraction", "behaviour_weight_mean", "clip_fraction", "ratio_mean"
        ]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    cut=st.integers(1, 5),
    mode=st.sampled_from(["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]),
    loss=st.sampled_from(["ppo_clip", "gspo", "cispo", "reinforce", "decoupled_ppo"]),
)
def test_micro_batches_add_up_to_the_full_batch(seed, cut, mode, loss):
    """Loss and gradient of the whole batch == sums over any split, with global normalisers."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, 5, 7, generator=g, dtype=F64)
    ids = torch.randint(0, 7, (6, 5), generator=g)
    mask = (torch.rand(6, 4, generator=g) > 0.3).to(F64)
    mask[0] = 0.0  # a sequence with no counted token
    adv = torch.randn(6, 4, generator=g, dtype=F64)
    old = token_logprobs(logits, ids).to(F64) + 0.1 * torch.randn(6, 4, generator=g, dtype=F64)
    ref = old - 0.2
    rollout = old - torch.randn(6, 4, generator=g, dtype=F64)  # behaviour weights e^N(0,1): some > 5
    obj = Objective(loss, {}, mode, kl_estimator="k3", kl_coef=0.05)
    norms = dict(global_tokens=float(mask.sum()), global_seqs=float(counted_sequences(mask)), max_len=8)

    def run(rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        x = logits[rows].clone().requires_grad_(True)
        lp = token_logprobs(x, ids[rows]).to(F64)
        out = micro_batch_loss(obj, logprobs=lp, old_logprobs=old[rows], advantages=adv[rows],
                               mask=mask[rows], rollout_logprobs=rollout[rows], ref_logprobs=ref[rows], **norms)
        out.loss.backward()
        return out.loss.detach(), x.grad

    full_loss, full_grad = run(slice(0, 6))
    a_loss, a_grad = run(slice(0, cut))
    b_loss, b_grad = run(slice(cut, 6))
    assert_close(a_loss + b_loss, full_loss, atol=1e-6, rtol=1e-6)
    assert_close(torch.cat([a_grad, b_grad]), full_grad, atol=1e-6, rtol=1e-6)


def test_supervised_objective_is_the_token_mean_nll():
    from rlft.training import SFT_OBJECTIVE, loss_metric_names, micro_batch_loss

    logprobs = torch.tensor([[-1.0, -2.0, -9.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    out = micro_batch_loss(
        SFT_OBJECTIVE, logprobs=logprobs, old_logprobs=logprobs.detach(), advantages=torch.zeros(1, 3),
        mask=mask, global_tokens=4, global_seqs=1, max_len=3,
    )
    # (1 + 2) / 4 global tokens; the masked token and the (zero) advantages play no part
    torch.testing.assert_close(out.loss, torch.tensor(0.75))
    out.loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-0.25, -0.25, 0.0]]))
    assert loss_metric_names(SFT_OBJECTIVE) == []
