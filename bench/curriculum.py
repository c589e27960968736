"""Curricula on the built-in task: ``uniform`` vs ``sec`` vs ``learnability`` for the same samples.

Workload: the embedded default run (``launch/embedded.yaml``: the ~0.6M-parameter character model on
the built-in arithmetic task, GRPO, 32 prompts x 8 samples per step, temperature 1, lr 1e-3). Its
4,000 training prompts mix three difficulty levels, the number of carries of the sum (about 30 %
with 0, 45 % with 1, 25 % with 2); every run below uses ``curriculum.category_field: difficulty``,
so ``sec``'s arms (and the per-category shares logged by the samplers) are those levels.

1. The SFT warm-up runs once (``stages=[{kind: sft, steps: 1000, batch_size: 64, lr: 3e-3}]``, as in
   the embedded run); its final checkpoint (a Hugging Face model directory with its tokenizer) is
   the ``model.path`` of every RL run, so all samplers start from the same weights.
2. One RL-only run per sampler (``stages=[{kind: rl, steps: N}]``), each a whole ``launch.train``
   run in this process on an embedded Ray. The configs differ in ``curriculum.name`` only: same
   seed, same sampling seeds, same steps x prompts_per_step x group_size generated samples, no
   dynamic sampling and no zero-variance filtering (every drawn group is generated and trained on,
   so no sampler gets extra generations).

Printed per sampler (a Markdown table): greedy held-out accuracy and pass@k before and after the RL
run (``--eval-prompts`` held-out prompts; "before" is the same model for all, a sanity check), the
mean fraction of zero-variance groups (``batch/zero_variance_group_fraction``: groups whose samples
all got the same reward, so no GRPO signal) over the whole run and its last half, the mean training
reward, the share of drawn prompts by difficulty, and the run's wall time; then the final category
probabilities of ``sec`` (``curriculum/p/*``) and ``learnability`` (slot shares by category).

One seed and 300 held-out prompts: a binomial standard error of about 2.8 points on an accuracy
near 40 %, before any seed-to-seed variation of RL itself. Differences of a few points are noise.

    .venv/bin/python bench/curriculum.py                          # 300 RL steps x 3 samplers, ~10 min on 2 cores
    .venv/bin/python bench/curriculum.py --steps 100 --seed 1 --keep runs
    .venv/bin/python bench/curriculum.py --init runs/curriculum-<stamp>/sft/checkpoints/step-001000  # reuse a warm-up
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

DIFFICULTIES = ("0", "1", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="RL steps per sampler (default 300, as embedded)")
    parser.add_argument("--samplers", default="uniform,sec,learnability", help="comma-separated sampler names")
    parser.add_argument("--seed", type=int, default=0, help="run seed (model init, SFT order, sampling, curriculum)")
    parser.add_argument("--eval-prompts", type=int, default=300, help="held-out prompts per evaluation")
    parser.add_argument("--sft-steps", type=int, default=1000, help="steps of the shared SFT warm-up")
    parser.add_argument("--init", default=None, help="a warmed-up model directory to start from (skips the SFT run)")
    parser.add_argument("--keep", default=None, metavar="DIR", help="keep the run directories in a new "
                        "directory under DIR (default: a temporary directory, removed at the end)")
    args = parser.parse_args()
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from launch.cli import EMBEDDED
    from rlft.config import load_config
    from rlft.curriculum import SAMPLERS

    unknown = [s for s in samplers if s not in SAMPLERS]
    if unknown:
        parser.error(f"unknown sampler(s) {', '.join(unknown)}")

    if args.keep:  # a fresh directory per bench run: train() appends to an existing metrics.jsonl
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix=time.strftime("curriculum-%Y%m%d-%H%M%S-"), dir=args.keep))
    else:
        root = Path(tempfile.mkdtemp(prefix="rlft-bench-curriculum-"))
    common = [f"seed={args.seed}", f"evaluation.num_prompts={args.eval_prompts}",
              "algo.dynamic_sampling.enabled=false", "algo.filter_zero_variance=false",
              "logging.report=false"]
    bench_start = time.perf_counter()
    try:
        if args.init:
            init, sft_wall = args.init, 0.0
        else:
            sft = f"stages=[{{kind: sft, steps: {args.sft_steps}, batch_size: 64, lr: 3.0e-3}}]"
            cfg = load_config(EMBEDDED, [*common, "name=sft", sft])
            summary, sft_wall = train_run(cfg, root / "sft")
            init = summary.checkpoints[-1]
            if not (Path(init) / "tokenizer_config.json").is_file():
                raise SystemExit(f"the SFT checkpoint {init} has no tokenizer")
            print(f"bench: SFT warm-up ({args.sft_steps} steps) in {sft_wall:.0f} s -> {init}", flush=True)

        results = []
        for name in samplers:
            cfg = load_config(EMBEDDED, [*common, f"name=rl-{name}", f"model.path={init}",
                                         f"curriculum.name={name}", "curriculum.category_field=difficulty",
                                         f"stages=[{{kind: rl, steps: {args.steps}}}]"])
            summary, wall = train_run(cfg, root / f"rl-{name}")
            row = _collect(name, cfg, summary, root / f"rl-{name}", wall)
            results.append(row)
            print(f"bench: {name}: accuracy {row['before']:.3f} -> {row['after']:.3f}, "
                  f"zero-variance groups {row['zv']:.3f}, {wall:.0f} s", flush=True)
        total = time.perf_counter() - bench_start
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    _print_report(args, cfg, results, sft_wall, total, root if args.keep else None)




def _collect(name: str, cfg: Any, summary: Any, run_dir: Path, wall: float) -> dict[str, Any]:
    from rlft.tasks.arithmetic import count_carries

    k = cfg.evaluation.pass_k
    before, after = summary.evaluations["before_rl1"], summary.evaluations["after_rl1"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "batch/zero_variance_group_fraction" in r]
    zv = [r["batch/zero_variance_group_fraction"] for r in steps]
    drawn = {d: 0 for d in DIFFICULTIES}
    for r in steps:
        for pid in r.get("prompt_ids", []):
            a, b = pid.split(":", 1)[1].split("+")
            drawn[str(count_carries(int(a), int(b)))] += 1
    n_drawn = max(sum(drawn.values()), 1)
    last = steps[-1] if steps else {}
    return {
        "name": name,
        "before": before["eval/accuracy"], "after": after["eval/accuracy"],
        "pass_before": before.get(f"eval/pass@{k}", float("nan")),
        "pass_after": after.get(f"eval/pass@{k}", float("nan")),
        "zv": statistics.fmean(zv) if zv else float("nan"),
        "zv_last": statistics.fmean(zv[len(zv) // 2:]) if zv else float("nan"),
        "reward": statistics.fmean(r["reward/mean"] for r in steps) if steps else float("nan"),
        "drawn": {d: c / n_drawn for d, c in drawn.items()},
        "samples": sum(r.get("batch/rollouts", 0) for r in steps),
        "steps": len(steps),
        "p": {key.split("/")[-1]: v for key, v in last.items() if key.startswith("curriculum/p/")},
        "q": {key.split("/")[-1]: v for key, v in last.items() if key.startswith("curriculum/q/")},
        "wall": wall,
    }


def _print_report(args: argparse.Namespace, cfg: Any, results: list[dict[str, Any]], sft_wall: float,
                  total: float, kept: Path | None) -> None:
    r, k = cfg.rollout, cfg.evaluation.pass_k
    print(f"\n### Curricula on the built-in arithmetic task (seed {args.seed})\n")
    warm = f"the warmed-up model {args.init}" if args.init else f"{args.sft_steps} SFT steps ({sft_wall:.0f} s)"
    print(f"Shared warm-up: {warm}; then {args.steps} GRPO steps per sampler x {r.prompts_per_step} prompts "
          f"x {r.group_size} samples = {args.steps * r.prompts_per_step * r.group_size} generated samples each "
          f"(no dynamic sampling, no filtering); greedy accuracy and pass@{k} on {args.eval_prompts} held-out prompts; "
          "difficulty = number of carries.\n")
    print(f"| sampler | accuracy before -> after | pass@{k} before -> after | zero-var groups (all / last half) "
          "| mean train reward | drawn by difficulty 0/1/2 | samples | wall |")
    print("|---|---|---|---|---|---|---|---|")
    for x in results:
        d = x["drawn"]
        print(f"| {x['name']} | {x['before']:.1%} -> {x['after']:.1%} ({(x['after'] - x['before']) * 100:+.1f}) "
              f"| {x['pass_before']:.1%} -> {x['pass_after']:.1%} | {x['zv']:.3f} / {x['zv_last']:.3f} "
              f"| {x['reward']:.3f} | {d['0']:.0%} / {d['1']:.0%} / {d['2']:.0%} | {x['samples']:.0f} "
              f"| {x['wall']:.0f} s |")
    for x in results:
        if x["name"] in ("sec", "learnability") and x["p"]:
            probs = ", ".join(f"{c}: {v:.2f}" for c, v in sorted(x["p"].items()))
            extra = ("; Q " + ", ".join(f"{c}: {v:.3f}" for c, v in sorted(x["q"].items()))) if x["q"] else ""
            print(f"\nfinal curriculum/p of {x['name']} (by difficulty): {probs}{extra}")
    print(f"\ntotal wall time {total / 60:.1f} min" + (f"; run directories under {kept}" if kept else ""))
    print(f"command: .venv/bin/python bench/curriculum.py {shlex.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
