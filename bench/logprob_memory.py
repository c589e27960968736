"""Peak memory of token log-probs at a large vocabulary: the full float32 log-softmax against the
chunked ``rlft.training.token_logprobs``, forward + backward, on CPU.

Workload: bf16 logits ``[1, N, V]`` (default ``N = 2048`` tokens, ``V = 151936``, Qwen2's vocabulary)
that require grad, random targets, a random upstream gradient.

1. ``full``: ``torch.log_softmax(logits.float(), -1)`` + gather, then the backward: the approach
   that materialises float32 ``[N, V]`` tensors (the upcast, the log-softmax, its gradient).
2. ``chunked``: ``token_logprobs(logits, ids)``, forward + backward, ``--chunk-tokens`` rows at a
   time: it keeps only the bf16 logits, the targets and one logsumexp per token.

Each variant runs in a fresh subprocess (this file with ``--variant``) so that one's peak cannot
hide the other's. Its peak memory is the peak RSS (``ru_maxrss``) minus the RSS once the logits
exist; both include the bf16 ``[N, V]`` gradient of the logits, which any approach must produce.
Prints a table, the ratio, and the arithmetic for 16k tokens per micro-batch.

    .venv/bin/python bench/logprob_memory.py                  # 2048 tokens, ~6 GB peak, < 1 min
    .venv/bin/python bench/logprob_memory.py --tokens 512     # quicker
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VOCAB = 151936
TARGET_TOKENS = 16384  # the micro-batch size the claim is about
GB = 1e9


def current_rss() -> int:
    """Resident set size of this process now, in bytes."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def full_logprobs(logits, ids):  # noqa: ANN001, ANN201 - torch is imported lazily
    """The plain definition: a float32 log-softmax of every position, then the gather. [B, L-1]"""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)  # [B, L, V] float32
    return logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)


def measure(variant: str, tokens: int, vocab: int, chunk_tokens: int) -> dict[str, float]:
    """Forward + backward of one variant in this process: extra peak bytes and seconds."""
    import torch

    from rlft.training import token_logprobs

    def run(logits: torch.Tensor, ids: torch.Tensor) -> None:
        if variant == "full":
            lp = full_logprobs(logits, ids)
        else:
            lp = token_logprobs(logits, ids, chunk_tokens=chunk_tokens)
        upstream = torch.randn(lp.shape, generator=torch.Generator().manual_seed(1))
        (lp * upstream).sum().backward()

    g = torch.Generator().manual_seed(0)
    small = torch.randn(1, 8, vocab, generator=g).to(torch.bfloat16).requires_grad_(True)
    run(small, torch.randint(0, vocab, (1, 8), generator=g))  # warm-up: first-call costs out of the timing
    del small
    # filled in place: no float32 [N, V] exists while the logits are made, so the peak so far is theirs
    logits = torch.empty(1, tokens, vocab, dtype=torch.bfloat16).normal_(generator=g).requires_grad_(True)
    ids = torch.randint(0, vocab, (1, tokens), generator=g)
    base = current_rss()
    start = time.perf_counter()
    run(logits, ids)
    seconds, extra = time.perf_counter() - start, peak_rss() - base
    assert logits.grad is not None and torch.isfinite(logits.grad).all()  # after the reading: it allocates
    return {"extra_bytes": extra, "base_bytes": base, "seconds": seconds}


def run_variant(variant: str, args: argparse.Namespace) -> dict[str, float]:
    """``measure`` in a fresh interpreter (this file with ``--variant``); its JSON result."""
    cmd = [sys.executable, __file__, "--variant", variant, "--tokens", str(args.tokens),
           "--vocab", str(args.vocab), "--chunk-tokens", str(args.chunk_tokens)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    """The table, the ratio and the 16k-token arithmetic."""
    n, v = args.tokens, args.vocab
    print(f"token log-probs, forward + backward: {n} tokens x vocab {v}, bf16 logits "
          f"({2 * n * v / GB:.2f} GB), chunk_tokens={args.chunk_tokens}")
    print(f"{'variant':<10}{'peak extra (GB)':>18}{'time (s)':>12}")
    for name, r in results.items():
        print(f"{name:<10}{r['extra_bytes'] / GB:>18.2f}{r['seconds']:>12.2f}")
    full, chunked = results["full"]["extra_bytes"], results["chunked"]["extra_bytes"]
    print(f"peak extra memory: full / chunked = {full / chunked:.1f}x")

    fp32_at_target = 4 * TARGET_TOKENS * v
    grad_at_target = 2 * TARGET_TOKENS * v  # the bf16 gradient of the logits: needed either way
    # the chunks' float32 work: constant in the tokens once they fill a whole chunk
    working_set = max(chunked - 2 * n * v, 0) * args.chunk_tokens / min(n, args.chunk_tokens)
    print(f"at {TARGET_TOKENS} tokens: one float32 [{TARGET_TOKENS}, {v}] tensor is {fp32_at_target / GB:.2f} GB;")
    print(f"  full (scales with tokens, measured x {TARGET_TOKENS / n:g}): ~{full * TARGET_TOKENS / n / GB:.1f} GB")
    print(f"  chunked: bf16 gradient {grad_at_target / GB:.2f} GB + chunk work {working_set / GB:.2f} GB "
          f"= ~{(grad_at_target + working_set) / GB:.1f} GB")


def main() -> None:
    from rlft.training import LOGPROB_CHUNK_TOKENS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048, help="tokens per micro-batch (N)")
    parser.add_argument("--vocab", type=int, default=VOCAB)
    parser.add_argument("--chunk-tokens", type=int, default=LOGPROB_CHUNK_TOKENS)
    parser.add_argument("--variant", choices=["full", "chunked"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # the subprocess: one measurement, as JSON on the last line
        print(json.dumps(measure(args.variant, args.tokens, args.vocab, args.chunk_tokens)))
        return
    report({name: run_variant(name, args) for name in ("full", "chunked")}, args)


if __name__ == "__main__":
    main()
