"""The sandbox's contract: limits, results, errors, the backend Protocol and the one registry.

A backend runs a Python program (a model's completion, or a harness around it) under ``Limits`` and
returns a ``SandboxResult`` describing what the *program* did. What goes wrong on rlft's or the
host's side (a sandbox that cannot start, a remote service that does not answer) raises
``SandboxError`` instead: the caller's reward call fails (it is not scored), and the two are told
apart in the metrics (``reward_errors/<name>/sandbox`` against the program's own statuses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from rlft.algorithms.registry import Registry

Status = Literal["ok", "error", "timeout", "killed", "output_limit"]


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed run did.

    ``status``: ``ok`` (exit 0), ``error`` (nonzero exit: an exception, ``MemoryError``, a refused
    operation), ``timeout`` (wall-clock deadline), ``killed`` (a signal: the CPU limit, a crash) or
    ``output_limit`` (stdout or stderr passed the cap). ``returncode`` is negative for a signal.
    ``stdout``/``stderr`` are decoded as UTF-8 and hold at most the cap in bytes.
    """

    status: Status
    returncode: int
    stdout: str
    stderr: str
    duration_s: float


@dataclass(frozen=True)
class Limits:
    """What one program may use. ``cpu_s`` defaults to ``timeout_s``; ``disk_mb`` bounds the
    program's writable directory (a size-limited tmpfs under ``namespaces``).

    >>> Limits(timeout_s=2.0).cpu
    2.0
    """

    timeout_s: float = 5.0
    cpu_s: float | None = None
    memory_mb: int = 512
    max_output_bytes: int = 64 * 1024
    max_file_bytes: int = 16 * 2**20
    disk_mb: int = 64

    @property
    def cpu(self) -> float:
        return self.timeout_s if self.cpu_s is None else self.cpu_s


class SandboxError(RuntimeError):
    """rlft's or the host's fault, not the program's: the sandbox could not run it as asked."""


class SandboxUnavailableError(SandboxError):
    """The selected sandbox cannot work on this machine (e.g. user namespaces are forbidden)."""


class Backend(Protocol):
    """One way to run untrusted programs. ``run_pair`` may raise ``SandboxError`` where a backend
    cannot connect two programs (a remote service)."""

    name: str
    strength: Literal["isolated", "weak"]

    def describe(self) -> str:
        """One line for logs and ``rlft check``: the mode and what it isolates."""
        ...

    def run(self, program: str, *, stdin: str, limits: Limits) -> SandboxResult: ...

    def run_pair(self, server: str, client: str, *, limits: Limits) -> SandboxResult:
        """Run two programs, each in its own sandbox, the client's stdout feeding the server's stdin
        and the server's stdout feeding the client's stdin; the client's result is returned once
        the client exits (the server is then killed)."""
        ...


SANDBOXES: Registry[Any] = Registry("sandbox")
"""Backend factories by name: ``SANDBOXES.get(name)(**params) -> Backend``."""
