from __future__ import annotations

import sys

import pytest

import rlft.algorithms as A


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
