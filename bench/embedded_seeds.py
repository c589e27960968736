"""How much the embedded default's outcome depends on the seed: SFT until 30 % against 1,000 fixed SFT steps.

Runs the embedded default (``rlft train`` with no config: SFT warm-up, then 300 GRPO steps) for each
seed, twice: as shipped (the warm-up ends when greedy held-out accuracy reaches 30 %, ``until``) and
with the old fixed warm-up of 1,000 steps. Prints, per seed, the SFT steps taken, held-out greedy
accuracy and ``mean@4`` after SFT and after RL, and for each variant the spread (max - min) of the
after-RL accuracy across seeds.

    .venv/bin/python bench/embedded_seeds.py                    # seeds 0 1 2, both variants (~40 min)
    .venv/bin/python bench/embedded_seeds.py --variants until   # only the shipped one
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FIXED = "stages=[{kind: sft, steps: 1000, batch_size: 64, lr: 3.0e-3}, {kind: rl, steps: 300}]"


def run(seed: int, variant: str, root: Path) -> dict[str, float]:
    from bench.train_runs import train_run
    from launch.cli import EMBEDDED
    from rlft.config import load_config

    overrides = [f"seed={seed}", "cluster.dashboard=false", "logging.report=false"]
    cfg = load_config(EMBEDDED, overrides + ([FIXED] if variant == "fixed" else []))
    run_dir = root / f"{variant}-{seed}"
    summary, seconds = train_run(cfg, run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    sft_steps = sum(1 for r in rows if r.get("stage") == "sft1" and "sft/loss" in r)
    before, after = summary.evaluations["before_rl1"], summary.evaluations["after_rl1"]
    return {"sft_steps": sft_steps, "sft_acc": before["eval/accuracy"], "sft_mean": before["eval/mean@4"],
            "rl_acc": after["eval/accuracy"], "rl_mean": after["eval/mean@4"], "minutes": seconds / 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["until", "fixed"], choices=["until", "fixed"])
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    results: dict[str, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            for seed in args.seeds:
                results.setdefault(variant, {})[seed] = r = run(seed, variant, Path(tmp))
                print(f"{variant:5} seed {seed}: SFT {r['sft_steps']:4d} steps -> greedy {r['sft_acc']:.1%}, "
                      f"mean@4 {r['sft_mean']:.3f}; after RL greedy {r['rl_acc']:.1%}, mean@4 {r['rl_mean']:.3f} "
                      f"({r['minutes']:.1f} min)", flush=True)
    for variant, by_seed in results.items():
        accs = [r["rl_acc"] for r in by_seed.values()]
        sft = [r["sft_acc"] for r in by_seed.values()]
        print(f"{variant}: after SFT {min(sft):.1%}..{max(sft):.1%} (spread {max(sft) - min(sft):.1%}); "
              f"after RL {min(accs):.1%}..{max(accs):.1%} (spread {max(accs) - min(accs):.1%})")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
