"""The environment scripts/install.sh leaves behind works for the runtime: vLLM's CPU build,
transformers text models (the torchvision/torchaudio trap), and a local Ray."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys

import pytest


def test_no_cuda_builds_of_vision_and_audio_packages():
    if md.version("torch").endswith("+cpu") is False:
        pytest.skip("not the CPU install")
    for name in ("torchvision", "torchaudio", "torchcodec"):
        with pytest.raises(md.PackageNotFoundError):
            md.version(name)


def test_transformers_builds_and_runs_a_tiny_causal_lm():
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, 64) and torch.isfinite(logits).all()


def test_vllm_is_importable_in_a_fresh_process():
    # A subprocess: importing vllm configures logging and multiprocessing for the whole process.
    code = "import vllm, sys; print(vllm.__version__); sys.exit(0)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip()


def test_local_ray_runs_a_task(ray_session):
    ray = ray_session

    @ray.remote
    def square(x: int) -> int:
        return x * x

    assert ray.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
