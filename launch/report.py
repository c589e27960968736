"""``rlft report RUN_DIR``: a static HTML report of one run, with PNG plots beside it.

The page (``RUN_DIR/report/index.html`` by default) opens in any browser from the file system: relative
``<img>`` links, inline CSS, no script and nothing fetched from elsewhere. It shows the run's summary
(held-out evaluations before and after each RL stage), plots over steps (reward, evaluation, KL,
entropy, response length, time per phase, SFT loss) with the stage boundaries marked, a table of final
and best values, sample completions at a few steps (``samples.jsonl``), and the resolved config.

Everything is read defensively: a half-written last line of ``metrics.jsonl`` (a run killed mid-write)
and non-finite values are skipped, and a missing file leaves its section saying "not available".
Model output is escaped everywhere it appears.

Example::

    python -m launch.report runs/embedded-20261122-062244        # prints .../report/index.html
    python -m launch.report runs/embedded-20261122-062244 -o /tmp/report
"""

from __future__ import annotations

import argparse
import html
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

PLOT_FILES = ("reward.png", "eval.png", "kl.png", "entropy.png", "length.png", "timing.png", "sft_loss.png")
TIME_PHASES = ("time/generate", "time/reward", "time/train", "time/sync")
SAMPLE_STEPS = 5  # sample tables at most at this many steps, spread over the run
SAMPLE_ROWS = 8  # rows per sample table
TEXT_LIMIT = 1200  # characters of a prompt or completion shown before it is cut

_REWARD_FN = re.compile(r"^reward/(.+)/mean$")
_PASS_K = re.compile(r"^eval/pass@\d+$")


# --------------------------------------------------------------------------------------------- reading


@dataclass
class RunData:
    """What the report reads from a run directory; missing files leave their field empty/None."""

    run_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl, finite numbers and `stage`
    skipped_lines: int = 0  # malformed lines of metrics.jsonl
    metrics_found: bool = False
    samples: list[dict[str, Any]] = field(default_factory=list)
    samples_found: bool = False
    config_text: str | None = None
    config: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    _keys: list[str] | None = field(default=None, repr=False)

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of ``key`` sorted by step; a step logged twice (a resumed run) keeps its last value."""
        by_step = {r["step"]: r[key] for r in self.rows if key in r}
        steps = np.array(sorted(by_step), dtype=float)
        return steps, np.array([by_step[s] for s in steps], dtype=float)

    def keys(self) -> list[str]:
        """Every metric name logged, in first-seen order."""
        if self._keys is None:
            seen: dict[str, None] = {}
            for r in self.rows:
                seen.update(dict.fromkeys(r))
            self._keys = list(seen)
        return self._keys

    def stages(self) -> list[tuple[str, float, float]]:
        """Consecutive segments ``(stage, first_step, last_step)`` in step order."""
        by_step = {r["step"]: r["stage"] for r in self.rows if isinstance(r.get("stage"), str)}
        segments: list[list[Any]] = []
        for step in sorted(by_step):
            if segments and segments[-1][0] == by_step[step]:
                segments[-1][2] = step
            else:
                segments.append([by_step[step], step, step])
        return [(s, a, b) for s, a, b in segments]


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of ``path``, and how many non-empty lines were not one (e.g. a cut last line)."""
    rows, bad = [], 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(obj, dict):
                rows.append(obj)
            else:
                bad += 1
    return rows, bad


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _clean_metrics(row: dict[str, Any]) -> dict[str, Any] | None:
    """Finite numbers plus the ``stage`` string; None when the row has no usable step."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k == "stage" and isinstance(v, str):
            out[k] = v
        elif _finite(v):
            out[k] = float(v)
    return out if "step" in out else None


def load_run(run_dir: Path) -> RunData:
    data = RunData(run_dir=run_dir)
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        data.metrics_found = True
        raw, data.skipped_lines = read_jsonl(metrics)
        data.rows = [r for r in map(_clean_metrics, raw) if r is not None]
    samples = run_dir / "samples.jsonl"
    if samples.is_file():
        data.samples_found = True
        data.samples = [s for s in read_jsonl(samples)[0] if _finite(s.get("step"))]
    config = run_dir / "config.yaml"
    if config.is_file():
        data.config_text = config.read_text(encoding="utf-8", errors="replace")
        try:
            import yaml

            loaded = yaml.safe_load(data.config_text)
            data.config = loaded if isinstance(loaded, dict) else None
        except Exception:  # a broken config still shows as text
            data.config = None
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            loaded = json.loads(summary.read_text(encoding="utf-8"))
            data.summary = loaded if isinstance(loaded, dict) else None
        except ValueError:
            data.summary = None
    return data


# --------------------------------------------------------------------------------------------- plots


def rolling_mean(y: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average; the window shrinks at the ends instead of padding."""
    if window <= 1 or len(y) < 3:
        return y.copy()
    half = window // 2
    c = np.concatenate([[0.0], np.cumsum(y)])
    idx = np.arange(len(y))
    lo, hi = np.maximum(idx - half, 0), np.minimum(idx + half + 1, len(y))
    return (c[hi] - c[lo]) / (hi - lo)


def smoothing_window(n: int) -> int:
    """Steps per rolling mean: none for short series, then ~5% of the series, at most 50."""
    return 1 if n < 100 else min(50, n // 20)


_STYLE = {"font.size": 10, "axes.titlesize": 12, "axes.titleweight": "bold", "axes.grid": True, "grid.alpha": 0.3,
          "axes.spines.top": False, "axes.spines.right": False, "legend.fontsize": 8.5}


class _Plotter:
    """Draws each figure with matplotlib's object API (``Figure`` + Agg), so no global pyplot state
    or backend of the calling process is touched."""

    def __init__(self, data: RunData, out_dir: Path):
        self.data, self.out_dir = data, out_dir
        self.stages = data.stages()
        steps = [r["step"] for r in data.rows]
        self.run_range = (min(steps), max(steps)) if steps else (0.0, 1.0)

    def figure(self):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7.5, 3.9), dpi=120, layout="constrained")
        return fig, fig.add_subplot()

    def finish(self, fig, ax, name: str, title: str, ylabel: str, xrange: tuple[float, float]) -> tuple[str, str]:
        from matplotlib.ticker import MaxNLocator

        lo, hi = xrange
        pad = max((hi - lo) * 0.02, 0.5)
        ax.set_xlim(lo - pad, hi + pad)
        self.mark_stages(ax, lo, hi, pad)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        handles = ax.get_legend_handles_labels()[0]
        if handles:  # below the axes, so it never hides data or the stage names
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(len(handles), 3), frameon=False)
        fig.savefig(self.out_dir / name)
        return name, title

    def mark_stages(self, ax, lo: float, hi: float, pad: float) -> None:
        """A dashed line where each stage starts (inside the data's range) and the stage's name at the
        top of its span."""
        from matplotlib.transforms import blended_transform_factory

        trans = blended_transform_factory(ax.transData, ax.transAxes)
        for i, (name, first, last) in enumerate(self.stages):
            start = first - 0.5
            if i > 0 and lo < start < hi:
                ax.axvline(start, color="0.35", linestyle="--", linewidth=1.0, zorder=1)
            a, b = max(start, lo - pad), min(last + 0.5, hi + pad)
            if b - a >= 0.06 * (hi - lo):  # label only stages with room for their name
                ax.text(a + 0.01 * (hi - lo), 0.97, name, transform=trans, va="top", ha="left",
                        fontsize=9, color="0.25", bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="0.8"))

    def raw_and_smooth(self, ax, x, y, label: str, color: str) -> int:
        w = smoothing_window(len(y))
        if w > 1:
            ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(x, rolling_mean(y, w), color=color, linewidth=1.8, label=f"{label} (rolling mean, {w} steps)")
        else:
            ax.plot(x, y, color=color, linewidth=1.5, marker="." if len(y) < 30 else None, label=label)
        return w

    # each plot returns (file name, title), or None when the run has no data for it

    def reward(self) -> str | None:
        x, y = self.data.series("reward/mean")
        if not len(x):
            return None
        fig, ax = self.figure()
        sx, sd = self.data.series("reward/std")
        if len(sx) == len(x) and np.array_equal(sx, x):
            w = smoothing_window(len(y))
            m, s = rolling_mean(y, w), rolling_mean(sd, w)
            floor, ceil = self._reward_bounds()
            ax.fill_between(x, np.clip(m - s, floor, ceil), np.clip(m + s, floor, ceil), color="C0", alpha=0.15,
                            linewidth=0, label="± std over the batch's samples")
        self.raw_and_smooth(ax, x, y, "reward/mean", "C0")
        names = [m.group(1) for k in self.data.keys() if (m := _REWARD_FN.match(k))]
        for i, name in enumerate(names):
            fx, fy = self.data.series(f"reward/{name}/mean")
            ax.plot(fx, rolling_mean(fy, smoothing_window(len(fy))), color=f"C{i + 1}", linewidth=1.2,
                    linestyle="--", zorder=1.5, label=f"{name} (mean)")
        return self.finish(fig, ax, "reward.png", "Training reward", "reward", (x[0], x[-1]))

    def _reward_bounds(self) -> tuple[float, float]:
        """The band is kept inside the rewards actually seen (a 0/1 reward has no mean - std below 0)."""
        lows, highs = self.data.series("reward/min")[1], self.data.series("reward/max")[1]
        return (lows.min() if len(lows) else -np.inf), (highs.max() if len(highs) else np.inf)

    def evaluation(self) -> str | None:
        keys = [k for k in self.data.keys() if k == "eval/accuracy" or _PASS_K.match(k)]
        if not keys:
            return None
        fig, ax = self.figure()
        for i, key in enumerate(sorted(keys, key=lambda k: (k != "eval/accuracy", k))):
            x, y = self.data.series(key)
            ax.plot(x, y, color=f"C{i}", marker="o", linewidth=1.5, label=key.split("/", 1)[1])
            for xi, yi in zip(x, y):
                ax.annotate(f"{yi:.3f}", (xi, yi), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
        ax.set_ylim(0, 1.08)
        return self.finish(fig, ax, "eval.png", "Held-out evaluation", "fraction of prompts", self.run_range)

    def kl(self) -> str | None:
        present = [(k, lbl) for k, lbl in (("learner/kl", "KL to reference (learner/kl)"),
                                           ("learner/approx_kl", "old→new policy (learner/approx_kl)"))
                   if len(self.data.series(k)[0])]
        if not any(k == "learner/kl" for k, _ in present):
            return None
        fig, ax = self.figure()
        lo, hi = math.inf, -math.inf
        for i, (key, label) in enumerate(present):
            x, y = self.data.series(key)
            self.raw_and_smooth(ax, x, y, label, f"C{i}")
            lo, hi = min(lo, x[0]), max(hi, x[-1])
        return self.finish(fig, ax, "kl.png", "KL divergence", "KL (nats/token)", (lo, hi))

    def entropy(self) -> str | None:
        present = [(k, c) for k, c in (("sft/entropy", "C2"), ("learner/entropy", "C0")) if len(self.data.series(k)[0])]
        if not present:
            return None
        fig, ax = self.figure()
        lo, hi = math.inf, -math.inf
        for key, color in present:
            x, y = self.data.series(key)
            self.raw_and_smooth(ax, x, y, key, color)
            lo, hi = min(lo, x[0]), max(hi, x[-1])
        return self.finish(fig, ax, "entropy.png", "Policy entropy", "entropy (nats/token)", (lo, hi))

    def length(self) -> str | None:
        x, y = self.data.series("response/length_mean")
        if not len(x):
            return None
        fig, ax = self.figure()
        mx, my = self.data.series("response/length_max")
        if len(mx):
            self.raw_and_smooth(ax, mx, my, "response/length_max", "C1")
        self.raw_and_smooth(ax, x, y, "response/length_mean", "C0")
        ax.set_ylim(bottom=0)
        return self.finish(fig, ax, "length.png", "Response length", "tokens", (x[0], x[-1]))

    def timing(self) -> str | None:
        rows = [r for r in self.data.rows if any(k in r for k in TIME_PHASES)]
        if not rows:
            return None
        by_step = {r["step"]: r for r in rows}
        steps = np.array(sorted(by_step))
        values = np.array([[by_step[s].get(k, 0.0) for k in TIME_PHASES] for s in steps])  # [N, phases]
        k = max(1, math.ceil(len(steps) / 100))  # at most ~100 bars: one bar is the mean over k steps
        steps_b, values_b = _bin_mean(steps, k), _bin_mean(values, k)
        fig, ax = self.figure()
        colors = ("C0", "C3", "C2", "C4")
        labels = [key.split("/", 1)[1] for key in TIME_PHASES]
        # one stacked area per run of consecutive RL steps, so a gap (an SFT stage between) stays empty
        breaks = np.flatnonzero(np.diff(steps_b) > 1.5 * k) + 1
        for n, (xs, ys) in enumerate(zip(np.split(steps_b, breaks), np.split(values_b, breaks))):
            ax.stackplot(xs, ys.T, colors=colors, alpha=0.85, linewidth=0, labels=labels if n == 0 else ())
        if all("time/step" in by_step[s] for s in steps):
            ax.plot(steps_b, _bin_mean(np.array([by_step[s]["time/step"] for s in steps]), k), color="black",
                    linewidth=1.0, alpha=0.7, label="whole step")
        title = "Time per RL step" + (f" (mean over every {k} steps)" if k > 1 else "")
        return self.finish(fig, ax, "timing.png", title, "seconds", (steps[0], steps[-1]))

    def sft_loss(self) -> str | None:
        x, y = self.data.series("sft/loss")
        if not len(x):
            return None
        fig, ax = self.figure()
        self.raw_and_smooth(ax, x, y, "sft/loss", "C2")
        return self.finish(fig, ax, "sft_loss.png", "SFT loss", "cross-entropy (nats/token)", (x[0], x[-1]))


def _bin_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Means over consecutive chunks of ``k`` rows (the last chunk may be shorter)."""
    if k <= 1:
        return a
    return np.stack([a[i:i + k].mean(0) for i in range(0, len(a), k)])


def make_plots(data: RunData, out_dir: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """(file name, title) of each plot written, and a note per plot that failed (the page is still
    written); plot files of an earlier report that are not written again are removed."""
    import matplotlib as mpl

    plotter = _Plotter(data, out_dir)
    written, failed = [], []
    with mpl.rc_context(_STYLE):
        for make in (plotter.reward, plotter.evaluation, plotter.sft_loss, plotter.entropy, plotter.kl,
                     plotter.length, plotter.timing):
            try:
                made = make()
            except Exception as err:  # one odd series must not cost the whole report
                failed.append(f"{make.__name__} plot failed: {type(err).__name__}: {err}")
                continue
            if made:
                written.append(made)
    for name in set(PLOT_FILES) - {n for n, _ in written}:
        (out_dir / name).unlink(missing_ok=True)
    return written, failed


# --------------------------------------------------------------------------------------------- HTML


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "—" if v is None else str(v)
    if isinstance(v, (int, float)):
        if not math.isfinite(v):
            return str(v)
        if float(v).is_integer() and abs(v) < 1e12:
            return str(int(v))
        return f"{v:.4g}"
    return str(v)


def _na(what: str) -> str:
    return f'<p class="na">{esc(what)}: not available.</p>'


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    """``header`` is escaped here; cells are already HTML."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _overview(data: RunData) -> str:
    items = [("directory", esc(data.run_dir.resolve()))]
    if data.rows:
        times = [r["time"] for r in data.rows if "time" in r]
        if times:
            start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(min(times)))
            items.append(("started", esc(start)))
            items.append(("wall time", esc(_duration(max(times) - min(times)))))
        items.append(("last step", esc(fmt(max(r["step"] for r in data.rows)))))
    if data.skipped_lines:
        items.append(("note", esc(f"{data.skipped_lines} malformed line(s) of metrics.jsonl skipped "
                                  "(e.g. a last line cut by a killed run)")))
    out = "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"
    stages = data.stages()
    if stages:
        rows = []
        for name, first, last in stages:
            in_stage = [r for r in data.rows if r.get("stage") == name and first <= r["step"] <= last]
            times = [r["time"] for r in in_stage if "time" in r]
            step_t = [r["time/step"] for r in in_stage if "time/step" in r]
            rows.append([esc(name), esc(fmt(first)), esc(fmt(last)), esc(fmt(last - first + 1)),
                         esc(_duration(max(times) - min(times)) if len(times) > 1 else "—"),
                         esc(f"{np.mean(step_t):.3f}" if step_t else "—")])
        out += _table(["stage", "first step", "last step", "steps", "wall time", "mean s/step"], rows)
    return out


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def _summary(data: RunData) -> str:
    s = data.summary
    if s is None:
        return _na("summary.json (written when a run finishes)")
    parts = [f"<p>steps <b>{esc(fmt(s.get('steps')))}</b>, policy version <b>{esc(fmt(s.get('version')))}</b></p>"]
    evals = s.get("evaluations") or {}
    if isinstance(evals, dict) and evals:
        keys = list(dict.fromkeys(k for m in evals.values() if isinstance(m, dict) for k in m))
        rows = [[esc(label)] + [esc(fmt(m.get(k))) if isinstance(m, dict) else "—" for k in keys]
                for label, m in evals.items()]
        parts.append(_table(["evaluation"] + [k.split("/", 1)[-1] for k in keys], rows))
        for label in evals:
            if not label.startswith("before_"):
                continue
            stage = label[len("before_"):]
            before = (evals.get(label) or {}).get("eval/accuracy")
            after = (evals.get(f"after_{stage}") or {}).get("eval/accuracy")
            if _finite(before) and _finite(after):
                delta = (after - before) * 100
                cls = "up" if delta > 0 else "down" if delta < 0 else ""
                parts.append(f'<p class="delta">held-out accuracy over {esc(stage)}: {before:.1%} → {after:.1%} '
                             f'<span class="{cls}">({delta:+.1f} points)</span></p>')
    else:
        parts.append(_na("evaluations"))
    ckpts = s.get("checkpoints") or []
    if isinstance(ckpts, list) and ckpts:
        parts.append("<p>checkpoints:</p><ul>" + "".join(f"<li><code>{esc(c)}</code></li>" for c in ckpts) + "</ul>")
    else:
        parts.append("<p>checkpoints: none</p>")
    return "".join(parts)


# metric, direction of "best" (+1 higher, -1 lower, 0 none)
_TABLE_KEYS = (("reward/mean", 1), ("eval/accuracy", 1), ("sft/loss", -1), ("learner/loss", 0), ("learner/kl", 0),
               ("learner/entropy", 0), ("sft/entropy", 0), ("response/length_mean", 0),
               ("response/truncated_fraction", 0), ("batch/failed_rewards", 0), ("time/step", 0))


def _values_table(data: RunData) -> str:
    present = data.keys()
    keys = [_TABLE_KEYS[0]] + [(k, 1) for k in present if _REWARD_FN.match(k)] + [_TABLE_KEYS[1]]
    keys += [(k, 1) for k in sorted(present) if _PASS_K.match(k)] + list(_TABLE_KEYS[2:])
    rows = []
    for key, direction in keys:
        x, y = data.series(key)
        if not len(x):
            continue
        tail = y[-max(1, len(y) // 10):]
        if direction:
            i = int(np.argmax(y) if direction > 0 else np.argmin(y))
            best = f"{fmt(y[i])} <span class=\"dim\">(step {fmt(x[i])})</span>"
        else:
            best = "—"
        rows.append([f"<code>{esc(key)}</code>", esc(fmt(len(y))), esc(fmt(y[0])),
                     f"{esc(fmt(y[-1]))} <span class=\"dim\">(step {esc(fmt(x[-1]))})</span>", best,
                     esc(fmt(float(np.mean(tail))))])
    if not rows:
        return _na("metrics")
    return _table(["metric", "points", "first", "final", "best", "mean of last 10%"], rows, "num")


def _timing_table(data: RunData) -> str:
    rows = [r for r in data.rows if any(k in r for k in TIME_PHASES)]
    if not rows:
        return ""
    step = np.mean([r.get("time/step", sum(r.get(k, 0.0) for k in TIME_PHASES)) for r in rows])
    out = []
    for key in TIME_PHASES:
        mean = float(np.mean([r.get(key, 0.0) for r in rows]))
        out.append([esc(key.split("/", 1)[1]), f"{mean:.4f}", f"{mean / step:.1%}" if step > 0 else "—"])
    other = step - sum(float(np.mean([r.get(k, 0.0) for r in rows])) for k in TIME_PHASES)
    out.append(["other", f"{other:.4f}", f"{other / step:.1%}" if step > 0 else "—"])
    out.append(["<b>whole step</b>", f"<b>{step:.4f}</b>", "100%"])
    return f"<h3>Mean time per RL step ({len(rows)} steps)</h3>" + _table(["phase", "seconds", "share"], out, "num")


def pick_sample_steps(steps: list[float], k: int = SAMPLE_STEPS) -> list[float]:
    """At most ``k`` of the sorted ``steps``, spread evenly and always including the first and the last."""
    steps = sorted(set(steps))
    if len(steps) <= k:
        return steps
    return [steps[i] for i in sorted({round(j * (len(steps) - 1) / (k - 1)) for j in range(k)})]


def pick_sample_rows(rows: list[dict[str, Any]], n: int = SAMPLE_ROWS) -> list[dict[str, Any]]:
    """Up to ``n`` rows taken round-robin over prompts (different prompts first), grouped by prompt."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(str(r.get("prompt_id")), []).append(r)
    chosen: list[dict[str, Any]] = []
    depth = 0
    while len(chosen) < min(n, len(rows)):
        for g in groups.values():
            if depth < len(g) and len(chosen) < n:
                chosen.append(g[depth])
        depth += 1
    order = {pid: i for i, pid in enumerate(groups)}
    return sorted(chosen, key=lambda r: order[str(r.get("prompt_id"))])


def _text_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    more = ""
    if len(text) > TEXT_LIMIT:
        more = f'<span class="dim"> … ({len(text) - TEXT_LIMIT} more characters)</span>'
        text = text[:TEXT_LIMIT]
    return f'<div class="text">{esc(text) if text else "<span class=dim>(empty)</span>"}{more}</div>'


def _reward_cell(v: Any) -> str:
    if v is None:
        return '<span class="fail">failed</span>'
    return esc(fmt(v))


def _samples(data: RunData) -> str:
    if not data.samples_found:
        return _na("samples.jsonl")
    if not data.samples:
        return _na("sample completions (samples.jsonl is empty)")
    by_step: dict[float, list[dict[str, Any]]] = {}
    for s in data.samples:
        by_step.setdefault(float(s["step"]), []).append(s)
    parts = [f'<p class="dim">{len(data.samples)} samples logged at {len(by_step)} step(s); '
             f"showing up to {SAMPLE_ROWS} at each of up to {SAMPLE_STEPS} steps.</p>"]
    for step in pick_sample_steps(list(by_step)):
        rows = by_step[step]
        rewards = [r["reward"] for r in rows if _finite(r.get("reward"))]
        failed = sum(1 for r in rows if r.get("reward") is None)
        first = rows[0]
        meta = [f"stage {esc(first.get('stage', '?'))}", f"policy version {esc(fmt(first.get('policy_version')))}",
                f"{len(rows)} samples"]
        if rewards:
            meta.append(f"mean reward {np.mean(rewards):.3f}")
        if failed:
            meta.append(f'<span class="fail">{failed} failed reward(s)</span>')
        table_rows = []
        for r in pick_sample_rows(rows):
            breakdown = r.get("rewards") if isinstance(r.get("rewards"), dict) else {}
            detail = "<br>".join(f"{esc(k)}: {_reward_cell(v)}" for k, v in breakdown.items()) or "—"
            prompt = _text_cell(r.get("prompt"))
            cat = r.get("category")
            if cat is not None:
                prompt = f'<span class="tag">{esc(cat)}</span>' + prompt
            table_rows.append([prompt, _text_cell(r.get("completion")), _reward_cell(r.get("reward")), detail,
                               esc(r.get("finish_reason", "—")), esc(fmt(r.get("num_tokens")))])
        parts.append(f"<h3>step {esc(fmt(step))} <span class=\"dim\">— {' · '.join(meta)}</span></h3>")
        parts.append(_table(["prompt", "completion", "reward", "breakdown", "finish", "tokens"], table_rows,
                            "samples"))
    return "".join(parts)


_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:0;color:#1f2328;
background:#f6f8fa;line-height:1.45}
main{max-width:1400px;margin:0 auto;padding:16px 28px 48px}
header{background:#24292f;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:24px}header .sub{color:#c9d1d9;font-size:13px;margin-top:4px}
nav{margin-top:8px;font-size:13px}nav a{color:#9ecbff;margin-right:14px;text-decoration:none}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:14px 20px;margin:18px 0}
h2{margin:0 0 10px;font-size:19px;border-bottom:1px solid #eaeef2;padding-bottom:6px}
h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px}
th,td{border:1px solid #d0d7de;padding:4px 9px;vertical-align:top;text-align:left}
th{background:#f0f3f6}
table.num td:not(:first-child){text-align:right;font-variant-numeric:tabular-nums}
table.samples{width:100%;table-layout:fixed}
table.samples th:nth-child(1),table.samples th:nth-child(2){width:34%}
table.samples th:nth-child(3){width:6%}table.samples th:nth-child(4){width:14%}
table.samples th:nth-child(5),table.samples th:nth-child(6){width:6%}
.text{white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
font-size:12px;max-height:16em;overflow:auto}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:14px}
figure{margin:0;border:1px solid #eaeef2;border-radius:6px;padding:6px;background:#fff}
figure img{width:100%;height:auto;display:block}
figcaption{font-size:12px;color:#57606a;text-align:center}
pre{background:#f6f8fa;border:1px solid #eaeef2;padding:10px;overflow:auto;font-size:12px;max-height:40em}
dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;margin:4px 0 10px}dt{color:#57606a}dd{margin:0}
.na{color:#8c959f;font-style:italic}.dim{color:#6e7781;font-weight:normal}
.fail{color:#cf222e;font-weight:600}.up{color:#1a7f37;font-weight:600}.down{color:#cf222e;font-weight:600}
.delta{font-size:15px}.tag{display:inline-block;background:#ddf4ff;color:#0969da;border-radius:10px;
padding:0 7px;font-size:11px;margin-bottom:3px}
"""


def render_html(data: RunData, plots: list[tuple[str, str]], plot_notes: Sequence[str] = ()) -> str:
    """The page: run overview, summary, plots, final/best values, sample completions, config."""
    name = (data.config or {}).get("name") if data.config else None
    title = f"rlft report — {data.run_dir.name}"
    if plots:
        figures = "".join(f'<figure><img src="{esc(f)}" alt="{esc(t)}"><figcaption>{esc(f)}</figcaption></figure>'
                          for f, t in plots)
        plot_html = f'<div class="plots">{figures}</div>'
    else:
        plot_html = _na("plots (no metrics to plot)")
    plot_html += "".join(f'<p class="fail">{esc(note)}</p>' for note in plot_notes)
    sections = [
        ("overview", "Run", _overview(data) + ("" if data.metrics_found else _na("metrics.jsonl"))),
        ("summary", "Summary", _summary(data)),
        ("plots", "Plots", plot_html),
        ("values", "Final and best values", _values_table(data) + _timing_table(data)),
        ("samples", "Sample completions", _samples(data)),
        ("config", "Config", f"<pre>{esc(data.config_text)}</pre>" if data.config_text is not None
         else _na("config.yaml")),
    ]
    nav = "".join(f'<a href="#{sid}">{esc(h)}</a>' for sid, h, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{esc(h)}</h2>{content}</section>' for sid, h, content in sections)
    sub = f"config name <b>{esc(name)}</b> · " if name else ""
    generated = time.strftime("%Y-%m-%d %H:%M:%S")
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body>"
        f"<header><h1>{esc(data.run_dir.name)}</h1>"
        f'<div class="sub">{sub}{esc(data.run_dir.resolve())} · report generated {esc(generated)}</div>'
        f"<nav>{nav}</nav></header><main>{body}</main></body></html>\n"
    )


def write_report(run_dir: Path, out_dir: Path | None = None) -> Path:
    """Write ``index.html`` and its PNG plots into ``out_dir`` (default ``run_dir/report``); return the page."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist or is not a directory")
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_run(run_dir)
    plots, notes = make_plots(data, out_dir)
    page = out_dir / "index.html"
    page.write_text(render_html(data, plots, notes), encoding="utf-8")
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rlft report",
        description="Write a static HTML report (plots, summary, sample completions, config) of a run directory.",
    )
    parser.add_argument("run_dir", help="the run directory (runs/<name>-<timestamp>)")
    parser.add_argument("-o", "--out", help="output directory (default: RUN_DIR/report)")
    args = parser.parse_args(argv)
    try:
        page = write_report(Path(args.run_dir), Path(args.out) if args.out else None)
    except FileNotFoundError as err:
        print(f"rlft: {err}", file=sys.stderr)
        return 2
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
