"""Reward hacking through the sandbox: attacks that worked against the old, audit-hook-based
sandbox, run through the real ``namespaces`` jail, each asserting that its specific harm did not
happen (checked from outside wherever possible: host files, host processes, host listeners).

Threat model: the program is an RL policy's completion, optimised against the reward, so it will
find and use any way to raise it: leave a process behind to rewrite the next program or its tests,
read the expected answers or secrets from the host, write outside its directory, talk to the
network, exhaust the host's memory or processes, or kill its supervisor. It runs as arbitrary
Python (ctypes included, once the audit hook is bypassed), often for a caller that is root. The
audit hook is a second layer only: every attack runs twice, under the default jail and under the
jail without the hook (``audit_hook=False``), and most also run inside sub-interpreters, which the
hook never sees.

Processes and the audit hook here; files, network and limits in ``test_reward_hacking_host.py``."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from sandbox_attacks import *  # noqa: F403  (the attack driver, host-side checks, fixtures)

pytestmark = pytest.mark.timeout(120)


# --- 1. a process that outlives the program, to rewrite the next one --------------------------------

# What an escaped process would do: for 5 s, rewrite every main.py it can find to print PWNED.
_CHILD = """\
import glob, os, sys, tempfile, time
end = time.time() + 5
while time.time() < end:
    for root in {"/tmp", "/var/tmp", tempfile.gettempdir()}:
        for path in glob.glob(root + "/**/main.py", recursive=True):
            try:
                with open(path, "w") as f:
                    f.write("print('PWNED')")
            except OSError:
                pass
    time.sleep(0.01)
"""

_ESCAPE = """\
import subprocess
argv = [sys.executable, "-c", CHILD, MARKER]  # the marker names the escaped process on the host

def in_child(then):  # a forked child never returns into the attack
    try:
        then()
    finally:
        os._exit(0)

def double_fork():
    pid = os.fork()
    if pid == 0:
        in_child(lambda: (os.setsid(), os.fork() or os.execv(sys.executable, argv)))
    os.waitpid(pid, 0)
    return pid

def raw_syscalls():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    started = []
    for name, nr, args in (("fork", 57, ()), ("clone(SIGCHLD)", 56, (17, 0, 0, 0, 0))):
        pid = libc.syscall(nr, *args)
        if pid == 0:
            in_child(lambda: (os.setsid(), os.execv(sys.executable, argv)))
        started.append((name, pid, ctypes.get_errno()))
    return started

def rebuilt_posix():  # a fresh copy of the built-in module: none of the sealed functions
    import importlib.machinery, importlib.util
    spec = importlib.machinery.BuiltinImporter.find_spec("posix")
    posix = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(posix)
    return posix.posix_spawn(sys.executable, argv, dict(os.environ), setsid=True)

attempt("double fork + setsid", double_fork)
attempt("Popen(start_new_session=True)", subprocess.Popen, argv, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
attempt("posix_spawn(setsid=True)", os.posix_spawn, sys.executable, argv, dict(os.environ), setsid=True)
attempt("raw fork/clone via ctypes", raw_syscalls)
attempt("rebuilt posix.posix_spawn", rebuilt_posix)
attempt("setsid of the program itself", os.setsid)
"""


@BACKENDS
def test_escaping_process_does_not_outlive_the_run_or_touch_later_runs(backend, tag):
    result = run(attack(_ESCAPE, CHILD=_CHILD, MARKER=tag), backend)
    assert "WAY testcapi" in result.stdout, result
    assert_nothing_left(result, marker=tag)
    assert_later_runs_unaffected(backend)
    assert_nothing_left(result, marker=tag)


_MAIN_THREAD_EXITS = """\
import os, threading, time
print("NS", os.readlink("/proc/self/ns/pid"), flush=True)
threading.Thread(target=exec, args=(CHILD,)).start()
time.sleep(0.05)
EXIT = "import ctypes\\nctypes.CDLL(None).syscall(60, 0)"  # SYS_exit: the main thread alone
try:
    exec(EXIT)
except PermissionError:  # the audit hook refuses ctypes: a sub-interpreter does not
    import _testcapi
    _testcapi.run_in_subinterp(EXIT)
"""


@BACKENDS
def test_thread_outliving_the_main_thread_ends_at_the_deadline(backend):
    result = run(f"CHILD = {_CHILD!r}\n{_MAIN_THREAD_EXITS}", backend, timeout_s=1.0)
    assert result.status == "timeout", result  # the rewriting thread lived on: the deadline ended it
    assert_nothing_left(result)
    assert_later_runs_unaffected(backend)


# --- 2. ways around the audit hook: the kernel must still refuse what they reach ---------------------

_WRITE_KILL_CONNECT = """\
import socket, signal
attempt("write a host file", lambda: open(HOST_FILE, "w").write("pwned"))
attempt("kill a host process", os.kill, HOST_PID, signal.SIGKILL)
attempt("pidfd_open a host process", os.pidfd_open, HOST_PID)
attempt("connect to a host server", socket.create_connection, tuple(TCP), timeout=1)
"""


@BACKENDS
def test_subinterpreter_cannot_write_kill_or_connect(backend, host_dir, host_sleep, listeners, tag):
    made, addresses = listeners
    host_file = host_dir / f"{tag}-subinterpreter"
    code = attack(_WRITE_KILL_CONNECT, ways=BYPASS_ONLY, HOST_FILE=str(host_file), HOST_PID=host_sleep.pid, **addresses)
    result = run(code, backend)
    assert "WAY testcapi" in result.stdout, result
    assert not host_file.exists()
    assert_alive(host_sleep)
    assert_never_reached(made)


def _has_tcl() -> bool:
    try:
        import _tkinter  # noqa: F401
    except ImportError:
        return False
    return True


_TCL = """\
import tkinter
tcl = attempt("start Tcl", tkinter.Tcl)  # Tcl's own exec, open and socket: no audit event is ever raised
if tcl is None:
    raise SystemExit("NO TCL")
attempt("tcl exec touch", tcl.eval, "exec /usr/bin/touch {%s}" % EXEC_FILE)
attempt("tcl exec kill", tcl.eval, "exec /bin/kill -9 %d" % HOST_PID)
attempt("tcl open", tcl.eval, "set f [open {%s} w]; puts $f pwned; close $f" % OPEN_FILE)
attempt("tcl socket", tcl.eval, "socket %s %d" % tuple(TCP))
"""


@pytest.mark.skipif(not _has_tcl(), reason="_tkinter is not importable in the base interpreter")
@BACKENDS
def test_tcl_cannot_exec_open_or_connect(backend, host_dir, host_sleep, listeners, tag):
    made, addresses = listeners
    exec_file, open_file = host_dir / f"{tag}-tcl-exec", host_dir / f"{tag}-tcl-open"
    code = attack(
        _TCL, ways="plain", EXEC_FILE=str(exec_file), OPEN_FILE=str(open_file), HOST_PID=host_sleep.pid, **addresses
    )
    result = run(code, backend)
    if "NO TCL" in result.stdout + result.stderr:
        pytest.skip(f"Tcl does not start inside the jail: {result.stdout[-300:]}")
    assert "tcl exec touch" in result.stdout, result  # it got as far as Tcl
    assert not exec_file.exists() and not open_file.exists()
    assert_alive(host_sleep)
    assert_never_reached(made)


_REBUILT_MODULES = """\
import importlib.machinery, importlib.util
def rebuilt(name):  # a fresh copy of a built-in module, whatever the bootstrap sealed in the old one
    spec = importlib.machinery.BuiltinImporter.find_spec(name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
posix, _signal = rebuilt("posix"), rebuilt("_signal")
print("REBUILT", posix is not sys.modules.get("posix"), flush=True)
attempt("pidfd_send_signal", lambda: _signal.pidfd_send_signal(posix.pidfd_open(HOST_PID), 9))
attempt("posix.kill", posix.kill, HOST_PID, 9)
attempt("posix.killpg", posix.killpg, HOST_PID, 9)
"""


@BACKENDS
def test_rebuilt_builtin_modules_cannot_signal_a_host_process(backend, host_sleep):
    result = run(attack(_REBUILT_MODULES, HOST_PID=host_sleep.pid), backend)
    assert "REBUILT True" in result.stdout, result
    assert_alive(host_sleep)


_PATCH_THE_HOOK = """\
import os
patched = False
try:
    open(HOST_FILES[0], "w")
except PermissionError as err:  # refused by the audit hook: its frames are in the traceback
    tb = err.__traceback__
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            for cell in getattr(value, "__closure__", None) or ():
                try:
                    if getattr(cell.cell_contents, "__name__", "") == "under":
                        cell.cell_contents = lambda path, roots: True  # every path is now "inside"
                        patched = True
                except ValueError:  # an empty cell
                    pass
        tb = tb.tb_next
except OSError:
    pass
print("PATCHED", patched, flush=True)
for path in HOST_FILES:
    attempt("write " + path, lambda: open(path, "w").write("pwned"))
attempt("read the secret", lambda: open(SECRET_FILE).read())
attempt("read /proc/1/environ", lambda: open("/proc/1/environ").read())
attempt("read the host process's environ", lambda: open("/proc/%d/environ" % HOST_PID).read())
"""


@BACKENDS
def test_patched_audit_hook_closure_still_cannot_write_or_read_outside(backend, host_dir, host_sleep, secret, tag):
    secret_file = host_dir / "secret.txt"
    secret_file.write_text(secret)
    targets = [host_dir / f"{tag}-patched", Path(tempfile.gettempdir()) / f"{tag}-patched"]
    code = attack(_PATCH_THE_HOOK, ways="plain", HOST_FILES=[str(t) for t in targets], SECRET_FILE=str(secret_file),
                  HOST_PID=host_sleep.pid)  # fmt: skip
    result = run(code, backend)
    # the attack only proves something if it patched the hook (a changed guard needs a changed attack)
    assert f"PATCHED {backend is JAIL}" in result.stdout, result
    assert not any(t.exists() for t in targets)
    assert secret not in result.stdout + result.stderr




# --- 6. killing the supervisor ---------------------------------------------------------------------------


@BACKENDS
@pytest.mark.parametrize(
    "kill",
    [
        "os.kill(os.getppid(), 9)",
        "os.kill(1, 9)",
        "os.kill(1, signal.SIGINT)",  # the init is Python: SIGINT is the one signal it handles
        "os.kill(1, signal.SIGSTOP)",
        "os.kill(-1, 9)",
        "os.kill(CALLER_PID, 9)",
        "os.kill(HOST_PID, 9)",
        "signal.pidfd_send_signal(os.pidfd_open(os.getppid()), 9)",
        "os.killpg(os.getpgid(0), 9)",
        "os.kill(0, 9)",  # its process group: the launcher too, outside the pid namespace
    ],
)
def test_killing_the_parent_leaves_the_caller_and_the_host_alive(backend, host_sleep, kill):
    code = attack(f"import signal\nattempt({kill!r}, lambda: {kill})", CALLER_PID=os.getpid(), HOST_PID=host_sleep.pid)
    result = run(code, backend)
    assert result.status in ("ok", "error", "killed"), result  # a result, not a hang or a SandboxError
    assert_alive(host_sleep)
    assert_later_runs_unaffected(backend)


@BACKENDS
def test_stopping_its_process_group_ends_at_the_deadline(backend):
    result = run(attack("import signal\nattempt('SIGSTOP', os.kill, 0, signal.SIGSTOP)"), backend, timeout_s=1.0)
    assert result.status == "timeout" and "DONE" not in result.stdout, result  # stopped, launcher and all
    assert_later_runs_unaffected(backend)
