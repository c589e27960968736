"""Run untrusted Python code (a model's completion) in a sandbox, selected by name.

``run_sandboxed(code)`` runs ``code`` as ``__main__`` of a fresh interpreter under ``Limits`` and
returns a ``SandboxResult``; ``run_pair(server, client)`` runs two programs in two sandboxes that
talk over pipes only they hold (``code_tests`` runs a solution and the tests that judge it that way,
so the tests' expected values never enter the solution's process).

The backend is a ``{name, params}`` choice over ``SANDBOXES`` (``reward.sandbox`` in the config):

- ``namespaces`` (default, ``rewards.sandbox.jail``): fresh user/mount/PID/network/IPC namespaces, a
  read-only root, a private tmpfs and a seccomp filter per program. Refuses to start where the kernel
  forbids user namespaces; rlft never falls back to something weaker by itself.
- ``remote`` (``rewards.sandbox.remote``): an HTTP code-execution service, for clusters whose nodes
  forbid namespaces (``python -m rewards.sandbox.server`` is one).
- ``weak_process`` (``rewards.sandbox.weak``): rlimits and an audit hook, **no OS isolation**. Named
  weak in the config, the logs and ``rlft check``: a policy trained against it can forge scores.

A reward worker selects the run's backend once (``use_sandbox``); code that never selects one gets
``namespaces``.

>>> run_sandboxed("print(6 * 7)").stdout
'42\\n'
>>> run_sandboxed("import socket; socket.socket()").status
'error'
"""

from __future__ import annotations

import threading
from typing import Any

from rewards.sandbox import cgroup, jail, weak  # noqa: F401  (registers the local backends)
from rewards.sandbox.base import (
    SANDBOXES,
    Backend,
    Limits,
    SandboxError,
    SandboxResult,
    SandboxUnavailableError,
    Status,
)

__all__ = [
    "SANDBOXES", "Backend", "Limits", "SandboxError", "SandboxResult", "SandboxUnavailableError", "Status",
    "check_sandbox", "current_sandbox", "make_sandbox", "run_pair", "run_sandboxed", "use_sandbox",
]  # fmt: skip

DEFAULT = "namespaces"
_lock = threading.Lock()
_current: Backend | None = None
_choice: tuple[str, dict[str, Any]] = (DEFAULT, {})


def check_sandbox(name: str = DEFAULT, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check a ``{name, params}`` choice against ``SANDBOXES`` without building it; the checked params.

    >>> check_sandbox("namespace")
    Traceback (most recent call last):
    ...
    rlft.algorithms.registry.RegistryError: unknown sandbox 'namespace' (did you mean 'namespaces'?); valid names: namespaces, remote, weak_process
    """
    _load_remote()
    return SANDBOXES.validate_params(name, dict(params or {}))


def make_sandbox(name: str = DEFAULT, params: dict[str, Any] | None = None) -> Backend:
    """The backend ``name`` built with ``params``; ``SandboxUnavailableError`` where it cannot run.

    >>> make_sandbox("weak_process").strength
    'weak'
    """
    checked = check_sandbox(name, params)  # first: it registers ``remote``
    return SANDBOXES.get(name)(**checked)


def use_sandbox(name: str = DEFAULT, params: dict[str, Any] | None = None) -> None:
    """Select this process's backend; it is built (and probed) at its first use."""
    global _current, _choice
    checked = check_sandbox(name, params)
    with _lock:
        _choice, _current = (name, checked), None


def current_sandbox() -> Backend:
    """The selected backend (``namespaces`` when none was selected), built on the first call."""
    global _current
    with _lock:
        if _current is None:
            _current = make_sandbox(*_choice)
        return _current


def run_sandboxed(
    code: str,
    *,
    stdin: str = "",
    timeout_s: float = 5.0,
    cpu_s: float | None = None,
    memory_mb: int = 512,
    max_output_bytes: int = 64 * 1024,
    max_file_bytes: int = 16 * 2**20,
    disk_mb: int = 64,
    backend: Backend | None = None,
) -> SandboxResult:
    """Run ``code`` as ``__main__`` of a fresh, isolated Python process and collect its result.

    ``cpu_s`` (default ``timeout_s``) is the CPU-time limit, ``memory_mb`` the address-space limit,
    ``max_file_bytes`` the size limit of any file written, ``disk_mb`` the size of its writable
    directory. ``backend`` defaults to ``current_sandbox()``. Raises ``SandboxError`` only for faults
    of the sandbox itself; whatever the program does is in the result.

    >>> r = run_sandboxed("import sys; print(sys.stdin.read().upper())", stdin="hi")
    >>> r.status, r.returncode, r.stdout
    ('ok', 0, 'HI\\n')
    >>> run_sandboxed("while True: pass", timeout_s=0.5).status in ("timeout", "killed")
    True
    """
    limits = Limits(timeout_s, cpu_s, memory_mb, max_output_bytes, max_file_bytes, disk_mb)
    return (backend or current_sandbox()).run(code, stdin=stdin, limits=limits)


def run_pair(
    server: str,
    client: str,
    *,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    max_output_bytes: int = 64 * 1024,
    backend: Backend | None = None,
) -> SandboxResult:
    """Run ``server`` and ``client`` in two sandboxes, each one's stdout the other's stdin; return
    the client's result (its stdout is the server's, so ``stdout`` is empty) once it exits.
    ``timeout_s`` bounds the whole exchange.

    >>> echo = "import sys\\nfor line in sys.stdin:\\n    print(line.strip()[::-1], flush=True)"
    >>> ask = "import sys\\nprint('olleh', flush=True)\\nassert sys.stdin.readline() == 'hello\\\\n'"
    >>> run_pair(echo, ask).status
    'ok'
    """
    limits = Limits(timeout_s, None, memory_mb, max_output_bytes)
    return (backend or current_sandbox()).run_pair(server, client, limits=limits)


def _load_remote() -> None:
    from rewards.sandbox import remote  # noqa: F401  (registers ``remote``; loaded on demand: urllib)
