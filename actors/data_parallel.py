"""``DataParallelRank``: what a learner rank and a critic rank share as ranks of one data-parallel
group that trains a model with one optimizer.

* **The group.** ``_join`` seeds torch and joins the ranks' ``torch.distributed`` group (NCCL on
  CUDA, gloo on CPU) when there is more than one rank, or when the model is sharded (FSDP needs a
  group even for one rank).
* **Reductions every rank agrees on.** ``_all_reduce`` (the identity for a rank without a group),
  ``_global_sums`` (the loss normalisers: token and sequence counts of the global batch, fp64) and
  ``_reduce_sums`` (a step's metric sums, reduced in one collective).
* **The optimizer step.** ``_optimizer_step``: SUM-all-reduce the gradients of a replicated model
  (FSDP reduce-scatters its own), take the global gradient norm, and skip the step on every rank
  when any rank saw a non-finite loss or the norm is not finite (weights and optimizer state stay
  as they were); else clip to ``max_grad_norm`` and step. ``StepTally`` counts a train step's
  optimizer steps, their gradient norms and the skipped ones; ``skipped_total`` counts over the run.
* **Checkpoints and shutdown.** ``_on_every_rank`` (a write every rank agrees succeeded) and ``close``.

A subclass sets ``role`` (its name in logs and errors), calls ``_join`` first in its constructor,
then sets ``model`` and ``optimizer``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from actors.distributed import all_reduce, all_reduce_gradients, join_process_group, on_every_rank


@dataclass
class StepTally:
    """The optimizer steps of one train step: each one's gradient norm (before clipping) and how
    many were skipped."""

    grad_norms: list[float] = field(default_factory=list)
    skipped: int = 0

    @property
    def steps(self) -> int:
        return len(self.grad_norms)

    @property
    def mean_grad_norm(self) -> float:
        return sum(self.grad_norms) / len(self.grad_norms)


class DataParallelRank:
    """One rank of a data-parallel group (see the module docstring)."""

    role = "rank"
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer

    def _join(
        self,
        rank: int,
        world_size: int,
        device: torch.device,
        master_addr: str,
        master_port: int,
        *,
        seed: int,
        sharded: bool = False,
    ) -> None:
        self.rank, self.world_size, self.device, self.sharded = rank, world_size, device, sharded
        self.skipped_total = 0  # optimizer steps skipped over the run
        torch.manual_seed(seed)
        self._grouped = world_size > 1 or sharded  # FSDP needs a process group even for one rank
        if self._grouped:
            join_process_group(device, rank, world_size, master_addr, master_port)

    # ------------------------------------------------------------------------------------------
    # Reductions

    def _all_reduce(self, t: torch.Tensor, op: Any = None) -> torch.Tensor:
        """``t`` reduced over the ranks (SUM by default); itself on a rank without a group."""
        return all_reduce(t, self.device, op) if self._grouped else t

    def _global_sums(self, local: Any) -> torch.Tensor:
        """``local`` (numbers, or lists of them) as an fp64 tensor summed over the ranks: the global
        batch's counts that every rank divides its loss by."""
        return self._all_reduce(torch.tensor(local, dtype=torch.float64))

    def _reduce_sums(self, acc: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Scalar metric sums summed over the ranks, in one collective (the same names in the same
        order on every rank)."""
        names = list(acc)
        return dict(zip(names, self._all_reduce(torch.stack([acc[k] for k in names])).tolist()))

    # ------------------------------------------------------------------------------------------
    # The optimizer step

    def _trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _optimizer_step(
        self, loss_nonfinite: torch.Tensor, tally: StepTally, *, max_grad_norm: float | None, at: str
    ) -> None:
        """Reduce gradients, clip, step; skip the step on every rank if any rank saw a non-finite
        loss or the global gradient norm is not finite (the weights and the optimizer state stay as
        they were). Records the norm and the skip in ``tally`` and ``skipped_total``; ``at`` names
        the step in the warning."""
        params = self._trainable()
        if not self.sharded and self.world_size > 1:
            all_reduce_gradients(params)
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=self.device)
        if hasattr(norm, "full_tensor"):  # FSDP: a DTensor holding per-shard partial norms
            norm = norm.full_tensor()
        flag = (loss_nonfinite | ~torch.isfinite(norm)).to(torch.float32).reshape(1)
        skip = bool(self._all_reduce(flag, op=dist.ReduceOp.MAX).item())
        if skip:
            logging.getLogger(type(self).__module__).warning(
                "%s rank %d: non-finite loss or gradient (norm %s) at %s; optimizer step skipped",
                self.role, self.rank, float(norm), at,
            )
        else:
            if max_grad_norm is not None:
                torch.nn.utils.clip_grads_with_norm_(params, max_grad_norm, norm)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        tally.grad_norms.append(float(norm))
        tally.skipped += skip
        self.skipped_total += skip

    # ------------------------------------------------------------------------------------------
    # Checkpoints and shutdown

    def _on_every_rank(self, write: Callable[[], None]) -> None:
        """Run ``write`` (this rank's part of a checkpoint); every rank raises ``OSError`` if any failed."""
        on_every_rank(write, self.device, self.role)

    def close(self) -> None:
        """Leave the process group (before the actor is killed, so peers do not wait on it)."""
        if dist.is_initialized():
            dist.destroy_process_group()
