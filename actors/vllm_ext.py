"""Code that runs inside vLLM's worker process: the rlft worker extension.

vLLM builds its worker class from ``worker_cls`` and, when the engine is created with
``worker_extension_cls="actors.vllm_ext.RlftWorkerExtension"``, adds this class to the worker's
bases. Its methods are then reachable with ``LLM.collective_rpc("rlft_...", args=..., kwargs=...)``
and run with ``self`` being the worker (``self.model_runner``, ``self.vllm_config``).

Why a worker extension, and why each step (vLLM 0.32, CPU build, measured on this project):

* **Weights must be loaded through ``reload_weights``.** The CPU backend prepacks every linear
  weight into a oneDNN / SGL kernel handle at load time and replaces the parameter by an empty
  tensor, so a plain ``model.load_weights`` on the live model fails. ``model_runner.reload_weights``
  restores the layers to their checkpoint shapes, loads, and re-runs
  ``process_weights_after_loading`` layer by layer. It must see *all* weights in one call: a layer
  only partly present in the iterator is processed with uninitialised parts, so buckets are streamed
  through one iterator, never one ``reload`` per bucket.
* **Tied ``lm_head`` needs its GEMM handle rebuilt.** With ``tie_word_embeddings`` the ``lm_head``
  layer shares the embedding's parameter and loads nothing itself, so reload never re-runs its
  processing and its prepacked handle keeps serving the *old* matrix: greedy output then diverges
  from Hugging Face. ``rlft_refresh_cpu_gemm`` re-dispatches every layer that keeps its weight next
  to a prepacked handle (``dispatch_cpu_unquantized_gemm(layer, remove_weight=False)``), which fixes
  it.
* **Tensors must be built here.** ``collective_rpc`` arguments are msgpack-serialised when the
  engine core runs in its own process (``VLLM_ENABLE_V1_MULTIPROCESSING=1``, vLLM's default): a
  tensor then arrives as ``[dtype, shape, buffer index]`` lists, and an iterator cannot be sent at
  all. So file buckets are opened (memory-mapped) in this process from their paths; in-memory
  tensors are accepted only when the engine runs in the caller's process
  (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), where ``collective_rpc`` is a direct method call and
  arguments are passed by reference.
* **Seeded requests must survive chunked prefill on CPU** (``rlft_keep_seeds_on_discard``). A
  request whose prompt is prefilled over several engine steps is still sampled at the end of
  every partial chunk, and vLLM throws that token away. Its seeded generator has then drawn noise
  for a token that never existed, so vLLM's ``GPUModelRunner._bookkeeping_sync`` rewinds it with
  ``gen.set_offset(gen.get_offset() - 4)``: a CUDA Philox detail (one sample advances the counter
  by 4). A CPU generator is a Mersenne Twister without an offset, and that line raises
  ``RuntimeError: CPU Generator does not use offset``, killing the engine on the first step whose
  token budget (``max_num_batched_tokens``, 4096 by default) splits a prompt: 16 prompts x 8
  samples of ~60 tokens are enough. The fix keeps the rewind's meaning and does it the CPU way:
  before sampling, the full state of each such generator is saved (``get_state``, 5 KB), and
  restored right after, so the discarded draw never happened; vLLM's offset rewind is then
  skipped for those generators. A seeded request therefore samples the same tokens whether or not
  its prefill was chunked, whatever else shares its batch (``tests/integration/test_rollout.py``
  checks this). Skipping the rewind alone, or dropping the seed of such requests, would lose
  exactly that: the samples would depend on the batch the prompt landed in, and a resumed run
  would not replay them. Taking the discarded rows out of the sampler's generators would also
  work, but then their noise comes from the engine's global RNG, which shifts the stream of the
  unseeded requests; a saved state is restored exactly however many numbers the sampler drew.
  CUDA generators keep vLLM's own rewind.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import time
from collections.abc import Iterable, Iterator

import torch

# safetensors dtype codes -> torch dtypes (the ones a state dict of an LM holds)
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


ABORT_MARKER = "ABORT"  # a sender that fails mid-stream creates this file in the bucket directory


def wait_for_file(path: str, timeout_s: float) -> None:
    """Block until ``path`` exists: the sender writes buckets while the engine loads earlier ones.

    The sender publishes each file atomically (write ``*.part``, then rename). Gives up when the
    directory disappears or holds the abort marker (the sender failed), or after ``timeout_s``.
    """
    directory = os.path.dirname(path)
    deadline = time.monotonic() + timeout_s
    pause = 0.0005
    while not os.path.exists(path):
        if not os.path.isdir(directory) or os.path.exists(os.path.join(directory, ABORT_MARKER)):
            raise RuntimeError(f"the weight sender gave up before writing {path}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"weight bucket {path} did not appear within {timeout_s} s")
        time.sleep(pause)
        pause = min(pause * 2, 0.01)


def iter_safetensors(path: str, wait_s: float = 0.0) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` from a safetensors file without copying: views into a private mmap.

    ``safetensors.safe_open(...).get_tensor`` copies each tensor out of the file; the weight loader
    copies it once more into the parameter. Reading views of a copy-on-write mapping (the file lives
    in /dev/shm, i.e. RAM) leaves one copy: file page -> parameter. With ``wait_s > 0`` the file may
    still be on its way (``wait_for_file``).
    """
    if wait_s > 0:
        wait_for_file(path, wait_s)
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # writable view, file untouched
    (header_len,) = struct.unpack("<Q", mapped[:8])
    header = json.loads(mapped[8 : 8 + header_len])
    header.pop("__metadata__", None)
    base = 8 + header_len
    for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        dtype = SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ValueError(f"{path}: tensor '{name}' has unsupported dtype {entry['dtype']}")
        start, end = entry["data_offsets"]
        if end == start:
            yield name, torch.empty(entry["shape"], dtype=dtype)
            continue
        flat = torch.frombuffer(mapped, dtype=torch.uint8, count=end - start, offset=base + start)
        yield name, flat.view(dtype).reshape(entry["shape"])


class RlftWorkerExtension:
    """Methods added to vLLM's worker (see the module docstring for why each exists).

    Names start with ``rlft_`` because vLLM refuses an extension attribute that the worker already
    has.
    """

    def rlft_load_safetensors(
        self, paths: list[str], refresh_cpu_gemm: bool = True, wait_s: float = 0.0
    ) -> int:
        """Reload every weight from safetensors ``paths`` (one stream); return the tensor count.

        With ``wait_s > 0`` files that do not exist yet are waited for (up to ``wait_s`` each).
        """
        paths = [str(p) for p in paths]

        def weights() -> Iterator[tuple[str, torch.Tensor]]:
            for path in paths:
                yield from iter_safetensors(path, wait_s)

        return self._rlft_reload(weights(), refresh_cpu_gemm)

    def rlft_load_tensors(
        self, named_tensors: Iterable[tuple[str, torch.Tensor]], refresh_cpu_gemm: bool = True
    ) -> int:
        """Reload every weight from ``(name, tensor)`` pairs; in-process engines only.

        The iterable may be lazy (a generator fetching buckets one by one), which only works when
        this method is called directly, i.e. the engine core runs in the caller's process.
        """

        def checked() -> Iterator[tuple[str, torch.Tensor]]:
            for item in named_tensors:
                name, tensor = item
                if not isinstance(tensor, torch.Tensor):
                    raise TypeError(
                        f"weight '{name}' arrived as {type(tensor).__name__}, not a tensor: "
                        "collective_rpc serialised it, so the engine core runs in another process. "
                        "Send file paths instead (the shm weight sync) or run the engine "
                        "in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0)."
                    )
                yield name, tensor

        return self._rlft_reload(checked(), refresh_cpu_gemm)

    def rlft_refresh_cpu_gemm(self) -> list[str]:
        """Rebuild the prepacked GEMM handle of every CPU layer that keeps its weight; return names.

        Linear layers drop their weight after prepacking (``remove_weight=True``) and are
        re-processed by ``reload_weights``; embedding-type layers used as a GEMM (``lm_head``, tied
        or not) keep it, and a tied ``lm_head`` is never re-processed. Rebuilding an up-to-date
        handle is harmless.
        """
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():
            return []
        from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

        refreshed = []
        for name, module in self.model_runner.get_model().named_modules():
            if _keeps_weight_beside_cpu_gemm(module):
                dispatch_cpu_unquantized_gemm(module, remove_weight=False)
                refreshed.append(name)
        return refreshed

    def rlft_cpu_gemm_drift(self) -> float:
        """Largest |prepacked GEMM - F.linear(x, weight)| over the layers that keep their weight.

        A diagnostic for stale kernel handles: about 1e-6 when every handle matches its weight,
        large when a handle still holds an old matrix. 0.0 when there is no such layer (e.g. on
        GPU).
        """
        drift = 0.0
        generator = torch.Generator().manual_seed(0)
        with torch.inference_mode():
            for module in self.model_runner.get_model().modules():
                if not _keeps_weight_beside_cpu_gemm(module):
                    continue
                weight = module.weight
                x = torch.randn(4, weight.shape[1], generator=generator).to(weight.dtype)
                packed = module.cpu_linear(x, weight, None)
                reference = torch.nn.functional.linear(x, weight)
                drift = max(drift, (packed.float() - reference.float()).abs().max().item())
        return drift

    def rlft_keep_seeds_on_discard(self) -> bool:
        """Make discarded chunked-prefill samples leave seeded CPU generators untouched (see the
        module docstring); True once installed, False when this model runner has nothing to fix."""
        return keep_seeds_on_discard(self.model_runner)

    def _rlft_reload(
        self, weights: Iterator[tuple[str, torch.Tensor]], refresh_cpu_gemm: bool
    ) -> int:
        count = 0

        def counted() -> Iterator[tuple[str, torch.Tensor]]:
            nonlocal count
            for item in weights:
                count += 1
                yield item

        try:
            self.reload_weights(weights_iterator=counted())  # sets the vLLM config context
        except BaseException:
            self._rlft_abandon_reload()
            raise
        if refresh_cpu_gemm:
            self.rlft_refresh_cpu_gemm()
        return count

    def _rlft_abandon_reload(self) -> None:
        """After a stream broke off: end vLLM's layer-wise reload so that the next one can start.

        A layer whose weights were only partly streamed stays wrapped for reloading and poisons the
        next reload (its loaders are gone). Finalising processes such layers with what they got and
        restores the untouched ones, so the model is structurally sound (numerically a mix: the
        caller must not serve it until a full reload succeeds).
        """
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload.layerwise import finalize_layerwise_reload

        with set_current_vllm_config(self.vllm_config):
            finalize_layerwise_reload(self.model_runner.get_model(), self.vllm_config.model_config)


def _keeps_weight_beside_cpu_gemm(module: torch.nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return (
        hasattr(module, "cpu_linear")
        and isinstance(weight, torch.Tensor)
        and weight.ndim == 2
        and weight.numel() > 0
        and not weight.is_meta
    )


def keep_seeds_on_discard(runner: object) -> bool:
    """Wrap ``runner``'s sampling so that a sample vLLM discards does not consume a CPU generator.

    ``_sample`` saves the state of every seeded CPU generator whose request's token this step is
    discarded (a partial prefill chunk) and restores it after sampling; ``_bookkeeping_sync`` runs
    with those generators hidden, so vLLM's CUDA-only offset rewind does not touch them. Instance
    attributes shadow the class's methods; installing twice is a no-op. Returns False for a
    runner without this sampling path (another vLLM model runner): nothing to fix there.
    """
    if getattr(runner, "_rlft_keeps_seeds", False):
        return True
    required = ("_sample", "_bookkeeping_sync", "discard_request_mask", "input_batch")
    if not all(hasattr(runner, name) for name in required):
        return False
    sample, bookkeeping = runner._sample, runner._bookkeeping_sync

    def _sample(*args, **kwargs):
        saved = {i: gen.get_state() for i, gen in discarded_cpu_generators(runner).items()}
        try:
            return sample(*args, **kwargs)
        finally:
            generators = runner.input_batch.generators
            for i, state in saved.items():
                generators[i].set_state(state)

    def _bookkeeping_sync(*args, **kwargs):
        generators = runner.input_batch.generators
        hidden = discarded_cpu_generators(runner)
        for i in hidden:
            del generators[i]
        try:
            return bookkeeping(*args, **kwargs)
        finally:
            generators.update(hidden)

    runner._sample = _sample
    runner._bookkeeping_sync = _bookkeeping_sync
    runner._rlft_keeps_seeds = True
    return True


def discarded_cpu_generators(runner: object) -> dict[int, torch.Generator]:
    """Batch row -> seeded CPU generator, for the rows whose sampled token this step is discarded.

    vLLM sets ``discard_request_mask`` when it prepares a step's inputs: a request whose prompt is
    not complete after this step's chunk is sampled with the others, and its token dropped.
    """
    batch = runner.input_batch
    rows = runner.discard_request_mask.np[: batch.num_reqs].nonzero()[0]
    generators = batch.generators
    return {
        int(i): generators[int(i)]
        for i in rows
        if int(i) in generators and generators[int(i)].device.type == "cpu"
    }
