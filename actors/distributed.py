"""What the learner and critic ranks share beneath their roles: joining the process group, reductions
that every rank must agree on, gradient all-reduce in buckets, FSDP2 sharding, and loading a causal
LM onto the rank's device.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from rlft.config import ModelConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_BUCKET_ELEMENTS = 1 << 25  # gradient all-reduce bucket: 32M elements bounds the extra memory


def all_reduce(t: torch.Tensor, device: torch.device, op: Any = None) -> torch.Tensor:
    """All-reduce ``t`` (SUM by default) across the process group, on ``device``; the identity
    without a group (a single rank)."""
    if not dist.is_initialized():
        return t
    t = t.to(device)
    dist.all_reduce(t, op=op if op is not None else dist.ReduceOp.SUM)
    return t.cpu()


def on_every_rank(write: Callable[[], None], device: torch.device, role: str) -> None:
    """Run ``write`` (this rank's part of a checkpoint) and agree with the other ranks on the
    outcome: if any rank failed, every rank raises ``OSError`` (none is left waiting in a
    collective the failed one never reaches)."""
    error: BaseException | None = None
    try:
        write()
    except Exception as err:
        error = err
    failed = all_reduce(torch.tensor([0.0 if error is None else 1.0]), device, dist.ReduceOp.MAX)
    if isinstance(error, OSError):
        raise error
    if error is not None:
        raise OSError(f"writing the {role} checkpoint failed: {type(error).__name__}: {error}") from error
    if failed.item():
        raise OSError(f"another {role} rank failed to write its part of the checkpoint")


def join_process_group(device: torch.device, rank: int, world_size: int, addr: str, port: int) -> None:
    """Join the ranks' torch.distributed group at ``addr:port`` (NCCL on CUDA, gloo on CPU)."""
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        init_method=f"tcp://{addr}:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(minutes=30),
        device_id=device if device.type == "cuda" else None,
    )


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                "learner.device is 'cuda' but this rank sees no GPU; reserve GPUs for the learner "
                "with cluster.learner.gpus"
            )
        # Ray exposes each rank's GPU as device 0 through CUDA_VISIBLE_DEVICES.
        torch.cuda.set_device(0)
        return torch.device("cuda", 0)
    return torch.device("cpu")


def load_causal_lm(path: str, model_cfg: ModelConfig, dtype: torch.dtype) -> torch.nn.Module:
    """A Hugging Face causal LM with dropout off: the policy ratio compares two forwards of the same
    weights, which must give the same numbers."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path, trust_remote_code=model_cfg.trust_remote_code)
    for key, value in config.to_dict().items():
        if "dropout" in key and isinstance(value, float):
            setattr(config, key, 0.0)
    model = AutoModelForCausalLM.from_pretrained(
        path, config=config, dtype=dtype, trust_remote_code=model_cfg.trust_remote_code
    )
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.config.use_cache = False
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()  # transformers only recomputes activations in training mode; dropout is off
    else:
        model.eval()
    return model


def fsdp2_shard(
    model: torch.nn.Module, device: torch.device, world_size: int, compute_dtype: torch.dtype
) -> None:
    """Shard ``model`` over all ranks with FSDP2 (torch >= 2.6): each transformer block (the
    classes transformers lists in ``_no_split_modules``) is one unit, the root takes the rest (the
    embeddings, tied or not, and the head). Gradients are reduce-scattered as a SUM, because the
    loss is already divided by global counts. Each rank loads the full model into CPU memory first
    and keeps only its shard on the device; models too large for host memory need meta-device
    initialisation, which this path does not do."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    mp = MixedPrecisionPolicy(
        param_dtype=None if compute_dtype == torch.float32 else compute_dtype, reduce_dtype=torch.float32
    )
    blocks = set(getattr(model, "_no_split_modules", None) or ())
    for module in list(model.modules()):
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)  # moves the local shards to the mesh's device
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            # a plain SUM collective: the default PREMUL_SUM exists in NCCL only, not in gloo
            module.set_force_sum_reduction_for_comms(True)


def all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
    """SUM-all-reduce the gradients of a replicated model through flat buckets (one collective per
    bucket instead of one per tensor). A rank with no data contributes zeros."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in params:
        by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in by_dtype.values():
        for bucket in _buckets(grads, _BUCKET_ELEMENTS):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat)
            offset = 0
            for g in bucket:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()


def _buckets(tensors: list[torch.Tensor], max_elements: int) -> list[list[torch.Tensor]]:
    """Consecutive groups of at most ``max_elements`` elements (a larger tensor is a group alone)."""
    groups: list[list[torch.Tensor]] = [[]]
    size = 0
    for t in tensors:
        if groups[-1] and size + t.numel() > max_elements:
            groups.append([])
            size = 0
        groups[-1].append(t)
        size += t.numel()
    return [g for g in groups if g]
