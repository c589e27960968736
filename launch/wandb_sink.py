"""The wandb backend of ``launch.sinks``: a wandb run per run directory, online when credentials are
configured and offline otherwise, never prompting and never blocking a run without network.
(Split from ``launch.sinks`` to keep each file to one concern; ``launch.sinks`` re-exports it.)
"""

from __future__ import annotations

import logging
import math
import netrc
import os
import secrets
import string
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

from launch.metric_rows import Row, numeric, reward_names
from rlft.config import RunConfig

logger = logging.getLogger("rlft")



def wandb_api_key_configured(env: Mapping[str, str] | None = None, netrc_path: str | Path | None = None) -> bool:
    """Whether wandb has credentials, checked without network and without prompting:
    ``WANDB_API_KEY`` (or ``WANDB_IDENTITY_TOKEN_FILE``) in the environment, or a ``.netrc`` entry
    for the wandb host (``WANDB_BASE_URL``, default ``api.wandb.ai``; file ``NETRC`` or ``~/.netrc``)."""
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY") or env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(env.get("WANDB_BASE_URL") or "https://api.wandb.ai").netloc or "api.wandb.ai"
    path = Path(netrc_path or env.get("NETRC") or Path.home() / ".netrc").expanduser()
    try:
        entry = netrc.netrc(str(path)).authenticators(host) if path.is_file() else None
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


def resolve_wandb_mode(mode: str, env: Mapping[str, str] | None = None, netrc_path: str | Path | None = None) -> str:
    """``online``/``offline``/``disabled``. ``WANDB_MODE`` in the environment (wandb's own switch)
    wins over the config; ``auto`` is online only when an API key is configured; ``online`` without
    a key falls back to offline with a warning rather than prompting for one."""
    env = os.environ if env is None else env
    forced = (env.get("WANDB_MODE") or "").strip().lower()
    if forced in ("offline", "dryrun"):
        return "offline"
    if forced == "disabled":
        return "disabled"
    if forced in ("online", "run"):
        mode = "online"
    if mode not in ("auto", "online", "offline"):
        raise ValueError(f"unknown wandb mode {mode!r}; expected auto, online or offline")
    if mode == "offline":
        return "offline"
    if wandb_api_key_configured(env, netrc_path):
        return "online"
    if mode == "online":
        logger.warning("wandb: mode is online but no API key is configured (WANDB_API_KEY or "
                       "`wandb login`); logging offline instead (upload later with `wandb sync`)")
    return "offline"


def stable_run_id(run_dir: str | Path) -> str:
    """The wandb run id of ``run_dir``: created once and stored in ``run_dir/wandb_run_id``, so a
    run resumed in the same directory continues the same wandb run."""
    path = Path(run_dir) / "wandb_run_id"
    if path.is_file():
        run_id = path.read_text().strip()
        if run_id:
            return run_id
    alphabet = string.ascii_lowercase + string.digits
    run_id = "".join(secrets.choice(alphabet) for _ in range(8))
    path.write_text(run_id + "\n")
    return run_id


class WandbSink:
    """A Weights & Biases run for ``run_dir``: numeric metrics per step, samples as a ``wandb.Table``
    under ``samples``, the run config as the wandb config.

    Never interactive: ``WANDB_SILENT`` and ``Settings(silent=True)``, no console capture, offline
    unless an API key is configured (``resolve_wandb_mode``); an online start that fails (bad key,
    no network within ``init_timeout_s``) falls back to offline with one warning. ``location`` is the
    run's URL online, or its offline directory (upload with ``wandb sync <dir>``).

    Steps: several ``log`` calls at one step (a training step, then the evaluation logged at that
    same step, then its samples) are merged into one wandb history row, because ``log(..., step=s)``
    does not commit until a later step arrives (or ``finish``). wandb drops steps lower than its
    current one; that happens only after a resume from a checkpoint older than the last logged step:
    those replayed steps are skipped here, with one warning.
    """

    def __init__(self, run_dir: str | Path, cfg: RunConfig, *, init_timeout_s: float = 60.0):
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        run_dir = Path(run_dir).resolve()
        wcfg = cfg.logging.wandb
        self.mode = resolve_wandb_mode(wcfg.mode)
        self.run_id = stable_run_id(run_dir)
        kwargs = dict(
            project=wcfg.project,
            entity=wcfg.entity,
            name=wcfg.name or run_dir.name,
            tags=list(wcfg.tags) or None,
            config=cfg.model_dump(mode="json"),
            dir=str(run_dir),
            id=self.run_id,
            resume="allow",
        )

        def settings() -> Any:
            return wandb.Settings(silent=True, console="off", init_timeout=init_timeout_s,
                                  reinit="create_new")

        try:
            self.run = wandb.init(mode=self.mode, settings=settings(), **kwargs)
        except Exception as err:
            if self.mode != "online":
                raise
            logger.warning("wandb: starting the online run failed (%s); logging offline instead", err)
            self.mode = "offline"
            self.run = wandb.init(mode="offline", settings=settings(), **kwargs)
        self._wandb = wandb
        try:  # wandb drops steps lower than the run's current one (a resumed online run starts there)
            self._floor = int(self.run.step or 0)
        except Exception:
            self._floor = 0
        self._warned_behind = False
        self._finished = False
        if self.mode == "online":
            self.location = str(self.run.url)
        elif self.mode == "offline":
            sync_dir = self.run.settings.sync_dir
            self.location = f"{sync_dir} (offline; upload with `wandb sync {sync_dir}`)"
        else:
            self.location = "disabled (WANDB_MODE=disabled)"

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        values = numeric(metrics)
        if values and self._accept(step):
            self.run.log(values, step=step)

    def log_samples(self, step: int, rows: Sequence[Row]) -> None:
        if not rows or not self._accept(step):
            return
        names = reward_names(rows)
        columns = ["step", "stage", "prompt", "completion", "reward", *(f"reward/{n}" for n in names),
                   "finish_reason", "num_tokens", "policy_version", "category"]
        data = []
        for r in rows:
            rewards = r.get("rewards") or {}
            data.append([
                r.get("step", step), r.get("stage"), r.get("prompt"), r.get("completion"),
                _finite(r.get("reward")), *(_finite(rewards.get(n)) for n in names),
                r.get("finish_reason"), r.get("num_tokens"), r.get("policy_version"), r.get("category"),
            ])
        self.run.log({"samples": self._wandb.Table(columns=columns, data=data)}, step=step)

    def close(self) -> None:
        if not self._finished:
            self._finished = True
            self.run.finish()

    def _accept(self, step: int) -> bool:
        if step >= self._floor:
            self._floor = step
            return True
        if not self._warned_behind:
            self._warned_behind = True
            logger.warning("wandb: step %d is behind the wandb run's step %d (resumed from an earlier "
                           "checkpoint); steps up to %d are not logged to wandb again",
                           step, self._floor, self._floor - 1)
        return False


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v
