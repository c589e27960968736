"""A sandbox service: SandboxFusion's ``run_code`` API over HTTP, each program run in a local backend.

For clusters whose training nodes forbid unprivileged user namespaces: start this on a machine that
allows them, and select ``reward.sandbox: {name: remote, params: {url: ...}}`` on the nodes (see
``rewards.sandbox.remote``, the client)::

    python -m rewards.sandbox.server --host 0.0.0.0 --port 8080 --token-env SANDBOX_TOKEN

The first line on stdout is the address it serves (``--port 0`` picks a free port)::

    rlft sandbox server: http://127.0.0.1:8080 (namespaces (user, mount, pid, net, ...))

**Isolation** is the backend's: ``--sandbox namespaces`` (the default) runs every program in fresh
namespaces under a seccomp filter, exactly as a local run would; the server refuses to start, with
the reason, where that backend cannot run. ``--sandbox weak_process`` is accepted for trusted code
only: ``GET /health`` then says ``"strength": "weak"`` and the client's ``describe()`` says WEAK.

**Endpoints.**

- ``POST /run_code``: ``{"code", "language": "python", "stdin", "run_timeout", "memory_limit_MB"}``
  and rlft's ``rlft_limits`` (``cpu_s``, ``max_output_bytes``, ``max_file_bytes``, ``disk_mb``),
  each clamped to this server's maxima (the ``--max-*`` flags; a missing or non-positive memory
  limit, SandboxFusion's "unlimited", gets the maximum). The answer is SandboxFusion's
  (``status``, ``message``, ``compile_result``, ``run_result``, ``files``) with the run result's
  ``rlft_status``. Another language, or ``files``/``fetch_files``, is answered ``"status":
  "Failed"`` with a message; a malformed request is HTTP 400, an oversized one 413, a missing or
  wrong token (with ``--token-env``) 401, and no free slot within ``--queue-timeout-s`` 503.
- ``GET /health``: the backend, its strength and the maxima; ``GET /v1/ping``: ``pong``.

At most ``--concurrency`` programs run at once. SIGTERM or SIGINT stop it once the programs that
are running have finished (each is bounded by its deadline).
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from rewards.sandbox import make_sandbox
from rewards.sandbox.base import Backend, Limits, SandboxError, SandboxResult

log = logging.getLogger("rewards.sandbox.server")

_DEFAULT_RUN_TIMEOUT_S = 10.0  # SandboxFusion's default run_timeout
_DEFAULTS = Limits()  # what a request without rlft_limits gets, before the maxima


@dataclass(frozen=True)
class Maxima:
    """The most one request may ask for; larger asks are lowered to these.

    >>> parse_request({"code": "print(1)", "language": "python", "run_timeout": 1e6}, Maxima(timeout_s=20))[2]
    Limits(timeout_s=20, cpu_s=20, memory_mb=4096, max_output_bytes=65536, max_file_bytes=16777216, disk_mb=64)
    """

    timeout_s: float = 60.0
    memory_mb: int = 4096
    output_bytes: int = 2**20
    file_bytes: int = 64 * 2**20
    disk_mb: int = 256
    request_bytes: int = 16 * 2**20


class BadRequest(ValueError):
    """A request that is not a ``run_code`` request (HTTP 400)."""


class Unsupported(ValueError):
    """A well-formed request for something this service does not do (``"status": "Failed"``)."""


def parse_request(body: Any, maxima: Maxima) -> tuple[str, str, Limits]:
    """``(code, stdin, limits)`` of a ``run_code`` request, the limits clamped to ``maxima``.

    >>> parse_request({"code": "", "language": "cpp"}, Maxima())
    Traceback (most recent call last):
    ...
    rewards.sandbox.server.Unsupported: language 'cpp' is not supported: this service runs python only
    """
    if not isinstance(body, dict):
        raise BadRequest("the request must be a JSON object")
    code, language, stdin = body.get("code"), body.get("language"), body.get("stdin")
    if not isinstance(code, str):
        raise BadRequest("'code' must be a string")
    if not isinstance(language, str):
        raise BadRequest("'language' must be a string")
    if not (stdin is None or isinstance(stdin, str)):
        raise BadRequest("'stdin' must be a string or null")
    if language != "python":
        raise Unsupported(f"language {language!r} is not supported: this service runs python only")
    if body.get("files") or body.get("fetch_files"):
        raise Unsupported("'files' and 'fetch_files' are not supported: the program gets stdin only")
    extra = body.get("rlft_limits") or {}
    if not isinstance(extra, dict):
        raise BadRequest("'rlft_limits' must be an object")
    timeout_s = min(_positive(body, "run_timeout", _DEFAULT_RUN_TIMEOUT_S), maxima.timeout_s)
    memory = body.get("memory_limit_MB")
    if memory is None or (_is_number(memory) and memory <= 0):  # SandboxFusion's -1: "no limit"
        memory_mb = maxima.memory_mb
    else:
        memory_mb = min(int(_positive(body, "memory_limit_MB", 0)), maxima.memory_mb)
    limits = Limits(
        timeout_s=timeout_s,
        cpu_s=min(_positive(extra, "cpu_s", timeout_s), maxima.timeout_s),
        memory_mb=max(memory_mb, 1),
        max_output_bytes=_clamp(extra, "max_output_bytes", _DEFAULTS.max_output_bytes, maxima.output_bytes),
        max_file_bytes=_clamp(extra, "max_file_bytes", _DEFAULTS.max_file_bytes, maxima.file_bytes),
        disk_mb=_clamp(extra, "disk_mb", _DEFAULTS.disk_mb, maxima.disk_mb),
    )
    return code, stdin or "", limits


def to_reply(result: SandboxResult) -> dict[str, Any]:
    """A ``SandboxResult`` as SandboxFusion's answer, with ``rlft_status`` for what it has no word for.

    >>> to_reply(SandboxResult("timeout", -9, "", "", 1.0))["run_result"]["status"]
    'TimeLimitExceeded'
    """
    run = {
        "status": "TimeLimitExceeded" if result.status == "timeout" else "Finished",
        "execution_time": result.duration_s, "return_code": result.returncode,
        "stdout": result.stdout, "stderr": result.stderr, "rlft_status": result.status,
    }  # fmt: skip
    status = "Success" if result.status == "ok" else "Failed"
    return {"status": status, "message": "", "compile_result": None, "run_result": run, "files": {}}


def _failed(status: str, message: str) -> dict[str, Any]:
    return {"status": status, "message": message, "compile_result": None, "run_result": None, "files": {}}


class Service:
    """What the HTTP handler calls: ``run_code`` and ``health``, independent of HTTP."""

    def __init__(
        self, backend: Backend, *, maxima: Maxima = Maxima(), concurrency: int = 1, queue_timeout_s: float = 10.0
    ) -> None:
        self.backend = backend
        self.maxima = maxima
        self.queue_timeout_s = queue_timeout_s
        self.concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)

    def run_code(self, body: Any) -> tuple[int, dict[str, Any]]:
        """``(HTTP status, answer)`` for one ``run_code`` request."""
        try:
            code, stdin, limits = parse_request(body, self.maxima)
        except BadRequest as err:
            return 400, _failed("Failed", f"bad request: {err}")
        except Unsupported as err:
            return 200, _failed("Failed", str(err))
        # a bounded wait for a slot: a saturated service says so (503, retried by the client)
        # instead of queueing work past the client's own deadline
        if not self._slots.acquire(timeout=self.queue_timeout_s):
            return 503, _failed("SandboxError", f"busy: all {self.concurrency} slots are running programs")
        try:
            result = self.backend.run(code, stdin=stdin, limits=limits)
        except SandboxError as err:  # the sandbox's own fault, in SandboxFusion's words
            log.warning("sandbox fault: %s", err)
            return 200, _failed("SandboxError", str(err))
        finally:
            self._slots.release()
        return 200, to_reply(result)

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok", "sandbox": self.backend.describe(), "name": self.backend.name,
            "strength": self.backend.strength, "languages": ["python"], "concurrency": self.concurrency,
            "maxima": asdict(self.maxima),
        }  # fmt: skip


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.0 (one request per connection): nothing is held between requests."""

    server: Server
    server_version = "rlft-sandbox/1"
    timeout = 30.0  # a client that stalls while sending its request does not hold a thread longer

    def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
        path = urlsplit(self.path).path
        if path == "/health":
            self._send(200, self.server.service.health())
        elif path == "/v1/ping":  # SandboxFusion's liveness check
            self._send_bytes(200, b"pong", "text/plain")
        else:
            self._send(404, _failed("Failed", f"no such endpoint: GET {path}"))

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        if path != "/run_code":
            self._send(404, _failed("Failed", f"no such endpoint: POST {path}"))
            return
        if not self._authorized():
            self._send(401, _failed("Failed", "a valid 'Authorization: Bearer <token>' header is required"))
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            self._send(411, _failed("Failed", "a Content-Length header is required"))
            return
        if int(length) > self.server.service.maxima.request_bytes:
            self.close_connection = True  # the body is not read
            limit = self.server.service.maxima.request_bytes
            self._send(413, _failed("Failed", f"the request is {length} bytes, more than {limit}"))
            return
        try:
            body = json.loads(self.rfile.read(int(length)))
        except (ValueError, OSError) as err:
            self._send(400, _failed("Failed", f"bad request: the body is not JSON ({err})"))
            return
        try:
            status, reply = self.server.service.run_code(body)
        except Exception:  # a bug here must still answer: the client would otherwise wait its deadline
            log.exception("run_code failed")
            status, reply = 500, _failed("SandboxError", "internal error in the sandbox server")
        self._send(status, reply)

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        given = self.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def _send(self, status: int, reply: dict[str, Any]) -> None:
        self._send_bytes(status, json.dumps(reply).encode(), "application/json")

    def _send_bytes(self, status: int, data: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if status == 503:
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client left: nothing to tell it
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base class's name)
        log.info("%s %s", self.address_string(), format % args)


class Server(ThreadingHTTPServer):
    """A thread per request; closing joins them, so no program outlives the server."""

    daemon_threads = False
    block_on_close = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], service: Service, token: str | None = None) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.service = service
        self.token = token

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = None
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            print(f"rlft sandbox server: --token-env {args.token_env} is not set in the environment", file=sys.stderr)
            return 2
    try:
        backend = make_sandbox(args.sandbox)
    except (SandboxError, KeyError, ValueError) as err:  # unavailable here, or an unknown name
        print(f"rlft sandbox server: refusing to start: {err}", file=sys.stderr)
        return 2
    if backend.strength == "weak":
        print(f"rlft sandbox server: WARNING: {backend.describe()}", file=sys.stderr)
    if token is None and args.host not in ("127.0.0.1", "::1", "localhost"):
        print(
            f"rlft sandbox server: no --token-env: anyone who can reach {args.host}:{args.port} can run programs",
            file=sys.stderr,
        )
    maxima = Maxima(
        timeout_s=args.max_timeout_s, memory_mb=args.max_memory_mb, output_bytes=args.max_output_bytes,
        file_bytes=args.max_file_bytes, disk_mb=args.max_disk_mb, request_bytes=args.max_request_bytes,
    )  # fmt: skip
    service = Service(backend, maxima=maxima, concurrency=args.concurrency, queue_timeout_s=args.queue_timeout_s)
    try:
        server = Server((args.host, args.port), service, token)
    except OSError as err:
        print(f"rlft sandbox server: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)
    print(f"rlft sandbox server: {server.url} ({backend.describe()})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()  # joins the requests still running
    return 0


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # leaves serve_forever in the main thread; ``main`` then closes the server


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rewards.sandbox.server",
        description="Serve SandboxFusion's run_code API, running each program in a local rlft sandbox.",
    )
    d = Maxima()
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one (default: %(default)s)")
    p.add_argument("--sandbox", default="namespaces", help="local backend in rewards.sandbox (default: %(default)s)")
    p.add_argument("--concurrency", type=_positive_int, default=os.cpu_count() or 1, help="programs at once")
    p.add_argument("--queue-timeout-s", type=_positive_float, default=10.0, help="wait for a slot, then 503")
    p.add_argument("--max-timeout-s", type=_positive_float, default=d.timeout_s)
    p.add_argument("--max-memory-mb", type=_positive_int, default=d.memory_mb)
    p.add_argument("--max-output-bytes", type=_positive_int, default=d.output_bytes)
    p.add_argument("--max-file-bytes", type=_positive_int, default=d.file_bytes)
    p.add_argument("--max-disk-mb", type=_positive_int, default=d.disk_mb)
    p.add_argument("--max-request-bytes", type=_positive_int, default=d.request_bytes)
    p.add_argument("--token-env", help="environment variable holding the bearer token requests must carry")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return p


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive(obj: dict[str, Any], key: str, default: float) -> float:
    value = obj.get(key, default)
    if value is None:
        return default
    if not (_is_number(value) and math.isfinite(value) and value > 0):
        raise BadRequest(f"{key!r} must be a positive number, got {value!r}")
    return value


def _clamp(obj: dict[str, Any], key: str, default: int, most: int) -> int:
    """A positive whole number: at least 1, at most ``most``."""
    return max(1, int(min(_positive(obj, key, default), most)))


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


if __name__ == "__main__":
    sys.exit(main())
