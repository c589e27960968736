"""The core never imports ray or vllm: with both made unimportable, every rlft module still works."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import importlib, importlib.abc, pkgutil, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("ray", "vllm"):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
    import rlft
    for m in pkgutil.walk_packages(rlft.__path__, "rlft."):
        importlib.import_module(m.name)

    import torch
    import rlft.algorithms as A
    from rlft.config import load_config
    adv = A.ADVANTAGES["grpo"](torch.tensor([1.0, 0.0]), torch.tensor([0, 0]))
    assert adv[0] > 0 > adv[1]
    load_config(overrides=["algo.advantage.name=rloo"])
    try:
        import ray  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the block did not work")
    assert not any(k.split(".")[0] in ("ray", "vllm") for k in sys.modules)
    print("ok", len(list(pkgutil.walk_packages(rlft.__path__, "rlft."))))
    """
)


def test_rlft_imports_without_ray_and_vllm():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok ")
