"""The reward plug-in API: a reward is a plain Python function.

Per sample (sync or ``async def``)::

    from rewards import reward

    @reward("has_answer")
    def has_answer(prompt: str, completion: str, *, answer: str) -> float:
        return 1.0 if answer in completion else 0.0

Batched, for rewards that batch well (models, judges): the dataset fields arrive as lists, one
entry per sample, and the function returns one score per sample::

    @reward("short", batched=True)
    def short(prompts: list[str], completions: list[str], **fields) -> list[float]:
        return [1.0 / (1 + len(c)) for c in completions]

A function need not be registered: ``reward.functions: [{path: ./my_rewards.py:score}]`` loads it from
a file (or ``my_pkg.rewards:score`` from a module); mark a batched one with ``@batched``.

What a reward receives, as keyword arguments, is the dataset row's other columns (``answer`` and the
``data.metadata_fields``) plus what the runtime knows of the sample: ``prompt_id``, ``num_tokens``
(completion length in tokens), ``finish_reason`` (``stop``/``length``) and ``max_new_tokens``. A
function gets only the fields its signature names, or all of them with ``**fields``. The config's
``params`` are passed as keywords too and win over a field of the same name.

Functions written for TRL (``reward(completions, **kwargs) -> list[float]``) or verl
(``compute_score(data_source, solution_str, ground_truth, extra_info=None)``) work as written:
``rewards.foreign`` recognises them by signature and maps the fields onto theirs.

The pieces live below this module so that reward modules can import them without importing the
built-in rewards: ``rewards.spec`` (``RewardSpec``, ``RewardResult``, ``RewardError``, ``as_score``)
and ``rewards.registry`` (``REWARDS``, ``@reward``, ``inspect_reward``, ``check_params``). ``REWARDS`` is
a ``Registry`` like every plug-in point's (``names()``, ``in``, ``unregister``, ``validate_params``),
holding each reward's ``RewardSpec``.

A reward returns a float (ints and bools are accepted) or a ``RewardResult(score, info)`` whose
numeric ``info`` values are logged as means per step. Anything else, a non-finite value, an
exception, a timeout or a crash marks the sample failed: it is left out of the loss and counted,
never scored 0.

>>> @reward("doc_len", batched=True)
... def doc_len(prompts, completions, *, scale: float = 1.0):
...     return [scale * len(c) for c in completions]
>>> spec = get_reward("doc_len")
>>> spec.batched, spec.accepts_fields, sorted(spec.keywords)
(True, frozenset({'scale'}), ['scale'])
>>> REWARDS.validate_params("doc_len", {"scael": 2.0})
Traceback (most recent call last):
...
rewards.spec.RewardError: unknown parameter 'scael' for reward 'doc_len' (did you mean 'scale'?); valid parameters: scale
>>> _ = REWARDS.unregister("doc_len")
"""

from __future__ import annotations

from rewards.registry import REWARDS, RewardNameError, RewardRegistry, batched, check_params, inspect_reward, reward
from rewards.spec import RUNTIME_FIELDS, RewardError, RewardResult, RewardSpec, as_score

__all__ = [
    "REWARDS", "RUNTIME_FIELDS", "RewardError", "RewardNameError", "RewardRegistry", "RewardResult", "RewardSpec",
    "as_score", "batched", "check_params", "get_reward", "inspect_reward", "reward", "reward_names",
]  # fmt: skip


def get_reward(name: str) -> RewardSpec:
    """The registered reward ``name`` (the built-ins loaded first); an unknown name lists the
    registered ones (``RewardNameError``, a ``RewardError``)."""
    _load_builtins()
    return REWARDS.get(name)


def reward_names() -> list[str]:
    _load_builtins()
    return REWARDS.names()


def _load_builtins() -> None:
    import rewards.builtin  # noqa: F401  (registers the built-in rewards)
