"""From ``reward.functions`` entries to callable reward specs: by registered name, by import path
(``my_pkg.rewards:score``) or by file path (``./my_rewards.py:score``, relative to the config's
directory or the working directory).

Every way a reference can be wrong fails here, before training starts, with a message that says
what to fix: an unknown name (with the closest one), a missing file or module, a missing function
(listing the functions the module has), a signature that is not a reward's, unknown params.

>>> from rlft.config import RewardFunctionConfig
>>> loaded = load_reward(RewardFunctionConfig(name="exact_match", params={"normalise": True}))
Traceback (most recent call last):
...
rewards.spec.RewardError: unknown parameter 'normalise' for reward 'exact_match' (did you mean 'normalize'?); valid parameters: answer, answer_pattern, normalize
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlft.config import RewardFunctionConfig, RunConfig
from rlft.data.loading import BUILTIN_PREFIX
from rlft.plugins import PluginError, import_plugin
from rewards.api import RewardError, RewardSpec, check_params, get_reward, inspect_reward
from rewards.sandbox import SandboxUnavailableError, check_sandbox, make_sandbox


@dataclass(frozen=True)
class LoadedReward:
    """One configured reward: its spec, its name in metrics, weight, params and time limit."""

    key: str
    spec: RewardSpec
    weight: float
    params: dict[str, Any]
    timeout_s: float


def load_reward(
    fc: RewardFunctionConfig, *, base_dir: str | Path | None = None, default_timeout_s: float = 5.0
) -> LoadedReward:
    """Resolve one ``reward.functions`` entry; raises ``RewardError`` saying what is wrong."""
    if fc.name is not None:
        spec = get_reward(fc.name)
    else:
        spec = inspect_reward(_import_function(str(fc.path), base_dir), fc.key)
    check_params(spec, fc.params)
    timeout = fc.timeout_s or getattr(spec.fn, "__rlft_timeout_s__", None) or default_timeout_s
    return LoadedReward(fc.key, spec, fc.weight, dict(fc.params), float(timeout))


def reward_functions(cfg: RunConfig) -> list[RewardFunctionConfig]:
    """The run's reward functions: ``reward.functions``, or the built-in task's verifier when that is
    empty and the data is a ``builtin:`` task."""
    if cfg.reward.functions:
        return list(cfg.reward.functions)
    src = cfg.data.train_path
    if not src.startswith(BUILTIN_PREFIX):
        raise RewardError(
            f"data.train_path {src!r} is not a built-in task, so its rewards must be configured in "
            "reward.functions (e.g. [{name: exact_match}] or [{path: ./my_rewards.py:score}])"
        )
    task = src[len(BUILTIN_PREFIX):].split(":")[0]
    return [RewardFunctionConfig(name="builtin_task", label=task, params={"task": task})]


def load_rewards(cfg: RunConfig, *, base_dir: str | Path | None = None) -> list[LoadedReward]:
    """Every reward of the run, resolved and checked (plugins are imported first: they may register
    rewards by name)."""
    for plugin in cfg.plugins:
        import_plugin(plugin, base_dir)
    loaded = [
        load_reward(fc, base_dir=base_dir, default_timeout_s=cfg.reward.timeout_s) for fc in reward_functions(cfg)
    ]
    judged = [r.key for r in loaded if r.spec.needs_judge]
    if judged and cfg.reward.judge is None:
        raise RewardError(
            f"reward {', '.join(judged)} needs a judge model: set reward.judge.model (a local model directory)"
        )
    check_sandbox(cfg.reward.sandbox.name, cfg.reward.sandbox.params)
    return loaded


def sandbox_mode(cfg: RunConfig, loaded: list[LoadedReward]) -> str:
    """One line for the run's notes and ``rlft check``: the selected sandbox and what it isolates.
    Where a reward declares that it runs code and the sandbox cannot run here, ``RewardError``."""
    choice = cfg.reward.sandbox
    users = [r.key for r in loaded if r.spec.uses_sandbox]
    if not users:
        return f"reward sandbox: {choice.name} (not started: no reward declares that it runs code)"
    try:
        backend = make_sandbox(choice.name, choice.params)
    except SandboxUnavailableError as err:
        raise RewardError(f"reward {', '.join(users)} runs code, and {err}") from None
    return f"reward sandbox: {backend.describe()}, for {', '.join(users)}"


_PACKAGES = frozenset({"rlft", "rewards", "actors", "launch"})


def _import_function(ref: str, base_dir: str | Path | None) -> Any:
    """``module:function`` or ``file.py:function`` -> the function object."""
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise RewardError(f"reward path {ref!r} must be 'module:function' or 'file.py:function'")
    if target.endswith(".py") or "/" in target:
        file = Path(target).expanduser()
        file = file if file.is_absolute() else Path(base_dir or Path.cwd()) / file
        if not file.is_file():
            raise RewardError(f"reward file '{file}' not found (from reward path {ref!r})")
        if file.stem in _PACKAGES:
            raise RewardError(
                f"reward file '{file}' is named like rlft's package '{file.stem}', which it would hide "
                "from the workers (the run's directory is on their import path): rename it, e.g. my_rewards.py"
            )
    try:
        module = import_plugin(target, base_dir)
    except PluginError as err:
        raise RewardError(f"reward path {ref!r}: {err}") from None
    except Exception as err:  # the user's module raised while importing
        raise RewardError(f"reward path {ref!r}: importing {target} failed: {type(err).__name__}: {err}") from err
    if not hasattr(module, attr):
        defined = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_"))
        raise RewardError(
            f"reward path {ref!r}: {target} has no function '{attr}' "
            f"(functions defined there: {', '.join(defined) or 'none'})"
        )
    return getattr(module, attr)
