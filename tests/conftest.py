"""Shared test setup: tier markers by folder, a clean skip of the gpu tier without CUDA, and the
global registries restored after every test (plugins register into them)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import rlft.algorithms as A


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cuda = _cuda_available()
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in ("integration", "slow", "gpu"):
            item.add_marker(getattr(pytest.mark, tier))
        if tier == "gpu" and not cuda:
            item.add_marker(pytest.mark.skip(reason="needs CUDA (no GPU visible)"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _restore_registries():
    """Plugins register into the global registries: undo what a test added, and forget the plugin
    modules it imported so a later test that loads the same file registers again."""
    registries = (A.ADVANTAGES, A.POLICY_LOSSES, A.KL_ESTIMATORS)
    before = [set(r.names()) for r in registries]
    modules = set(sys.modules)
    yield
    for reg, names in zip(registries, before):
        for name in set(reg.names()) - names:
            reg.unregister(name)
    for name in set(sys.modules) - modules:
        if name.startswith("rlft_plugin_"):
            del sys.modules[name]
