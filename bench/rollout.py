"""RolloutWorker.generate vs vllm.LLM.generate on the same engine and prompts, side by side.

One engine (rlft's tiny Qwen2 at ~19M parameters, fp32, vLLM CPU) serves four ways of sampling the
same groups, interleaved so machine noise hits all alike:

* ``RolloutWorker.generate``: token-id prompts, per-prompt seeds, sampled-token logprobs, and the
  conversion to ``Rollout`` records;
* ``RolloutWorker.generate_stream`` drained: the same groups, yielded one by one as each finishes
  (rlft drives the engine's steps itself);
* ``LLM.generate`` with the same ``SamplingParams`` (the engine-side work is identical);
* ``LLM.generate`` without logprobs (what a plain vLLM user would call).

Every variant uses the same seeds, so all sample the same tokens. Also printed: the cost of pickling
the returned rollouts, about what a Ray actor call adds on top.

    .venv/bin/python bench/rollout.py            # 8 prompts x 8 samples x 128 tokens, 3 rounds
    .venv/bin/python bench/rollout.py --quick    # 64 tokens, 2 rounds
"""

from __future__ import annotations

import argparse
import atexit
import os
import pickle
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 new tokens, 2 rounds")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=8, help="completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the engine")
    args = parser.parse_args()
    max_new = args.max_new_tokens or (64 if args.quick else 128)
    rounds = args.rounds or (2 if args.quick else 3)
    # read by RolloutWorker before the engine starts (as Ray sets it for an actor)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from actors.rollout import RolloutWorker, request_seed
    from rlft.config import ModelConfig, RolloutConfig
    from rlft.models import build_tiny_model
    from rlft.types import Prompt, SamplingSettings

    workdir = tempfile.mkdtemp(prefix="rlft-bench-")
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    path = str(build_tiny_model(workdir, hidden_size=512, num_layers=8))
    start = time.perf_counter()
    worker = RolloutWorker(
        path, RolloutConfig(engine_kwargs={"kv_cache_memory_bytes": 512 * 2**20}), ModelConfig()
    )
    print(f"engine up in {time.perf_counter() - start:.1f}s", flush=True)

    rng = random.Random(0)
    prompts = [
        Prompt(f"p{i}", [rng.randrange(4, 80) for _ in range(16)]) for i in range(args.prompts)
    ]
    sampling = SamplingSettings(n=args.n, temperature=1.0, max_new_tokens=max_new, seed=1234)
    token_prompts = [TokensPrompt(prompt_token_ids=p.token_ids) for p in prompts]

    def params(logprobs: int | None) -> list[SamplingParams]:
        return [
            SamplingParams(
                n=sampling.n,
                temperature=sampling.temperature,
                max_tokens=max_new,
                seed=request_seed(sampling.seed, i),
                logprobs=logprobs,
                flat_logprobs=True,
            )
            for i in range(len(prompts))
        ]

    def rollout_worker() -> tuple[int, list]:
        rollouts = worker.generate(prompts, sampling)
        return sum(len(r.completion_ids) for r in rollouts), rollouts

    def rollout_stream() -> tuple[int, list]:
        groups = list(worker.generate_stream(prompts, sampling, range(len(prompts))))
        rollouts = [r for group in groups for r in group]
        return sum(len(r.completion_ids) for r in rollouts), rollouts

    def llm(logprobs: int | None):
        def run() -> tuple[int, None]:
            outputs = worker.llm.generate(token_prompts, params(logprobs), use_tqdm=False)
            return sum(len(c.token_ids) for o in outputs for c in o.outputs), None

        return run

    variants = {
        "RolloutWorker.generate": rollout_worker,
        "RolloutWorker.generate_stream": rollout_stream,
        "LLM.generate (same params)": llm(0),
        "LLM.generate (no logprobs)": llm(None),
    }
    timings: dict[str, list[float]] = {}
    tokens: dict[str, int] = {}
    worker.generate(prompts[:2], SamplingSettings(n=2, max_new_tokens=8))  # warm-up
    for r in range(rounds):
        k = r % len(variants)
        order = list(variants)[k:] + list(variants)[:k]  # rotate who goes first
        for name in order:
            t0 = time.perf_counter()
            tokens[name], rollouts = variants[name]()
            timings.setdefault(name, []).append(time.perf_counter() - t0)
            if name == "RolloutWorker.generate":
                timings.setdefault("pickle", []).append(_pickle_seconds(rollouts))
        print(f"  round {r + 1}/{rounds} done", flush=True)

    print(
        f"\n{args.prompts} prompts x {args.n} samples x up to {max_new} tokens, "
        f"{args.threads} thread(s), median of {rounds} rounds"
    )
    base = {name: tokens[name] / statistics.median(timings[name]) for name in variants}
    ours = base["RolloutWorker.generate"]
    for name in variants:
        print(
            f"  {name:<30} {tokens[name]:>6} tokens {base[name]:>8.0f} tokens/s"
            f"   RolloutWorker / this = {ours / base[name]:.3f}x"
        )
    pickle_ms = statistics.median(timings["pickle"]) * 1e3
    gen_ms = statistics.median(timings["RolloutWorker.generate"]) * 1e3
    print(f"  pickling the rollouts (what a Ray call adds): {pickle_ms:.1f}ms per call "
          f"({pickle_ms / gen_ms:.2%} of a generate)")
    if len(set(tokens.values())) != 1:
        print(f"  note: token counts differ between variants: {tokens}")


def _pickle_seconds(rollouts) -> float:
    start = time.perf_counter()
    pickle.loads(pickle.dumps(rollouts, protocol=pickle.HIGHEST_PROTOCOL))
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
