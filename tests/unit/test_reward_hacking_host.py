"""Reward hacking through the sandbox, the host's side: writing outside, reading host files and
secrets, links, sysctls and devices, the network, and memory/descriptor/disk limits. The threat model
and the attack driver are in ``test_reward_hacking.py`` and ``sandbox_attacks.py``."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import tempfile
import time
from pathlib import Path

import pytest

from sandbox_attacks import *  # noqa: F403  (the attack driver, host-side checks, fixtures)

pytestmark = pytest.mark.timeout(120)


# --- 3. files: writing outside, reading host secrets, links ------------------------------------------

_WRITE_OUTSIDE = """\
import ssl, signal
for path in TARGETS:
    attempt("create " + path, lambda: open(path, "w").write("pwned"))
    attempt("create via ../ " + path, lambda: open("../../../../../.." + path, "w").write("pwned"))
attempt("ssl keylog_filename", lambda: setattr(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), "keylog_filename", KEYLOG))
os.environ["SSLKEYLOGFILE"] = KEYLOG_ENV
attempt("SSLKEYLOGFILE", ssl.create_default_context)
attempt("overwrite", lambda: open(EXISTING, "w").write("pwned"))
attempt("append", lambda: open(EXISTING, "a").write("pwned"))
attempt("truncate", os.truncate, EXISTING, 0)
attempt("chmod", os.chmod, EXISTING, 0o777)
attempt("utime", os.utime, EXISTING, (0, 0))
attempt("rename", os.rename, EXISTING, EXISTING + ".moved")
attempt("unlink", os.unlink, EXISTING)
attempt("symlink over", os.symlink, "/tmp/x", EXISTING + ".link")
def semaphore():
    import _multiprocessing
    return _multiprocessing.SemLock(1, 1, 1, "/" + TAG + "-sem", False)  # kind SEMAPHORE; not unlinked
def shared_memory():
    import _posixshmem
    return _posixshmem.shm_open("/" + TAG + "-shm", os.O_CREAT | os.O_RDWR, 0o600)
attempt("POSIX semaphore", semaphore)
attempt("POSIX shared memory", shared_memory)
attempt("/dev/shm file", lambda: open("/dev/shm/" + TAG, "w").write("pwned"))
"""


@BACKENDS
def test_writing_outside_leaves_host_files_untouched(backend, host_dir, monkeypatch, tag):
    cwd = host_dir / "run"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # the caller's cwd: the run directory
    targets = [
        Path(tempfile.gettempdir()) / f"{tag}-tmp", Path("/tmp") / f"{tag}-slash-tmp", cwd / f"{tag}-cwd",
        Path.home() / f".{tag}-home", host_dir / f"{tag}-var-tmp",
    ]  # fmt: skip
    keylog, keylog_env = host_dir / f"{tag}-keylog", host_dir / f"{tag}-keylog-env"
    existing = host_dir / "existing.txt"
    existing.write_text("original")
    before = existing.stat()
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    code = attack(_WRITE_OUTSIDE, TARGETS=[str(t) for t in targets], KEYLOG=str(keylog), KEYLOG_ENV=str(keylog_env),
                  EXISTING=str(existing), TAG=tag)  # fmt: skip
    try:
        result = run(code, backend)
        assert "WAY testcapi" in result.stdout, result
        for target in [*targets, keylog, keylog_env]:
            assert not target.exists(), target
        after = existing.stat()
        assert existing.read_text() == "original"
        assert (after.st_mode, after.st_mtime_ns, after.st_ctime_ns) == (
            before.st_mode, before.st_mtime_ns, before.st_ctime_ns
        )  # fmt: skip
        assert sorted(p.name for p in host_dir.iterdir()) == ["existing.txt", "run"]
        if os.path.isdir("/dev/shm"):
            assert not [name for name in set(os.listdir("/dev/shm")) - shm_before if tag in name]
    finally:
        for target in targets:
            target.unlink(missing_ok=True)
        for name in os.listdir("/dev/shm") if os.path.isdir("/dev/shm") else ():
            if tag in name:
                os.unlink(os.path.join("/dev/shm", name))


_READ_HOST = """\
for path in FILES:
    attempt("read " + path, lambda: open(path).read())
for path in DIRS:
    attempt("list " + path, os.listdir, path)
attempt("own environment", lambda: dict(os.environ))
for pid in (os.getppid(), 1, HOST_PID, CALLER_PID):
    attempt("environ of %d" % pid, lambda: open("/proc/%d/environ" % pid).read())
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    attempt("environ of every process %s" % pid, lambda: open("/proc/%s/environ" % pid).read())
    attempt("cmdline of every process %s" % pid, lambda: open("/proc/%s/cmdline" % pid).read())
"""


@BACKENDS
def test_reading_host_files_and_environments_leaks_nothing(backend, host_dir, host_sleep, monkeypatch, secret, tag):
    cwd = host_dir / "run"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("RLFT_SECRET", secret)  # the caller's environment, and host_sleep's
    files = [cwd / "config.yaml", host_dir / "secret.txt", Path(tempfile.gettempdir()) / f"{tag}-secret"]
    if os.access(Path.home(), os.W_OK):
        files.append(Path.home() / f".{tag}-secret")
    for path in files:
        path.write_text(f"api_key: {secret}\n")
    dirs = [str(cwd), str(host_dir), str(Path.home()), tempfile.gettempdir()]
    code = attack(_READ_HOST, FILES=[str(f) for f in files], DIRS=dirs, HOST_PID=host_sleep.pid, CALLER_PID=os.getpid())
    try:
        result = run(code, backend, max_output_bytes=2**20)
        assert "WAY testcapi" in result.stdout, result
        assert "DONE own environment" in result.stdout  # the program ran its reads
        assert secret not in result.stdout + result.stderr
        listings = [line for line in result.stdout.splitlines() if line.startswith("DONE list")]
        assert not [line for line in listings if "config.yaml" in line or tag in line]
    finally:
        for path in files:
            path.unlink(missing_ok=True)


_LINKS = """\
os.chdir("/tmp")
attempt("symlink to the host dir", os.symlink, HOST_DIR, "d")
attempt("read through it", lambda: open("d/secret.txt").read())
attempt("write through it", lambda: open("d/" + TARGET_NAME, "w").write("pwned"))
attempt("symlink to the file", os.symlink, SECRET_FILE, "s")
attempt("read through the file link", lambda: open("s").read())
attempt("hard link to the file", os.link, SECRET_FILE, "h")
for root in ("/proc/1/root", "/proc/1/cwd", "/proc/self/root", "/proc/self/cwd", "/proc/self/root/../../..",
             "/proc/self/fd/0/../..", "/dev/stdin/../.."):
    attempt("read via " + root, lambda: open(root + SECRET_FILE).read())
    attempt("write via " + root, lambda: open(root + HOST_DIR + "/" + TARGET_NAME, "w").write("pwned"))
    attempt("link " + root, os.symlink, root, "r")
    attempt("read via link to " + root, lambda: open("r" + SECRET_FILE).read())
    attempt("unlink link", os.unlink, "r")
attempt("fd 0 as a directory anchor", lambda: os.open("..", os.O_RDONLY, dir_fd=0))
"""


@BACKENDS
def test_symlink_and_proc_tricks_reach_no_host_file(backend, host_dir, secret, tag):
    secret_file = host_dir / "secret.txt"
    secret_file.write_text(secret)
    code = attack(
        _LINKS, ways="plain, subinterpreter", HOST_DIR=str(host_dir), SECRET_FILE=str(secret_file), TARGET_NAME=tag
    )
    result = run(code, backend)
    assert "WAY subinterpreter" in result.stdout, result
    assert secret not in result.stdout + result.stderr
    assert sorted(p.name for p in host_dir.iterdir()) == ["secret.txt"]


_WRITE_SYSCTL = """\
value = int(open(SYSCTL).read())
def bump():
    fd = os.open(SYSCTL, os.O_WRONLY)
    try:
        return os.write(fd, str(value + 1).encode())
    finally:
        os.close(fd)
attempt("write a global sysctl", bump)  # kernel.core_pattern would be as writable: a host root shell
"""
_SYSCTL = "/proc/sys/kernel/printk_ratelimit"


@pytest.mark.skipif(not os.path.exists(_SYSCTL), reason=f"no {_SYSCTL} here")
@BACKENDS
def test_global_sysctls_are_not_writable(backend):
    # a root caller's program mapped to host uid 0 would pass every uid check on /proc/sys and could
    # write kernel.core_pattern (a host root shell); this one is harmless, and restored at once
    lock = open(__file__)  # noqa: SIM115  a concurrent session must not take a bumped value for the original
    fcntl.flock(lock, fcntl.LOCK_EX)
    before = Path(_SYSCTL).read_text()
    try:
        result = run(attack(_WRITE_SYSCTL, SYSCTL=_SYSCTL), backend)
        assert "WAY testcapi" in result.stdout, result
        assert Path(_SYSCTL).read_text() == before, result.stdout
    finally:
        if Path(_SYSCTL).read_text() != before:
            Path(_SYSCTL).write_text(before)
        lock.close()


_TOUCH_DEVICES = """\
for name in ("null", "zero", "full", "random", "urandom"):
    path = "/dev/" + name
    attempt("chmod " + path, os.chmod, path, os.stat(path).st_mode & 0o7777)  # the same mode: harmless
"""


@BACKENDS
def test_host_device_nodes_keep_their_metadata(backend):
    # with a root caller the program owns the host's device nodes: only a read-only bind stops a chmod
    # of the host's /dev/null (0o000 would break every non-root process on the host)
    devices = [Path("/dev", name) for name in ("null", "zero", "full", "random", "urandom")]
    before = [(d.stat().st_mode, d.stat().st_ctime_ns) for d in devices]
    result = run(attack(_TOUCH_DEVICES), backend)
    assert "WAY testcapi" in result.stdout, result
    assert [(d.stat().st_mode, d.stat().st_ctime_ns) for d in devices] == before, result.stdout


# --- 4. network ----------------------------------------------------------------------------------------

_CONNECT = """\
import socket
attempt("tcp", socket.create_connection, tuple(TCP), timeout=1)
def udp():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return s.sendto(b"pwned", tuple(UDP))
attempt("udp", udp)
for name, address in (("unix", UNIX), ("abstract", ABSTRACT)):
    def unix():
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            s.connect(address)
    attempt(name, unix)
def raw():  # the socket syscall itself, past any Python-level check
    import ctypes
    return ctypes.CDLL(None, use_errno=True).syscall(41, 2, 1, 0), ctypes.get_errno()
attempt("raw socket syscall", raw)
"""


@BACKENDS
def test_network_reaches_no_host_listener(backend, listeners):
    made, addresses = listeners
    result = run(attack(_CONNECT, **addresses), backend)
    assert "WAY testcapi" in result.stdout, result
    raw = [line for line in result.stdout.splitlines() if line.startswith("DONE raw socket syscall")]
    assert raw or backend is JAIL, result  # without the hook, ctypes loads in the plain way at least
    assert all(line.endswith("(-1, 1)") for line in raw), raw  # EPERM from the kernel
    assert_never_reached(made)


# --- 5. limits -----------------------------------------------------------------------------------------

_MEMFD = """\
def hold(fd):  # written, not mapped: a full tmpfs would answer a mapped page with SIGBUS
    chunk = b"x" * (1 << 20)
    for _ in range(1024):
        os.write(fd, chunk)
    return "HELD 1 GiB"
def raw_memfd():
    import ctypes
    fd = ctypes.CDLL(None, use_errno=True).syscall(319, b"x", 0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "memfd_create")
    return hold(fd)
attempt("memfd_create", lambda: hold(os.memfd_create("x")))
attempt("raw memfd_create", raw_memfd)
attempt("O_TMPFILE", lambda: hold(os.open("/tmp", os.O_TMPFILE | os.O_RDWR, 0o600)))
attempt("/dev/shm", lambda: hold(os.open("/dev/shm/x", os.O_CREAT | os.O_RDWR, 0o600)))
"""


@BACKENDS
def test_memfd_and_file_backed_memory_are_refused_or_counted(backend):
    result = run(attack(_MEMFD), backend, memory_mb=256, max_file_bytes=2**31)  # only memory may stop it
    assert "WAY testcapi" in result.stdout, result
    assert "HELD" not in result.stdout


_MMAP = """\
import mmap
def touch(m):
    for i in range(0, len(m), 1 << 16):
        m[i] = 1
    return "HELD %d MiB" % (len(m) >> 20)
attempt("anonymous", lambda: touch(mmap.mmap(-1, 1 << 31)))
NORESERVE = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000
attempt("anonymous noreserve", lambda: touch(mmap.mmap(-1, 1 << 31, flags=NORESERVE)))
attempt("shared", lambda: touch(mmap.mmap(-1, 1 << 31, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)))
"""


@BACKENDS
def test_big_anonymous_mmap_fails(backend):
    result = run(attack(_MMAP), backend, memory_mb=256)
    assert "WAY testcapi" in result.stdout, result
    assert "HELD" not in result.stdout
    assert result.stdout.count("REFUSED") >= 3, result


_RAISE_LIMITS = """\
import resource
UNLIMITED = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_NPROC"):
    which = getattr(resource, name)
    attempt("raise " + name, resource.setrlimit, which, UNLIMITED)
    attempt("prlimit " + name, resource.prlimit, 0, which, UNLIMITED)
attempt("realtime priority", os.sched_setscheduler, 0, os.SCHED_FIFO, os.sched_param(1))  # a CPU the host loses
attempt("negative nice", os.setpriority, os.PRIO_PROCESS, 0, -10)
attempt("allocate 1 GiB", lambda: len(bytearray(1 << 30)) and "HELD")
"""


@BACKENDS
def test_raising_its_own_limits_or_priority_is_refused(backend):
    result = run(attack(_RAISE_LIMITS), backend, memory_mb=256)
    assert "WAY testcapi" in result.stdout, result
    done = [line for line in result.stdout.splitlines() if line.startswith("DONE")]
    assert not done, done


_THREADS = """\
import _thread
_thread.stack_size(32768)  # the smallest stacks: as many threads as memory allows
hold = _thread.allocate_lock()
hold.acquire()
count, reserve = 0, bytearray(16 << 20)  # given back once the limit is reached, to report
try:
    while count < 20000:
        _thread.start_new_thread(hold.acquire, ())  # each blocks for good; no start-up handshake to hang on
        count += 1
except (RuntimeError, MemoryError):
    pass
del reserve
print("THREADS", count, len(os.listdir("/proc/self/task")), flush=True)
"""


@BACKENDS
def test_thread_bomb_is_bounded_and_leaves_nothing(backend):
    result = run(attack(_THREADS, ways="plain"), backend, memory_mb=256)
    assert result.status == "ok", result
    threads = int(result.stdout.split("THREADS ")[1].split()[0])
    assert threads < 20000  # the address-space limit stopped it
    assert_nothing_left(result)


_FORK_BOMB = """\
import time
forked = 0
def fork_many():
    global forked
    for _ in range(200):  # a bounded bomb: each child sleeps, then leaves
        if os.fork() == 0:
            time.sleep(3)
            os._exit(0)
        forked += 1
def raw_fork_many():
    global forked
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(200):
        pid = libc.syscall(57)
        if pid == 0:
            time.sleep(3)
            os._exit(0)
        if pid < 0:
            raise OSError(ctypes.get_errno(), "fork")
        forked += 1
attempt("fork bomb", fork_many)
attempt("raw fork bomb", raw_fork_many)
print("FORKED", forked, flush=True)
"""


@BACKENDS
def test_fork_bomb_is_refused_and_leaves_nothing(backend):
    result = run(attack(_FORK_BOMB), backend)
    assert "WAY testcapi" in result.stdout, result
    forked = [int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("FORKED")]
    assert forked and not any(forked), result
    assert_nothing_left(result)


_DEEP_TREE = """\
os.mkdir(TAG)
fd = os.open(TAG, os.O_RDONLY)
for _ in range(1100):  # descriptor-relative: the whole path is longer than PATH_MAX
    os.mkdir("d" * 50, dir_fd=fd)
    new = os.open("d" * 50, os.O_RDONLY, dir_fd=fd)
    os.close(fd)
    fd = new
print("DEEP", flush=True)
"""


@BACKENDS
def test_deep_directory_tree_returns_normally_and_leaves_nothing_on_the_host(backend, tag):
    temp_root = Path(tempfile.gettempdir())
    before = {p.name for p in temp_root.glob("rlft-sandbox-*")}
    result = run(attack(_DEEP_TREE, ways="plain", TAG=tag), backend)
    assert (result.status, result.stdout.splitlines()[-1]) == ("ok", "DEEP"), result
    assert tag not in tree_names(temp_root, depth=2)
    new = [p for p in temp_root.glob("rlft-sandbox-*") if p.name not in before]
    assert not [p for p in new if tag in tree_names(p, depth=1)]  # others' runs may be in there now


_FILL_TMP = """\
written = 0
try:
    with open("/tmp/fill", "wb") as f:
        while written < 64 << 20:
            f.write(b"x" * (1 << 20))
            f.flush()
            written += 1 << 20
except OSError as err:
    print("STOPPED", err.errno, flush=True)
print("WROTE", written, flush=True)
"""


@BACKENDS
def test_filling_tmp_is_bounded_by_disk_mb(backend):
    result = run(attack(_FILL_TMP, ways="plain"), backend, disk_mb=4, max_file_bytes=2**30)
    assert result.status == "ok", result
    assert f"STOPPED {errno.ENOSPC}" in result.stdout
    assert int(result.stdout.split("WROTE ")[1].split()[0]) <= 4 << 20


_EMPTY_FILES = """\
count = 0
try:
    while count < 20000:
        open("%s/f%d" % (WHERE, count), "w").close()  # no data: nothing a size limit counts
        count += 1
except OSError as err:
    print("STOPPED", err, flush=True)
print("FILES", count, flush=True)
"""


@BACKENDS
@pytest.mark.parametrize("where", ["/tmp", "/dev"])
def test_empty_files_are_bounded_by_disk_mb(backend, where):
    # an empty file costs ~1 KiB of kernel memory that neither disk_mb nor RLIMIT_AS counts: without
    # a tmpfs inode limit, ~65k files/s (400k files, 400 MiB of slab, with disk_mb=1)
    result = run(attack(_EMPTY_FILES, ways="subinterpreter", WHERE=where), backend, disk_mb=1)
    assert result.status == "ok", result
    assert int(result.stdout.split("FILES ")[1].split()[0]) < 20000  # 1 MiB of disk, 20k inodes: ~20 MiB


@BACKENDS
@pytest.mark.parametrize(
    "code",
    [
        "os.close(1)\nos.close(2)",
        "fd = os.open('/dev/null', os.O_WRONLY)\nos.dup2(fd, 1)\nos.dup2(fd, 2)",
        "os.dup2(0, 1)\nos.dup2(0, 2)\nos.write(1, b'x' * 4096)",  # stdout onto the stdin file
        "r, w = os.pipe()\nos.dup2(r, 1)\nos.dup2(r, 2)",
    ],
    ids=["closed", "devnull", "onto-stdin", "onto-a-pipe"],
)
def test_closing_or_redirecting_stdout_and_stderr_still_returns_at_once(backend, code):
    result = run(f"import os, time\n{code}\ntime.sleep(0.1)\nos._exit(0)", backend)
    assert (result.status, result.returncode) == ("ok", 0), result
    assert result.duration_s < 20.0  # its exit ended the run, not the 60 s deadline


_DESCRIPTORS = """\
held = []
try:
    while len(held) < 100000:
        held.extend(os.pipe())
except OSError as err:
    print("STOPPED", err.errno, flush=True)
print("FDS", len(held), flush=True)
"""


@BACKENDS
def test_exhausting_descriptors_is_bounded_and_returns(backend):
    result = run(attack(_DESCRIPTORS, ways="plain"), backend)
    assert result.status == "ok", result
    assert f"STOPPED {errno.EMFILE}" in result.stdout
    assert int(result.stdout.split("FDS ")[1].split()[0]) <= 64
