"""The ``remote`` sandbox backend: against rlft's real sandbox server (a subprocess on a free port,
the ``namespaces`` backend behind it), whose isolation must hold through the service; and against a
scripted SandboxFusion-style service (a thread), for the API's own shapes and the transport faults,
which must raise ``SandboxError`` rather than score the program. Seconds in all."""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rewards.sandbox import (
    Limits,
    SandboxError,
    SandboxResult,
    SandboxUnavailableError,
    jail,
    make_sandbox,
    run_pair,
    run_sandboxed,
)
from rewards.sandbox import server as sandbox_server
from rewards.sandbox.server import Maxima, Unsupported, parse_request

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
PATIENT_S = 60.0  # the deadline where a test is not about deadlines: a busy machine must not fail it
TOKEN_ENV = "RLFT_TEST_SANDBOX_TOKEN"
MAX_MEMORY_MB = 1024  # the server's --max-memory-mb: a request for more is lowered to it


def start_server(*args: str, env: dict[str, str] | None = None, log: Path) -> tuple[subprocess.Popen, str]:
    """``python -m rewards.sandbox.server --port 0 ...`` and the URL on its first stdout line."""
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rewards.sandbox.server", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=err, cwd=REPO, env={**os.environ, **(env or {})},
        )  # fmt: skip
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], PATIENT_S)
    line = proc.stdout.readline().decode() if ready else ""
    match = re.search(r"http://\S+", line)
    if match is None:
        stop(proc)
        pytest.fail(f"the sandbox server did not start: {line!r}, stderr: {log.read_text()[-2000:]}")
    return proc, match.group(0)


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM (the server finishes what runs, then exits), SIGKILL if it does not."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
    finally:
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """rlft's server, requiring a token; yields its URL and the token (also in ``TOKEN_ENV``)."""
    token = secrets.token_hex(16)
    log = tmp_path_factory.mktemp("sandbox-server") / "stderr.log"
    args = ("--token-env", TOKEN_ENV, "--max-memory-mb", str(MAX_MEMORY_MB), "--max-request-bytes", str(2**20))
    proc, url = start_server(*args, env={TOKEN_ENV: token}, log=log)
    os.environ[TOKEN_ENV] = token
    try:
        yield url, token
    finally:
        os.environ.pop(TOKEN_ENV, None)
        assert stop(proc) == 0, log.read_text()[-2000:]


@pytest.fixture(scope="module")
def remote(service):
    url, _ = service
    return make_sandbox("remote", {"url": url, "token_env": TOKEN_ENV})


def run(code: str, backend, **kwargs: Any) -> SandboxResult:
    kwargs.setdefault("timeout_s", PATIENT_S)
    return run_sandboxed(code, backend=backend, **kwargs)


def post(url: str, body: bytes, token: str | None = None, path: str = "/run_code") -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=PATIENT_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# --- through rlft's server: results --------------------------------------------------------------


def test_runs_a_program_and_names_the_services_isolation(remote, service):
    result = run("print(6 * 7)", remote)
    assert (result.status, result.returncode, result.stdout, result.stderr) == ("ok", 0, "42\n", "")
    assert remote.strength == "isolated"
    assert service[0] in remote.describe() and "namespaces" in remote.describe()


def test_stdin_and_unicode_round_trip(remote):
    result = run("import sys; print(sys.stdin.read().upper())", remote, stdin="héllo ✓\n")
    assert result.status == "ok" and result.stdout == "HÉLLO ✓\n\n"


def test_nonzero_exit_and_exception_are_errors(remote):
    assert (run("raise SystemExit(3)", remote).status, run("raise SystemExit(3)", remote).returncode) == ("error", 3)
    result = run("1 / 0", remote)
    assert result.status == "error" and result.returncode == 1 and "ZeroDivisionError" in result.stderr


def test_a_signal_is_killed(remote):
    result = run("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", remote)
    assert (result.status, result.returncode) == ("killed", -signal.SIGKILL)


def test_deadline_is_a_timeout(remote):
    start = time.monotonic()
    result = run("import time\nprint('started', flush=True)\ntime.sleep(60)", remote, timeout_s=0.5)
    assert result.status == "timeout" and result.stdout == "started\n"
    assert time.monotonic() - start < 10


def test_output_cap_is_output_limit(remote):
    result = run("print('x' * 100_000)", remote, max_output_bytes=1000)
    assert result.status == "output_limit" and result.stdout == "x" * 1000
    result = run("import sys; sys.stderr.write('e' * 100_000)", remote, max_output_bytes=1000)
    assert result.status == "output_limit" and result.stderr == "e" * 1000


def test_memory_limit_holds_and_the_servers_maximum_lowers_a_larger_ask(remote):
    grab = "b = bytearray({mb} * 2**20)\nprint('allocated')"
    assert run(grab.format(mb=400), remote, memory_mb=256).status == "error"
    assert run(grab.format(mb=400), remote, memory_mb=1024).status == "ok"
    result = run(grab.format(mb=2 * MAX_MEMORY_MB), remote, memory_mb=8 * MAX_MEMORY_MB)
    assert result.status == "error" and "MemoryError" in result.stderr


def test_programs_run_concurrently(remote):
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: run(f"print({i} * 2)", remote), range(8)))
    assert [r.stdout for r in results] == [f"{i * 2}\n" for i in range(8)]


# --- through rlft's server: isolation holds ------------------------------------------------------


def test_no_network_not_even_the_service_itself(remote, service):
    result = run("import socket; socket.socket()", remote)
    assert result.status == "error" and "PermissionError" in result.stderr
    reach = f"import urllib.request\nurllib.request.urlopen({service[0] + '/health'!r}, timeout=5)"
    assert run(reach, remote).status == "error"


def test_host_files_are_not_visible(remote):
    result = run(f"print(open({__file__!r}).read())", remote)
    assert result.status == "error" and "FileNotFoundError" in result.stderr
    # the server's own /tmp is not the program's: a private tmpfs holds at most its main.py
    result = run(f"import os\nprint(os.path.exists({str(REPO)!r}), set(os.listdir('/tmp')) <= {{'main.py'}})", remote)
    assert result.stdout == "False True\n"


def test_run_pair_is_refused_with_a_reason(remote):
    with pytest.raises(SandboxError, match="cannot connect two programs.*local backend"):
        run_pair("print(1)", "print(2)", backend=remote)


# --- rlft's server: the HTTP API ------------------------------------------------------------------


def test_another_language_is_failed_with_a_message(service):
    url, token = service
    status, reply = post(url, json.dumps({"code": "int main(){}", "language": "cpp"}).encode(), token)
    assert status == 200 and reply["status"] == "Failed" and "python only" in reply["message"]
    assert reply["run_result"] is None
    status, reply = post(url, json.dumps({"code": "", "language": "python", "files": {"a": "b"}}).encode(), token)
    assert status == 200 and reply["status"] == "Failed" and "files" in reply["message"]


def test_sandboxfusion_answer_shape(service):
    url, token = service
    body = {"code": "import sys; print(sys.stdin.read())", "language": "python", "stdin": "hi", "run_timeout": 30}
    status, reply = post(url, json.dumps(body).encode(), token)
    assert status == 200 and reply["status"] == "Success" and reply["compile_result"] is None
    run_result = reply["run_result"]
    assert (run_result["status"], run_result["return_code"], run_result["stdout"]) == ("Finished", 0, "hi\n")
    slow = {**body, "code": "import time; time.sleep(9)", "run_timeout": 0.3}
    status, reply = post(url, json.dumps(slow).encode(), token)
    assert (reply["status"], reply["run_result"]["status"]) == ("Failed", "TimeLimitExceeded")


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"language": "python"}).encode(), "'code'"),
        (json.dumps({"code": "", "language": "python", "run_timeout": -1}).encode(), "run_timeout"),
        (json.dumps({"code": "", "language": "python", "run_timeout": True}).encode(), "run_timeout"),
        (json.dumps({"code": "", "language": "python", "rlft_limits": {"disk_mb": "big"}}).encode(), "disk_mb"),
    ],
    ids=["not-json", "not-object", "no-code", "negative-timeout", "bool-timeout", "bad-limit"],
)
def test_malformed_requests_are_400(service, body, message):
    url, token = service
    status, reply = post(url, body, token)
    assert status == 400 and message in reply["message"]


def test_token_size_and_path_are_checked(service):
    url, token = service
    body = json.dumps({"code": "print(1)", "language": "python"}).encode()
    assert post(url, body)[0] == 401
    assert post(url, body, "wrong")[0] == 401
    assert post(url, body, token, path="/nope")[0] == 404
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=PATIENT_S)
    try:  # a declared length over --max-request-bytes is refused before the body is read
        conn.putrequest("POST", "/run_code")
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Content-Length", str(10**9))
        conn.endheaders()
        assert conn.getresponse().status == 413
    finally:
        conn.close()


def test_health_and_ping_need_no_token(service):
    url, _ = service
    with urllib.request.urlopen(url + "/health", timeout=PATIENT_S) as response:
        health = json.loads(response.read())
    assert health["name"] == "namespaces" and health["strength"] == "isolated"
    assert health["maxima"]["memory_mb"] == MAX_MEMORY_MB
    with urllib.request.urlopen(url + "/v1/ping", timeout=PATIENT_S) as response:
        assert response.read() == b"pong"


def test_request_limits_are_clamped_to_the_servers_maxima():
    maxima = Maxima(timeout_s=20, memory_mb=512, output_bytes=1000, file_bytes=2000, disk_mb=8)
    asks = {"cpu_s": 99, "max_output_bytes": 10**9, "max_file_bytes": 10**9, "disk_mb": 10**6}
    body = {"code": "c", "language": "python", "run_timeout": 1e6, "memory_limit_MB": 10**6, "rlft_limits": asks}
    assert parse_request(body, maxima) == ("c", "", Limits(20, 20, 512, 1000, 2000, 8))
    unlimited = {"code": "c", "language": "python", "stdin": "s", "run_timeout": 2, "memory_limit_MB": -1}
    assert parse_request(unlimited, maxima) == ("c", "s", Limits(2, 2, 512, 1000, 2000, 8))
    with pytest.raises(Unsupported, match="python only"):
        parse_request({"code": "c", "language": "go"}, maxima)


def test_server_refuses_to_start_where_its_backend_cannot_run(monkeypatch, capsys):
    monkeypatch.setattr(jail, "unavailable_reason", lambda: "user namespaces are forbidden here")
    assert sandbox_server.main(["--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "refusing to start" in err and "forbidden here" in err
    assert sandbox_server.main(["--port", "0", "--sandbox", "nosuch"]) == 2
    assert "unknown sandbox 'nosuch'" in capsys.readouterr().err


def test_a_weak_service_is_labelled_weak():
    service = sandbox_server.Service(make_sandbox("weak_process"), concurrency=2)
    server = sandbox_server.Server(("127.0.0.1", 0), service)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        backend = make_sandbox("remote", {"url": server.url})
        assert backend.strength == "weak" and "WEAK" in backend.describe()
    finally:
        server.shutdown()
        server.server_close()


def test_sigterm_finishes_the_running_program_then_exits(tmp_path):
    proc, url = start_server(log=tmp_path / "stderr.log")
    try:
        backend = make_sandbox("remote", {"url": url, "probe": False})
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(run, "import time\ntime.sleep(1.5)\nprint('done')", backend)
            time.sleep(0.7)
            proc.send_signal(signal.SIGTERM)
            assert pending.result(timeout=PATIENT_S).stdout == "done\n"
        assert proc.wait(timeout=PATIENT_S) == 0
    finally:
        stop(proc)


# --- the client's faults: they raise, never score ------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_service_that_is_down_raises():
    url = f"http://127.0.0.1:{closed_port()}"
    backend = make_sandbox("remote", {"url": url, "probe": False, "retries": 1})
    with pytest.raises(SandboxError, match="cannot reach.*after 2 attempts"):
        run("print(1)", backend)
    with pytest.raises(SandboxUnavailableError, match="does not work"):
        make_sandbox("remote", {"url": url, "retries": 0})


def test_a_wrong_url_or_token_raises(service):
    url, _ = service
    with pytest.raises(SandboxError, match="HTTP 404"):
        run("print(1)", make_sandbox("remote", {"url": url + "/v2", "probe": False}))
    with pytest.raises(SandboxError, match="HTTP 401"):
        run("print(1)", make_sandbox("remote", {"url": url, "probe": False}))
    with pytest.raises(SandboxUnavailableError, match="HTTP 401"):
        make_sandbox("remote", {"url": url})
    with pytest.raises(SandboxUnavailableError, match="RLFT_NO_SUCH_TOKEN"):
        make_sandbox("remote", {"url": url, "token_env": "RLFT_NO_SUCH_TOKEN"})
    with pytest.raises(SandboxUnavailableError, match="http"):
        make_sandbox("remote", {"url": "ftp://example.org"})


class Scripted(ThreadingHTTPServer):
    """A stand-in service answering ``run_code`` from a script of ``(HTTP status, body, delay)``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.script: list[tuple[int, bytes, float]] = []
        self.requests: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.server_address[1]

    def answer(self, *replies: Any, status: int = 200, delay: float = 0.0) -> None:
        """Answer the next requests with ``replies`` in turn (the last one from then on); a reply is
        a JSON value, raw bytes, or ``(HTTP status, reply)``."""
        self.requests.clear()
        self.script = []
        for reply in replies:
            code, reply = reply if isinstance(reply, tuple) else (status, reply)
            self.script.append((code, reply if isinstance(reply, bytes) else json.dumps(reply).encode(), delay))


class _ScriptedHandler(BaseHTTPRequestHandler):
    server: Scripted

    def do_POST(self) -> None:  # noqa: N802
        self.server.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        status, body, delay = self.server.script.pop(0) if len(self.server.script) > 1 else self.server.script[0]
        time.sleep(delay)
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up waiting (the slow-service test)
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def fake():
    server = Scripted()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def finished(code: int | None, stdout: str = "", stderr: str = "", status: str = "Finished") -> dict[str, Any]:
    """SandboxFusion's answer (no rlft additions)."""
    run_result = {"status": status, "execution_time": 0.1, "return_code": code, "stdout": stdout, "stderr": stderr}
    overall = "Success" if status == "Finished" and code == 0 else "Failed"
    return {"status": overall, "message": "", "compile_result": None, "run_result": run_result}


def fake_backend(fake: Scripted, **params: Any):
    return make_sandbox("remote", {"url": fake.url, "probe": False, **params})


def test_sandboxfusion_answers_map_to_results(fake):
    backend = fake_backend(fake)
    fake.answer(finished(0, "hi\n"))
    result = run_sandboxed("print('hi')", stdin="in", timeout_s=3, memory_mb=300, backend=backend)
    assert (result.status, result.returncode, result.stdout, result.duration_s) == ("ok", 0, "hi\n", 0.1)
    sent = fake.requests[0]
    assert {k: sent[k] for k in ("code", "language", "stdin", "run_timeout", "memory_limit_MB")} == {
        "code": "print('hi')", "language": "python", "stdin": "in", "run_timeout": 3, "memory_limit_MB": 300,
    }  # fmt: skip
    fake.answer(finished(1, stderr="Traceback"))
    assert run("x", backend).status == "error"
    fake.answer(finished(-11))
    assert run("x", backend).status == "killed"
    fake.answer(finished(None, "partial", status="TimeLimitExceeded"))
    assert (run("x", backend).status, run("x", backend).returncode) == ("timeout", -signal.SIGKILL)
    fake.answer(finished(0, "é" * 600))  # a service without a cap: the client applies it, in bytes
    result = run("x", backend, max_output_bytes=1000)
    assert result.status == "output_limit" and result.stdout == "é" * 500


def test_busy_service_is_retried(fake):
    fake.answer((503, b"busy"), (503, b"busy"), finished(0, "ok\n"))
    assert run("x", fake_backend(fake)).stdout == "ok\n" and len(fake.requests) == 3
    fake.answer(b"down", status=502)
    with pytest.raises(SandboxError, match="HTTP 502.*after 2 attempts"):
        run("x", fake_backend(fake, retries=1))
    assert len(fake.requests) == 2


def test_service_side_sandbox_error_raises_after_retries(fake):
    fake.answer({"status": "SandboxError", "message": "runner crashed", "run_result": None})
    with pytest.raises(SandboxError, match="runner crashed.*after 3 attempts"):
        run("x", fake_backend(fake))
    fake.answer({"status": "Failed", "message": "", "run_result": {"status": "Error", "stderr": "no runner"}})
    with pytest.raises(SandboxError, match="no runner"):
        run("x", fake_backend(fake, retries=0))


@pytest.mark.parametrize(
    "reply, message",
    [
        (b"<html>oops</html>", "malformed JSON"),
        (b'["Success"]', "malformed JSON"),
        (json.dumps({"status": "Success", "run_result": {"status": "Finished"}}).encode(), "malformed run_result"),
        (json.dumps({"status": "Failed", "message": "quota exceeded", "run_result": None}).encode(), "quota exceeded"),
    ],
    ids=["html", "not-object", "no-return-code", "refused"],
)
def test_malformed_or_refused_answers_raise_without_retry(fake, reply, message):
    fake.answer(reply)
    with pytest.raises(SandboxError, match=message):
        run("x", fake_backend(fake))
    assert len(fake.requests) == 1


def test_client_errors_are_not_retried(fake):
    fake.answer({"detail": "unprocessable"}, status=422)
    with pytest.raises(SandboxError, match="HTTP 422.*unprocessable"):
        run("x", fake_backend(fake))
    assert len(fake.requests) == 1


def test_a_service_slower_than_the_deadline_raises(fake):
    fake.answer(finished(0), delay=2.0)
    with pytest.raises(SandboxError, match="did not answer"):
        run("x", fake_backend(fake, overhead_s=0.3), timeout_s=0.2)
    assert len(fake.requests) == 1


def test_an_answer_larger_than_the_caps_allow_is_output_limit(fake):
    fake.answer(finished(0, "x" * 3 * 2**20))
    result = run("x", fake_backend(fake), max_output_bytes=1000)
    assert result.status == "output_limit" and result.stdout == ""
