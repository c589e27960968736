"""``rlft submit / status / logs / stop / list`` against a real Ray cluster on this machine: a head
started with ``ray start --head`` (dashboard and job server on loopback, token authentication
required) and a second node advertising the custom resource ``node_b``.

The cluster has its own temp dir and ports and is stopped through its own ``ray start --block``
processes (``ray stop`` would kill every Ray on the machine, the embedded ones of other tests too).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import requests

BIN = Path(sys.executable).parent
RLFT, RAY = str(BIN / "rlft"), str(BIN / "ray")
TINY = [  # the embedded default cut down to seconds of work
    "stages=[{kind: rl, steps: 2}]",
    "rollout.prompts_per_step=4",
    "rollout.group_size=4",
    "evaluation.num_prompts=4",
    "evaluation.pass_k=0",
    "logging.report=false",
]
USER_REWARD = """
from scoring_helpers import clean

def score(prompt, completion, *, answer):
    return 1.0 if clean(completion) == answer else 0.0
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """A head and extra nodes, each a ``ray start --block`` process in its own session; stopping one
    ends its Ray processes, then whatever is left of its session or under the cluster's temp dir."""

    def __init__(self) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="rlftj", dir="/tmp")  # short: Unix socket paths
        self.token = secrets.token_hex(16)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},  # an embedded Ray's settings
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            # the head's shell without the virtual environment on PATH (as `.venv/bin/ray start --head` from a
            # shell where it is not active): the job's launcher must find the Python that runs Ray itself
            "PATH": os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                    if p and Path(p).resolve() != BIN.resolve()),
            "RAY_USAGE_STATS_ENABLED": "0",
            "TOKENIZERS_PARALLELISM": "false",
        }
        self.procs: list[subprocess.Popen] = []
        self.gcs_port, self.dashboard_port = _free_port(), _free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, args: list[str], log: str, workers: int) -> None:
        ports = [f"--{name}={_free_port()}" for name in (
            "node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port")]
        cmd = [RAY, "start", "--block", *args, *ports, f"--min-worker-port={workers}",
               f"--max-worker-port={workers + 199}", "--object-store-memory=300000000"]
        out = open(Path(self.temp_dir) / log, "w")
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def start_head(self, cpus: int) -> None:
        self._start(["--head", f"--port={self.gcs_port}", f"--temp-dir={self.temp_dir}", f"--num-cpus={cpus}",
                     "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                     f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={_free_port()}"],
                    "head.log", workers=21000)
        deadline = time.time() + 90
        while not self._answers():
            assert self.procs[0].poll() is None, (Path(self.temp_dir) / "head.log").read_text()[-3000:]
            assert time.time() < deadline, "the head's job server did not come up"
            time.sleep(0.5)

    def add_node(self, cpus: int, resources: dict[str, float]) -> None:
        self._start([f"--address=127.0.0.1:{self.gcs_port}", f"--num-cpus={cpus}",
                     f"--resources={json.dumps(resources)}"], f"node{len(self.procs)}.log", workers=21200)
        deadline = time.time() + 90
        while len(self.alive_nodes()) < len(self.procs):
            assert self.procs[-1].poll() is None, "the second node exited"
            assert time.time() < deadline, "the second node did not join"
            time.sleep(0.5)

    def _answers(self) -> bool:
        try:
            return requests.get(f"{self.address}/api/version", headers=self.headers, timeout=2).ok
        except requests.RequestException:
            return False

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def alive_nodes(self) -> list[dict]:
        r = requests.get(f"{self.address}/api/v0/nodes", params={"detail": "1"}, headers=self.headers, timeout=10)
        return [n for n in r.json()["data"]["result"]["result"] if n["state"] == "ALIVE"]

    def stop(self) -> None:
        for proc in reversed(self.procs):  # nodes first, then the head
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        sessions = {p.pid for p in self.procs}
        for p in psutil.process_iter(["pid"]):
            try:
                if os.getsid(p.pid) in sessions or self.temp_dir in " ".join(p.cmdline()) \
                        or p.cwd().startswith(self.temp_dir):
                    p.kill()
            except (psutil.Error, ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    c = LocalCluster()
    try:
        c.start_head(cpus=4)
        c.add_node(cpus=3, resources={"node_b": 1})
        yield c
    finally:
        c.stop()


def rlft(cluster: LocalCluster, *args: str, cwd: Path, token: str | None = "cluster", timeout: float = 600,
         **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    if token:
        environ["RAY_AUTH_TOKEN"] = cluster.token if token == "cluster" else token
    environ.update(env)
    return subprocess.run([RLFT, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=environ)


def _out(p: subprocess.CompletedProcess) -> str:
    return f"exit {p.returncode}\n--- stdout\n{p.stdout[-4000:]}\n--- stderr\n{p.stderr[-4000:]}"


def test_a_job_scored_by_a_reward_file_from_the_working_dir_on_the_second_node(cluster, tmp_path):
    """The built-in task scored by a user's reward file (which imports a module next to it) shipped
    in the working directory, its reward workers pinned to the node with ``node_b``; the log is
    followed to the end, and status, logs and list know the job."""
    from ray.util.state.api import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "my_rewards.py").write_text(USER_REWARD)
    (proj / "scoring_helpers.py").write_text("def clean(text):\n    return text.strip()\n")
    run_dir = tmp_path / "run"
    job = f"rlft-test-ok-{secrets.token_hex(2)}"
    out = rlft(cluster, "submit", *TINY, "reward.functions=[{path: ./my_rewards.py:score}]",
               "cluster.reward.resources={node_b: 0.01}", "--address", cluster.address, "--working-dir", ".",
               "--job-id", job, "--run-dir", str(run_dir), cwd=proj)
    assert out.returncode == 0, _out(out)
    assert f"rlft: submitted job {job}" in out.stdout and f"{cluster.address}/#/jobs/{job}" in out.stdout
    assert f"run directory (on the node running the job's driver): {run_dir}" in out.stdout
    assert "rlft: the run on the cluster's 2 alive node(s):" in out.stdout and "node_b 0.01" in out.stdout
    assert "stage=rl1" in out.stdout and f"rlft: job {job} SUCCEEDED" in out.stdout  # the log, followed
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rows if r.get("stage") == "rl1"]
    assert len(rl) == 2 and all(r["reward/failed_samples"] == 0 and "reward/score/mean" in r for r in rl)
    # the reward file was read from its place in the shipped working directory
    assert "/working_dir_files/_ray_pkg_" in (run_dir / "config.yaml").read_text()

    node_b = [n["node_id"] for n in cluster.alive_nodes() if "node_b" in n["resources_total"]]
    placement = json.loads((run_dir / "placement.json").read_text())
    assert [w["node_id"] for w in placement["reward"]] == node_b
    # Ray's own record of where the (now dead) actor ran; `list_actors` sends no token, its client does
    state = StateApiClient(address=cluster.address, headers=cluster.headers)
    options = ListApiOptions(filters=[("name", "=", "reward-0"), ("job_id", "=", _ray_job_id(cluster, job))])
    actors = state.list(StateResource.ACTORS, options=options, raise_on_missing_output=False)
    assert [a["node_id"] for a in actors] == node_b

    logs = rlft(cluster, "logs", job, "--address", cluster.address, cwd=tmp_path)
    assert logs.returncode == 0 and logs.stdout.count("stage=rl1") == 2, _out(logs)
    status = rlft(cluster, "status", job, "--address", cluster.address, cwd=tmp_path)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout and str(run_dir) in status.stdout, _out(status)
    listed = rlft(cluster, "list", cwd=tmp_path, RAY_ADDRESS=cluster.address)
    assert listed.returncode == 0 and any(line.startswith(job) and "SUCCEEDED" in line
                                          for line in listed.stdout.splitlines()), _out(listed)


def _ray_job_id(cluster: LocalCluster, submission_id: str) -> str:
    r = requests.get(f"{cluster.address}/api/jobs/{submission_id}", headers=cluster.headers, timeout=10)
    return r.json()["job_id"]


def test_a_failing_job_exits_nonzero_and_shows_the_runs_error(cluster, tmp_path):
    job = f"rlft-test-fail-{secrets.token_hex(2)}"
    out = rlft(cluster, "submit", *TINY, "reward.functions=[{path: /nonexistent/rewards_x.py:score}]",
               "--address", cluster.address, "--job-id", job, "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode == 1, _out(out)
    assert "reward.functions.0.path: /nonexistent/rewards_x.py is not a file here" in out.stdout
    assert f"rlft: job {job} FAILED: Job entrypoint command failed with exit code 2" in out.stderr
    assert "rlft: reward file '/nonexistent/rewards_x.py' not found" in out.stderr  # its last line, repeated
    status = rlft(cluster, "status", job, "--address", cluster.address, cwd=tmp_path)
    assert status.returncode == 0 and "FAILED" in status.stdout and "reward file" in status.stdout, _out(status)
    again = rlft(cluster, "logs", job, "--follow", "--address", cluster.address, cwd=tmp_path)
    assert again.returncode == 1 and "reward file" in again.stdout and f"job {job} FAILED" in again.stderr
    stop = rlft(cluster, "stop", job, "--address", cluster.address, cwd=tmp_path)
    assert stop.returncode == 0 and f"rlft: job {job} already ended: FAILED" in stop.stdout, _out(stop)


def test_ctrl_c_leaves_the_job_running_and_rlft_stop_stops_it(cluster, tmp_path):
    run_dir = tmp_path / "run"
    job = f"rlft-test-stop-{secrets.token_hex(2)}"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.Popen(
        [RLFT, "submit", *TINY, "stages=[{kind: sft, steps: 100000, batch_size: 8}]", "--address", cluster.address,
         "--job-id", job, "--run-dir", str(run_dir), "--stop-grace", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        env={**environ, "RAY_AUTH_TOKEN": cluster.token},
    )
    metrics, deadline = run_dir / "metrics.jsonl", time.time() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "the job did not start training in time"
        time.sleep(1)
    proc.send_signal(signal.SIGINT)
    try:
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, output[-3000:]
    assert f"job {job} keeps running" in output and f"rlft stop {job} --address {cluster.address}" in output
    status = rlft(cluster, "status", job, "--address", cluster.address, cwd=tmp_path)
    assert "RUNNING" in status.stdout, _out(status)

    stop = rlft(cluster, "stop", job, "--address", cluster.address, cwd=tmp_path)
    assert stop.returncode == 0 and f"rlft: job {job} STOPPED" in stop.stdout, _out(stop)
    logs = rlft(cluster, "logs", job, "--address", cluster.address, cwd=tmp_path).stdout
    assert "stopping after the current step" in logs  # SIGTERM reached the run, which checkpointed
    from rlft.checkpointing import latest_checkpoint

    assert latest_checkpoint(run_dir / "checkpoints") is not None, logs[-3000:]


def test_the_cluster_is_checked_before_anything_is_submitted(cluster, tmp_path):
    too_big = rlft(cluster, "submit", *TINY, "rollout.num_workers=40", "--address", cluster.address, cwd=tmp_path)
    assert too_big.returncode == 2 and "the cluster cannot hold this run" in too_big.stderr, _out(too_big)
    assert "rollout" in too_big.stderr and "--force" in too_big.stderr

    no_token = rlft(cluster, "list", "--address", cluster.address, cwd=tmp_path, token=None)
    assert no_token.returncode == 2, _out(no_token)
    assert "requires an authentication token and none was sent: set RAY_AUTH_TOKEN" in no_token.stderr
    wrong = rlft(cluster, "list", "--address", cluster.address, cwd=tmp_path, token="0" * 32)
    assert wrong.returncode == 2 and "rejected the authentication token from RAY_AUTH_TOKEN" in wrong.stderr

    dead = f"http://127.0.0.1:{_free_port()}"
    down = rlft(cluster, "status", "some-job", "--address", dead, cwd=tmp_path)
    assert down.returncode == 2, _out(down)
    assert f"cannot reach the Ray job server at {dead}: connection refused" in down.stderr
    assert "Traceback" not in down.stderr + no_token.stderr + too_big.stderr
    unknown = rlft(cluster, "status", "no-such-job", "--address", cluster.address, cwd=tmp_path)
    assert unknown.returncode == 2 and "no job 'no-such-job'" in unknown.stderr, _out(unknown)
