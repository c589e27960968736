"""Shared test setup: tier markers by folder, a clean skip of the gpu tier without CUDA, the order
the suite is scheduled in, a per-tier time summary at the end of every run, and the global
registries restored after every test (plugins register into them).

``scripts/test.sh`` runs the suite on two pytest-xdist workers, one test module at a time per worker
(``--dist loadscope``: a module's shared engines and learners are built once). The modules are
handed out in the order ``pytest_collection_modifyitems`` leaves them: the longest first, so that
the two workers finish together instead of one starting the PPO run when the other is done.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

import rlft.algorithms as A
from rlft.curriculum import SAMPLERS
from rlft.tasks import TASKS
from rlft.weight_sync import WEIGHT_SYNCS


# Modules scheduled first, longest first (measured wall times in the README's Tests section).
# pytest-xdist hands worker 1 the 1st module and worker 2 the 2nd, then at once worker 1 the 3rd and
# worker 2 the 4th (each worker keeps a module in reserve); after that, whichever is free takes the
# next. So: worker 1 runs PPO (building the slow tier's SFT checkpoint first, ~500 s in all) and
# then a short module; worker 2 meanwhile runs the resume tests and the README's own-data
# walk-through (~250 s each), which need no checkpoint; then the GRPO runs start, by when the
# checkpoint is ready. Neither waits for the other, and the first two long stretches end together.
FIRST = (
    "slow/test_ppo_learns.py",
    "integration/test_resume.py",
    "integration/test_checkpoint_disk.py",
    "slow/test_own_data_learns.py",
    "slow/test_grpo_learns.py",
    "slow/test_async_learns.py",
    "integration/test_jobs.py",
)
# then the rest tier by tier: the long integration tests before the unit tests that fill the gaps
TIER_ORDER = ("slow", "integration", "gpu", "unit")
TIERS = ("unit", "integration", "slow", "gpu")


def tier_of(path: str) -> str:
    """The tier of a test file or node id: the folder under ``tests/``."""
    parts = Path(path.split("::")[0]).parts
    return parts[parts.index("tests") + 1] if "tests" in parts else parts[0]


def schedule_key(path: str) -> tuple[int, int]:
    """Sort key of a test module (``.../tests/<tier>/<file>``): ``FIRST`` in its order, then by tier."""
    rel = "/".join(Path(path).parts[-2:])
    if rel in FIRST:
        return (0, FIRST.index(rel))
    tier = tier_of(path)
    return (1 + (TIER_ORDER.index(tier) if tier in TIER_ORDER else len(TIER_ORDER)), 0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cuda = _cuda_available()
    for item in items:
        tier = tier_of(str(item.fspath))
        if tier in ("integration", "slow", "gpu"):
            item.add_marker(getattr(pytest.mark, tier))
        if tier == "gpu" and not cuda:
            item.add_marker(pytest.mark.skip(reason="needs CUDA (no GPU visible)"))
    items.sort(key=lambda item: schedule_key(str(item.fspath)))  # stable: a module keeps its own order


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config._rlft_started = time.time()  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Per tier: tests run, the sum of their times (set-up, call and tear-down) and the wall-clock
    span from the tier's first test start to its last test end. On two workers the tiers overlap,
    so the spans add up to more than the run; the run's own wall time is printed last."""
    started = getattr(config, "_rlft_started", None)
    if started is None or hasattr(config, "workerinput"):  # an xdist worker: the controller reports
        return
    counts: dict[str, int] = defaultdict(int)
    seconds: dict[str, float] = defaultdict(float)
    spans: dict[str, list[float]] = {}
    for reports in terminalreporter.stats.values():
        for r in reports:
            if getattr(r, "when", None) not in ("setup", "call", "teardown") or not hasattr(r, "nodeid"):
                continue
            tier = tier_of(r.nodeid)
            counts[tier] += r.when == "call" or (r.when == "setup" and r.outcome == "skipped")
            seconds[tier] += r.duration
            start, stop = getattr(r, "start", 0.0), getattr(r, "stop", 0.0)
            if start and stop:
                lo, hi = spans.get(tier, [start, stop])
                spans[tier] = [min(lo, start), max(hi, stop)]
    if not counts:
        return
    tr = terminalreporter
    tr.write_sep("=", "time per tier")
    tr.write_line(f"{'tier':<12} {'tests':>6} {'test time':>11} {'wall span':>11}")
    for tier in sorted(counts, key=lambda t: TIERS.index(t) if t in TIERS else len(TIERS)):
        span = spans.get(tier, [0.0, 0.0])
        tr.write_line(f"{tier:<12} {counts[tier]:>6} {seconds[tier]:>10.0f}s {span[1] - span[0]:>10.0f}s")
    tr.write_line(f"{'whole run':<12} {sum(counts.values()):>6} {sum(seconds.values()):>10.0f}s "
                  f"{time.time() - started:>10.0f}s")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _restore_registries():
    """Plugins register into the global registries: undo what a test added, and forget the plugin
    modules it imported so a later test that loads the same file registers again. (The built-in
    entries are registered when this file imports the registries, before any test.)"""
    registries = (A.ADVANTAGES, A.POLICY_LOSSES, A.KL_ESTIMATORS, SAMPLERS, TASKS, WEIGHT_SYNCS)
    before = [set(r.names()) for r in registries]
    modules = set(sys.modules)
    yield
    for reg, names in zip(registries, before):
        for name in set(reg.names()) - names:
            reg.unregister(name)
    for name in set(sys.modules) - modules:
        if name.startswith("rlft_plugin_"):
            del sys.modules[name]


# ------------------------------------------------------------------ shared by the integration and slow tiers


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A random-init tiny Qwen2 (~0.6M parameters, tied embeddings) and its character tokenizer."""
    from rlft.models import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray per test process (starting one costs ~8 s); 2 cores over-committed to 4 CPUs.
    ``rlft train`` run in-process (the slow tier) joins it instead of starting its own."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=int(os.environ.get("RLFT_TEST_RAY_CPUS", "4")),
            include_dashboard=False,
            log_to_driver=True,
            runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def run_once(tmp_path_factory, request) -> Callable[[str, Callable[[Path], str]], str]:
    """``run_once(name, build)``: ``build(directory)`` runs once per test run, whichever xdist
    worker asks first (the others wait on a file lock), and every caller gets what it returned
    (a string, e.g. a checkpoint path). Without xdist it is a plain per-session cache."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if hasattr(request.config, "workerinput") else base  # the run's, not the worker's

    def once(name: str, build: Callable[[Path], str]) -> str:
        directory, result = shared / name, shared / f"{name}.json"
        with open(shared / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not result.exists():
                directory.mkdir(exist_ok=True)
                result.write_text(json.dumps(build(directory)))
            return json.loads(result.read_text())

    return once
