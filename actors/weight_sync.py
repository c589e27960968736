"""Weight-sync backends: move a learner's state dict into every rollout worker's engine.

A backend takes a ``dict[str, torch.Tensor]`` of Hugging Face parameter names (what
``model.state_dict()`` of a transformers model gives) and a list of ``RolloutWorker`` actor handles,
and returns when every engine serves the new weights under the new policy version::

    sync = make_weight_sync("shm")                   # or "object_store"; params are checked by name
    stats = sync.push(model.state_dict(), version=3, workers=rollout_actors)
    print(stats.bytes / stats.seconds / 1e9, "GB/s")

Backends (registry ``WEIGHT_SYNCS`` in ``rlft.weight_sync``, where each built-in backend is registered
by its settings so the config checks ``rollout.weight_sync`` and its params when it loads; here each
is subclassed with its ``push``. ``make_weight_sync(name, **params)`` validates params against the
backend's keyword-only fields, like the algorithm registries do):

``shm``
    The sender writes the tensors as safetensors files of about ``bucket_bytes`` each into a fresh
    directory under ``/dev/shm`` (RAM), every worker memory-maps them and streams them into its
    engine — starting with the first file while the sender writes the next — then the directory is
    deleted, also when something fails. Sender and workers must share a machine.
``object_store``
    Each bucket is ``ray.put`` once (raw bytes as NumPy arrays, which Ray stores without pickling
    the data and hands back zero-copy); each worker fetches the buckets one at a time while its
    engine loads them. Works across machines; needs the engine in the worker's process (tensor
    parallel 1).

Both make one RPC per worker per sync (carrying the list of bucket handles), never one per
parameter: vLLM's in-place reload must see all weights in one stream (``actors/vllm_ext.py``).
Tensors that alias another entry (a tied ``lm_head.weight`` shares the embedding's storage) are sent
once, under the first name; the engine ties them itself and rlft rebuilds the tied head's CPU kernel
after the load. Tensors on an accelerator are copied to host memory first.

GPU backends (vLLM's ``vllm.distributed.weight_transfer`` NCCL / IPC engines, which broadcast from
the learner's devices straight into the engines' without a host copy) plug in by registering a class
with the same ``push`` under a new name, from a module in the config's ``plugins:``::

    from rlft.weight_sync import WEIGHT_SYNCS

    @WEIGHT_SYNCS.register("nccl")
    @dataclass(kw_only=True)
    class NcclWeightSync:
        def push(self, state_dict, version, workers) -> SyncStats: ...
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from actors.vllm_ext import ABORT_MARKER, SAFETENSORS_DTYPES
from rlft.weight_sync import DEFAULT_BUCKET_BYTES, WEIGHT_SYNCS, ObjectStoreSettings, ShmSettings

# torch dtype -> safetensors dtype code: the inverse of the reader's table
_ST_CODES = {dtype: code for code, dtype in SAFETENSORS_DTYPES.items()}


@dataclass(frozen=True)
class SyncStats:
    """What one ``push`` moved: payload bytes (once, not per worker), seconds, buckets, tensors.

    ``load_seconds`` is the slowest worker's own load time (engine reload, kernel refresh, cache
    reset); ``seconds - load_seconds`` is roughly the sender's share (bucketing, writing or
    putting).
    """

    bytes: int
    seconds: float
    buckets: int
    tensors: int
    version: int
    load_seconds: float


class WeightSync(Protocol):
    """Anything that can make every rollout worker serve ``state_dict`` as policy ``version``."""

    def push(
        self, state_dict: Mapping[str, torch.Tensor], version: int, workers: Sequence[Any]
    ) -> SyncStats: ...


def make_weight_sync(name: str, **params: Any) -> WeightSync:
    """The backend registered as ``name``, built with ``params`` checked against its fields (a
    built-in backend's registered settings are built as their implementation here)."""
    checked = WEIGHT_SYNCS.validate_params(name, params)
    registered = WEIGHT_SYNCS.get(name)
    cls = _IMPLEMENTATIONS.get(registered, registered)
    if not callable(getattr(cls, "push", None)):
        raise TypeError(
            f"weight sync backend '{name}' ({cls!r}) has no push(state_dict, version, workers) method"
        )
    return cls(**checked)


# --------------------------------------------------------------------------------------------------
# Bucketing


Bucket = list[tuple[str, torch.Tensor]]


def plan_buckets(
    state_dict: Mapping[str, torch.Tensor], bucket_bytes: int = DEFAULT_BUCKET_BYTES
) -> list[Bucket]:
    """Split ``state_dict`` in order into buckets of about ``bucket_bytes`` (big tensors alone).

    Tensors become contiguous host tensors; an entry aliasing an earlier one (same storage, offset,
    shape, stride and dtype) is dropped. Order is kept, so a layer's weights stay together.
    """
    if not state_dict:
        raise ValueError("the state dict to sync is empty")
    buckets: list[Bucket] = []
    current: Bucket = []
    size = 0
    seen: set[tuple[Any, ...]] = set()
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"state dict entry '{name}' is a {type(tensor).__name__}, not a tensor")
        if tensor.dtype not in _ST_CODES:
            raise TypeError(f"state dict entry '{name}' has unsupported dtype {tensor.dtype}")
        key = (
            tensor.device,
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tensor.stride(),
            tensor.dtype,
        )
        if key in seen:
            continue
        seen.add(key)
        host = tensor.detach().to("cpu").contiguous()
        if current and size + host.nbytes > bucket_bytes:
            buckets.append(current)
            current, size = [], 0
        current.append((name, host))
        size += host.nbytes
    if current:
        buckets.append(current)
    return buckets


def _raw_bytes(tensor: torch.Tensor) -> np.ndarray:
    """A zero-copy uint8 NumPy view of a contiguous host tensor (works for bfloat16 too)."""
    return tensor.reshape(-1).view(torch.uint8).numpy()


# --------------------------------------------------------------------------------------------------
# shm: safetensors files in /dev/shm


def write_safetensors(bucket: Bucket, path: str | os.PathLike[str]) -> int:
    """Write ``bucket`` as a standard safetensors file, streaming each tensor's bytes; return bytes.

    ``safetensors.torch.save_file`` would first serialise the whole bucket into one bytes object;
    this writes each tensor's memory directly (one copy: tensor -> page cache).
    """
    header: dict[str, Any] = {}
    offset = 0
    for name, tensor in bucket:
        header[name] = {
            "dtype": _ST_CODES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format aligns the data section to 8 bytes
    with open(path, "wb") as f:
        f.write(len(encoded).to_bytes(8, "little"))
        f.write(encoded)
        for _, tensor in bucket:
            if tensor.nbytes:
                f.write(memoryview(_raw_bytes(tensor)))
    return offset


class ShmWeightSync(ShmSettings):
    """Buckets as safetensors files in shared memory; every worker on this machine reads them
    (``bucket_bytes``, ``root``, ``wait_s``: ``rlft.weight_sync.ShmSettings``)."""

    def push(
        self, state_dict: Mapping[str, torch.Tensor], version: int, workers: Sequence[Any]
    ) -> SyncStats:
        import ray

        _check_workers(workers)
        start = time.perf_counter()
        buckets = plan_buckets(state_dict, self.bucket_bytes)
        directory = tempfile.mkdtemp(prefix=f"rlft-weights-v{version}-", dir=self.root)
        names = [f"bucket-{i:05d}.safetensors" for i in range(len(buckets))]
        paths = [os.path.join(directory, name) for name in names]
        # workers start loading at once and wait for each file: writing overlaps with loading
        pending = [w.load_weights.remote(paths, version, wait_s=self.wait_s) for w in workers]
        try:
            total = 0
            for bucket, path in zip(buckets, paths):
                total += write_safetensors(bucket, path + ".part")
                os.replace(path + ".part", path)  # readers only ever see complete files
            loads = ray.get(pending)
        except BaseException:
            open(os.path.join(directory, ABORT_MARKER), "w").close()  # waiting workers give up
            ray.wait(pending, num_returns=len(pending), timeout=60.0)
            raise
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return _stats(buckets, total, start, version, loads)


# --------------------------------------------------------------------------------------------------
# object_store: raw-byte buckets in Ray's object store


def pack_bucket(bucket: Bucket) -> tuple[list[tuple[str, str, list[int]]], list[np.ndarray]]:
    """``(specs, arrays)``: names, dtypes and shapes, and each tensor's raw bytes as a NumPy view.

    Ray serialises NumPy arrays out of band (a single copy into the object store) and deserialises
    them as read-only views of shared memory, which ``unpack_bucket`` turns back into tensors.
    """
    specs = [(name, str(t.dtype).removeprefix("torch."), list(t.shape)) for name, t in bucket]
    return specs, [_raw_bytes(t) for _, t in bucket]


def unpack_bucket(packed: tuple[list[Any], list[np.ndarray]]) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` views of a packed bucket (read-only memory: only read them)."""
    import warnings

    specs, arrays = packed
    for (name, dtype, shape), raw in zip(specs, arrays, strict=True):
        if raw.size == 0:
            yield name, torch.empty(shape, dtype=getattr(torch, dtype))
            continue
        with warnings.catch_warnings():  # "non-writable array": the loader only copies out of it
            warnings.simplefilter("ignore", UserWarning)
            flat = torch.from_numpy(raw)
        yield name, flat.view(getattr(torch, dtype)).reshape(shape)


class ObjectStoreWeightSync(ObjectStoreSettings):
    """Buckets put once into Ray's object store; each worker pulls them one at a time
    (``bucket_bytes``: ``rlft.weight_sync.ObjectStoreSettings``)."""

    def push(
        self, state_dict: Mapping[str, torch.Tensor], version: int, workers: Sequence[Any]
    ) -> SyncStats:
        import ray

        _check_workers(workers)
        start = time.perf_counter()
        buckets = plan_buckets(state_dict, self.bucket_bytes)
        refs = [ray.put(pack_bucket(bucket)) for bucket in buckets]
        # refs inside a list are passed as handles (not resolved), so workers fetch them lazily
        loads = ray.get([w.load_weights.remote(refs, version) for w in workers])
        del refs  # the objects are freed once no worker holds them
        total = sum(t.nbytes for bucket in buckets for _, t in bucket)
        return _stats(buckets, total, start, version, loads)


_IMPLEMENTATIONS: dict[Any, type] = {ShmSettings: ShmWeightSync, ObjectStoreSettings: ObjectStoreWeightSync}
"""The built-in backends: their registered settings (``rlft.weight_sync``) -> the class that pushes."""


def _stats(
    buckets: list[Bucket], total: int, start: float, version: int, loads: list[dict[str, float]]
) -> SyncStats:
    return SyncStats(
        bytes=total,
        seconds=time.perf_counter() - start,
        buckets=len(buckets),
        tensors=sum(map(len, buckets)),
        version=version,
        load_seconds=max(load["seconds"] for load in loads),
    )


def _check_workers(workers: Sequence[Any]) -> None:
    if not workers:
        raise ValueError("no rollout workers to sync")
    for w in workers:
        if not hasattr(w, "load_weights"):
            raise TypeError(f"{w!r} is not a RolloutWorker actor handle (no load_weights method)")
