"""Unit tests for the per-token policy losses (rlft/algorithms/policy_losses.py).

Inputs are built from chosen importance ratios: ``logprobs = old_logprobs + log(ratio)``. Expected
values are worked out by hand in the test (explicit arithmetic on literal numbers), never by calling
the function under test or a re-implementation of it.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from rlft.algorithms import (
    POLICY_LOSSES,
    LossOutput,
    PolicyLossInputs,
    RegistryError,
    cispo,
    compute_policy_loss,
    decoupled_ppo,
    gspo,
    masked_mean,
    ppo_clip,
    reinforce,
    sequence_log_ratio,
    topr,
    truncated_importance_weights,
)

F64 = torch.float64
LOSS_NAMES = ["cispo", "decoupled_ppo", "gspo", "ppo_clip", "reinforce", "topr"]


def make_inputs(
    ratios,
    advantages,
    mask,
    *,
    old=None,
    rollout=None,
    dtype=F64,
) -> PolicyLossInputs:
    """Inputs whose ratio exp(logprobs - old_logprobs) is ``ratios`` ([B, T] nested lists)."""
    log_r = torch.tensor(ratios, dtype=F64).log()
    old_t = torch.tensor(old, dtype=F64) if old is not None else torch.full_like(log_r, -1.0)
    logprobs = (old_t + log_r).to(dtype).requires_grad_(True)
    return PolicyLossInputs(
        logprobs=logprobs,
        old_logprobs=old_t.to(dtype),
        advantages=torch.tensor(advantages, dtype=dtype),
        mask=torch.tensor(mask),
        rollout_logprobs=None if rollout is None else torch.tensor(rollout, dtype=dtype),
    )


def grad_of(out: LossOutput, x: PolicyLossInputs) -> torch.Tensor:
    (g,) = torch.autograd.grad(out.per_token.sum(), x.logprobs)
    return g


def t(values, dtype=F64):
    return torch.tensor(values, dtype=dtype)


# ---------------------------------------------------------------------------------------------------
# Registry coverage
# ---------------------------------------------------------------------------------------------------


def test_registry_holds_exactly_the_documented_losses():
    assert POLICY_LOSSES.names() == LOSS_NAMES
    assert POLICY_LOSSES.get("ppo_clip") is ppo_clip
    assert POLICY_LOSSES.get("gspo") is gspo
    assert POLICY_LOSSES.get("cispo") is cispo
    assert POLICY_LOSSES.get("topr") is topr
    assert POLICY_LOSSES.get("reinforce") is reinforce
    assert POLICY_LOSSES.get("decoupled_ppo") is decoupled_ppo


def test_unknown_loss_name_raises():
    x = make_inputs([[1.0]], [[1.0]], [[1]])
    with pytest.raises(RegistryError):
        compute_policy_loss("ppo_clipp", x)


def test_loss_params_are_validated_against_signature():
    assert POLICY_LOSSES.validate_params("ppo_clip", {"clip_high": "0.28"}) == {"clip_high": 0.28}
    with pytest.raises(ValueError):
        POLICY_LOSSES.validate_params("ppo_clip", {"dual_clip": 1.0})  # must be > 1
    with pytest.raises(ValueError):
        POLICY_LOSSES.validate_params("ppo_clip", {"clip_low": 0.0})
    with pytest.raises(ValueError):
        POLICY_LOSSES.validate_params("reinforce", {"clip_low": 0.2})


# ---------------------------------------------------------------------------------------------------
# PPO clip
# ---------------------------------------------------------------------------------------------------

# Five valid tokens and one masked token (ratio 3, which must not count anywhere).
PPO_RATIOS = [[1.5, 0.5, 1.1, 0.5, 1.5, 3.0]]
PPO_ADV = [[1.0, -1.0, 2.0, 1.0, -2.0, 1.0]]
PPO_MASK = [[1, 1, 1, 1, 1, 0]]
PPO_OLD = [[-1.0, -2.0, -0.5, -1.5, -1.0, -3.0]]


def test_ppo_clip_golden_symmetric():
    x = make_inputs(PPO_RATIOS, PPO_ADV, PPO_MASK, old=PPO_OLD)
    out = ppo_clip(x)
    # l = max(-A r, -A clip(r, 0.8, 1.2))
    expected = t(
        [
            [
                max(-1.0 * 1.5, -1.0 * 1.2),  # -1.2   clipped (A>0, r>1.2)
                max(1.0 * 0.5, 1.0 * 0.8),  # 0.8    clipped (A<0, r<0.8)
                max(-2.0 * 1.1, -2.0 * 1.1),  # -2.2   inside
                max(-1.0 * 0.5, -1.0 * 0.8),  # -0.5   r<0.8 but A>0: unclipped is pessimistic
                max(2.0 * 1.5, 2.0 * 1.2),  # 3.0    r>1.2 but A<0: unclipped is pessimistic
                0.0,  # masked
            ]
        ]
    )
    assert_close(out.per_token, expected)
    assert_close(out.per_token, t([[-1.2, 0.8, -2.2, -0.5, 3.0, 0.0]]))
    # gradient: 0 where clipped, d(-A r)/d logprob = -A r elsewhere, 0 on the masked token
    assert_close(grad_of(out, x), t([[0.0, 0.0, -2.0 * 1.1, -1.0 * 0.5, 2.0 * 1.5, 0.0]]))
    assert_close(out.metrics["clip_fraction"], t(2 / 5))
    assert_close(out.metrics["ratio_mean"], t((1.5 + 0.5 + 1.1 + 0.5 + 1.5) / 5))
    log = math.log
    approx_kl = 0.5 * (log(1.5) ** 2 + log(0.5) ** 2 + log(1.1) ** 2 + log(0.5) ** 2 + log(1.5) ** 2) / 5
    assert_close(out.metrics["approx_kl"], t(approx_kl))
    assert "dual_clip_fraction" not in out.metrics


def test_ppo_clip_golden_asymmetric_clip_higher():
    x = make_inputs(PPO_RATIOS, PPO_ADV, PPO_MASK, old=PPO_OLD)
    out = ppo_clip(x, clip_low=0.2, clip_high=0.28)
    # bounds [0.8, 1.28]
    expected = t([[-1.28, 0.8, -2.2, -0.5, max(2.0 * 1.5, 2.0 * 1.28), 0.0]])
    assert_close(out.per_token, expected)
    assert_close(grad_of(out, x), t([[0.0, 0.0, -2.2, -0.5, 3.0, 0.0]]))


def test_ppo_clip_golden_asymmetric_clip_lower():
    x = make_inputs(PPO_RATIOS, PPO_ADV, PPO_MASK, old=PPO_OLD)
    out = ppo_clip(x, clip_low=0.4, clip_high=0.6)
    # bounds [0.6, 1.6]: tokens 0 and 4 are now inside, token 1 (A<0, r=0.5<0.6) is clipped to 0.6
    expected = t([[-1.5, 1.0 * 0.6, -2.2, max(-0.5, -0.6), 2.0 * 1.5, 0.0]])
    assert_close(out.per_token, expected)
    assert_close(grad_of(out, x), t([[-1.5, 0.0, -2.2, -0.5, 3.0, 0.0]]))
    assert_close(out.metrics["clip_fraction"], t(1 / 5))


def test_ppo_clip_golden_dual_clip():
    ratios = [[5.0, 2.0, 5.0, 0.5, 7.0]]
    adv = [[-1.0, -1.0, 1.0, -1.0, -1.0]]
    mask = [[1, 1, 1, 1, 0]]
    x = make_inputs(ratios, adv, mask)
    out = ppo_clip(x, dual_clip=3.0)
    expected = t(
        [
            [
                min(max(1.0 * 5.0, 1.0 * 1.2), 3.0 * 1.0),  # 3.0  dual-clipped: bounded by c|A|
                min(max(1.0 * 2.0, 1.0 * 1.2), 3.0 * 1.0),  # 2.0  below the bound
                max(-1.0 * 5.0, -1.0 * 1.2),  # -1.2 A>0: dual clip does not apply
                max(1.0 * 0.5, 1.0 * 0.8),  # 0.8
                0.0,  # masked
            ]
        ]
    )
    assert_close(out.per_token, expected)
    assert_close(out.per_token, t([[3.0, 2.0, -1.2, 0.8, 0.0]]))
    assert_close(grad_of(out, x), t([[0.0, 1.0 * 2.0, 0.0, 0.0, 0.0]]))
    assert_close(out.metrics["dual_clip_fraction"], t(1 / 4))
    # without dual clip the first token is the unbounded 5.0
    assert_close(ppo_clip(x).per_token[0, 0], t(5.0))


def test_ppo_clip_log_ratio_is_clamped():
    x = make_inputs([[1.0, 1.0]], [[-1.0, 1.0]], [[1, 1]])
    x = PolicyLossInputs(
        logprobs=t([[100.0, -100.0]]).requires_grad_(True),
        old_logprobs=t([[0.0, 0.0]]),
        advantages=x.advantages,
        mask=x.mask,
    )
    out = ppo_clip(x)
    # ratio exp(+-20): token 0 (A=-1) gives exp(20), token 1 (A=+1) is pessimistic -exp(-20)
    assert_close(out.per_token, t([[math.exp(20.0), -math.exp(-20.0)]]))
    assert torch.isfinite(grad_of(out, x)).all()


# ---------------------------------------------------------------------------------------------------
# GSPO
# ---------------------------------------------------------------------------------------------------


def test_sequence_log_ratio_golden():
    lp = t([[0.1, 0.3, 100.0], [0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    old = torch.zeros(3, 3, dtype=F64)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 1, 1]])
    assert_close(sequence_log_ratio(lp, old, mask), t([(0.1 + 0.3) / 2, 0.0, (1.0 + 2.0 + 3.0) / 3]))


def test_gspo_golden():
    # Per-token log-ratios; the sequence ratio is exp(mean over valid tokens). Default bounds
    # [1 - 3e-4, 1 + 4e-4].
    log_ratios = [
        [0.0002, 0.0004, 9.0],  # mask [1,1,0]: mean 0.0003 -> s inside the bounds
        [0.002, 0.0, 0.001],  # mean 0.001  -> s = 1.0010005 > 1.0004
        [-0.002, 0.0, -0.001],  # mean -0.001 -> s = 0.9990005 < 0.9997
        [-0.002, 0.0, -0.001],  # same ratio, positive advantage
    ]
    mask = [[1, 1, 0], [1, 1, 1], [1, 1, 1], [1, 1, 1]]
    adv = [[1.0] * 3, [2.0] * 3, [-1.0] * 3, [1.0] * 3]
    ratios = [[math.exp(v) for v in row] for row in log_ratios]
    x = make_inputs(ratios, adv, mask)
    out = gspo(x)
    s0, s1, s2 = math.exp(0.0003), math.exp(0.001), math.exp(-0.001)
    expected = t(
        [
            [-1.0 * s0, -1.0 * s0, 0.0],
            [max(-2.0 * s1, -2.0 * (1 + 4e-4))] * 3,  # -2.0008 (clipped)
            [max(1.0 * s2, 1.0 * (1 - 3e-4))] * 3,  # 0.9997  (clipped)
            [max(-1.0 * s2, -1.0 * (1 - 3e-4))] * 3,  # -s2     (pessimistic side, not clipped)
        ]
    )
    assert_close(out.per_token, expected)
    assert_close(out.per_token[1], t([-2.0008] * 3))
    assert_close(out.per_token[2], t([0.9997] * 3))
    # Every token of a sequence shares the sequence ratio: d l / d logprob_t = -A * s_i unless clipped.
    expected_grad = t([[-1.0 * s0, -1.0 * s0, 0.0], [0.0] * 3, [0.0] * 3, [-1.0 * s2] * 3])
    assert_close(grad_of(out, x), expected_grad)
    assert_close(out.metrics["clip_fraction"], t(6 / 11))
    assert_close(out.metrics["ratio_mean"], t((2 * s0 + 3 * s1 + 3 * s2 + 3 * s2) / 11))


def test_gspo_custom_bounds():
    x = make_inputs([[math.exp(0.002), 1.0]], [[2.0, 2.0]], [[1, 1]])
    s = math.exp(0.001)
    out = gspo(x, clip_low=0.01, clip_high=0.01)  # bounds [0.99, 1.01]: s is inside
    assert_close(out.per_token, t([[-2.0 * s, -2.0 * s]]))
    assert_close(grad_of(out, x), t([[-2.0 * s, -2.0 * s]]))


def test_gspo_token_ratio_differs_from_ppo_token_ratio():
    # Per-token ratios (2, 0.5) average to a sequence log-ratio of 0: GSPO sees ratio 1 on both
    # tokens, PPO sees 2 and 0.5.
    x = make_inputs([[2.0, 0.5]], [[1.0, 1.0]], [[1, 1]])
    assert_close(gspo(x, clip_low=0.2, clip_high=0.2).per_token, t([[-1.0, -1.0]]))
    assert_close(ppo_clip(x).per_token, t([[-1.2, -0.5]]))


# ---------------------------------------------------------------------------------------------------
# CISPO
# ---------------------------------------------------------------------------------------------------

CISPO_RATIOS = [[1.5, 0.5, 1.1, 0.5, 3.0]]
CISPO_ADV = [[1.0, -1.0, 2.0, 1.0, 1.0]]
CISPO_MASK = [[1, 1, 1, 1, 0]]


def test_cispo_golden_default():
    x = make_inputs(CISPO_RATIOS, CISPO_ADV, CISPO_MASK)
    out = cispo(x)
    # weight = sg(min(r, 1.28)) = [1.28, 0.5, 1.1, 0.5]; value -w * A
    expected = t([[-1.28 * 1.0, -0.5 * -1.0, -1.1 * 2.0, -0.5 * 1.0, 0.0]])
    assert_close(out.per_token, expected)
    # gradient = -clip(ratio) * A: also non-zero where the weight is clipped (unlike PPO)
    assert_close(grad_of(out, x), expected)
    assert_close(out.metrics["clip_fraction"], t(1 / 4))
    assert_close(out.metrics["ratio_mean"], t((1.5 + 0.5 + 1.1 + 0.5) / 4))


def test_cispo_golden_clip_low():
    x = make_inputs(CISPO_RATIOS, CISPO_ADV, CISPO_MASK)
    out = cispo(x, clip_high=0.28, clip_low=0.2)
    # weight = clip(r, 0.8, 1.28) = [1.28, 0.8, 1.1, 0.8]
    expected = t([[-1.28 * 1.0, -0.8 * -1.0, -1.1 * 2.0, -0.8 * 1.0, 0.0]])
    assert_close(out.per_token, expected)
    assert_close(grad_of(out, x), expected)
    assert_close(out.metrics["clip_fraction"], t(3 / 4))


def test_cispo_custom_clip_high():
    x = make_inputs(CISPO_RATIOS, CISPO_ADV, CISPO_MASK)
    out = cispo(x, clip_high=1.0)  # weight cap 2.0: nothing is clipped
    expected = t([[-1.5, 0.5, -2.2, -0.5, 0.0]])
    assert_close(out.per_token, expected)
    assert_close(out.metrics["clip_fraction"], t(0.0))


# ---------------------------------------------------------------------------------------------------
# TOPR
# ---------------------------------------------------------------------------------------------------


def _topr_inputs(with_rollout: bool) -> PolicyLossInputs:
    # Per-token log(pi / mu) per row; mu is rollout_logprobs (or old_logprobs when rollout is None).
    lp_minus_mu = [
        [-1.0, -2.0],  # A=+1: weight 1 whatever the ratio
        [math.log(0.5), 0.0],  # A=-1: sequence ratio 0.5
        [0.3, 0.2],  # A=-2: sequence ratio exp(0.5) > 1 -> weight 1
        [math.log(0.25), 5.0],  # A=-1, second token masked: sequence ratio 0.25
    ]
    mu = t([[-1.0, -2.0], [-0.5, -0.7], [-1.5, -0.2], [-3.0, -1.0]])
    logprobs = (mu + t(lp_minus_mu)).requires_grad_(True)
    adv = t([[1.0, 1.0], [-1.0, -1.0], [-2.0, -2.0], [-1.0, -1.0]])
    mask = torch.tensor([[1, 1], [1, 1], [1, 1], [1, 0]])
    if with_rollout:
        # old_logprobs equal to logprobs: a loss that wrongly used them would see ratio 1 everywhere
        return PolicyLossInputs(logprobs, logprobs.detach().clone(), adv, mask, rollout_logprobs=mu)
    return PolicyLossInputs(logprobs, mu, adv, mask)


@pytest.mark.parametrize("with_rollout", [True, False])
def test_topr_golden(with_rollout):
    x = _topr_inputs(with_rollout)
    out = topr(x)
    # loss = -w * A; w = 1 for A >= 0, w = min(pi(y)/mu(y), 1) for A < 0
    expected = t([[-1.0, -1.0], [0.5 * 1.0, 0.5 * 1.0], [1.0 * 2.0, 1.0 * 2.0], [0.25 * 1.0, 0.0]])
    assert_close(out.per_token, expected)
    # gradient = -w * A (the weight is a stop-gradient); negative samples get the tapered weight
    assert_close(grad_of(out, x), expected)
    assert_close(out.metrics["negative_fraction"], t(5 / 7))
    assert_close(out.metrics["negative_weight_mean"], t((0.5 * 2 + 1.0 * 2 + 0.25 * 1) / 5))


def test_topr_prefers_rollout_logprobs_over_old():
    x = _topr_inputs(with_rollout=True)
    x_old_only = PolicyLossInputs(x.logprobs, x.old_logprobs, x.advantages, x.mask)
    # with old_logprobs == logprobs every weight is 1: loss = -A
    assert_close(topr(x_old_only).per_token, t([[-1.0, -1.0], [1.0, 1.0], [2.0, 2.0], [1.0, 0.0]]))
    assert not torch.equal(topr(x).per_token, topr(x_old_only).per_token)


# ---------------------------------------------------------------------------------------------------
# Decoupled PPO (proximal policy = old_logprobs, behaviour policy = rollout_logprobs)
# ---------------------------------------------------------------------------------------------------

# ratio r = exp(logprobs - old) and behaviour weight w = exp(old - rollout), chosen per token.
DEC_RATIOS = [[1.5, 1.1, 1.0], [0.5, 1.5, 2.0]]
DEC_WEIGHTS = [[2.0, 0.5, 8.0], [1.0, 3.0, 9.0]]  # 8 > cap 5: masked out; 9 sits on a padding token
DEC_ADV = [[1.0, 1.0, 1.0], [-2.0, -2.0, -2.0]]
DEC_MASK = [[1, 1, 1], [1, 1, 0]]
DEC_OLD = [[-1.0, -2.0, -0.5], [-1.5, -1.0, -3.0]]


def _decoupled_inputs(dtype=F64) -> PolicyLossInputs:
    rollout = [[o - math.log(w) for o, w in zip(orow, wrow)] for orow, wrow in zip(DEC_OLD, DEC_WEIGHTS)]
    return make_inputs(DEC_RATIOS, DEC_ADV, DEC_MASK, old=DEC_OLD, rollout=rollout, dtype=dtype)


def test_decoupled_ppo_golden_default_cap():
    x = _decoupled_inputs()
    out = decoupled_ppo(x)  # clip [0.8, 1.2], behaviour_cap 5
    # l = w * max(-A r, -A clip(r, 0.8, 1.2)), w = 0 where w > 5
    expected = t(
        [
            [
                2.0 * max(-1.0 * 1.5, -1.0 * 1.2),  # -2.4  clipped (A>0, r>1.2), w = 2
                0.5 * max(-1.0 * 1.1, -1.0 * 1.1),  # -0.55 inside, w = 0.5
                0.0 * max(-1.0 * 1.0, -1.0 * 1.0),  # 0     w = 8 > 5: masked out (TIS would keep 5 * -1)
            ],
            [
                1.0 * max(2.0 * 0.5, 2.0 * 0.8),  # 1.6   clipped (A<0, r<0.8), w = 1
                3.0 * max(2.0 * 1.5, 2.0 * 1.2),  # 9.0   r>1.2 but A<0: unclipped is pessimistic, w = 3
                0.0,  # padding
            ],
        ]
    )
    assert_close(out.per_token, expected)
    assert_close(out.per_token, t([[-2.4, -0.55, 0.0], [1.6, 9.0, 0.0]]))
    # gradient: w * d(-A r)/d logprob = -w A r where not clipped, 0 where clipped / masked out / padding
    assert_close(grad_of(out, x), t([[0.0, 0.5 * -1.0 * 1.1, 0.0], [0.0, 3.0 * 2.0 * 1.5, 0.0]]))
    # metrics over the 5 valid tokens
    assert_close(out.metrics["clip_fraction"], t(2 / 5))
    assert_close(out.metrics["ratio_mean"], t((1.5 + 1.1 + 1.0 + 0.5 + 1.5) / 5))
    assert_close(out.metrics["behaviour_weight_mean"], t((2.0 + 0.5 + 0.0 + 1.0 + 3.0) / 5))  # as applied
    assert_close(out.metrics["behaviour_masked_fraction"], t(1 / 5))  # the padding token's w = 9 does not count
    log = math.log
    approx_kl = 0.5 * (log(1.5) ** 2 + log(1.1) ** 2 + 0.0 + log(0.5) ** 2 + log(1.5) ** 2) / 5
    assert_close(out.metrics["approx_kl"], t(approx_kl))
    assert set(out.metrics) == {
        "clip_fraction", "ratio_mean", "behaviour_weight_mean", "behaviour_masked_fraction", "approx_kl"
    }


def test_decoupled_ppo_golden_without_cap_and_custom_clip():
    x = _decoupled_inputs()
    out = decoupled_ppo(x, behaviour_cap=None)
    # the w = 8 token now counts: 8 * -1 * 1.0 = -8
    assert_close(out.per_token, t([[-2.4, -0.55, -8.0], [1.6, 9.0, 0.0]]))
    assert_close(grad_of(out, x), t([[0.0, -0.55, -8.0 * 1.0 * 1.0], [0.0, 9.0, 0.0]]))
    assert_close(out.metrics["behaviour_weight_mean"], t((2.0 + 0.5 + 8.0 + 1.0 + 3.0) / 5))
    assert_close(out.metrics["behaviour_masked_fraction"], t(0.0))
    # a cap above every weight is the same as no cap
    assert_close(decoupled_ppo(x, behaviour_cap=8.5).per_token, out.per_token)
    # clip [0.4, 1.6]: token (0, 0) (r = 1.5) and token (1, 0) (r = 0.5) are now inside
    wide = decoupled_ppo(x, clip_low=0.6, clip_high=0.6)
    assert_close(wide.per_token, t([[2.0 * -1.5, -0.55, 0.0], [1.0 * 2.0 * 0.5, 9.0, 0.0]]))
    assert_close(grad_of(wide, x), t([[2.0 * -1.5, -0.55, 0.0], [1.0 * 2.0 * 0.5, 9.0, 0.0]]))
    assert_close(wide.metrics["clip_fraction"], t(0.0))


def test_decoupled_ppo_differs_from_tis_on_stale_tokens():
    # ppo_clip with tis_cap=5 truncates the w = 8 token to 5; decoupled_ppo drops it.
    x = _decoupled_inputs()
    tis = compute_policy_loss("ppo_clip", x, tis_cap=5.0).per_token
    assert_close(tis[0, 2], t(5.0 * -1.0))
    assert_close(decoupled_ppo(x).per_token[0, 2], t(0.0))
    # on the other tokens (w <= 5) both apply the same weight
    keep = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    assert_close(tis[keep], decoupled_ppo(x).per_token[keep])


def test_decoupled_ppo_needs_rollout_logprobs():
    x = make_inputs([[1.0, 1.0]], [[1.0, 1.0]], [[1, 1]])
    with pytest.raises(ValueError, match="decoupled_ppo needs rollout_logprobs"):
        decoupled_ppo(x)
    with pytest.raises(ValueError, match="rollout_logprobs"):
        compute_policy_loss("decoupled_ppo", x)


def test_decoupled_ppo_params_are_validated_against_signature():
    assert POLICY_LOSSES.params("decoupled_ppo").keys() == {"clip_low", "clip_high", "behaviour_cap"}
    assert POLICY_LOSSES.validate_params("decoupled_ppo", {"behaviour_cap": "3"}) == {"behaviour_cap": 3.0}
    assert POLICY_LOSSES.validate_params("decoupled_ppo", {"behaviour_cap": None}) == {"behaviour_cap": None}
    with pytest.raises(ValueError):
        POLICY_LOSSES.validate_params("decoupled_ppo", {"behaviour_cap": 1.0})  # must be > 1
    with pytest.raises(ValueError):
        POLICY_LOSSES.validate_params("decoupled_ppo", {"clip_low": 0.0})
    with pytest.raises(ValueError, match="did you mean 'behaviour_cap'"):
        POLICY_LOSSES.validate_params("decoupled_ppo", {"behavior_cap": 2.0})
    assert POLICY_LOSSES.meta("decoupled_ppo") == {"needs_rollout_logprobs": True}


def test_decoupled_ppo_params_are_checked_at_config_load():
    from rlft.config import AlgoConfig, PolicyLossChoice

    algo = AlgoConfig(loss={"name": "decoupled_ppo", "params": {"behaviour_cap": 2.0, "clip_high": "0.28"}})
    assert algo.loss.params == {"behaviour_cap": 2.0, "clip_high": 0.28}
    with pytest.raises(ValueError, match="behaviour_cap"):
        PolicyLossChoice(name="decoupled_ppo", params={"behavior_cap": 2.0})


dec_token = st.tuples(
    st.floats(-1.0, 1.0, allow_nan=False),  # log r = logprobs - old
    st.floats(-3.0, 3.0, allow_nan=False),  # advantage
    st.floats(-3.0, 0.0, allow_nan=False),  # old_logprobs
    st.floats(-2.5, 2.5, allow_nan=False),  # log w = old - rollout
    st.booleans(),  # mask
)


@settings(max_examples=50, deadline=None)
@given(
    tokens=st.lists(dec_token, min_size=1, max_size=12),
    clip_low=st.floats(0.05, 0.5),
    clip_high=st.floats(0.05, 0.5),
)
def test_decoupled_ppo_is_ppo_clip_when_behaviour_is_proximal(tokens, clip_low, clip_high):
    old = t([[c[2] for c in tokens]])
    lp = (old + t([[c[0] for c in tokens]])).requires_grad_(True)
    adv = t([[c[1] for c in tokens]])
    mask = torch.tensor([[c[4] for c in tokens]])
    x = PolicyLossInputs(lp, old, adv, mask, rollout_logprobs=old.clone())  # w = exp(0) = 1
    dec = decoupled_ppo(x, clip_low=clip_low, clip_high=clip_high)
    ppo = ppo_clip(x, clip_low=clip_low, clip_high=clip_high)
    assert torch.equal(dec.per_token, ppo.per_token)  # exactly, not approximately
    assert torch.equal(grad_of(dec, x), grad_of(ppo, x))
    for key in ("clip_fraction", "ratio_mean", "approx_kl"):
        assert torch.equal(dec.metrics[key], ppo.metrics[key]), key
    assert dec.metrics["behaviour_masked_fraction"].item() == 0.0
    assert dec.metrics["behaviour_weight_mean"].item() == (1.0 if mask.any() else 0.0)


@settings(max_examples=50, deadline=None)
@given(tokens=st.lists(dec_token, min_size=1, max_size=12), cap=st.sampled_from([None, 2.0, 5.0]))
def test_decoupled_ppo_gradient_is_ppo_clip_gradient_scaled_by_behaviour_weight(tokens, cap):
    old = t([[c[2] for c in tokens]])
    log_w = t([[c[3] for c in tokens]])
    lp = (old + t([[c[0] for c in tokens]])).requires_grad_(True)
    adv = t([[c[1] for c in tokens]])
    mask = torch.tensor([[c[4] for c in tokens]])
    x = PolicyLossInputs(lp, old, adv, mask, rollout_logprobs=old - log_w)
    w = log_w.exp()
    if cap is not None:
        w = torch.where(w > cap, 0.0, w)  # masked out, not truncated
    dec = decoupled_ppo(x, behaviour_cap=cap)
    ppo = ppo_clip(x)
    assert_close(dec.per_token, w * ppo.per_token)
    assert_close(grad_of(dec, x), w * grad_of(ppo, x))


# ---------------------------------------------------------------------------------------------------
# REINFORCE
# ---------------------------------------------------------------------------------------------------


def test_reinforce_golden_value_and_gradient():
    # The ratio does not matter for on-policy REINFORCE.
    x = make_inputs([[2.0, 0.3, 1.0], [1.0, 7.0, 0.1]], [[0.5, 0.5, 0.5], [-1.5, -1.5, 3.0]], [[1, 1, 0], [1, 1, 1]])
    out = reinforce(x)
    expected = t([[-0.5, -0.5, 0.0], [1.5, 1.5, -3.0]])  # -A * mask
    assert_close(out.per_token, expected)
    assert_close(grad_of(out, x), expected)  # d loss / d logprobs = -A * mask
    assert out.metrics == {}


# ---------------------------------------------------------------------------------------------------
# Truncated importance sampling
# ---------------------------------------------------------------------------------------------------


def test_truncated_importance_weights_golden():
    old = t([[math.log(3.0), math.log(0.5), 0.0, -30.0]]).requires_grad_(True)
    rollout = torch.zeros(1, 4, dtype=F64)
    w = truncated_importance_weights(old, rollout, cap=2.0)
    # min(exp(old - rollout), 2); the log-ratio -30 is clamped to -20
    assert_close(w, t([[2.0, 0.5, 1.0, math.exp(-20.0)]]))
    assert not w.requires_grad
    w5 = truncated_importance_weights(old, rollout, cap=5.0)
    assert_close(w5, t([[3.0, 0.5, 1.0, math.exp(-20.0)]]))


@pytest.mark.parametrize("cap", [0.0, -1.0])
def test_truncated_importance_weights_reject_non_positive_cap(cap):
    with pytest.raises(ValueError):
        truncated_importance_weights(torch.zeros(1, 2), torch.zeros(1, 2), cap=cap)


def test_compute_policy_loss_with_tis_cap_golden():
    adv = t([[1.0, -2.0, 3.0, 1.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    logprobs = t([[-1.0, -2.0, -0.5, -1.0]]).requires_grad_(True)
    old = logprobs.detach().clone()  # ratio 1: the PPO loss is -A
    # old - rollout = [log 3, log 0.5, log 2.5, log 4 (masked)] -> weights min(., 2) = [2, 0.5, 2, 2]
    rollout = old - t([[math.log(3.0), math.log(0.5), math.log(2.5), math.log(4.0)]])
    x = PolicyLossInputs(logprobs, old, adv, mask, rollout_logprobs=rollout)
    out = compute_policy_loss("ppo_clip", x, tis_cap=2.0)
    expected = t([[-2.0 * 1.0, -0.5 * -2.0, -2.0 * 3.0, 0.0]])
    assert_close(out.per_token, expected)
    assert_close(grad_of(out, x), expected)  # w is a constant: d/d logprob (-w A r) = -w A at r = 1
    assert_close(out.metrics["tis_weight_mean"], t((2.0 + 0.5 + 2.0) / 3))
    assert_close(out.metrics["tis_capped_fraction"], t(2 / 3))
    # the loss's own metrics are kept
    assert {"clip_fraction", "ratio_mean", "approx_kl"} <= set(out.metrics)


def test_compute_policy_loss_tis_multiplies_any_loss_and_passes_params():
    x = make_inputs(CISPO_RATIOS, CISPO_ADV, CISPO_MASK, old=[[0.0] * 5], rollout=[[-math.log(4.0)] * 5])
    # old - rollout = log 4 everywhere -> w = min(4, 3) = 3
    out = compute_policy_loss("cispo", x, {"clip_low": 0.2}, tis_cap=3.0)
    assert_close(out.per_token, 3.0 * t([[-1.28, 0.8, -2.2, -0.8, 0.0]]))
    assert_close(grad_of(out, x), 3.0 * t([[-1.28, 0.8, -2.2, -0.8, 0.0]]))
    # without tis_cap compute_policy_loss is the plain registered loss
    assert_close(compute_policy_loss("cispo", x, {"clip_low": 0.2}).per_token, t([[-1.28, 0.8, -2.2, -0.8, 0.0]]))


def test_compute_policy_loss_tis_cap_without_rollout_logprobs_raises():
    x = make_inputs([[1.0, 1.0]], [[1.0, 1.0]], [[1, 1]])
    with pytest.raises(ValueError):
        compute_policy_loss("ppo_clip", x, tis_cap=2.0)
    compute_policy_loss("ppo_clip", x)  # fine without the cap


def test_compute_policy_loss_docstring_example():
    x = PolicyLossInputs(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2))
    assert_close(compute_policy_loss("ppo_clip", x).per_token, torch.tensor([[-1.0, -1.0]]))


def test_masked_mean_golden():
    assert_close(masked_mean(t([1.0, 2.0, 30.0]), torch.tensor([1, 1, 0])), t(1.5))
    assert_close(masked_mean(t([1.0, 2.0]), torch.tensor([0, 0])), t(0.0))


# ---------------------------------------------------------------------------------------------------
# Properties (hypothesis)
# ---------------------------------------------------------------------------------------------------

token = st.tuples(
    st.floats(-1.0, 1.0, allow_nan=False),  # log-ratio
    st.floats(-3.0, 3.0, allow_nan=False).filter(lambda a: abs(a) >= 0.01),  # advantage, non-zero
)


@settings(max_examples=50, deadline=None)
@given(
    tokens=st.lists(token, min_size=1, max_size=12),
    clip_low=st.floats(0.05, 0.5),
    clip_high=st.floats(0.05, 0.5),
)
def test_ppo_clip_gradient_zero_exactly_where_clipped_in_advantage_direction(tokens, clip_low, clip_high):
    # Stay away from the clip boundaries, where the gradient is a matter of tie-breaking.
    for lr, _ in tokens:
        r = math.exp(lr)
        assume(abs(r - (1 + clip_high)) > 1e-6 and abs(r - (1 - clip_low)) > 1e-6)
    log_r = t([[lr for lr, _ in tokens]])
    adv = t([[a for _, a in tokens]])
    old = torch.full_like(log_r, -0.5)
    x = PolicyLossInputs((old + log_r).requires_grad_(True), old, adv, torch.ones_like(adv))
    out = ppo_clip(x, clip_low=clip_low, clip_high=clip_high)
    grad = grad_of(out, x)[0]
    for i, (lr, a) in enumerate(tokens):
        r = math.exp(lr)
        clipped = (a > 0 and r > 1 + clip_high) or (a < 0 and r < 1 - clip_low)
        if clipped:
            assert grad[i].item() == 0.0, (r, a)
        else:
            assert grad[i].item() != 0.0, (r, a)
            assert math.isclose(grad[i].item(), -a * r, rel_tol=1e-9), (r, a, grad[i].item())


@settings(max_examples=50, deadline=None)
@given(
    rows=st.lists(
        st.lists(
            st.tuples(st.floats(-5.0, 0.0), st.floats(-3.0, 3.0, allow_nan=False), st.booleans()),
            min_size=3,
            max_size=3,
        ),
        min_size=1,
        max_size=3,
    ),
    name=st.sampled_from(LOSS_NAMES),
)
def test_every_loss_is_minus_advantage_at_ratio_one(rows, name):
    assert name in POLICY_LOSSES
    lp = t([[c[0] for c in r] for r in rows])
    adv = t([[c[1] for c in r] for r in rows])
    mask = torch.tensor([[c[2] for c in r] for r in rows])
    x = PolicyLossInputs(
        lp.clone().requires_grad_(True), lp.clone(), adv, mask, rollout_logprobs=lp.clone()
    )
    expected = torch.where(mask, -adv, torch.zeros_like(adv))
    out = POLICY_LOSSES.get(name)(x)
    assert_close(out.per_token, expected)
    assert (out.per_token[~mask] == 0).all()
    # With rollout == old the TIS weight is 1 and changes nothing.
    assert_close(compute_policy_loss(name, x, tis_cap=2.0).per_token, expected)


def test_every_registered_loss_is_minus_advantage_at_ratio_one_all_names():
    # Deterministic companion of the property above that iterates over the live registry.
    lp = t([[-0.3, -1.2, -2.0], [-0.1, -0.5, -4.0]])
    adv = t([[1.5, 1.5, 1.5], [-0.5, -0.5, -0.5]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    for name in POLICY_LOSSES:
        x = PolicyLossInputs(lp.clone().requires_grad_(True), lp.clone(), adv, mask, rollout_logprobs=lp.clone())
        out = POLICY_LOSSES.get(name)(x)
        assert_close(out.per_token, t([[-1.5, -1.5, 0.0], [0.5, 0.5, 0.5]]), msg=name)


# ---------------------------------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------------------------------


def _generic_inputs(dtype=F64, with_rollout=True) -> PolicyLossInputs:
    return make_inputs(
        [[1.5, 0.5, 1.1], [0.9, 2.0, 1.0]],
        [[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]],
        [[1, 1, 0], [1, 1, 1]],
        rollout=[[-1.2, -0.9, -1.0], [-0.8, -1.1, -1.0]] if with_rollout else None,
        dtype=dtype,
    )


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_losses_keep_dtype_and_shape(name, dtype):
    x = _generic_inputs(dtype)
    for out in (POLICY_LOSSES.get(name)(x), compute_policy_loss(name, x, tis_cap=2.0)):
        assert out.per_token.dtype == dtype
        assert out.per_token.shape == (2, 3)
        assert grad_of(out, x).dtype == dtype
        for v in out.metrics.values():
            assert v.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_truncated_importance_weights_keep_dtype(dtype):
    w = truncated_importance_weights(torch.zeros(2, 2, dtype=dtype), torch.ones(2, 2, dtype=dtype), cap=2.0)
    assert w.dtype == dtype


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_metrics_are_detached_zero_dim_tensors(name):
    x = _generic_inputs()
    assert x.logprobs.requires_grad
    params = {"dual_clip": 3.0} if name == "ppo_clip" else {}
    for out in (POLICY_LOSSES.get(name)(x, **params), compute_policy_loss(name, x, params, tis_cap=1.2)):
        assert out.per_token.requires_grad
        for key, v in out.metrics.items():
            assert isinstance(v, torch.Tensor), key
            assert v.dim() == 0, key
            assert not v.requires_grad, key
    assert {"tis_weight_mean", "tis_capped_fraction"} <= set(compute_policy_loss(name, x, tis_cap=1.2).metrics)


@pytest.mark.parametrize("field", ["old_logprobs", "advantages", "mask", "rollout_logprobs"])
def test_policy_loss_inputs_reject_mismatched_shapes(field):
    good = {
        "logprobs": torch.zeros(2, 3),
        "old_logprobs": torch.zeros(2, 3),
        "advantages": torch.zeros(2, 3),
        "mask": torch.ones(2, 3),
        "rollout_logprobs": torch.zeros(2, 3),
    }
    PolicyLossInputs(**good)
    bad = dict(good)
    bad[field] = torch.zeros(2, 4)
    with pytest.raises(ValueError):
        PolicyLossInputs(**bad)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_masked_tokens_give_zero_loss_and_zero_gradient_even_with_extreme_ratios(name):
    logprobs = t([[-1.0, 60.0], [-1.0, -80.0]]).requires_grad_(True)
    old = t([[-1.0, -1.0], [-1.0, -1.0]])
    x = PolicyLossInputs(
        logprobs, old, t([[1.0, 1.0], [-1.0, -1.0]]), torch.tensor([[1, 0], [1, 0]]), rollout_logprobs=old
    )
    out = compute_policy_loss(name, x, tis_cap=2.0)
    assert torch.isfinite(out.per_token).all()
    assert (out.per_token[:, 1] == 0).all()
    g = grad_of(out, x)
    assert torch.isfinite(g).all()
    assert (g[:, 1] == 0).all()
    # the valid tokens have ratio 1 (and the masked ones do not leak into sequence-level ratios)
    assert_close(out.per_token[:, 0], t([-1.0, 1.0]))
