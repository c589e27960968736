"""Shared test setup: tier markers by folder, and a clean skip of the gpu tier without CUDA."""

from __future__ import annotations

from pathlib import Path

import pytest

TIERS = ("unit", "integration", "slow", "gpu")


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
