"""Run untrusted Python code (a model's completion) in an isolated, short-lived process.

``run_sandboxed(code)`` starts a fresh interpreter (``python -S -s -B -P``: the standard library
only, no site-packages, no ``.pyc`` files, no script directory on ``sys.path``; ``-I`` without
its ``-E``, because the environment is built here and its ``PYTHONHASHSEED=0`` should apply),
waits for it under a wall-clock deadline and returns a ``SandboxResult``. Containment comes in
layers, so that each hostile case is stopped by the kernel where possible and by the interpreter
where not:

- **Processes.** The child leads a new session (``start_new_session``), so it and anything it
  started form one process group; the group is killed with ``SIGKILL`` on a timeout or an output
  overflow, and again once the child has exited, before it is reaped (so its pid, the group's id,
  cannot have been reused). Forking is refused by the audit hook below; ``RLIMIT_NPROC`` is not used
  because it counts every process of the user on the machine (a Ray node runs many).
- **Resources.** Before the user's code runs the child sets ``RLIMIT_CPU``, ``RLIMIT_AS``
  (``memory_mb``), ``RLIMIT_FSIZE``, ``RLIMIT_NOFILE`` and ``RLIMIT_CORE=0``, never above a limit the
  caller already has. A memory bomb gets ``MemoryError``; a CPU spin gets ``SIGXCPU`` (then
  ``SIGKILL``) if the wall-clock deadline has not already ended it.
- **Output.** The parent reads both pipes itself (``selectors``) and kills the group as soon as
  either passes ``max_output_bytes``: printing a gigabyte ends once the cap is read, and the
  parent never holds more than the cap plus one 64 KiB chunk per stream.
- **Network.** Where the machine allows unprivileged user namespaces, the child runs under
  ``unshare -rn``: a network namespace whose only interface, loopback, is down (probed once per
  process). Independently of that, the audit hook refuses every ``socket.*`` event.
- **Files and environment.** A fresh temporary working directory (removed afterwards) is the
  child's cwd, ``HOME`` and ``TMPDIR``; the environment is rebuilt from scratch, so none of the
  caller's variables (tokens, keys) leak. The audit hook refuses writes outside that directory and
  reads under the caller's ``$HOME``, its cwd (the run directory), the temp root (other sandboxes) and
  ``forbidden_dirs``, the interpreter's own library excepted, and other processes' ``/proc`` entries.
  Paths are resolved symlink by symlink; a relative path with ``..`` is refused (it could be
  relative to a ``dir_fd`` elsewhere), and so are links and directory descriptors outside the
  working directory. The user namespace does not restrict files: these rules are the hook's alone.
- **Interpreter guard.** A bootstrap (``_child_main``) installs a ``sys.addaudithook`` hook, which
  cannot be removed, before it executes the user's code as ``__main__``. The hook refuses process
  creation (``subprocess.Popen``, ``os.system``, ``os.exec*``, ``os.posix_spawn``, ``os.fork``,
  ``os.forkpty``), ``ctypes`` (events and the import), ``syslog``, signals to other processes,
  raising resource limits, tracing and the ``gc`` walks that could reach the hook, and imports of
  C modules that write files without audit events (``sqlite3``, ``dbm``, shared memory). It reads nothing from
  globals or builtins at call time, so monkeypatching modules cannot change what it allows. The few
  functions that raise no audit event (``_posixsubprocess.fork_exec``, ``os.pidfd_open``,
  ``signal.pidfd_send_signal``, ``os.mkfifo``, ``os.mknod``) are replaced before the user's code
  runs, and re-importing their modules is refused.

The audit hook is a guard against naive or accidental harm, not a security boundary against a
determined attacker (CPython's documentation says as much); the kernel layers (process group,
resource limits, namespaces, environment) are the ones that hold regardless. Without ``unshare``
(no binary, or user namespaces disabled) the network is closed by the hook alone.

>>> run_sandboxed("print(6 * 7)").stdout
'42\\n'
>>> run_sandboxed("import socket; socket.socket()").status
'error'
"""

from __future__ import annotations

import functools
import inspect
import marshal
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Literal

Status = Literal["ok", "error", "timeout", "killed", "output_limit"]

_CHUNK = 64 * 1024
_POLL_S = 0.02  # how often the child's exit is polled where pidfd_open is unavailable
_PATH = "/usr/local/bin:/usr/bin:/bin"


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


def run_sandboxed(
    code: str,
    *,
    stdin: str = "",
    timeout_s: float = 5.0,
    cpu_s: float | None = None,
    memory_mb: int = 512,
    max_output_bytes: int = 64 * 1024,
    max_file_bytes: int = 16 * 2**20,
    forbidden_dirs: Sequence[str] = (),
    unshare: bool = True,
) -> SandboxResult:
    """Run ``code`` as ``__main__`` of a fresh, isolated Python process and collect its result.

    ``cpu_s`` (default ``timeout_s``) is the CPU-time limit, ``memory_mb`` the address-space limit,
    ``max_file_bytes`` the size limit of any file written. ``forbidden_dirs`` adds directories the
    code may not read to ``$HOME``, the caller's cwd and the temp root. ``unshare=False`` skips the
    network namespace (the audit hook still refuses sockets).

    >>> r = run_sandboxed("import sys; print(sys.stdin.read().upper())", stdin="hi")
    >>> r.status, r.returncode, r.stdout
    ('ok', 0, 'HI\\n')
    >>> run_sandboxed("while True: pass", timeout_s=0.5).status in ("timeout", "killed")
    True
    """
    workdir = tempfile.mkdtemp(prefix="rlft-sandbox-")
    try:
        with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as f:
            f.write(code)
        config = {
            "limits": _limits(timeout_s if cpu_s is None else cpu_s, memory_mb, max_file_bytes),
            "workdir": os.path.realpath(workdir),
            "forbidden": _forbidden_roots(workdir, forbidden_dirs),
        }
        argv = [*(_unshare_prefix() if unshare else ()), sys.executable, "-S", "-s", "-B", "-P", "-c"]
        # marshal: the child parses its config without importing anything (json costs ~10 ms)
        argv += [_bootstrap_source(), marshal.dumps(config).hex()]
        with tempfile.TemporaryFile() as stdin_file:  # unnamed: a file, so no writer thread is needed
            stdin_file.write(stdin.encode())
            stdin_file.seek(0)
            return _run(argv, workdir, stdin_file, timeout_s, max_output_bytes)
    finally:
        _remove_tree(workdir)


def _run(argv: list[str], workdir: str, stdin: IO[bytes], timeout_s: float, cap: int) -> SandboxResult:
    start = time.monotonic()
    env = {
        "PATH": _PATH,
        "LANG": "C.UTF-8",
        "HOME": workdir,
        "TMPDIR": workdir,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
    }
    proc = subprocess.Popen(
        argv,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=workdir,
        env=env,
        start_new_session=True,
    )
    with proc:
        try:
            verdict, out, err = _supervise(proc, start + timeout_s, cap)
        finally:
            _kill_group(proc.pid)  # also after a normal exit: whatever the child left behind
            returncode = proc.wait()
    status: Status = verdict or ("ok" if returncode == 0 else "killed" if returncode < 0 else "error")
    return SandboxResult(status, returncode, _text(out, cap), _text(err, cap), time.monotonic() - start)


def _supervise(proc: subprocess.Popen, deadline: float, cap: int) -> tuple[Status | None, bytes, bytes]:
    """Stdout, stderr and ``timeout``/``output_limit`` if the run was cut short. Never reaps the
    child (so its pid, the group's id, stays valid for ``_kill_group``)."""
    assert proc.stdout is not None and proc.stderr is not None
    out, err = bytearray(), bytearray()
    pidfd = _pidfd(proc.pid)
    try:
        verdict = _pump(proc.pid, pidfd, {proc.stdout.fileno(): out, proc.stderr.fileno(): err}, deadline, cap)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return verdict, bytes(out), bytes(err)


def _pump(pid: int, pidfd: int | None, buffers: dict[int, bytearray], deadline: float, cap: int) -> Status | None:
    """Read the pipes into ``buffers`` until the child has exited and they are drained, the deadline
    passes (``timeout``) or one passes ``cap`` bytes (``output_limit``)."""
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
                    _kill_group(pid)  # whatever it left behind; lets the pipes reach EOF
                    continue
                chunk = os.read(key.fd, _CHUNK)
                if not chunk:
                    sel.unregister(key.fd)
                buffers[key.fd] += chunk
                if len(buffers[key.fd]) > cap:
                    return "output_limit"
            if pidfd is None and not exited and _has_exited(pid):
                exited = True
                _kill_group(pid)
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


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _text(data: bytes, cap: int) -> str:
    return data[:cap].decode("utf-8", errors="replace")


def _limits(cpu_s: float, memory_mb: int, max_file_bytes: int) -> dict[str, tuple[int, int]]:
    """``(soft, hard)`` per resource; a CPU spin gets ``SIGXCPU``, then ``SIGKILL`` a second later.

    >>> _limits(1.5, 256, 1024)["RLIMIT_CPU"], _limits(1.5, 256, 1024)["RLIMIT_AS"]
    ((2, 3), (268435456, 268435456))
    """
    cpu = max(1, math.ceil(cpu_s))
    memory = memory_mb * 2**20
    return {
        "RLIMIT_CPU": (cpu, cpu + 1),
        "RLIMIT_AS": (memory, memory),
        "RLIMIT_FSIZE": (max_file_bytes, max_file_bytes),
        "RLIMIT_NOFILE": (64, 64),
        "RLIMIT_CORE": (0, 0),
    }


def _forbidden_roots(workdir: str, extra: Sequence[str]) -> list[str]:
    """Resolved directories the child may not read: ``$HOME``, the cwd, the temp root (other
    sandboxes), ``extra``. ``/`` is dropped: it would forbid the whole system."""
    dirs = [os.path.expanduser("~"), os.getcwd(), os.path.dirname(workdir), *extra]
    roots = {os.path.realpath(d) for d in dirs}
    return sorted(roots - {"/"})


@functools.cache
def _unshare_prefix() -> tuple[str, ...]:
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


def _remove_tree(path: str) -> None:
    """Remove the working directory even where the child took away its own permissions."""
    _make_writable(path)
    for root, dirs, _ in os.walk(path):  # top-down: each directory is fixed before it is listed
        for name in dirs:
            _make_writable(os.path.join(root, name))
    shutil.rmtree(path, ignore_errors=True)


def _make_writable(directory: str) -> None:
    if not os.path.islink(directory):  # chmod would follow a link out of the working directory
        try:
            os.chmod(directory, 0o700)
        except OSError:
            pass


@functools.cache
def _bootstrap_source() -> str:
    """The ``-c`` program of the child: the two functions below, then a call of ``_child_main``."""
    return f"{inspect.getsource(_make_guard)}\n{inspect.getsource(_child_main)}\n_child_main()\n"


# --- Runs in the child (shipped as source, so: self-contained, stdlib imports inside) -------------


def _child_main():
    """Set the limits, seal the functions without audit events, install the guard, run ``main.py``."""
    import marshal
    import posix
    import resource
    import sys

    config = marshal.loads(bytes.fromhex(sys.argv[1]))
    for name, (soft, hard) in config["limits"].items():
        which = getattr(resource, name)
        _, current = resource.getrlimit(which)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(which, (soft, hard))
    with open("main.py", encoding="utf-8") as f:
        source = f.read()
    posix.unlink("main.py")  # the code starts in an empty directory

    def refusing(name):
        def refused(*args, **kwargs):
            raise PermissionError("sandbox: %s is not allowed" % name)

        return refused

    import _posixsubprocess
    import _signal

    # Functions that raise no audit event. os and signal (not loaded under -S) copy them on import.
    for module in (_posixsubprocess, posix, _signal, sys.modules.get("os"), sys.modules.get("signal")):
        for name in ("fork_exec", "pidfd_open", "pidfd_send_signal", "mkfifo", "mknod"):
            if hasattr(module, name):
                setattr(module, name, refusing(name))

    readable = [config["workdir"]] + [p for p in sys.path if p.startswith("/")]
    sys.addaudithook(_make_guard(config["workdir"], readable, config["forbidden"], posix.getpid()))
    main = vars(sys.modules["__main__"])
    del main["_make_guard"], main["_child_main"]
    sys.argv = ["main.py"]
    try:
        exec(compile(source, "main.py", "exec"), main)
    except SystemExit:
        raise
    except BaseException as err:  # printed without this bootstrap's frame
        err.__traceback__ = err.__traceback__.tb_next if err.__traceback__ is not None else None
        sys.excepthook(type(err), err, err.__traceback__)
        raise SystemExit(1) from None


def _make_guard(workdir, readable, forbidden, pid):
    """The audit hook. Everything it uses is bound here, in its closure: no global or builtin is
    looked up when it runs, so code that monkeypatches modules cannot change its decisions."""
    import posix

    lstat, readlink, getcwd, stat = posix.lstat, posix.readlink, posix.getcwd, posix.stat
    Refused, OSError_, str_, bytes_, int_, type_ = PermissionError, OSError, str, bytes, int, type
    writes = posix.O_WRONLY | posix.O_RDWR | posix.O_CREAT | posix.O_TRUNC | posix.O_APPEND
    own_proc = "/proc/%d" % pid
    read_ok = tuple(r.rstrip("/") for r in readable)
    read_bad = tuple(r.rstrip("/") for r in forbidden)
    refused_events = frozenset(
        {
            "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.fork", "os.forkpty",
            "os.symlink", "os.link", "os.killpg", "resource.setrlimit", "resource.prlimit", "sys.settrace",
            "sys.setprofile", "sys.monitoring.register_callback", "sys._current_frames", "gc.get_objects",
            "gc.get_referrers", "gc.get_referents",
        }
    )  # fmt: skip
    refused_prefixes = ("socket.", "ctypes.", "syslog.")
    refused_imports = frozenset(  # the sealed modules (a re-import restores them), and C code that
        {"ctypes", "_ctypes", "_posixsubprocess", "posix", "_signal",  # writes files unaudited
         "_posixshmem", "_sqlite3", "_dbm", "_gdbm", "readline"}
    )  # fmt: skip
    read_events = frozenset({"os.listdir", "os.scandir"})
    write_events = frozenset(
        {"os.mkdir", "os.rmdir", "os.remove", "os.truncate", "os.utime", "os.chmod", "os.chown",
         "os.setxattr", "os.removexattr"}
    )  # fmt: skip

    def under(path, roots):
        for root in roots:
            if path == root or path.startswith(root + "/"):
                return True
        return False

    def resolve(path):
        """The real absolute path (symlinks followed, like ``os.path.realpath``); ``None`` for what
        cannot be judged: a relative path with ``..`` (it may be relative to a ``dir_fd``), odd types."""
        if type_(path) is bytes_:
            path = path.decode("utf-8", "surrogateescape")
        if type_(path) is not str_:
            return None
        if not path.startswith("/"):
            if ".." in path.split("/"):
                return None
            path = getcwd() + "/" + path
        pending, resolved, hops = path.split("/")[::-1], "", 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                resolved = resolved[: resolved.rfind("/")]
                continue
            candidate = resolved + "/" + part
            try:
                is_link = lstat(candidate).st_mode & 0o170000 == 0o120000
            except OSError_:
                is_link = False
            if not is_link:
                resolved = candidate
                continue
            hops += 1
            if hops > 40:
                return None
            target = readlink(candidate)
            if target.startswith("/"):
                resolved = ""
            pending.extend(target.split("/")[::-1])
        return resolved or "/"

    def check_read(path, event, directory_fd=False):
        if type_(path) is int_ or path is None:
            return
        real = resolve(path)
        if real is None:
            raise Refused("sandbox: %s of %r is not allowed" % (event, path))
        if directory_fd and not under(real, (workdir,)):  # a descriptor that would anchor dir_fd= paths
            try:
                is_dir = stat(real).st_mode & 0o170000 == 0o040000
            except OSError_:
                is_dir = False
            if is_dir:
                raise Refused("sandbox: opening directory %r is not allowed" % (path,))
        if under(real, read_ok):
            return
        other_proc = real.startswith("/proc/") and real[6:].split("/")[0].isdigit() and not under(real, (own_proc,))
        if other_proc or under(real, read_bad):
            raise Refused("sandbox: reading %r is not allowed" % (path,))

    def check_write(path, event):
        if type_(path) is int_ or path in ("/dev/null", b"/dev/null"):
            return
        real = resolve(path)
        if real is None or not under(real, (workdir,)):
            raise Refused("sandbox: %s of %r outside the working directory is not allowed" % (event, path))

    def hook(event, args):
        if event in refused_events or event.startswith(refused_prefixes):
            raise Refused("sandbox: %s is not allowed" % event)
        if event == "open":
            path, mode, flags = args
            if flags & writes:
                check_write(path, "writing")
            else:
                check_read(path, "open", directory_fd=mode is None)
        elif event == "import":
            if args[0] in refused_imports:
                raise Refused("sandbox: importing %s is not allowed" % args[0])
        elif event in read_events:
            check_read(args[0], event)
        elif event in write_events:
            check_write(args[0], event)
        elif event == "os.rename":
            check_write(args[0], event)
            check_write(args[1], event)
        elif event == "os.chdir":
            check_write(args[0], event)  # the cwd stays inside the workdir
        elif event == "os.kill" and args[0] != pid:
            raise Refused("sandbox: signalling other processes is not allowed")

    return hook
