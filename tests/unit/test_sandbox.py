"""The code sandbox (both local backends) and the ``code_tests`` reward's basics: golden results,
then hostile code, each test asserting the specific containment (real processes; seconds in all).
The attacks a policy could use to forge scores are in ``test_reward_hacking.py``."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rewards.api import RewardResult, get_reward
from rewards.code import code_tests, extract_code
from rewards.sandbox import (
    SandboxError,
    SandboxResult,
    SandboxUnavailableError,
    cgroup,
    jail,
    make_sandbox,
    process,
    run_pair,
    run_sandboxed,
)
from rewards.sandbox.seccomp import build_filter, denied_calls
from rewards.sandbox.weak import remove_tree, unshare_prefix

pytestmark = pytest.mark.timeout(120)

PATIENT_S = 60.0  # the deadline where a test is not about deadlines: a busy machine must not fail it
ADD = "def add(a, b):\n    return a + b\n"


JAIL = make_sandbox("namespaces")
WEAK = make_sandbox("weak_process")
BACKENDS = pytest.mark.parametrize("backend", [JAIL, WEAK], ids=["namespaces", "weak_process"])


def run(code: str, backend=JAIL, **kwargs) -> SandboxResult:
    return run_sandboxed(code, timeout_s=PATIENT_S, backend=backend, **kwargs)


def grade(prompt: str, completion: str, **kwargs) -> RewardResult:
    return code_tests(prompt, completion, timeout_s=PATIENT_S, **kwargs)


# --- code_tests: golden values ---------------------------------------------------------------------


def test_registered_as_code_tests():
    assert get_reward("code_tests").fn is code_tests


def test_correct_solution_scores_one():
    completion = f"Here you go:\n```python\n{ADD}```\n"
    result = grade("", completion, tests=["assert add(1, 2) == 3", "assert add(-1, 1) == 0"])
    assert (result.score, result.info["passed"], result.info["total"], result.info["timeouts"]) == (1.0, 2, 2, 0)


def test_half_the_tests_pass():
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(1, 1) == 3", "assert add(0, 0) == 1"]
    assert grade("", ADD, tests=tests).score == 0.5


def test_single_string_is_one_test():
    result = grade("", ADD, tests="assert add(1, 2) == 3")
    assert (result.score, result.info["passed"], result.info["total"]) == (1.0, 1, 1)


def test_syntax_error_scores_zero():
    assert grade("", "def add(a, b) return a + b", tests=["assert add(1, 2) == 3"]).score == 0.0


@pytest.mark.parametrize(
    "hack",
    [
        "import sys; sys.exit(0)",
        "import os; os._exit(0)",
        "import atexit, os; atexit.register(os._exit, 0)",  # status 0 after the failed test
    ],
)
def test_forced_clean_exit_does_not_pass(hack):
    """Reward hacks: exiting with status 0 before or after the (failing) test."""
    assert grade("", ADD + hack, tests=["assert add(1, 2) == 4"]).score == 0.0


def test_solution_main_block_does_not_run():
    solution = ADD + "if __name__ == '__main__':\n    input()\n"
    assert grade("", solution, tests=["assert add(1, 2) == 3"]).score == 1.0


def test_hanging_test_fails_alone():
    tests = ["assert add(1, 2) == 3", "while True: pass"]
    result = code_tests("", ADD, tests=tests, timeout_s=1.5)
    assert (result.score, result.info["passed"], result.info["total"], result.info["timeouts"]) == (0.5, 1, 2, 1)


@pytest.mark.parametrize(
    "completion, code",
    [
        ("no fences at all", "no fences at all"),
        ("a\n```python\nx = 1\n```\nb\n```python\nx = 2\n```\nc", "x = 2\n"),
        ("```\nx = 3\n```", "x = 3\n"),
        ("```python\nx = 4\n```\n```js\nlet x = 5;\n```", "x = 4\n"),
        ("  ```python\n  x = 6\n  ```", "x = 6\n"),
        ("```python\nx = 7\n", "x = 7\n"),  # generation stopped before the closing fence
    ],
)
def test_extract_code(completion, code):
    assert extract_code(completion) == code


@pytest.mark.parametrize("tests", [None, [], "", [" "], [1], {"a": "assert 1"}])
def test_missing_or_invalid_tests_raise(tests):
    with pytest.raises(ValueError, match="tests"):
        grade("", ADD, tests=tests)


def test_other_language_raises():
    with pytest.raises(ValueError, match="python"):
        grade("", ADD, tests=["assert 1"], language="cpp")


# --- both backends: ordinary runs ------------------------------------------------------------------


@BACKENDS
def test_ok_run_with_stdin(backend):
    result = run("import sys\nprint(sum(map(int, sys.stdin.read().split())))", backend, stdin="1 2 3")
    assert (result.status, result.returncode, result.stdout, result.stderr) == ("ok", 0, "6\n", "")


@BACKENDS
def test_exception_is_an_error_with_traceback(backend):
    result = run("raise KeyError('boom')", backend)
    assert result.status == "error" and result.returncode == 1
    assert "KeyError: 'boom'" in result.stderr and 'File "main.py", line 1' in result.stderr


@BACKENDS
def test_exit_codes_and_signals_are_the_programs(backend):
    assert run("import sys; sys.exit(3)", backend).returncode == 3
    result = run("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", backend)
    assert (result.status, result.returncode) == ("killed", -signal.SIGTERM)


@BACKENDS
def test_exit_is_polled_without_pidfd(backend, monkeypatch):
    monkeypatch.setattr(process, "_pidfd", lambda pid: None)  # kernels before 5.3
    assert run("print('hi')", backend).stdout == "hi\n"
    assert run_sandboxed("import time\ntime.sleep(5)", timeout_s=0.3, backend=backend).status == "timeout"


@BACKENDS
def test_concurrent_runs_stay_apart(backend):
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: run(f"print({i} * {i})", backend), range(4)))
    assert [r.stdout for r in results] == ["0\n", "1\n", "4\n", "9\n"]


@BACKENDS
@pytest.mark.parametrize("code, statuses", [
    ("while True: pass", ("timeout", "killed")),  # the CPU limit (= the deadline) may strike first
    ("import time\nwhile True: time.sleep(1)", ("timeout",)),  # uses no CPU: only the deadline stops it
])  # fmt: skip
def test_infinite_loop_is_stopped_at_the_deadline(backend, code, statuses):
    result = run_sandboxed(WHERE + code, timeout_s=2.0, backend=backend)  # long enough to start on a busy machine
    assert result.status in statuses
    assert not _leftovers(result.stdout)


@BACKENDS
def test_cpu_limit_kills_a_spin(backend):
    # "killed" by a signal, not "timeout": the 1 s CPU limit stopped it, not the 30 s deadline
    result = run_sandboxed("while True: pass", timeout_s=30.0, cpu_s=1.0, backend=backend)
    assert result.status == "killed" and result.returncode in (-signal.SIGXCPU, -signal.SIGKILL)


@BACKENDS
def test_fork_bomb_is_refused_and_leaves_no_process(backend):
    result = run(WHERE + "while True: os.fork()", backend)
    assert result.status == "error" and ("os.fork is not allowed" in result.stderr or "Errno 1" in result.stderr)
    assert not _leftovers(result.stdout)


@BACKENDS
def test_env_secrets_do_not_leak(backend, monkeypatch):
    monkeypatch.setenv("RLFT_SECRET", "hunter2-secret")
    result = run("import os\nprint(os.environ.get('RLFT_SECRET'))\nprint(dict(os.environ))", backend)
    assert result.status == "ok"
    assert "hunter2-secret" not in result.stdout and result.stdout.startswith("None\n")


@BACKENDS
def test_file_size_is_capped(backend):
    result = run("open('big', 'wb').write(b'x' * 2**21)", backend, max_file_bytes=2**20)
    assert result.status == "error" and "File too large" in result.stderr


@BACKENDS
@pytest.mark.parametrize(
    "code, memory_mb",
    [
        ('print("x" * 10**9)', 3072),  # the string and its encoded copy need the memory
        ("import sys\nwhile True: sys.stdout.write('x' * 65536)", 512),
        ("import sys\nwhile True: sys.stderr.write('x' * 65536)", 512),
    ],
)
def test_output_flood_is_cut_at_the_cap(backend, code, memory_mb):
    result = run(code, backend, memory_mb=memory_mb, max_output_bytes=64 * 1024)
    assert result.status == "output_limit"  # not "timeout": it ended as soon as the cap was read
    assert len(result.stdout.encode()) <= 64 * 1024 and len(result.stderr.encode()) <= 64 * 1024


@BACKENDS
def test_memory_bomb_fails(backend):
    result = run("b = bytearray(4 * 2**30)\nprint('allocated')", backend, memory_mb=512)
    assert result.status in ("error", "killed") and "allocated" not in result.stdout
    assert "MemoryError" in result.stderr


@BACKENDS
def test_socket_to_a_host_server_is_refused(backend):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        for code in (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)", "import socket\nsocket.socket()"):
            result = run(code, backend)
            assert result.status == "error" and ("socket" in result.stderr or "Errno 1" in result.stderr)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected


@BACKENDS
def test_a_pair_talks_over_its_own_pipes(backend):
    server = "import sys\nfor line in sys.stdin:\n    print(int(line) * 2, flush=True)"
    client = "import sys\nfor n in (1, 2, 3):\n    print(n, flush=True)\n    assert sys.stdin.readline() == f'{2 * n}\\n'\n"
    assert run_pair(server, client, timeout_s=PATIENT_S, backend=backend).status == "ok"
    wrong = client.replace("2 * n", "3 * n")
    result = run_pair(server, wrong, timeout_s=PATIENT_S, backend=backend)
    assert result.status == "error" and "AssertionError" in result.stderr


@BACKENDS
def test_a_pair_ends_at_the_deadline_when_the_server_hangs(backend):
    result = run_pair("import time\ntime.sleep(60)", "input()", timeout_s=0.5, backend=backend)
    assert result.status == "timeout"


# --- namespaces: the kernel's isolation ------------------------------------------------------------


def test_jail_sees_a_private_root_and_its_own_processes():
    code = "import os\nprint(os.getpid(), os.getcwd(), sorted(os.listdir('/')), sorted(os.listdir('/tmp')))\n"
    code += "print(sorted(p for p in os.listdir('/proc') if p.isdigit()), os.getuid())"
    result = run(code)
    assert result.status == "ok", result.stderr
    first, second = result.stdout.splitlines()
    pid, cwd, rest = first.split(" ", 2)
    assert (pid, cwd) == ("2", "/tmp")
    assert "'home'" not in rest and "'run'" not in rest and "'var'" not in rest and rest.endswith("[]")
    assert second == "['1', '2'] 1000"


def test_jail_has_its_own_namespaces():
    names = ("net", "pid", "mnt", "ipc", "user", "uts")
    result = run("import os\nprint(' '.join(os.readlink('/proc/self/ns/' + n) for n in %r))" % (names,))
    assert result.status == "ok", result.stderr
    for name, inside in zip(names, result.stdout.split()):
        assert inside != os.readlink(f"/proc/self/ns/{name}"), name


def test_jail_root_is_read_only_and_tmp_is_bounded():
    for target in ("/usr/rlft-probe", "/rlft-probe", "/proc/rlft-probe"):
        result = run(f"open({target!r}, 'w')", make_sandbox("namespaces", {"audit_hook": False}))
        assert result.status == "error" and ("Read-only" in result.stderr or "Errno" in result.stderr), target
    result = run("open('/tmp/big', 'wb').write(b'x' * 2**20 * 8)", disk_mb=4, max_file_bytes=2**30)
    assert result.status == "error" and "No space left" in result.stderr


def test_jail_leaves_nothing_on_the_host():
    tag = f"rlft-probe-{uuid.uuid4().hex}"
    assert run(f"open('{tag}.txt', 'w').write('hi')\nimport os\nos.makedirs('{tag}/b/c')").status == "ok"
    for root in {tempfile.gettempdir(), "/tmp", "/var/tmp", os.getcwd()}:
        for depth, (where, dirs, files) in enumerate(os.walk(root)):
            assert not any(tag in name for name in dirs + files), where
            if depth > 200:
                break


def test_jail_refuses_to_start_where_namespaces_are_forbidden(monkeypatch):
    monkeypatch.setattr(jail, "unavailable_reason", lambda: "unshare: Operation not permitted")
    with pytest.raises(SandboxUnavailableError, match="weak_process") as err:
        make_sandbox("namespaces")
    assert "Operation not permitted" in str(err.value) and "remote" in str(err.value)


def test_a_launcher_that_cannot_set_up_is_the_sandboxs_fault(monkeypatch):
    monkeypatch.setattr(jail, "_binds", lambda python: ("/usr", "/no/such/dir"))
    with pytest.raises(SandboxError, match="could not start the program.*no/such/dir"):
        run("print(1)")


def test_seccomp_filter_layout():
    program = build_filter("x86_64")
    assert len(program) % 8 == 0
    first = [program[i : i + 8] for i in range(0, 24, 8)]
    # load the arch, compare with AUDIT_ARCH_X86_64, kill anything else
    assert first[0][:2] == (0x20).to_bytes(2, "little") and first[0][4:] == (4).to_bytes(4, "little")
    assert first[1][4:] == (0xC000003E).to_bytes(4, "little")
    assert first[2][4:] == (0x80000000).to_bytes(4, "little")
    assert {"socket", "socketpair", "memfd_create", "fork", "ptrace", "io_uring_setup"} <= set(denied_calls("x86_64"))
    assert len(program) // 8 == 6 + 5 + 2 * (len(denied_calls("x86_64")) - 1) + 1


# --- weak_process: what the audit hook refuses, and the host-side directory ------------------------


def test_weak_mode_says_it_is_weak():
    assert WEAK.strength == "weak" and "WEAK" in WEAK.describe()
    assert JAIL.strength == "isolated" and "seccomp" in JAIL.describe()


def test_weak_working_directory_is_private_writable_and_removed():
    code = "import os\nopen('f.txt', 'w').write('hi')\nprint(os.getcwd())\nprint(os.listdir('.'))"
    result = run(code, WEAK)
    assert result.status == "ok", result.stderr
    workdir, listing = result.stdout.splitlines()
    assert listing == "['f.txt']"
    assert not os.path.exists(workdir)


def test_weak_cleanup_removes_a_tree_too_deep_to_recurse(tmp_path):
    path = tmp_path / "deep"
    os.makedirs(path)
    fd = os.open(path, os.O_RDONLY)
    for _ in range(1100):  # descriptor-relative: the whole path is longer than PATH_MAX
        os.mkdir("d" * 50, dir_fd=fd)
        new = os.open("d" * 50, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = new
    os.close(fd)
    remove_tree(str(path))
    assert not path.exists()


@pytest.mark.parametrize(
    "code, event",
    [
        ("import subprocess\nsubprocess.run(['true'])", "subprocess.Popen"),
        ("import os\nos.system('true')", "os.system"),
        ("import os\nos.execv('/bin/true', ['true'])", "os.exec"),
        ("import os\nos.posix_spawn('/bin/true', ['true'], {})", "os.posix_spawn"),
        ("import _posixsubprocess as p\np.fork_exec()", "fork_exec is not allowed"),
        ("import sys\ndel sys.modules['_posixsubprocess']\nimport _posixsubprocess", "importing _posixsubprocess"),
        ("import multiprocessing as mp\nmp.get_context('spawn').Process(target=print).start()", "not allowed"),
        ("import ctypes", "importing ctypes"),
        ("import os\nos.kill(os.getppid(), 0)", "signalling other processes"),
        ("import os\nos.pidfd_open(os.getppid())", "pidfd_open is not allowed"),
    ],
)
def test_weak_hook_refuses_process_creation_and_ctypes(code, event):
    result = run(code, WEAK)
    assert result.status == "error"
    assert event in result.stderr


def test_weak_hook_refuses_writes_outside_the_workdir(tmp_path):
    home_target = Path.home() / f"rlft-sandbox-test-{uuid.uuid4().hex}"
    try:
        for target in (tmp_path / "pwned.txt", home_target):
            result = run(f"open({str(target)!r}, 'w').write('pwned')", WEAK)
            assert result.status == "error" and "outside the working directory" in result.stderr
            assert not target.exists()
        # "~" is the sandbox's own directory: writing there is fine and lands nowhere else
        code = f"import os\nopen(os.path.expanduser('~/{home_target.name}'), 'w').write('x')"
        assert run(code, WEAK).status == "ok"
        assert not home_target.exists()
    finally:
        home_target.unlink(missing_ok=True)


@pytest.mark.parametrize(
    "code",
    [
        "import os\nos.symlink('/', 'root')",
        "import os\nos.link('/etc/hostname', 'h')",
        "open('../escaped.txt', 'w')",
        "import os\nos.open('x', os.O_WRONLY | os.O_CREAT, dir_fd=os.open('/tmp', os.O_RDONLY))",
        "import os\nos.chdir('/tmp')",
        "import os\nos.rename('.', '/tmp/moved')",
    ],
)
def test_weak_hook_refuses_filesystem_escapes(code):
    result = run(code, WEAK)
    assert result.status == "error" and "not allowed" in result.stderr


@pytest.fixture
def var_tmp_dir():
    """A directory outside the temp root (which the sandbox refuses anyway) and outside $HOME."""
    if not os.access("/var/tmp", os.W_OK):
        pytest.skip("/var/tmp is not writable here")
    path = Path(tempfile.mkdtemp(prefix="rlft-sandbox-test-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path)


@BACKENDS
def test_reading_the_run_directory_and_home_is_refused(backend, var_tmp_dir, monkeypatch):
    (var_tmp_dir / "config.yaml").write_text("api_key: hunter2")
    monkeypatch.chdir(var_tmp_dir)  # the caller's cwd: the run directory
    result = run(f"print(open({str(var_tmp_dir / 'config.yaml')!r}).read())", backend)
    assert result.status == "error" and "hunter2" not in result.stdout
    for path in (var_tmp_dir, Path.home()):
        result = run(f"import os\nprint(os.listdir({str(path)!r}))", backend)
        assert "config.yaml" not in result.stdout


def test_weak_reading_listed_forbidden_dirs_is_refused(var_tmp_dir):
    from rewards.sandbox.weak import WeakProcess

    (var_tmp_dir / "secret.txt").write_text("hunter2")
    code = f"print(open({str(var_tmp_dir / 'secret.txt')!r}).read())"
    assert run(code, WEAK).stdout == "hunter2\n"  # readable unless listed: the weak mode's hole
    assert run(code, JAIL).status == "error"  # the jail does not see it at all
    result = run(code, WeakProcess(forbidden_dirs=[str(var_tmp_dir)]))
    assert result.status == "error" and "hunter2" not in result.stdout


@BACKENDS
def test_other_processes_proc_entries_are_refused(backend):
    result = run("import os\nprint(open(f'/proc/{os.getppid()}/environ').read())", backend)
    assert result.status == "error"


@pytest.mark.skipif(not unshare_prefix(), reason="unprivileged user namespaces unavailable here")
def test_weak_runs_in_its_own_network_namespace():
    result = run("import os\nprint(os.readlink('/proc/self/ns/net'))", WEAK)
    assert result.status == "ok"
    assert result.stdout.strip() != os.readlink("/proc/self/ns/net")


WHERE = "import os\nprint(os.readlink('/proc/self/ns/pid'), os.getcwd(), flush=True)\n"


def _leftovers(stdout: str) -> list[str]:
    """Host pids of processes still running from a run that began with ``WHERE``: those in its PID
    namespace (``namespaces``), or with its working directory (``weak_process``, which has none)."""
    ns, cwd = stdout.split()[:2]
    ours = os.readlink("/proc/self/ns/pid")
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit():
                continue
            if "State:\tZ" in (entry / "status").read_text():
                continue  # a zombie runs nothing; the machine's init reaps it
            if ns != ours and os.readlink(entry / "ns/pid") == ns:
                found.append(entry.name)
            elif ns == ours and os.readlink(entry / "cwd").startswith(cwd):
                found.append(entry.name)
        except OSError:  # gone meanwhile, or not ours to inspect
            continue
    return found


@pytest.mark.skipif(cgroup.parent_dir() is None, reason="no writable memory cgroup here")
def test_jail_charges_each_program_to_a_memory_cgroup_of_its_own(monkeypatch):
    kept = []
    monkeypatch.setattr(cgroup, "remove", kept.append)  # keep it to read what it counted
    try:
        result = run("x = bytearray(100 * 2**20)\nprint(len(x))", memory_mb=256, disk_mb=16)
        assert result.status == "ok", result.stderr
        (procs,) = kept
        path = Path(procs).parent
        peak = path / ("memory.peak" if (path / "memory.peak").exists() else "memory.max_usage_in_bytes")
        limit = path / ("memory.max" if (path / "memory.max").exists() else "memory.limit_in_bytes")
        assert int(peak.read_text()) >= 100 * 2**20
        assert int(limit.read_text()) == (256 + 16 + 64) * 2**20
        assert not procs or not Path(procs).read_text().strip()  # everyone is gone
    finally:
        for procs in kept:
            cgroup._remove(str(Path(procs).parent))
    assert "a memory cgroup" in JAIL.describe()
