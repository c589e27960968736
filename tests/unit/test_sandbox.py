"""The code sandbox and the ``code_tests`` reward: golden scores, then hostile code, each test
asserting the specific containment (real subprocesses; a few seconds in all)."""

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

from rewards import sandbox
from rewards.api import RewardResult, get_reward
from rewards.code import code_tests, extract_code
from rewards.sandbox import SandboxResult, _unshare_prefix, run_sandboxed

pytestmark = pytest.mark.timeout(120)

PATIENT_S = 60.0  # the deadline where a test is not about deadlines: a busy machine must not fail it
ADD = "def add(a, b):\n    return a + b\n"


def run(code: str, **kwargs) -> SandboxResult:
    return run_sandboxed(code, timeout_s=PATIENT_S, **kwargs)


def grade(prompt: str, completion: str, **kwargs) -> RewardResult:
    return code_tests(prompt, completion, timeout_s=PATIENT_S, **kwargs)


# --- code_tests: golden values ---------------------------------------------------------------------


def test_registered_as_code_tests():
    assert get_reward("code_tests").fn is code_tests


def test_correct_solution_scores_one():
    completion = f"Here you go:\n```python\n{ADD}```\n"
    result = grade("", completion, tests=["assert add(1, 2) == 3", "assert add(-1, 1) == 0"])
    assert result == RewardResult(1.0, {"passed": 2, "total": 2, "timeouts": 0})


def test_half_the_tests_pass():
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(1, 1) == 3", "assert add(0, 0) == 1"]
    assert grade("", ADD, tests=tests).score == 0.5


def test_single_string_is_one_test():
    result = grade("", ADD, tests="assert add(1, 2) == 3")
    assert result == RewardResult(1.0, {"passed": 1, "total": 1, "timeouts": 0})


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
    assert result == RewardResult(0.5, {"passed": 1, "total": 2, "timeouts": 1})


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


# --- the sandbox: ordinary runs --------------------------------------------------------------------


def test_ok_run_with_stdin():
    result = run("import sys\nprint(sum(map(int, sys.stdin.read().split())))", stdin="1 2 3")
    assert (result.status, result.returncode, result.stdout, result.stderr) == ("ok", 0, "6\n", "")


def test_exception_is_an_error_with_traceback():
    result = run("raise KeyError('boom')")
    assert result.status == "error" and result.returncode == 1
    assert "KeyError: 'boom'" in result.stderr and 'File "main.py", line 1' in result.stderr


def test_working_directory_is_private_writable_and_removed():
    code = "import os\nopen('f.txt', 'w').write('hi')\nprint(os.getcwd())\nprint(os.listdir('.'))"
    result = run(code)
    assert result.status == "ok", result.stderr
    workdir, listing = result.stdout.splitlines()
    assert listing == "['f.txt']"
    assert not os.path.exists(workdir)


def test_exit_is_polled_without_pidfd(monkeypatch):
    monkeypatch.setattr(sandbox, "_pidfd", lambda pid: None)  # kernels before 5.3
    assert run("print('hi')").stdout == "hi\n"
    assert run_sandboxed("import time\ntime.sleep(5)", timeout_s=0.3).status == "timeout"


def test_concurrent_runs_stay_apart():
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: run(f"print({i} * {i})"), range(4)))
    assert [r.stdout for r in results] == ["0\n", "1\n", "4\n", "9\n"]


# --- hostile code ----------------------------------------------------------------------------------


@pytest.mark.parametrize("code, statuses", [
    ("while True: pass", ("timeout", "killed")),  # the CPU limit (= the deadline) may strike first
    ("import time\nwhile True: time.sleep(1)", ("timeout",)),  # uses no CPU: only the deadline stops it
])
def test_infinite_loop_is_stopped_at_the_deadline(code, statuses):
    result = run_sandboxed(f"import os\nprint(os.getcwd(), flush=True)\n{code}", timeout_s=0.5)
    assert result.status in statuses
    workdir = result.stdout.strip()
    assert workdir and not _processes_in(workdir)


def test_cpu_limit_kills_a_spin():
    # "killed" by a signal, not "timeout": the 1 s CPU limit stopped it, not the 30 s deadline
    result = run_sandboxed("while True: pass", timeout_s=30.0, cpu_s=1.0)
    assert result.status == "killed" and result.returncode in (-signal.SIGXCPU, -signal.SIGKILL)


def test_fork_bomb_is_refused_and_leaves_no_process():
    code = "import os\nprint(os.getcwd(), flush=True)\nwhile True: os.fork()"
    result = run(code)
    assert result.status == "error" and "os.fork is not allowed" in result.stderr
    workdir = result.stdout.strip()
    assert workdir and not _processes_in(workdir)


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
def test_process_creation_and_ctypes_are_refused(code, event):
    result = run(code)
    assert result.status == "error"
    assert event in result.stderr


def test_env_secrets_do_not_leak(monkeypatch):
    monkeypatch.setenv("RLFT_SECRET", "hunter2-secret")
    code = "import os\nprint(os.environ.get('RLFT_SECRET'))\nprint(dict(os.environ))"
    result = run(code)
    assert result.status == "ok"
    assert "hunter2-secret" not in result.stdout and result.stdout.startswith("None\n")


def test_write_outside_the_workdir_is_refused(tmp_path):
    home_target = Path.home() / f"rlft-sandbox-test-{uuid.uuid4().hex}"
    try:
        for target in (tmp_path / "pwned.txt", home_target):
            result = run(f"open({str(target)!r}, 'w').write('pwned')")
            assert result.status == "error" and "outside the working directory" in result.stderr
            assert not target.exists()
        # "~" is the sandbox's own directory: writing there is fine and lands nowhere else
        code = f"import os\nopen(os.path.expanduser('~/{home_target.name}'), 'w').write('x')"
        assert run(code).status == "ok"
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
def test_filesystem_escapes_are_refused(code):
    result = run(code)
    assert result.status == "error" and "not allowed" in result.stderr


def test_file_size_is_capped():
    result = run("open('big', 'wb').write(b'x' * 2**21)", max_file_bytes=2**20)
    assert result.status == "error" and "File too large" in result.stderr


@pytest.fixture
def var_tmp_dir():
    """A directory outside the temp root (which the sandbox refuses anyway) and outside $HOME."""
    if not os.access("/var/tmp", os.W_OK):
        pytest.skip("/var/tmp is not writable here")
    path = Path(tempfile.mkdtemp(prefix="rlft-sandbox-test-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path)


def test_reading_the_run_directory_and_home_is_refused(var_tmp_dir, monkeypatch):
    (var_tmp_dir / "config.yaml").write_text("api_key: hunter2")
    monkeypatch.chdir(var_tmp_dir)  # the caller's cwd: the run directory
    result = run(f"print(open({str(var_tmp_dir / 'config.yaml')!r}).read())")
    assert result.status == "error" and "not allowed" in result.stderr and "hunter2" not in result.stdout
    for path in (var_tmp_dir, Path.home()):
        result = run(f"import os\nprint(os.listdir({str(path)!r}))")
        assert result.status == "error" and "not allowed" in result.stderr and "config.yaml" not in result.stdout


def test_reading_listed_forbidden_dirs_is_refused(var_tmp_dir):
    (var_tmp_dir / "secret.txt").write_text("hunter2")
    code = f"print(open({str(var_tmp_dir / 'secret.txt')!r}).read())"
    assert run(code).stdout == "hunter2\n"  # readable unless listed
    result = run(code, forbidden_dirs=[str(var_tmp_dir)])
    assert result.status == "error" and "hunter2" not in result.stdout


def test_other_processes_proc_entries_are_refused():
    result = run("import os\nprint(open(f'/proc/{os.getppid()}/environ').read())")
    assert result.status == "error" and "not allowed" in result.stderr


@pytest.mark.parametrize("unshare", [True, False])
def test_sockets_are_refused(unshare):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        for code in (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
            "import socket\nsocket.socket()",
        ):
            result = run(code, unshare=unshare)
            assert result.status == "error" and "socket" in result.stderr
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected


@pytest.mark.skipif(not _unshare_prefix(), reason="unprivileged user namespaces unavailable here")
def test_runs_in_its_own_network_namespace():
    result = run("import os\nprint(os.readlink('/proc/self/ns/net'))")
    assert result.status == "ok"
    assert result.stdout.strip() != os.readlink("/proc/self/ns/net")


@pytest.mark.parametrize(
    "code, memory_mb",
    [
        ('print("x" * 10**9)', 3072),  # the string and its encoded copy need the memory
        ("import sys\nwhile True: sys.stdout.write('x' * 65536)", 512),
        ("import sys\nwhile True: sys.stderr.write('x' * 65536)", 512),
    ],
)
def test_output_flood_is_cut_at_the_cap(code, memory_mb):
    result = run(code, memory_mb=memory_mb, max_output_bytes=64 * 1024)
    assert result.status == "output_limit"  # not "timeout": it ended as soon as the cap was read
    assert len(result.stdout.encode()) <= 64 * 1024 and len(result.stderr.encode()) <= 64 * 1024


def test_memory_bomb_fails():
    result = run("b = bytearray(4 * 2**30)\nprint('allocated')", memory_mb=512)
    assert result.status in ("error", "killed") and "allocated" not in result.stdout
    assert "MemoryError" in result.stderr


def _processes_in(workdir: str) -> list[str]:
    """Pids of live processes whose working directory is (or was, before removal) ``workdir``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "cwd").startswith(workdir):
                found.append(entry.name)
        except OSError:  # gone meanwhile, or not ours to inspect
            continue
    return found
