"""Example user rewards for the built-in arithmetic task: every form of the reward API.

Referenced from ``config.yaml`` by file path (``./my_rewards.py:<function>``). Try them without
training: ``rlft check examples/custom_reward/config.yaml`` calls each on a few dataset rows.
"""

import asyncio

from rewards import RewardResult, batched


def correct(prompt: str, completion: str, *, answer: str) -> float:
    """1 when the first line of the completion is the answer (per sample, sync)."""
    return 1.0 if completion.split("\n")[0].strip() == answer else 0.0


def close_enough(prompt: str, completion: str, *, answer: str, tolerance: int = 1) -> RewardResult:
    """Partial credit for near misses; ``info`` (logged as reward/close_enough/info/off_by) says how far."""
    try:
        off = abs(int(completion.strip()) - int(answer))
    except ValueError:
        return RewardResult(0.0, {"parsed": 0})
    return RewardResult(1.0 if off <= tolerance else 0.0, {"parsed": 1, "off_by": off})


async def remote_style(prompt: str, completion: str, *, answer: str) -> float:
    """An ``async def`` reward (e.g. one that awaits an HTTP verifier); calls of a chunk run concurrently."""
    await asyncio.sleep(0)
    return 1.0 if answer in completion else 0.0


@batched
def brevity(prompts: list[str], completions: list[str], *, num_tokens: list[int], max_new_tokens: list[int]) -> list[float]:
    """Batched: fields arrive as lists; one score per sample comes back."""
    return [1.0 - n / m for n, m in zip(num_tokens, max_new_tokens)]
