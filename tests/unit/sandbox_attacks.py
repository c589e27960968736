"""The reward-hacking suites' shared parts: the attack driver (one body, run plainly and in the
sub-interpreters the audit hook misses), host-side checks and fixtures. Imported by
``test_reward_hacking.py`` and ``test_reward_hacking_host.py``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from rewards.sandbox import SandboxResult, make_sandbox, run_sandboxed


PATIENT_S = 60.0  # the deadline where a test is not about deadlines: a busy machine must not fail it

JAIL = make_sandbox("namespaces")
KERNEL_ONLY = make_sandbox("namespaces", {"audit_hook": False})
BACKENDS = pytest.mark.parametrize("backend", [JAIL, KERNEL_ONLY], ids=["jail", "kernel_only"])


def run(code: str, backend, **kwargs) -> SandboxResult:
    kwargs.setdefault("timeout_s", PATIENT_S)
    result = run_sandboxed(code, backend=backend, **kwargs)
    assert isinstance(result, SandboxResult)
    return result


# --- the attack driver: one body, run plainly and in the sub-interpreters the audit hook misses -----

ALL_WAYS = "plain, subinterpreter, testcapi"
BYPASS_ONLY = "subinterpreter, testcapi"

_DRIVER = """\
import os, sys
print("NS", os.readlink("/proc/self/ns/pid"), flush=True)
BODY = {body!r}
def plain():
    exec(compile(BODY, "attack", "exec"), {{"__name__": "__attack__"}})
def subinterpreter():  # audit hooks are per interpreter: a new one has none
    try:
        import _xxsubinterpreters as interpreters
    except ImportError:
        import _interpreters as interpreters
    interpreters.run_string(interpreters.create(), BODY)
def testcapi():
    import _testcapi
    if _testcapi.run_in_subinterp(BODY) != 0:
        raise RuntimeError("the sub-interpreter's code failed")
for way in ({ways},):
    print("WAY", way.__name__, flush=True)
    try:
        way()
    except BaseException as err:
        print("FAILED", way.__name__, type(err).__name__, err, flush=True)
"""

_PRELUDE = """\
import os, sys
def attempt(what, fn, *args, **kwargs):
    try:
        result = fn(*args, **kwargs)
    except BaseException as err:
        print("REFUSED", what, type(err).__name__, err, flush=True)
        return None
    print("DONE", what, result, flush=True)
    return result
"""


def attack(body: str, ways: str = ALL_WAYS, **values) -> str:
    """A program that runs ``body`` (given ``values`` as globals, and ``attempt(what, fn, *args)``,
    which prints ``DONE what result`` or ``REFUSED what error``) once per way in ``ways``."""
    assignments = "".join(f"{name} = {value!r}\n" for name, value in values.items())
    return _DRIVER.format(body=assignments + _PRELUDE + textwrap.dedent(body), ways=ways)


def pid_namespace(stdout: str) -> str:
    """The pid namespace an ``attack`` ran in (its first line)."""
    first = stdout.splitlines()[0]
    assert first.startswith("NS pid:["), stdout[:300]
    return first.split()[1]


# --- host-side checks --------------------------------------------------------------------------------


def _started_ticks(pid: str) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def _now_ticks() -> int:
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK")) + 1


def host_processes(*, ns: str | None = None, marker: str | None = None, started_before: int | None = None) -> list[str]:
    """Live host processes in pid namespace ``ns`` or with ``marker`` in their command line, started
    before ``started_before`` (a freed namespace's inode number is reused by the next one made)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or entry.name == str(os.getpid()):
            continue
        try:
            if "State:\tZ" in (entry / "status").read_text():
                continue
            if started_before is not None and _started_ticks(entry.name) > started_before:
                continue
            if ns is not None and os.readlink(entry / "ns/pid") == ns:
                found.append(entry.name)
            elif marker is not None and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(entry.name)
        except (OSError, IndexError, ValueError):  # gone meanwhile, or not ours to inspect
            continue
    return found


def assert_nothing_left(result: SandboxResult, marker: str | None = None) -> None:
    now = _now_ticks()
    left = host_processes(ns=pid_namespace(result.stdout), marker=marker, started_before=now)
    assert not left, f"processes of the attack still alive on the host: {left}"


def assert_later_runs_unaffected(backend) -> None:
    for i in range(3):
        later = run(f"print({i} * 7)", backend)
        assert (later.status, later.stdout) == ("ok", f"{i * 7}\n"), later


def tree_names(root: Path, depth: int = 3) -> list[str]:
    """Every name under ``root``, at most ``depth`` levels down (it does not follow links)."""
    names: list[str] = []
    base = len(root.parts)
    for where, dirs, files in os.walk(root):
        names += dirs + files
        if len(Path(where).parts) - base >= depth:
            dirs.clear()
    return names


@pytest.fixture
def tag() -> str:
    return f"rlft-hack-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def secret() -> str:
    """A value no program's source ever holds: finding it in an output means it was read."""
    return f"hunter2-{uuid.uuid4().hex}"


@pytest.fixture
def host_dir():
    """A host directory outside the temp root, $HOME and the run directory."""
    parent = "/var/tmp" if os.access("/var/tmp", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="rlft-hack-test-", dir=parent))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def host_sleep(secret):
    """A host process in its own session holding ``secret`` in its environment."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RLFT_SECRET": secret}
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True, env=env)
    yield proc
    proc.kill()
    proc.wait()


def assert_alive(proc: subprocess.Popen) -> None:
    time.sleep(0.05)  # a SIGKILL is delivered at once; this covers a slow reaper
    assert proc.poll() is None, f"the host process was killed ({proc.returncode})"


@pytest.fixture
def listeners(tag):
    """Host listeners no sandboxed program may reach: TCP, UDP, an AF_UNIX file, an abstract name."""
    made: dict[str, socket.socket] = {}
    tcp = made["tcp"] = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    udp = made["udp"] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    unix_path = os.path.join(tempfile.gettempdir(), f"{tag}.sock")
    unix = made["unix"] = socket.socket(socket.AF_UNIX)
    unix.bind(unix_path)
    unix.listen()
    abstract = made["abstract"] = socket.socket(socket.AF_UNIX)
    abstract.bind(f"\0{tag}")
    abstract.listen()
    for sock in made.values():
        sock.setblocking(False)
    addresses = {
        "TCP": ["127.0.0.1", tcp.getsockname()[1]], "UDP": ["127.0.0.1", udp.getsockname()[1]],
        "UNIX": unix_path, "ABSTRACT": f"\0{tag}",
    }  # fmt: skip
    yield made, addresses
    for sock in made.values():
        sock.close()
    os.unlink(unix_path)


def assert_never_reached(made: dict[str, socket.socket]) -> None:
    for name, sock in made.items():
        with pytest.raises(BlockingIOError):
            if name == "udp":
                sock.recvfrom(64)  # nothing was sent to it
            else:
                sock.accept()  # nobody connected
            pytest.fail(f"the {name} listener was reached")
