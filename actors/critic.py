"""The critic of PPO: a value model on its own data-parallel group of ranks.

``CriticWorker`` is one rank (a plain class; ``WorkerGroup`` makes it a Ray actor); ``CriticGroup``
builds ``critic.num_ranks`` of them from a ``RunConfig`` and is what the driver talks to.

**The model.** A causal-LM backbone, loaded like the policy (``load_causal_lm``: dropout off) and
stripped of its LM head, plus a scalar head ``nn.Linear(hidden, 1)`` on the last hidden state. The
head starts at zero (weight and bias), so the critic predicts ``V = 0`` everywhere before its first
update: the first GAE advantages are then the plain discounted rewards instead of rewards minus the
noise of a random head, and value clipping starts from a well-defined ``V_old = 0``. (With a zero
head the backbone receives no gradient on the very first optimizer step; it does from the second
on, once the head has moved.)

**Alignment.** The value of completion token ``k`` is read at the position that *predicts* it
(input position ``p - 1 + k`` for a prompt of ``p`` tokens), like ``token_logprobs``: the values are
a ``[B, L-1]`` tensor aligned with ``Collated.mask``, ``returns`` and ``old_values``::

    values = head(hidden[:, :-1]).squeeze(-1)   # [B, L-1]

**Training.** Each ``train_step`` makes ``critic.epochs`` optimizer steps over the rank's shard. The
loss is ``value_loss_coef`` times the token-mean, over the *global* batch's valid tokens, of
``rlft.algorithms.ppo.value_loss`` (PPO2's clipped value loss with ``critic.value_clip``). The token
count is all-reduced first and gradients are SUM-all-reduced before each step, so 1 rank and N ranks
(and any micro-batch size) make the same update. Weights are fp32 (master weights); on CUDA the
backbone runs under autocast in ``model.dtype`` and the head in fp32.

Example (in-process, no Ray)::

    critic = CriticWorker(0, 1, "127.0.0.1", 0, "path/to/model", ModelConfig(), CriticConfig())
    critic.values([TrainSample([5, 6], [7, 8], [0.0, 0.0])])   # [[0.0, 0.0]] before any update
    critic.train_step(TrainBatch([TrainSample([5, 6], [7, 8], [0.0, 0.0], returns=[1.0, 1.0],
                                              old_values=[0.0, 0.0])]))
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from actors.data_parallel import DataParallelRank, StepTally
from actors.distributed import DTYPES, load_causal_lm, resolve_device
from actors.group import WorkerGroup
from rlft.algorithms.ppo import value_loss
from rlft.config import CriticConfig, ModelConfig, RunConfig
from rlft.placement import Plan, plan_run
from rlft.micro_batches import per_completion_token, plan_micro_batches
from rlft.types import Collated, TrainBatch, TrainSample, collate

CHECKPOINT_DIR = "critic"
WEIGHTS_FILE = "value_model.pt"


class ValueModel(torch.nn.Module):
    """A causal LM's backbone (``base_model``: embeddings, blocks, final norm) and a scalar head."""

    def __init__(self, lm: torch.nn.Module) -> None:
        super().__init__()
        base = lm.base_model
        # Models without a separate base model fall back to the last of their hidden states.
        self.backbone = base
        self._from_hidden_states = base is lm
        self.head = torch.nn.Linear(lm.config.hidden_size, 1)
        # V = 0 at the start: see the module docstring.
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, L, H]`` last hidden state."""
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            use_cache=False,
            output_hidden_states=self._from_hidden_states,
        )
        return out.hidden_states[-1] if self._from_hidden_states else out.last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, L-1]`` values, position ``t`` valuing the state that predicts ``input_ids[:, t + 1]``."""
        return self.head(self.hidden(input_ids, attention_mask)[:, :-1].float()).squeeze(-1)


class CriticWorker(DataParallelRank):
    """One data-parallel critic rank: the value model (a full fp32 replica), AdamW, the train step
    (the group, reductions, optimizer step and checkpoint agreement: ``DataParallelRank``)."""

    role = "critic"

    def __init__(
        self,
        rank: int,
        world_size: int,
        master_addr: str,
        master_port: int,
        model_path: str,
        model_cfg: ModelConfig,
        critic_cfg: CriticConfig,
        *,
        seed: int = 0,
        device: str = "auto",
    ) -> None:
        self.cfg = critic_cfg
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                "the critic runs on 'cuda' but this rank sees no GPU; reserve GPUs with cluster.critic.gpus"
            )
        self._join(rank, world_size, resolve_device(device), master_addr, master_port, seed=seed)
        lm = load_causal_lm(model_path, model_cfg, torch.float32)
        self.pad_id = lm.config.pad_token_id or 0
        self.model = ValueModel(lm).to(self.device)
        del lm  # its LM head (when untied) is not part of the value model
        # fp32 replicas on CPU; on CUDA the backbone computes in the configured dtype
        compute = DTYPES[model_cfg.dtype]
        self._autocast = self.device.type == "cuda" and compute != torch.float32
        self._compute_dtype = compute
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=critic_cfg.lr, weight_decay=critic_cfg.weight_decay)
        self.steps = 0  # optimizer steps taken (skipped ones included)

    def ready(self) -> bool:
        return True

    # ------------------------------------------------------------------------------------------
    # Values and the train step

    @torch.no_grad()
    def values(self, samples: list[TrainSample]) -> list[list[float]]:
        """The value of every completion token (masked-out ones included), one list per sample."""
        return per_completion_token(self._values, samples, pad_id=self.pad_id,
                                    max_tokens=self.cfg.max_tokens_per_micro_batch, max_seqs=self.cfg.micro_batch_size)

    def train_step(self, shard: TrainBatch) -> dict[str, float]:
        """``critic.epochs`` optimizer steps on this rank's shard (every sample needs ``returns``,
        and ``old_values`` when ``critic.value_clip`` is set). A collective: call it on every rank.
        The metrics describe the global batch and are identical on every rank:

        * ``value_loss``: token-mean value loss (without ``value_loss_coef``), mean over epochs;
        * ``value_clip_fraction``: share of token passes where the clipped branch was taken;
        * ``values_mean``, ``returns_mean``, ``explained_variance``: the critic's values at step
          start (first epoch) against the returns (``explained_variance`` only for >= 2 tokens with
          varying returns);
        * ``grad_norm`` (mean over epochs, before clipping), ``lr``, ``tokens``, ``skipped_steps``
          (non-finite loss or gradient norm: the step is skipped on every rank).

        A batch without a single counted token (all shards empty or masked) makes no step. A rank
        whose shard is empty still takes part (its gradient is zero).
        """
        cfg = self.cfg
        samples = list(shard.samples)
        if any(s.returns is None for s in samples):
            raise ValueError("every sample of a critic step needs returns (the GAE targets)")
        if cfg.value_clip is not None and any(s.old_values is None for s in samples):
            raise ValueError("critic.value_clip is set: every sample needs old_values (the critic's values "
                             "when the batch was built)")
        micros = [_to_device(collate([samples[i] for i in idx], self.pad_id), self.device)
                  for idx in plan_micro_batches([s.length for s in samples], max_tokens=cfg.max_tokens_per_micro_batch,
                                                max_seqs=cfg.micro_batch_size)]
        local_tokens = sum(float(m.mask.sum()) for m in micros)
        tokens = float(self._global_sums([local_tokens]).item())
        if tokens == 0:  # nothing to learn anywhere; no step (Adam's momentum would still move)
            return {"value_loss": 0.0, "value_clip_fraction": 0.0, "values_mean": 0.0, "returns_mean": 0.0,
                    "grad_norm": 0.0, "lr": cfg.lr, "tokens": 0.0, "skipped_steps": 0.0}
        denom = tokens

        names = ["loss", "clipped", "values", "returns", "returns_sq", "error", "error_sq"]
        acc = {k: torch.zeros((), dtype=torch.float64, device=self.device) for k in names}
        tally = StepTally()
        for epoch in range(cfg.epochs):
            bad = torch.zeros((), dtype=torch.bool, device=self.device)
            for m in micros:
                values = self._values(m)  # [b, L-1]
                old = m.old_values if m.old_values is not None else values.detach()
                per_token, clipped = value_loss(values, old, m.returns, clip=cfg.value_clip)  # [b, L-1]
                loss_sum = (per_token * m.mask).sum()
                loss = cfg.value_loss_coef * loss_sum / denom
                loss.backward()
                bad |= ~torch.isfinite(loss.detach())
                acc["loss"] += loss_sum.detach()
                acc["clipped"] += (clipped * m.mask).sum()
                if epoch == 0:  # the critic as it was when the step started
                    v, r = values.detach().double(), m.returns.double()
                    acc["values"] += (v * m.mask).sum()
                    acc["returns"] += (r * m.mask).sum()
                    acc["returns_sq"] += (r * r * m.mask).sum()
                    acc["error"] += ((r - v) * m.mask).sum()
                    acc["error_sq"] += ((r - v) ** 2 * m.mask).sum()
            self._optimizer_step(bad, tally, max_grad_norm=cfg.max_grad_norm, at=f"step {self.steps}")
            self.steps += 1
        s = self._reduce_sums(acc)
        passes = denom * cfg.epochs
        metrics = {
            "value_loss": s["loss"] / passes,
            "value_clip_fraction": s["clipped"] / passes,
            "values_mean": s["values"] / denom,
            "returns_mean": s["returns"] / denom,
            "grad_norm": tally.mean_grad_norm,
            "lr": cfg.lr,
            "tokens": tokens,
            "skipped_steps": float(tally.skipped),
        }
        var_returns = s["returns_sq"] - s["returns"] ** 2 / denom  # (n-1) Var; it cancels in the ratio
        if tokens >= 2 and var_returns > 0:  # as rlft.algorithms.ppo.explained_variance
            metrics["explained_variance"] = 1.0 - (s["error_sq"] - s["error"] ** 2 / denom) / var_returns
        return metrics

    def _values(self, m: Collated) -> torch.Tensor:
        ids, attention = m.input_ids.to(self.device), m.attention_mask.to(self.device)
        if not self._autocast:
            return self.model(ids, attention)
        with torch.autocast(device_type=self.device.type, dtype=self._compute_dtype):
            hidden = self.model.hidden(ids, attention)
        return self.model.head(hidden[:, :-1].float()).squeeze(-1)  # the head in fp32

    # ------------------------------------------------------------------------------------------
    # Checkpoints

    def save_checkpoint(self, path: str) -> str:
        """Write ``path/critic/``: rank 0 the value model (``value_model.pt``: backbone and head,
        fp32), every rank its AdamW state (``optimizer-rank<r>.pt``). Each file is written under a
        temporary name and renamed, so none is left half-written under its final name. A failure on
        any rank raises ``OSError`` on every rank. Returns ``path``."""
        folder = Path(path) / CHECKPOINT_DIR
        state = {"optimizer": self.optimizer.state_dict(), "steps": self.steps,
                 "skipped_total": self.skipped_total, "world_size": self.world_size}

        def write() -> None:
            folder.mkdir(parents=True, exist_ok=True)
            if self.rank == 0:
                _save_atomic({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, folder / WEIGHTS_FILE)
            _save_atomic(state, folder / _optimizer_file(self.rank))

        self._on_every_rank(write)
        return path

    def load_checkpoint(self, path: str) -> None:
        """Restore what ``save_checkpoint`` wrote. Every rank reads the one ``value_model.pt`` and its
        own optimizer file (the replicas' AdamW states are identical, so a checkpoint of more ranks
        loads into fewer)."""
        folder = Path(path) / CHECKPOINT_DIR
        weights, optim = folder / WEIGHTS_FILE, folder / _optimizer_file(self.rank)
        for file in (weights, optim):
            if not file.is_file():
                raise FileNotFoundError(
                    f"critic checkpoint file {file} is missing (a checkpoint without a critic, or written "
                    f"by fewer critic ranks than this rank {self.rank} of {self.world_size})"
                )
        self.model.load_state_dict(torch.load(weights, map_location=self.device, weights_only=True))
        state = torch.load(optim, map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps, self.skipped_total = state["steps"], state["skipped_total"]


class CriticGroup:
    """The critic ranks of a run (``cfg.critic.num_ranks`` CriticWorkers placed as the plan's critic
    role, from ``cluster.critic``), one torch.distributed group; batches are sharded across ranks
    like the learner's."""

    def __init__(self, cfg: RunConfig, model_path: str, *, plan: Plan | None = None):
        if cfg.critic is None:
            raise ValueError("CriticGroup needs a critic config (cfg.critic is None)")
        critic = cfg.critic
        role = (plan or plan_run(cfg)).role("critic")
        assert role is not None  # planned whenever cfg.critic is set
        n = role.count
        group: WorkerGroup[CriticWorker] = WorkerGroup.from_plan(role, CriticWorker, start=False)
        addr, port = group.rendezvous()  # rank 0's node hosts the torch.distributed rendezvous
        path = critic.model_path or model_path
        device = "cuda" if role.gpus > 0 else "cpu"
        group.start(lambda rank: ((rank, n, addr, port, path, cfg.model, critic), {"seed": cfg.seed, "device": device}))
        self.workers, self.n = group, n
        try:
            self.workers.call(CriticWorker.ready)
        except BaseException:
            self.workers.shutdown()
            raise

    def values(self, batch: TrainBatch) -> list[list[float]]:
        """The value of every completion token of ``batch``, one list per sample, in order."""
        shards = [(batch.shard(rank, self.n).samples,) for rank in range(self.n)]
        return [v for part in self.workers.call_each(CriticWorker.values, shards) for v in part]

    def train_step(self, batch: TrainBatch) -> dict[str, float]:
        """One critic step on ``batch`` (sharded across ranks); the global metrics."""
        shards = [(batch.shard(rank, self.n),) for rank in range(self.n)]
        return self.workers.call_each(CriticWorker.train_step, shards)[0]

    def save_checkpoint(self, path: str) -> str:
        self.workers.call(CriticWorker.save_checkpoint, path)
        return path

    def load_checkpoint(self, path: str) -> None:
        self.workers.call(CriticWorker.load_checkpoint, path)

    def nodes(self) -> list[dict[str, Any]]:
        """Where each rank runs (``{"rank", "node_id", "node_ip"}``)."""
        return self.workers.nodes()

    def shutdown(self) -> None:
        self.workers.close_and_shutdown(CriticWorker.close)


# ----------------------------------------------------------------------------------------------
# Helpers


def _to_device(batch: Collated, device: torch.device) -> Collated:
    """The tensors a critic step reads, on ``device`` (``returns`` checked by the caller)."""
    return Collated(
        input_ids=batch.input_ids.to(device),
        attention_mask=batch.attention_mask.to(device),
        mask=batch.mask.to(device),
        advantages=batch.advantages,
        rollout_logprobs=None,
        returns=None if batch.returns is None else batch.returns.to(device),
        old_values=None if batch.old_values is None else batch.old_values.to(device),
    )


def _optimizer_file(rank: int) -> str:
    return f"optimizer-rank{rank}.pt"


def _save_atomic(obj: Any, file: Path) -> None:
    tmp = file.with_name(f"{file.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)
