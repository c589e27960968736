"""Reward functions and verifiers (CPU, pure Python): the plug-in API for users' own rewards.

    from rewards import reward

    @reward("mentions_answer")
    def mentions_answer(prompt: str, completion: str, *, answer: str) -> float:
        return 1.0 if answer in completion else 0.0

See ``rewards.api`` for the contract, ``rewards.builtin`` (and ``rewards.code``, ``rewards.judge``)
for the built-in rewards, and ``rewards.pool`` for how calls are isolated.
"""

from rewards.api import REWARDS, RewardError, RewardResult, batched, get_reward, reward, reward_names

__all__ = ["REWARDS", "RewardError", "RewardResult", "batched", "get_reward", "reward", "reward_names"]
