"""Import user modules that register their own algorithms (or, later, rewards and samplers).

A plugin is a module name (``my_pkg.losses``) or a path to a Python file (``./my_losses.py``). The
config's ``plugins:`` list is imported before the rest of the config is validated, so a user's
``@POLICY_LOSSES.register("my_loss")`` is known when ``algo.loss.name: my_loss`` is checked.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


class PluginError(ImportError):
    """A plugin that could not be found or imported."""


def is_file_spec(spec: str) -> bool:
    """A plugin given as a file path (``./my_losses.py``), not a module name (``my_pkg.losses``)."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def resolve_plugin(spec: str, base_dir: str | Path | None = None) -> str:
    """A file spec as an absolute path (relative ones against ``base_dir``, else the working
    directory); a module name unchanged.

    >>> resolve_plugin("my_pkg.losses"), resolve_plugin("losses.py", "/runs/exp")
    ('my_pkg.losses', '/runs/exp/losses.py')
    """
    if not is_file_spec(spec):
        return spec
    path = Path(spec).expanduser()
    return str(path if path.is_absolute() else Path(base_dir or Path.cwd()).resolve() / path)


def import_plugin(spec: str, base_dir: str | Path | None = None) -> ModuleType:
    """Import ``spec`` once (a dotted module name, or a ``.py`` file relative to ``base_dir``).

    Importing the same file twice returns the first module, so its registrations do not collide.
    """
    if is_file_spec(spec):
        return _import_file(spec, Path(base_dir) if base_dir else Path.cwd())
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as err:
        if err.name is not None and (spec == err.name or spec.startswith(f"{err.name}.")):
            raise PluginError(f"plugin module '{spec}' not found ({err})") from err
        raise PluginError(f"importing plugin module '{spec}' failed: it needs a missing module ({err})") from err


def _import_file(spec: str, base_dir: Path) -> ModuleType:
    path = Path(spec).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    path = path.resolve()
    if not path.is_file():
        raise PluginError(f"plugin file '{spec}' not found (looked at {path})")
    name = f"rlft_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
