"""``weak_process``: a fresh interpreter with resource limits and an audit hook, *no* OS isolation.

This is what rlft had before the ``namespaces`` sandbox, kept for machines that forbid user
namespaces (some container runtimes) and selected only by name (``reward.sandbox.name:
weak_process``). It is weak: the program runs as the caller's user, sees the host's files (the hook
refuses writes outside its directory and reads of ``$HOME``, the run directory and other
sandboxes, but a determined program can get past an audit hook, and some writes raise no write
event at all, such as ``ssl``'s key-log file), may reach the network where
``unshare -rn`` is unavailable, and can leave processes that left its process group. A policy
trained against it can learn to forge its scores; use it for trusted code only.

- **Processes.** The child leads a new session; its group is killed with ``SIGKILL`` on a timeout,
  an output overflow and after it exits.
- **Resources.** ``RLIMIT_CPU``, ``RLIMIT_AS``, ``RLIMIT_FSIZE``, ``RLIMIT_NOFILE``, ``RLIMIT_CORE``.
- **Network.** ``unshare -rn`` where the kernel allows it; the hook refuses ``socket.*`` events.
- **Files and environment.** A fresh temporary directory is its cwd, ``HOME`` and ``TMPDIR``; the
  environment is rebuilt from scratch. The directory is removed afterwards without recursion, so
  a deep tree cannot make the cleanup fail.
"""

from __future__ import annotations

import functools
import marshal
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from rewards.sandbox import process
from rewards.sandbox.base import SANDBOXES, Limits, SandboxResult
from rewards.sandbox.guard import bootstrap_source, rlimits

_PATH = "/usr/local/bin:/usr/bin:/bin"


class WeakProcess:
    """The ``weak_process`` backend (see the module docstring)."""

    name = "weak_process"
    strength = "weak"

    def __init__(self, *, unshare: bool = True, forbidden_dirs: Sequence[str] = ()) -> None:
        self.unshare = unshare
        self.forbidden_dirs = tuple(forbidden_dirs)

    def describe(self) -> str:
        net = "network namespace" if self.unshare and unshare_prefix() else "no network namespace"
        return f"weak_process (WEAK: no OS isolation; rlimits, audit hook, {net}; a policy can forge scores)"

    def run(self, program: str, *, stdin: str, limits: Limits) -> SandboxResult:
        return process.run(self.launch(program, limits), stdin, limits)

    def run_pair(self, server: str, client: str, *, limits: Limits) -> SandboxResult:
        return process.run_pair(self.launch(server, limits), self.launch(client, limits), limits)

    def launch(self, program: str, limits: Limits) -> process.Launch:
        workdir = tempfile.mkdtemp(prefix="rlft-sandbox-")
        try:
            with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as f:
                f.write(program)
            config = {
                "limits": rlimits(limits.cpu, limits.memory_mb, limits.max_file_bytes),
                "workdir": os.path.realpath(workdir),
                "forbidden": _forbidden_roots(workdir, self.forbidden_dirs),
            }
        except BaseException:
            remove_tree(workdir)
            raise
        argv = [*(unshare_prefix() if self.unshare else ()), sys.executable, "-S", "-s", "-B", "-P", "-c"]
        # marshal: the child parses its config without importing anything (json costs ~10 ms)
        argv += [bootstrap_source(), marshal.dumps(config).hex()]
        env = {
            "PATH": _PATH, "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir,
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
        }  # fmt: skip
        return process.Launch(argv, env, cwd=workdir, cleanup=functools.partial(remove_tree, workdir))


@SANDBOXES.register("weak_process", strength="weak")
def weak_process(*, unshare: bool = True) -> WeakProcess:
    """A fresh interpreter with limits and an audit hook; no OS isolation (WEAK, see ``rewards.sandbox.weak``)."""
    return WeakProcess(unshare=unshare)


def _forbidden_roots(workdir: str, extra: Sequence[str]) -> list[str]:
    """Resolved directories the child may not read: ``$HOME``, the cwd, the temp root (other
    sandboxes), ``extra``. ``/`` is dropped: it would forbid the whole system."""
    dirs = [os.path.expanduser("~"), os.getcwd(), os.path.dirname(workdir), *extra]
    roots = {os.path.realpath(d) for d in dirs}
    return sorted(roots - {"/"})


@functools.cache
def unshare_prefix() -> tuple[str, ...]:
    """``("/usr/bin/unshare", "-rn", "--")`` where a user + network namespace can be created
    unprivileged on this machine, else ``()``; probed once per process."""
    path = shutil.which("unshare")
    if path is None:
        return ()
    prefix = (path, "-rn", "--")
    try:
        probe = subprocess.run([*prefix, "true"], stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ()
    return prefix if probe.returncode == 0 else ()


def remove_tree(path: str) -> None:
    """Remove ``path`` however deep or long its tree, never following a link out of it, after
    giving back permissions the program took away. ``chmod -R`` and ``rm -rf`` walk the tree with
    ``fts`` (descriptor-relative, no recursion limit, links not followed); Python's own
    ``shutil.rmtree`` recurses, and a 1,100-deep tree made it raise ``RecursionError``."""
    for argv in (["chmod", "-R", "u+rwx", "--", path], ["rm", "-rf", "--one-file-system", "--", path]):
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
