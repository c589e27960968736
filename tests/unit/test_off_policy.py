"""Per-sample policy versions (TrainSample -> collate) and the learner's off-policy metric sums
(``rlft.training.staleness_sums``). Golden values are worked out by hand."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from rlft.training import staleness_sums
from rlft.types import Rollout, TrainBatch, TrainSample, collate

F64 = torch.float64


def _rollout(version: int) -> Rollout:
    return Rollout("p", 0, [1, 2], [3, 4], [-0.5, -1.5], "stop", version)


# ---------------------------------------------------------------------------------------------------
# The version travels with the sample
# ---------------------------------------------------------------------------------------------------


def test_from_rollout_keeps_the_policy_version_and_replace_keeps_it():
    s = TrainSample.from_rollout(_rollout(7), 0.5)
    assert s.policy_version == 7
    assert s.advantages == [0.5, 0.5] and s.rollout_logprobs == [-0.5, -1.5]
    assert dataclasses.replace(s, ref_logprobs=[0.0, 0.0]).policy_version == 7
    assert TrainSample([1], [2], [1.0]).policy_version is None  # SFT examples have none


def test_ppo_advantages_keep_the_policy_version():
    from rlft.ppo_step import build_advantages

    samples = [TrainSample.from_rollout(_rollout(4), 0.0)]
    out, _ = build_advantages(samples, [1.0], [[0.0, 0.0]], None, kl_coef=0.0, whiten=False)
    assert out[0].policy_version == 4


def test_shard_keeps_the_policy_versions():
    batch = TrainBatch([TrainSample.from_rollout(_rollout(v), 0.0) for v in (5, 4, 3)])
    assert [s.policy_version for s in batch.shard(0, 2).samples] == [5]
    assert [s.policy_version for s in batch.shard(1, 2).samples] == [4, 3]


def test_collate_policy_versions_golden():
    a = TrainSample([5, 6], [7], [1.0], policy_version=3)
    b = TrainSample([5], [8, 9], [2.0, 2.0], policy_version=1)
    c = collate([a, b])
    assert c.policy_versions.dtype == torch.long
    assert c.policy_versions.tolist() == [3, 1]  # one per sequence, in batch order
    assert collate([b, a]).policy_versions.tolist() == [1, 3]
    # one sample without a version (e.g. an SFT example): no versions for the batch
    assert collate([a, TrainSample([5], [8], [1.0])]).policy_versions is None
    assert collate([TrainSample([5], [8], [1.0])]).policy_versions is None


# ---------------------------------------------------------------------------------------------------
# staleness_sums
# ---------------------------------------------------------------------------------------------------

# Three sequences at learner version 5: versions 5 (lag 0), 3 (lag 2), 5 (lag 0, no counted token).
OLD = [[-1.0, -2.0, -0.5], [-1.0, -1.0, -1.0], [-3.0, -3.0, -3.0]]
ROLLOUT = [[-1.1, -1.8, -9.0], [-1.5, -2.0, -1.0], [0.0, 0.0, 0.0]]
MASK = [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
VERSIONS = [5, 3, 5]


def test_staleness_sums_golden():
    s = staleness_sums(torch.tensor(OLD, dtype=F64), torch.tensor(ROLLOUT, dtype=F64),
                       torch.tensor(MASK, dtype=F64), torch.tensor(VERSIONS), version=5)
    # |old - rollout| on counted tokens: row 0: 0.1, 0.2 (8.5 is padding); row 1: 0.5, 1.0, 0.0; row 2: none
    assert_close(s["mismatch_sum"], torch.tensor(0.1 + 0.2 + 0.5 + 1.0 + 0.0, dtype=F64))
    assert_close(s["mismatch_max"], torch.tensor(1.0, dtype=F64))
    assert s["mismatch_tokens"].item() == 5
    # lag 0: rows 0 and 2 (version 5); row 2 has no counted token
    assert_close(s["mismatch_lag0_sum"], torch.tensor(0.1 + 0.2, dtype=F64))
    assert_close(s["mismatch_lag0_max"], torch.tensor(0.2, dtype=F64))
    assert s["mismatch_lag0_tokens"].item() == 2
    # token-weighted lag: 2 tokens x lag 0 + 3 tokens x lag 2; the max ignores the empty row
    assert s["version_lag_sum"].item() == 2 * 0 + 3 * 2
    assert s["version_lag_tokens"].item() == 5
    assert s["version_lag_max"].item() == 2.0


def test_staleness_sums_without_lag0_rows_or_versions():
    old, ro, mask = (torch.tensor(x, dtype=F64) for x in (OLD, ROLLOUT, MASK))
    s = staleness_sums(old, ro, mask, torch.tensor(VERSIONS), version=6)  # every row is stale now
    assert s["mismatch_lag0_tokens"].item() == 0 and s["mismatch_lag0_sum"].item() == 0.0
    assert s["version_lag_sum"].item() == 2 * 1 + 3 * 3 and s["version_lag_max"].item() == 3.0
    # without versions: only the all-sample mismatch; without rollout log-probs: only the lag
    assert set(staleness_sums(old, ro, mask, None, version=5)) == {"mismatch_sum", "mismatch_max", "mismatch_tokens"}
    assert set(staleness_sums(old, None, mask, torch.tensor(VERSIONS), version=5)) == {
        "version_lag_sum", "version_lag_tokens", "version_lag_max"
    }
    assert staleness_sums(old, None, mask, None, version=5) == {}
    # no counted token at all: the max is -inf, so a max-reduce across ranks ignores it
    empty = staleness_sums(old, ro, torch.zeros_like(mask), torch.tensor(VERSIONS), version=5)
    assert empty["version_lag_max"].item() == -math.inf and empty["version_lag_tokens"].item() == 0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), cut=st.integers(1, 5), version=st.integers(0, 3))
def test_staleness_sums_add_up_over_any_split(seed, cut, version):
    """Sums add and maxima max over micro-batches / ranks: any split gives the batch's values."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(6, 4, generator=g, dtype=F64)
    ro = old + 0.3 * torch.randn(6, 4, generator=g, dtype=F64)
    mask = (torch.rand(6, 4, generator=g) > 0.3).to(F64)
    versions = torch.randint(0, 4, (6,), generator=g)
    full = staleness_sums(old, ro, mask, versions, version)
    a = staleness_sums(old[:cut], ro[:cut], mask[:cut], versions[:cut], version)
    b = staleness_sums(old[cut:], ro[cut:], mask[cut:], versions[cut:], version)
    for key, value in full.items():
        merged = torch.maximum(a[key], b[key]) if key.endswith("_max") else a[key] + b[key]
        assert_close(merged.to(F64), value.to(F64), msg=key)
    # the lag-0 part is the all-sample measure restricted to lag-0 rows
    lag0 = versions == version
    assert_close(full["mismatch_lag0_sum"], ((old - ro).abs() * mask)[lag0].sum())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_staleness_sums_with_half_and_single_precision(dtype):
    s = staleness_sums(torch.tensor(OLD, dtype=dtype), torch.tensor(ROLLOUT, dtype=dtype),
                       torch.tensor(MASK, dtype=dtype), torch.tensor(VERSIONS), version=5)
    assert s["version_lag_sum"].item() == 6.0 and s["mismatch_lag0_tokens"].item() == 2
