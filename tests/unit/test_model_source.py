"""A model path is checked before anything loads it: a missing local directory is named as such
(not a Hugging Face "repo id" traceback), and a hub id that cannot be downloaded here says so at
once with how to point at a local copy (not a minute of retries and a traceback)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from launch import model_source
from launch.train import resolve_model
from rlft.config import load_config
from rlft.data.loading import DataError


@pytest.mark.parametrize("path", ["./models/my-model", "/data/no/such/model", "~/no-such-model-dir",
                                  "models/qwen/v2"])
def test_a_missing_local_model_directory_is_named(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=rf"^model.path '{path}': no such directory \(resolved: "):
        resolve_model(load_config(overrides=[f"model.path={path}"]), tmp_path)


def test_a_file_is_not_a_model_directory_and_a_directory_passes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(DataError, match="'./weights.bin': a file, not a directory"):
        resolve_model(load_config(overrides=["model.path=./weights.bin"]), tmp_path)
    (tmp_path / "m").mkdir()
    # absolute: Ray's actors run elsewhere (a relative path failed there as a "repo id")
    assert resolve_model(load_config(overrides=["model.path=./m"]), tmp_path) == str((tmp_path / "m").resolve())


def test_the_built_in_model_is_built_under_a_relative_run_dir_and_named_absolutely(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = resolve_model(load_config(), Path("runs/exp"))
    assert path == str((tmp_path / "runs/exp/base-model").resolve()) and Path(path, "config.json").is_file()


def test_an_offline_hub_id_fails_at_once_naming_the_local_copy(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket, "create_connection", _never)
    with pytest.raises(DataError) as err:
        resolve_model(load_config(overrides=["model.path=Qwen/Qwen2.5-0.5B"]), tmp_path)
    text = str(err.value)
    assert "'Qwen/Qwen2.5-0.5B' is not a local directory and not in the Hugging Face cache here" in text
    assert "nothing can be downloaded: HF_HUB_OFFLINE is set" in text
    assert "huggingface-cli download Qwen/Qwen2.5-0.5B --local-dir DIR" in text and "model.path: DIR" in text


def test_an_unreachable_hub_is_named_and_a_reachable_one_lets_the_download_go_on(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(model_source, "_cached", lambda repo_id: False)
    monkeypatch.setattr(socket, "create_connection", _unreachable)
    with pytest.raises(DataError, match=r"nothing can be downloaded: huggingface.co:443 cannot be reached"):
        model_source.check_model_source("org/model")
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: _Conn())
    assert model_source.check_model_source("org/model") == "org/model"
    monkeypatch.setattr(model_source, "_cached", lambda repo_id: True)
    monkeypatch.setattr(socket, "create_connection", _never)
    assert model_source.check_model_source("org/model") == "org/model"  # cached: no probe at all


def _never(*args, **kwargs):
    raise AssertionError("no connection may be tried")


def _unreachable(*args, **kwargs):
    raise socket.gaierror(-2, "Name or service not known")


class _Conn:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
