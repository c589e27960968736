"""``rlft submit / status / logs / stop / list``: runs as Ray Jobs on a cluster.

``rlft submit`` packages what a run needs from this machine and submits ``rlft train`` through Ray's
Job Submission SDK (``ray.job_submission.JobSubmissionClient``) to the cluster's job server (the
dashboard, ``http://HEAD:8265``)::

    rlft submit my.yaml learner.lr=3e-6 --address http://head:8265 --working-dir . --pip my-verifier

The job's ``working_dir`` is a staging copy of ``--working-dir`` (ignore files applied as Ray does)
plus ``_rlft_job/config.yaml``: the resolved config, with every file it names that exists here
(reward and plugin ``.py`` files, data files) pointing at its copy in the package. Paths that do not
exist here pass through unchanged (they name files on the cluster), and so do ``builtin:`` values and
the model. Before submitting, the roles' resources from the config are fitted to the cluster's nodes
(``rlft.placement``); ``--force`` skips that (autoscaling clusters).

Every failure to reach the cluster is a one-line error with exit code 2: unreachable address,
missing or wrong authentication token (Ray's token auth: the token is read from ``RAY_AUTH_TOKEN``,
the file ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token`` with ``RAY_AUTH_MODE=token``), a job that
does not exist.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shlex
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from launch.job_entry import LAUNCHER_REL, NO_RLFT, write_launcher
from launch.package import CONFIG_REL, JobError, quiet_ray_loggers, stage
from launch.ray_session import SKIP_CHECK_ENV
from rlft.config import RunConfig

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
TOKEN_FILE = Path("~/.ray/auth_token")
PROBE_TIMEOUT_S = 10.0
DEFAULT_STOP_GRACE_S = 60


# --------------------------------------------------------------------------------------------------
# The job: id, entrypoint, runtime environment


def new_job_id(name: str, now: float | None = None) -> str:
    """``rlft-<name>-<YYYYmmdd-HHMMSS>-<4 hex>``, e.g. ``rlft-grpo-20261122-101500-3fa9``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "run"
    return f"rlft-{safe}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{secrets.token_hex(2)}"


def job_id_arg(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text):
        raise argparse.ArgumentTypeError(f"{text!r}: a job id is letters, digits, '_', '.' and '-'")
    return text


def shell_path(path: str) -> str:
    """``path`` quoted for the entrypoint's shell; a leading ``~/`` or ``$HOME/`` still expands."""
    for prefix in ("~/", "$HOME/"):
        if path.startswith(prefix):
            return '"$HOME"/' + shlex.quote(path[len(prefix):])
    return shlex.quote(path)


def entrypoint(run_dir: str) -> str:
    """The shipped launcher (``launch/job_entry.py``) runs ``python -u -m launch.cli train`` under a
    Python that has rlft: the job's own ``python`` (a ``pip`` runtime env puts its virtualenv first
    on ``PATH``), else the one running Ray on the node, whatever the head's shell had on ``PATH``."""
    return f"sh {LAUNCHER_REL} train {CONFIG_REL} --run-dir {shell_path(run_dir)}"


def env_arg(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key, value


def pip_packages(specs: list[str]) -> list[str]:
    """``--pip`` values; one naming a local requirements file (``*.txt``) adds its lines."""
    out = []
    for spec in specs:
        path = Path(spec).expanduser()
        if spec.endswith(".txt") and path.is_file():
            lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
            out.extend(line for line in lines if line)
        else:
            out.append(spec)
    return out


def runtime_env(root: Path, pip: list[str], env: list[tuple[str, str]], stop_grace_s: int,
                force: bool = False) -> dict[str, Any]:
    # The job supervisor reads RAY_JOB_STOP_WAIT_TIME_S from its runtime env: the time between the
    # SIGTERM of `rlft stop` (the run checkpoints its current step) and the SIGKILL.
    env_vars = {"RAY_JOB_STOP_WAIT_TIME_S": str(stop_grace_s), **dict(env)}
    if force:  # --force: the run inside the job does not check the placement either (autoscaling)
        env_vars.setdefault(SKIP_CHECK_ENV, "1")
    out: dict[str, Any] = {"working_dir": str(root), "env_vars": env_vars}
    if pip:
        out["pip"] = pip_packages(pip)
    return out


# --------------------------------------------------------------------------------------------------
# The cluster: address, authentication, connection, nodes


def resolve_address(given: str | None) -> str:
    """``--address``, else ``RAY_API_SERVER_ADDRESS``, else ``RAY_ADDRESS``: the job server's URL
    (``http://HEAD:8265``); other Ray addresses (``auto``, ``ray://...``) are resolved by Ray."""
    address = given or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise JobError("no cluster address: give --address http://HEAD:8265 (the dashboard's job server) "
                       "or set RAY_ADDRESS")
    if address.startswith(("http://", "https://")):
        return address.rstrip("/")
    try:
        with _ray_address_env(None):
            from ray.dashboard.utils import get_address_for_submission_client

            return get_address_for_submission_client(address).rstrip("/")
    except Exception as err:
        raise JobError(f"cannot find the job server of Ray address {address!r} ({err}); give its URL, "
                       "e.g. --address http://HEAD:8265") from None


def auth_token() -> tuple[str, str] | None:
    """The authentication token to send and where it came from: ``RAY_AUTH_TOKEN``, the file named
    by ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token`` when ``RAY_AUTH_MODE=token`` (Ray's own
    clients send the default file only in token mode; a token set explicitly is always sent)."""
    if token := os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return token, "RAY_AUTH_TOKEN"
    if path := os.environ.get("RAY_AUTH_TOKEN_PATH"):
        file = Path(path).expanduser()
        if not file.is_file():
            raise JobError(f"RAY_AUTH_TOKEN_PATH={path}: no such file")
        return file.read_text().strip(), f"RAY_AUTH_TOKEN_PATH ({file})"
    file = TOKEN_FILE.expanduser()
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" and file.is_file():
        return file.read_text().strip(), str(file)
    return None


def auth_headers() -> dict[str, str]:
    found = auth_token()
    return {"Authorization": f"Bearer {found[0]}"} if found else {}


def probe(address: str, headers: dict[str, str], timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """GET ``/api/version`` with a time limit (Ray's client has none); the cluster's Ray version,
    or a ``JobError`` that says why the job server cannot be used."""
    import requests

    where = f"the Ray job server at {address}"
    hint = ("is the cluster up (`ray status` on the head node) and the dashboard's port (8265 by "
            "default, `ray start --head --dashboard-port`) reachable from here?")
    try:
        r = requests.get(f"{address}/api/version", headers=headers, timeout=timeout_s)
    except requests.exceptions.Timeout:
        raise JobError(f"cannot reach {where}: no answer within {timeout_s:g} s; {hint}") from None
    except requests.exceptions.ConnectionError as err:
        text = str(err)
        reason = ("connection refused" if "Connection refused" in text else "the host name does not resolve"
                  if "NameResolution" in text or "Name or service not known" in text else text.splitlines()[0][:200])
        raise JobError(f"cannot reach {where}: {reason}; {hint}") from None
    if r.status_code == 401:
        raise JobError(_missing_token_message(address))
    if r.status_code == 403:
        source = (auth_token() or ("", "?"))[1]
        raise JobError(f"{where} rejected the authentication token from {source}: it is not this "
                       "cluster's token (`ray get-auth-token` on the head node prints it)")
    try:
        return str(r.json()["ray_version"])
    except (ValueError, KeyError, TypeError):
        raise JobError(f"{address} answered HTTP {r.status_code} but is not a Ray job server; give the "
                       "dashboard's URL, e.g. --address http://HEAD:8265") from None


def _missing_token_message(address: str) -> str:
    msg = (f"the Ray cluster at {address} requires an authentication token and none was sent: set "
           "RAY_AUTH_TOKEN to the cluster's token (`ray get-auth-token` on the head node prints it), or "
           "RAY_AUTH_TOKEN_PATH to a file holding it")
    if TOKEN_FILE.expanduser().is_file():
        msg += f"; {TOKEN_FILE} exists here: RAY_AUTH_MODE=token sends it"
    return msg


@contextmanager
def _ray_address_env(address: str | None) -> Iterator[None]:
    """Ray's clients let RAY_API_SERVER_ADDRESS / RAY_ADDRESS override the address they are given:
    pin it (``--address`` wins) while one is built."""
    keys = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
    saved = {k: os.environ.pop(k) for k in keys if k in os.environ}
    if address:
        os.environ["RAY_API_SERVER_ADDRESS"] = address
    try:
        yield
    finally:
        os.environ.pop("RAY_API_SERVER_ADDRESS", None)
        os.environ.update(saved)


def connect(given: str | None) -> Any:
    """A ``JobSubmissionClient`` for the cluster (address from ``--address`` or the environment),
    after a probe that turns every way of not reaching it into a ``JobError``."""
    address = resolve_address(given)
    headers = auth_headers()
    probe(address, headers)
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    quiet_ray_loggers()
    try:
        with _ray_address_env(address):
            return JobSubmissionClient(address, headers=headers)
    except AuthenticationError:
        raise JobError(_missing_token_message(address)) from None
    except (ConnectionError, RuntimeError) as err:
        raise JobError(f"the Ray job server at {address}: {err}") from None


def cluster_nodes(address: str | None = None, attempts: int = 10) -> list[Any]:
    """The alive nodes of the cluster at ``address`` (default: from the environment, as
    ``resolve_address``) with their total resources, as ``rlft.placement.Node``s; read from the job
    server's state API (just after the head starts it may list none yet: an empty answer is asked
    again)."""
    import requests

    from rlft.placement import Node

    address = resolve_address(address)
    headers = auth_headers()
    probe(address, headers)
    for _ in range(attempts):
        r = requests.get(f"{address}/api/v0/nodes", params={"detail": "1", "limit": "10000"}, headers=headers,
                         timeout=PROBE_TIMEOUT_S)
        if r.status_code != 200:
            raise JobError(f"listing the nodes of the cluster at {address} failed: HTTP {r.status_code} {r.text[:300]}")
        rows = r.json()["data"]["result"]["result"]
        nodes = [Node(n["node_id"], n["node_ip"], dict(n["resources_total"])) for n in rows if n["state"] == "ALIVE"]
        if nodes:
            return nodes
        time.sleep(0.5)
    raise JobError(f"the cluster at {address} lists no alive node")


def preflight(cfg: RunConfig, nodes: list[Any]) -> str:
    """The run's placement on ``nodes`` as a table, or a ``JobError`` naming the role that does not fit."""
    from rlft.placement import PlacementError, fit, format_plan, plan_run

    plan = plan_run(cfg)
    try:
        placement = fit(plan, nodes)
    except PlacementError as err:
        raise JobError(f"the cluster cannot hold this run: {err} (--force submits anyway, e.g. to an "
                       "autoscaling cluster)") from None
    return format_plan(plan, placement, nodes)


# --------------------------------------------------------------------------------------------------
# Following a job


def job_info(client: Any, job_id: str) -> Any:
    try:
        return client.get_job_info(job_id)
    except RuntimeError as err:
        if "404" in str(err) or "does not exist" in str(err):
            raise JobError(f"no job {job_id!r} on the cluster at {client.get_address()} (`rlft list` shows "
                           "its jobs)") from None
        raise


def wait_terminal(client: Any, job_id: str, timeout_s: float | None = None, every_s: float = 1.0) -> str:
    """The job's status once it is terminal (or the last seen, after ``timeout_s``)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        status = str(job_info(client, job_id).status)
        if status in TERMINAL or (deadline is not None and time.monotonic() >= deadline):
            return status
        time.sleep(every_s)


@contextmanager
def _ctrl_c_raises() -> Iterator[None]:
    """Ctrl-C raises ``KeyboardInterrupt`` inside the block, also under ``asyncio.run``.

    Since Python 3.11 ``asyncio.run`` turns the first Ctrl-C into a cancellation of its task, and
    the job server's websocket client can absorb that cancellation and simply end its log stream:
    ``follow`` would then go on waiting for the job to finish instead of detaching. A handler of
    our own keeps asyncio from installing its handler (it only replaces Python's default one)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def follow(client: Any, job_id: str, out: Any = sys.stdout) -> str:
    """Stream the job's log until it ends; its final status. The job server's websocket tail is
    used; if it breaks, the log is polled (printing what is new)."""
    printed = 0

    async def tail() -> None:
        nonlocal printed
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()
            printed += len(chunk)

    try:
        with _ctrl_c_raises():
            asyncio.run(tail())
    except Exception as err:  # the websocket broke (proxy, network): the job goes on
        print(f"rlft: log stream interrupted ({type(err).__name__}: {err}); polling the log", file=sys.stderr)
        while True:
            status = str(job_info(client, job_id).status)
            logs = client.get_job_logs(job_id)
            out.write(logs[printed:])
            out.flush()
            printed = len(logs)
            if status in TERMINAL:
                break
            time.sleep(2.0)
    return wait_terminal(client, job_id)


def ray_message(info: Any) -> str:
    """Ray's message about a job, without the copy of the log it appends to failures."""
    msg = (info.message or "").strip()
    cut = msg.find(", last available logs")
    return msg[:cut] if cut >= 0 else "\n".join(msg.splitlines()[:30])


def last_lines(logs: str, n: int) -> list[str]:
    return [line for line in logs.splitlines() if line.strip()][-n:]


def report_end(client: Any, job_id: str, status: str) -> int:
    """Say how a followed job ended (Ray's message and the log's last line, which for rlft's own
    errors is the ``rlft: ...`` line); the exit code: 0 succeeded, 1 failed or stopped, 2 when the
    cluster's Python has no rlft to run (the launcher's message says how to fix that)."""
    info = job_info(client, job_id)
    if status == "SUCCEEDED":
        print(f"rlft: job {job_id} SUCCEEDED; run directory (on the cluster): {_run_dir(info)}")
        return 0
    print(f"rlft: job {job_id} {status}: {ray_message(info) or '-'}", file=sys.stderr)
    last = last_lines(client.get_job_logs(job_id), 1)
    for line in last:
        print(f"rlft: its last log line:\n  | {line}", file=sys.stderr)
    return 2 if last and last[0].startswith(NO_RLFT) else 1


def follow_or_detach(client: Any, job_id: str) -> int:
    """Follow the job to its end (its exit code); Ctrl-C leaves it running and says how to get back."""
    address = client.get_address()
    try:
        return report_end(client, job_id, follow(client, job_id))
    except KeyboardInterrupt:
        print(f"\nrlft: stopped following; job {job_id} keeps running on the cluster.\n"
              f"rlft: follow it: rlft logs {job_id} --follow --address {address}\n"
              f"rlft: stop it:   rlft stop {job_id} --address {address}", file=sys.stderr)
        return 130


def _run_dir(info: Any) -> str:
    return (info.metadata or {}).get("rlft_run_dir", "-")


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


# --------------------------------------------------------------------------------------------------
# Commands


def cmd_submit(args: argparse.Namespace) -> int:
    from launch.config_args import _load

    config, cfg = _load(args)
    job_id = args.job_id or new_job_id(cfg.name)
    run_dir = args.run_dir or f"$HOME/rlft-runs/{job_id}"
    with tempfile.TemporaryDirectory(prefix="rlft-job-") as tmp:
        staged = stage(cfg, Path(tmp), Path(args.working_dir) if args.working_dir else None)
        write_launcher(staged.root)
        if args.working_dir:
            print(f"rlft: working directory {Path(args.working_dir).resolve()}: {staged.shipped[0]} files, "
                  f"{staged.shipped[1] / 2**20:.1f} MiB")
        for local, packaged in staged.copied:
            print(f"rlft: packaged {local} as {packaged}")
        for note in staged.notes:
            print(f"rlft: note: {note}")
        client = connect(args.address)
        if args.force:
            print("rlft: --force: the resource check is skipped")
        else:
            nodes = cluster_nodes(client.get_address())
            print(f"rlft: the run on the cluster's {len(nodes)} alive node(s):\n{preflight(cfg, nodes)}")
        env = runtime_env(staged.root, args.pip, args.env, args.stop_grace, force=args.force)
        metadata = {"rlft_run_dir": run_dir, "rlft_config": str(config or "embedded demo"), "rlft_name": cfg.name}
        try:
            client.submit_job(entrypoint=entrypoint(run_dir), submission_id=job_id, runtime_env=env, metadata=metadata)
        except RuntimeError as err:
            raise JobError(f"submitting the job failed: {err}") from None
    address = client.get_address()
    print(f"rlft: submitted job {job_id}\nrlft: dashboard {address}/#/jobs/{job_id}\n"
          f"rlft: run directory (on the node running the job's driver): {run_dir}", flush=True)
    if args.no_wait:
        print(f"rlft: follow it with: rlft logs {job_id} --follow --address {address}")
        return 0
    return follow_or_detach(client, job_id)


def cmd_status(args: argparse.Namespace) -> int:
    client = connect(args.address)
    info = job_info(client, args.job_id)
    for key, value in [
        ("job", args.job_id), ("status", info.status), ("message", ray_message(info) or "-"),
        ("start time", _when(info.start_time)), ("end time", _when(info.end_time)),
        ("entrypoint", info.entrypoint), ("run dir", _run_dir(info)),
        ("dashboard", f"{client.get_address()}/#/jobs/{args.job_id}"),
    ]:
        print(f"{key + ':':<12} {value}")
    if str(info.status) == "FAILED":
        print("end of log:", *(f"  | {line}" for line in last_lines(client.get_job_logs(args.job_id), 15)), sep="\n")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    client = connect(args.address)
    job_info(client, args.job_id)  # a clear error for an unknown job
    if args.follow:
        return follow_or_detach(client, args.job_id)
    sys.stdout.write(client.get_job_logs(args.job_id))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    client = connect(args.address)
    status = str(job_info(client, args.job_id).status)
    if status in TERMINAL:
        print(f"rlft: job {args.job_id} already ended: {status}")
        return 0
    client.stop_job(args.job_id)
    print(f"rlft: stopping job {args.job_id} (SIGTERM: the run checkpoints its current step; it is killed "
          "after the grace period it was submitted with)", flush=True)
    status = wait_terminal(client, args.job_id, timeout_s=args.timeout)
    if status not in TERMINAL:
        print(f"rlft: job {args.job_id} is still {status} after {args.timeout:g} s", file=sys.stderr)
        return 1
    print(f"rlft: job {args.job_id} {status}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    client = connect(args.address)
    found = sorted((j for j in client.list_jobs() if j.submission_id), key=lambda j: j.start_time or 0, reverse=True)
    if not found:
        print(f"no jobs on the cluster at {client.get_address()}")
        return 0
    width = max(len(j.submission_id) for j in found)
    print(f"{'JOB ID':<{width}}  {'STATUS':<9}  {'START':<19}  ENTRYPOINT")
    for j in found:
        ep = j.entrypoint if len(j.entrypoint) <= 60 else j.entrypoint[:57] + "..."
        print(f"{j.submission_id:<{width}}  {str(j.status):<9}  {_when(j.start_time):<19}  {ep}")
    return 0


def add_job_commands(sub: Any) -> None:
    """Register ``submit``, ``status``, ``logs``, ``stop`` and ``list`` on the CLI's subparsers."""
    from launch.config_args import _config_args

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str, description: str,
                job_id: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=description)
        if job_id:
            p.add_argument("job_id", help="the job id `rlft submit` printed")
        p.add_argument("--address", help="the cluster's job server, http://HEAD:8265 (default: "
                       "RAY_API_SERVER_ADDRESS, else RAY_ADDRESS)")
        p.set_defaults(func=func)
        return p

    submit = command(
        "submit", cmd_submit, job_id=False,
        help="run `rlft train` as a Ray Job on a cluster, with the config, reward files and packages it needs",
        description="Submit CONFIG (default: the embedded demo) as a Ray Job. Packaged with it: a copy of "
        "--working-dir, the resolved config, and every file the config names that exists here (reward and "
        "plugin files, data); other paths are taken as paths on the cluster. The roles' resources are checked "
        "against the cluster's nodes first. Prints the job id, dashboard URL and run directory, then follows "
        "the job's log; exits 0 when it succeeds, 1 when it fails or is stopped, 2 when it cannot be submitted.",
    )
    _config_args(submit)
    submit.add_argument("--working-dir", help="a directory shipped as the job's working directory (its "
                        ".gitignore/.rayignore apply); the job's Python path starts there")
    submit.add_argument("--pip", action="append", default=[], metavar="PKG",
                        help="a pip package (or a local requirements .txt file) installed for the job; repeatable")
    submit.add_argument("--env", action="append", default=[], type=env_arg, metavar="KEY=VAL",
                        help="an environment variable of the job's processes; repeatable")
    submit.add_argument("--job-id", type=job_id_arg, help="the job's id (default: rlft-<name>-<time>-<4 hex>)")
    submit.add_argument("--run-dir", help="run directory on the cluster (default: $HOME/rlft-runs/<job id> on "
                        "the node running the job's driver)")
    submit.add_argument("--no-wait", action="store_true", help="submit and return; do not follow the log")
    submit.add_argument("--force", action="store_true", help="skip the resource check (autoscaling clusters)")
    submit.add_argument("--stop-grace", type=int, default=DEFAULT_STOP_GRACE_S, metavar="S",
                        help="seconds `rlft stop` gives the run to checkpoint before it is killed (default 60)")
    command("status", cmd_status, help="a job's status, message, times and entrypoint",
            description="Print a submitted job's status, Ray's message, start and end times, entrypoint and "
            "run directory (and the end of its log when it failed).")
    logs = command("logs", cmd_logs, help="a job's log (--follow: until it ends)",
                   description="Print a job's log; with --follow, stream it until the job ends and exit like "
                   "`rlft submit` (0 succeeded, 1 failed or stopped).")
    logs.add_argument("-f", "--follow", action="store_true", help="stream the log until the job ends")
    stop = command("stop", cmd_stop, help="stop a job and wait until it has stopped",
                   description="Stop a job: its run gets SIGTERM (it checkpoints the current step) and is killed "
                   "after its grace period (`rlft submit --stop-grace`). Waits until the job has stopped.")
    stop.add_argument("--timeout", type=float, default=DEFAULT_STOP_GRACE_S + 60.0, metavar="S",
                      help="seconds to wait for the job to stop (default 120)")
    command("list", cmd_list, job_id=False, help="the cluster's jobs, newest first",
            description="A table of the cluster's submitted jobs: id, status, start time, entrypoint.")
