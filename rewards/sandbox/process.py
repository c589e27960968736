"""Local sandboxes' shared supervision: start the launcher, read its pipes under caps and a
deadline, kill whatever it left, and turn its exit into a ``SandboxResult``.

A backend describes how to start one program as a ``Launch``; everything after that is here. The
launcher leads a new session, so the kill (``SIGKILL`` to its process group, also after a normal
exit and before it is reaped, so the group id cannot have been reused) reaches all of it that did
not leave the group; the ``namespaces`` backend's PID namespace takes care of what did.

A launcher may report on a separate pipe (``Launch.report_fd``): ``E<message>`` when it could not
set the sandbox up (rlft's or the host's fault: ``SandboxError``), ``X<wait status>`` with the
program's own exit. The report is read after the launcher has exited.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from rewards.sandbox.base import Limits, SandboxError, SandboxResult, Status

_CHUNK = 64 * 1024
_POLL_S = 0.02  # how often the child's exit is polled where pidfd_open is unavailable
_INIT_EXIT_S = 10.0  # a killed namespace's init is gone within milliseconds; this bounds a stuck kernel


@dataclass
class Launch:
    """How to start one sandboxed program; ``cleanup`` runs once it is over, whatever happened."""

    argv: list[str]
    env: dict[str, str]
    cwd: str = "/"
    pass_fds: tuple[int, ...] = ()
    report_fd: int | None = None
    cleanup: Callable[[], None] = field(default=lambda: None)


def run(launch: Launch, stdin: str, limits: Limits) -> SandboxResult:
    """Run ``launch`` with ``stdin``; stdout and stderr are read here, each capped."""
    start = time.monotonic()
    try:
        with tempfile.TemporaryFile() as stdin_file:  # unnamed: a file, so no writer thread is needed
            stdin_file.write(stdin.encode())
            stdin_file.seek(0)
            proc = _popen(launch, stdin_file, subprocess.PIPE, subprocess.PIPE)
        with proc:
            assert proc.stdout is not None and proc.stderr is not None
            out, err = bytearray(), bytearray()
            try:
                verdict = _supervise(
                    proc.pid, {proc.stdout.fileno(): out, proc.stderr.fileno(): err},
                    start + limits.timeout_s, limits.max_output_bytes,
                )  # fmt: skip
            finally:
                kill_group(proc.pid)
                returncode = proc.wait()
        returncode = _program_exit(launch, returncode)
    finally:
        _close(launch.report_fd)
        launch.cleanup()
    return _result(verdict, returncode, bytes(out), bytes(err), limits.max_output_bytes, start)


def run_pair(server: Launch, client: Launch, limits: Limits) -> SandboxResult:
    """Two programs talking over two pipes that only they hold; the client's result."""
    start = time.monotonic()
    to_server_r, to_server_w = os.pipe()
    to_client_r, to_client_w = os.pipe()
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_popen(server, to_server_r, to_client_w, subprocess.DEVNULL))
        procs.append(_popen(client, to_client_r, to_server_w, subprocess.PIPE))
        for fd in (to_server_r, to_server_w, to_client_r, to_client_w):
            os.close(fd)
        to_server_r = to_server_w = to_client_r = to_client_w = -1
        client_proc = procs[1]
        assert client_proc.stderr is not None
        err = bytearray()
        try:
            verdict = _supervise(
                client_proc.pid, {client_proc.stderr.fileno(): err}, start + limits.timeout_s, limits.max_output_bytes
            )
        finally:
            for proc in procs:
                kill_group(proc.pid)
            codes = [proc.wait() for proc in procs]
            if client_proc.stderr:
                client_proc.stderr.close()
        _program_exit(server, codes[0])  # a server that could not be set up is the host's fault too
        returncode = _program_exit(client, codes[1])
    finally:
        for proc in procs:
            kill_group(proc.pid)
            proc.wait()
        for fd in (to_server_r, to_server_w, to_client_r, to_client_w):
            if fd >= 0:
                os.close(fd)
        for launch in (server, client):
            _close(launch.report_fd)
            launch.cleanup()
    return _result(verdict, returncode, b"", bytes(err), limits.max_output_bytes, start)


def _popen(launch: Launch, stdin: IO[bytes] | int, stdout: int, stderr: int) -> subprocess.Popen:
    try:
        return subprocess.Popen(
            launch.argv, stdin=stdin, stdout=stdout, stderr=stderr, cwd=launch.cwd, env=launch.env,
            pass_fds=launch.pass_fds, start_new_session=True,
        )  # fmt: skip
    except OSError as err:
        raise SandboxError(f"could not start the sandbox launcher {launch.argv[0]}: {err}") from err
    finally:
        for fd in launch.pass_fds:  # the launcher has its copies now
            _close(fd)
        launch.pass_fds = ()


def _program_exit(launch: Launch, launcher_code: int) -> int:
    """The program's exit code (negative for a signal) from the launcher's report, else the
    launcher's own; ``SandboxError`` where the launcher reported that it could not set up.

    A launcher that forks an init (``P<pid>``) and was killed may leave that init still dying: it is
    waited for here (an init's exit waits for every process of its namespace), so nothing of the
    run is alive when the result is returned."""
    if launch.report_fd is None:
        return launcher_code
    report = _read_all(launch.report_fd)
    lines = report.split(b"\n")
    init = [int(line[1:]) for line in lines if line.startswith(b"P") and line[1:].isdigit()]
    if init and launcher_code < 0:  # the launcher was killed, so it did not wait for its init
        _wait_gone(init[0], _INIT_EXIT_S)
        lines += _read_all(launch.report_fd).split(b"\n")
    for line in lines:
        if line.startswith(b"E"):
            raise SandboxError("the sandbox could not start the program: " + line[1:].decode(errors="replace"))
    for line in lines:
        if line.startswith(b"X") and line[1:].isdigit():
            status = int(line[1:])
            return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return launcher_code


def _wait_gone(pid: int, timeout_s: float) -> None:
    """Wait until ``pid`` (killed, not our child) has exited."""
    fd = _pidfd(pid)
    if fd is None:  # gone already (or no pidfd on this kernel: poll /proc)
        deadline = time.monotonic() + timeout_s
        while os.path.exists(f"/proc/{pid}/ns") and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        return
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            sel.select(timeout_s)
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    try:
        while chunk := os.read(fd, _CHUNK):
            chunks.append(chunk)
    except BlockingIOError:  # a writer that is still alive: take what is there
        pass
    return b"".join(chunks)


def _result(verdict: Status | None, returncode: int, out: bytes, err: bytes, cap: int, start: float) -> SandboxResult:
    status: Status = verdict or ("ok" if returncode == 0 else "killed" if returncode < 0 else "error")
    return SandboxResult(status, returncode, _text(out, cap), _text(err, cap), time.monotonic() - start)


def _supervise(pid: int, buffers: dict[int, bytearray], deadline: float, cap: int) -> Status | None:
    """Read the pipes into ``buffers`` until ``pid`` has exited and they are drained, the deadline
    passes (``timeout``) or one passes ``cap`` bytes (``output_limit``). Never reaps ``pid``."""
    pidfd = _pidfd(pid)
    try:
        return _pump(pid, pidfd, buffers, deadline, cap)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _pump(pid: int, pidfd: int | None, buffers: dict[int, bytearray], deadline: float, cap: int) -> Status | None:
    exited = False
    with selectors.DefaultSelector() as sel:
        for fd in (*buffers, *([pidfd] if pidfd is not None else [])):
            sel.register(fd, selectors.EVENT_READ)
        while not (exited and not sel.get_map()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None if exited else "timeout"  # exited: a descendant holds the pipes; stop
            for key, _ in sel.select(remaining if pidfd is not None or exited else min(remaining, _POLL_S)):
                if key.fd == pidfd:
                    sel.unregister(pidfd)
                    exited = True
                    kill_group(pid)  # whatever it left behind; lets the pipes reach EOF
                    continue
                chunk = os.read(key.fd, _CHUNK)
                if not chunk:
                    sel.unregister(key.fd)
                buffers[key.fd] += chunk
                if len(buffers[key.fd]) > cap:
                    return "output_limit"
            if pidfd is None and not exited and _has_exited(pid):
                exited = True
                kill_group(pid)
    return None


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux 5.3+), else ``None``."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _has_exited(pid: int) -> bool:
    """Whether ``pid`` has exited, leaving it unreaped (``WNOWAIT``)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _close(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def _text(data: bytes, cap: int) -> str:
    return data[:cap].decode("utf-8", errors="replace")
