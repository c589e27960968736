"""Several rewards into one score per sample (rewards/compose.py), the ``rlft check`` reward report
(rewards/check.py) and ``rlft.types.Scores``.

Golden values are worked out by hand next to each number.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards.check import RewardReport, report
from rewards.compose import combine
from rewards.pool import Outcome, Sample
from rlft.types import Scores


def ok(score: float, **info) -> Outcome:
    return Outcome(score, info=info)


def failed(kind: str | None = "exception", message: str = "boom") -> Outcome:
    return Outcome(None, error=kind, message=message)


# ---------------------------------------------------------------------------------------------------
# combine: totals
# ---------------------------------------------------------------------------------------------------


def test_weighted_sum_by_hand():
    scores = combine(
        {
            "correct": [ok(1.0), ok(0.0), ok(1.0), ok(0.5)],
            "format": [ok(1.0), ok(1.0), ok(0.0), ok(0.5)],
            "length": [ok(-0.5), ok(0.0), ok(-1.0), ok(0.0)],
        },
        {"correct": 1.0, "format": 0.25, "length": 2.0},
    )
    # sample 0: 1*1 + 0.25*1 + 2*(-0.5) = 0.25
    # sample 1: 1*0 + 0.25*1 + 2*0      = 0.25
    # sample 2: 1*1 + 0.25*0 + 2*(-1)   = -1.0
    # sample 3: 1*0.5 + 0.25*0.5 + 0    = 0.625
    assert scores.totals == pytest.approx([0.25, 0.25, -1.0, 0.625])
    assert scores.errors == []
    assert scores.metrics["reward/failed_samples"] == 0.0
    assert scores.metrics["reward/failed_fraction"] == 0.0
    assert scores.failed_fraction == 0.0


def test_zero_and_negative_weights():
    scores = combine({"a": [ok(3.0), ok(1.0)], "b": [ok(5.0), ok(2.0)]}, {"a": 0.0, "b": -1.0})
    assert scores.totals == [-5.0, -2.0]  # 0*3 - 5, 0*1 - 2


def test_a_failed_reward_makes_the_total_none_never_zero():
    scores = combine(
        {
            "a": [ok(1.0), failed("timeout"), ok(0.0), ok(1.0)],
            "b": [ok(1.0), ok(1.0), failed("exception"), failed("crash")],
        },
        {"a": 1.0, "b": 0.5},
    )
    # only sample 0 has both rewards: 1 + 0.5 * 1 = 1.5
    assert scores.totals == [1.5, None, None, None]
    assert scores.metrics["reward/failed_samples"] == 3.0
    assert scores.metrics["reward/failed_fraction"] == 0.75
    assert scores.failed_fraction == 0.75


def test_failure_in_an_earlier_reward_stays_none():
    # the order of the rewards does not matter: a later success does not revive the total
    first = combine({"a": [failed()], "b": [ok(1.0)]}, {"a": 1.0, "b": 1.0})
    second = combine({"b": [ok(1.0)], "a": [failed()]}, {"a": 1.0, "b": 1.0})
    assert first.totals == second.totals == [None]


def test_empty_batch():
    scores = combine({"a": []}, {"a": 1.0})
    assert scores.totals == []
    assert scores.metrics["reward/failed_fraction"] == 0.0
    assert scores.metrics["reward/a/failed"] == 0.0
    assert "reward/a/mean" not in scores.metrics
    assert combine({}, {}).totals == []


# ---------------------------------------------------------------------------------------------------
# combine: metrics
# ---------------------------------------------------------------------------------------------------


def test_per_reward_means_over_successful_samples_only():
    scores = combine(
        {"a": [ok(1.0), failed(), ok(0.0), ok(0.5)], "b": [failed(), failed(), ok(0.25), failed()]},
        {"a": 1.0, "b": 1.0},
    )
    assert scores.metrics["reward/a/mean"] == pytest.approx((1.0 + 0.0 + 0.5) / 3)  # 0.5, not 1.5 / 4
    assert scores.metrics["reward/b/mean"] == 0.25
    assert scores.metrics["reward/a/failed"] == 1.0
    assert scores.metrics["reward/b/failed"] == 3.0


def test_no_mean_for_a_reward_that_always_failed():
    scores = combine({"a": [failed(), failed()]}, {"a": 1.0})
    assert "reward/a/mean" not in scores.metrics
    assert scores.metrics["reward/a/failed"] == 2.0


def test_error_counts_by_kind():
    scores = combine(
        {
            "a": [failed("timeout"), failed("timeout"), failed("crash"), ok(1.0), failed(None)],
            "b": [ok(1.0), failed("bad_value"), ok(1.0), ok(1.0), ok(1.0)],
        },
        {"a": 1.0, "b": 1.0},
    )
    m = scores.metrics
    assert m["reward_errors/a/timeout"] == 2.0
    assert m["reward_errors/a/crash"] == 1.0
    assert m["reward_errors/a/unknown"] == 1.0  # no kind given
    assert m["reward_errors/b/bad_value"] == 1.0
    assert "reward_errors/a/bad_value" not in m and "reward_errors/b/timeout" not in m
    assert sorted(k for k in m if k.startswith("reward_errors/")) == [
        "reward_errors/a/crash",
        "reward_errors/a/timeout",
        "reward_errors/a/unknown",
        "reward_errors/b/bad_value",
    ]
    # samples 0, 1, 2 and 4 failed
    assert scores.totals == [None, None, None, 2.0, None]


def test_info_means_numeric_only():
    scores = combine(
        {
            "a": [
                ok(1.0, matched=1, length=10, note="x"),
                ok(0.0, matched=0, length=20.5, flag=True),
                ok(1.0, matched=1, note="y", flag=False),
                failed(),
            ]
        },
        {"a": 1.0},
    )
    m = scores.metrics
    assert m["reward/a/info/matched"] == pytest.approx(2 / 3)  # (1 + 0 + 1) / 3
    assert m["reward/a/info/length"] == pytest.approx(15.25)  # (10 + 20.5) / 2: over the samples that report it
    assert m["reward/a/info/flag"] == 0.5  # bools count as numbers: (1 + 0) / 2
    assert "reward/a/info/note" not in m  # strings are not averaged


def test_metric_keys_per_reward():
    scores = combine({"correct": [ok(1.0, n=2)], "fmt": [ok(0.0)]}, {"correct": 1.0, "fmt": 1.0})
    assert set(scores.metrics) == {
        "reward/correct/mean",
        "reward/correct/failed",
        "reward/correct/info/n",
        "reward/fmt/mean",
        "reward/fmt/failed",
        "reward/failed_samples",
        "reward/failed_fraction",
    }


# ---------------------------------------------------------------------------------------------------
# combine: error reports
# ---------------------------------------------------------------------------------------------------


def test_error_reports_without_samples():
    scores = combine({"a": [ok(1.0), failed("timeout", "no result within 5 s")]}, {"a": 1.0})
    assert scores.errors == ["reward 'a' failed (timeout) on sample 1: no result within 5 s"]


def test_error_reports_name_the_sample():
    samples = [
        Sample("What is 2+2?", "4", {"prompt_id": "p0", "answer": "4"}),
        Sample("What is 3+3?", "I refuse", {"prompt_id": "p1", "answer": "6"}),
    ]
    scores = combine(
        {"a": [ok(1.0), failed("exception", "ValueError: bad")]}, {"a": 1.0}, samples=samples
    )
    assert scores.errors == [
        "reward 'a' failed (exception) on sample 1: ValueError: bad"
        " | prompt_id p1 | prompt 'What is 3+3?' | completion 'I refuse'"
    ]


def test_error_reports_are_capped_and_excerpted():
    samples = [Sample("P" * 50 + str(i), "C" * 50 + str(i), {"prompt_id": f"id{i}"}) for i in range(5)]
    scores = combine(
        {"a": [failed("timeout", f"m{i}") for i in range(5)], "b": [failed("crash", "x")] * 5},
        {"a": 1.0, "b": 1.0},
        samples=samples,
        max_errors=2,
        excerpt=10,
    )
    assert scores.errors == [
        f"reward 'a' failed (timeout) on sample 0: m0 | prompt_id id0 | prompt {'P' * 10!r} | completion {'C' * 10!r}",
        f"reward 'a' failed (timeout) on sample 1: m1 | prompt_id id1 | prompt {'P' * 10!r} | completion {'C' * 10!r}",
    ]
    # the cap limits the reports, not the counts
    assert scores.metrics["reward_errors/a/timeout"] == 5.0
    assert scores.metrics["reward_errors/b/crash"] == 5.0


def test_error_reports_default_cap_is_three():
    scores = combine({"a": [failed()] * 5}, {"a": 1.0})
    assert len(scores.errors) == 3
    assert [e.split(" on sample ")[1].split(":")[0] for e in scores.errors] == ["0", "1", "2"]


def test_error_report_without_a_prompt_id():
    scores = combine({"a": [failed("exception", "e")]}, {"a": 1.0}, samples=[Sample("p", "c")])
    assert scores.errors == ["reward 'a' failed (exception) on sample 0: e | prompt_id None | prompt 'p' | completion 'c'"]


def test_no_reports_when_capped_at_zero():
    scores = combine({"a": [failed()]}, {"a": 1.0}, max_errors=0)
    assert scores.errors == [] and scores.totals == [None]


# ---------------------------------------------------------------------------------------------------
# combine: bad input
# ---------------------------------------------------------------------------------------------------


def test_mismatched_keys():
    with pytest.raises(ValueError, match=r"outcomes for \['a'\] but weights for \['a', 'b'\]"):
        combine({"a": [ok(1.0)]}, {"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match=r"outcomes for \['a', 'b'\] but weights for \['a'\]"):
        combine({"a": [ok(1.0)], "b": [ok(1.0)]}, {"a": 1.0})


def test_mismatched_lengths():
    with pytest.raises(ValueError, match="reward 'b' has 1 outcomes for 2 samples"):
        combine({"a": [ok(1.0), ok(1.0)], "b": [ok(1.0)]}, {"a": 1.0, "b": 1.0})


# ---------------------------------------------------------------------------------------------------
# combine: properties
# ---------------------------------------------------------------------------------------------------

_SCORE = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)
_WEIGHT = st.floats(min_value=-10, max_value=10, allow_nan=False)


@st.composite
def _batches(draw):
    k = draw(st.integers(1, 4))
    n = draw(st.integers(0, 8))
    keys = [f"r{i}" for i in range(k)]
    scores = {key: draw(st.lists(_SCORE, min_size=n, max_size=n)) for key in keys}
    weights = {key: draw(_WEIGHT) for key in keys}
    return scores, weights, n


@settings(max_examples=100, deadline=None)
@given(_batches())
def test_total_is_the_weighted_sum_when_nothing_failed(batch):
    scores, weights, n = batch
    result = combine({k: [ok(s) for s in v] for k, v in scores.items()}, weights)
    for i in range(n):
        expected = sum(weights[k] * scores[k][i] for k in scores)
        assert result.totals[i] == pytest.approx(expected, rel=1e-12, abs=1e-9)
    assert result.errors == [] and result.failed_fraction == 0.0
    for k in scores:
        if n:
            assert result.metrics[f"reward/{k}/mean"] == pytest.approx(sum(scores[k]) / n, rel=1e-12, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(_batches(), st.data())
def test_total_is_none_exactly_where_some_reward_failed(batch, data):
    scores, weights, n = batch
    fails = {k: data.draw(st.lists(st.booleans(), min_size=n, max_size=n)) for k in scores}
    outcomes = {k: [failed() if f else ok(s) for s, f in zip(scores[k], fails[k])] for k in scores}
    result = combine(outcomes, weights)
    for i in range(n):
        any_failed = any(fails[k][i] for k in scores)
        assert (result.totals[i] is None) == any_failed
        if not any_failed:
            assert result.totals[i] == pytest.approx(sum(weights[k] * scores[k][i] for k in scores), rel=1e-12, abs=1e-9)
    expected_failed = sum(any(fails[k][i] for k in scores) for i in range(n))
    assert result.metrics["reward/failed_samples"] == expected_failed
    assert result.failed_fraction == (expected_failed / n if n else 0.0)


# ---------------------------------------------------------------------------------------------------
# rewards.check.report
# ---------------------------------------------------------------------------------------------------


def test_report_all_ok():
    rep = report(
        "correct",
        [
            Outcome(1.0, returned="float", seconds=0.003),
            Outcome(0.0, returned="float", seconds=0.001),
            Outcome(0.5, returned="RewardResult", seconds=0.002),
        ],
    )
    assert (rep.calls, rep.ok, rep.low, rep.high, rep.errors) == (3, 3, 0.0, 1.0, {})
    assert rep.seconds == pytest.approx(0.006)
    # 1000 * 0.006 / 3 = 2.00 ms
    assert rep.line() == "reward correct: 3/3 calls ok, returned RewardResult/float, values in [0, 1], 2.00 ms per call"


def test_report_mixed():
    rep = report(
        "r",
        [
            Outcome(-0.25, returned="float", seconds=0.004),
            Outcome(None, error="timeout", message="no result within 5 s", seconds=5.0),
            Outcome(None, error="exception", message="ValueError: x", seconds=0.001),
            Outcome(None, error="timeout", message="second", seconds=5.0),
            Outcome(2.5, returned="int", seconds=0.004),
        ],
    )
    assert rep.errors == {"timeout": 2, "exception": 1}
    assert rep.first_error == "no result within 5 s"
    # seconds include the failed calls: 1000 * 10.009 / 5 = 2001.80 ms
    assert rep.line() == (
        "reward r: 2/5 calls ok, returned float/int, values in [-0.25, 2.5], 2001.80 ms per call; "
        "FAILED: exception x1, timeout x2; first: no result within 5 s"
    )


def test_report_all_failed():
    rep = report("r", [Outcome(None, error=None, message=""), Outcome(None, error="crash", message="SIGKILL")])
    assert rep.ok == 0 and rep.low is None and rep.high is None
    assert rep.first_error == "SIGKILL"  # the first non-empty message
    assert rep.line() == "reward r: 0/2 calls ok; FAILED: crash x1, unknown x1; first: SIGKILL"


def test_report_unknown_return_type_and_no_calls():
    assert report("r", [Outcome(1.0)]).returned == {"?"}
    assert report("r", []).line() == "reward r: 0/0 calls ok"


def test_report_docstring_example():
    line = report("r", [Outcome(1.0, returned="float", seconds=0.002), Outcome(None, error="timeout", message="slow")]).line()
    assert line == "reward r: 1/2 calls ok, returned float, values in [1, 1], 1.00 ms per call; FAILED: timeout x1; first: slow"


def test_report_skipped_line():
    rep = RewardReport("judge", skipped="needs the judge engine, which starts with the run")
    assert rep.line() == "reward judge: not called (needs the judge engine, which starts with the run)"


# ---------------------------------------------------------------------------------------------------
# rlft.types.Scores
# ---------------------------------------------------------------------------------------------------


def test_scores_of_a_list_or_scores():
    s = Scores.of([1.0, None, 0.5, None])
    assert isinstance(s, Scores)
    assert s.totals == [1.0, None, 0.5, None] and s.metrics == {} and s.errors == []
    assert s.failed_fraction == 0.5
    already = Scores([1.0], {"m": 1.0}, ["e"])
    assert Scores.of(already) is already
    assert Scores.of((0.0, 1.0)).totals == [0.0, 1.0]  # any sequence becomes a list


def test_scores_failed_fraction():
    assert Scores([]).failed_fraction == 0.0
    assert Scores([None]).failed_fraction == 1.0
    assert Scores([0.0, 0.0, 0.0]).failed_fraction == 0.0  # a score of 0 is not a failure
    assert Scores([None, 1.0, 2.0]).failed_fraction == pytest.approx(1 / 3)


def test_scores_of_copies_the_list():
    totals = [1.0, None]
    s = Scores.of(totals)
    totals.append(3.0)
    assert s.totals == [1.0, None]


def test_combine_returns_scores_consistent_with_metrics():
    scores = combine({"a": [ok(1.0), failed(), ok(2.0), failed()]}, {"a": 1.0})
    assert isinstance(scores, Scores)
    assert scores.failed_fraction == scores.metrics["reward/failed_fraction"] == 0.5
    assert math.isclose(scores.metrics["reward/a/mean"], 1.5)
