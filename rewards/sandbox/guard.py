"""What runs first inside every local sandbox: the bootstrap that sets the limits, seals the few
functions that raise no audit event, installs the audit hook and runs ``main.py`` as ``__main__``.

The audit hook is a second layer, never the boundary: CPython's audit hooks can be bypassed by a
determined program (sub-interpreters, Tcl, rebuilt built-in modules, the hook's own closure reached
from a frame). Under ``namespaces`` the kernel holds the line; under ``weak_process`` this hook is
all there is between the program and the machine, which is why that mode is named weak.
"""

from __future__ import annotations

import functools
import inspect
import math


def rlimits(cpu_s: float, memory_mb: int, max_file_bytes: int) -> dict[str, tuple[int, int]]:
    """``(soft, hard)`` per resource; a CPU spin gets ``SIGXCPU``, then ``SIGKILL`` a second later.

    >>> rlimits(1.5, 256, 1024)["RLIMIT_CPU"], rlimits(1.5, 256, 1024)["RLIMIT_AS"]
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



@functools.cache
def bootstrap_source() -> str:
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

    if config.get("hook", True):  # off only to test the kernel's layers alone
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
