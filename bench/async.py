"""Synchronous vs asynchronous RL on the built-in task: throughput and accuracy for the same samples.

Workload: the embedded default run (``launch/embedded.yaml``: the ~0.6M-parameter character model on
the built-in arithmetic task, GRPO, 32 prompts x 8 samples per step, one rollout engine and one
learner rank, 1 CPU each), started from one shared SFT warm-up (1,000 steps, as the embedded run).
Then one RL-only run per variant, each a whole ``launch.train`` run in this process on an embedded
Ray, with the same seed and the same number of generated samples:

* ``sync``: ``rollout.max_staleness=0`` (generate, score, train, sync).
* ``async``: ``rollout.max_staleness=1``, ``inflight_updates: wait``: the next step's batch is
  generated, and its groups scored, while the learner trains.
* ``async-abort`` (with ``--abort``): as ``async``, with ``inflight_updates: abort``.

``--async-loss NAME`` gives the async variants another policy loss (e.g. ``decoupled_ppo``); by
default they keep the embedded run's ``ppo_clip``, so only the pipeline differs.

Printed (a Markdown table): samples/s over the RL stage (generated samples / the sum of the steps'
wall time, evaluations excluded) and its ratio to ``sync``; the mean step time split into the wait
for generation (``time/generate``: in async, the part training did not hide), training and the weight
sync; greedy held-out accuracy before and after; the mean version lag.

On a 2-core machine the overlap is bounded: the engine and the learner each reserve one Ray CPU,
but both run torch on the same two cores (plus the reward workers and the driver), so running
them at once slows each of them down. The ratio printed is what these machines allow; on a GPU node
the engine and the learner have their own devices.

    .venv/bin/python bench/async.py                    # SFT warm-up + 150 RL steps x 2 variants, ~12 min on 2 cores
    .venv/bin/python bench/async.py --steps 300 --abort --async-loss decoupled_ppo
    .venv/bin/python bench/async.py --init runs/.../sft/checkpoints/step-001000   # reuse a warm-up
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_runs import train_run  # noqa: E402  (bench/ is the script directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="RL steps per variant (default 150)")
    parser.add_argument("--seed", type=int, default=0, help="run seed")
    parser.add_argument("--eval-prompts", type=int, default=300, help="held-out prompts per evaluation")
    parser.add_argument("--sft-steps", type=int, default=1000, help="steps of the shared SFT warm-up")
    parser.add_argument("--init", default=None, help="a warmed-up model directory to start from (skips the SFT run)")
    parser.add_argument("--abort", action="store_true", help="also run max_staleness=1 with inflight_updates=abort")
    parser.add_argument("--async-loss", default=None, help="policy loss of the async variants (default: as sync)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every variant (repeatable), e.g. learner.lr=3e-4")
    parser.add_argument("--keep", default=None, metavar="DIR", help="keep the run directories under DIR")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from launch.cli import EMBEDDED
    from rlft.config import load_config

    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix=time.strftime("async-%Y%m%d-%H%M%S-"), dir=args.keep))
    else:
        root = Path(tempfile.mkdtemp(prefix="rlft-bench-async-"))
    common = [f"seed={args.seed}", f"evaluation.num_prompts={args.eval_prompts}", "evaluation.pass_k=0",
              "logging.report=false", *args.set]
    loss = [f"algo.loss.name={args.async_loss}", "algo.loss.params={}"] if args.async_loss else []
    variants = [("sync", ["rollout.max_staleness=0"]),
                ("async", ["rollout.max_staleness=1", "rollout.inflight_updates=wait", *loss])]
    if args.abort:
        variants.append(("async-abort", ["rollout.max_staleness=1", "rollout.inflight_updates=abort", *loss]))
    start = time.perf_counter()
    try:
        if args.init:
            init, sft_wall = args.init, 0.0
        else:
            sft = f"stages=[{{kind: sft, steps: {args.sft_steps}, batch_size: 64, lr: 3.0e-3}}]"
            summary, sft_wall = train_run(load_config(EMBEDDED, [*common, "name=sft", sft]), root / "sft")
            init = summary.checkpoints[-1]
            print(f"bench: SFT warm-up ({args.sft_steps} steps) in {sft_wall:.0f} s -> {init}", flush=True)
        results = []
        for name, overrides in variants:
            cfg = load_config(EMBEDDED, [*common, f"name={name}", f"model.path={init}",
                                         f"stages=[{{kind: rl, steps: {args.steps}}}]", *overrides])
            summary, wall = train_run(cfg, root / name)
            row = _collect(name, cfg, summary, root / name, wall)
            results.append(row)
            print(f"bench: {name}: {row['samples_per_s']:.0f} samples/s, accuracy {row['before']:.3f} -> "
                  f"{row['after']:.3f}, {wall:.0f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    _print_report(args, results, sft_wall, time.perf_counter() - start)




def _collect(name: str, cfg: Any, summary: Any, run_dir: Path, wall: float) -> dict[str, Any]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if r.get("stage") == "rl1" and "time/step" in r]
    r = cfg.rollout
    samples = len(steps) * r.prompts_per_step * r.group_size
    busy = sum(s["time/step"] for s in steps)

    def mean(key: str) -> float:
        values = [s[key] for s in steps if key in s]
        return statistics.fmean(values) if values else float("nan")

    return {
        "name": name, "samples": samples, "samples_per_s": samples / busy, "step_s": busy / len(steps),
        "generate_s": mean("time/generate"), "train_s": mean("time/train"), "sync_s": mean("time/sync"),
        "lag": mean("batch/version_lag_mean"), "aborted": sum(s.get("async/aborted_groups", 0) for s in steps),
        "dropped": sum(s.get("async/stale_dropped", 0) for s in steps),
        "before": summary.evaluations["before_rl1"]["eval/accuracy"],
        "after": summary.evaluations["after_rl1"]["eval/accuracy"],
        "loss": cfg.algo.loss.name, "wall": wall,
    }


def _print_report(args: argparse.Namespace, results: list[dict[str, Any]], sft_wall: float, total: float) -> None:
    base = results[0]["samples_per_s"]
    warm = f"the warmed-up model {args.init}" if args.init else f"{args.sft_steps} SFT steps ({sft_wall:.0f} s)"
    print(f"\n### Synchronous vs asynchronous RL on the built-in task (seed {args.seed})\n")
    print(f"Shared warm-up: {warm}; then {args.steps} GRPO steps per variant x 32 prompts x 8 samples "
          f"({results[0]['samples']} samples each); greedy accuracy on {args.eval_prompts} held-out prompts.\n")
    print("| variant | loss | samples/s | ratio | step s (generate wait / train / sync) | version lag | "
          "aborted groups | stale dropped | accuracy before -> after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for x in results:
        print(f"| {x['name']} | {x['loss']} | {x['samples_per_s']:.0f} | {x['samples_per_s'] / base:.2f}x "
              f"| {x['step_s']:.2f} ({x['generate_s']:.2f} / {x['train_s']:.2f} / {x['sync_s']:.2f}) "
              f"| {x['lag']:.2f} | {x['aborted']:.0f} | {x['dropped']:.0f} "
              f"| {x['before']:.1%} -> {x['after']:.1%} ({(x['after'] - x['before']) * 100:+.1f}) |")
    print(f"\ntotal wall time {total / 60:.1f} min")
    print(f"command: .venv/bin/python bench/async.py {shlex.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
