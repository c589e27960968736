"""Generation by the rollout workers: ``rollout`` (sampling, engines, weight sync, asynchrony).

``weight_sync`` names a backend of ``rlft.weight_sync.WEIGHT_SYNCS``; the backend and its
``weight_sync_params`` are checked against the backend's settings when the config loads. The choice may
also be written as one ``{name, params}`` mapping, like the other plug-in points:

>>> RolloutConfig(weight_sync={"name": "object_store", "params": {"bucket_bytes": "1024"}}).weight_sync_params
{'bucket_bytes': 1024}
>>> RolloutConfig(weight_sync="shmm")
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for RolloutConfig
weight_sync
  Value error, unknown weight sync backend 'shmm' (did you mean 'shm'?); valid names: object_store, shm [...]
...
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from rlft.config.base import NonNegative, Section
from rlft.weight_sync import WEIGHT_SYNCS


class RolloutConfig(Section):
    num_workers: Annotated[int, Field(ge=1)] = 1
    """Number of rollout workers, one vLLM engine each."""
    prompts_per_step: Annotated[int, Field(ge=1)] = 8
    """Prompts sampled per training step; the batch holds prompts_per_step * group_size completions."""
    group_size: Annotated[int, Field(ge=1)] = 8
    """Completions generated per prompt (G); group-relative estimators need at least 2."""
    temperature: NonNegative = 1.0
    """Sampling temperature; 0 is greedy."""
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Nucleus sampling mass."""
    top_k: int = -1
    """Sample from the k most likely tokens; -1 disables."""
    max_new_tokens: Annotated[int, Field(ge=1)] = 128
    """Maximum completion length in tokens."""
    stop: list[str] = []
    """Strings that end a completion."""
    seed: int | None = None
    """Sampling seed; None derives it from the run's seed."""
    tensor_parallel_size: Annotated[int, Field(ge=1)] = 1
    """GPUs per engine (tensor parallelism); 1 on CPU."""
    engine_kwargs: dict[str, Any] = {}
    """Extra keyword arguments for the vLLM engine, over rlft's defaults."""
    weight_sync: str = "shm"
    """How new weights reach the engines, a backend of ``rlft.weight_sync.WEIGHT_SYNCS``: ``shm``
    (safetensors files in /dev/shm, same machine), ``object_store`` (Ray object store, across
    machines), or a plugin's. ``{name, params}`` is accepted too."""
    weight_sync_params: dict[str, Any] = {}
    """Backend options, e.g. ``{bucket_bytes: 67108864}`` (checked against the backend when the config loads)."""
    max_staleness: Annotated[int, Field(ge=0)] = 0
    """Asynchronous pipeline: the engines generate the batches of up to this many upcoming steps while
    the learner trains, so a batch may hold rollouts of policy versions ``v - k .. v``; older ones are
    dropped (``async/stale_dropped``). 0 is the synchronous loop (generate, score, train, sync)."""
    inflight_updates: Literal["wait", "abort"] = "wait"
    """With ``max_staleness > 0``, how new weights reach engines that are generating: ``wait`` loads
    them once the engine's current request finishes; ``abort`` stops its unfinished groups, loads,
    and re-issues those groups under the new weights (fresher samples, some generation thrown away)."""

    @model_validator(mode="before")
    @classmethod
    def _weight_sync_choice(cls, data: Any) -> Any:
        """``weight_sync: {name, params}`` is the same choice as ``weight_sync`` + ``weight_sync_params``."""
        if not (isinstance(data, dict) and isinstance(data.get("weight_sync"), dict)):
            return data
        choice = dict(data["weight_sync"])
        unknown = sorted(set(choice) - {"name", "params"})
        if unknown:
            raise ValueError(f"weight_sync takes 'name' and 'params', not {', '.join(map(repr, unknown))}")
        if "params" in choice and data.get("weight_sync_params"):
            raise ValueError("give the weight-sync params once: in weight_sync.params or in weight_sync_params")
        out = {**data, "weight_sync": choice.get("name", "shm")}
        if "params" in choice:
            out["weight_sync_params"] = choice["params"]
        return out

    @field_validator("weight_sync")
    @classmethod
    def _known_weight_sync(cls, name: str) -> str:
        WEIGHT_SYNCS.get(name)  # raises with the valid names
        return name

    @field_validator("weight_sync_params")
    @classmethod
    def _weight_sync_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("weight_sync")
        if name is None:  # the name itself failed; that error is reported
            return params
        return WEIGHT_SYNCS.validate_params(name, params)

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, k: int) -> int:
        if k != -1 and k < 1:
            raise ValueError(f"top_k must be -1 (off) or >= 1, got {k}")
        return k
