"""Metric sinks: where a run's metrics and sample completions go.

The driver hands every step's metrics to one sink (``log(step, metrics)``), sample completions every
``logging.sample_every`` RL steps (``log_samples(step, rows)``), and closes it when the run ends.
``build_sinks`` turns ``cfg.logging`` into that one sink, fanning out to:

- ``jsonl``: ``metrics.jsonl`` and ``samples.jsonl`` in the run directory; always written, strict
  JSON (NaN and infinities become ``null``), flushed line by line;
- ``console``: a progress bar per stage, a compact line per step, or nothing (``logging.progress``);
  the lines also go to ``train.log`` in every mode;
- ``tensorboard``: scalars and a markdown table of samples under ``<run_dir>/tensorboard``;
- ``wandb``: a Weights & Biases run, online when an API key is configured, offline otherwise; it
  never prompts, and a resumed run continues the same wandb run.

Every backend is wrapped in ``SafeSink``: the first error of a backend (a full disk, a lost
connection) is logged once as a warning and that backend is switched off for the rest of the run;
a logger never stops training.

    sink = build_sinks(cfg, run_dir, quiet=False)
    with sink:
        sink.log(1, {"stage": "rl1", "reward/mean": 0.25, "learner/loss": 0.1})
        sink.log_samples(1, [{"step": 1, "stage": "rl1", "prompt": "1+1=", "completion": "2",
                              "reward": 1.0, "rewards": {"accuracy": 1.0}}])
"""

from __future__ import annotations

import html
import importlib.util
import json
import logging
import math
import numbers
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from launch.metric_rows import Row, numeric, reward_names
from rlft.config import ConfigError, RunConfig, stage_names
from rlft.roles import ClosingSink, SampleSink

logger = logging.getLogger("rlft")


# Required package of each optional backend (``console`` needs tqdm only for its bar).
BACKEND_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


class SinkError(ConfigError):
    """A listed backend cannot be used (its package is not installed); raised before the run starts."""


# ------------------------------------------------------------------------------------------------
# jsonl


class JsonlSink:
    """``metrics.jsonl`` (``{"step", "time", **metrics}`` per line) and ``samples.jsonl`` (one
    sample per line) in ``run_dir``; strict JSON that any parser reads, flushed line by line."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.samples_path = self.run_dir / "samples.jsonl"
        self._files: dict[Path, Any] = {}

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        # the driver also puts a float "step" in the metrics: the row keeps the int one
        row = {"step": step, "time": time.time(), **{k: v for k, v in metrics.items() if k != "step"}}
        self._write(self.metrics_path, [row])

    def log_samples(self, step: int, rows: Sequence[Row]) -> None:
        self._write(self.samples_path, [{"step": step, **row} for row in rows])

    def close(self) -> None:
        files, self._files = self._files, {}
        for f in files.values():
            f.close()

    def _write(self, path: Path, rows: Iterable[Row]) -> None:
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = path.open("a", encoding="utf-8")
        for row in rows:
            f.write(dumps_strict(row) + "\n")
        f.flush()


def dumps_strict(obj: Any) -> str:
    """JSON with non-finite floats as ``null`` and numpy/torch scalars as numbers (``allow_nan=False``)."""
    return json.dumps(_jsonable(obj), allow_nan=False, ensure_ascii=False)


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (str, bool, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real) or hasattr(v, "item"):  # numpy / 0-d torch scalars
        try:
            return _jsonable(v.item() if hasattr(v, "item") else float(v))
        except (TypeError, ValueError):
            pass
    return str(v)


# ------------------------------------------------------------------------------------------------
# console


PROGRESS_MODES = ("auto", "bar", "lines", "quiet")
LINE_KEYS = ("stage", "reward/mean", "learner/loss", "sft/loss", "learner/kl", "learner/entropy",
             "eval/accuracy")


def resolve_progress(mode: str, stream: Any = None) -> str:
    """``auto`` -> ``bar`` when ``stream`` (default stdout) is a terminal, else ``lines``."""
    if mode not in PROGRESS_MODES:
        raise ValueError(f"unknown progress mode {mode!r}; expected one of {', '.join(PROGRESS_MODES)}")
    if mode != "auto":
        return mode
    stream = sys.stdout if stream is None else stream
    try:
        return "bar" if stream.isatty() else "lines"
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return "lines"


def format_line(step: int, metrics: Mapping[str, Any]) -> str:
    """The compact per-step line: ``step   12  stage=rl1  reward=0.25  loss=0.1  ...  s/step=1.3``."""
    keys = [*LINE_KEYS, *sorted(k for k in metrics if k.startswith("eval/pass@")), "time/step"]
    shown = [f"{_LABELS.get(k, k.split('/')[-1])}={_fmt(metrics[k])}" for k in keys if k in metrics]
    return f"step {step:4d}  " + "  ".join(shown)


_LABELS = {"reward/mean": "reward", "time/step": "s/step"}


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else str(v)


class ConsoleSink:
    """Progress on the console, and the compact per-step lines in ``run_dir/train.log`` in every mode.

    ``mode``: ``bar`` (a tqdm bar per stage with reward, eval accuracy, tokens/s and tqdm's ETA;
    evaluations are printed above it), ``lines`` (one line per step on stdout), ``quiet`` (nothing on
    the console), or ``auto`` (``resolve_progress``). ``stage_steps`` maps each stage name to its
    number of steps, in run order: the bar's total, and where a stage starts in the global step count
    (so a resumed run's bar starts where it left off).

    While a bar is shown, warnings printed by ``logging`` to the console are written above the bar
    instead of through it (the console handlers of the root and ``rlft`` loggers are swapped for one
    that uses ``tqdm.write``) until ``close``.
    """

    def __init__(self, run_dir: str | Path, mode: str = "lines", stage_steps: Mapping[str, int] | None = None):
        self.log_path = Path(run_dir) / "train.log"
        self.mode = resolve_progress(mode)
        self.stage_steps = dict(stage_steps or {})
        self._offsets, total = {}, 0
        for name, steps in self.stage_steps.items():
            self._offsets[name], total = total, total + steps
        self._file: Any = None
        self._bar: Any = None
        self._stage: str | None = None
        self._postfix: dict[str, str] = {}
        self._redirect: _LoggingRedirect | None = None
        if self.mode == "bar":
            import tqdm  # noqa: F401  (fail here, at build time, when it is missing)

            self._redirect = _LoggingRedirect()

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        line = format_line(step, metrics)
        if self._file is None:
            self._file = self.log_path.open("a", encoding="utf-8")
        self._file.write(line + "\n")
        self._file.flush()
        if self.mode == "lines":
            print(line, flush=True)
        elif self.mode == "bar":
            self._update_bar(step, metrics, line)

    def log_samples(self, step: int, rows: Sequence[Row]) -> None:
        """Samples are for the files and dashboards; the console shows none."""

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._redirect is not None:
            self._redirect.restore()
            self._redirect = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def _update_bar(self, step: int, metrics: Mapping[str, Any], line: str) -> None:
        from tqdm import tqdm

        stage = metrics.get("stage")
        if stage is None:  # an evaluation: worth a line of its own above the bar
            tqdm.write(line, file=sys.stdout)
            self._postfix.update(_postfix(metrics))
            if self._bar is not None:
                self._bar.set_postfix(_ordered(self._postfix), refresh=True)
            return
        stage = str(stage)
        total = self.stage_steps.get(stage)
        position = step - self._offsets[stage] if stage in self._offsets else None
        if stage != self._stage or self._bar is None:
            if self._bar is not None:
                self._bar.close()
            # a new stage: keep only the latest evaluation from the previous one
            self._postfix = {k: v for k, v in self._postfix.items() if k == "eval_acc"}
            start = max(0, min(total or 0, position - 1)) if position is not None and total else 0
            self._bar = tqdm(total=total, initial=start, desc=stage, unit="step", file=sys.stdout,
                             leave=True, **_width(sys.stdout))
            self._stage = stage
        bar = self._bar
        self._postfix.update(_postfix(metrics))
        bar.set_postfix(_ordered(self._postfix), refresh=False)
        if position is not None and total:
            bar.update(max(0, min(total, position) - bar.n))
        else:
            bar.update(1)


_POSTFIX = {"reward/mean": "reward", "sft/loss": "loss", "eval/accuracy": "eval_acc",
            "throughput/tokens_per_s": "tok/s"}


def _postfix(metrics: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for key, label in _POSTFIX.items():
        v = metrics.get(key)
        if isinstance(v, numbers.Real) and not isinstance(v, bool):
            out[label] = f"{v:.0f}" if key == "throughput/tokens_per_s" else _fmt(float(v))
    return out


def _ordered(postfix: Mapping[str, str]) -> dict[str, str]:
    return {label: postfix[label] for label in _POSTFIX.values() if label in postfix}


def _width(stream: Any) -> dict[str, Any]:
    """Follow the terminal's size; a fixed size where it reports 0x0 (tqdm would draw nothing)."""
    try:
        size = os.get_terminal_size(stream.fileno())
        if size.columns > 0 and size.lines > 0:
            return {"dynamic_ncols": True}
    except (AttributeError, OSError, ValueError):
        pass
    return {"ncols": 100, "nrows": 24}


class _TqdmHandler(logging.StreamHandler):
    """Writes log records with ``tqdm.write``: above the bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


class _LoggingRedirect:
    """Swap the console handlers of the root and ``rlft`` loggers for one ``_TqdmHandler`` each, and
    undo exactly that on ``restore`` (handlers added or removed by others meanwhile are left alone;
    ``tqdm.contrib.logging.logging_redirect_tqdm`` restores the whole saved list instead)."""

    def __init__(self, loggers: Sequence[logging.Logger] = ()):
        self.swapped: list[tuple[logging.Logger, list[logging.Handler], logging.Handler]] = []
        for lg in loggers or (logging.getLogger(), logging.getLogger("rlft")):
            console = [h for h in lg.handlers if _is_console_handler(h)]
            if lg is not logging.getLogger() and not console:
                continue  # records propagate to the root's handler
            handler = _TqdmHandler(console[0].stream if console else sys.stderr)
            if console:
                handler.setFormatter(console[0].formatter)
                handler.setLevel(console[0].level)
            else:  # stands in for logging.lastResort, which prints warnings and above
                handler.setLevel(logging.WARNING)
            for h in console:
                lg.removeHandler(h)
            lg.addHandler(handler)
            self.swapped.append((lg, console, handler))

    def restore(self) -> None:
        for lg, console, handler in self.swapped:
            lg.removeHandler(handler)
            for h in console:
                if h not in lg.handlers:
                    lg.addHandler(h)
        self.swapped = []


def _is_console_handler(h: logging.Handler) -> bool:
    return type(h) is logging.StreamHandler and getattr(h, "stream", None) in (sys.stdout, sys.stderr)


# ------------------------------------------------------------------------------------------------
# tensorboard


class TensorBoardSink:
    """Every numeric metric as a scalar (tag = metric name) and sample completions as a markdown
    table (text summary ``samples``) in ``run_dir/tensorboard``. ``purge_step``: on a resumed run,
    the step it resumes from, so TensorBoard hides the replaced steps of the earlier session."""

    def __init__(self, run_dir: str | Path, *, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.logdir), purge_step=purge_step, flush_secs=10)
        self.location = f"tensorboard --logdir {self.logdir}"

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        for key, value in numeric(metrics).items():
            self.writer.add_scalar(key, value, global_step=step)

    def log_samples(self, step: int, rows: Sequence[Row]) -> None:
        if rows:
            self.writer.add_text("samples", samples_markdown(rows), global_step=step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def samples_markdown(rows: Sequence[Row], max_chars: int = 2000) -> str:
    """A markdown table: prompt, completion, reward, one column per reward function."""
    names = reward_names(rows)
    head = ["prompt", "completion", "reward", *names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        rewards = r.get("rewards") or {}
        cells = [_cell(r.get("prompt"), max_chars), _cell(r.get("completion"), max_chars),
                 _cell(r.get("reward")), *(_cell(rewards.get(n)) for n in names)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(v: Any, max_chars: int = 2000) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return _fmt(v)
    text = str(v)
    if len(text) > max_chars:
        text = text[:max_chars] + "…"
    return html.escape(text).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


# ------------------------------------------------------------------------------------------------
# fan-out and isolation


class SafeSink:
    """Runs ``sink``'s methods so that its errors never reach the run.

    The first exception (``OSError(ENOSPC)`` of a full disk, a dropped connection) logs ONE warning
    naming the backend and the error; the backend is then disabled for the rest of the run (a sink
    that failed once tends to fail every step, and a warning per step would bury the real output).
    ``close`` is still attempted once, silently, so a disabled backend releases what it holds.
    Other attributes (e.g. ``location``) are read from the wrapped sink.
    """

    def __init__(self, sink: Any, name: str):
        self.sink, self.name = sink, name
        self.error: BaseException | None = None
        self._closed = False

    @property
    def disabled(self) -> bool:
        return self.error is not None

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        self._call("log", lambda: self.sink.log(step, metrics))

    def log_samples(self, step: int, rows: Sequence[Row]) -> None:
        if isinstance(self.sink, SampleSink):
            self._call("log_samples", lambda: self.sink.log_samples(step, rows))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not isinstance(self.sink, ClosingSink):
            return
        try:
            self.sink.close()
        except Exception as err:
            if self.error is None:
                self._fail("close", err)
            else:
                logger.debug("metrics backend '%s': close failed after it was disabled: %r", self.name, err)

    def __getattr__(self, name: str) -> Any:
        if name == "sink":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.sink, name)

    def _call(self, method: str, call: Callable[[], Any]) -> None:
        if self.error is not None or self._closed:
            return
        try:
            call()
        except Exception as err:
            self._fail(method, err)

    def _fail(self, method: str, err: Exception) -> None:
        self.error = err
        logger.warning(
            "metrics backend '%s' failed in %s (%s: %s); it is disabled for the rest of the run, "
            "training goes on", self.name, method, type(err).__name__, err,
        )


class MultiSink:
    """Fans ``log``, ``log_samples`` and ``close`` out to ``sinks`` (a context manager: closes on exit)."""

    def __init__(self, sinks: Sequence[Any]):
        self.sinks = list(sinks)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.log(step, metrics)

    def log_samples(self, step: int, rows: Sequence[Row]) -> None:
        for sink in self.sinks:
            if isinstance(sink, SampleSink):
                sink.log_samples(step, rows)

    def close(self) -> None:
        """Close every sink, even when one raises (the first error is raised after the others closed)."""
        first: BaseException | None = None
        for sink in self.sinks:
            try:
                if isinstance(sink, ClosingSink):
                    sink.close()
            except Exception as err:
                first = first or err
        if first is not None:
            raise first

    def names(self) -> list[str]:
        return [getattr(s, "name", type(s).__name__) for s in self.sinks]

    def locations(self) -> dict[str, str]:
        """Where to look at the run, per backend that has a place of its own (tensorboard, wandb)."""
        out = {}
        for s in self.sinks:
            loc = getattr(s, "location", None)
            if isinstance(loc, str):
                out[getattr(s, "name", type(s).__name__)] = loc
        return out

    def __enter__(self) -> MultiSink:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def stage_steps_of(cfg: RunConfig) -> dict[str, int]:
    """Each stage's name (as the driver names it: ``name`` or ``<kind><n>``, ``stage_names``) -> its steps."""
    return {name: s.steps for name, s in zip(stage_names(cfg.stages), cfg.stages)}


def check_backends(cfg: RunConfig, *, progress: str | None = None) -> None:
    """Raise ``SinkError`` naming the package of each listed backend that cannot be imported."""
    needed = {BACKEND_PACKAGES[b]: b for b in cfg.logging.backends if b in BACKEND_PACKAGES}
    if progress == "bar" or (progress is None and cfg.logging.progress == "bar"):
        needed["tqdm"] = "console (progress bar)"
    missing = [(pkg, b) for pkg, b in needed.items() if not _package_available(pkg)]
    if missing:
        raise SinkError("; ".join(
            f"logging backend '{b}' needs the Python package '{pkg}', which is not installed "
            f"(pip install {pkg}, or remove it from logging.backends)" for pkg, b in missing
        ))


def _package_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def build_sinks(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    quiet: bool = False,
    stage_steps: Mapping[str, int] | None = None,
    start_step: int = 0,
) -> MultiSink:
    """The run's sink per ``cfg.logging``: jsonl always; console per ``logging.progress`` when
    ``console`` is listed (``quiet`` or an unlisted console: nothing on the console, ``train.log``
    still written); tensorboard and wandb when listed. Each is wrapped in ``SafeSink``.

    ``stage_steps`` defaults to ``stage_steps_of(cfg)``; ``start_step`` (> 0 on a resumed run) is
    the step the run resumes from. A listed backend whose package is missing raises ``SinkError``
    here, before anything runs; any other failure to start a backend (e.g. wandb cannot start) is a
    warning and the run goes on without it.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    backends = cfg.logging.backends
    progress = "quiet" if quiet or "console" not in backends else resolve_progress(cfg.logging.progress)
    check_backends(cfg, progress=progress)
    steps = dict(stage_steps) if stage_steps is not None else stage_steps_of(cfg)
    factories: list[tuple[str, Callable[[], Any]]] = [
        ("jsonl", lambda: JsonlSink(run_dir)),
        ("console", lambda: ConsoleSink(run_dir, progress, steps)),
    ]
    if "tensorboard" in backends:
        factories.append(("tensorboard", lambda: TensorBoardSink(run_dir, purge_step=start_step or None)))
    if "wandb" in backends:
        from launch.wandb_sink import WandbSink

        factories.append(("wandb", lambda: WandbSink(run_dir, cfg)))
    sinks = []
    for name, factory in factories:
        try:
            sinks.append(SafeSink(factory(), name))
        except ImportError as err:
            pkg = BACKEND_PACKAGES.get(name, getattr(err, "name", None) or name)
            for s in sinks:
                s.close()
            raise SinkError(f"logging backend '{name}' could not import its package '{pkg}': {err}") from err
        except Exception as err:
            logger.warning("metrics backend '%s' could not start (%s: %s); the run goes on without it",
                           name, type(err).__name__, err)
    return MultiSink(sinks)
