"""``LearnerWorker``: one rank of the data-parallel learner group.

A plain class; the group helper makes it a Ray actor (``ray.remote(LearnerWorker)``), one per rank,
all joined in one ``torch.distributed`` process group:

* **CPU** (``gloo``): every rank holds a full replica of the model. Gradients are SUM-all-reduced
  (one flat buffer per dtype) before each optimizer step, so replicas stay identical (DDP-equivalent).
* **GPU** (``nccl``): the model is sharded with FSDP2 ``fully_shard`` (each decoder block, then the
  root), fp32 master weights with ``MixedPrecisionPolicy(param_dtype=model.dtype)``, gradients
  reduce-scattered as a SUM (divide factor 1). Every method that runs the model is then a collective:
  call it on all ranks.

Normalisation: the driver sends rank ``r`` the shard ``batch.shard(r, world)``. Each micro-batch's
loss is divided by the token (``token-mean``) or sequence (``seq-mean-*``) count of the *global*
mini-batch, gathered with one all-reduce per step. Summing the gradients over micro-batches and
ranks therefore gives exactly the gradient of the full mini-batch's loss, so 1 rank and N ranks (and
any micro-batch size) make the same update.

Mini-batches: each rank splits its shard into ``mini_batches`` contiguous chunks; global mini-batch
``k`` is the union of every rank's chunk ``k``. ``ppo_epochs`` passes visit them in order. Each
mini-batch runs as micro-batches planned by ``rlft.micro_batches.plan_micro_batches``: sorted by
length under the token budget ``max_tokens_per_micro_batch`` (padded, or packed rows with
``packing``), in bf16 autocast with ``precision: bf16`` (fp32 master weights and optimizer).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from actors.data_parallel import DataParallelRank, StepTally
from actors.distributed import DTYPES, fsdp2_shard, load_causal_lm, resolve_device
from rlft.algorithms import KL_ESTIMATORS
from rlft.algorithms.guidance import Mixed, Prefix, guidance_settings
from rlft.config import AlgoConfig, LearnerConfig, ModelConfig
from rlft.config.stages import SFTLossChoice
from rlft.micro_batches import (
    ForwardBatch,
    autocast,
    cpu_bf16_support,
    mfu,
    plan_micro_batches,
    resolve_precision,
    sequence_logprobs,
)
from rlft.plugins import import_plugin
from rlft.training import (
    Objective,
    counted_sequences,
    loss_metric_names,
    lr_factor,
    micro_batch_loss,
    split_evenly,
    sft_objective,
    staleness_sums,
    token_entropy,
    token_logprobs,
)
from rlft.types import TrainBatch, TrainSample, collate

logger = logging.getLogger(__name__)

# ``staleness_sums``' entries: summed over micro-batches and ranks / max-reduced from these starts
_STALENESS_SUMS = [f"{k}_{s}" for k in ("mismatch", "mismatch_lag0", "version_lag") for s in ("sum", "tokens")]
_STALENESS_MAX = {"mismatch_max": 0.0, "mismatch_lag0_max": 0.0, "version_lag_max": -math.inf}


class _Micro:
    """One micro-batch on the device: the model inputs (padded or packed), the loss tensors in the
    padded ``[b, L-1]`` layout, and the step-start log-probs once filled in."""

    def __init__(self, samples: list[TrainSample], pad_id: int, device: torch.device, packed: bool) -> None:
        batch = collate(samples, pad_id)
        layout = ForwardBatch.packed(samples) if packed else ForwardBatch.padded_from(
            batch.input_ids, batch.attention_mask)
        self.forward = layout.to(device)
        self.mask = batch.mask.to(device)
        self.advantages = batch.advantages.to(device)
        lp = batch.rollout_logprobs
        self.rollout_logprobs = None if lp is None else lp.to(device)
        self.old_logprobs: torch.Tensor | None = None
        # given with the batch by a separate reference actor, or filled in by this rank's copy
        ref = batch.ref_logprobs
        self.ref_logprobs: torch.Tensor | None = None if ref is None else ref.to(device)
        versions = batch.policy_versions  # [b], the engine version that sampled each sequence
        self.policy_versions = None if versions is None else versions.to(device)
        demos = batch.demonstrations  # [b, L-1], off-policy demonstration tokens (mixed groups)
        self.demonstrations = None if demos is None else demos.to(device)
        # the off-policy metrics compare the engine's sampling with the learner: not demonstrations
        self.sampled_mask = self.mask if demos is None else self.mask * (1 - self.demonstrations)


class LearnerWorker(DataParallelRank):
    """One data-parallel rank: model, optional frozen reference, AdamW, and the train step (the
    group, reductions, optimizer step and checkpoint agreement: ``DataParallelRank``)."""

    role = "learner"

    def __init__(
        self,
        rank: int,
        world_size: int,
        master_addr: str,
        master_port: int,
        model_path: str,
        model_cfg: ModelConfig,
        learner_cfg: LearnerConfig,
        algo_cfg: AlgoConfig,
        *,
        temperature: float = 1.0,
        max_len: int | None = None,
        total_steps: int = 1000,
        seed: int = 0,
        fsdp: bool | None = None,
        reference_model: bool = True,
        anchor_reference: bool = False,
        plugins: Sequence[str] = (),
    ) -> None:
        for spec in plugins:  # the config's plugins register the losses, KL estimators, weight syncs it names
            import_plugin(spec)
        self.cfg, self.algo = learner_cfg, algo_cfg
        # Greedy rollouts (temperature 0) have no sampling distribution to match; score them at 1.
        self.temperature = temperature if temperature > 0 else 1.0
        self.max_len, self.total_steps = max_len, total_steps
        self.serving_dtype = DTYPES[model_cfg.dtype]
        device = resolve_device(learner_cfg.device)
        # FSDP2 is the GPU path; ``fsdp=True`` also shards on CPU (gloo), which is how the tests
        # exercise the sharded code on machines without a GPU.
        sharded = device.type == "cuda" if fsdp is None else fsdp
        self._join(rank, world_size, device, master_addr, master_port, seed=seed, sharded=sharded)
        self.precision, self.precision_note = resolve_precision(
            learner_cfg.precision, self.device.type, cpu_bf16_support() if self.device.type == "cpu" else None)
        bf16 = self.precision == "bf16"
        # Under FSDP the master weights stay fp32 and compute runs in the model dtype, or bf16 (FSDP's
        # mixed precision). A replica lives in the configured dtype, or fp32 under bf16 autocast.
        self._load_dtype = torch.float32 if self.sharded or bf16 else self.serving_dtype
        self._compute_dtype = torch.bfloat16 if bf16 else self.serving_dtype
        self._autocast = "bf16" if bf16 and not self.sharded else "fp32"
        self._model_cfg = model_cfg
        self.model = self._load_placed(model_path)
        self.ref_model = None
        # without its own copy (cluster.reference.placement=separate) the batch brings ref_logprobs
        # (``anchor_reference``: an SFT objective of the run, ASFT, anchors to it without a KL term)
        if (algo_cfg.kl.coef > 0 or anchor_reference) and reference_model:
            self.ref_model = self._load_placed(model_path, frozen=True)
        self.pad_id = self.model.config.pad_token_id or 0
        # the whole model's (an FSDP rank holds 1/world of it), for perf/mfu
        self.num_params = sum(p.numel() for p in self.model.parameters()) * (world_size if self.sharded else 1)
        self.tokenizer_path = model_cfg.tokenizer or model_path
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=learner_cfg.lr,
            betas=learner_cfg.betas,
            eps=learner_cfg.adam_eps,
            weight_decay=learner_cfg.weight_decay,
        )
        kl, guidance = algo_cfg.kl, algo_cfg.guidance
        settings = guidance_settings(guidance)
        mixed = settings if isinstance(settings, Mixed) else None  # demonstrations inside the groups (LUFFY)
        imitate = settings.imitation_coef if isinstance(settings, Prefix) and settings.prefix_tokens == "imitation" else 0.0
        self.objective = Objective(
            loss_name=algo_cfg.loss.name,
            loss_params=dict(algo_cfg.loss.params),
            aggregation=algo_cfg.aggregation,
            tis_cap=algo_cfg.tis_cap,
            kl_estimator=kl.estimator,
            kl_coef=kl.coef if kl.placement == "loss" else 0.0,
            demo_gamma=mixed.gamma if mixed else None,
            demo_sft_coef=mixed.sft_coef if mixed else imitate,  # Prefix-RFT: imitation of the prefix
        )
        self.loss_metric_names = loss_metric_names(self.objective)
        self.version = 0
        if learner_cfg.packing:
            self._check_packing()

    def describe(self) -> str:
        """How this rank computes, for the run's start-up line."""
        cfg = self.cfg
        budget = ("fixed" if cfg.max_tokens_per_micro_batch is None
                  else f"<= {cfg.max_tokens_per_micro_batch} tokens") + (" packed" if cfg.packing else "")
        return f"{self.precision_note}; micro-batches {budget} on {self.device.type}"

    @torch.no_grad()
    def _check_packing(self) -> None:
        """Fail at start-up, not with wrong gradients, when the model's attention does not confine
        packed sequences (an older transformers, or an attention implementation without it)."""
        probe = [TrainSample([1, 2, 3], [4, 5], [0.0, 0.0]), TrainSample([6, 7], [8, 9, 10], [0.0, 0.0, 0.0])]
        fb = ForwardBatch.packed(probe).to(self.device)
        c = collate(probe, self.pad_id)
        packed = fb.padded(self._token_logprobs(self.model, fb))
        padded = self._token_logprobs(self.model, ForwardBatch.padded_from(c.input_ids, c.attention_mask).to(self.device))
        if not torch.allclose(packed * c.mask.to(self.device), padded * c.mask.to(self.device), atol=1e-3):
            import transformers

            raise ValueError(
                "learner.packing: this model's attention does not keep packed sequences apart (transformers "
                f"{transformers.__version__}, attention "
                f"'{getattr(self.model.config, '_attn_implementation', '?')}'); set learner.packing: false"
            )

    # ------------------------------------------------------------------------------------------
    # The train step

    def train_step(
        self, shard: TrainBatch, *, sft: SFTLossChoice | None = None, lr: float | None = None
    ) -> dict[str, float]:
        """Apply ``mini_batches x ppo_epochs`` optimizer steps to this rank's shard; the metrics
        describe the global batch and are identical on every rank.

        ``sft``: an SFT step with that objective (``nll``: negative log-likelihood of the
        completion tokens, token-mean, no KL; ``asft`` reads the reference) on the same model and
        optimizer. ``lr`` replaces ``learner.lr`` as the peak learning
        rate of this step (a stage's own rate); the schedule still applies.

        Off-policy metrics, from the step-start log-probs (``staleness_sums``): ``logprob_mismatch_*``
        over every sample with rollout log-probs; ``logprob_mismatch_lag0_*`` over the samples with
        ``policy_version == self.version`` (sampled by exactly these weights: engine numerics only);
        ``version_lag_{mean,max}`` of ``self.version - policy_version``, token-weighted. Each is
        reported only when some rank has such tokens."""
        started = time.perf_counter()
        cfg = self.cfg
        objective = self.objective if sft is None else sft_objective(sft.name, sft.params)
        supervised = objective.supervised
        metric_names = loss_metric_names(objective) if supervised else self.loss_metric_names
        lr = (cfg.lr if lr is None else lr) * lr_factor(
            self.version, warmup_steps=cfg.warmup_steps, total_steps=self.total_steps, schedule=cfg.lr_schedule
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # the reference's log-probs: for a KL term or metric (RL with algo.kl.coef > 0), or ASFT's anchor
        reference = objective.needs_reference or (not supervised and self.algo.kl.coef > 0)
        if reference and self.ref_model is None and any(s.ref_logprobs is None for s in shard.samples):
            raise ValueError("a KL term or an anchored SFT objective with a separate reference model: every "
                             "sample needs ref_logprobs")
        plan = self._plan(list(shard.samples))
        local = [[sum(float(m.mask.sum()) for m in mb), sum(counted_sequences(m.mask) for m in mb)]
                 for mb in plan]
        # [mini_batches, 2]: tokens and sequences of each global mini-batch (the loss normalisers)
        counts = self._global_sums(local)
        # seq-mean-token-sum-norm divides by a constant length; without a configured one, the longest
        # completion of the global batch (the same on every rank, whatever the split)
        longest = max((len(s.completion_ids) for s in shard.samples), default=1)
        max_len = self.max_len or int(self._all_reduce(torch.tensor([longest]), op=dist.ReduceOp.MAX))
        if cfg.ppo_epochs > 1 or cfg.mini_batches > 1 or (self.ref_model is not None and reference):
            self._fill_step_start_logprobs(plan, reference=reference)

        names = ["loss", "policy_loss", "kl_loss", "entropy", "kl", "token_passes", "input_tokens", "input_slots",
                 *_STALENESS_SUMS, *metric_names]
        acc = {k: torch.zeros((), dtype=torch.float64, device=self.device) for k in names}
        acc.update({k: torch.full((), v, dtype=torch.float64, device=self.device) for k, v in _STALENESS_MAX.items()})
        tally = StepTally()
        for epoch in range(cfg.ppo_epochs):
            for k, micros in enumerate(plan):
                norms = dict(zip(("global_tokens", "global_seqs"), counts[k].tolist()), max_len=max_len)
                bad = torch.zeros((), dtype=torch.bool, device=self.device)
                for m in micros:
                    bad |= ~torch.isfinite(self._backward(objective, m, norms, acc, first_pass=epoch == 0))
                self._optimizer_step(bad, tally, max_grad_norm=cfg.max_grad_norm, at=f"version {self.version}")
        self.version += 1
        acc["seconds"] = torch.tensor(time.perf_counter() - started, dtype=torch.float64, device=self.device)
        return self._metrics(acc, counts, tally, lr, metric_names, reference=reference)

    def _backward(
        self, objective: Objective, m: _Micro, norms: dict[str, Any], acc: dict[str, torch.Tensor], first_pass: bool
    ) -> torch.Tensor:
        """Forward and backward of one micro-batch (gradients accumulate in ``.grad``); adds its
        metric sums to ``acc`` and returns its detached loss."""
        fb = m.forward
        logits = self._logits(self.model, fb)
        logprobs = fb.padded(token_logprobs(logits, fb.ids, self.temperature))  # [b, L-1]
        entropy = fb.padded(token_entropy(logits.detach(), self.temperature))  # [b, L-1]
        old = m.old_logprobs if m.old_logprobs is not None else logprobs.detach()
        if first_pass:  # learner vs rollout engine and version lag, at step start
            sums = staleness_sums(old, m.rollout_logprobs, m.sampled_mask, m.policy_versions, self.version)
            for name, value in sums.items():
                value = value.to(torch.float64)
                acc[name] = torch.maximum(acc[name], value) if name in _STALENESS_MAX else acc[name] + value
        out = micro_batch_loss(
            objective,
            logprobs=logprobs,
            old_logprobs=old,
            advantages=m.advantages,
            mask=m.mask,
            rollout_logprobs=m.rollout_logprobs,
            ref_logprobs=m.ref_logprobs,
            demonstrations=m.demonstrations,
            **norms,
        )
        out.loss.backward()
        acc["loss"] += out.loss.detach()
        acc["policy_loss"] += out.policy_loss
        acc["kl_loss"] += out.kl_loss
        acc["entropy"] += (entropy * m.mask).sum()
        acc["token_passes"] += m.mask.sum()
        acc["input_tokens"] += fb.tokens
        acc["input_slots"] += fb.slots
        for name, value in out.token_sums.items():
            acc[name] += value
        return out.loss.detach()

    def _plan(self, samples: list[TrainSample]) -> list[list[_Micro]]:
        """Mini-batches of micro-batches, collated on the device. Under FSDP every rank must run
        the same number of forward passes, so shorter mini-batches get masked-out dummy passes."""
        cfg = self.cfg
        plan = []
        for r in split_evenly(len(samples), cfg.mini_batches):
            part = [samples[i] for i in r]
            groups = plan_micro_batches([s.length for s in part], max_tokens=cfg.max_tokens_per_micro_batch,
                                        max_seqs=cfg.micro_batch_size, packed=cfg.packing)
            plan.append([_Micro([part[i] for i in g], self.pad_id, self.device, cfg.packing) for g in groups])
        if self.sharded:
            need = self._all_reduce(torch.tensor([len(mb) for mb in plan]), op=dist.ReduceOp.MAX)
            dummy = TrainSample([self.pad_id], [self.pad_id], [0.0], rollout_logprobs=[0.0], loss_mask=[0])
            for mb, n in zip(plan, need.tolist()):
                mb.extend(_Micro([dummy], self.pad_id, self.device, cfg.packing) for _ in range(n - len(mb)))
        return plan

    @torch.no_grad()
    def _fill_step_start_logprobs(self, plan: list[list[_Micro]], reference: bool = True) -> None:
        """``old_logprobs`` (the policy at step start, fixed across epochs and mini-batches) and the
        reference model's log-probs, in one no-grad pass. With one epoch and one mini-batch the old
        log-probs come for free from the training forward itself and are not computed here."""
        need_old = self.cfg.ppo_epochs > 1 or self.cfg.mini_batches > 1
        for micros in plan:
            for m in micros:
                if need_old:
                    m.old_logprobs = self._logprobs(self.model, m)
                if self.ref_model is not None and reference and m.ref_logprobs is None:
                    m.ref_logprobs = self._logprobs(self.ref_model, m)

    def _logits(self, model: torch.nn.Module, fb: ForwardBatch) -> torch.Tensor:
        with autocast(self.device.type, self._autocast):
            return model(**fb.inputs, use_cache=False).logits

    def _token_logprobs(self, model: torch.nn.Module, fb: ForwardBatch) -> torch.Tensor:
        return token_logprobs(self._logits(model, fb), fb.ids, self.temperature)

    def _logprobs(self, model: torch.nn.Module, m: _Micro) -> torch.Tensor:
        """[b, L-1] log-probs of micro-batch ``m`` under ``model`` (padded layout)."""
        return m.forward.padded(self._token_logprobs(model, m.forward))

    def _metrics(
        self, acc: dict[str, torch.Tensor], counts: torch.Tensor, tally: StepTally, lr: float, metric_names: list[str],
        *, reference: bool,
    ) -> dict[str, float]:
        """Global metrics: sums over ranks, token-weighted means for per-token quantities, means
        over optimizer steps for losses and gradient norms."""
        # the same tensors in the same order on every rank, whether or not it saw such tokens
        names = [*_STALENESS_MAX, "seconds"]  # the slowest rank's time is the step's
        peak = dict(zip(names, self._all_reduce(torch.stack([acc.pop(k) for k in names]), op=dist.ReduceOp.MAX).tolist()))
        s = self._reduce_sums(acc)
        steps = tally.steps
        passes = max(s["token_passes"], 1.0)
        metrics = {
            # each optimizer step's loss is the global mini-batch loss; average over steps
            "loss": s["loss"] / steps,
            "policy_loss": s["policy_loss"] / steps,
            "entropy": s["entropy"] / passes,
            **{name: s[name] / passes for name in metric_names},
            "grad_norm": sum(tally.grad_norms) / steps,
            "lr": lr,
            "tokens": float(counts[:, 0].sum()),
            "sequences": float(counts[:, 1].sum()),
            "optimizer_steps": float(steps),
            "skipped_steps": float(tally.skipped),
            "skipped_steps_total": float(self.skipped_total),
            "version": float(self.version),
            # the batch's prompt + completion tokens per second of the whole step (every epoch, the
            # step-start log-probs, the optimizer); padding: the share of the passes' token slots
            "tokens_per_s": s["input_tokens"] / self.cfg.ppo_epochs / max(peak["seconds"], 1e-9),
            "padding_fraction": 1.0 - s["input_tokens"] / max(s["input_slots"], 1.0),
        }
        if self.device.type == "cuda":
            # trained tokens: every epoch's forward + backward (the no-grad passes are not counted)
            util = mfu(self.num_params, s["input_tokens"], peak["seconds"], torch.cuda.get_device_name(self.device))
            if util is not None:
                metrics["perf/mfu"] = util
        if reference:  # the learner's own reference copy, or one sent with the batch (ASFT: its anchor)
            metrics["kl"] = s["kl"] / passes
            metrics["kl_loss"] = s["kl_loss"] / steps
        for prefix, key in (("logprob_mismatch", "mismatch"), ("logprob_mismatch_lag0", "mismatch_lag0"),
                            ("version_lag", "version_lag")):
            if s[f"{key}_tokens"] > 0:
                metrics[f"{prefix}_mean"] = s[f"{key}_sum"] / s[f"{key}_tokens"]
                metrics[f"{prefix}_max"] = peak[f"{key}_max"]
        return metrics

    # ------------------------------------------------------------------------------------------
    # Weights, evaluation, checkpoints

    @torch.no_grad()
    def compute_logprobs(self, samples: list[TrainSample], *, reference: bool = False) -> list[list[float]]:
        """Completion-token log-probs under the current (or the reference) weights, one list per
        sample, at the learner's temperature. Under FSDP call it on every rank with the same count."""
        model = self.ref_model if reference else self.model
        if model is None:
            raise RuntimeError(
                "no reference model on the learner: it is loaded only when algo.kl.coef > 0 and "
                "cluster.reference.placement is 'learner'"
            )
        return sequence_logprobs(model, samples, pad_id=self.pad_id, device=self.device, temperature=self.temperature,
                                 max_tokens=self.cfg.max_tokens_per_micro_batch, max_seqs=self.cfg.micro_batch_size,
                                 precision=self._autocast)

    @torch.no_grad()
    def ref_kl(self, samples: list[TrainSample]) -> float:
        """Token-mean of the configured KL estimator between the current policy and the reference
        over the samples' counted completion tokens (0 before any update)."""
        current = self.compute_logprobs(samples)
        ref = self.compute_logprobs(samples, reference=True)
        estimator = KL_ESTIMATORS.get(self.algo.kl.estimator)
        total, n = 0.0, 0
        for s, lp, rp in zip(samples, current, ref):
            mask = torch.tensor(s.loss_mask or [1] * len(lp), dtype=torch.float64)
            kl = estimator(torch.tensor([lp], dtype=torch.float64), torch.tensor([rp], dtype=torch.float64))
            total += float((kl[0] * mask).sum())
            n += int(mask.sum())
        return total / max(n, 1)

    def state_dict_for_sync(self) -> dict[str, torch.Tensor]:
        """The full model as Hugging Face-named CPU tensors in the serving dtype, on rank 0 (other
        ranks return ``{}``); loadable by ``load_state_dict`` of a fresh HF model and by vLLM's
        ``load_weights``. Tied weights share one tensor. Under FSDP this is a collective."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            full = get_model_state_dict(
                self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
            return {k: v.to(self.serving_dtype) for k, v in full.items()} if self.rank == 0 else {}
        if self.rank != 0:
            return {}
        copies: dict[int, torch.Tensor] = {}  # keyed by storage, so tied weights are copied once
        out = {}
        for name, t in self.model.state_dict().items():
            key = t.untyped_storage().data_ptr()
            if key not in copies:
                copies[key] = t.detach().to("cpu", self.serving_dtype, copy=True)
            out[name] = copies[key]
        return out

    def push_weights(
        self, backend: str, params: dict[str, Any], version: int, workers: list[Any]
    ) -> Any:
        """Push the current weights to the rollout ``workers`` with the named weight-sync backend,
        from rank 0, so the state dict never travels through the driver. Call it on every rank
        (under FSDP gathering the full weights is a collective); rank 0 returns the ``SyncStats``,
        the others None."""
        from actors.weight_sync import make_weight_sync

        sync = make_weight_sync(backend, **params)  # a bad backend fails on every rank alike
        state = self.state_dict_for_sync()
        if self.rank != 0:
            return None
        return sync.push(state, version, workers)

    def save_pretrained(self, path: str) -> str:
        """Write the model (safetensors) and its tokenizer to ``path`` in Hugging Face format; rank 0
        writes, every rank returns once it is written."""
        state = self.state_dict_for_sync()

        def write() -> None:
            if self.rank != 0:
                return
            Path(path).mkdir(parents=True, exist_ok=True)
            self.model.save_pretrained(path, state_dict=state, safe_serialization=True)
            try:
                from transformers import AutoTokenizer

                AutoTokenizer.from_pretrained(self.tokenizer_path).save_pretrained(path)
            except (OSError, ValueError) as err:  # a model without a tokenizer can still be saved
                logger.warning("no tokenizer saved with the checkpoint: %s", err)

        self._on_every_rank(write)
        return path

    def save_checkpoint(self, path: str, *, weights_only: bool = False) -> str:
        """``save_pretrained`` plus, unless ``weights_only``, this rank's training state in
        ``path/trainer_state/learner-rank<r>.pt``: the optimizer (AdamW moments and step counts), the
        version (which drives the LR schedule), the skip counter and the torch RNG state; under FSDP
        also the rank's fp32 master shards (the Hugging Face files hold the serving dtype).

        Any failure to write (a full disk shows up as a ``SafetensorError`` from safetensors, not an
        ``OSError``) is raised as an ``OSError``, which the driver treats as a failed checkpoint."""
        try:
            return self._save_checkpoint(path, weights_only)
        except OSError:
            raise
        except Exception as err:
            raise OSError(f"writing the checkpoint {path} failed: {type(err).__name__}: {err}") from err

    def _save_checkpoint(self, path: str, weights_only: bool) -> str:
        self.save_pretrained(path)
        if weights_only:
            return path
        state_dir = Path(path) / "trainer_state"
        state = {
            "optimizer": self.optimizer.state_dict(),
            "version": self.version,
            "skipped_total": self.skipped_total,
            "world_size": self.world_size,
            "torch_rng": torch.get_rng_state(),
        }
        if self.sharded:
            state["master"] = self.model.state_dict()

        def write() -> None:
            state_dir.mkdir(parents=True, exist_ok=True)
            torch.save(state, state_dir / f"learner-rank{self.rank}.pt")

        self._on_every_rank(write)
        return path

    def load_checkpoint(self, path: str) -> int:
        """Restore what ``save_checkpoint`` wrote (same number of ranks); returns the version. The
        reference model is not part of it (the driver restores it with ``set_reference``)."""
        file = Path(path) / "trainer_state" / f"learner-rank{self.rank}.pt"
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing: the checkpoint is weights-only or from fewer learner ranks")
        state = torch.load(file, map_location="cpu", weights_only=False)
        if state["world_size"] != self.world_size:
            raise ValueError(
                f"the checkpoint was written by {state['world_size']} learner ranks, this run has "
                f"{self.world_size}: resume with learner.num_ranks={state['world_size']}"
            )
        if self.sharded:
            self.model.load_state_dict(state["master"])
        else:
            saved = load_causal_lm(path, self._model_cfg, self.serving_dtype)
            with torch.no_grad():
                self.model.load_state_dict(saved.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.version, self.skipped_total = state["version"], state["skipped_total"]
        torch.set_rng_state(state["torch_rng"])
        return self.version

    def set_reference(self, path: str, *, save: bool = False) -> None:
        """Make the model at ``path`` (Hugging Face format) the frozen reference of the KL term.
        With ``save``, first write the current policy there (rank 0 writes; call it on every rank),
        so the reference becomes the policy as it stands: what an RL stage after an SFT stage
        measures its KL against. Ranks without their own reference copy only save."""
        if save:
            self.save_pretrained(path)
        if self.ref_model is not None:
            self.ref_model = None  # free the old copy before loading the new one
            self.ref_model = self._load_placed(path, frozen=True)

    def _load_placed(self, path: str, *, frozen: bool = False) -> torch.nn.Module:
        """The causal LM at ``path`` on this rank's device: an FSDP2 shard, or a full replica."""
        model = load_causal_lm(path, self._model_cfg, self._load_dtype)
        if frozen:
            model.requires_grad_(False)
        if self.sharded:
            fsdp2_shard(model, self.device, self.world_size, self._compute_dtype)
        else:
            model.to(self.device)
        return model

    def get_version(self) -> int:
        """Number of train steps applied (the policy version the rollout engines should serve)."""
        return self.version

    def sees(self, path: str) -> bool:
        """Whether ``path`` exists on this rank's node (the run directory must, for checkpoints)."""
        return Path(path).exists()
