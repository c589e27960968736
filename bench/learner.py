"""Learner throughput: padded micro-batches against token budgets, packing and bf16, side by side.

The same global batch goes through ``LearnerWorker.train_step`` (the real learner: loss, backward,
AdamW) under each learner setting, in one process, rounds interleaved so every variant sees the same
machine state. Two workloads, completion lengths long-tailed (exponential, clipped):

* ``mean-40``: 64 samples (8 prompts x 8), completions mean ~40 / max 128 tokens, prompts 8-24 tokens;
* ``mean-300``: 16 samples, completions mean ~300 / max 1,024 tokens.

The baseline is what main ran before token budgets: one padded pass over the whole batch (the
embedded demo's ``micro_batch_size: 256``); ``padded x8`` is the old schema default (8 sequences per
pass). Printed per variant: passes per step, padding fraction, learner tokens/s (real prompt +
completion tokens per second of ``train_step``, median of the rounds) and the ratio to the baseline.
With ``--end-to-end`` it also runs ``bench/step_overhead.py``'s full RL step (real Ray, vLLM,
learner, weight sync) for the old and the new learner settings and prints samples/s and the ratio.

    .venv/bin/python bench/learner.py                  # both workloads, 3 rounds
    .venv/bin/python bench/learner.py --quick          # mean-40 only, 2 rounds
    .venv/bin/python bench/learner.py --end-to-end     # plus the full RL step, old vs new
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

THREADS = 2

BASELINE = "padded, 1 pass"
VARIANTS = {  # name -> learner settings
    BASELINE: dict(micro_batch_size=256, max_tokens_per_micro_batch=None),
    "padded x8": dict(micro_batch_size=8, max_tokens_per_micro_batch=None),
    "budget 512": dict(max_tokens_per_micro_batch=512),
    "budget 1024 (default)": dict(max_tokens_per_micro_batch=1024),
    "budget 2048": dict(max_tokens_per_micro_batch=2048),
    "budget 4096": dict(max_tokens_per_micro_batch=4096),
    "packed 1024": dict(max_tokens_per_micro_batch=1024, packing=True),
    "packed 2048": dict(max_tokens_per_micro_batch=2048, packing=True),
    "budget 1024 bf16": dict(max_tokens_per_micro_batch=1024, precision="bf16"),
    "packed 1024 bf16": dict(max_tokens_per_micro_batch=1024, packing=True, precision="bf16"),
}
WORKLOADS = {"mean-40": dict(n=64, mean=40, longest=128), "mean-300": dict(n=16, mean=300, longest=1024)}


def make_batch(n: int, mean: int, longest: int, vocab: int, seed: int = 0):
    from rlft.types import TrainBatch, TrainSample

    rng = random.Random(seed)
    samples = []
    for i in range(n):
        p = rng.randint(8, 24)
        c = min(longest, max(1, round(rng.expovariate(1 / mean))))
        ids = [rng.randrange(4, vocab) for _ in range(p + c)]
        samples.append(TrainSample(ids[:p], ids[p:], [1.0 if i % 2 else -1.0] * c,
                                   [-2.0 - rng.random() for _ in range(c)]))
    return TrainBatch(samples)


def learner(model_dir: str, settings: dict):
    from actors.learner import LearnerWorker
    from rlft.config import AlgoConfig, LearnerConfig, ModelConfig

    cfg = LearnerConfig(lr=1e-6, **settings)
    return LearnerWorker(0, 1, "127.0.0.1", 0, model_dir, ModelConfig(), cfg, AlgoConfig(), total_steps=10**6)


def run_workload(name: str, model_dir: str, vocab: int, rounds: int, variants: dict) -> None:
    from rlft.micro_batches import plan_micro_batches

    w = WORKLOADS[name]
    batch = make_batch(w["n"], w["mean"], w["longest"], vocab)
    lengths = [s.length for s in batch.samples]
    tokens = sum(lengths)
    completions = [len(s.completion_ids) for s in batch.samples]
    print(f"\n{name}: {len(lengths)} samples, completions mean {statistics.mean(completions):.0f} / max "
          f"{max(completions)}, {tokens} tokens")
    workers = {v: learner(model_dir, s) for v, s in variants.items()}
    times: dict[str, list[float]] = {v: [] for v in variants}
    padding = {v: worker.train_step(batch)["padding_fraction"] for v, worker in workers.items()}  # warm-up
    for _ in range(rounds):
        for v, worker in workers.items():
            start = time.perf_counter()
            worker.train_step(batch)
            times[v].append(time.perf_counter() - start)
    base = tokens / statistics.median(times[BASELINE])
    print(f"  {'variant':<24}{'passes':>7}{'padding':>9}{'tokens/s':>10}{'ratio':>8}   precision")
    for v, s in variants.items():
        plan = plan_micro_batches(lengths, max_tokens=s.get("max_tokens_per_micro_batch"),
                                  max_seqs=s.get("micro_batch_size"), packed=s.get("packing", False))
        speed = tokens / statistics.median(times[v])
        print(f"  {v:<24}{len(plan):>7}{padding[v]:>9.2f}{speed:>10.0f}{speed / base:>8.2f}   {workers[v].precision}")
    if "budget 1024 bf16" in workers and workers["budget 1024 bf16"].precision == "bf16":
        import torch

        fp32 = torch.tensor(sum(workers["budget 1024 (default)"].compute_logprobs(batch.samples), []))
        bf16 = torch.tensor(sum(workers["budget 1024 bf16"].compute_logprobs(batch.samples), []))
        diff = (fp32 - bf16).abs()  # the two learners took the same (tiny-lr) steps
        print(f"  bf16 vs fp32 token log-probs: mean |diff| {diff.mean():.2e}, max {diff.max():.2e}")


def end_to_end(quick: bool, rounds: int) -> None:
    from bench.step_overhead import full_step

    old = ["learner.micro_batch_size=64", "learner.max_tokens_per_micro_batch=null"]
    results = {}
    for label, overrides in (("old: padded, 1 pass", old), ("new: default", []),
                             ("new: bf16", ["learner.precision=bf16"])):
        step, samples, metrics = full_step(quick, rounds, overrides)
        results[label] = samples / step
        print(f"  {label:<24} step {step:6.2f} s   {samples / step:6.2f} samples/s   "
              f"learner {metrics['time/train']:5.2f} s   mismatch {metrics.get('learner/logprob_mismatch_mean', 0):.2e}")
    base = results["old: padded, 1 pass"]
    print("  end-to-end samples/s ratio: " + ", ".join(f"{k} {v / base:.2f}" for k, v in results.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--end-to-end", action="store_true")
    parser.add_argument("--workload", choices=list(WORKLOADS), action="append")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 3)
    import torch

    from rlft.micro_batches import cpu_bf16_support
    from rlft.models import build_tiny_model

    torch.set_num_threads(THREADS)
    tmp = tempfile.mkdtemp(prefix="rlft-bench-learner-")
    model_dir = str(build_tiny_model(Path(tmp) / "model", hidden_size=512, num_layers=8, num_heads=8,
                                     max_position_embeddings=2048))
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(model_dir).vocab_size
    print(f"learner bench: Qwen2 hidden 512 x 8 layers, fp32 weights, {THREADS} threads, CPU bf16: "
          f"{cpu_bf16_support() or 'none'}")
    for name in args.workload or (["mean-40"] if args.quick else list(WORKLOADS)):
        run_workload(name, model_dir, vocab, rounds, VARIANTS)
    if args.end_to_end:
        print("\nend to end (bench/step_overhead.py's full RL step, medians):")
        end_to_end(args.quick, rounds)


if __name__ == "__main__":
    main()
