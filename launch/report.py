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
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from launch.run_data import (  # noqa: F401  (PLOT_FILES, read_jsonl: re-exported, part of this module's API)
    _PASS_K,
    _REWARD_FN,
    PLOT_FILES,
    TIME_PHASES,
    RunData,
    _finite,
    load_run,
    read_jsonl,
)

SAMPLE_STEPS = 5  # sample tables at most at this many steps, spread over the run
SAMPLE_ROWS = 8  # rows per sample table
TEXT_LIMIT = 1200  # characters of a prompt or completion shown before it is cut


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
    from launch.report_plots import make_plots  # matplotlib is imported only to draw

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
