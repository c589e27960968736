"""``namespaces``: each program in fresh Linux namespaces, a private root and a seccomp filter.

The default sandbox. What bubblewrap (``bwrap``) does for Flatpak, done with the same kernel calls
by a small launcher shipped here (no setuid helper, no package to install; user namespaces are all
it needs). For every program:

- **Namespaces.** User, mount, PID, network, IPC, UTS and cgroup namespaces, all new. Inside, the
  program is an unprivileged user (uid 1000 mapped to the caller's uid, or to ``nobody`` when the
  caller is root, so that it owns no file or process of the host; its capabilities are gone once it
  is executed), PID 2 under a small init: when the program exits, the init exits and the kernel
  kills every process left in the namespace, whatever session or group it moved to.
- **Files.** A new root (a tmpfs, read-only once built) holding read-only bind mounts of ``/usr``
  (and ``/bin``, ``/lib``... where they are not links into it), the interpreter's prefix and
  ``/etc/ld.so.cache``; its own ``/proc`` (read-only); a read-only ``/dev`` (``null``, ``zero``,
  ``full``, ``random``, ``urandom``); and ``/tmp``, a private tmpfs of ``disk_mb`` (and at most
  ``64 * disk_mb`` files, whose inodes no size counts), its only writable place
  (cwd and ``$HOME``). No host directory beyond those is visible: not the run directory, not
  ``$HOME``, not the temp root of other sandboxes, not ``/run``'s sockets. Nothing is left on the
  host to clean up: the tmpfs goes with the namespace.
- **Network.** A network namespace with only a downed loopback, and no sockets of any family at all
  (the seccomp filter): no TCP, no AF_UNIX, no netlink.
- **Memory.** ``RLIMIT_AS`` counts every mapping; what it would not count is refused (``memfd_create``
  by the filter; ``/dev/shm`` does not exist) or bounded (``/tmp`` by its size and inode count, pipes
  by ``RLIMIT_NOFILE``); where a memory cgroup can be created (``rewards.sandbox.cgroup``), each
  program also runs in its own, which counts the kernel's memory on its behalf too. No new process can be created (the filter refuses ``fork`` and non-thread
  ``clone``), so the limit holds per program.
- **The filter** (``rewards.sandbox.seccomp``) also refuses ``ptrace``, reading other processes'
  memory, ``io_uring``, ``bpf``, the keyring, mounts and new namespaces; it is installed with
  ``no_new_privs`` and survives ``execve``.
- **Second layer.** The interpreter's bootstrap still sets the resource limits and installs the
  audit hook of ``rewards.sandbox.guard`` before ``main.py`` runs.

Where user namespaces cannot be created (a container runtime that forbids them, a disabled
``kernel.unprivileged_userns_clone``), selecting this backend fails with
``SandboxUnavailableError`` naming the reason; rlft never falls back to a weaker mode by itself.
"""

from __future__ import annotations

import functools
import inspect
import marshal
import os
import platform
import sys
import tempfile

from rewards.sandbox import cgroup as cgroups
from rewards.sandbox import process
from rewards.sandbox.base import SANDBOXES, Limits, SandboxError, SandboxResult, SandboxUnavailableError
from rewards.sandbox.guard import bootstrap_source, rlimits
from rewards.sandbox.cgroup import parent_dir as cgroup_parent
from rewards.sandbox.seccomp import build_filter

_TOP_LEVEL = ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "TMPDIR": "/tmp",
    "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
}  # fmt: skip


class Namespaces:
    """The ``namespaces`` backend (see the module docstring)."""

    name = "namespaces"
    strength = "isolated"

    def __init__(self, *, audit_hook: bool = True, cgroup: bool = True) -> None:
        self.audit_hook = audit_hook
        self.cgroup = cgroup and cgroup_parent() is not None

    def describe(self) -> str:
        memory = "a memory cgroup" if self.cgroup else "no memory cgroup (none writable here)"
        return (
            "namespaces (user, mount, pid, net, ipc, uts; read-only root, private /tmp tmpfs; seccomp: "
            f"no sockets, no new processes, no memfd; rlimits; {memory})"
        )

    def run(self, program: str, *, stdin: str, limits: Limits) -> SandboxResult:
        return process.run(self.launch(program, limits), stdin, limits)

    def run_pair(self, server: str, client: str, *, limits: Limits) -> SandboxResult:
        return process.run_pair(self.launch(server, limits), self.launch(client, limits), limits)

    def launch(self, program: str, limits: Limits) -> process.Launch:
        return launch(program, limits, self.audit_hook, self.cgroup)


@SANDBOXES.register("namespaces", strength="isolated")
def namespaces(*, audit_hook: bool = True, cgroup: bool = True) -> Namespaces:
    """Fresh user/mount/PID/network/IPC namespaces, a read-only root, a private tmpfs and a seccomp
    filter per program (see ``rewards.sandbox.jail``). Refuses to start where the kernel forbids it.
    ``audit_hook=False`` leaves out the interpreter's second layer (to test the kernel's alone);
    ``cgroup`` puts each program in a memory cgroup of its own where one can be created here."""
    problem = unavailable_reason()
    if problem:
        raise SandboxUnavailableError(
            f"the 'namespaces' sandbox cannot run on this machine: {problem}. Allow unprivileged user "
            "namespaces (sysctl kernel.unprivileged_userns_clone=1, or a container runtime that permits "
            "them), or select reward.sandbox {name: remote, params: {url: ...}} (a sandbox service on a "
            "machine that allows them), or accept reward.sandbox {name: weak_process}: no OS isolation, a "
            "policy can learn to forge its scores"
        )
    return Namespaces(audit_hook=audit_hook, cgroup=cgroup)


@functools.cache
def unavailable_reason() -> str | None:
    """Why ``namespaces`` cannot run here (probed once per process: one real program), or ``None``."""
    if platform.system() != "Linux":
        return f"it needs Linux, this is {platform.system()}"
    try:
        build_filter(platform.machine())
    except ValueError as err:
        return str(err)
    limits = Limits(timeout_s=30.0)
    try:
        result = process.run(launch("print(6 * 7)", limits), "", limits)
    except SandboxError as err:
        return str(err)
    if result.status != "ok" or result.stdout != "42\n":
        return f"a probe program did not run ({result.status}, exit {result.returncode}: {result.stderr[-300:]!r})"
    return None


def launch(program: str, limits: Limits, audit_hook: bool = True, cgroup: bool = False) -> process.Launch:
    """The launcher process for ``program``: its config travels on an unnamed file, its report on a pipe."""
    python = interpreter()
    guard = {
        "limits": rlimits(limits.cpu, limits.memory_mb, limits.max_file_bytes),
        "workdir": "/tmp",
        "forbidden": [],
        "hook": audit_hook,
    }
    config = {
        "program": program,
        "python": python,
        "argv": [python, "-S", "-s", "-B", "-P", "-c", bootstrap_source(), marshal.dumps(guard).hex()],
        "env": dict(_ENV),
        "binds": list(_binds(python)),
        "links": dict(_links()),
        "disk_kb": limits.disk_mb * 1024,
        "inodes": max(256, limits.disk_mb * 64),  # 4,096 files and directories for the default 64 MB
        "filter": _filter(),
        "cgroup_procs": cgroups.create(limits.memory_mb, limits.disk_mb) if cgroup else None,
    }
    config_file = tempfile.TemporaryFile()
    config_file.write(marshal.dumps(config))
    config_file.seek(0)
    config_fd = os.dup(config_file.fileno())
    config_file.close()
    report_r, report_w = os.pipe()
    argv = [python, "-S", "-s", "-B", "-P", "-c", _launcher_source(), str(config_fd), str(report_w)]
    done = functools.partial(cgroups.remove, config["cgroup_procs"])
    return process.Launch(argv, dict(_ENV), cwd="/", pass_fds=(config_fd, report_w), report_fd=report_r, cleanup=done)


@functools.cache
def interpreter() -> str:
    """The base interpreter (a virtual environment's ``python`` is a link to it)."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


@functools.cache
def _filter() -> bytes:
    return build_filter(platform.machine())


@functools.cache  # the host's layout, read once per process rather than once per program
def _binds(python: str) -> tuple[str, ...]:
    prefix = os.path.realpath(sys.base_prefix)
    paths = ["/usr", *[p for p in _TOP_LEVEL if os.path.isdir(p) and not os.path.islink(p)]]
    for extra in (prefix, os.path.dirname(python), "/etc/ld.so.cache"):
        if os.path.exists(extra) and not any(extra == p or extra.startswith(p + "/") for p in paths):
            paths.append(extra)
    return tuple(paths)


@functools.cache
def _links() -> dict[str, str]:
    return {p: os.readlink(p) for p in _TOP_LEVEL if os.path.islink(p)}


@functools.cache
def _launcher_source() -> str:
    return f"{inspect.getsource(_launcher)}\n_launcher()\n"


# --- Runs in the launcher (shipped as source: self-contained, stdlib imports inside) ---------------


def _launcher():
    """Outside: new namespaces, then fork the init (PID 1), wait for it. The init builds the root,
    forks the program (PID 2) under the seccomp filter, reports its wait status, exits."""
    import ctypes
    import marshal
    import os
    import signal
    import stat
    import sys

    config_fd, report_fd = int(sys.argv[1]), int(sys.argv[2])
    with os.fdopen(config_fd, "rb") as f:
        cfg = marshal.loads(f.read())
    libc = ctypes.CDLL(None, use_errno=True)

    def report(line):
        os.write(report_fd, line.encode("utf-8", "replace") + b"\n")

    def check(ret, what):
        if ret != 0:
            err = ctypes.get_errno()
            raise OSError(err, "%s: %s" % (what, os.strerror(err)))

    def mount(source, target, fstype, flags, data):
        enc = lambda s: s.encode() if s is not None else None  # noqa: E731
        check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), "mount " + target)

    def write(path, text):
        with open(path, "w") as f:
            f.write(text)

    RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, REC, PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
    NOATIME, NODIRATIME, RELATIME = 1024, 2048, 1 << 21
    # CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
    flags = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

    def locked(path):
        """The flags a remount in a user namespace must keep (the kernel locks them)."""
        f, out = os.statvfs(path).f_flag, 0
        for st, ms in ((1, RDONLY), (2, NOSUID), (4, NODEV), (8, NOEXEC), (1024, NOATIME), (2048, NODIRATIME), (4096, RELATIME)):  # noqa: E501
            if f & st:
                out |= ms
        return out

    def submounts(target):
        """``target`` and every mount point under it, from this mount namespace's table."""
        found = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split(" ")[4].encode().decode("unicode_escape")  # octal escapes: \\040
                if point == target or point.startswith(target + "/"):
                    found.append(point)
        return found

    def build_root():
        mount(None, "/", None, REC | PRIVATE, None)
        sources = [(path, os.open(path, os.O_PATH)) for path in cfg["binds"]]  # before /tmp is covered
        devices = [(name, os.open("/dev/" + name, os.O_PATH)) for name in ("null", "zero", "full", "random", "urandom")]
        root = "/tmp"
        mount("tmpfs", root, "tmpfs", NOSUID | NODEV, "size=1m,mode=0755")
        for path, fd in sources:
            target = root + path
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                os.mkdir(target)
            else:
                open(target, "w").close()
            mount("/proc/self/fd/%d" % fd, target, None, BIND | REC, None)
            for sub in submounts(target):  # a read-only remount is per mount: each one under it too
                mount(None, sub, None, REMOUNT | BIND | RDONLY | NOSUID | NODEV | locked(sub), None)
            os.close(fd)
        for link, target in cfg["links"].items():
            os.symlink(target, root + link)
        os.mkdir(root + "/proc")
        mount("proc", root + "/proc", "proc", RDONLY | NOSUID | NODEV | NOEXEC, None)
        os.mkdir(root + "/dev")
        mount("tmpfs", root + "/dev", "tmpfs", NOSUID | NOEXEC, "size=64k,nr_inodes=64,mode=0755")
        for name, fd in devices:
            target = root + "/dev/" + name
            open(target, "w").close()
            mount("/proc/self/fd/%d" % fd, target, None, BIND, None)
            # read-only: the node's owner may be the caller (root), who must not chmod the host's /dev/null;
            # reading and writing a device node is the driver's business, not the mount's
            mount(None, target, None, REMOUNT | BIND | RDONLY | NOSUID | NOEXEC | locked(target), None)
            os.close(fd)
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # noqa: E501
            os.symlink(target, root + "/dev/" + name)
        mount(None, root + "/dev", None, REMOUNT | BIND | RDONLY | NOSUID | NOEXEC, None)
        os.mkdir(root + "/tmp")
        # nr_inodes: empty files cost kernel memory that neither the size nor RLIMIT_AS counts
        tmp = "size=%dk,nr_inodes=%d,mode=0700" % (cfg["disk_kb"], cfg["inodes"])
        mount("tmpfs", root + "/tmp", "tmpfs", NOSUID | NODEV, tmp)
        with open(root + "/tmp/main.py", "w", encoding="utf-8") as f:
            f.write(cfg["program"])
        for path in (root + "/tmp", root + "/tmp/main.py"):
            os.chown(path, 1000, 1000)  # the program's
        os.chdir(root)
        check(libc.syscall(155 if os.uname().machine == "x86_64" else 41, b".", b"."), "pivot_root")
        check(libc.umount2(b".", 2), "umount2")  # MNT_DETACH: the old root is gone
        os.chdir("/")
        mount(None, "/", None, REMOUNT | BIND | RDONLY | NOSUID | NODEV, None)
        libc.sethostname(b"sandbox", 7)

    def start_program():
        if os.getuid() != 1000:  # a root caller's init: the program becomes uid 1000, host nobody
            os.setgroups([])
            os.setgid(1000)
            os.setuid(1000)  # from 0: every capability is dropped
        os.chdir("/tmp")
        os.setsid()  # its own process group: kill(0, ...) reaches nothing outside the namespace
        check(libc.prctl(38, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")  # noqa: E501
        program = cfg["filter"]

        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

        buf = ctypes.create_string_buffer(program, len(program))
        fprog = SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
        check(libc.prctl(22, 2, ctypes.byref(fprog), 0, 0), "prctl(PR_SET_SECCOMP)")  # SECCOMP_MODE_FILTER
        os.set_inheritable(report_fd, False)
        os.execve(cfg["python"], cfg["argv"], cfg["env"])

    def child():
        """In the new namespaces (mapped by the launcher): fork the init, wait for it."""
        init = os.fork()
        if init == 0:
            try:
                # a namespace's init ignores signals from inside it that it has no handler for;
                # Python's SIGINT handler would let the program end its own run with a KeyboardInterrupt
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                build_root()
                program = os.fork()
                if program == 0:
                    try:
                        start_program()
                    except BaseException as err:  # noqa: BLE001
                        report("E%s: %s" % (type(err).__name__, err))
                    os._exit(125)
            except BaseException as err:  # noqa: BLE001  any setup fault is the sandbox's, reported as such
                report("E%s: %s" % (type(err).__name__, err))
                os._exit(125)
            while True:
                pid, status = os.waitpid(-1, 0)
                if pid == program:
                    report("X%d" % status)
                    os._exit(0)
        report("P%d" % init)  # the parent waits for it if it has to kill us
        _, status = os.waitpid(init, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)

    # The namespaces are created by a child and mapped from out here: only a process outside the new
    # user namespace may map two ids, which a root caller needs (its own uid for the init, which builds
    # the root, and nobody's for the program, so that the program owns nothing of the host)
    if cfg["cgroup_procs"]:  # before anything forks: every process of the run is charged to it
        try:
            write(cfg["cgroup_procs"], str(os.getpid()))
        except OSError as err:
            report("Ejoining the memory cgroup: %s" % err)
            os._exit(125)
    uid, gid = os.geteuid(), os.getegid()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(go_w)
        try:
            check(libc.unshare(flags), "unshare")
        except OSError as err:
            report("E%s" % err)
            os._exit(125)
        os.write(ready_w, b"u")
        if os.read(go_r, 1) != b"g":
            os._exit(125)
        child()
    os.close(ready_w)
    os.close(go_r)
    try:
        if os.read(ready_r, 1) == b"u":
            if uid == 0:
                maps = ("0 0 1\n1000 65534 1\n", "0 0 1\n1000 65534 1\n")
            else:
                write("/proc/%d/setgroups" % pid, "deny")
                maps = ("1000 %d 1\n" % uid, "1000 %d 1\n" % gid)
            write("/proc/%d/uid_map" % pid, maps[0])
            write("/proc/%d/gid_map" % pid, maps[1])
            os.write(go_w, b"g")
    except OSError as err:
        report("Emapping the user namespace: %s" % err)
    os.close(report_fd)
    os.close(go_w)
    _, status = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
