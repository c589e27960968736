"""Where a model comes from, checked before anything loads it: a local directory that must exist,
or a Hugging Face hub id that must be in the local cache or downloadable from here.

Without this check a mistyped local path reached ``transformers`` as a hub id (a traceback about
"repo id" naming rules), and a hub id on a machine without network was retried for about a
minute before a traceback.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from rlft.data.loading import DataError

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
PROBE_TIMEOUT_S = 3.0


def looks_like_path(spec: str) -> bool:
    """True when ``spec`` can only be a local path, not a hub id (``org/name`` or ``name``).

    >>> looks_like_path("./models/qwen"), looks_like_path("/data/m"), looks_like_path("~/m")
    (True, True, True)
    >>> looks_like_path("Qwen/Qwen2.5-0.5B"), looks_like_path("models/qwen/v2"), looks_like_path("gpt2")
    (False, True, False)
    """
    return spec.startswith(("/", "./", "../", "~", ".\\")) or _HUB_ID.fullmatch(spec) is None


def check_model_source(spec: str, what: str = "model.path") -> str:
    """``spec`` as the loaders should get it (a local path made absolute, ``~`` expanded), or a ``DataError``
    that says what is wrong and what to do: a local path that is not a directory, or a hub id that
    is neither cached here nor downloadable (offline mode, or the hub unreachable)."""
    local = Path(spec).expanduser()
    if local.is_dir():
        return str(local.resolve())  # absolute: the actors do not run in this directory
    if looks_like_path(spec):
        what_is = "a file, not a directory" if local.exists() else "no such directory"
        raise DataError(
            f"{what} {spec!r}: {what_is} (resolved: {local.resolve()}). A local model is a directory "
            f"holding config.json, the tokenizer and the weights (save_pretrained writes one); a relative "
            f"path is relative to the directory rlft runs in ({Path.cwd()})"
        )
    if _cached(spec):
        return spec
    reason = _cannot_download()
    if reason:
        raise DataError(
            f"{what} {spec!r} is not a local directory and not in the Hugging Face cache here, and "
            f"nothing can be downloaded: {reason}. Download it on a machine with network "
            f"(`huggingface-cli download {spec} --local-dir DIR`, or `hf download`), copy DIR here and set "
            f"{what}: DIR (or HF_HOME to a cache that holds it)"
        )
    return spec


def _cached(repo_id: str) -> bool:
    """The hub id's files are in the local Hugging Face cache (nothing is fetched)."""
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(repo_id, local_files_only=True)
        return True
    except Exception:  # not cached (or a cache we cannot read): the download path decides
        return False


def _cannot_download() -> str | None:
    """Why nothing can be downloaded from the hub here, or None (as far as a quick probe can tell)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # through a proxy a direct connection says nothing: let the download try
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as err:
        return f"{host}:{port} cannot be reached from this machine ({type(err).__name__}: {err})"
