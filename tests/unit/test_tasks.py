"""The built-in arithmetic task (rlft/tasks/arithmetic.py): data, splits, verifier."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlft.data import load_records
from rlft.models import build_tokenizer
from rlft.models.tiny import DEFAULT_CHARS
from rlft.tasks import TASKS, get_task
from rlft.tasks import arithmetic as A


def operands(record):
    a, b = record.prompt.removesuffix("=").split("+")
    return int(a), int(b)


# --------------------------------------------------------------------------------------------------
# Generation


def test_golden_first_records_pin_the_generator():
    # Pinned so that a change to the sampling (which would silently change every run's data and
    # break comparisons with earlier runs) fails here.
    first = ["10+27=", "18+7=", "32+7=", "10+76=", "80+95="]
    assert [r.prompt for r in A.generate("train", 5, seed=0)] == first
    assert [r.prompt for r in A.generate("eval", 3, seed=0)] == ["57+44=", "57+35=", "51+46="]


def test_same_seed_same_data_different_seed_different_data():
    assert A.generate("train", seed=7) == A.generate("train", seed=7)
    assert A.generate("eval", 50, seed=7) == A.generate("eval", 50, seed=7)
    a, b = A.generate("train", 200, seed=0), A.generate("train", 200, seed=1)
    assert a != b and len({r.prompt for r in a} & {r.prompt for r in b}) < 50  # mostly other prompts


def test_default_sizes_and_distinct_prompts():
    train, ev = A.generate("train", seed=0), A.generate("eval", seed=0)
    assert (len(train), len(ev)) == (A.DEFAULT_SIZES["train"], A.DEFAULT_SIZES["eval"]) == (4000, 500)
    for records in (train, ev):
        assert len({r.prompt for r in records}) == len({r.prompt_id for r in records}) == len(records)


def test_train_and_eval_are_disjoint_whatever_the_seeds():
    pools = {s: set(A._pool(s, A.MAX_DIGITS)) for s in A.SPLITS}
    assert not pools["train"] & pools["eval"]
    assert len(pools["train"] | pools["eval"]) == 100 * 100  # every pair 0..99 is in exactly one split
    assert 800 < len(pools["eval"]) < 1200  # about one in ten is held out
    train = {r.prompt for seed in (0, 1, 2) for r in A.generate("train", seed=seed)}
    held_out = {r.prompt for seed in (0, 1, 2) for r in A.generate("eval", seed=seed)}
    assert not train & held_out


def test_held_out_pairs_are_spread_over_all_units_digits():
    # A digit rule for the split would hide whole digit patterns from training; crc32 must not.
    units = {(a % 10, b % 10) for a, b in A._pool("eval", 2)}
    assert len(units) == 100


def test_answers_metadata_and_ids_are_right():
    for record in A.generate("train", seed=0) + A.generate("eval", seed=0):
        a, b = operands(record)
        assert record.answer == str(a + b)
        assert record.prompt_id == f"arithmetic:{a}+{b}"
        carries = A.count_carries(a, b)
        assert record.metadata == {
            "task": "arithmetic",
            "category": "carry" if carries else "no_carry",
            "difficulty": carries,
            "digits": max(len(str(a)), len(str(b))),
        }


@pytest.mark.parametrize(
    "a, b, carries",
    [(0, 0, 0), (12, 34, 0), (15, 36, 1), (55, 50, 1), (99, 1, 2), (99, 99, 2), (50, 50, 1), (5, 5, 1)],
)
def test_count_carries_golden(a, b, carries):
    assert A.count_carries(a, b) == carries


def test_every_difficulty_is_represented():
    counts = {}
    for r in A.generate("train", seed=0):
        counts[r.metadata["difficulty"]] = counts.get(r.metadata["difficulty"], 0) + 1
    # uniform pairs: 30.25 % / 45 % / 24.75 % of 4000
    assert sorted(counts) == [0, 1, 2] and all(700 < c < 2200 for c in counts.values())


def test_other_operand_sizes():
    assert A.pool_size("train", 1) + A.pool_size("eval", 1) == 100
    assert len(A.generate("eval", seed=0, max_digits=1)) == A.pool_size("eval", 1)  # default n capped
    three = A.generate("train", 20, seed=0, max_digits=3)
    assert max(max(operands(r)) for r in three) >= 100


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown split 'test'.*train, eval"):
        A.generate("test")
    with pytest.raises(ValueError, match="n must be in 1.."):
        A.generate("eval", 0)
    with pytest.raises(ValueError, match="n must be in 1.."):
        A.generate("eval", A.pool_size("eval") + 1)
    with pytest.raises(ValueError, match="max_digits must be 1, 2 or 3"):
        A.generate("train", 1, max_digits=4)


# --------------------------------------------------------------------------------------------------
# Vocabulary


def test_every_character_is_in_the_tiny_vocabulary():
    records = A.generate("train", seed=0) + A.generate("eval", seed=0)
    records += A.generate("train", 300, seed=0, max_digits=3)
    used = {ch for r in records for ch in r.prompt + r.answer}
    assert used <= set(DEFAULT_CHARS)
    tok = build_tokenizer()
    for r in records[:200]:
        ids = tok(r.prompt + r.answer, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids and len(ids) == len(r.prompt + r.answer)  # one token per char


# --------------------------------------------------------------------------------------------------
# Verifier


@pytest.mark.parametrize(
    "completion, answer, expected",
    [
        ("46", "46", 1.0),
        ("46\n", "46", 1.0),
        (" 46 ", "46", 1.0),  # surrounding whitespace is stripped
        ("46\t\r", "46", 1.0),
        ("46\n47 and more", "46", 1.0),  # only the first line counts
        ("46<eos>", "46", 1.0),  # a decode that kept the special token
        ("46<eos>\n99", "46", 1.0),
        ("047", "47", 0.0),  # no number parsing: leading zeros are wrong
        ("", "46", 0.0),
        ("   ", "46", 0.0),
        ("\n46", "46", 0.0),  # the first line is empty
        ("4 6", "46", 0.0),
        ("46.0", "46", 0.0),
        ("+46", "46", 0.0),
        ("-46", "46", 0.0),
        ("466", "46", 0.0),
        ("4", "46", 0.0),
        ("46abc", "46", 0.0),
        ("0", "0", 1.0),
        ("101", "101", 1.0),
    ],
)
def test_score_golden(completion, answer, expected):
    assert A.score(completion, answer) == expected


@settings(max_examples=200, deadline=None)
@given(value=st.integers(0, 198), tail=st.text(max_size=10), pad=st.sampled_from(["", " ", "  "]))
def test_score_reads_only_the_first_line(value, tail, pad):
    assert A.score(f"{pad}{value}{pad}\n{tail}", str(value)) == 1.0
    assert A.score(f"{value + 1}\n{tail}", str(value)) == 0.0


def test_reference_completions_score_one():
    for record in A.generate("train", seed=0) + A.generate("eval", seed=0):
        completion = A.reference_completion(record)
        assert completion == record.answer
        assert A.score(completion, record.answer) == 1.0


def test_reference_completion_needs_an_answer():
    record = A.generate("eval", 1, seed=0)[0]
    with pytest.raises(ValueError, match="has no answer"):
        A.reference_completion(type(record)(record.prompt_id, record.prompt, None, {}))


# --------------------------------------------------------------------------------------------------
# Registry


def test_registry_and_builtin_source():
    task = get_task("arithmetic")
    assert set(TASKS) == {"arithmetic", "long_addition"} and task.splits == ("train", "eval")
    assert task.generate is A.generate and task.score is A.score
    assert load_records("builtin:arithmetic:eval") == task.generate("eval", seed=0)
    with pytest.raises(KeyError, match="unknown built-in task 'nope'; available tasks: arithmetic, long_addition"):
        get_task("nope")
