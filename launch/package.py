"""Packaging a run for a Ray Job: the staging directory that becomes the job's ``working_dir``.

``stage(cfg, root, working_dir)`` copies ``working_dir`` into ``root`` the way Ray would upload it
(``.gitignore`` / ``.rayignore`` applied, no ``.git``, ``.venv``, caches or ``runs/``) and writes
``root/_rlft_job/config.yaml``: the resolved config with every file it names that exists here
(reward and plugin ``.py`` files, data files) pointing at its copy in the package. A file inside the
working directory keeps its place there (its sibling imports keep working); any other goes to
``_rlft_job/files/``. Paths that do not exist here pass through (they name files on the cluster), and
so do ``builtin:`` values and the model. ``rlft submit`` (``launch/jobs.py``) uses it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rlft.config import RunConfig
from rlft.plugins import is_file_spec

JOB_DIR = "_rlft_job"
CONFIG_REL = f"{JOB_DIR}/config.yaml"
RESERVED = ("rlft", "rewards", "actors", "launch")  # rlft's packages: a working dir must not hide them
SKIP_ANYWHERE = {".git", "__pycache__", ".venv", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
SKIP_TOP = {"runs", JOB_DIR}
IGNORE_FILES = {".gitignore", ".rayignore"}  # applied while copying, so not shipped


class JobError(Exception):
    """A job command that cannot go on; the message says what to do (exit code 2)."""


@dataclass
class Staged:
    """A staging directory ready to be a job's ``working_dir``."""

    root: Path
    copied: list[tuple[str, str]] = field(default_factory=list)  # (local file, path in the package)
    notes: list[str] = field(default_factory=list)
    shipped: tuple[int, int] = (0, 0)  # files and bytes copied from the working directory


def stage(cfg: RunConfig, root: Path, working_dir: Path | None = None) -> Staged:
    """Copy ``working_dir`` into ``root`` and write ``root/_rlft_job/config.yaml``: ``cfg`` with every
    local file it references packaged and pointed at relatively (reward and plugin files against the
    config's directory, data against the job's working directory, as ``rlft train`` reads them)."""
    if working_dir is not None:
        working_dir = working_dir.expanduser().resolve()
        if not working_dir.is_dir():
            raise JobError(f"working directory {working_dir} not found")
        check_shadowing(working_dir)
    data = cfg.model_dump(mode="json")
    out = Staged(root, shipped=copy_working_dir(working_dir, root) if working_dir else (0, 0))
    place = _Placer(root, working_dir, out)
    for i, fn in enumerate(data["reward"]["functions"]):
        if fn.get("path") and ":" in fn["path"]:
            target, _, name = fn["path"].rpartition(":")
            if is_file_spec(target):
                fn["path"] = f"{place(target, f'reward.functions.{i}.path', anchor='config')}:{name}"
    data["plugins"] = [
        place(p, f"plugins.{i}", anchor="config") if is_file_spec(p) else p for i, p in enumerate(data["plugins"])
    ]
    d = data["data"]
    for key in ("train_path", "eval_path"):
        if d[key] and not d[key].startswith("builtin:"):
            d[key] = place(d[key], f"data.{key}", anchor="cwd")
    for i, src in enumerate(d["sources"]):
        if not src["path"].startswith("builtin:"):
            src["path"] = place(src["path"], f"data.sources.{i}.path", anchor="cwd")
    if data["cluster"].get("address"):
        address = data["cluster"]["address"]
        out.notes.append(f"cluster.address {address!r} dropped: the job joins the cluster it runs on")
        data["cluster"]["address"] = None
    config_file = root / CONFIG_REL
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(yaml.safe_dump(data, sort_keys=False))  # as dump_config writes it
    return out


class _Placer:
    """Maps a local path to its path in the package: a file inside the working directory keeps its
    place there, any other file is copied to ``_rlft_job/files/`` (keeping its name: data source
    labels come from it); a path that does not exist here passes through as a cluster path."""

    def __init__(self, root: Path, working_dir: Path | None, out: Staged):
        self.root, self.working_dir, self.out = root, working_dir, out
        self.placed: dict[Path, Path] = {}

    def __call__(self, path: str, where: str, *, anchor: str) -> str:
        local = Path(path).expanduser()
        if not local.exists():
            self.out.notes.append(f"{where}: {path} is not a file here; the job uses it as a path on the cluster")
            return path
        local = local.resolve()
        staged = self.placed.get(local) or self._stage(local)
        self.placed[local] = staged
        base = self.root / JOB_DIR if anchor == "config" else self.root
        return os.path.relpath(staged, base)

    def _stage(self, local: Path) -> Path:
        if self.working_dir is not None and local.is_relative_to(self.working_dir):
            inside = self.root / local.relative_to(self.working_dir)
            if inside.exists():  # not dropped by an ignore file
                return inside
        files = self.root / JOB_DIR / "files"
        target, n = files / local.name, 1
        while target.exists():
            n += 1
            target = files / str(n) / local.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if local.is_dir():
            shutil.copytree(local, target)
        else:
            shutil.copy2(local, target)
        self.out.copied.append((str(local), str(target.relative_to(self.root))))
        return target


def check_shadowing(working_dir: Path) -> None:
    """A top-level ``rlft``/``rewards``/``actors``/``launch`` module or package in the working
    directory would hide rlft's own on the workers (the working directory comes first on their
    import path). The rlft checkout itself may be shipped (its packages are rlft's)."""
    import rlft

    if (working_dir / "rlft" / "__init__.py").resolve() == Path(rlft.__file__).resolve():
        return
    for name in RESERVED:
        for entry in (working_dir / f"{name}.py", working_dir / name):
            if entry.exists():
                raise JobError(
                    f"the working directory {working_dir} holds '{entry.name}', which would hide rlft's "
                    f"package '{name}' on the workers: rename it (e.g. my_{entry.name})"
                )


def copy_working_dir(src: Path, dest: Path) -> tuple[int, int]:
    """Copy ``src`` to ``dest`` as Ray would upload it: ``.gitignore`` / ``.rayignore`` patterns
    applied (``RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1`` ignores ``.gitignore``, as Ray does), without
    ``.git``, ``.venv``, caches, ``*.pyc`` and a top-level ``runs/``. The ignore files themselves
    stay behind: they would otherwise drop packaged files in ``_rlft_job/``. Returns the number of
    files and bytes copied."""
    from ray._private.runtime_env.packaging import get_excludes_from_ignore_files

    quiet_ray_loggers()
    use_gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"
    seen: set[Path] = set()
    copied = [0, 0]

    def walk(directory: Path, target: Path, excludes: list[Callable[[Path], bool]], top: bool) -> None:
        if directory.resolve() in seen:  # a symlink loop
            return
        seen.add(directory.resolve())
        target.mkdir(parents=True, exist_ok=True)
        excludes = excludes + get_excludes_from_ignore_files(directory, include_gitignore=use_gitignore)
        for entry in sorted(directory.iterdir()):
            name = entry.name
            if name in SKIP_ANYWHERE or name in IGNORE_FILES or (top and name in SKIP_TOP):
                continue
            if name.endswith(".pyc") or any(exclude(entry) for exclude in excludes):
                continue
            if entry.is_dir():
                walk(entry, target / name, excludes, False)
            elif entry.is_file():
                shutil.copy2(entry, target / name)
                copied[0] += 1
                copied[1] += entry.stat().st_size

    walk(src, dest, [], True)
    return copied[0], copied[1]


def quiet_ray_loggers() -> None:
    """Ray's SDK logs each package upload, ignore file and websocket close at INFO; rlft says what it ships."""
    import logging

    for name in ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk",
                 "ray._private.runtime_env.packaging"):
        logging.getLogger(name).setLevel(logging.WARNING)
