"""Session fixtures for the integration tier: one tiny local model and one local Ray per session."""

from __future__ import annotations

import os

import pytest

from rlft.models import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A random-init tiny Qwen2 (~0.6M parameters, tied embeddings) and its character tokenizer."""
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0))


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray for the whole session (starting one costs ~8 s); 2 cores over-committed to 4 CPUs."""
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
