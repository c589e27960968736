"""A run whose groups carry no reward variance step after step warns once, with what to change."""

from __future__ import annotations

import logging

from rlft.config import load_config
from rlft.batching import has_signal
from rlft.signal_watch import SignalWatch, watches_signal

from test_driver import make

FLAT = [[0.0, 0.0, 0.0], [0.0, 0.0, None], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]  # every group flat
MIXED = [[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]  # 3 of 4 flat: 75 %
LIVE = [[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]  # 2 of 4 flat: 50 %


def watch(**kwargs):
    warnings: list[str] = []
    return SignalWatch(patience=3, warn=warnings.append, **kwargs), warnings


def test_warns_once_after_patience_flat_steps_with_causes_and_settings():
    w, warnings = watch()
    flat_steps = [w.observe(step, FLAT)["signal/flat_steps"] for step in range(1, 7)]
    assert flat_steps == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert len(warnings) == 1
    text = warnings[0]
    assert text.startswith("steps 1-3: 100% of the groups had rewards all equal (all 0)")
    for setting in ("algo.dynamic_sampling.enabled=true", "curriculum.name=learnability", "rollout.temperature",
                    "denser reward", "data.answer_field"):
        assert setting in text


def test_a_step_with_signal_restarts_the_count():
    w, warnings = watch()
    steps = [FLAT, MIXED, LIVE, FLAT, FLAT]  # 100 %, 75 % (most), 50 %: the run breaks, then 2 more
    assert [w.observe(i + 1, g)["signal/flat_steps"] for i, g in enumerate(steps)] == [1.0, 2.0, 0.0, 1.0, 2.0]
    assert warnings == []
    w.observe(6, MIXED)
    assert len(warnings) == 1 and warnings[0].startswith("steps 4-6: 92% of the groups")  # (1 + 1 + .75) / 3


def test_groups_that_never_came_count_as_flat():
    """Dynamic sampling kept 1 group with signal of the 4 asked for: 3 of 4 carry none."""
    w, warnings = watch()
    for step in (1, 2, 3):
        w.observe(step, [[0.0, 1.0]], expected=4)
    assert len(warnings) == 1 and "75% of the groups" in warnings[0]
    assert "(all" not in warnings[0]  # no flat group was seen, so no common value is claimed


def test_flat_groups_at_different_values_name_none():
    w, warnings = watch()
    for step in (1, 2, 3):
        w.observe(step, [[0.0, 0.0], [1.0, 1.0]])
    assert warnings[0].startswith("steps 1-3: 100% of the groups had rewards all equal, so")


def test_disabled_watch_reports_nothing():
    w, warnings = watch(enabled=False)
    assert [w.observe(step, FLAT) for step in (1, 2, 3, 4)] == [{}] * 4 and warnings == []


def test_flat_groups_and_when_the_watch_applies():
    assert not has_signal([]) and not has_signal([None]) and not has_signal([2.0, 2.0]) and has_signal([2.0, None, 1.0])
    assert watches_signal(load_config())
    assert not watches_signal(load_config(overrides=["critic={}"]))  # GAE: equal rewards still teach


def test_the_driver_warns_once_on_a_run_without_signal(caplog):
    """Six RL steps where every completion scores 0: one warning, on the 5th step, and the count logged."""
    driver, _, _, _ = make(["stages=[{kind: rl, steps: 6}]", "evaluation.pass_k=0"], reward=lambda r: 0.0)
    with caplog.at_level(logging.WARNING, logger="rlft.driver"):
        driver.run()
    warnings = [r.getMessage() for r in caplog.records if "the run is not learning" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("steps 1-5: 100% of the groups had rewards all equal (all 0)")
    logged = [m["signal/flat_steps"] for _, m in driver.sink.rows if "signal/flat_steps" in m]
    assert logged == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_the_driver_stays_quiet_when_groups_carry_signal(caplog):
    driver, _, _, _ = make(["stages=[{kind: rl, steps: 6}]", "evaluation.pass_k=0"])  # rewards 0, 1, 0, 1
    with caplog.at_level(logging.WARNING, logger="rlft.driver"):
        driver.run()
    assert not [r for r in caplog.records if "not learning" in r.getMessage()]
    assert {m["signal/flat_steps"] for _, m in driver.sink.rows if "signal/flat_steps" in m} == {0.0}
