"""The weight-sync backends a config can name: the ``WEIGHT_SYNCS`` registry and the built-in
backends' settings.

``rollout.weight_sync`` is a ``{name, params}`` choice over ``WEIGHT_SYNCS`` like every other plug-in
point, checked when the config loads (before any actor starts, in a process without Ray): a backend
is registered by a keyword-only class whose fields are its params. The built-in backends are
registered here by their settings alone; ``actors.weight_sync`` subclasses each with the transfer
itself (``push``) and builds it with ``make_weight_sync``.

>>> WEIGHT_SYNCS.validate_params("shm", {"bucket_bytes": "1024"})
{'bucket_bytes': 1024}
>>> WEIGHT_SYNCS.validate_params("shm", {"bucket_byte": 1024})
Traceback (most recent call last):
...
rlft.algorithms.registry.ParamError: unknown parameter 'bucket_byte' for weight sync backend 'shm' (did you mean 'bucket_bytes'?); valid parameters: bucket_bytes, root, wait_s

A backend of your own (vLLM's NCCL or IPC weight-transfer engines on GPUs, say) is one class, with
its settings and its ``push``, registered from a module listed in the config's ``plugins:``::

    from rlft.weight_sync import WEIGHT_SYNCS

    @WEIGHT_SYNCS.register("nccl")
    @dataclass(kw_only=True)
    class NcclWeightSync:
        group_port: int = 29600
        def push(self, state_dict, version, workers) -> SyncStats: ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from annotated_types import Gt

from rlft.algorithms.registry import Registry

DEFAULT_BUCKET_BYTES = 64 * 2**20

WEIGHT_SYNCS: Registry = Registry("weight sync backend")
"""Weight-sync backends by name: ``shm``, ``object_store``, or a plugin's."""


@WEIGHT_SYNCS.register("shm")
@dataclass(kw_only=True)
class ShmSettings:
    """``shm``: buckets as safetensors files in shared memory; every worker on this machine reads them."""

    bucket_bytes: Annotated[int, Gt(0)] = DEFAULT_BUCKET_BYTES
    """Approximate size of one file."""
    root: str = "/dev/shm"
    """Directory (a RAM-backed file system) under which each sync makes its own directory."""
    wait_s: Annotated[float, Gt(0)] = 600.0
    """How long a worker waits for the next bucket file before giving up."""


@WEIGHT_SYNCS.register("object_store")
@dataclass(kw_only=True)
class ObjectStoreSettings:
    """``object_store``: buckets put once into Ray's object store; each worker pulls them one at a time."""

    bucket_bytes: Annotated[int, Gt(0)] = DEFAULT_BUCKET_BYTES
    """Approximate size of one object."""
