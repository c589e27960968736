"""Overhead of rlft's RL step over its raw parts, measured side by side in one run.

Workload: 8 prompts x 8 samples x up to 128 new tokens on a ~25M-parameter tiny Qwen2 (fp32, CPU).

1. The full step: ``Driver.rl_step`` on real Ray actors (one rollout worker, one learner rank):
   sample prompts -> generate -> score -> build the batch -> learner step -> weight sync.
2. The raw parts, in this process, with the same thread budget: ``vllm.LLM.generate`` on the same
   prompts and sampling settings, and a Hugging Face forward + backward + AdamW step on the same
   completions.

Prints ``overhead = step / (generate + train)`` (target <= 1.10). Medians over ``--rounds`` steps,
after one warm-up step each.

    .venv/bin/python bench/step_overhead.py            # 25M parameters, 3 rounds
    .venv/bin/python bench/step_overhead.py --quick    # 6M parameters, 64 tokens, 2 rounds
    .venv/bin/python bench/step_overhead.py --set learner.precision=bf16   # any config override
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

THREADS = 2  # each role gets the machine's 2 cores while it runs (the loop is synchronous)


class HashReward:
    """A deterministic reward with variance inside groups (no group is filtered)."""

    def score(self, rollouts):
        return [float(sum(r.completion_ids) % 3 == 0) for r in rollouts]


def setup(quick: bool, overrides: list[str] = ()):
    """The tiny model, the config and the prompts of the workload."""
    hidden, layers, max_new = (256, 6, 64) if quick else (512, 8, 128)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoTokenizer

    from rlft.config import load_config
    from rlft.models import build_tiny_model
    from rlft.types import Prompt

    tmp = tempfile.mkdtemp(prefix="rlft-bench-")
    model_dir = str(build_tiny_model(Path(tmp) / "model", hidden_size=hidden, num_layers=layers, num_heads=8))
    cfg = load_config(
        overrides=[
            "rollout.prompts_per_step=8", "rollout.group_size=8", f"rollout.max_new_tokens={max_new}",
            "rollout.temperature=1.0", "learner.micro_batch_size=64", "learner.lr=1e-5",
            f"cluster.rollout.cpus={THREADS}", f"cluster.learner.cpus={THREADS}",
            "stages=[{kind: rl, steps: 100}]", *overrides,
        ]
    )
    texts = ["12+34=", "7*8=", "hello ", "99-9=", "abc", "x+y=", "5+5=", "what "]
    tok = AutoTokenizer.from_pretrained(model_dir)
    prompts = [Prompt(f"p{i}", [tok.bos_token_id, *tok(t)["input_ids"]], t) for i, t in enumerate(texts)]
    return model_dir, cfg, prompts


def run_steps(model_dir, cfg, prompts, rounds: int):
    """``rounds`` full RL steps (after one warm-up step) on real Ray actors: each step's seconds,
    its metrics, and one more batch's (prompt, completion) token ids."""
    import ray

    from actors.runtime import LearnerGroup, RolloutGroup, WeightPush
    from rlft.collect import sampling_settings
    from rlft.compose import build_driver

    ray.init(num_cpus=2 * THREADS, include_dashboard=False, log_to_driver=False)
    try:
        rollouts = RolloutGroup(cfg, model_dir)
        learners = LearnerGroup(cfg, model_dir, total_steps=100)
        driver = build_driver(cfg, engine=rollouts, scorer=HashReward(), learner=learners,
                              weights=WeightPush(learners, rollouts), train_prompts=prompts)
        steps, metrics = [], []
        for i in range(rounds + 1):
            start = time.perf_counter()
            m = driver.rl_step()
            if i:  # the first step warms the engine up
                steps.append(time.perf_counter() - start)
                metrics.append(m)
        batch = [(list(r.prompt_ids), list(r.completion_ids))
                 for r in rollouts.generate(prompts, sampling_settings(cfg, 0))]
        learners.shutdown()
        rollouts.shutdown()
    finally:
        ray.shutdown()
    return steps, metrics, batch


def full_step(quick: bool, rounds: int, overrides: list[str] = ()) -> tuple[float, int, dict[str, float]]:
    """Median seconds of the full RL step under ``overrides``, samples per step, median metrics."""
    model_dir, cfg, prompts = setup(quick, overrides)
    steps, metrics, _ = run_steps(model_dir, cfg, prompts, rounds)
    median = {k: statistics.median(m.get(k, 0.0) for m in metrics) for k in metrics[0]}
    return statistics.median(steps), cfg.rollout.prompts_per_step * cfg.rollout.group_size, median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for the rlft step (e.g. learner.precision=bf16)")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 3)
    model_dir, cfg, prompts = setup(args.quick, args.set)
    steps, metrics, batch_samples = run_steps(model_dir, cfg, prompts, rounds)
    phase = {"generate": [m["time/generate"] for m in metrics],
             "train": [m["time/build"] + m["time/train"] for m in metrics],
             "sync": [m["sync/seconds"] for m in metrics]}

    # 2. the raw parts in this process, same prompts, sampling, batch and thread budget
    import torch

    torch.set_num_threads(THREADS)
    raw_gen = _raw_generate(model_dir, cfg, prompts, rounds)
    raw_train, n_params = _raw_train(model_dir, batch_samples, rounds)

    step, gen, train = statistics.median(steps), statistics.median(raw_gen), statistics.median(raw_train)
    tokens = sum(len(c) for _, c in batch_samples)
    print(f"model {n_params / 1e6:.1f}M params, 8 prompts x 8 samples, {tokens} completion tokens per step")
    print(f"rlft step (median of {rounds})      {step:8.3f} s   "
          f"[generate {statistics.median(phase['generate']):.3f}, train {statistics.median(phase['train']):.3f}, "
          f"sync {statistics.median(phase['sync']):.3f}]")
    print(f"raw vLLM generate                 {gen:8.3f} s")
    print(f"raw HF forward+backward+AdamW     {train:8.3f} s")
    print(f"overhead = step / (generate + train) = {step / (gen + train):.3f}   (target <= 1.10)")


def _raw_generate(model_dir, cfg, prompts, rounds) -> list[float]:
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from actors.rollout import engine_kwargs

    kwargs = engine_kwargs(model_dir, cfg.rollout, cfg.model, seed=0, on_cpu=True)
    llm = LLM(**kwargs)
    from rlft.collect import sampling_settings

    s = sampling_settings(cfg, 0)
    inputs = [TokensPrompt(prompt_token_ids=p.token_ids) for p in prompts]
    times = []
    for i in range(rounds + 1):
        params = [SamplingParams(n=s.n, temperature=s.temperature, max_tokens=s.max_new_tokens, logprobs=0,
                                 seed=s.seed + 1000 * j + i) for j in range(len(prompts))]
        start = time.perf_counter()
        llm.generate(inputs, params, use_tqdm=False)
        if i:
            times.append(time.perf_counter() - start)
    del llm
    return times


def _raw_train(model_dir, samples, rounds) -> tuple[list[float], int]:
    import torch
    from transformers import AutoModelForCausalLM

    from rlft.types import TrainSample, collate

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch = collate([TrainSample(p, c, [1.0] * len(c)) for p, c in samples])
    times = []
    for i in range(rounds + 1):
        start = time.perf_counter()
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
        logp = torch.log_softmax(logits.float(), -1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
        loss = -(logp * batch.advantages * batch.mask).sum() / batch.mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if i:
            times.append(time.perf_counter() - start)
    return times, sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    main()
