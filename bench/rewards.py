"""Reward workers vs calling the reward function in a loop in one process, measured side by side.

For a cheap reward (``exact_match`` with an ``answer_pattern``, a few µs a call) and for
``math_verify`` (sympy-backed, 1-8 ms a call depending on the answer's form), N synthetic samples
(arithmetic and maths answers, about 60% right; ``<answer>`` tagged, LaTeX and ``\\boxed{}``) are
scored:

* in a plain Python loop in this process: ``get_reward(name).fn(prompt, completion, **fields)``
  (with ``to_sample``), the least any scorer must do;
* by ``actors.runtime.RewardGroup`` with 1, 2 and 4 ``RewardWorker`` actors: ``RewardGroup.score``
  on ``Rollout`` records, the trainer's path (``to_sample``, the Ray calls, the pipes to the
  isolated child processes, ``combine``);
* by a ``rewards.pool.RewardPool`` in this process (no Ray), to tell the pool's cost from Ray's.

The first call of each setup (it starts the fork server and the child processes) is a warm-up,
timed apart ("start"). Then each repetition times the loop and the setup one after the other on a
fresh set of samples (both score the same set; no reward cache sees a completion twice), so
machine noise hits both alike, and each setup is compared with the loop timed next to it. Printed:
samples/s (best of the repeats on both sides: a shared machine's interference only adds time), the
ratio setup / loop (above 1 is faster than the loop), the isolation overhead per sample
((t_setup - t_loop) / N) and a check that every setup returns the loop's scores.

    .venv/bin/python bench/rewards.py        # 512 samples, 1/2/4 workers; about 2 min on 2 cores
    .venv/bin/python bench/rewards.py --workers 1,2 --processes-per-worker 1,2 --repeats 5
    .venv/bin/python bench/rewards.py --sandbox   # the code sandbox's cost per program; no Ray, ~1 min

``--sandbox`` times, side by side in one run, one short program (``print(1)``) under the old
sandbox (``weak_process``: today's name for it) and the ``namespaces`` jail, and one ``code_tests``
test three ways: the old marker harness under ``weak_process`` (what ``code_tests`` cost before), a
test compiled into an input/expected pair (one jailed program) and a test run apart from the
solution (two jailed programs). Per program: the median of the repeats, each the mean of a batch.

What to expect on 2 cores: a CPU-bound reward (``math_verify``) can at best run about 2x the loop,
however many workers and processes there are (more processes than cores only add context
switches), and less while anything else runs on the machine; one worker with one process is about
the loop. A cheap reward is always far slower isolated than in the loop: what counts for it is the
isolation cost per sample (pipe messages, pickling, Ray calls), paid once per sample and reward.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MAX_NEW_TOKENS = 512
# reward name -> params of its RewardFunctionConfig (the loop passes the same)
PARAMS: dict[str, dict[str, Any]] = {
    "exact_match": {"answer_pattern": r"<answer>(.*?)</answer>"},
    "math_verify": {},
}
FILLER = (
    "Let me work through this step by step. First I write down what is given, then I simplify "
    "each part and check the intermediate result before I combine them. "
)


def _maths_case(rng: random.Random) -> tuple[str, str]:
    """(gold answer, the completion's final answer): right about 60% of the time, varied forms."""
    kind = rng.randrange(5)
    right = rng.random() < 0.6
    if kind == 0:  # integer
        a, b = rng.randrange(10, 999), rng.randrange(10, 999)
        return str(a + b), str(a + b if right else a + b + rng.choice((-10, -1, 1, 2)))
    if kind == 1:  # a fraction against its decimal
        den = rng.choice((2, 4, 5, 8, 10))
        num = rng.randrange(1, 4 * den)
        return str(num / den), rf"\frac{{{num if right else num + 1}}}{{{den}}}"
    if kind == 2:  # an expanded square against its factored form
        c = rng.randrange(1, 9)
        return f"(x+{c})^2", f"x^2+{2 * c if right else c}x+{c * c}"
    if kind == 3:  # a root
        n = rng.choice((2, 3, 5, 6, 7))
        return rf"\sqrt{{{n * 4}}}", rf"2\sqrt{{{n if right else n + 1}}}"
    k = rng.randrange(1, 6)  # multiples of pi
    return rf"{k}\pi", rf"{k if right else k + 1}\pi"


def build_rollouts(reward: str, n: int, seed: int = 0) -> list[Any]:
    """``n`` synthetic completions for ``reward``: some reasoning text, then a final answer."""
    from rlft.types import Rollout

    rng = random.Random(seed)
    rollouts = []
    for i in range(n):
        gold, got = _maths_case(rng)
        text = FILLER * rng.randrange(1, 4)
        if reward == "math_verify":
            completion = text + rng.choice(
                (f"So the answer is $\\boxed{{{got}}}$.", f"Therefore the final answer is ${got}$.")
            )
        else:
            # exact_match compares text: a right answer may differ in case, spaces or a final period
            shown = got if got != gold and rng.random() < 0.5 else gold
            shown = rng.choice((shown, f" {shown}.", shown.upper()))
            completion = f"{text}<answer>{shown}</answer>"
        n_tokens = max(1, len(completion) // 4)
        rollouts.append(
            Rollout(
                prompt_id=f"q{i // 8}",
                group_id=i // 8,
                prompt_ids=list(range(32)),
                completion_ids=list(range(n_tokens)),
                rollout_logprobs=[-1.0] * n_tokens,
                finish_reason="stop",
                policy_version=0,
                prompt=f"Question {i // 8}: give the final answer.",
                completion=completion,
                metadata={"answer": gold},
            )
        )
    return rollouts


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_reward(
    reward: str, n: int, workers: list[int], processes: list[int], repeats: int, cpus: float
) -> list[dict[str, Any]]:
    """The loop row, then one row per setup (the pool without Ray, then each group size)."""
    from actors.runtime import RewardGroup, to_sample
    from rewards.api import get_reward
    from rewards.pool import RewardPool
    from rlft.config import RewardFunctionConfig, load_config

    params = PARAMS.get(reward, {})
    spec = get_reward(reward)
    functions = [RewardFunctionConfig(name=reward, params=params)]
    setups: list[tuple[str, int, int]] = [("pool", 0, p) for p in processes]
    setups += [("ray", w, p) for w in workers for p in processes]
    # a fresh set for every timed call (set 0 is for the warm-ups): a reward's caches (sympy's) see
    # each completion once, as in training; the loop and the setup next to it score the same set
    sets = [build_rollouts(reward, n, seed) for seed in range(1 + len(setups) * repeats)]

    def loop(rollouts: list[Any]) -> list[float]:
        fn, kwargs = spec.fn, spec.call_kwargs
        samples = [to_sample(r, MAX_NEW_TOKENS) for r in rollouts]  # RewardGroup.score does it too
        return [float(fn(s.prompt, s.completion, **kwargs(s.fields, params))) for s in samples]

    def pool_scorer(pool: RewardPool) -> Callable[[list[Any]], list[float | None]]:
        def score(rollouts: list[Any]) -> list[float | None]:
            samples = [to_sample(r, MAX_NEW_TOKENS) for r in rollouts]
            return [o.score for o in pool.score(samples)[reward]]

        return score

    loop(sets[0])  # warm-up: lazy imports, as each setup's warm-up call gets
    all_loops: list[float] = []
    right: list[float] = []
    rows = []
    for si, (kind, w, p) in enumerate(setups):
        start = time.perf_counter()
        if kind == "pool":
            pool = RewardPool(functions, processes=p)
            score, close = pool_scorer(pool), pool.close
        else:
            cfg = load_config(
                overrides=[
                    f"reward.num_workers={w}",
                    f"reward.processes_per_worker={p}",
                    f"cluster.reward.cpus={cpus}",
                    f"rollout.max_new_tokens={MAX_NEW_TOKENS}",
                ]
            )
            group = RewardGroup(cfg, functions)
            score, close = (lambda rs, g=group: g.score(rs).totals), group.shutdown
        times, loops, mismatches = [], [], 0
        try:
            score(sets[0])  # warm-up: the fork server and the child processes start here
            startup = time.perf_counter() - start
            for rep in range(repeats):
                rollouts = sets[1 + si * repeats + rep]
                t, expected = timed(lambda: loop(rollouts))
                loops.append(t)
                t, got = timed(lambda: score(rollouts))
                times.append(t)
                mismatches += sum(g != e for g, e in zip(got, expected))
                mismatches += abs(len(got) - len(expected))
                right.append(sum(expected) / n)
        finally:
            close()
        all_loops += loops
        rows.append(
            {"reward": reward, "kind": kind, "workers": w, "processes": p, "seconds": min(times),
             "loop": min(loops), "startup": startup, "mismatches": mismatches}
        )
        print(
            f"  measured {reward} {kind} workers={w} processes={p}: setup "
            + ", ".join(f"{t * 1e3:.0f}" for t in times) + " ms; loop "
            + ", ".join(f"{t * 1e3:.0f}" for t in loops) + " ms",
            flush=True,
        )
    rows.insert(0, {
        "reward": reward, "kind": "loop", "workers": 0, "processes": 0, "seconds": min(all_loops),
        "loop": min(all_loops), "median": statistics.median(all_loops), "right": statistics.mean(right),
    })
    return rows


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


OLD_HARNESS = """\
def _harness(solution, test, marker):
    import posix, sys
    write, run, build = posix.write, exec, compile
    module = sys.modules["solution"] = type(sys)("solution")
    namespace = vars(module)
    run(build(solution, "solution.py", "exec"), namespace)
    run(build(test, "test.py", "exec"), namespace)
    write(1, marker)

_harness({solution!r}, {test!r}, {marker!r})
"""  # code_tests before issue 20: one program per test, passed when it printed the marker


def bench_sandbox(batch: int, repeats: int) -> None:
    from rewards.code import code_tests
    from rewards.sandbox import make_sandbox, run_sandboxed

    weak, jail = make_sandbox("weak_process"), make_sandbox("namespaces")
    no_cgroup = make_sandbox("namespaces", {"cgroup": False})
    solution = "def add(a, b):\n    return a + b\n"
    old = OLD_HARNESS.format(solution=solution, test="assert add(1, 2) == 3", marker=b"\nM\n")
    setups: dict[str, Callable[[], Any]] = {
        "program, weak_process (before)": lambda: run_sandboxed("print(1)", timeout_s=60, backend=weak),
        "program, namespaces (after)": lambda: run_sandboxed("print(1)", timeout_s=60, backend=jail),
        "program, namespaces without its cgroup": lambda: run_sandboxed("print(1)", timeout_s=60, backend=no_cgroup),
        "code_tests test, marker harness, weak_process (before)": lambda: run_sandboxed(old, timeout_s=60, backend=weak),
        "code_tests test, compiled pair, namespaces (after)": lambda: code_tests(
            "", solution, tests=["assert add(1, 2) == 3"], timeout_s=60
        ),
        "code_tests test, run apart, namespaces (after)": lambda: code_tests(
            "", solution, tests=["def check(f):\n    assert f(1, 2) == 3\ncheck(add)"], timeout_s=60
        ),
    }
    for fn in setups.values():  # warm-up: the jail's probe, imports, page cache
        fn()
    times: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(repeats):  # interleaved, so machine noise hits every setup alike
        for name, fn in setups.items():
            start = time.perf_counter()
            for _ in range(batch):
                fn()
            times[name].append((time.perf_counter() - start) / batch)
    base = {"program": statistics.median(times["program, weak_process (before)"])}
    base["code_tests"] = statistics.median(times["code_tests test, marker harness, weak_process (before)"])
    print(f"\n{batch} runs per batch, {repeats} batches interleaved; median ms per run; ratio to the 'before' row")
    for name, values in times.items():
        ms = statistics.median(values) * 1e3
        ratio = statistics.median(values) / base[name.split(",")[0].split(" ")[0]]
        print(f"{name:<58} {ms:>8.1f} ms {ratio:>6.2f}x")
    print(f"jail: {jail.describe()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512, help="samples per timed call")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated reward worker counts")
    parser.add_argument(
        "--processes-per-worker", default="1", help="comma-separated reward.processes_per_worker"
    )
    parser.add_argument("--rewards", default="exact_match,math_verify", help="comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per setup (best kept)")
    parser.add_argument("--cpus", type=int, default=None, help="Ray's num_cpus (default: cores)")
    parser.add_argument("--sandbox", action="store_true", help="time the code sandbox per program instead")
    args = parser.parse_args()
    if args.sandbox:
        bench_sandbox(batch=20, repeats=max(args.repeats, 5))
        return
    workers, processes = _ints(args.workers), _ints(args.processes_per_worker)
    rewards = [r for r in args.rewards.split(",") if r]
    if not workers or min(workers) < 1 or not processes or min(processes) < 1:
        parser.error("--workers and --processes-per-worker need positive integers")
    if args.samples < 1 or args.repeats < 1:
        parser.error("--samples and --repeats must be positive")
    unknown = [r for r in rewards if r not in PARAMS]
    if unknown:
        parser.error(f"no synthetic samples for {unknown}; choose from {', '.join(PARAMS)}")

    import ray

    num_cpus = args.cpus or os.cpu_count() or 2
    # the largest group must fit; a reward worker itself only waits on its child processes
    cpus_per_worker = min(1.0, num_cpus / max(workers))
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    rows = []
    wall, load = time.perf_counter(), os.getloadavg()[0]
    try:
        for reward in rewards:
            rows += bench_reward(
                reward, args.samples, workers, processes, args.repeats, cpus_per_worker
            )
    finally:
        ray.shutdown()
    wall = time.perf_counter() - wall

    print(
        f"\n{args.samples} samples per call, best of {args.repeats}; {num_cpus} Ray CPUs, "
        f"{cpus_per_worker:g} per reward worker\nratio = setup samples/s / samples/s of the loop "
        "timed next to it"
    )
    print(
        f"{'reward':<12} {'setup':<12} {'workers':>7} {'procs':>5} {'samples/s':>10} {'ratio':>7}"
        f" {'overhead':>12} {'start':>7} {'scores':>7}"
    )
    for r in rows:
        rate = args.samples / r["seconds"]
        setup = {"loop": "loop", "pool": "RewardPool", "ray": "RewardGroup"}[r["kind"]]
        line = f"{r['reward']:<12} {setup:<12} {r['workers'] or '-':>7} {r['processes'] or '-':>5}"
        line += f" {rate:>10,.0f}"
        if r["kind"] == "loop":
            line += f" {'1.000x':>7} {'-':>12} {'-':>7} {'':>7}   ({r['right']:.0%} right;"
            line += f" median {args.samples / r['median']:,.0f}/s)"
        else:
            over = (r["seconds"] - r["loop"]) / args.samples * 1e6
            check = "same" if not r["mismatches"] else f"{r['mismatches']} off"
            line += f" {r['loop'] / r['seconds']:>6.3f}x {over:>9.1f} µs {r['startup']:>6.1f}s"
            line += f" {check:>7}"
        print(line)
    print("overhead = (t_setup - t_loop) / samples: the isolation cost per sample (cheap reward)")
    print("start = building the setup plus its first call (fork server, child processes, imports)")
    print("RewardPool = the pool in this process, no Ray; RewardGroup = RewardWorker Ray actors")
    print(
        f"total {wall:.0f}s; 1-minute load average {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end"
    )


if __name__ == "__main__":
    main()
