"""The entrypoint of a submitted job runs rlft under a Python that has it, whatever ``python`` the
head's shell has on PATH; when no Python there has rlft it says so with the fix and exits 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from launch import jobs
from launch.job_entry import LAUNCHER_REL, NO_RLFT, write_launcher

# PATH of a shell where the virtual environment is not active (no `python` with rlft on it)
BARE_PATH = "/usr/bin:/bin"


def _job_dir(tmp_path: Path) -> Path:
    root = tmp_path / "job"
    write_launcher(root)
    return root


def test_the_entrypoint_uses_the_python_running_ray_when_path_has_another(tmp_path):
    """As Ray's job supervisor does: a process of the cluster's Python with Ray loaded runs the
    entrypoint through /bin/sh with a PATH whose `python` (if any) lacks rlft."""
    root = _job_dir(tmp_path)
    entry = jobs.entrypoint("/tmp/run").replace(" train _rlft_job/config.yaml --run-dir /tmp/run", " --version")
    assert entry == f"sh {LAUNCHER_REL} --version"
    supervisor = ("import subprocess, sys, ray._raylet; "
                  f"sys.exit(subprocess.run({entry!r}, shell=True).returncode)")
    env = {"PATH": BARE_PATH, "HOME": str(tmp_path), "RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}  # as in a job
    out = subprocess.run([sys.executable, "-c", supervisor], cwd=root, capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("rlft ")


def test_no_python_with_rlft_is_named_with_the_fix_and_exit_2(tmp_path):
    root = _job_dir(tmp_path)
    out = subprocess.run(["sh", LAUNCHER_REL, "train", "_rlft_job/config.yaml"], cwd=root, capture_output=True,
                         text=True, env={"PATH": BARE_PATH, "HOME": str(tmp_path)}, timeout=120)
    assert out.returncode == 2
    assert out.stderr.startswith(NO_RLFT)
    assert "pip install rlft" in out.stderr and "rlft submit --pip rlft" in out.stderr


class _Info:
    status, message, metadata = "FAILED", "Job entrypoint command failed with exit code 2", {}


class _Client:
    def __init__(self, logs: str):
        self.logs = logs

    def get_job_info(self, job_id):
        return _Info()

    def get_job_logs(self, job_id):
        return self.logs


def test_submit_exits_2_when_the_cluster_cannot_run_rlft_and_1_for_a_failed_run(capsys):
    no_rlft = f"{NO_RLFT}: neither `python` on the job's PATH (/usr/bin/python3) nor ...\n"
    assert jobs.report_end(_Client("Running entrypoint\n" + no_rlft), "j", "FAILED") == 2
    assert NO_RLFT in capsys.readouterr().err
    assert jobs.report_end(_Client("rlft: reward file 'x.py' not found\n"), "j", "FAILED") == 1
