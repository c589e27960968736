"""SFT objectives: the per-token loss of imitating a demonstration.

Each entry of ``SFT_LOSSES`` maps ``(logprobs [B, T], ref_logprobs [B, T] | None, **params)`` to a
per-token loss ``[B, T]``; the learner masks it to the completion tokens and takes the token mean.
Entries registered with ``needs_reference=True`` get the reference policy's log-probs of the same
tokens (the learner's frozen reference copy, ``model.path``); the others get None.

* ``nll``: ``-log p`` (maximum likelihood; plain SFT).
* ``dft``: ``-sg(p) * log p``. Dynamic Fine-Tuning (Wu et al. 2025, "On the Generalization of SFT:
  A Reinforcement Learning Perspective with Reward Rectification"): SFT's gradient is a policy
  gradient with an implicit reward ``1/p`` that explodes on unlikely tokens; weighting each token's
  NLL by its own (stop-gradient) probability removes that weight.
* ``asft``: DFT plus ``kl_coef * KL`` to the reference. Anchored SFT (Zhu et al. 2025, "Anchored
  Supervised Fine-Tuning"): DFT alone drifts, because nothing bounds how far it moves from the
  start; the KL term anchors it. Here the KL is estimated per demonstration token with the
  ``rlft.algorithms.kl`` estimators (``k3`` by default) rather than over the whole vocabulary, so
  it needs only the two models' log-probs of the trained tokens; off the policy's own samples it
  is a penalty on the log-ratio, not an unbiased KL estimate.

Golden values: a token the policy gives probability 0.5 and the reference 0.25:

>>> import math, torch
>>> lp, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
>>> [round(SFT_LOSSES.get(n)(lp, ref).item(), 4) for n in ("nll", "dft", "asft")]
[0.6931, 0.3466, 0.3562]
>>> round(asft(lp, ref, kl_coef=1.0, estimator="k1").item(), 4)   # 0.5 * ln 2 + ln 2
1.0397
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from rlft.algorithms.kl import KL_ESTIMATORS
from rlft.algorithms.registry import Registry

SFTLossFn = Callable[..., Tensor]
SFT_LOSSES: Registry[SFTLossFn] = Registry("SFT objective")


@SFT_LOSSES.register("nll")
def nll(logprobs: Tensor, ref_logprobs: Tensor | None = None) -> Tensor:
    """``-log p`` of each demonstration token. [B, T]"""
    return -logprobs


@SFT_LOSSES.register("dft")
def dft(logprobs: Tensor, ref_logprobs: Tensor | None = None) -> Tensor:
    """``-sg(p) * log p``: each token's NLL weighted by its own probability, without a gradient
    through the weight (DFT). Its gradient is ``p`` times NLL's. [B, T]"""
    return -logprobs.detach().exp() * logprobs


@SFT_LOSSES.register("asft", needs_reference=True)
def asft(logprobs: Tensor, ref_logprobs: Tensor | None = None, *, kl_coef: float = 0.05,
         estimator: str = "k3") -> Tensor:
    """DFT plus ``kl_coef`` times the per-token KL estimate ``estimator`` (``k1``, ``k2``, ``k3``)
    between the policy and the reference on the demonstration's tokens (ASFT). [B, T]"""
    if ref_logprobs is None:
        raise ValueError("the SFT objective 'asft' needs the reference policy's log-probs")
    return dft(logprobs) + kl_coef * KL_ESTIMATORS.get(estimator)(logprobs, ref_logprobs)


def needs_reference(name: str) -> bool:
    """Whether the SFT objective ``name`` reads the reference policy's log-probs.

    >>> needs_reference("nll"), needs_reference("asft")
    (False, True)
    """
    return bool(SFT_LOSSES.meta(name).get("needs_reference"))


__all__ = ["SFT_LOSSES", "asft", "dft", "needs_reference", "nll"]
