"""``rlft report``: the static HTML report of a run directory, its plots, and what a browser makes of it.

The run directory is synthetic (SFT, RL and evaluation rows, a last line cut mid-write, a non-finite
value, model output that is hostile HTML), so the test needs no Ray, no model and no run. The browser
check renders the page in headless Chromium (Debian's ``chromium``; scripts/install.sh installs it).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from launch.report import PLOT_FILES, main, pick_sample_rows, pick_sample_steps, read_jsonl, write_report

HOSTILE = "<script>alert(1)</script>"
CHROMIUM = Path("/usr/bin/chromium")
SFT_STEPS, RL_STEPS = 40, 60


def _metrics_rows() -> list[dict]:
    rng = np.random.default_rng(0)
    rows, t = [], 1_795_000_000.0
    for step in range(1, SFT_STEPS + 1):
        t += 0.1
        rows.append({"step": float(step), "time": t, "sft/loss": 4.0 * math.exp(-step / 10) + 0.5,
                     "sft/entropy": 4.0 - step / 20, "sft/lr": 0.003, "version": float(step), "time/step": 0.07,
                     "stage": "sft1"})
    rows.append({"step": SFT_STEPS, "time": t + 1, "eval/accuracy": 0.25, "eval/failed_rewards": 0.0,
                 "eval/prompts": 50.0, "eval/pass@4": 0.45})
    for i in range(RL_STEPS):
        step, t = SFT_STEPS + 1 + i, t + 0.5
        mean = 0.1 + 0.4 * i / RL_STEPS + 0.05 * rng.standard_normal()
        times = {"time/generate": 0.14 + 0.01 * rng.random(), "time/reward": 0.002, "time/train": 0.28,
                 "time/sync": 0.03}
        rows.append({
            "step": float(step), "time": t, "reward/mean": mean, "reward/std": 0.4, "reward/min": 0.0,
            "reward/max": 1.0, "reward/correct/mean": mean, "reward/format/mean": 0.8 + 0.1 * i / RL_STEPS,
            "learner/loss": 0.01 * rng.standard_normal(), "learner/kl": 0.001 * i, "learner/approx_kl": 0.0,
            "learner/entropy": 0.7 - 0.3 * i / RL_STEPS, "response/length_mean": 3.5 + rng.random(),
            "response/length_max": 6.0, "response/truncated_fraction": 0.0, **times,
            "time/step": sum(times.values()) + 0.01, "version": float(step), "stage": "rl1",
        })
    rows[-5]["learner/kl"] = float("nan")  # json.dumps writes NaN; the report must skip it
    rows.append({"step": SFT_STEPS + RL_STEPS, "time": t + 1, "eval/accuracy": 0.47, "eval/failed_rewards": 0.0,
                 "eval/prompts": 50.0, "eval/pass@4": 0.71})
    return rows


def _sample_rows() -> list[dict]:
    rows = []
    for step in range(SFT_STEPS + 1, SFT_STEPS + RL_STEPS + 1, 5):  # 12 logged steps; the report shows 5
        for p in range(4):
            for k in range(4):
                completion = HOSTILE if (p, k) == (0, 0) else f"{p + k}"
                failed = (p, k) == (1, 1)
                rows.append({
                    "step": step, "stage": "rl1", "prompt_id": f"p{p}", "prompt": f'What is {p} + {k}? <b>&"\'',
                    "completion": completion, "reward": None if failed else float(k % 2),
                    "rewards": {"correct": None if failed else float(k % 2), "format": 1.0},
                    "finish_reason": "stop" if k else "length", "num_tokens": 3, "policy_version": step - 1,
                    "category": "add" if p % 2 else None,
                })
    return rows


def build_run_dir(root: Path) -> Path:
    run = root / "demo-20261122-000000"
    run.mkdir(parents=True)
    lines = [json.dumps(r) for r in _metrics_rows()]
    (run / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 101.0, "time": 17950, "reward/me')
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _sample_rows()))
    (run / "config.yaml").write_text("name: demo\nseed: 0\nmodel:\n  path: builtin:tiny\n"
                                     "reward:\n  functions: ['<img src=x onerror=alert(2)>']\n")
    (run / "summary.json").write_text(json.dumps({
        "steps": 100, "version": 100,
        "evaluations": {"before_rl1": {"eval/accuracy": 0.25, "eval/pass@4": 0.45},
                        "after_rl1": {"eval/accuracy": 0.47, "eval/pass@4": 0.71}},
        "checkpoints": [str(run / "checkpoints" / "step-000100")],
    }))
    return run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return build_run_dir(tmp_path)


def _distinct_colours(png: Path) -> int:
    from matplotlib.image import imread

    pixels = imread(str(png))
    return len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0))


def test_report_writes_page_and_plots(run_dir: Path):
    page = write_report(run_dir)
    assert page == run_dir / "report" / "index.html"
    text = page.read_text()
    for name in PLOT_FILES:
        png = page.parent / name
        assert png.is_file(), f"{name} was not written"
        assert png.stat().st_size > 10_000, f"{name} is suspiciously small"
        assert _distinct_colours(png) > 20, f"{name} looks blank"
        assert f'src="{name}"' in text
    # model output and config text are escaped; the page itself carries no script and nothing external
    assert HOSTILE not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(2)&gt;" in text
    assert "<b>&" not in text and "&lt;b&gt;&amp;&quot;&#x27;" in text
    assert "<script" not in text.lower()
    assert not re.search(r"(src|href)=\"(https?:)?//", text)
    # the cut last line is skipped and reported; the summary, evaluations and failed rewards show
    assert "1 malformed line" in text
    assert "25.0% → 47.0%" in text and "+22.0 points" in text
    assert 'class="fail">failed' in text
    assert "not available" not in text
    # samples: at most 5 steps, at most 8 rows each
    assert len(re.findall(r"<h3>step ", text)) == 5
    tables = re.findall(r'<table class="samples">(.*?)</table>', text, flags=re.S)
    assert len(tables) == 5 and all(t.count("<tr>") - 1 <= 8 for t in tables)


def test_report_without_optional_files(tmp_path: Path):
    run = build_run_dir(tmp_path)
    out = tmp_path / "out"
    write_report(run, out)
    assert (out / "reward.png").is_file()
    for name in ("summary.json", "config.yaml"):
        (run / name).unlink()
    (run / "samples.jsonl").write_text("")
    rl_only = [r for r in read_jsonl(run / "metrics.jsonl")[0] if r.get("stage") == "rl1"]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rl_only))
    text = write_report(run, out).read_text()
    assert "summary.json (written when a run finishes): not available" in text
    assert "config.yaml: not available" in text
    assert "samples.jsonl is empty" in text
    assert not (out / "sft_loss.png").exists() and not (out / "eval.png").exists()  # stale plots removed
    assert (out / "reward.png").is_file() and 'src="sft_loss.png"' not in text

    empty = tmp_path / "empty-run"
    empty.mkdir()
    text = write_report(empty).read_text()
    assert "metrics.jsonl: not available" in text and "samples.jsonl: not available" in text
    assert not list((empty / "report").glob("*.png"))


def test_main_prints_the_page(run_dir: Path, tmp_path: Path, capsys):
    assert main([str(run_dir), "-o", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r" / "index.html")
    assert main([str(tmp_path / "missing")]) == 2


def test_sample_picking():
    assert pick_sample_steps([1, 2, 3]) == [1, 2, 3]
    assert pick_sample_steps(list(range(10))) == [0, 2, 4, 7, 9]
    rows = [{"prompt_id": f"p{p}", "k": k} for p in range(3) for k in range(5)]
    picked = pick_sample_rows(rows, 8)
    assert len(picked) == 8 and {r["prompt_id"] for r in picked} == {"p0", "p1", "p2"}
    assert [r["prompt_id"] for r in picked] == sorted(r["prompt_id"] for r in picked)  # grouped by prompt


# --- the page in a real browser --------------------------------------------------------------------------

# Added to a *copy* of the page only (the report itself has no script): once every image has loaded or
# failed (the load event), write what the browser decoded of each into the DOM, which --dump-dom prints.
_PROBE = """<script>
window.addEventListener("load", () => {
  const out = [...document.images].map(i => ({src: i.getAttribute("src"), complete: i.complete,
    naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight, shownWidth: i.getBoundingClientRect().width}));
  const pre = document.createElement("pre");
  pre.id = "rlft-probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--allow-file-access-from-files", f"--user-data-dir={user_data}", "--window-size=1400,3000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def test_report_renders_in_headless_chromium(run_dir: Path, tmp_path: Path):
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing on CI (scripts/install.sh installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    page = write_report(run_dir)

    probe_dir = tmp_path / "probe"
    shutil.copytree(page.parent, probe_dir)
    probe = probe_dir / "index.html"
    probe.write_text(probe.read_text().replace("</body>", _PROBE + "</body>"))
    done = _chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri(), user_data=tmp_path / "chromium-1")
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="rlft-probe">(.*?)</pre>', done.stdout, flags=re.S)
    assert found, f"the probe did not run; DOM tail: {done.stdout[-500:]}"
    images = json.loads(html.unescape(found.group(1)))
    assert sorted(i["src"] for i in images) == sorted(PLOT_FILES)
    for img in images:  # decoded (a broken or missing image has naturalWidth 0) and laid out visibly
        assert img["complete"] and img["naturalWidth"] >= 400 and img["naturalHeight"] >= 200, img
        assert img["shownWidth"] >= 300, img

    shot = tmp_path / "report-screenshot.png"
    done = _chromium(f"--screenshot={shot}", page.as_uri(), user_data=tmp_path / "chromium-2")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert _distinct_colours(shot) > 200  # the plots drew: a page of text alone has far fewer colours
    try:
        shutil.copy(shot, "/tmp/rlft-report-screenshot.png")
    except OSError:
        pass
    print(f"report screenshot: {shot} (copy: /tmp/rlft-report-screenshot.png)")
