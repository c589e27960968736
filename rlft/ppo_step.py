"""The PPO parts of an RL step with a learned critic (``critic:`` in the config).

``CriticBuilder`` is the step's ``rlft.builders.BatchBuilder`` when the run has a critic::

    batch, metrics = builder.build(collected, version)    # values, reference log-probs, GAE
    metrics, trains = builder.before_update(batch)        # the critic regresses the returns, the
                                                          # KL coefficient adapts; the policy
                                                          # trains after critic.warmup_steps

The curriculum still observes the outcome advantages of ``algo.advantage`` (group-relative, computed
once by the collector): they say how informative a prompt's group was, whatever the learner's
advantages; GAE's per-token advantages depend on the critic and are not a property of the prompt.

``build_advantages`` is the pure part: token rewards (the outcome reward on the last completion
token minus beta x KL per token, ``rlft.algorithms.ppo.kl_penalized_rewards``), GAE over the critic's
values (``rlft.algorithms.gae``), whitening over the batch, and the critic's targets (returns and the
values the batch was built with) on every sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import torch

from rlft.algorithms import gae
from rlft.algorithms.ppo import adaptive_kl_coef, explained_variance, kl_penalized_rewards, masked_whiten
from rlft.batching import usable
from rlft.builders import BatchBuilder
from rlft.checkpointing import CheckpointError
from rlft.collect import Collected
from rlft.config import RunConfig
from rlft.types import TrainBatch, TrainSample


class Critic(Protocol):
    def values(self, batch: TrainBatch) -> list[list[float]]: ...

    def train_step(self, batch: TrainBatch) -> dict[str, float]: ...

    def save_checkpoint(self, path: str) -> str: ...

    def load_checkpoint(self, path: str) -> None: ...


class ReferenceScorer(Protocol):
    def reference_logprobs(self, samples: list[TrainSample]) -> list[list[float]]: ...


def _pad(rows: Sequence[Sequence[float]], width: int) -> torch.Tensor:
    out = torch.zeros(len(rows), width, dtype=torch.float64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(list(row), dtype=torch.float64)
    return out


def build_advantages(
    samples: Sequence[TrainSample],
    outcome: Sequence[float],
    values: Sequence[Sequence[float]],
    ref_logprobs: Sequence[Sequence[float]] | None,
    *,
    kl_coef: float,
    kl_estimator: str = "k1",
    gamma: float = 1.0,
    lam: float = 0.95,
    whiten: bool = True,
) -> tuple[list[TrainSample], dict[str, float]]:
    """PPO's per-token advantages and the critic's targets for ``samples`` (each with its
    ``rollout_logprobs``, the behaviour policy's); the samples with ``advantages``, ``returns``,
    ``old_values`` (and ``ref_logprobs``) set, and the batch's metrics.

    >>> s = [TrainSample([1], [5, 6], [0.0, 0.0], rollout_logprobs=[-1.0, -1.0])]
    >>> out, m = build_advantages(s, [1.0], [[0.25, 0.5]], None, kl_coef=0.0, lam=1.0, whiten=False)
    >>> out[0].advantages, out[0].returns   # returns = 1 everywhere (gamma 1), A = R - V
    ([0.75, 0.5], [1.0, 1.0])
    """
    if not (len(samples) == len(outcome) == len(values)):
        raise ValueError(f"{len(samples)} samples, {len(outcome)} rewards and {len(values)} value rows")
    width = max((len(s.completion_ids) for s in samples), default=0)
    mask = _pad([s.loss_mask or [1] * len(s.completion_ids) for s in samples], width)  # [B, T]
    logprobs = _pad([s.rollout_logprobs or [0.0] * len(s.completion_ids) for s in samples], width)
    old_values = _pad(values, width) * mask
    ref = None if ref_logprobs is None else _pad(ref_logprobs, width)
    rewards, kl = kl_penalized_rewards(torch.tensor(list(outcome), dtype=torch.float64), logprobs, ref, mask,
                                       coef=kl_coef, estimator=kl_estimator)
    adv, returns = gae(rewards, old_values, mask, gamma=gamma, lam=lam)  # [B, T] each
    if whiten:
        adv = masked_whiten(adv, mask)
    out = []
    for i, s in enumerate(samples):
        n = len(s.completion_ids)
        out.append(replace(
            s,
            advantages=adv[i, :n].tolist(),
            returns=returns[i, :n].tolist(),
            old_values=old_values[i, :n].tolist(),
            ref_logprobs=None if ref_logprobs is None else list(ref_logprobs[i]),
        ))
    valid = mask > 0
    ev = explained_variance(old_values, returns, mask)
    metrics = {
        "ppo/kl": float((kl * mask).sum(-1).mean()) if len(samples) else 0.0,  # sequence KL, batch mean
        "ppo/token_reward_mean": float(rewards[valid].mean()) if valid.any() else 0.0,
        "critic/explained_variance": ev if math.isfinite(ev) else 0.0,
        "critic/returns_mean": float(returns[valid].mean()) if valid.any() else 0.0,
        "critic/values_mean": float(old_values[valid].mean()) if valid.any() else 0.0,
        "advantage/mean": float(adv[valid].mean()) if valid.any() else 0.0,
        "advantage/std": float(adv[valid].std()) if valid.sum() > 1 else 0.0,
        "advantage/abs_mean": float(adv[valid].abs().mean()) if valid.any() else 0.0,
    }
    return out, metrics


class CriticBuilder(BatchBuilder):
    """PPO's batch with a learned critic: the critic, the KL coefficient (adaptive with
    ``algo.kl.target``) and the critic warm-up."""

    def __init__(self, cfg: RunConfig, critic: Critic, reference: ReferenceScorer):
        if cfg.critic is None:
            raise ValueError("CriticBuilder needs cfg.critic")
        self.cfg, self.critic, self.reference = cfg, critic, reference
        kl = cfg.algo.kl
        self.kl_in_reward = kl.placement == "reward" and kl.coef > 0
        self.kl_coef = kl.coef if self.kl_in_reward else 0.0
        self.critic_steps = 0  # RL steps whose batch trained the critic
        self._last_kl, self._last_n = 0.0, 0

    def build(self, collected: Collected, version: int) -> tuple[TrainBatch, dict[str, float]]:
        """The step's PPO batch: samples whose reward failed are left out (and counted); the critic
        values the rest, the reference scores them when the KL is in the reward, then GAE."""
        kept = [(r, float(x)) for r, x in zip(collected.rollouts, collected.totals) if usable(x)]  # type: ignore[arg-type]
        metrics = {"batch/failed_rewards": float(len(collected.rollouts) - len(kept)),
                   "batch/rollouts": float(len(collected.rollouts)),
                   "batch/samples": float(len(kept)), "ppo/kl_coef": self.kl_coef}
        if not kept:
            self._last_kl, self._last_n = 0.0, 0
            return TrainBatch([]), metrics
        samples = [TrainSample.from_rollout(r, 0.0) for r, _ in kept]
        values = self.critic.values(TrainBatch(samples))
        ref = self.reference.reference_logprobs(samples) if self.kl_in_reward else None
        c = self.cfg.critic
        assert c is not None
        samples, ppo_metrics = build_advantages(
            samples, [x for _, x in kept], values, ref, kl_coef=self.kl_coef, kl_estimator=self.cfg.algo.kl.estimator,
            gamma=c.gamma, lam=c.lam, whiten=c.whiten_advantages,
        )
        self._last_kl, self._last_n = ppo_metrics["ppo/kl"], len(samples)
        return TrainBatch(samples), {**metrics, **ppo_metrics}

    def before_update(self, batch: TrainBatch) -> tuple[dict[str, float], bool]:
        """One critic update on the batch's returns (its metrics as ``critic/<name>``; the values,
        returns and explained variance of the batch are already in ``build``'s), the KL coefficient
        steered towards ``algo.kl.target``; the policy trains once the warm-up is over."""
        repeated = ("values_mean", "returns_mean", "explained_variance")
        metrics = {f"critic/{k}": v for k, v in self.critic.train_step(batch).items() if k not in repeated}
        self.critic_steps += 1
        kl = self.cfg.algo.kl
        if self.kl_in_reward and kl.target is not None and self._last_n:
            self.kl_coef = adaptive_kl_coef(self.kl_coef, self._last_kl, target=kl.target,
                                            n_steps=self._last_n, horizon=kl.horizon)
        assert self.cfg.critic is not None
        trains = self.critic_steps > self.cfg.critic.warmup_steps
        return (metrics if trains else {**metrics, "critic/warmup": 1.0}), trains

    def state_dict(self) -> dict[str, Any]:
        return {"kl_coef": self.kl_coef, "critic_steps": self.critic_steps}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if not state:
            raise CheckpointError("the checkpoint has no critic state (it was written by a run without one)")
        self.kl_coef, self.critic_steps = float(state["kl_coef"]), int(state["critic_steps"])

    def save_checkpoint(self, path: str) -> None:
        self.critic.save_checkpoint(path)

    def load_checkpoint(self, path: str) -> None:
        self.critic.load_checkpoint(path)
