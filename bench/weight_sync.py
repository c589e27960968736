"""Weight sync vs a plain in-process copy of the same state dict, measured side by side.

For models of about 1M, 25M and 100M parameters (rlft's tiny Qwen2 at growing sizes, fp32), one
rollout worker (a Ray actor with a real vLLM CPU engine) receives the learner's state dict through
each backend; the baseline is ``{k: v.clone() for k, v in state_dict.items()}`` in the sender's
process, the least any sync must do (one copy). Printed: best-of-N times and the ratio sync / copy.

    .venv/bin/python bench/weight_sync.py            # 1M, 25M, 100M; about a minute on 2 cores
    .venv/bin/python bench/weight_sync.py --quick    # 1M and 25M, fewer repeats
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name -> build_tiny_model sizes (parameters are counted and printed, these are approximate)
SIZES = {
    "1M": {"hidden_size": 192, "num_layers": 3},
    "25M": {"hidden_size": 512, "num_layers": 10},
    "100M": {"hidden_size": 1024, "num_layers": 11, "num_heads": 8, "num_kv_heads": 4},
}
BACKENDS = ("shm", "object_store")


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def bench_size(name: str, repeats: int, workdir: str) -> dict:
    import ray
    import torch
    from transformers import AutoModelForCausalLM

    from actors.rollout import RolloutWorker
    from actors.weight_sync import make_weight_sync
    from rlft.config import ModelConfig, RolloutConfig
    from rlft.models import build_tiny_model

    path = str(build_tiny_model(Path(workdir) / name, max_position_embeddings=256, **SIZES[name]))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():  # a "trained" state: every weight differs from the engine's
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    state = model.state_dict()
    n_params = sum(p.numel() for p in model.parameters())

    rollout_cfg = RolloutConfig(engine_kwargs={"kv_cache_memory_bytes": 64 * 2**20})
    worker = ray.remote(num_cpus=1)(RolloutWorker).remote(path, rollout_cfg, ModelConfig())
    ray.get(worker.ready.remote())

    def copy() -> None:
        {k: v.clone() for k, v in state.items()}

    # a hot loop lets the allocator reuse freed memory (the fastest a copy gets); one more copy is
    # timed next to every push, in the same machine state
    copies = timed(copy, 5)
    row = {"name": name, "params": n_params}
    version = 0
    for backend in BACKENDS:
        sync = make_weight_sync(backend)
        sync.push(state, version := version + 1, [worker])  # warm-up
        stats = []
        for _ in range(repeats):
            copies += timed(copy, 1)
            stats.append(sync.push(state, version := version + 1, [worker]))
        row[backend] = min(s.seconds for s in stats)
        row[backend + "_load"] = min(s.load_seconds for s in stats)
        row["bytes"] = stats[0].bytes
    row["copy"], row["copy_median"] = min(copies), statistics.median(copies)
    ray.kill(worker)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M and 25M only, 2 repeats")
    parser.add_argument("--sizes", help="comma-separated subset of " + ",".join(SIZES))
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    sizes = args.sizes.split(",") if args.sizes else (["1M", "25M"] if args.quick else list(SIZES))
    repeats = args.repeats or (2 if args.quick else 5)
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; choose from {', '.join(SIZES)}")

    import ray

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="rlft-bench-") as workdir:
            for name in sizes:
                rows.append(bench_size(name, repeats, workdir))
                print(f"  measured {name}", flush=True)
    finally:
        ray.shutdown()

    print(f"\nsync into 1 rollout worker (vLLM CPU), best of {repeats}; ratio = sync / clone")
    header = f"{'model':>6} {'params':>11} {'MB':>7} {'clone':>9}"
    for backend in BACKENDS:
        header += f" {backend:>13} {'ratio':>6} {'(load)':>9}"
    print(header)
    for r in rows:
        line = f"{r['name']:>6} {r['params']:>11,} {r['bytes'] / 1e6:>7.1f}"
        line += f" {r['copy'] * 1e3:>7.1f}ms"
        for backend in BACKENDS:
            line += (
                f" {r[backend] * 1e3:>11.1f}ms {r[backend] / r['copy']:>5.1f}x"
                f" {r[backend + '_load'] * 1e3:>7.1f}ms"
            )
        print(line)
    print("(load) = the worker's share: vLLM reload_weights + kernel refresh + prefix-cache reset")
    print("clone = the fastest of all clones timed (a hot loop, and one next to every push); their")
    print("median: " + ", ".join(f"{r['copy_median'] * 1e3:.1f}ms ({r['name']})" for r in rows))
    print("best-of-N on both sides: a shared machine's interference only ever adds time")


if __name__ == "__main__":
    main()
