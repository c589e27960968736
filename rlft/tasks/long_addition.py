r"""A built-in task with a worked solution: long addition, digit by digit, with the carries written out.

``"347+85="`` -> ``"7+5+0=12,4+8+1=13,3+0+1=04;432"``: one step per digit from the least
significant, each the two digits, the incoming carry and their two-digit sum, then ``;`` and the
answer. Where ``arithmetic`` (one line of digits) gives a demonstration nothing to teach but the
answer, this one has several steps, so SFT, demonstrations and RL can be compared on what they do
to the intermediate work, and a ``hard`` split of longer numbers asks whether the procedure learnt
on short ones carries over.

>>> train = generate("train", 3, seed=0)
>>> [(r.prompt, r.answer) for r in train]
[('7+1=', '8'), ('589+782=', '1371'), ('81+787=', '868')]
>>> reference_completion(train[1])
'9+2+0=11,8+8+1=17,5+7+1=13;1371'
>>> train[1].metadata
{'task': 'long_addition', 'category': 'carry', 'difficulty': 3, 'digits': 3}
>>> score("9+2+0=11,8+8+1=17,5+7+1=13;1371", "1371"), score(";1371\nmore", "1371"), score("1371", "1371")
(1.0, 1.0, 0.0)

Format, and why (each choice keeps it within reach of the ~0.6M-parameter character model of
``rlft.models.build_tiny_model``; every character is in its vocabulary):

- Every step is exactly ``x+y+c=ts`` (8 characters, then ``,``): the carry in ``c`` is written even
  when it is 0 (also in the first step), a missing digit of the shorter operand is written ``0``,
  and the sum always has two digits, its tens digit ``t`` being the carry out. The fixed width puts
  the previous step's carry out exactly 9 characters before the place where it is copied in, and
  the answer's digits at fixed distances from the steps that made them; natural sums (``=4`` next to
  ``=13``) would shift every later position by the number of earlier carries.
- Least significant digit first, the order in which the carries flow: no step needs a later one.
- The answer, after ``;``, is the ordinary number (the last carry out, if 1, then the ``s`` digits
  reversed), the same text as ``arithmetic``'s answer.
- The score reads only the answer after the first ``;`` (see ``score``): the steps teach, but RL may
  find other ways to the answer (``steps_correct`` measures the steps separately).

Lengths: an ``easy`` prompt + solution has at most 8 + 26 + 1 + 4 = 39 characters, a ``hard`` one
12 + 44 + 1 + 6 = 63, far below the tiny model's 512 positions.

Splits: the operands of ``train`` and ``eval`` have 1 to 3 digits, those of ``hard`` and
``hard_eval`` 4 or 5 (pairs that mix a short and a long operand, such as ``7+12345``, are in no
split). Within each range a pair is held out (``eval`` / ``hard_eval``) when
``crc32("a+b=") % 10 == 0``, as ``arithmetic.split_of`` does: the split is a property of the prompt,
not of the seed, so any two splits are disjoint whatever seeds drew them.

>>> split_of(347, 85), split_of(1234, 56789), split_of(7, 12345)
('eval', 'hard', None)

Measured with the tiny model (one seed, plain torch on CPU, AdamW lr 1e-3, batch 64, SFT on
``train``): greedy exact match on ``eval`` was 17 % after 250 steps, 90 % after 500 and 95-99 %
after 700-1000 (far quicker than ``arithmetic``'s plateau: the steps teach). On ``hard_eval`` it
stayed at 0 %, greedy and pass@8 at temperature 1 alike, with ~4 % of the steps right: the model
does not find the digits of operands longer than it saw. So RL on ``hard`` straight after a warm-up
on ``train`` gets no reward to learn from; the split measures length generalisation, and reaching
it needs longer operands in the warm-up or a curriculum over the digit counts.
"""

from __future__ import annotations

import random
import zlib
from typing import Literal

from rlft.data.record import Record
from rlft.tasks.arithmetic import addition_record, make_prompt
from rlft.tasks.arithmetic import extract_answer as _first_line

NAME = "long_addition"
SPLITS = ("train", "eval", "hard", "hard_eval")
DIGITS = {"train": (1, 3), "eval": (1, 3), "hard": (4, 5), "hard_eval": (4, 5)}
"""Fewest and most digits of each operand, per split."""
DEFAULT_SIZES = {"train": 4000, "eval": 500, "hard": 4000, "hard_eval": 500}
"""Prompts per split when ``n`` is None."""
MAX_N = 20_000
"""Most prompts one ``generate`` call draws: far below every split's pool (the smallest, ``eval``,
holds ~100,000 pairs), so drawing distinct prompts by rejection stays quick."""
EVAL_BUCKETS = 10
"""One pair in ``EVAL_BUCKETS`` (by the prompt's crc32) is held out for ``eval`` / ``hard_eval``."""
MARKER = ";"
"""Separates the worked steps from the final answer."""

Split = Literal["train", "eval", "hard", "hard_eval"]


def _num_digits(x: int) -> int:
    return len(str(x))


def split_of(a: int, b: int) -> Split | None:
    """The split the pair belongs to (None for none); fixed forever, independent of any seed.

    >>> split_of(91, 48), split_of(0, 15), split_of(1000, 99999), split_of(1000, 1003)
    ('train', 'eval', 'hard', 'hard_eval')
    >>> split_of(100000, 1) is None
    True
    """
    if a < 0 or b < 0:
        return None
    digits = (_num_digits(a), _num_digits(b))
    if max(digits) <= 3:
        base = "train"
    elif min(digits) >= 4 and max(digits) <= 5:
        base = "hard"
    else:
        return None
    held_out = zlib.crc32(make_prompt(a, b).encode()) % EVAL_BUCKETS == 0
    return {"train": "eval", "hard": "hard_eval"}[base] if held_out else base


def steps(a: int, b: int) -> list[str]:
    """The worked steps of ``a + b``, least significant digit first: ``x+y+c=ts``, where ``c`` is the
    carry in and ``t`` (the tens digit of the sum) the carry out.

    >>> steps(347, 85)
    ['7+5+0=12', '4+8+1=13', '3+0+1=04']
    >>> steps(0, 0), steps(999, 1)
    (['0+0+0=00'], ['9+1+0=10', '9+0+1=10', '9+0+1=10'])
    """
    out, carry = [], 0
    for i in range(max(_num_digits(a), _num_digits(b))):
        x, y = a // 10**i % 10, b // 10**i % 10
        total = x + y + carry
        out.append(f"{x}+{y}+{carry}={total:02d}")
        carry = total // 10
    return out


def worked_solution(a: int, b: int) -> str:
    """The steps, ``;`` and the answer: the reference completion of ``a + b`` (without EOS).

    >>> worked_solution(347, 85)
    '7+5+0=12,4+8+1=13,3+0+1=04;432'
    >>> worked_solution(99999, 1)
    '9+1+0=10,9+0+1=10,9+0+1=10,9+0+1=10,9+0+1=10;100000'
    """
    return ",".join(steps(a, b)) + MARKER + str(a + b)


def _check(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} of task '{NAME}'; valid splits: {', '.join(SPLITS)}")


def _draw(rng: random.Random, lo: int, hi: int) -> int:
    """An operand with a uniformly drawn number of digits in ``lo..hi``, then uniform among those."""
    k = rng.randint(lo, hi)
    return rng.randint(0 if k == 1 else 10 ** (k - 1), 10**k - 1)


def generate(split: Split = "train", n: int | None = None, *, seed: int = 0) -> list[Record]:
    """``n`` distinct problems of ``split``, the same list for the same ``(split, n, seed)``.

    Each operand's number of digits is drawn uniformly from the split's range (``DIGITS``), then the
    operand uniformly among the numbers of that length, so short operands are as common as long
    ones (uniform pairs would be 81 % three-digit pairs); draws of the other split, or seen before,
    are rejected. A shorter list is a prefix of a longer one for the same seed. ``prompt_id`` is
    ``long_addition:<a>+<b>``.

    >>> [r.prompt_id for r in generate("hard_eval", 2, seed=1)]
    ['long_addition:34806+66017', 'long_addition:14868+76269']
    >>> generate("hard", 5, seed=3) == generate("hard", 5, seed=3)
    True
    >>> generate("test", 1)
    Traceback (most recent call last):
    ...
    ValueError: unknown split 'test' of task 'long_addition'; valid splits: train, eval, hard, hard_eval
    """
    _check(split)
    if n is None:
        n = DEFAULT_SIZES[split]
    if not 0 < n <= MAX_N:
        raise ValueError(f"n must be in 1..{MAX_N} for split '{split}', got {n}")
    lo, hi = DIGITS[split]
    # A string seed is hashed with SHA-512 by `random`: the same draw on every platform and Python
    # version, and a stream of its own for each split.
    rng = random.Random(f"{NAME}:{split}:{seed}")
    seen: set[tuple[int, int]] = set()
    records = []
    while len(records) < n:
        a, b = _draw(rng, lo, hi), _draw(rng, lo, hi)
        if (a, b) in seen or split_of(a, b) != split:
            continue
        seen.add((a, b))
        records.append(_record(a, b))
    return records


def _record(a: int, b: int) -> Record:
    return addition_record(NAME, a, b)


def operands(record: Record) -> tuple[int, int]:
    """``(a, b)`` of a record of this task, read from its prompt.

    >>> operands(generate("train", 1, seed=0)[0])
    (7, 1)
    """
    if not isinstance(record.prompt, str):
        raise ValueError(f"record {record.prompt_id!r} is not a {NAME} prompt: {record.prompt!r}")
    a, sep, b = record.prompt.removesuffix("=").partition("+")
    if not (sep and a.isdigit() and b.isdigit()):
        raise ValueError(f"record {record.prompt_id!r} is not a {NAME} prompt: {record.prompt!r}")
    return int(a), int(b)


def reference_completion(record: Record) -> str:
    """The SFT target: the worked solution; the trainer appends the tokenizer's EOS token.

    >>> reference_completion(Record("long_addition:58+67", "58+67=", "125"))
    '8+7+0=15,5+6+1=12;125'
    """
    if record.answer is None:
        raise ValueError(f"record {record.prompt_id!r} has no answer to imitate")
    return worked_solution(*operands(record))


def extract_answer(completion: str) -> str | None:
    r"""The answer a completion gives: on its first line (cut at ``"\n"`` or ``"<eos>"`` as
    ``arithmetic.extract_answer`` does), the text after the first ``;``, stripped; None without one.

    Only the first ``;`` counts, so ``";12;13"`` answers ``"12;13"``: a completion cannot hedge by
    listing several answers.

    >>> extract_answer("7+5+0=12;12<eos>"), extract_answer(" ; 12 \n;13"), extract_answer("12")
    ('12', '12', None)
    """
    _, sep, tail = _first_line(completion).partition(MARKER)
    return tail.strip() if sep else None


def score(completion: str, answer: str) -> float:
    r"""1.0 if ``extract_answer(completion) == answer`` exactly, else 0.0; the steps are not checked.

    >>> score("7+5+0=12,4+8+1=13,3+0+1=04;432", "432"), score("wrong steps;432<eos>", "432")
    (1.0, 1.0)
    >>> score("432", "432"), score(";0432", "432"), score(";432;432", "432"), score("\n;432", "432")
    (0.0, 0.0, 0.0, 0.0)
    """
    return 1.0 if extract_answer(completion) == answer else 0.0


def steps_correct(completion: str, record: Record) -> float:
    """The fraction of the reference steps the completion writes right, each at its place (a
    diagnostic next to ``score``: how much of the procedure a model follows).

    Steps are compared position by position over the longer of the two lists, so missing and extra
    steps both count as wrong.

    >>> record = Record("long_addition:347+85", "347+85=", "432")
    >>> steps_correct("7+5+0=12,4+8+1=13,3+0+1=04;432", record)
    1.0
    >>> steps_correct("7+5+0=12,4+8+0=12;422", record), steps_correct(";432", record)
    (0.3333333333333333, 0.0)
    """
    want = steps(*operands(record))
    head = _first_line(completion).partition(MARKER)[0]
    got = head.split(",") if head else []
    right = sum(g == w for g, w in zip(got, want))
    return right / max(len(got), len(want))
