r"""The built-in task: add two small whole numbers, ``"37+85="`` -> ``"122"``.

It is rlft's embedded default, the task on which the tests prove that GRPO learns, so it is built to
be (a) checked exactly by a few lines of code, (b) within reach of the ~0.6M-parameter character
model of ``rlft.models.build_tiny_model`` (every character is in its vocabulary; a prompt has at
most 6 characters and an answer at most 3), and (c) not solved at once: the most significant digit
comes first, so the model must work out the carries before writing the digits that cause them, and
an exact match needs every digit right. Measured with that model (plain torch, AdamW, batch 64,
greedy accuracy on 500 eval prompts): SFT at lr 1e-3 stays under ~10 % for 400-1500 steps (the
length of this plateau depends on the seed), then climbs from 20 % to 90 % within ~300 steps, so a
warm-up is best stopped when eval accuracy first passes 20-40 %, not after a fixed step count.
From there on-policy GRPO (32 prompts x 8 samples, temperature 1, lr 2e-4) added 2-20 points
(mean 11) in 100 steps over six starts; lr 5e-4 and above collapsed to under 10 %.

>>> train = generate("train", 3, seed=0)
>>> [(r.prompt, r.answer) for r in train]
[('10+27=', '37'), ('18+7=', '25'), ('32+7=', '39')]
>>> train[1].metadata
{'task': 'arithmetic', 'category': 'carry', 'difficulty': 1, 'digits': 2}
>>> reference_completion(train[1])
'25'
>>> score("25", "25"), score(" 25 \nmore text", "25"), score("025", "25")
(1.0, 1.0, 0.0)

Splits: a pair ``(a, b)`` belongs to ``eval`` when ``crc32("a+b=") % 10 == 0`` and to ``train``
otherwise. The split is a property of the prompt, not of the seed, so any train sample and any eval
sample are disjoint, whatever seeds drew them; a seed only chooses which prompts, in which order.
"""

from __future__ import annotations

import random
import zlib
from functools import lru_cache
from typing import Literal

from rlft.data.record import Record

NAME = "arithmetic"
SPLITS = ("train", "eval")
MAX_DIGITS = 2
"""Operands run from 0 to ``10**max_digits - 1``; 2 gives the 10,000 pairs of 0..99."""
DEFAULT_SIZES = {"train": 4000, "eval": 500}
"""Prompts per split when ``n`` is None (capped at the split's pool for small ``max_digits``)."""
EVAL_BUCKETS = 10
"""One pair in ``EVAL_BUCKETS`` (by the prompt's crc32) is held out for ``eval``."""
EOS_TEXT = "<eos>"
"""The tiny tokenizer's end-of-sequence token as text (what a decode without skipping specials shows)."""

Split = Literal["train", "eval"]


def make_prompt(a: int, b: int) -> str:
    """The prompt text for ``a + b``: no spaces, so the model reads eight characters at most.

    >>> make_prompt(7, 35)
    '7+35='
    """
    return f"{a}+{b}="


def count_carries(a: int, b: int) -> int:
    """How many digit positions of ``a + b`` produce a carry (the task's difficulty).

    >>> count_carries(12, 34), count_carries(15, 36), count_carries(99, 1)
    (0, 1, 2)
    """
    carries = carry = 0
    while a or b:
        carry = (a % 10 + b % 10 + carry) // 10
        carries += carry
        a, b = a // 10, b // 10
    return carries


def split_of(a: int, b: int) -> Split:
    """Which split the pair belongs to; fixed forever, independent of any seed.

    crc32 of the prompt rather than a rule on the digits: a modular rule such as ``(a + b) % 10``
    would hold out whole classes of units digits, so the eval set would test patterns that training
    never showed.

    >>> split_of(91, 48), split_of(0, 8)
    ('train', 'eval')
    """
    return "eval" if zlib.crc32(make_prompt(a, b).encode()) % EVAL_BUCKETS == 0 else "train"


@lru_cache(maxsize=8)
def _pool(split: Split, max_digits: int) -> tuple[tuple[int, int], ...]:
    """Every pair of the split, in a fixed order (the seed's shuffle picks from it)."""
    top = 10**max_digits
    return tuple((a, b) for a in range(top) for b in range(top) if split_of(a, b) == split)


def pool_size(split: Split, max_digits: int = MAX_DIGITS) -> int:
    """Number of distinct prompts in a split.

    >>> pool_size("train") + pool_size("eval")
    10000
    """
    _check(split, max_digits)
    return len(_pool(split, max_digits))


def _check(split: str, max_digits: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} of task '{NAME}'; valid splits: {', '.join(SPLITS)}")
    if not 1 <= max_digits <= 3:
        # 4 digits would enumerate 10^8 pairs; the tiny model is sized for 2.
        raise ValueError(f"max_digits must be 1, 2 or 3, got {max_digits}")


def generate(
    split: Split = "train", n: int | None = None, *, seed: int = 0, max_digits: int = MAX_DIGITS
) -> list[Record]:
    """``n`` distinct problems of ``split``, the same list for the same ``(split, n, seed, max_digits)``.

    Pairs are drawn uniformly (without replacement) from the split's pool: with two digits about
    30 % have no carry, 45 % one and 25 % two, and half the sums have three digits. ``prompt_id`` is
    ``arithmetic:<a>+<b>``: the problem itself, so logs and curriculum statistics of different runs
    and seeds refer to the same problem by the same id.

    >>> [r.prompt_id for r in generate("eval", 2, seed=1)]
    ['arithmetic:52+22', 'arithmetic:99+95']
    >>> generate("train", 5, seed=3) == generate("train", 5, seed=3)
    True
    >>> generate("valid", 1)
    Traceback (most recent call last):
    ...
    ValueError: unknown split 'valid' of task 'arithmetic'; valid splits: train, eval
    """
    _check(split, max_digits)
    pool = _pool(split, max_digits)
    if n is None:
        n = min(DEFAULT_SIZES[split], len(pool))
    if not 0 < n <= len(pool):
        raise ValueError(
            f"n must be in 1..{len(pool)} for split '{split}' with max_digits={max_digits}, got {n}"
        )
    # A string seed is hashed with SHA-512 by `random`, so the draw is the same on every platform and
    # Python version, and train/eval (or different max_digits) never share a random stream.
    rng = random.Random(f"{NAME}:{split}:{max_digits}:{seed}")
    return [_record(a, b) for a, b in rng.sample(pool, n)]


def _record(a: int, b: int) -> Record:
    return addition_record(NAME, a, b)


def addition_record(task: str, a: int, b: int) -> Record:
    """The record of ``a + b`` for an addition task: ``prompt_id`` ``<task>:<a>+<b>``, the prompt,
    the sum as the answer, and metadata (category carry / no_carry, difficulty = carries, digits).

    >>> addition_record("arithmetic", 15, 36).metadata
    {'task': 'arithmetic', 'category': 'carry', 'difficulty': 1, 'digits': 2}
    """
    carries = count_carries(a, b)
    return Record(
        prompt_id=f"{task}:{a}+{b}",
        prompt=make_prompt(a, b),
        answer=str(a + b),
        metadata={
            "task": task,
            "category": "carry" if carries else "no_carry",
            "difficulty": carries,
            "digits": max(len(str(a)), len(str(b))),
        },
    )


def reference_completion(record: Record) -> str:
    """The SFT target: the answer's digits only; the trainer appends the tokenizer's EOS token.

    >>> reference_completion(generate("eval", 1, seed=0)[0])
    '101'
    """
    if record.answer is None:
        raise ValueError(f"record {record.prompt_id!r} has no answer to imitate")
    return record.answer


def extract_answer(completion: str) -> str:
    r"""The answer a completion gives: its text up to the first newline or ``<eos>``, stripped.

    The completion is cut at the first ``"\n"`` and at the first literal ``"<eos>"`` (present only
    when a caller decoded without skipping special tokens), whichever comes first; then leading
    and trailing whitespace is removed. Nothing else is normalised: no leading-zero removal, no
    sign, no number parsing — ``"047"`` is not ``"47"``.

    >>> extract_answer(" 46 \n12"), extract_answer("46<eos>7"), extract_answer("4 6")
    ('46', '46', '4 6')
    """
    cut = len(completion)
    for marker in ("\n", EOS_TEXT):
        at = completion.find(marker)
        if at != -1:
            cut = min(cut, at)
    return completion[:cut].strip()


def score(completion: str, answer: str) -> float:
    r"""1.0 if ``extract_answer(completion) == answer`` exactly, else 0.0.

    >>> score("46", "46"), score("46\n", "46"), score(" 46 ", "46"), score("46<eos>", "46")
    (1.0, 1.0, 1.0, 1.0)
    >>> score("047", "47"), score("", "46"), score("46.0", "46"), score("\n46", "46")
    (0.0, 0.0, 0.0, 0.0)
    """
    return 1.0 if extract_answer(completion) == answer else 0.0
