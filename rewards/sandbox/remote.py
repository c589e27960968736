"""``remote``: run each program on an HTTP code-execution service, behind the same ``Backend`` interface.

**When to use it.** On clusters whose nodes forbid unprivileged user namespaces (some container
runtimes, a disabled ``kernel.unprivileged_userns_clone``), the default ``namespaces`` backend
cannot start. Rather than fall back to ``weak_process`` (no OS isolation: a policy can learn to
forge its scores), run the sandbox as a service on a machine that allows namespaces and point the
reward workers at it::

    # on a node that allows user namespaces (rlft's own service; it uses the namespaces backend)
    python -m rewards.sandbox.server --host 0.0.0.0 --port 8080 --token-env SANDBOX_TOKEN

    # in the run's config
    reward:
      sandbox: {name: remote, params: {url: "http://sandbox-node:8080", token_env: SANDBOX_TOKEN}}

**The API it speaks** is SandboxFusion's ``run_code`` (ByteDance's service, which other RL code
already uses), so a SandboxFusion deployment works too::

    POST {url}/run_code
    {"code": "...", "language": "python", "stdin": "...", "run_timeout": 5.0, "memory_limit_MB": 512}
    -> {"status": "Success" | "Failed" | "SandboxError", "message": "...", "compile_result": null,
        "run_result": {"status": "Finished" | "TimeLimitExceeded" | "Error", "execution_time": 0.03,
                       "return_code": 0, "stdout": "...", "stderr": "..."}}

Two additions, ignored by SandboxFusion: the request's ``rlft_limits`` (``cpu_s``,
``max_output_bytes``, ``max_file_bytes``, ``disk_mb``: the rest of ``Limits``) and the run result's
``rlft_status`` (the ``SandboxResult`` status where the API has no word for it: ``killed``,
``output_limit``). Without them the status is read from the API's fields, and the output cap is
applied here.

**What protects the scores is the service's isolation**, not this client: a service that runs
programs without isolation lets a policy forge scores just as ``weak_process`` does. rlft's server
runs each program in the ``namespaces`` backend; it reports its backend on ``GET /health``, and
``describe()`` repeats it.

**Faults.** What the program did is the result; what the service or the network did raises
``SandboxError`` (the sample is not scored): connection refused, HTTP 5xx or 429 (retried
``retries`` times first), another HTTP error, a malformed answer, the service's own
``SandboxError`` (retried too) and no answer within the program's deadline plus ``overhead_s``.
``run_pair`` (two programs over pipes) is not part of the API and always raises ``SandboxError``.

>>> to_result({"status": "Success", "run_result": {"status": "Finished", "return_code": 0,
...     "stdout": "42\\n", "stderr": "", "execution_time": 0.02}}, max_output_bytes=1024)
SandboxResult(status='ok', returncode=0, stdout='42\\n', stderr='', duration_s=0.02)
>>> to_result({"status": "Failed", "run_result": {"status": "Finished", "return_code": 0,
...     "stdout": "x" * 10, "stderr": ""}}, max_output_bytes=4).status
'output_limit'
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from typing import Any, Literal, get_args

from rewards.sandbox.base import SANDBOXES, Limits, SandboxError, SandboxResult, SandboxUnavailableError, Status

_RETRY_HTTP = frozenset({429, 500, 502, 503, 504})  # the service is busy or failing, not the request
_BACKOFF_S = 0.25  # doubled after each retry
_KILLED = -int(signal.SIGKILL)  # the return code a deadline gives where the service sends none
_STATUSES: frozenset[str] = frozenset(get_args(Status))


class _Retry(SandboxError):
    """A fault that another attempt may not meet (a busy or restarting service)."""


class Remote:
    """The ``remote`` backend (see the module docstring): one HTTP request per program.

    Thread-safe: nothing is shared between calls but the settings (each request opens its own
    connection), so a reward worker's threads may run programs at the same time."""

    name = "remote"

    def __init__(self, url: str, *, overhead_s: float = 30.0, token: str | None = None, retries: int = 2) -> None:
        self.url = url.rstrip("/")
        self.overhead_s = overhead_s
        self.retries = retries
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self.strength: Literal["isolated", "weak"] = "isolated"  # the service's claim; ``probe`` may lower it
        self.service: str | None = None  # what the service says it runs programs in, where it says

    def describe(self) -> str:
        backend = f": {self.service}" if self.service else ""
        weak = "WEAK, " if self.strength == "weak" else ""
        return f"remote ({self.url}; {weak}isolation is the service's{backend})"

    def run(self, program: str, *, stdin: str, limits: Limits) -> SandboxResult:
        request = {
            "code": program,
            "language": "python",
            "stdin": stdin,
            "run_timeout": limits.timeout_s,
            "memory_limit_MB": limits.memory_mb,
            "rlft_limits": {
                "cpu_s": limits.cpu, "max_output_bytes": limits.max_output_bytes,
                "max_file_bytes": limits.max_file_bytes, "disk_mb": limits.disk_mb,
            },
        }  # fmt: skip
        body = json.dumps(request).encode()
        # JSON escapes a byte as at most 6 (a control character as \\u00XX): two capped streams,
        # and a SandboxFusion error message may quote the code back
        max_reply = 12 * limits.max_output_bytes + 6 * len(body) + 2**20
        start = time.monotonic()
        for attempt in range(self.retries + 1):
            try:
                reply = self._post(body, limits.timeout_s + self.overhead_s, max_reply)
                if reply is None:  # larger than two capped streams can be: the program's output
                    return SandboxResult("output_limit", _KILLED, "", "", time.monotonic() - start)
                return to_result(reply, limits.max_output_bytes)
            except _Retry as err:
                if attempt == self.retries:
                    raise SandboxError(f"{err} (after {attempt + 1} attempts)") from err
                time.sleep(_BACKOFF_S * 2**attempt)
        raise AssertionError("unreachable")

    def run_pair(self, server: str, client: str, *, limits: Limits) -> SandboxResult:
        raise SandboxError(
            f"the 'remote' sandbox ({self.url}) cannot connect two programs: its API runs one program "
            "per request. Tests that must talk to the solution (code_tests tests that cannot be compiled "
            "into input/expected-output pairs) need a local backend: reward.sandbox {name: namespaces}"
        )

    def probe(self) -> None:
        """Run one program through the service (``SandboxUnavailableError`` where it does not
        work) and read what isolates it from ``GET /health``, where the service has one."""
        try:
            result = self.run("print(6 * 7)", stdin="", limits=Limits(timeout_s=30.0))
        except SandboxError as err:
            raise SandboxUnavailableError(f"the 'remote' sandbox at {self.url} does not work: {err}") from None
        if result.status != "ok" or result.stdout != "42\n":
            raise SandboxUnavailableError(
                f"the 'remote' sandbox at {self.url} did not run a probe program ({result.status}, exit "
                f"{result.returncode}: {result.stderr[-300:]!r})"
            )
        health = self._health()
        if isinstance(health.get("sandbox"), str):
            self.service = health["sandbox"][:300]
        if health.get("strength") == "weak":  # rlft's server over weak_process says so (and is labelled WEAK)
            self.strength = "weak"

    def _post(self, body: bytes, timeout_s: float, max_reply: int) -> dict[str, Any] | None:
        """The service's answer to ``body``, ``None`` where it is longer than ``max_reply``."""
        request = urllib.request.Request(f"{self.url}/run_code", data=body, headers=self._headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                data = response.read(max_reply + 1)
        except urllib.error.HTTPError as err:
            kind = _Retry if err.code in _RETRY_HTTP else SandboxError
            answer = f"HTTP {err.code} {err.reason}: {_body(err)}"
            raise kind(f"the sandbox service at {self.url} answered {answer}") from None
        except TimeoutError:
            # not retried: the service already took the program's whole deadline and the overhead
            raise SandboxError(
                f"the sandbox service at {self.url} did not answer within {timeout_s:.1f} s (the program's "
                "deadline plus overhead_s)"
            ) from None
        except urllib.error.URLError as err:  # refused, unreachable, DNS: the service may be restarting
            if isinstance(err.reason, TimeoutError):
                raise SandboxError(f"the sandbox service at {self.url} did not answer: {err.reason}") from None
            raise _Retry(f"cannot reach the sandbox service at {self.url}: {err.reason}") from None
        except (HTTPException, OSError) as err:  # dropped mid-answer (a reset, a truncated reply)
            raise _Retry(f"the sandbox service at {self.url} dropped the connection: {err!r}") from None
        if len(data) > max_reply:
            return None
        try:
            reply = json.loads(data)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise SandboxError(f"the sandbox service at {self.url} answered with malformed JSON: {_snippet(data)}")
        if reply.get("status") == "SandboxError" or _get(reply, "run_result", "status") == "Error":
            raise _Retry(f"the sandbox service at {self.url} could not run the program: {_message(reply)}")
        return reply

    def _health(self) -> dict[str, Any]:
        """``GET /health`` as JSON; ``{}`` where the service has none (SandboxFusion) or it fails."""
        request = urllib.request.Request(f"{self.url}/health", headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=10.0) as response:
                reply = json.loads(response.read(2**16))
        except (OSError, HTTPException, ValueError):
            return {}
        return reply if isinstance(reply, dict) else {}


@SANDBOXES.register("remote", strength="isolated")
def remote(
    *, url: str, overhead_s: float = 30.0, token_env: str | None = None, retries: int = 2, probe: bool = True
) -> Remote:
    """An HTTP code-execution service speaking SandboxFusion's ``run_code`` API at ``url`` (see
    ``rewards.sandbox.remote``; ``python -m rewards.sandbox.server`` is one). ``overhead_s``: how
    long a request may take beyond the program's deadline (queueing, start-up, transfer).
    ``token_env``: the environment variable holding a bearer token. ``retries``: further attempts
    after a refused connection, HTTP 5xx/429 or the service's own fault. ``probe``: run one program
    now, so a wrong URL stops the run at start (``SandboxUnavailableError``)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SandboxUnavailableError(f"the 'remote' sandbox needs an http:// or https:// url, got {url!r}")
    if not (math.isfinite(overhead_s) and overhead_s > 0) or retries < 0:
        raise SandboxUnavailableError(
            f"the 'remote' sandbox needs overhead_s > 0 and retries >= 0, got {overhead_s} and {retries}"
        )
    token = None
    if token_env is not None:
        token = os.environ.get(token_env)
        if not token:
            raise SandboxUnavailableError(
                f"the 'remote' sandbox's token_env {token_env!r} is not set in the environment"
            )
    backend = Remote(url, overhead_s=overhead_s, token=token, retries=retries)
    if probe:
        backend.probe()
    return backend


def to_result(reply: dict[str, Any], max_output_bytes: int) -> SandboxResult:
    """A ``run_code`` answer (not a service fault) as a ``SandboxResult``; output over
    ``max_output_bytes`` (in UTF-8) is cut there and makes the status ``output_limit``."""
    run = reply.get("run_result")
    if not isinstance(run, dict):  # "Failed" with no run: the service refused the request
        raise SandboxError(f"the sandbox service did not run the program: {_message(reply)}")
    stdout, stderr = run.get("stdout") or "", run.get("stderr") or ""
    code, took = run.get("return_code"), run.get("execution_time")
    if not (isinstance(stdout, str) and isinstance(stderr, str)) or not (code is None or _is_int(code)):
        raise _malformed(run)
    if run.get("status") == "TimeLimitExceeded":
        status: Status = "timeout"
        code = _KILLED if code is None else code
    elif run.get("status") == "Finished" and code is not None:
        status = "ok" if code == 0 else "killed" if code < 0 else "error"
    else:
        raise _malformed(run)
    if run.get("rlft_status") in _STATUSES:  # rlft's server: what the local backend saw
        status = run["rlft_status"]
    out, err = stdout.encode("utf-8", "surrogatepass"), stderr.encode("utf-8", "surrogatepass")
    if len(out) > max_output_bytes or len(err) > max_output_bytes:
        status = "output_limit"
    duration = float(took) if isinstance(took, (int, float)) and not isinstance(took, bool) else 0.0
    return SandboxResult(status, code, _cut(out, max_output_bytes), _cut(err, max_output_bytes), duration)


def _malformed(run: dict[str, Any]) -> SandboxError:
    text = _snippet(json.dumps(run).encode())
    return SandboxError(f"the sandbox service answered with a malformed run_result: {text}")


def _cut(data: bytes, cap: int) -> str:
    return data[:cap].decode("utf-8", errors="replace")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _get(reply: dict[str, Any], key: str, field: str) -> Any:
    inner = reply.get(key)
    return inner.get(field) if isinstance(inner, dict) else None


def _message(reply: dict[str, Any]) -> str:
    message = reply.get("message") or _get(reply, "run_result", "stderr") or reply.get("status")
    return _snippet(str(message).encode())


def _body(err: urllib.error.HTTPError) -> str:
    try:
        return _snippet(err.read(2048))
    except (OSError, HTTPException, AttributeError):  # no body, or the connection went with it
        return ""


def _snippet(data: bytes, limit: int = 300) -> str:
    text = data.decode("utf-8", errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."
