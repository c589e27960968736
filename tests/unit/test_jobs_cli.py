"""``rlft submit`` and friends without a cluster: packaging and path rewriting, job ids, the
entrypoint's shell quoting, arguments, tokens, addresses, and the errors a user sees."""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from launch import jobs, package
from launch.cli import build_parser, main
from launch.jobs import JobError, stage
from rlft.config import load_config
from rlft.placement import Node

REWARD = "def score(prompt, completion, *, answer):\n    return float(completion == answer)\n"


def _staged_config(root: Path) -> dict:
    return yaml.safe_load((root / "_rlft_job" / "config.yaml").read_text())


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A user's project: a reward file, data, ignore files and clutter; the user runs from it."""
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / "my_rewards.py").write_text(REWARD)
    (proj / "data" / "train.jsonl").write_text('{"prompt": "1+1=", "answer": "2"}\n')
    for junk in (".git/HEAD", "__pycache__/x.cpython-311.pyc", ".venv/bin/python", "runs/old/metrics.jsonl",
                 "pkg/__pycache__/y.pyc", "stray.pyc", "secret.env", "big/blob.bin", "keep/.rayignore"):
        (proj / junk).parent.mkdir(parents=True, exist_ok=True)
        (proj / junk).write_text("x")
    (proj / ".gitignore").write_text("*.env\n")
    (proj / ".rayignore").write_text("big/\n")
    (proj / "pkg" / "__init__.py").write_text("")
    monkeypatch.chdir(proj)
    return proj


def test_the_working_dir_is_copied_as_ray_would_upload_it_without_clutter(project, tmp_path):
    cfg = load_config(overrides=["reward.functions=[{path: ./my_rewards.py:score}]"])
    root = tmp_path / "stage"
    staged = stage(cfg, root, project)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["_rlft_job/config.yaml", "data/train.jsonl", "my_rewards.py", "pkg/__init__.py"]
    shipped = ["data/train.jsonl", "my_rewards.py", "pkg/__init__.py"]
    assert staged.shipped == (3, sum((project / f).stat().st_size for f in shipped))
    # the reward file keeps its place in the working directory; the config points there relatively
    assert _staged_config(root)["reward"]["functions"][0]["path"] == "../my_rewards.py:score"
    assert staged.copied == [] and staged.notes == []


def test_files_outside_the_working_dir_are_packaged_and_the_config_reloads_on_the_cluster(
    project, tmp_path, monkeypatch
):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "a").mkdir(parents=True)
    (elsewhere / "a" / "my_rewards.py").write_text(REWARD)  # same name as the project's
    (elsewhere / "plugin_mod.py").write_text("VALUE = 1\n")
    (elsewhere / "heldout.jsonl").write_text('{"prompt": "2+2=", "answer": "4"}\n')
    (elsewhere / "train.jsonl").write_text('{"prompt": "3+3=", "answer": "6"}\n')
    cfg = load_config(overrides=[
        f"reward.functions=[{{path: ./my_rewards.py:score}}, {{path: {elsewhere}/a/my_rewards.py:score, label: b}}, "
        "{path: /cluster/shared/verify.py:check, label: c}, {name: exact_match}]",
        f"plugins=[{elsewhere}/plugin_mod.py, json]",
        "data.train_path=data/train.jsonl",
        f"data.eval_path={elsewhere}/heldout.jsonl",
        f"data.sources=[{{path: {elsewhere}/train.jsonl}}, {{path: builtin:arithmetic}}, {{path: /cluster/d.parquet}}]",
        "model.path=/cluster/models/qwen",
        "cluster.address=ray://head:10001",
    ])
    root = tmp_path / "stage"
    staged = stage(cfg, root)  # no working directory: every local file is packaged
    data = _staged_config(root)
    assert [f.get("path") for f in data["reward"]["functions"]] == [
        "files/my_rewards.py:score", "files/2/my_rewards.py:score", "/cluster/shared/verify.py:check", None]
    assert data["plugins"] == ["files/plugin_mod.py", "json"]
    assert data["data"]["train_path"] == "_rlft_job/files/train.jsonl"
    assert data["data"]["eval_path"] == "_rlft_job/files/heldout.jsonl"
    # the project's train.jsonl took the name first: the source's copy keeps its name (its label) in 2/
    assert [s["path"] for s in data["data"]["sources"]] == [
        "_rlft_job/files/2/train.jsonl", "builtin:arithmetic", "/cluster/d.parquet"]
    assert data["model"]["path"] == "/cluster/models/qwen" and data["cluster"]["address"] is None
    assert {p for _, p in staged.copied} == {
        "_rlft_job/files/my_rewards.py", "_rlft_job/files/2/my_rewards.py", "_rlft_job/files/plugin_mod.py",
        "_rlft_job/files/train.jsonl", "_rlft_job/files/heldout.jsonl", "_rlft_job/files/2/train.jsonl"}
    assert any("reward.functions.2.path: /cluster/shared/verify.py is not a file here" in n for n in staged.notes)
    assert any("data.sources.2.path: /cluster/d.parquet" in n for n in staged.notes)
    assert any("cluster.address 'ray://head:10001' dropped" in n for n in staged.notes)

    # on the cluster: the job runs in the package, the config resolves against its own directory
    monkeypatch.chdir(root)
    loaded = load_config("_rlft_job/config.yaml")
    paths = [f.path for f in loaded.reward.functions[:2]]
    files = root / "_rlft_job" / "files"
    assert paths == [f"{files / 'my_rewards.py'}:score", f"{files / '2' / 'my_rewards.py'}:score"]
    assert loaded.plugins[0] == str(root / "_rlft_job/files/plugin_mod.py")
    assert Path(loaded.data.train_path).read_text() == (project / "data" / "train.jsonl").read_text()
    assert [s.label for s in loaded.data.sources] == ["train", "arithmetic", "d"]


def test_a_referenced_file_the_ignore_files_drop_is_packaged_anyway(project, tmp_path):
    (project / "held.env").write_text('{"prompt": "1+2=", "answer": "3"}\n')  # *.env is gitignored
    cfg = load_config(overrides=["data.eval_path=held.env"])
    staged = stage(cfg, tmp_path / "stage", project)
    assert _staged_config(staged.root)["data"]["eval_path"] == "_rlft_job/files/held.env"
    assert not (staged.root / "held.env").exists()


@pytest.mark.parametrize("name", ["rewards.py", "rlft", "launch", "actors.py"])
def test_a_working_dir_that_would_hide_an_rlft_package_is_refused(tmp_path, name):
    target = tmp_path / name
    target.mkdir() if "." not in name else target.write_text("")
    with pytest.raises(JobError, match=rf"holds '{re.escape(name)}', which would hide rlft's package .*rename it"):
        stage(load_config(), tmp_path / "stage", tmp_path)


def test_the_rlft_checkout_itself_may_be_shipped():
    import rlft

    package.check_shadowing(Path(rlft.__file__).resolve().parent.parent)


def test_a_missing_working_dir_fails_before_anything_is_sent(tmp_path, capsys):
    code = main(["submit", "--working-dir", str(tmp_path / "nope"), "--address", "http://127.0.0.1:9"])
    assert code == 2 and f"rlft: working directory {tmp_path / 'nope'} not found" in capsys.readouterr().err


def test_a_bad_config_fails_like_rlft_check(capsys):
    assert main(["submit", "learner.lrr=1e-6", "--address", "http://127.0.0.1:9"]) == 2
    assert "learner.lrr: unknown key (did you mean 'lr'?)" in capsys.readouterr().err


def test_job_ids_name_the_run_and_the_time():
    job = jobs.new_job_id("my run/v2", now=1795342146)
    assert re.fullmatch(r"rlft-my-run-v2-\d{8}-\d{6}-[0-9a-f]{4}", job)
    assert jobs.new_job_id("///").startswith("rlft-run-")
    assert jobs.new_job_id("x") != jobs.new_job_id("x")


@pytest.mark.parametrize("run_dir, expected", [
    ("$HOME/rlft-runs/job-1", "/home/u/rlft-runs/job-1"),
    ("~/my runs/a", "/home/u/my runs/a"),
    ("/data/runs/$x;rm -rf y", "/data/runs/$x;rm -rf y"),
])
def test_the_run_dir_reaches_the_entrypoints_shell_intact(run_dir, expected):
    entry = jobs.entrypoint(run_dir)
    assert entry.startswith("sh _rlft_job/run.sh train _rlft_job/config.yaml --run-dir ")
    arg = entry.split("--run-dir ", 1)[1]
    out = subprocess.run(["sh", "-c", f"printf %s {arg}"], capture_output=True, text=True, env={"HOME": "/home/u"})
    assert out.stdout == expected


def test_arguments_of_submit_and_the_other_commands():
    args = build_parser().parse_args([
        "submit", "exp.yaml", "learner.lr=3e-6", "--address", "http://head:8265", "--working-dir", ".",
        "--pip", "sympy==1.13", "--pip", "requirements.txt", "--env", "A=1", "--env", "B=x=y", "--no-wait",
        "--job-id", "exp-1", "--run-dir", "/runs/exp-1", "--force",
    ])
    assert (args.config, args.overrides, args.address, args.working_dir) == ("exp.yaml", ["learner.lr=3e-6"],
                                                                              "http://head:8265", ".")
    assert args.pip == ["sympy==1.13", "requirements.txt"] and args.env == [("A", "1"), ("B", "x=y")]
    assert args.no_wait and args.force and args.job_id == "exp-1" and args.stop_grace == 60
    assert build_parser().parse_args(["logs", "j", "-f"]).follow
    assert build_parser().parse_args(["stop", "j", "--timeout", "5"]).timeout == 5
    assert build_parser().parse_args(["list", "--address", "http://h:8265"]).address == "http://h:8265"


@pytest.mark.parametrize("argv", [["submit", "--env", "NOVALUE"], ["submit", "--env", "1X=2"],
                                  ["submit", "--job-id", "bad id"], ["status"]])
def test_bad_arguments_exit_2_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2 and "usage: rlft" in capsys.readouterr().err


def test_runtime_env_carries_the_package_pip_and_env(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("# pinned\nsympy==1.13  # for the verifier\n\nregex\n")
    env_vars = [("WANDB_MODE", "offline"), ("RAY_JOB_STOP_WAIT_TIME_S", "5")]  # --env wins
    env = jobs.runtime_env(tmp_path, ["numpy<3", str(req)], env_vars, 60)
    assert env == {"working_dir": str(tmp_path), "pip": ["numpy<3", "sympy==1.13", "regex"],
                   "env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "5", "WANDB_MODE": "offline"}}
    assert "pip" not in jobs.runtime_env(tmp_path, [], [], 60)


def test_the_token_comes_from_the_environment_then_its_file_then_token_mode(tmp_path, monkeypatch):
    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert jobs.auth_token() is None and jobs.auth_headers() == {}
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert jobs.auth_token() is None  # Ray's clients send the default file only in token mode
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert jobs.auth_token() == ("from-home", str(tmp_path / ".ray" / "auth_token"))
    (tmp_path / "tok").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert jobs.auth_token()[0] == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert jobs.auth_headers() == {"Authorization": "Bearer from-env"}
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(JobError, match="RAY_AUTH_TOKEN_PATH=.*missing: no such file"):
        jobs.auth_token()


def test_the_address_comes_from_the_flag_then_the_environment(monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(JobError, match="no cluster address: give --address http://HEAD:8265"):
        jobs.resolve_address(None)
    monkeypatch.setenv("RAY_ADDRESS", "http://a:8265/")
    assert jobs.resolve_address(None) == "http://a:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://b:8265")
    assert jobs.resolve_address(None) == "http://b:8265"
    assert jobs.resolve_address("https://c:443") == "https://c:443"
    with jobs._ray_address_env("http://d:1"):  # Ray's clients read these over their argument
        assert os.environ["RAY_API_SERVER_ADDRESS"] == "http://d:1" and "RAY_ADDRESS" not in os.environ
    assert os.environ["RAY_API_SERVER_ADDRESS"] == "http://b:8265" and os.environ["RAY_ADDRESS"] == "http://a:8265/"


class _Server:
    """A local HTTP server answering every GET with one status and body."""

    def __init__(self, status: int, body: str):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(status)
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("status, body, message", [
    (401, "Unauthorized: Missing authentication token",
     "requires an authentication token and none was sent: set RAY_AUTH_TOKEN to the cluster's token"),
    (403, "Forbidden: Invalid authentication token",
     "rejected the authentication token from RAY_AUTH_TOKEN: it is not this cluster's token"),
    (200, "<html>hello</html>", "answered HTTP 200 but is not a Ray job server; give the dashboard's URL"),
])
def test_what_the_job_server_answers_becomes_a_readable_error(status, body, message, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t")
    server = _Server(status, body)
    try:
        with pytest.raises(JobError, match=re.escape(message)):
            jobs.probe(server.address, {})
    finally:
        server.close()


def test_the_missing_token_error_points_at_a_local_token_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("t")
    assert "~/.ray/auth_token exists here: RAY_AUTH_MODE=token sends it" in jobs._missing_token_message("http://h")


def test_a_ray_version_answer_passes_the_probe():
    server = _Server(200, json.dumps({"ray_version": "2.60.0"}))
    try:
        assert jobs.probe(server.address, {}) == "2.60.0"
    finally:
        server.close()


def test_an_unreachable_or_silent_cluster_is_one_line_without_a_traceback(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    assert main(["status", "some-job", "--address", dead]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rlft: cannot reach the Ray job server at {dead}: connection refused; is the cluster up")
    assert "`ray status`" in err and "8265" in err and "Traceback" not in err
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with pytest.raises(JobError, match=r"no answer within 0.3 s"):
            jobs.probe(f"http://127.0.0.1:{silent.getsockname()[1]}", {}, timeout_s=0.3)


def test_the_resource_check_names_what_does_not_fit():
    cfg = load_config(overrides=["rollout.num_workers=8"])
    with pytest.raises(JobError, match=r"the cluster cannot hold this run: .*rollout.*--force submits anyway"):
        jobs.preflight(cfg, [Node("n1", "10.0.0.1", {"CPU": 4})])
    table = jobs.preflight(load_config(), [Node("n1", "10.0.0.1", {"CPU": 4})])
    assert "rollout" in table and "reward" in table and "10.0.0.1" in table


def test_rays_message_drops_its_copy_of_the_log():
    class Info:
        message = ("Job entrypoint command failed with exit code 2, last available logs (truncated to 20,000 "
                   "chars):\nx\ny")

    assert jobs.ray_message(Info()) == "Job entrypoint command failed with exit code 2"
    assert jobs.last_lines("a\n\nb\nc\n\n", 2) == ["b", "c"]


class _AbsorbingLogServer:
    """A job server whose log stream ends quietly when its task is cancelled (as a websocket client
    may) and whose job never ends: ``follow`` must not wait for it after a Ctrl-C."""

    def __init__(self):
        self.polls = 0

    async def tail_job_logs(self, job_id):
        import asyncio

        try:
            while True:
                yield "step\n"
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            return

    def get_job_info(self, job_id):
        self.polls += 1
        assert self.polls < 3, "follow went on waiting for the job after Ctrl-C"
        return type("Info", (), {"status": "RUNNING"})()


def test_ctrl_c_while_following_detaches_even_when_the_log_stream_absorbs_the_cancellation():
    import io
    import signal

    server = _AbsorbingLogServer()
    # what the process had before (SIG_IGN when the suite was started in the background by a shell)
    before = signal.getsignal(signal.SIGINT)
    timer = threading.Timer(0.3, signal.raise_signal, (signal.SIGINT,))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            jobs.follow(server, "rlft-job", out=io.StringIO())
    finally:
        timer.cancel()
    assert server.polls == 0
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_force_lets_the_run_inside_the_job_skip_its_placement_check_too(tmp_path):
    """``rlft submit --force`` (an autoscaling cluster): ``rlft train`` in the job must not refuse to
    start on the nodes alive at that moment either."""
    assert jobs.runtime_env(tmp_path, [], [], 60, force=True)["env_vars"]["RLFT_SKIP_PLACEMENT_CHECK"] == "1"
    assert "RLFT_SKIP_PLACEMENT_CHECK" not in jobs.runtime_env(tmp_path, [], [], 60)["env_vars"]


def test_overrides_may_follow_the_options_and_anything_else_unknown_is_refused(capsys):
    from launch.cli import parse_cli

    args = parse_cli(["train", "my.yaml", "a.b=1", "--run-dir", "runs/x", "-q", "stages=[{kind: rl, steps: 2}]"])
    assert (args.config, args.overrides, args.run_dir) == ("my.yaml", ["a.b=1", "stages=[{kind: rl, steps: 2}]"], "runs/x")
    for argv in (["train", "my.yaml", "--run-dir", "r", "--nope"], ["train", "my.yaml", "-q", "loose"],
                 ["list", "a.b=1"]):
        with pytest.raises(SystemExit) as exit_:
            parse_cli(argv)
        assert exit_.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
