"""A user-defined policy loss registered from the user's own file.

The config's ``plugins:`` entry imports this file before validating the rest, so ``algo.loss.name:
clipped_reinforce`` and its ``params`` are checked against the signature below at load time.
"""

from typing import Annotated

import torch
from annotated_types import Gt

from rlft.algorithms import POLICY_LOSSES, LossOutput, PolicyLossInputs, masked_mean


@POLICY_LOSSES.register("clipped_reinforce")
def clipped_reinforce(
    inputs: PolicyLossInputs, *, max_abs_advantage: Annotated[float, Gt(0)] = 2.0
) -> LossOutput:
    """REINFORCE with advantages clipped to [-max_abs_advantage, max_abs_advantage]."""
    adv = inputs.advantages.clamp(-max_abs_advantage, max_abs_advantage)  # [B, T]
    surrogate = torch.exp(inputs.logprobs - inputs.logprobs.detach())  # value 1, gradient d log pi
    clipped = (adv != inputs.advantages).to(adv.dtype)
    return LossOutput(
        -adv * surrogate * inputs.mask, {"adv_clip_fraction": masked_mean(clipped, inputs.mask)}
    )
