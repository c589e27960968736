"""The built-in long-addition task (rlft/tasks/long_addition.py): worked solutions, splits, verifier."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from launch.train import held_out_of
from rlft.data import load_records
from rlft.data.record import Record
from rlft.models.tiny import DEFAULT_CHARS, build_tokenizer
from rlft.tasks import get_task
from rlft.tasks.arithmetic import count_carries
from rlft.tasks import long_addition as L
from rewards.builtin import builtin_task


def record_of(a: int, b: int) -> Record:
    return Record(f"long_addition:{a}+{b}", f"{a}+{b}=", str(a + b))


# --------------------------------------------------------------------------------------------------
# Worked solutions (golden values by hand)


@pytest.mark.parametrize(
    "a, b, solution",
    [
        (0, 0, "0+0+0=00;0"),
        (3, 4, "3+4+0=07;7"),
        (7, 5, "7+5+0=12;12"),  # a single carry, out of the top digit
        (12, 34, "2+4+0=06,1+3+0=04;46"),  # no carry at all
        (347, 85, "7+5+0=12,4+8+1=13,3+0+1=04;432"),  # shorter second operand, two carries
        (85, 347, "5+7+0=12,8+4+1=13,0+3+1=04;432"),  # shorter first operand
        (589, 782, "9+2+0=11,8+8+1=17,5+7+1=13;1371"),  # a carry at every digit, one out of the top
        (999, 1, "9+1+0=10,9+0+1=10,9+0+1=10;1000"),  # a carry chain through zeros written 10
        (105, 5, "5+5+0=10,0+0+1=01,1+0+0=01;110"),  # a carry absorbed by a 0 digit
        (4096, 5904, "6+4+0=10,9+0+1=10,0+9+1=10,4+5+1=10;10000"),
        (12345, 67890, "5+0+0=05,4+9+0=13,3+8+1=12,2+7+1=10,1+6+1=08;80235"),
        (99999, 99999, "9+9+0=18,9+9+1=19,9+9+1=19,9+9+1=19,9+9+1=19;199998"),
    ],
)
def test_worked_solution_golden(a, b, solution):
    assert L.worked_solution(a, b) == solution
    assert L.reference_completion(record_of(a, b)) == solution
    assert L.score(solution, str(a + b)) == 1.0
    assert L.steps_correct(solution, record_of(a, b)) == 1.0


@settings(max_examples=300, deadline=None)
@given(a=st.integers(0, 99999), b=st.integers(0, 99999))
def test_steps_follow_the_written_algorithm(a, b):
    steps = L.steps(a, b)
    assert len(steps) == max(len(str(a)), len(str(b)))
    carry, digits = 0, []
    for i, step in enumerate(steps):
        assert len(step) == 8 and step[1] == step[3] == "+" and step[5] == "="  # fixed width
        x, y, c, t, s = (int(step[j]) for j in (0, 2, 4, 6, 7))
        assert (x, y, c) == (a // 10**i % 10, b // 10**i % 10, carry)
        assert 10 * t + s == x + y + c
        carry = t
        digits.append(s)
    number = int(str(carry) + "".join(map(str, reversed(digits))))
    assert number == a + b
    assert L.worked_solution(a, b).endswith(";" + str(a + b))
    assert sum(int(s[6]) for s in steps) == count_carries(a, b)


# --------------------------------------------------------------------------------------------------
# Verifier


@pytest.mark.parametrize(
    "completion, answer, expected",
    [
        ("7+5+0=12,4+8+1=13,3+0+1=04;432", "432", 1.0),
        ("7+5+0=12,4+8+1=13,3+0+1=04;432\n", "432", 1.0),
        ("7+5+0=12,4+8+1=13,3+0+1=04;432<eos>", "432", 1.0),  # a decode that kept the special token
        ("7+5+0=12,4+8+1=13,3+0+1=04;432<eos>;999", "432", 1.0),
        ("7+5+0=12,4+8+1=13,3+0+1=04; 432 ", "432", 1.0),  # whitespace around the answer is stripped
        (";432", "432", 1.0),  # the steps are not scored
        ("anything;432", "432", 1.0),
        ("7+5+0=12,4+8+1=13,3+0+1=04;433", "432", 0.0),
        ("432", "432", 0.0),  # no marker, no answer
        ("", "432", 0.0),
        (";", "432", 0.0),
        (";0432", "432", 0.0),  # no number parsing
        (";432;432", "432", 0.0),  # only the first marker counts: no hedging with several answers
        (";431;432", "432", 0.0),
        ("\n;432", "432", 0.0),  # the first line is empty
        ("<eos>;432", "432", 0.0),
        (";4 32", "432", 0.0),
        (";+432", "432", 0.0),
    ],
)
def test_score_golden(completion, answer, expected):
    assert L.score(completion, answer) == expected


@settings(max_examples=200, deadline=None)
@given(a=st.integers(0, 99999), b=st.integers(0, 99999), tail=st.text(max_size=10))
def test_score_reads_the_answer_after_the_marker_on_the_first_line(a, b, tail):
    solution = L.worked_solution(a, b)
    assert L.score(f"{solution}\n{tail}", str(a + b)) == 1.0
    assert L.score(f"{solution}<eos>{tail}", str(a + b)) == 1.0
    assert L.score(solution.replace(";", ";1"), str(a + b)) == 0.0


def test_steps_correct_counts_each_step_at_its_place():
    record = record_of(347, 85)
    assert L.steps_correct("7+5+0=12,4+8+1=13,3+0+1=04;432", record) == 1.0
    assert L.steps_correct("7+5+0=12,4+8+1=13,3+0+1=04", record) == 1.0  # the answer is not a step
    assert L.steps_correct("7+5+0=12,4+8+1=13;32", record) == pytest.approx(2 / 3)  # one missing
    assert L.steps_correct("7+5+0=12,4+8+1=13,3+0+1=04,0+0+0=00;432", record) == 0.75  # one extra
    assert L.steps_correct("4+8+1=13,7+5+0=12,3+0+1=04;432", record) == pytest.approx(1 / 3)  # order
    assert L.steps_correct(";432", record) == L.steps_correct("", record) == 0.0


def test_the_builtin_task_reward_scores_it_unchanged():
    solution = L.worked_solution(347, 85)
    assert builtin_task("347+85=", solution, answer="432", task="long_addition") == 1.0
    assert builtin_task("347+85=", solution, answer=432, task="long_addition") == 1.0
    assert builtin_task("347+85=", "432", answer="432", task="long_addition") == 0.0


# --------------------------------------------------------------------------------------------------
# Generation and splits


def test_golden_first_records_pin_the_generator():
    # Pinned so that a change to the sampling (which would silently change every run's data) fails.
    assert [r.prompt for r in L.generate("train", 5, seed=0)] == ["7+1=", "589+782=", "81+787=", "2+171=", "853+8="]
    assert [r.prompt for r in L.generate("hard_eval", 2, seed=1)] == ["34806+66017=", "14868+76269="]


@settings(max_examples=25, deadline=None)
@given(split=st.sampled_from(L.SPLITS), n=st.integers(1, 300), seed=st.integers(0, 2**32))
def test_same_arguments_same_records_and_a_shorter_list_is_a_prefix(split, n, seed):
    records = L.generate(split, n, seed=seed)
    assert records == L.generate(split, n, seed=seed)
    if n > 1:
        assert records[: n // 2] == L.generate(split, n // 2, seed=seed)
    assert len({r.prompt for r in records}) == len({r.prompt_id for r in records}) == n
    for r in records:
        a, b = L.operands(r)
        assert L.split_of(a, b) == split
        lo, hi = L.DIGITS[split]
        assert all(lo <= len(str(x)) <= hi for x in (a, b))


def test_default_sizes_distinct_prompts_and_seeds_differ():
    for split, size in L.DEFAULT_SIZES.items():
        records = L.generate(split, seed=0)
        assert len(records) == size == len({r.prompt for r in records})
    a, b = L.generate("train", 300, seed=0), L.generate("train", 300, seed=1)
    assert a != b and len({r.prompt for r in a} & {r.prompt for r in b}) < 60


def test_splits_are_disjoint_whatever_the_seeds():
    prompts = {s: {r.prompt for seed in (0, 1, 2) for r in L.generate(s, seed=seed)} for s in L.SPLITS}
    for i, s in enumerate(L.SPLITS):
        for t in L.SPLITS[i + 1:]:
            assert not prompts[s] & prompts[t], (s, t)
    # about one in ten is held out: a crc32 rule, the same within both digit ranges
    for base, held in (("train", "eval"), ("hard", "hard_eval")):
        pairs = [(a, b) for a in range(1000, 1100) for b in range(1000, 1100)] if base == "hard" else [
            (a, b) for a in range(100) for b in range(100)
        ]
        held_out = sum(L.split_of(a, b) == held for a, b in pairs)
        assert {L.split_of(a, b) for a, b in pairs} == {base, held}
        assert 0.07 * len(pairs) < held_out < 0.13 * len(pairs)


@settings(max_examples=300, deadline=None)
@given(a=st.integers(0, 10**6), b=st.integers(0, 10**6))
def test_split_membership_is_a_property_of_the_pair(a, b):
    split = L.split_of(a, b)
    digits = {len(str(a)), len(str(b))}
    if max(digits) <= 3:
        assert split in ("train", "eval")
    elif min(digits) >= 4 and max(digits) <= 5:
        assert split in ("hard", "hard_eval")
    else:
        assert split is None
    if split is not None:  # train and eval differ only by the prompt's crc32
        assert split.endswith("eval") == (zlib.crc32(f"{a}+{b}=".encode()) % 10 == 0)


def test_answers_metadata_and_ids_are_right():
    for split in L.SPLITS:
        for record in L.generate(split, 500, seed=0):
            a, b = L.operands(record)
            carries = count_carries(a, b)
            assert record.answer == str(a + b)
            assert record.prompt_id == f"long_addition:{a}+{b}"
            assert record.metadata == {
                "task": "long_addition",
                "category": "carry" if carries else "no_carry",
                "difficulty": carries,
                "digits": max(len(str(a)), len(str(b))),
            }


def test_digit_lengths_and_carries_are_spread():
    train = L.generate("train", seed=0)
    assert {r.metadata["digits"] for r in train} == {1, 2, 3}
    assert {r.metadata["difficulty"] for r in train} == {0, 1, 2, 3}
    hard = L.generate("hard", seed=0)
    assert {r.metadata["digits"] for r in hard} == {4, 5}
    assert {r.metadata["difficulty"] for r in hard} == {0, 1, 2, 3, 4, 5}
    assert {len(r.prompt.split("+")[0]) for r in hard} == {4, 5}  # mixed lengths within the range


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown split 'test'.*train, eval, hard, hard_eval"):
        L.generate("test")
    for n in (0, L.MAX_N + 1):
        with pytest.raises(ValueError, match="n must be in 1.."):
            L.generate("eval", n)
    with pytest.raises(ValueError, match="has no answer"):
        L.reference_completion(Record("x", "1+2=", None))
    with pytest.raises(ValueError, match="is not a long_addition prompt"):
        L.reference_completion(Record("x", "1*2=", "2"))


# --------------------------------------------------------------------------------------------------
# The tiny model's vocabulary and lengths


def test_every_character_is_in_the_tiny_vocabulary_and_round_trips():
    tok = build_tokenizer()
    records = [r for split in L.SPLITS for r in L.generate(split, seed=0)]
    texts = [r.prompt + L.reference_completion(r) for r in records]
    assert set("".join(texts)) <= set(DEFAULT_CHARS)
    assert set("".join(texts)) == set("0123456789+=,;")
    for text in texts[::20]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids and len(ids) == len(text)  # one token per character
        assert tok.decode(ids) == text


def test_lengths_stay_far_below_the_tiny_model_context():
    longest = {}
    for split in L.SPLITS:
        longest[split] = max(len(r.prompt + L.reference_completion(r)) for r in L.generate(split, seed=0))
    # the bounds of the module's docstring: 3 digits -> 8 + 26 + 1 + 4, 5 digits -> 12 + 44 + 1 + 6
    assert longest == {"train": 39, "eval": 39, "hard": 63, "hard_eval": 63}
    assert len("999+999=" + L.worked_solution(999, 999)) == 39
    assert len("99999+99999=" + L.worked_solution(99999, 99999)) == 63 < 512 // 4


# --------------------------------------------------------------------------------------------------
# Registry, data sources and the held-out path


def test_registered_and_loaded_as_a_builtin_source():
    task = get_task("long_addition")
    assert task.splits == L.SPLITS and task.generate is L.generate and task.score is L.score
    assert task.reference_completion is L.reference_completion
    assert load_records("builtin:long_addition") == L.generate("train", seed=0)
    hard = load_records("builtin:long_addition:hard")
    assert hard == L.generate("hard", seed=0) and len(hard) == 4000
    assert load_records("builtin:long_addition:hard_eval") == L.generate("hard_eval", seed=0)


def test_the_eval_path_of_a_split_is_its_held_out_split():
    assert held_out_of("builtin:long_addition") == "builtin:long_addition:eval"
    assert held_out_of("builtin:long_addition:train") == "builtin:long_addition:eval"
    assert held_out_of("builtin:long_addition:hard") == "builtin:long_addition:hard_eval"
    assert held_out_of("builtin:arithmetic") == held_out_of("builtin:arithmetic:train") == "builtin:arithmetic:eval"
    assert held_out_of("builtin:nope:hard") == "builtin:nope:eval"  # loading the train path reports it
