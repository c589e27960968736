"""Metric sinks without the heavy backends: strict jsonl, console lines/bar/quiet, SafeSink, MultiSink,
backend selection, wandb mode resolution (no wandb run is started here)."""

from __future__ import annotations

import errno
import io
import json
import logging
import math

import pytest

import launch.sinks as S
import launch.wandb_sink as W
from rlft.config import RunConfig

ROWS = [
    {"step": 3, "stage": "rl0", "prompt_id": "p1", "prompt": "1+1=", "completion": "2", "reward": 1.0,
     "rewards": {"accuracy": 1.0, "format": float("nan")}, "finish_reason": "stop", "num_tokens": 2,
     "policy_version": 2, "category": None},
]


def cfg_with(**logging_cfg) -> RunConfig:
    return RunConfig.model_validate({"logging": logging_cfg})


def strict_loads(line: str):
    def bad(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(line, parse_constant=bad)


class Recorder:
    def __init__(self):
        self.calls = []

    def log(self, step, metrics):
        self.calls.append(("log", step, dict(metrics)))

    def log_samples(self, step, rows):
        self.calls.append(("log_samples", step, list(rows)))

    def close(self):
        self.calls.append(("close",))


class Failing(Recorder):
    def log(self, step, metrics):
        raise OSError(errno.ENOSPC, "No space left on device")

    def log_samples(self, step, rows):
        raise OSError(errno.ENOSPC, "No space left on device")


# -------------------------------------------------------------------------------------------------


def test_jsonl_is_strict_json_with_non_finite_as_null(tmp_path):
    sink = S.JsonlSink(tmp_path)
    sink.log(1, {"step": 1.0, "stage": "rl0", "reward/mean": float("nan"), "learner/loss": float("inf"),
                 "learner/kl": 0.5})
    sink.log(2, {"eval/accuracy": -math.inf, "eval/prompts": 3.0})
    sink.log_samples(2, ROWS)
    # flushed line by line: readable before close
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    rows = [strict_loads(x) for x in lines]
    assert rows[0]["step"] == 1 and isinstance(rows[0]["step"], int)
    assert rows[0]["reward/mean"] is None and rows[0]["learner/loss"] is None
    assert rows[0]["learner/kl"] == 0.5 and rows[0]["stage"] == "rl0" and "time" in rows[0]
    assert rows[1] == {"step": 2, "time": rows[1]["time"], "eval/accuracy": None, "eval/prompts": 3.0}
    samples = [strict_loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert samples[0]["rewards"] == {"accuracy": 1.0, "format": None}
    assert samples[0]["completion"] == "2" and samples[0]["step"] == 3
    sink.close()


def test_dumps_strict_converts_numpy_scalars():
    np = pytest.importorskip("numpy")
    assert strict_loads(S.dumps_strict({"a": np.float32(0.5), "b": np.int64(3), "c": np.float64("nan")})) == {
        "a": 0.5, "b": 3, "c": None}


def test_console_lines_and_train_log(tmp_path, capsys):
    sink = S.ConsoleSink(tmp_path, "lines", {"rl0": 2})
    sink.log(1, {"stage": "rl0", "reward/mean": 0.25, "learner/loss": 0.125, "learner/kl": 0.01,
                 "time/step": 1.5, "batch/samples": 8.0})
    sink.log(1, {"eval/accuracy": 0.5, "eval/pass@4": 0.75})
    sink.close()
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "step    1  stage=rl0  reward=0.25  loss=0.125  kl=0.01  s/step=1.5",
        "step    1  accuracy=0.5  pass@4=0.75",
    ]
    assert (tmp_path / "train.log").read_text().splitlines() == out


def test_console_quiet_prints_nothing_but_writes_train_log(tmp_path, capsys):
    sink = S.ConsoleSink(tmp_path, "quiet", {})
    sink.log(4, {"stage": "sft0", "sft/loss": 2.0})
    sink.close()
    assert capsys.readouterr().out == ""
    assert (tmp_path / "train.log").read_text() == "step    4  stage=sft0  loss=2\n"


def test_resolve_progress():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert S.resolve_progress("auto", Tty()) == "bar"
    assert S.resolve_progress("auto", io.StringIO()) == "lines"
    assert S.resolve_progress("quiet") == "quiet"
    with pytest.raises(ValueError, match="bar"):
        S.resolve_progress("fancy")


def test_bar_mode_without_a_tty_does_not_crash_and_keeps_logging_readable(tmp_path, capsys):
    root = logging.getLogger()
    console = logging.StreamHandler(__import__("sys").stderr)
    root.addHandler(console)
    try:
        sink = S.ConsoleSink(tmp_path, "bar", {"sft0": 2, "rl1": 3})
        assert console not in root.handlers  # swapped for the tqdm-aware handler while the bar lives
        sink.log(1, {"stage": "sft0", "sft/loss": 2.0})
        sink.log(2, {"stage": "sft0", "sft/loss": 1.0})
        sink.log(2, {"eval/accuracy": 0.5})
        sink.log(3, {"stage": "rl1", "reward/mean": 0.5, "throughput/tokens_per_s": 1234.5})
        logging.getLogger("rlft").warning("a warning while the bar is shown")
        sink.log(5, {"stage": "rl1", "reward/mean": 0.75})
        assert sink._bar.n == 3 and sink._bar.total == 3
        sink.close()
    finally:
        root.removeHandler(console)
    assert console not in root.handlers  # restored, then removed by us
    captured = capsys.readouterr()
    assert "rl1" in captured.out and "step    2  accuracy=0.5" in captured.out
    assert "a warning while the bar is shown" in captured.err
    assert len((tmp_path / "train.log").read_text().splitlines()) == 5


def test_bar_of_a_resumed_stage_starts_where_it_left_off(tmp_path, capsys):
    sink = S.ConsoleSink(tmp_path, "bar", {"sft0": 10, "rl1": 20})
    sink.log(16, {"stage": "rl1", "reward/mean": 0.5})  # step 6 of rl1
    assert sink._bar.n == 6 and sink._bar.total == 20
    sink.close()


def test_safe_sink_warns_once_and_the_run_goes_on(caplog):
    inner = Failing()
    safe = S.SafeSink(inner, "jsonl")
    with caplog.at_level(logging.WARNING, logger="rlft"):
        for step in range(5):
            safe.log(step, {"reward/mean": 1.0})
            safe.log_samples(step, ROWS)
        safe.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'jsonl'" in warnings[0].getMessage() and "No space left on device" in warnings[0].getMessage()
    assert safe.disabled and isinstance(safe.error, OSError) and safe.error.errno == errno.ENOSPC
    assert inner.calls == [("close",)]  # close is still attempted once


def test_safe_sink_forwards_attributes():
    inner = Recorder()
    inner.location = "somewhere"
    assert S.SafeSink(inner, "x").location == "somewhere"


def test_multisink_fans_out_and_isolates_failures(caplog):
    a, b = Recorder(), Recorder()
    multi = S.MultiSink([S.SafeSink(a, "a"), S.SafeSink(Failing(), "bad"), S.SafeSink(b, "b")])
    with caplog.at_level(logging.WARNING, logger="rlft"), multi:
        multi.log(1, {"reward/mean": 0.5})
        multi.log_samples(1, ROWS)
    expected = [("log", 1, {"reward/mean": 0.5}), ("log_samples", 1, ROWS), ("close",)]
    assert a.calls == expected and b.calls == expected
    assert multi.names() == ["a", "bad", "b"]


def test_multisink_closes_all_even_if_one_raises():
    class BadClose(Recorder):
        def close(self):
            raise RuntimeError("boom")

    a = Recorder()
    with pytest.raises(RuntimeError, match="boom"):
        S.MultiSink([BadClose(), a]).close()
    assert a.calls == [("close",)]


def test_build_sinks_default_selection(tmp_path, capsys):
    sink = S.build_sinks(cfg_with(backends=["console"], progress="lines"), tmp_path, quiet=False)
    assert sink.names() == ["jsonl", "console"]  # jsonl even when not listed
    assert all(isinstance(s, S.SafeSink) for s in sink.sinks)
    sink.log(1, {"stage": "rl0", "reward/mean": 0.5})
    sink.close()
    assert "step    1  stage=rl0  reward=0.5" in capsys.readouterr().out
    assert (tmp_path / "metrics.jsonl").is_file() and (tmp_path / "train.log").is_file()


def test_build_sinks_quiet_and_unlisted_console(tmp_path, capsys):
    for cfg, quiet in ((cfg_with(progress="lines"), True), (cfg_with(backends=["jsonl"], progress="lines"), False)):
        sink = S.build_sinks(cfg, tmp_path, quiet=quiet)
        assert sink.sinks[1].sink.mode == "quiet"
        sink.log(1, {"stage": "rl0"})
        sink.close()
    assert capsys.readouterr().out == ""


def test_build_sinks_tensorboard_and_wandb_selected(tmp_path, monkeypatch):
    made = []

    class Fake(Recorder):
        def __init__(self, *args, **kwargs):
            super().__init__()
            made.append((type(self).__name__, args, kwargs))
            self.location = f"{type(self).__name__} here"

    monkeypatch.setattr(S, "_package_available", lambda name: True)
    monkeypatch.setattr(S, "TensorBoardSink", type("TensorBoardSink", (Fake,), {}))
    monkeypatch.setattr(W, "WandbSink", type("WandbSink", (Fake,), {}))
    cfg = cfg_with(backends=["console", "tensorboard", "wandb"], progress="quiet")
    sink = S.build_sinks(cfg, tmp_path, quiet=False, start_step=7)
    assert sink.names() == ["jsonl", "console", "tensorboard", "wandb"]
    assert made[0] == ("TensorBoardSink", (tmp_path,), {"purge_step": 7})
    assert made[1] == ("WandbSink", (tmp_path, cfg), {})
    assert sink.locations() == {"tensorboard": "TensorBoardSink here", "wandb": "WandbSink here"}
    sink.close()


def test_build_sinks_missing_package_names_it(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "_package_available", lambda name: name != "wandb")
    with pytest.raises(S.SinkError, match="'wandb'.*pip install wandb"):
        S.build_sinks(cfg_with(backends=["wandb"]), tmp_path)


def test_build_sinks_a_backend_that_cannot_start_is_skipped_with_a_warning(tmp_path, monkeypatch, caplog):
    def broken(*a, **k):
        raise RuntimeError("no route to host")

    monkeypatch.setattr(W, "WandbSink", broken)
    with caplog.at_level(logging.WARNING, logger="rlft"):
        sink = S.build_sinks(cfg_with(backends=["wandb"]), tmp_path, quiet=True)
    assert sink.names() == ["jsonl", "console"]
    assert "'wandb' could not start" in caplog.text and "no route to host" in caplog.text
    sink.close()


def test_stage_steps_of_names_stages_like_the_driver():
    stages = [{"kind": "sft", "steps": 3}, {"kind": "rl", "steps": 5, "name": "main"}]
    cfg = RunConfig.model_validate({"stages": stages})
    assert S.stage_steps_of(cfg) == {"sft1": 3, "main": 5}


def test_samples_markdown_escapes_cells():
    md = S.samples_markdown([{**ROWS[0], "completion": "a|b\n<think>"}])
    lines = md.splitlines()
    assert lines[0] == "| prompt | completion | reward | accuracy | format |"
    assert lines[2] == "| 1+1= | a\\|b<br>&lt;think&gt; | 1 | 1 | nan |"


# -------------------------------------------------------------------------------------------------
# wandb mode resolution: no network, no prompt, no wandb import


def test_wandb_key_from_env_or_netrc(tmp_path):
    netrc = tmp_path / "netrc"
    assert W.wandb_api_key_configured({"WANDB_API_KEY": "x" * 40}, netrc)
    assert not W.wandb_api_key_configured({}, netrc)  # no file
    netrc.write_text("machine example.com login u password p\n")
    assert not W.wandb_api_key_configured({}, netrc)
    netrc.write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert W.wandb_api_key_configured({}, netrc)
    env = {"WANDB_BASE_URL": "https://wandb.example.org"}
    assert not W.wandb_api_key_configured(env, netrc)


def test_resolve_wandb_mode(tmp_path, caplog):
    none = tmp_path / "absent-netrc"
    key = {"WANDB_API_KEY": "k" * 40}
    assert W.resolve_wandb_mode("auto", {}, none) == "offline"
    assert W.resolve_wandb_mode("auto", key, none) == "online"
    assert W.resolve_wandb_mode("offline", key, none) == "offline"
    assert W.resolve_wandb_mode("online", {**key, "WANDB_MODE": "offline"}, none) == "offline"
    assert W.resolve_wandb_mode("auto", {"WANDB_MODE": "disabled"}, none) == "disabled"
    with caplog.at_level(logging.WARNING, logger="rlft"):
        assert W.resolve_wandb_mode("online", {}, none) == "offline"  # never prompts for a key
    assert "no API key" in caplog.text


def test_stable_run_id_is_reused(tmp_path):
    first = W.stable_run_id(tmp_path)
    assert len(first) == 8 and first.isalnum()
    assert W.stable_run_id(tmp_path) == first
    assert (tmp_path / "wandb_run_id").read_text().strip() == first
