"""The installed ``rlft`` console script, run as a user runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from rlft.config import load_config, validate_config

RLFT = shutil.which("rlft", path=str(Path(sys.executable).parent)) or shutil.which("rlft")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    assert RLFT, "the rlft console script is not installed (scripts/install.sh installs it)"
    return subprocess.run([RLFT, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_help_lists_commands():
    out = run("--help")
    assert out.returncode == 0
    assert "train" in out.stdout and "check" in out.stdout and "validate config, data and model" in out.stdout
    sub = run("check", "--help")
    assert sub.returncode == 0 and "KEY=VALUE" in sub.stdout and "--output" in sub.stdout


def test_check_prints_the_resolved_config(tmp_path):
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text("name: exp\nalgo: {advantage: {name: rloo}}\n")
    out = run("check", str(cfg_file), "learner.lr=3e-6", "-o", str(tmp_path / "resolved.yaml"))
    assert out.returncode == 0, out.stderr
    printed = validate_config(yaml.safe_load(out.stdout))
    assert printed == load_config(cfg_file, ["learner.lr=3e-6"])
    assert printed.name == "exp" and printed.algo.advantage.name == "rloo" and printed.learner.lr == 3e-6
    assert load_config(tmp_path / "resolved.yaml") == printed
    assert "policy losses cispo, gspo, ppo_clip, reinforce, topr" in out.stdout


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
