"""The ``rlft`` command line: the installed console script as a user runs it (``--help``), and
``rlft check`` through the same entry point (``launch.cli.main``) in this process, which spares
each call the few seconds of a fresh interpreter importing torch."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from launch.cli import main
from rlft.config import load_config, validate_config

RLFT = shutil.which("rlft", path=str(Path(sys.executable).parent)) or shutil.which("rlft")


def script(*args: str) -> subprocess.CompletedProcess:
    """The installed console script in a fresh process."""
    assert RLFT, "the rlft console script is not installed (scripts/install.sh installs it)"
    return subprocess.run([RLFT, *args], capture_output=True, text=True, timeout=120)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``rlft ARGS`` in this process, from ``cwd``: its exit code and what it printed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd or Path.cwd()), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse's own exits
            code = exit_.code if isinstance(exit_.code, int) else 1
    return subprocess.CompletedProcess(["rlft", *args], code, out.getvalue(), err.getvalue())


def test_help_lists_commands():
    out = script("--help")
    assert out.returncode == 0
    assert "train" in out.stdout and "check" in out.stdout and "validate config, data and model" in out.stdout
    sub = script("check", "--help")
    assert sub.returncode == 0 and "KEY=VALUE" in sub.stdout and "--output" in sub.stdout
    invalid = script("check", "algo.loss.params.clip_hgih=0.28")  # a config error: one line, exit 2
    assert invalid.returncode == 2 and "did you mean 'clip_high'" in invalid.stderr and invalid.stdout == ""


def test_check_prints_the_resolved_config(tmp_path):
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text("name: exp\nalgo: {advantage: {name: rloo}}\n")
    out = run("check", str(cfg_file), "learner.lr=3e-6", "-o", str(tmp_path / "resolved.yaml"))
    assert out.returncode == 0, out.stderr
    printed = validate_config(yaml.safe_load(out.stdout))
    assert printed == load_config(cfg_file, ["learner.lr=3e-6"])
    assert printed.name == "exp" and printed.algo.advantage.name == "rloo" and printed.learner.lr == 3e-6
    assert load_config(tmp_path / "resolved.yaml") == printed
    assert "policy losses cispo, decoupled_ppo, gspo, ppo_clip, reinforce, topr" in out.stdout


def test_check_without_a_file_takes_overrides():
    out = run("check", "algo.loss.name=gspo")
    assert out.returncode == 0, out.stderr
    assert validate_config(yaml.safe_load(out.stdout)).algo.loss.name == "gspo"


def test_invalid_config_exits_2_naming_the_field():
    out = run("check", "algo.loss.params.clip_hgih=0.28")
    assert out.returncode == 2
    assert "algo.loss.params: unknown parameter 'clip_hgih'" in out.stderr
    assert "did you mean 'clip_high'" in out.stderr
    assert out.stdout == ""


CHECKED_REWARDS = """
import time

def score(prompt, completion, *, answer):
    return 1.0 if completion == answer else 0.0

def flaky(prompt, completion):
    if not completion:
        raise ValueError("empty completion")
    return 0.5

def hangs(prompt, completion):
    time.sleep(60)
    return 1.0

def one_arg(completion):
    return 1.0
"""


def test_check_calls_each_reward_and_reports_type_range_time_and_errors(tmp_path):
    (tmp_path / "my_rewards.py").write_text(CHECKED_REWARDS)
    good = "reward.functions=[{path: ./my_rewards.py:score}, {name: regex_format, weight: 0.1, params: {pattern: '\\d+'}}]"
    out = run("check", good, cwd=tmp_path)  # relative paths on the command line: relative to the cwd
    assert out.returncode == 0, out.stderr
    assert "#   reward score: 8/8 calls ok, returned float, values in [0, 1]" in out.stdout
    assert "#   reward regex_format: 8/8 calls ok, returned float, values in [0, 1]" in out.stdout
    assert "rewards " in out.stdout and "math_verify" in out.stdout  # the registered rewards are listed

    bad = "reward.functions=[{path: ./my_rewards.py:flaky}, {path: ./my_rewards.py:hangs, timeout_s: 0.5}]"
    out = run("check", bad, cwd=tmp_path)
    assert out.returncode == 1
    assert "reward flaky: 4/8 calls ok, returned float, values in [0.5, 0.5]" in out.stdout
    assert "FAILED: exception x4; first: ValueError: empty completion" in out.stdout
    assert "reward hangs: 0/8 calls ok; FAILED: timeout x8; first: no result within 0.5 s" in out.stdout


def test_check_names_what_is_wrong_with_a_reward_reference(tmp_path):
    (tmp_path / "my_rewards.py").write_text(CHECKED_REWARDS)
    cases = {
        "{path: ./missing.py:score}": f"reward file '{tmp_path / 'missing.py'}' not found",
        "{path: ./my_rewards.py:nope}": "has no function 'nope' (functions defined there: flaky, hangs, one_arg, score)",
        "{path: ./my_rewards.py:one_arg}": "has the wrong signature one_arg(completion)",
        "{name: exact_mach}": "unknown reward 'exact_mach' (did you mean 'exact_match'?)",
    }
    for ref, message in cases.items():
        out = run("check", f"reward.functions=[{ref}]", cwd=tmp_path)
        assert out.returncode == 2 and message in out.stderr, (ref, out.stderr)


def test_check_reports_the_reward_sandbox_and_refuses_one_that_cannot_run(tmp_path, monkeypatch):
    from rewards.sandbox import jail

    code = "reward.functions=[{name: code_tests}, {name: builtin_task, weight: 0}]"
    out = run("check", code, "data.metadata_fields=[tests]", "--config-only", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "# reward sandbox: namespaces (user, mount, pid, net" in out.stdout and "for code_tests" in out.stdout
    weak = run("check", code, "data.metadata_fields=[tests]", "reward.sandbox.name=weak_process", "--config-only")
    assert weak.returncode == 0 and "# reward sandbox: weak_process (WEAK: no OS isolation" in weak.stdout
    plain = run("check", "--config-only")  # no reward runs code: the sandbox is not started
    assert "# reward sandbox: namespaces (not started: no reward declares that it runs code)" in plain.stdout
    typo = run("check", "reward.sandbox.name=namespace", "--config-only")
    assert typo.returncode == 2 and "unknown sandbox 'namespace' (did you mean 'namespaces'?)" in typo.stderr

    monkeypatch.setattr(jail, "unavailable_reason", lambda: "unshare: Operation not permitted")
    refused = run("check", code, "data.metadata_fields=[tests]", "--config-only", cwd=tmp_path)
    assert refused.returncode == 2
    assert "code_tests runs code, and the 'namespaces' sandbox cannot run on this machine" in refused.stderr
    assert "weak_process" in refused.stderr
