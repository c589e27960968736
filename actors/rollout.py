"""RolloutWorker: one vLLM engine that samples groups of completions and takes new weights.

A plain class; the driver makes it a Ray actor with ``ray.remote(RolloutWorker)`` (one CPU or one
GPU set per actor). Example (in-process, no Ray)::

    worker = RolloutWorker("path/to/model", RolloutConfig(), ModelConfig(), seed=0)
    rollouts = worker.generate([Prompt("p0", token_ids=[5, 6, 7])], SamplingSettings(n=4))

**Logprobs.** The engine runs with vLLM's ``logprobs_mode="processed_logprobs"``: each
``Rollout.rollout_logprobs[t]`` is the log-probability of the sampled token under the distribution
it was actually drawn from — ``log_softmax(processed logits)`` where the processed logits are the
model's logits divided by ``temperature`` and then truncated by top-k / top-p (tokens outside the
kept set get ``-inf``, so the kept ones are renormalised). What a learner should compare with:

* ``top_p == 1`` and ``top_k == -1``: the learner's ``log_softmax(logits / temperature)`` at the
  sampled token equals the rollout logprob up to numerics (about 1e-6 in fp32 on the tiny model;
  the integration tests require < 1e-3 after a weight sync).
* with top-k / top-p: the rollout logprob is ``log_softmax(logits / temperature) - log(kept mass)``,
  larger than the learner's untruncated value by the log of the renormalisation (+0.09 nats per
  token measured at temperature 0.7, top_p 0.9 on the tiny model), and always finite since only
  kept tokens are sampled. A learner that does not re-apply the same truncation sees this
  systematic gap; importance ratios against ``rollout_logprobs`` then carry that bias
  (``algo.tis_cap`` bounds it, but does not remove it).
* ``temperature == 0`` (greedy): vLLM does not apply a temperature; the logprobs are those of the
  untempered distribution, ``log_softmax(logits)``.

**Seeds.** With ``SamplingSettings.seed`` set, prompt ``i`` is sampled with its own generator seeded
from ``(seed, group_id)``, and vLLM seeds its ``n`` children ``s, s+1, ..., s+n-1``: the same call
on any worker gives the same completions. With ``seed=None`` the engine's RNG (seeded with
``seed + worker_index`` at start) is used, so workers sample differently. A seeded prompt samples
the same whatever else shares its batch, also when its prefill is split over engine steps
(chunked prefill): the worker extension keeps the discarded partial-prefill samples from consuming
its generator (``actors/vllm_ext.py``, ``rlft_keep_seeds_on_discard``).

**Streaming and abort.** ``generate_stream`` drives the engine step by step and yields each
prompt's group (its ``n`` rollouts, exactly what ``generate`` returns for it) as soon as the group is
finished, so an asynchronous trainer can score early groups while later ones still decode. It can
be cut short: ``request_abort(upto_call_id)`` (a Ray actor created with the ``CONTROL_GROUP``
concurrency group runs it beside the stream) makes every call with ``call_id <= upto_call_id`` abort
its unfinished requests after the current engine step and end with ``Aborted(group_ids)``, the
groups to re-issue; partial completions are dropped, never returned. Everything else (``generate``,
``generate_stream``, ``load_weights``) stays in the actor's default group of one thread, so a
``load_weights`` submitted during a stream runs after it.

**Weights.** ``load_weights`` streams every tensor through ``reload_weights`` inside the engine (see
``actors/vllm_ext.py`` for why each step is needed), rebuilds CPU GEMM handles that reload leaves
stale (tied ``lm_head``), resets the prefix cache (KV computed under old weights must not be
reused), then sets the policy version stamped on later rollouts.

**Process layout.** The engine core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``):
vLLM then calls the worker extension directly, so in-memory tensors (Ray object-store buckets) reach
the weights without serialisation. On CPU the torch thread count is taken from ``OMP_NUM_THREADS``
(Ray sets it to the actor's ``num_cpus``); an unpinned in-process engine that oversubscribes the
cores measured ~3x slower than one thread per reserved core on a loaded 2-core machine.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rlft.config import ModelConfig, RolloutConfig
from rlft.types import Prompt, Rollout, SamplingSettings

EXTENSION = "actors.vllm_ext.RlftWorkerExtension"
LOGPROBS_MODE = "processed_logprobs"
CPU_GPU_MEMORY_UTILIZATION = 0.1  # on CPU: fraction of RAM for the KV cache (vLLM's 0.92 fails)
CONTROL_GROUP = "control"
"""The Ray concurrency group ``request_abort`` is called through, so it runs beside a stream."""


@dataclass(frozen=True)
class Aborted:
    """Last item of an aborted ``generate_stream``: the groups none of whose completions were returned."""

    group_ids: list[int]


def engine_kwargs(
    model_path: str, rollout_cfg: RolloutConfig, model_cfg: ModelConfig, *, seed: int, on_cpu: bool
) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM``: rlft's defaults, ``rollout_cfg.engine_kwargs`` on top.

    Two settings are not defaults but requirements (the logprob semantics and the weight-update path
    depend on them); overriding them with another value is an error.
    """
    kwargs: dict[str, Any] = {
        "model": model_path,
        "tokenizer": model_cfg.tokenizer or model_path,
        "dtype": model_cfg.dtype,
        "trust_remote_code": model_cfg.trust_remote_code,
        "seed": seed,
        "tensor_parallel_size": rollout_cfg.tensor_parallel_size,
    }
    if on_cpu:
        # eager: torch.compile's inductor takes minutes on 2 cores; the KV cache is sized from RAM
        kwargs["enforce_eager"] = True
        if "kv_cache_memory_bytes" not in rollout_cfg.engine_kwargs:
            kwargs["gpu_memory_utilization"] = CPU_GPU_MEMORY_UTILIZATION
    kwargs.update(rollout_cfg.engine_kwargs)
    for key, required in (("logprobs_mode", LOGPROBS_MODE), ("worker_extension_cls", EXTENSION)):
        if kwargs.setdefault(key, required) != required:
            raise ValueError(
                f"rollout.engine_kwargs.{key}={kwargs[key]!r} is not supported: rlft needs "
                f"{required!r} (rollout logprobs must be those of the sampling distribution, and "
                "weight updates run through rlft's worker extension)"
            )
    return kwargs


def request_seed(seed: int, group_id: int) -> int:
    """A per-prompt seed from the step's seed and the prompt's group id (63-bit, deterministic)."""
    return (seed * 0x9E3779B97F4A7C15 + group_id * 0xBF58476D1CE4E5B9 + 1) % (1 << 63)


class _ExpectedReloadGaps(logging.Filter):
    """Drops vLLM's "Failed to load weights" warning for layers an rlft sync leaves out on purpose:
    a tied ``lm_head`` (its tensor is the embedding's, sent once under the embedding's name, and its
    CPU kernel is rebuilt after the load) and rotary embeddings (no trained weights, only a cache).
    Any other layer's warning still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "%s: Failed to load weights" or not record.args:
            return True
        layer = str(record.args[0])
        return not (layer == "ParallelLMHead" or layer.endswith("RotaryEmbedding"))


class RolloutWorker:
    """Owns one ``vllm.LLM``; samples groups of completions and loads new policy weights."""

    def __init__(
        self,
        model_path: str,
        rollout_cfg: RolloutConfig,
        model_cfg: ModelConfig,
        *,
        seed: int = 0,
        worker_index: int = 0,
        sleep_mode: bool = False,
    ) -> None:
        # must be set before the engine is built: collective_rpc is then a direct call (module doc)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        # vLLM's per-call INFO lines (one per weight reload) would bury the run's own; set
        # VLLM_LOGGING_LEVEL in the actor's runtime_env to see them
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        import torch
        from vllm import LLM
        from vllm.platforms import current_platform

        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").addFilter(
            _ExpectedReloadGaps()
        )
        self._on_cpu = current_platform.is_cpu()
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if self._on_cpu and threads.isdigit() and int(threads) > 0:
            torch.set_num_threads(int(threads))  # before vLLM's CPU worker freezes the thread count
        self.worker_index = worker_index
        kwargs = engine_kwargs(
            model_path, rollout_cfg, model_cfg, seed=seed + worker_index, on_cpu=self._on_cpu
        )
        # colocated with a learner rank: the engine frees its GPU memory while the learner trains
        # (vLLM's sleep mode needs CUDA's allocator; on CPU there is nothing to free)
        self.sleep_mode = sleep_mode and current_platform.is_sleep_mode_available()
        if self.sleep_mode:
            kwargs.setdefault("enable_sleep_mode", True)
        self._asleep = False
        # one worker: vLLM's uni executor runs it in this process, next to the engine core
        workers = kwargs["tensor_parallel_size"] * kwargs.get("pipeline_parallel_size", 1)
        self.in_process = workers == 1
        self.llm = LLM(**kwargs)
        # per-prompt seeds would crash a CPU engine at its first chunked prefill (vllm_ext.py)
        if not all(self.llm.collective_rpc("rlft_keep_seeds_on_discard")) and self._on_cpu:
            logging.getLogger(__name__).warning(
                "this vLLM's model runner has no _bookkeeping_sync to patch: seeded sampling may "
                "fail when a prompt's prefill is chunked (raise rollout.engine_kwargs."
                "max_num_batched_tokens if it does)"
            )
        self._tokenizer = self.llm.get_tokenizer()
        self._version = 0
        self._failed_load: str | None = None  # set while a load runs; left set if it failed
        self._abort_upto = -1  # generate_stream calls with call_id <= this abort (request_abort)
        self._request_ids = itertools.count()  # unique engine request ids across calls

    # ------------------------------------------------------------------ state

    def ready(self) -> bool:
        """True once the engine is up (the constructor returned); a cheap call to await actors."""
        return True

    def version(self) -> int:
        """The policy version of the weights the engine serves (0 before any ``load_weights``)."""
        return self._version

    def sleep(self) -> bool:
        """Offload the weights to host memory and free the KV cache (vLLM sleep level 1) so a
        colocated learner rank can use the GPU; False (nothing done) without sleep mode."""
        if not self.sleep_mode or self._asleep:
            return False
        self.llm.sleep(level=1)
        self._asleep = True
        return True

    def wake_up(self) -> bool:
        """Bring the weights back and re-allocate the KV cache; False when it was not asleep."""
        if not self._asleep:
            return False
        self.llm.wake_up()
        self.llm.reset_prefix_cache()
        self._asleep = False
        return True

    # ------------------------------------------------------------------ sampling

    def generate(
        self,
        prompts: list[Prompt],
        sampling: SamplingSettings,
        first_group_id: int = 0,
        group_ids: Sequence[int] | None = None,
    ) -> list[Rollout]:
        """``sampling.n`` completions per prompt; prompt ``i`` gets group id ``first_group_id + i``,
        or ``group_ids[i]`` when given (a load balancer hands a worker non-contiguous prompts; the
        group id also seeds the prompt's sampling, so results do not depend on the split).

        Rollouts come back grouped by prompt, in prompt order, completions in vLLM's index order.
        """
        from vllm.inputs import TokensPrompt

        if group_ids is None:
            group_ids = range(first_group_id, first_group_id + len(prompts))
        self._check_request(prompts, group_ids)
        if not prompts:
            return []
        params = [self._sampling_params(sampling, g) for g in group_ids]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p.token_ids)) for p in prompts],
            params,
            use_tqdm=False,
        )
        version = self._version
        return [
            rollout
            for group_id, prompt, output in zip(group_ids, prompts, outputs, strict=True)
            for rollout in self._group_rollouts(group_id, prompt, output, version)
        ]

    def generate_stream(
        self,
        prompts: list[Prompt],
        sampling: SamplingSettings,
        group_ids: Sequence[int],
        call_id: int = 0,
    ) -> Iterator[list[Rollout] | Aborted]:
        """Yield each prompt's group as soon as all its ``sampling.n`` completions are finished
        (completion order, not prompt order): exactly the rollouts ``generate`` returns for that
        prompt (same seeds, fields and policy version).

        When ``request_abort(upto)`` with ``upto >= call_id`` arrives while it runs (or before it
        starts), the unfinished requests are aborted after the current engine step and
        ``Aborted(group ids not returned)`` is the last item; completions already generated for
        those groups are discarded, so a group is never split across policy versions. A stream
        that ends without ``Aborted`` returned every group. Call ids must grow from call to call
        (an abort covers every call id up to its own). Through Ray::

            gen = actor.generate_stream.options(num_returns="streaming").remote(ps, s, ids, 7)
            actor.request_abort.options(concurrency_group=CONTROL_GROUP).remote(7)  # from anywhere
            for ref in gen:
                item = ray.get(ref)  # a group (list[Rollout]), or Aborted as the last item

        No request of the call is left in the engine when it returns, raises or is closed.
        """
        self._check_request(prompts, group_ids)
        if self._abort_upto >= call_id:  # queued behind its own abort: never started
            if prompts:
                yield Aborted(sorted(group_ids))
            return
        engine, version = self.llm.llm_engine, self._version
        pending: dict[str, tuple[int, Prompt, str]] = {}  # our request id -> group, prompt, vLLM's id
        try:
            for group_id, prompt, engine_input in zip(group_ids, prompts, _render(self.llm, prompts)):
                request_id = f"s{call_id}-{group_id}-{next(self._request_ids)}"
                internal = engine.add_request(
                    request_id, engine_input, self._sampling_params(sampling, group_id)
                )
                pending[request_id] = (group_id, prompt, internal)
            while pending:
                if self._abort_upto >= call_id:  # set by request_abort from the control thread
                    unfinished = sorted(group_id for group_id, _, _ in pending.values())
                    _abort(engine, pending)
                    yield Aborted(unfinished)
                    return
                if not engine.has_unfinished_requests():
                    raise RuntimeError(f"vLLM dropped {len(pending)} request(s) of call {call_id}")
                # an n > 1 request is reported once, finished, when its last child is (FINAL_ONLY)
                for output in engine.step():
                    if output.finished and output.request_id in pending:
                        group_id, prompt, _ = pending.pop(output.request_id)
                        yield self._group_rollouts(group_id, prompt, output, version)
        finally:  # an error, or the consumer closed the stream: free the engine for the next call
            _abort(engine, pending)

    def request_abort(self, upto_call_id: int) -> None:
        """Abort running and queued ``generate_stream`` calls whose ``call_id <= upto_call_id``
        (later calls are never affected). Through Ray it must run while a stream is in progress:
        call it through the actor's ``CONTROL_GROUP`` concurrency group."""
        self._abort_upto = max(self._abort_upto, upto_call_id)  # one int store: no lock needed

    def _check_request(self, prompts: list[Prompt], group_ids: Sequence[int]) -> None:
        if self._failed_load:
            raise RuntimeError(
                f"{self._failed_load}: the engine holds partly updated weights; "
                "call load_weights with the full state dict again before generating"
            )
        for prompt in prompts:
            if not prompt.token_ids:
                raise ValueError(f"prompt '{prompt.prompt_id}' has no token ids")
        if len(group_ids) != len(prompts):
            raise ValueError(f"{len(group_ids)} group ids for {len(prompts)} prompts")

    def _group_rollouts(self, group_id: int, prompt: Prompt, output: Any, version: int) -> list[Rollout]:
        """The ``Rollout``s of one prompt from vLLM's finished ``RequestOutput``."""
        prompt_text = prompt.text or self._tokenizer.decode(prompt.token_ids)
        rollouts = []
        for completion in output.outputs:
            ids = list(completion.token_ids)
            rollouts.append(
                Rollout(
                    prompt_id=prompt.prompt_id,
                    group_id=group_id,
                    prompt_ids=list(prompt.token_ids),
                    completion_ids=ids,
                    rollout_logprobs=_sampled_logprobs(completion, ids, prompt.prompt_id),
                    finish_reason=_finish_reason(completion.finish_reason, prompt.prompt_id),
                    policy_version=version,
                    prompt=prompt_text,
                    completion=completion.text,
                    metadata=dict(prompt.metadata),
                )
            )
        return rollouts

    def _sampling_params(self, sampling: SamplingSettings, group_id: int):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=0 if sampling.top_k == -1 else sampling.top_k,  # vLLM: 0 disables
            max_tokens=sampling.max_new_tokens,
            stop=list(sampling.stop) or None,
            seed=None if sampling.seed is None else request_seed(sampling.seed, group_id),
            logprobs=0,  # the sampled token's logprob only
            flat_logprobs=True,  # a few flat lists per completion instead of a dict per token
            output_kind=RequestOutputKind.FINAL_ONLY,  # one output per request, once finished
        )

    # ------------------------------------------------------------------ weights

    def load_weights(
        self,
        buckets: Sequence[Any],
        version: int,
        *,
        wait_s: float = 0.0,
        refresh_cpu_gemm: bool = True,
    ) -> dict[str, float]:
        """Replace every weight from ``buckets``, reset the prefix cache, serve ``version`` next.

        Each bucket is the path of a safetensors file (the ``shm`` sync; the path must exist on this
        node) or a Ray ``ObjectRef`` of a bucket packed by ``actors.weight_sync.pack_bucket`` (the
        ``object_store`` sync; needs the in-process engine). Buckets are streamed through one
        ``reload_weights`` call, one bucket resident at a time. Names are Hugging Face parameter
        names. With ``wait_s > 0``, files not written yet are waited for (the sender writes while
        the engine loads); their directory must exist already.

        A load that fails midway leaves the engine half-updated: ``generate`` then refuses to run
        until a later ``load_weights`` of the full state dict succeeds.

        ``refresh_cpu_gemm=False`` skips rebuilding CPU GEMM handles; it exists only to demonstrate
        (in tests) the stale tied ``lm_head`` that it otherwise prevents.
        """
        if not buckets:
            raise ValueError("load_weights needs at least one bucket")
        self._check_files_reachable([os.fspath(b) for b in buckets if _is_path(b)], wait_s)
        start = time.perf_counter()
        if all(_is_path(b) for b in buckets):
            method, source = "rlft_load_safetensors", [os.fspath(b) for b in buckets]
            kwargs = {"refresh_cpu_gemm": refresh_cpu_gemm, "wait_s": wait_s}
        elif self.in_process:
            method, source = "rlft_load_tensors", _named_tensors(buckets, wait_s)
            kwargs = {"refresh_cpu_gemm": refresh_cpu_gemm}
        else:
            raise RuntimeError(
                "object-store buckets need the engine in this process (tensor_parallel_size=1); "
                "use the shm weight sync (or a GPU transfer engine) for multi-process engines"
            )
        self._failed_load = f"loading policy version {version} did not finish"
        counts = self.llm.collective_rpc(method, args=(source,), kwargs=kwargs)
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset its prefix cache (requests still running?)")
        self._failed_load = None
        self._version = version
        return {"version": version, "tensors": counts[0], "seconds": time.perf_counter() - start}

    @staticmethod
    def _check_files_reachable(paths: list[str], wait_s: float) -> None:
        if wait_s > 0:  # the files may come later, their directory must be here now
            paths = sorted({os.path.dirname(p) for p in paths})
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise FileNotFoundError(
                f"weight buckets not found on this node: {missing[:3]}; the shm weight sync needs "
                "the sender and the rollout workers on one machine (use object_store otherwise)"
            )

    def cpu_gemm_drift(self) -> float:
        """Largest error of a prepacked CPU GEMM against its own weight (a stale-handle check)."""
        return max(self.llm.collective_rpc("rlft_cpu_gemm_drift"))


def _named_tensors(buckets: Sequence[Any], wait_s: float) -> Iterator[tuple[str, Any]]:
    """Yield ``(name, tensor)`` from file paths and object refs, fetching one bucket at a time."""
    from actors.vllm_ext import iter_safetensors
    from actors.weight_sync import unpack_bucket

    for bucket in buckets:
        if _is_path(bucket):
            yield from iter_safetensors(os.fspath(bucket), wait_s)
        else:
            import ray

            yield from unpack_bucket(ray.get(bucket))  # zero-copy views of the object store


def _render(llm: Any, prompts: list[Prompt]) -> Sequence[Any]:
    """Token-id prompts as the engine inputs ``LLM.generate`` would build from them (vLLM's own
    renderer: ``LLMEngine.add_request`` deprecates raw prompts)."""
    from vllm.inputs import TokensPrompt

    return llm._preprocess_cmpl([TokensPrompt(prompt_token_ids=list(p.token_ids)) for p in prompts])


def _abort(engine: Any, pending: dict[str, tuple[int, Prompt, str]]) -> None:
    """Abort the requests of ``pending`` in the engine (by vLLM's internal id: for an n > 1 request
    that is the parent, so its unfinished children and its bookkeeping go too), and forget them."""
    if pending:
        engine.abort_request([internal for _, _, internal in pending.values()], internal=True)
        pending.clear()


def _is_path(bucket: Any) -> bool:
    return isinstance(bucket, (str, os.PathLike))


def _sampled_logprobs(completion: Any, ids: list[int], prompt_id: str) -> list[float]:
    """The sampled tokens' logprobs; vLLM puts the sampled token first at every position."""
    from vllm.logprobs import FlatLogprobs

    steps = completion.logprobs
    if steps is None or len(steps) != len(ids):
        raise RuntimeError(f"vLLM returned no per-token logprobs for prompt '{prompt_id}'")
    if isinstance(steps, FlatLogprobs):
        firsts = steps.start_indices
        if [steps.token_ids[i] for i in firsts] != ids:
            raise RuntimeError(f"vLLM logprobs do not follow the sampled tokens of '{prompt_id}'")
        values = [steps.logprobs[i] for i in firsts]
    else:
        values = [float(step[token].logprob) for step, token in zip(steps, ids)]
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise RuntimeError(f"non-finite rollout logprobs {bad[:3]} for prompt '{prompt_id}'")
    return values


def _finish_reason(reason: str | None, prompt_id: str) -> str:
    if reason not in ("stop", "length"):
        raise RuntimeError(f"completion of prompt '{prompt_id}' ended with reason {reason!r}")
    return reason
