"""Token-budget micro-batches, padding-free packing and precision (``rlft.micro_batches``): the
planner's invariants, packed outputs equal to padded ones, and the same loss and gradient for every
split of a batch, on a real (tiny) Hugging Face model."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlft.driver import prefixed
from rlft.micro_batches import (
    ForwardBatch,
    mfu,
    per_completion_token,
    plan_micro_batches,
    resolve_precision,
    sequence_logprobs,
)
from rlft.training import Objective, micro_batch_loss, token_entropy, token_logprobs
from rlft.types import TrainSample, collate

# ----------------------------------------------------------------------------------------------
# The planner


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 60), min_size=0, max_size=40),
    budget=st.one_of(st.none(), st.integers(1, 200)),
    seqs=st.one_of(st.none(), st.integers(1, 9)),
    packed=st.booleans(),
)
def test_every_sample_lands_in_exactly_one_micro_batch_within_the_budget(lengths, budget, seqs, packed):
    plan = plan_micro_batches(lengths, max_tokens=budget, max_seqs=seqs, packed=packed)
    assert sorted(i for g in plan for i in g) == list(range(len(lengths)))
    assert all(g for g in plan)
    for g in plan:
        assert seqs is None or len(g) <= seqs
        cost = sum(lengths[i] for i in g) if packed else len(g) * max(lengths[i] for i in g)
        assert budget is None or cost <= budget or len(g) == 1
    assert all(g == sorted(g) for g in plan)  # batch order within a pass
    if budget is None:  # the old fixed split: consecutive, in order
        assert [i for g in plan for i in g] == list(range(len(lengths)))
    elif len(lengths) and budget >= len(lengths) * max(lengths) and seqs is None:
        assert plan == [list(range(len(lengths)))]  # fits one pass: exactly the old single pass


def test_sorting_by_length_removes_most_padding_of_a_long_tailed_batch():
    lengths = [130, 12, 14, 11, 13, 128, 12, 15]
    fixed = plan_micro_batches(lengths, max_seqs=4)  # [130, 12, 14, 11], [13, 128, 12, 15]
    budget = plan_micro_batches(lengths, max_tokens=260)
    assert budget == [[0, 5], [1, 2, 3, 4, 6, 7]]  # longest first; batch order within a pass
    def slots(plan):  # token positions the padded passes compute (335 of them hold tokens)
        return sum(len(g) * max(lengths[i] for i in g) for g in plan)

    assert slots(fixed) == 4 * 130 + 4 * 128 and slots(budget) == 2 * 130 + 6 * 15  # 1,032 -> 350


@pytest.mark.parametrize("bad", [dict(max_tokens=0), dict(max_seqs=0)], ids=["tokens", "seqs"])
def test_the_planner_rejects_empty_budgets(bad):
    with pytest.raises(ValueError, match=">= 1"):
        plan_micro_batches([3, 4], **bad)


def test_packing_needs_non_empty_samples():
    with pytest.raises(ValueError, match="non-empty"):
        ForwardBatch.packed([])


# ----------------------------------------------------------------------------------------------
# Packed = padded, on a real model


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def samples(n: int = 9, seed: int = 0) -> list[TrainSample]:
    """Long-tailed lengths, +-1 advantages, some masked tokens, rollout log-probs."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        p, c = 1 + i % 4, [2, 30, 3, 5, 1, 17, 4, 2, 9][i % 9]
        ids = torch.randint(4, 80, (p + c,), generator=g).tolist()
        mask = None if i % 3 else [1] * (c - 1) + [0]
        out.append(TrainSample(ids[:p], ids[p:], [1.0 if i % 2 else -1.0] * c,
                               (-3.0 - torch.rand(c, generator=g)).tolist(), mask))
    return out


def outputs(model, fb: ForwardBatch, temperature: float = 1.0):
    logits = model(**fb.inputs, use_cache=False).logits
    return fb.padded(token_logprobs(logits, fb.ids, temperature)), fb.padded(token_entropy(logits, temperature))


def test_packed_rows_give_the_padded_log_probs_and_entropy(model):
    batch = samples()
    c = collate(batch, 0)
    lp, ent = outputs(model, ForwardBatch.padded_from(c.input_ids, c.attention_mask), 0.7)
    plp, pent = outputs(model, ForwardBatch.packed(batch), 0.7)
    valid = c.attention_mask[:, 1:].bool()  # every next-token position of every sequence
    torch.testing.assert_close(plp[valid], lp[valid], atol=1e-5, rtol=0)
    torch.testing.assert_close(pent[valid], ent[valid], atol=1e-5, rtol=0)
    assert (plp[~valid] == 0).all()


SPLITS = {
    "one-padded-pass": dict(max_tokens=None, max_seqs=None, packed=False),
    "fixed-2": dict(max_tokens=None, max_seqs=2, packed=False),
    "budget-40": dict(max_tokens=40, max_seqs=None, packed=False),
    "packed-45": dict(max_tokens=45, max_seqs=None, packed=True),
}
OBJECTIVES = {
    "token-mean": Objective("ppo_clip", {}, "token-mean", tis_cap=2.0),
    "seq-mean": Objective("gspo", {}, "seq-mean-token-mean"),
    "sum-norm": Objective("cispo", {}, "seq-mean-token-sum-norm"),
}


def loss_and_grads(model, batch, split, objective):
    """The learner's accumulation: each micro-batch's loss divided by the global counts, summed."""
    model.zero_grad()
    full = collate(batch, 0)
    norms = dict(global_tokens=float(full.mask.sum()), global_seqs=float((full.mask.sum(-1) > 0).sum()), max_len=30)
    total = torch.zeros(())
    for idx in plan_micro_batches([s.length for s in batch], max_tokens=split["max_tokens"],
                                  max_seqs=split["max_seqs"], packed=split["packed"]):
        part = [batch[i] for i in idx]
        c = collate(part, 0)
        fb = ForwardBatch.packed(part) if split["packed"] else ForwardBatch.padded_from(c.input_ids, c.attention_mask)
        lp, _ = outputs(model, fb)
        old = lp.detach() + 0.05 * c.mask  # off-policy, so ratios and clipping matter
        out = micro_batch_loss(objective, logprobs=lp, old_logprobs=old, advantages=c.advantages, mask=c.mask,
                               rollout_logprobs=c.rollout_logprobs, **norms)
        out.loss.backward()
        total += out.loss.detach()
    return total, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_every_split_gives_the_same_loss_and_gradient(model, objective):
    batch = samples()
    ref_loss, ref_grads = loss_and_grads(model, batch, SPLITS["one-padded-pass"], OBJECTIVES[objective])
    assert max(g.abs().max() for g in ref_grads.values()) > 1e-3  # a gradient worth comparing
    for name, split in SPLITS.items():
        loss, grads = loss_and_grads(model, batch, split, OBJECTIVES[objective])
        torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-5, msg=name)
        for k in grads:
            torch.testing.assert_close(grads[k], ref_grads[k], atol=1e-6, rtol=1e-4, msg=f"{name}: {k}")


def test_no_grad_passes_return_each_sample_in_order_whatever_the_budget(model):
    batch = samples()
    one = sequence_logprobs(model, batch, pad_id=0, device=torch.device("cpu"))
    split = sequence_logprobs(model, batch, pad_id=0, device=torch.device("cpu"), max_tokens=20)
    assert [len(x) for x in one] == [len(s.completion_ids) for s in batch]
    torch.testing.assert_close(torch.tensor(sum(split, [])), torch.tensor(sum(one, [])), atol=1e-5, rtol=0)
    lengths = per_completion_token(lambda c: c.mask, batch, pad_id=0, max_seqs=2)
    assert lengths == [s.loss_mask or [1] * len(s.completion_ids) for s in batch]


# ----------------------------------------------------------------------------------------------
# Precision and metrics


def test_bf16_falls_back_to_fp32_on_a_cpu_without_bf16_instructions():
    assert resolve_precision("fp32", "cpu", "AMX-BF16") == ("fp32", "fp32")
    assert resolve_precision("bf16", "cpu", None) == (
        "fp32", "fp32 (bf16 asked, but this CPU has neither AMX-BF16 nor AVX512-BF16)")
    assert resolve_precision("bf16", "cpu", "AVX512-BF16")[0] == "bf16"
    assert resolve_precision("bf16", "cuda", None) == ("bf16", "bf16 compute, fp32 master weights and optimizer (CUDA)")
    with pytest.raises(ValueError, match="fp32, bf16"):
        resolve_precision("fp16", "cuda", None)


def test_mfu_golden():
    # 6 x 1e8 params x 5e4 tokens / 2 s = 1.5e13 FLOP/s of A100's 312e12
    assert mfu(100_000_000, 50_000, 2.0, "NVIDIA A100-SXM4-80GB") == pytest.approx(1.5e13 / 312e12)
    assert mfu(100_000_000, 50_000, 2.0, "Some Other GPU") is None


def test_role_prefixes_keep_a_metric_that_has_its_own_namespace():
    assert prefixed("learner", {"loss": 1.0, "perf/mfu": 0.4}) == {"learner/loss": 1.0, "perf/mfu": 0.4}
