"""The run report's plots: one PNG per series (reward, evaluation, KL, entropy, response length, time
per phase, SFT loss) over steps, with the stage boundaries marked, smoothed where a run is long.

>>> rolling_mean(np.array([0.0, 3.0, 6.0, 9.0]), 3).tolist()
[1.5, 3.0, 6.0, 7.5]
>>> smoothing_window(50), smoothing_window(400), smoothing_window(5000)
(1, 20, 50)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from launch.run_data import _PASS_K, _REWARD_FN, PLOT_FILES, TIME_PHASES, RunData


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
