"""The examples in the core's docstrings run and give what they show; every module of the core has
some, except the packages that only re-export their modules' names."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import rlft

MODULES = sorted(m.name for m in pkgutil.walk_packages(rlft.__path__, "rlft."))
PACKAGES = {m.name for m in pkgutil.walk_packages(rlft.__path__, "rlft.") if m.ispkg}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
    if name not in PACKAGES:
        assert result.attempted > 0, f"{name} has no docstring example"


def test_the_core_has_packages_and_modules():
    assert {"rlft.algorithms", "rlft.curriculum", "rlft.data", "rlft.models"} <= PACKAGES
    assert len(set(MODULES) - PACKAGES) >= 25
