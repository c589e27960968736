"""Unit tests for the built-in rewards (rewards/builtin.py), called directly as plain functions.

Golden values are worked out by hand in the test (the arithmetic is written out next to each
number), never by calling the function under test or a re-implementation of it.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards.api import RUNTIME_FIELDS, get_reward, reward_names
from rewards.builtin import (
    builtin_task,
    exact_match,
    extract,
    length_penalty,
    math_verify,
    normalize_text,
    numeric_match,
    parse_number,
    regex_format,
    tag_pattern,
)

ANSWER_TAG = r"<answer>(.*?)</answer>"


# ---------------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------------


def test_every_builtin_is_registered_under_its_documented_name():
    names = set(reward_names())
    expected = {"exact_match", "numeric_match", "math_verify", "regex_format", "length_penalty", "builtin_task"}
    assert expected <= names
    assert get_reward("exact_match").fn is exact_match
    assert get_reward("numeric_match").fn is numeric_match
    assert get_reward("math_verify").fn is math_verify
    assert get_reward("regex_format").fn is regex_format
    assert get_reward("length_penalty").fn is length_penalty
    assert get_reward("builtin_task").fn is builtin_task
    for name in expected:
        spec = get_reward(name)
        assert not spec.batched and not spec.is_async and not spec.needs_judge


def test_builtin_keywords_are_their_params_and_fields():
    assert get_reward("exact_match").keywords == {"answer", "normalize", "answer_pattern"}
    assert get_reward("numeric_match").keywords == {"answer", "rel_tol", "abs_tol", "answer_pattern"}
    assert get_reward("regex_format").keywords == {"pattern", "tags", "full_match"}
    assert get_reward("builtin_task").keywords == {"answer", "task"}
    lp = get_reward("length_penalty")
    assert {"num_tokens", "max_new_tokens"} <= lp.keywords  # the two runtime fields it reads
    assert lp.keywords & set(RUNTIME_FIELDS) == {"num_tokens", "max_new_tokens"}


# ---------------------------------------------------------------------------------------------------
# normalize_text / extract
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Paris.\n", "paris"),
        ("NEW   york!", "new york"),
        ("new\n\t york", "new york"),
        ("paris?!;:.", "paris"),  # every trailing sentence mark goes
        ("...paris", "...paris"),  # leading punctuation stays
        ("3.14", "3.14"),  # a dot inside stays
        ("Ｐａｒｉｓ", "paris"),  # NFKC: full-width letters
        ("ﬁne", "fine"),  # NFKC: the fi ligature
        ("Straße", "strasse"),  # casefold, not lower
        ("", ""),
        ("   ", ""),
    ],
)
def test_normalize_text_golden(raw, expected):
    assert normalize_text(raw) == expected


def test_extract_last_match_wins_first_group_or_whole_match():
    text = "<answer>4</answer> then <answer>5</answer>"
    assert extract(text, ANSWER_TAG) == "5"
    assert extract("a 1 b 22 c", r"\d+") == "22"  # no group: the whole match
    assert extract("<answer>a\nb</answer>", ANSWER_TAG) == "a\nb"  # dot matches newlines
    assert extract("nothing here", ANSWER_TAG) is None
    assert extract("whole text", None) == "whole text"


# ---------------------------------------------------------------------------------------------------
# exact_match
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        ("  The Answer. ", "the answer", 1.0),
        ("PARIS", "paris", 1.0),
        ("paris", "PARIS", 1.0),  # the answer is normalised too
        ("new\n  york", "New York", 1.0),
        ("Paris!?", "paris", 1.0),
        ("Paris", "paris.", 1.0),
        ("Ｐａｒｉｓ", "paris", 1.0),  # NFKC
        ("ﬁne", "fine", 1.0),
        ("STRASSE", "straße", 1.0),
        ("the answer is paris", "paris", 0.0),  # the whole completion must equal the answer
        ("...paris", "paris", 0.0),
        ("pari s", "paris", 0.0),
        ("", "paris", 0.0),
    ],
)
def test_exact_match_normalisation(completion, answer, expected):
    assert exact_match("prompt", completion, answer=answer) == expected


def test_exact_match_list_of_answers():
    assert exact_match("", "42", answer=["41", "42"]) == 1.0
    assert exact_match("", "41.", answer=["41", "42"]) == 1.0
    assert exact_match("", "43", answer=["41", "42"]) == 0.0
    assert exact_match("", "b", answer=("a", "B")) == 1.0  # a tuple is a list of answers too
    assert exact_match("", "x", answer=[]) == 0.0  # no acceptable answer


def test_exact_match_non_string_answer_is_compared_as_text():
    assert exact_match("", "42", answer=42) == 1.0
    assert exact_match("", "2", answer=[1, 2]) == 1.0


def test_exact_match_missing_answer_is_a_data_error():
    with pytest.raises(ValueError, match="answer"):
        exact_match("", "42", answer=None)


def test_exact_match_answer_pattern():
    two = "<answer>4</answer> no wait <answer> 5. </answer>"
    assert exact_match("", two, answer="5", answer_pattern=ANSWER_TAG) == 1.0  # the last match wins
    assert exact_match("", two, answer="4", answer_pattern=ANSWER_TAG) == 0.0
    assert exact_match("", "<answer> 42 </answer>", answer=["41", "42"], answer_pattern=ANSWER_TAG) == 1.0
    assert exact_match("", "<answer>New\nYork</answer>", answer="new york", answer_pattern=ANSWER_TAG) == 1.0
    # a pattern without a group compares the whole (last) match
    assert exact_match("", "first 12 then 34", answer="34", answer_pattern=r"\d+") == 1.0


def test_exact_match_no_pattern_match_scores_zero():
    # the completion would equal the answer, but the required pattern is absent
    assert exact_match("", "5", answer="5", answer_pattern=ANSWER_TAG) == 0.0
    assert exact_match("", "", answer="", answer_pattern=ANSWER_TAG) == 0.0


def test_exact_match_without_normalisation_is_verbatim():
    assert exact_match("", "Paris", answer="paris", normalize=False) == 0.0
    assert exact_match("", "paris ", answer="paris", normalize=False) == 0.0
    assert exact_match("", "paris.", answer="paris", normalize=False) == 0.0
    assert exact_match("", "Ｐａｒｉｓ", answer="Paris", normalize=False) == 0.0
    assert exact_match("", "Paris", answer="Paris", normalize=False) == 1.0
    assert exact_match("", "<answer>x</answer>", answer="x", normalize=False, answer_pattern=ANSWER_TAG) == 1.0
    assert exact_match("", "<answer> x</answer>", answer="x", normalize=False, answer_pattern=ANSWER_TAG) == 0.0


_TEXT = st.text(alphabet=string.ascii_letters + string.digits + " .,!?;:-'", max_size=30)
_WS = st.text(alphabet=" \t\n\r", max_size=4)


@settings(max_examples=100, deadline=None)
@given(text=_TEXT, left=_WS, right=_WS, upper=st.booleans())
def test_exact_match_invariant_under_surrounding_whitespace_and_case(text, left, right, upper):
    changed = left + (text.upper() if upper else text.lower()) + right
    assert exact_match("", changed, answer=text) == 1.0
    other = text + "zq"  # two more letters: a different answer stays different after the same change
    assert exact_match("", left + other.swapcase() + right, answer=text) == 0.0


@settings(max_examples=100, deadline=None)
@given(completion=_TEXT, answer=_TEXT, left=_WS, right=_WS)
def test_exact_match_score_does_not_change_with_padding_or_case(completion, answer, left, right):
    base = exact_match("", completion, answer=answer)
    assert base in (0.0, 1.0)
    assert exact_match("", left + completion.upper() + right, answer=answer) == base
    assert exact_match("", completion, answer=left + answer.lower() + right) == base


# ---------------------------------------------------------------------------------------------------
# parse_number / numeric_match
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,234", 1234.0),
        ("-1,000.5 apples", -1000.5),
        ("12,345,678", 12345678.0),
        ("x = 3/4, not 7", 7.0),  # the last number
        ("-3/4", -0.75),
        ("1e5", 100000.0),
        ("-1.5e-3", -0.0015),
        ("2E+2", 200.0),
        (".5", 0.5),
        ("2.", 2.0),  # a sentence's full stop is not a decimal point
        ("5-3", -3.0),  # the minus sign belongs to the last number
        ("+7", 7.0),
        ("none", None),
        ("", None),
        ("3/0", None),  # a zero denominator is no number
    ],
)
def test_parse_number_golden(text, expected):
    assert parse_number(text) == expected


@settings(max_examples=100, deadline=None)
@given(n=st.integers(min_value=-(10**15), max_value=10**15), fmt=st.sampled_from(["{}", "{:,}", "{:+}"]))
def test_parse_number_round_trips_formatted_ints(n, fmt):
    text = fmt.format(n)
    assert parse_number(text) == float(n)
    assert parse_number(f"the answer is {text}.") == float(n)


@settings(max_examples=100, deadline=None)
@given(x=st.floats(allow_nan=False, allow_infinity=False))
def test_parse_number_round_trips_floats(x):
    assert parse_number(repr(x)) == x
    assert parse_number(f"so x = {x!r}.") == x


@settings(max_examples=100, deadline=None)
@given(x=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), places=st.integers(0, 6))
def test_parse_number_round_trips_fixed_point_with_commas(x, places):
    text = f"{x:,.{places}f}"
    assert parse_number(text) == float(text.replace(",", ""))


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        ("so the total is 1,234.0", "1234", 1.0),
        ("1234", "1,234", 1.0),
        ("the change was -5", "-5", 1.0),
        ("the change was 5", "-5", 0.0),
        ("-0.25", "-1/4", 1.0),
        ("x = 3/4", "0.75", 1.0),
        ("0.75", "3/4", 1.0),
        ("1.5e3", "1500", 1.0),
        ("2E-3", "0.002", 1.0),
        ("first 3 then 7", "7", 1.0),  # the last number counts
        ("first 3 then 7", "3", 0.0),
        ("I think 12", "13", 0.0),
        ("no idea", "13", 0.0),
        ("", "0", 0.0),
        ("The answer is 42.", "42", 1.0),
    ],
)
def test_numeric_match_golden(completion, answer, expected):
    assert numeric_match("prompt", completion, answer=answer) == expected


def test_numeric_match_non_string_answers():
    assert numeric_match("", "1/2", answer=0.5) == 1.0
    assert numeric_match("", "1,234", answer=1234) == 1.0
    assert numeric_match("", "1e-7", answer=1e-7) == 1.0  # str(1e-07) is '1e-07'


@pytest.mark.parametrize("answer", ["forty-two", "", "n/a", "1/0"])
def test_numeric_match_non_numeric_answer_is_a_data_error(answer):
    with pytest.raises(ValueError, match="is not a number"):
        numeric_match("", "42", answer=answer)


def test_numeric_match_default_tolerances():
    # rel_tol 1e-6: |1.0000001 - 1| = 1e-7 <= 1e-6 * 1.0000001; |1.00001 - 1| = 1e-5 > 1.00001e-6
    assert numeric_match("", "1.0000001", answer="1") == 1.0
    assert numeric_match("", "1.00001", answer="1") == 0.0
    # near zero only abs_tol 1e-9 helps: 1e-10 <= 1e-9 < 1e-8
    assert numeric_match("", "0.0000000001", answer="0") == 1.0
    assert numeric_match("", "0.00000001", answer="0") == 0.0


def test_numeric_match_tolerance_edges():
    # math.isclose: |a - b| <= max(rel_tol * max(|a|, |b|), abs_tol); the edges are exact in binary
    rel = {"rel_tol": 0.5, "abs_tol": 0.0}
    assert numeric_match("", "4", answer="2", **rel) == 1.0  # 2 <= 0.5 * 4 (edge, inclusive)
    assert numeric_match("", "1", answer="2", **rel) == 1.0  # 1 <= 0.5 * 2 (edge, inclusive)
    assert numeric_match("", "4.5", answer="2", **rel) == 0.0  # 2.5 > 0.5 * 4.5 = 2.25
    assert numeric_match("", "0.75", answer="2", **rel) == 0.0  # 1.25 > 0.5 * 2 = 1
    absolute = {"rel_tol": 0.0, "abs_tol": 0.5}
    assert numeric_match("", "10.5", answer="10", **absolute) == 1.0  # 0.5 <= 0.5 (edge)
    assert numeric_match("", "9.5", answer="10", **absolute) == 1.0
    assert numeric_match("", "10.75", answer="10", **absolute) == 0.0  # 0.75 > 0.5
    exact = {"rel_tol": 0.0, "abs_tol": 0.0}
    assert numeric_match("", "10", answer="10.0", **exact) == 1.0
    assert numeric_match("", "10.000001", answer="10", **exact) == 0.0
    # rel_tol 1e-4 admits pi to four digits: |3.1416 - 3.14159| = 1e-5 <= 1e-4 * 3.1416
    assert numeric_match("", "about 3.1416", answer="3.14159", rel_tol=1e-4) == 1.0
    assert numeric_match("", "about 3.1416", answer="3.14159") == 0.0


def test_numeric_match_answer_pattern():
    text = "<answer>12</answer> and then 13"
    assert numeric_match("", text, answer="12", answer_pattern=ANSWER_TAG) == 1.0
    assert numeric_match("", text, answer="13") == 1.0  # without a pattern: the last number
    assert numeric_match("", "13", answer="13", answer_pattern=ANSWER_TAG) == 0.0  # no match
    assert numeric_match("", "<answer>none</answer>", answer="13", answer_pattern=ANSWER_TAG) == 0.0


# ---------------------------------------------------------------------------------------------------
# math_verify (each call costs tens of ms: a handful only)
# ---------------------------------------------------------------------------------------------------


def test_math_verify_equivalences_and_mismatch():
    assert math_verify("", "so the result is $\\boxed{\\frac{1}{2}}$", answer="0.5") == 1.0
    assert math_verify("", "$\\boxed{0.75}$", answer="\\frac{3}{4}") == 1.0
    assert math_verify("", "The answer is \\boxed{x^2+2x+1}", answer="(x+1)^2") == 1.0
    assert math_verify("", "\\boxed{3}", answer="4") == 0.0
    assert math_verify("", "no answer here", answer="4") == 0.0


def test_math_verify_unparseable_gold_is_a_data_error():
    with pytest.raises(ValueError, match="cannot parse the gold answer"):
        math_verify("", "\\boxed{1}", answer="")


# ---------------------------------------------------------------------------------------------------
# regex_format
# ---------------------------------------------------------------------------------------------------


def test_tag_pattern_golden():
    assert tag_pattern(["think", "answer"]) == r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*"
    assert tag_pattern(["a.b"]) == r"\s*<a\.b>.*?</a\.b>\s*"  # tag names are literal


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<think>hm</think> <answer>4</answer>", 1.0),
        ("\n<think>line 1\nline 2</think>\n\n<answer>4</answer>\n", 1.0),  # whitespace around, newlines inside
        ("<think></think><answer></answer>", 1.0),  # empty contents are fine
        ("<answer>4</answer><think>hm</think>", 0.0),  # wrong order
        ("<think>hm</think>", 0.0),  # a tag missing
        ("<answer>4</answer>", 0.0),
        ("<think>hm</think><answer>4</answer> trailing", 0.0),  # full match: nothing after
        ("Sure! <think>hm</think><answer>4</answer>", 0.0),  # full match: nothing before
        ("<think>hm</think> and <answer>4</answer>", 0.0),  # only whitespace between tags
        ("<think>hm<think> <answer>4</answer>", 0.0),  # unclosed
    ],
)
def test_regex_format_tags(completion, expected):
    assert regex_format("", completion, tags=["think", "answer"]) == expected


def test_regex_format_partial_match():
    tags = ["think", "answer"]
    trailing = "<think>a</think><answer>b</answer> trailing"
    assert regex_format("", trailing, tags=tags, full_match=True) == 0.0
    assert regex_format("", trailing, tags=tags, full_match=False) == 1.0
    assert regex_format("", "Sure! " + trailing, tags=tags, full_match=False) == 1.0
    assert regex_format("", "<answer>b</answer><think>a</think>", tags=tags, full_match=False) == 0.0


def test_regex_format_pattern():
    assert regex_format("", "Final: 12", pattern=r"Final: \d+") == 1.0
    assert regex_format("", "Final: 12!", pattern=r"Final: \d+") == 0.0
    assert regex_format("", "so... Final: 12!", pattern=r"Final: \d+", full_match=False) == 1.0
    assert regex_format("", "Final: twelve", pattern=r"Final: \d+", full_match=False) == 0.0
    assert regex_format("", "A\nB", pattern=r"A.B") == 1.0  # the dot matches newlines


def test_regex_format_tag_names_are_literal():
    assert regex_format("", "<a.b>x</a.b>", tags=["a.b"]) == 1.0
    assert regex_format("", "<axb>x</axb>", tags=["a.b"]) == 0.0


@pytest.mark.parametrize("kwargs", [{}, {"pattern": "x", "tags": ["answer"]}])
def test_regex_format_needs_exactly_one_of_pattern_and_tags(kwargs):
    with pytest.raises(ValueError, match="exactly one of 'pattern' or 'tags'"):
        regex_format("", "x", **kwargs)


def test_regex_format_tags_given_as_one_string_is_not_split_into_letters():
    try:
        score = regex_format("", "<answer>4</answer>", tags="answer")
    except ValueError:
        return  # rejecting a string is fine too
    assert score == 1.0


# ---------------------------------------------------------------------------------------------------
# length_penalty
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_tokens", "expected"),
    [
        (0, 0.0),
        (80, 0.0),  # L = L_max - L_cache = 100 - 20: still free
        (81, (80 - 81) / 20),  # -0.05
        (85, (80 - 85) / 20),  # -0.25
        (90, (80 - 90) / 20),  # midpoint of the cache: -0.5
        (100, (80 - 100) / 20),  # L = L_max: -1
        (101, -1.0),  # beyond L_max
        (10_000, -1.0),
    ],
)
def test_length_penalty_overlong_piecewise(num_tokens, expected):
    got = length_penalty("", "", num_tokens=num_tokens, max_length=100, cache_tokens=20)
    assert got == pytest.approx(expected, abs=1e-12)


def test_length_penalty_overlong_scale():
    # scale multiplies every piece: 0.5 * (80 - 90) / 20 = -0.25, beyond L_max -0.5
    assert length_penalty("", "", num_tokens=90, max_length=100, cache_tokens=20, scale=0.5) == pytest.approx(-0.25)
    assert length_penalty("", "", num_tokens=200, max_length=100, cache_tokens=20, scale=0.5) == -0.5
    assert length_penalty("", "", num_tokens=80, max_length=100, cache_tokens=20, scale=0.5) == 0.0


def test_length_penalty_no_cache_is_a_step():
    assert length_penalty("", "", num_tokens=100, max_length=100, cache_tokens=0) == 0.0
    assert length_penalty("", "", num_tokens=101, max_length=100, cache_tokens=0) == -1.0
    assert length_penalty("", "", num_tokens=101, max_length=100, scale=3.0) == -3.0  # cache_tokens defaults to 0


def test_length_penalty_whole_budget_as_cache():
    # cache = L_max: the penalty ramps from the first token, (0 - 25) / 100 = -0.25
    assert length_penalty("", "", num_tokens=0, max_length=100, cache_tokens=100) == 0.0
    assert length_penalty("", "", num_tokens=25, max_length=100, cache_tokens=100) == pytest.approx(-0.25)


def test_length_penalty_limit_from_runtime_field_or_param():
    # the runtime's max_new_tokens when no max_length is configured
    assert length_penalty("", "", num_tokens=90, max_new_tokens=100, cache_tokens=20) == pytest.approx(-0.5)
    # max_length wins over the runtime field, both ways
    assert length_penalty("", "", num_tokens=150, max_new_tokens=100, max_length=200, cache_tokens=20) == 0.0
    assert length_penalty("", "", num_tokens=90, max_new_tokens=1000, max_length=100, cache_tokens=20) == pytest.approx(
        -0.5
    )


def test_length_penalty_through_the_runtime_keywords():
    """What the runtime passes: every runtime field plus the config's params; the spec picks its own."""
    spec = get_reward("length_penalty")
    fields = {"answer": "4", "prompt_id": "p1", "num_tokens": 90, "finish_reason": "stop", "max_new_tokens": 100}
    kwargs = spec.call_kwargs(fields, {"cache_tokens": 20})
    assert kwargs == {"num_tokens": 90, "max_new_tokens": 100, "cache_tokens": 20}
    assert spec.fn("p", "c", **kwargs) == pytest.approx(-0.5)


@pytest.mark.parametrize(
    ("num_tokens", "target", "scale", "expected"),
    [
        (150, 100, 1.0, -0.5),  # -|150 - 100| / 100
        (50, 100, 1.0, -0.5),  # symmetric
        (100, 100, 1.0, 0.0),
        (0, 100, 1.0, -1.0),
        (300, 100, 2.0, -4.0),  # -2 * 200 / 100
    ],
)
def test_length_penalty_target_mode(num_tokens, target, scale, expected):
    got = length_penalty("", "", num_tokens=num_tokens, mode="target", target=target, scale=scale)
    assert got == pytest.approx(expected)


def test_length_penalty_target_mode_ignores_the_length_limit():
    assert length_penalty("", "", num_tokens=150, mode="target", target=100, max_length=10) == pytest.approx(-0.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "target"}, "positive 'target'"),
        ({"mode": "target", "target": 0}, "positive 'target'"),
        ({"mode": "target", "target": -5}, "positive 'target'"),
        ({}, "max_length"),  # no limit at all
        ({"max_length": 100, "cache_tokens": 101}, r"cache_tokens must be in \[0, 100\]"),
        ({"max_length": 100, "cache_tokens": -1}, r"cache_tokens must be in \[0, 100\]"),
        ({"max_new_tokens": 50, "cache_tokens": 60}, r"cache_tokens must be in \[0, 50\]"),
    ],
)
def test_length_penalty_bad_params(kwargs, message):
    with pytest.raises(ValueError, match=message):
        length_penalty("", "", num_tokens=10, **kwargs)


def test_length_penalty_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="mode"):
        length_penalty("", "", num_tokens=10, mode="targte", target=100, max_new_tokens=100)


@settings(max_examples=100, deadline=None)
@given(
    limit=st.integers(1, 4096),
    cache_frac=st.floats(0, 1),
    a=st.integers(0, 10_000),
    b=st.integers(0, 10_000),
    scale=st.floats(0, 10, allow_nan=False),
)
def test_length_penalty_overlong_is_monotone_and_bounded(limit, cache_frac, a, b, scale):
    cache = int(cache_frac * limit)
    short, long_ = sorted((a, b))

    def lp(n):
        return length_penalty("", "", num_tokens=n, max_length=limit, cache_tokens=cache, scale=scale)

    slack = 1e-12 * max(scale, 1.0)  # (free - L) * scale / cache at L = L_max may be -scale up to rounding
    assert lp(short) >= lp(long_) - slack
    for n in (short, long_):
        assert -scale - slack <= lp(n) <= 0.0
        if n <= limit - cache:
            assert lp(n) == 0.0
        if n > limit:
            assert lp(n) == -scale


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 10_000), target=st.integers(1, 5_000))
def test_length_penalty_target_is_zero_only_at_target(n, target):
    got = length_penalty("", "", num_tokens=n, mode="target", target=target)
    assert got <= 0.0
    assert (got == 0.0) == (n == target)


# ---------------------------------------------------------------------------------------------------
# builtin_task
# ---------------------------------------------------------------------------------------------------


def test_builtin_task_uses_the_tasks_exact_verifier():
    assert builtin_task("12+34=", "46", answer="46", task="arithmetic") == 1.0
    assert builtin_task("12+34=", "46\n", answer="46", task="arithmetic") == 1.0
    assert builtin_task("12+34=", "45", answer="46", task="arithmetic") == 0.0
    assert builtin_task("12+34=", "046", answer="46", task="arithmetic") == 0.0
    assert builtin_task("12+34=", "46", answer=46, task="arithmetic") == 1.0  # the answer is compared as text


def test_builtin_task_unknown_task():
    with pytest.raises(KeyError, match="unknown built-in task 'sudoku'"):
        builtin_task("", "1", answer="1", task="sudoku")
