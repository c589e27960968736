"""Isolated reward processes: no reward call can hang, crash or exhaust the process that asked for it.

A ``RewardPool`` keeps ``processes`` child processes. Each child loads the configured reward
functions once and then runs *jobs*: one reward over a chunk of samples. The parent drives each
child from its own thread and enforces the time limit itself:

- per-sample rewards run one sample at a time; every result restarts the clock, so each call gets
  the reward's full ``timeout_s``. A call past its limit gets the child killed (SIGKILL), that one
  sample is marked ``timeout``, and the rest of the chunk goes to a fresh child;
- ``async def`` rewards run the whole chunk concurrently (``asyncio``), each call under
  ``asyncio.wait_for``; a coroutine that blocks the event loop is caught by the parent's deadline;
- batched rewards get one call per chunk, under one limit; a failure fails the chunk's samples.

A child that dies (``os._exit``, a segfault, the kernel's OOM killer) fails the sample it was on,
with ``crash`` and the exit signal. Each child runs under an address-space limit (``RLIMIT_AS``):
``memory_mb`` on top of what the child has mapped when it starts (the fork server's imports, torch
among them through ``rlft.config``: ~0.7 GB of address space, mostly shared, not resident); a reward
that allocates past it gets a ``MemoryError`` (kind ``memory``) or dies (``crash``). An exception is
``exception``; a return value that is not a finite number or a ``RewardResult`` is ``bad_value``.
None of them is a score of 0: the outcome carries ``score=None``.

Children start from a fork server (``multiprocessing`` ``forkserver``) that has imported the built-in
rewards once, so a replacement after a kill is a fork (~0.1 s; ~0.4 s inside a Ray actor, whose
worker modules the fork server imports too), and a child never inherits the threads of the parent
(a Ray worker). As with any ``multiprocessing`` start method but ``fork``, a script that builds a
``RewardPool`` at the top level needs an ``if __name__ == "__main__":`` guard.

Each result goes up the pipe as its own message (~15-30 µs a sample): results held back to batch
them would be lost with a child killed on a later sample's timeout, and the culprit misnamed.

Rewards that need a model judge (a ``judge`` keyword) get a proxy whose ``generate`` call travels
back to the parent over the child's pipe; the parent answers it with the ``services["judge"]``
object it was given (a client of the judge engine actor). The user code stays in the child.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue
from typing import Any

from rlft.config import RewardFunctionConfig
from rewards.api import as_score
from rewards.loading import LoadedReward, load_reward
from rewards.sandbox import DEFAULT as DEFAULT_SANDBOX
from rewards.sandbox import SandboxError, check_sandbox, make_sandbox, use_sandbox

log = logging.getLogger("rlft.rewards")

ERROR_KINDS = ("timeout", "exception", "memory", "crash", "bad_value", "sandbox")
"""How a reward call can fail; each kind is counted in the metrics per reward."""

GRACE_S = 0.5  # the parent's deadline over a call's limit: the pipe round trip and the child's bookkeeping
START_TIMEOUT_S = 120.0  # a child loads the user's reward modules before it is ready
PRELOAD = ["rewards.builtin", "math_verify"]  # imported once by the fork server


@dataclass(frozen=True)
class Sample:
    """What a reward sees of one completion: texts and the dataset row's fields."""

    prompt: str
    completion: str
    fields: dict[str, Any] = field(default_factory=dict)


def runtime_sample(
    prompt: str,
    completion: str,
    metadata: dict[str, Any],
    *,
    prompt_id: str,
    num_tokens: int,
    finish_reason: str,
    max_new_tokens: int,
) -> Sample:
    """A sample with the row's fields plus the runtime's (``rewards.api.RUNTIME_FIELDS``).

    >>> runtime_sample("1+1=", "2", {"answer": "2"}, prompt_id="p0", num_tokens=1, finish_reason="stop",
    ...                max_new_tokens=8).fields["num_tokens"]
    1
    """
    fields = {
        **metadata,
        "prompt_id": prompt_id,
        "num_tokens": num_tokens,
        "finish_reason": finish_reason,
        "max_new_tokens": max_new_tokens,
    }
    return Sample(prompt, completion, fields)


@dataclass(frozen=True)
class Outcome:
    """One reward's verdict on one sample: a score, or ``score=None`` with an error kind."""

    score: float | None
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # one of ERROR_KINDS when score is None
    message: str = ""
    returned: str = ""  # type name of what the reward returned (``float``, ``RewardResult``, ...)
    seconds: float = 0.0  # time of the call (a batched call's time split over its samples)

    @property
    def failed(self) -> bool:
        return self.score is None


class RewardPool:
    """Reward calls in isolated child processes, with per-call time and memory limits.

    ``functions`` are ``reward.functions`` entries (file paths resolved against ``base_dir``);
    ``plugins`` are imported in every child first (they may register rewards by name).
    """

    def __init__(
        self,
        functions: Sequence[RewardFunctionConfig],
        *,
        plugins: Sequence[str] = (),
        base_dir: str | Path | None = None,
        processes: int = 2,
        timeout_s: float = 5.0,
        memory_mb: int = 2048,
        services: dict[str, Any] | None = None,
        sandbox: dict[str, Any] | None = None,
    ) -> None:
        self._load_args = (list(functions), list(plugins), str(base_dir) if base_dir else None, timeout_s)
        self.rewards = _load_all(*self._load_args)
        self.sandbox = dict(sandbox or {"name": DEFAULT_SANDBOX})
        # validated here (and probed, for rewards that declare they run code) so a bad choice or a
        # machine that forbids it stops the run at start, not one failed sample at a time
        name, params = self.sandbox["name"], self.sandbox.get("params")
        backend = make_sandbox(name, params) if self.uses_sandbox else None
        if backend is None:
            check_sandbox(name, params)
        self.sandbox_mode = backend.describe() if backend is not None else None
        if backend is not None and backend.strength == "weak":
            log.warning("reward sandbox: %s", self.sandbox_mode)
        self.memory_mb = memory_mb
        self.services = dict(services or {})
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(PRELOAD)
        self._slots: Queue[_Child] = Queue()
        for _ in range(processes):
            self._slots.put(_Child(self))
        self._threads = ThreadPoolExecutor(max_workers=processes, thread_name_prefix="rlft-reward")
        self.processes = processes
        self.restarts = 0  # children replaced after a timeout or a crash

    @property
    def keys(self) -> list[str]:
        return [r.key for r in self.rewards]

    @property
    def uses_sandbox(self) -> bool:
        """Whether a reward declares that it runs code in ``rewards.sandbox``."""
        return any(r.spec.uses_sandbox for r in self.rewards)

    def score(self, samples: Sequence[Sample]) -> dict[str, list[Outcome]]:
        """Every configured reward on every sample: ``{reward key: [Outcome per sample]}``."""
        jobs = [(ri, chunk) for ri in range(len(self.rewards)) for chunk in self._chunks(ri, len(samples))]
        futures = [self._threads.submit(self._run, ri, [(i, samples[i]) for i in chunk]) for ri, chunk in jobs]
        out = {r.key: [Outcome(None, error="crash", message="not scored")] * len(samples) for r in self.rewards}
        for (ri, _), fut in zip(jobs, futures):
            for i, outcome in fut.result().items():
                out[self.rewards[ri].key][i] = outcome
        return out

    def close(self) -> None:
        """Stop every child (a running call is killed)."""
        self._threads.shutdown(wait=True, cancel_futures=True)
        while not self._slots.empty():
            self._slots.get().stop()

    def __enter__(self) -> RewardPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------

    def _chunks(self, ri: int, n: int) -> list[list[int]]:
        """Batched rewards: one call per process. Per-sample ones: ~4 chunks per process, so a slow
        chunk does not leave the other processes idle."""
        parts = self.processes if self.rewards[ri].spec.batched else 4 * self.processes
        size = max(1, -(-n // parts))
        return [list(range(s, min(s + size, n))) for s in range(0, n, size)]

    def _run(self, ri: int, items: list[tuple[int, Sample]]) -> dict[int, Outcome]:
        child = self._slots.get()
        try:
            return child.run(ri, items)
        finally:
            self._slots.put(child)


def _load_all(
    functions: list[RewardFunctionConfig], plugins: list[str], base_dir: str | None, timeout_s: float
) -> list[LoadedReward]:
    from rlft.plugins import import_plugin

    for plugin in plugins:
        import_plugin(plugin, base_dir)
    return [load_reward(fc, base_dir=base_dir, default_timeout_s=timeout_s) for fc in functions]


# ---------------------------------------------------------------------------------------- parent side


class _Child:
    """One child process and the parent's side of its pipe; used by one thread at a time."""

    def __init__(self, pool: RewardPool) -> None:
        self.pool = pool
        self.proc: Any = None
        self.conn: Any = None

    def run(self, ri: int, items: list[tuple[int, Sample]]) -> dict[int, Outcome]:
        """Score ``items`` with reward ``ri``; a killed or dead child is replaced and the samples it
        had not reached are sent to the new one."""
        pending = dict(items)
        results: dict[int, Outcome] = {}
        while pending:
            self._ensure_started()
            self.conn.send(("job", ri, list(pending.items())))
            if self._drive(self.pool.rewards[ri], pending, results):
                break
        return results

    def _drive(self, lr: LoadedReward, pending: dict[int, Sample], results: dict[int, Outcome]) -> bool:
        """Collect the job's results; True when the child finished it, False after a kill or a crash
        (the culprit samples are marked, the others stay pending)."""
        one_at_a_time = not lr.spec.batched and not lr.spec.is_async
        deadline = time.monotonic() + lr.timeout_s + GRACE_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.conn.poll(remaining):
                self._kill()
                self._fail(pending, results, one_at_a_time, "timeout", f"no result within {lr.timeout_s:g} s")
                return False
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                why = self._reap()
                self._fail(pending, results, one_at_a_time, "crash", f"reward process died ({why})")
                return False
            kind = msg[0]
            if kind == "end":
                return True
            if kind == "call":
                self.conn.send(self._serve(*msg[1:]))
                continue
            _, index, *outcome = msg
            results[index] = Outcome(*outcome)
            pending.pop(index, None)
            if one_at_a_time:
                deadline = time.monotonic() + lr.timeout_s + GRACE_S

    @staticmethod
    def _fail(
        pending: dict[int, Sample], results: dict[int, Outcome], first_only: bool, kind: str, message: str
    ) -> None:
        culprits = list(pending)[:1] if first_only else list(pending)
        for index in culprits:
            results[index] = Outcome(None, error=kind, message=message)
            del pending[index]

    def _serve(self, service: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """Answer a child's call to a parent-side service (the judge client)."""
        try:
            target = self.pool.services[service]
        except KeyError:
            return ("reply", False, f"no '{service}' service in this reward worker (is reward.judge set?)")
        try:
            return ("reply", True, getattr(target, method)(*args, **kwargs))
        except Exception as err:
            return ("reply", False, f"{service}.{method} failed: {type(err).__name__}: {err}")

    def _ensure_started(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            return
        if self.proc is not None:
            self.pool.restarts += 1
        pool = self.pool
        parent_conn, child_conn = pool._ctx.Pipe()
        self.proc = pool._ctx.Process(
            target=_child_main,
            args=(child_conn, pool._load_args, pool.memory_mb, pool.sandbox),
            daemon=True, name="rlft-reward"
        )
        self.proc.start()
        child_conn.close()
        self.conn = parent_conn
        if not parent_conn.poll(START_TIMEOUT_S):
            self._kill()
            raise RuntimeError(f"a reward process did not start within {START_TIMEOUT_S:g} s")
        try:
            msg = parent_conn.recv()
        except EOFError:
            raise RuntimeError(f"a reward process died while loading the rewards ({self._reap()})") from None
        if msg[0] != "ready":
            self._kill()
            raise RuntimeError(f"a reward process could not load the rewards: {msg[1]}")

    def _kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
        self._reap()

    def _reap(self) -> str:
        """Wait for the dead child; describe how it ended."""
        self.proc.join(timeout=5)
        code = self.proc.exitcode
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if code is None:
            return "still running"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.is_alive() and self.conn is not None:
            try:
                self.conn.send(("stop",))
                self.proc.join(timeout=2)
            except OSError:
                pass
        self._kill()
        self.proc = None


# ---------------------------------------------------------------------------------------- child side


class _JudgeProxy:
    """The ``judge`` a reward sees in a child: each call is served by the parent's judge client."""

    def __init__(self, conn: Any, lock: threading.Lock) -> None:
        self._conn, self._lock = conn, lock

    def generate(self, prompts: list[str], **kwargs: Any) -> list[str]:
        with self._lock:
            self._conn.send(("call", "judge", "generate", (list(prompts),), kwargs))
            _, ok, value = self._conn.recv()
        if not ok:
            raise RuntimeError(value)
        return value


def _child_main(conn: Any, load_args: tuple[Any, ...], memory_mb: int, sandbox: dict[str, Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        import resource

        use_sandbox(sandbox["name"], sandbox.get("params"))  # built at its first use

        limit = _address_space() + memory_mb * 2**20  # on top of what the fork server already mapped
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        rewards = _load_all(*load_args)
    except BaseException as err:  # noqa: BLE001  report anything, then exit
        conn.send(("error", f"{type(err).__name__}: {err}"))
        return
    lock = threading.Lock()
    judge = _JudgeProxy(conn, lock)
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the parent is gone
            return
        if msg[0] == "stop":
            return
        _, ri, items = msg
        lr = rewards[ri]
        send = _sender(conn, lock)
        if lr.spec.batched:
            _run_batched(lr, items, judge, send)
        elif lr.spec.is_async:
            asyncio.run(_run_async(lr, items, judge, send))
        else:
            for index, sample in items:
                start = time.perf_counter()
                result = _call_one(lr, sample, judge)
                send(index, result, time.perf_counter() - start)
        with lock:
            conn.send(("end",))


Result = tuple[float | None, dict[str, Any], str | None, str, str]  # score, info, error, message, returned


def _address_space() -> int:
    """This process's mapped address space in bytes (0 where ``/proc`` is not available)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def _sender(conn: Any, lock: threading.Lock) -> Any:
    def send(index: int, result: Result, seconds: float) -> None:
        with lock:
            conn.send(("result", index, *result, seconds))

    return send


def _kwargs(lr: LoadedReward, fields: dict[str, Any], judge: Any) -> dict[str, Any]:
    kwargs = lr.spec.call_kwargs(fields, lr.params)
    if lr.spec.needs_judge:
        kwargs["judge"] = judge
    return kwargs


def _call_one(lr: LoadedReward, sample: Sample, judge: Any) -> Result:
    try:
        value = lr.spec.fn(sample.prompt, sample.completion, **_kwargs(lr, sample.fields, judge))
    except Exception as err:  # noqa: BLE001  the user's reward may raise anything
        return _failure(err)
    return _checked(value)


def _checked(value: Any) -> Result:
    returned = type(value).__name__
    try:
        score, info = as_score(value)
    except Exception as err:  # noqa: BLE001  whatever the value does on conversion, it is a bad value
        return None, {}, "bad_value", str(err), returned
    return score, _plain(info), None, "", returned


def _failure(err: BaseException) -> Result:
    # a sandbox fault is rlft's or the host's, never the program's: its own kind in the metrics
    kind = "memory" if isinstance(err, MemoryError) else "sandbox" if isinstance(err, SandboxError) else "exception"
    where = traceback.extract_tb(err.__traceback__)[-1:] if err.__traceback__ else []
    at = f" (at {Path(where[0].filename).name}:{where[0].lineno})" if where else ""
    return None, {}, kind, f"{type(err).__name__}: {err}{at}", ""


async def _run_async(lr: LoadedReward, items: list[tuple[int, Sample]], judge: Any, send: Any) -> None:
    async def one(index: int, sample: Sample) -> None:
        start = time.perf_counter()
        try:
            coro = lr.spec.fn(sample.prompt, sample.completion, **_kwargs(lr, sample.fields, judge))
            result = _checked(await asyncio.wait_for(coro, lr.timeout_s))
        except asyncio.TimeoutError:
            result = (None, {}, "timeout", f"no result within {lr.timeout_s:g} s", "")
        except Exception as err:  # noqa: BLE001
            result = _failure(err)
        send(index, result, time.perf_counter() - start)

    await asyncio.gather(*(one(i, s) for i, s in items))


def _run_batched(lr: LoadedReward, items: list[tuple[int, Sample]], judge: Any, send: Any) -> None:
    samples = [s for _, s in items]
    names = sorted({k for s in samples for k in s.fields})
    fields = {k: [s.fields.get(k) for s in samples] for k in names}
    start = time.perf_counter()
    try:
        values = lr.spec.fn([s.prompt for s in samples], [s.completion for s in samples], **_kwargs(lr, fields, judge))
        if asyncio.iscoroutine(values):
            values = asyncio.run(values)
        values = list(values)
    except Exception as err:  # noqa: BLE001
        values = [_failure(err)] * len(items)
    else:
        if len(values) == len(items):
            values = [_checked(v) for v in values]
        else:
            bad = f"batched reward returned {len(values)} scores for {len(items)} samples"
            values = [(None, {}, "bad_value", bad, type(values).__name__)] * len(items)
    seconds = (time.perf_counter() - start) / max(len(items), 1)
    for (index, _), result in zip(items, values):
        send(index, result, seconds)


def _plain(info: dict[str, Any]) -> dict[str, Any]:
    """``info`` values that survive the pipe and a JSON log: numbers and short strings as they are,
    anything else as its ``repr``."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if isinstance(value, (bool, int, float)) or value is None:
            out[str(key)] = value
        else:
            text = value if isinstance(value, str) else repr(value)
            out[str(key)] = text[:500]
    return out


