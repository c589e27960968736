"""SFT and RL in one run, compared on the hard split of ``builtin:long_addition``.

One SFT warm-up on the easy split (1-3 digit operands, until held-out greedy accuracy reaches 90 %),
then, from that checkpoint, the same RL budget on the hard split (4-5 digits, where the warm-up
scores about 0 %) for each method: plain GRPO, ReLIFT, mixed-policy groups (LUFFY), prefix sampling
(Prefix-RFT) and RFT with DART. Every method draws the same prompts per step and generates at most
the same samples (mixed generates one fewer per group: a demonstration takes its place). Prints
held-out greedy accuracy and mean@4 on ``hard_eval`` before and after, the share of the worked
solution's steps the greedy completions get right (``long_addition.steps_correct``, 200 prompts),
and each method's gain over GRPO's.

    .venv/bin/python bench/hybrids.py                 # 60 steps per method (~25 min on 2 cores)
    .venv/bin/python bench/hybrids.py --steps 20 --methods grpo relift
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COMMON = ["model.path=builtin:tiny", "rollout.num_workers=1", "rollout.temperature=1.0", "cluster.dashboard=false",
          "logging.report=false", "checkpoint.keep_last=1", "learner.max_tokens_per_micro_batch=null"]
SFT = ["data.train_path=builtin:long_addition", "evaluation.num_prompts=200", "evaluation.pass_k=0",
       "stages=[{kind: sft, steps: 2000, batch_size: 64, lr: 1.0e-3, until: {threshold: 0.9, every: 100}}]"]
METHODS = {
    "grpo": [],
    "relift": ["algo.guidance={name: relift, params: {batch_size: 32}}"],
    "mixed": ["algo.guidance={name: mixed, params: {demos_per_group: 1}}"],
    "prefix": ["algo.guidance={name: prefix, params: {share: 0.5, min_fraction: 0.2, max_fraction: 0.8}}"],
    "rft": ["RFT"],
}


def rl_overrides(method: str, start: str, steps: int) -> list[str]:
    stage = (f"stages=[{{kind: rft, steps: {steps}, rft: {{samples: 8, allocation: uniform, target: 2, max_samples: 8}}}}]"
             if method == "rft" else f"stages=[{{kind: rl, steps: {steps}}}]")
    return [f"model.path={start}", "data.train_path=builtin:long_addition:hard", "rollout.prompts_per_step=16",
            "rollout.group_size=8", "rollout.max_new_tokens=56", "learner.lr=1.0e-3", "evaluation.num_prompts=200",
            "evaluation.pass_k=4", stage, *[o for o in METHODS[method] if o != "RFT"]]


def steps_right(checkpoint: str, n: int = 200) -> float:
    """Mean ``long_addition.steps_correct`` of the greedy completions of ``checkpoint`` on the first
    ``n`` ``hard_eval`` prompts (Hugging Face generation): how much of the written procedure the
    policy gets right where exact answers are still out of reach."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlft.tasks import long_addition

    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    total = 0.0
    for record in long_addition.generate("hard_eval", n, seed=0):
        ids = tok(record.prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=56, do_sample=False, pad_token_id=tok.pad_token_id)
        total += long_addition.steps_correct(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True), record)
    return total / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--start", help="an SFT checkpoint to start from (default: warm one up first)")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    from bench.train_runs import train_run
    from rlft.config import load_config

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        start = args.start
        if start is None:
            summary, seconds = train_run(load_config(overrides=[*COMMON, *SFT]), Path(tmp) / "sft")
            start = summary.checkpoints[-1]
            rows = [json.loads(x) for x in (Path(tmp) / "sft" / "metrics.jsonl").read_text().splitlines()]
            evals = [(int(r["step"]), r["eval/accuracy"]) for r in rows if "eval/accuracy" in r]
            print(f"SFT on the easy split: {evals[-1][0]} steps, greedy {evals[-1][1]:.1%} ({seconds / 60:.1f} min)",
                  flush=True)
        steps_before = steps_right(start)
        for method in args.methods:
            cfg = load_config(overrides=[*COMMON, *rl_overrides(method, start, args.steps)])
            summary, seconds = train_run(cfg, Path(tmp) / method)
            name = cfg.stages[0].kind + "1"
            before, after = summary.evaluations[f"before_{name}"], summary.evaluations[f"after_{name}"]
            rows = [json.loads(x) for x in (Path(tmp) / method / "metrics.jsonl").read_text().splitlines()]
            sampled = sum(r.get("rft/sampled", r.get("batch/rollouts", 0)) for r in rows if r.get("stage") == name)
            results[method] = r = {"before": before["eval/accuracy"], "after": after["eval/accuracy"],
                                   "mean_before": before["eval/mean@4"], "mean_after": after["eval/mean@4"],
                                   "steps_before": steps_before, "steps_after": steps_right(summary.checkpoints[-1]),
                                   "samples": sampled, "minutes": seconds / 60}
            print(f"{method:7} greedy {r['before']:.1%} -> {r['after']:.1%}, mean@4 {r['mean_before']:.3f} -> "
                  f"{r['mean_after']:.3f}, steps right {r['steps_before']:.3f} -> {r['steps_after']:.3f}, "
                  f"{int(sampled)} completions ({r['minutes']:.1f} min)", flush=True)
    if "grpo" in results:
        base = results["grpo"]
        for method, r in results.items():
            print(f"{method:7} gain over GRPO: greedy {r['after'] - base['after']:+.1%}, "
                  f"mean@4 {r['mean_after'] - base['mean_after']:+.3f}, steps right {r['steps_after'] - base['steps_after']:+.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
