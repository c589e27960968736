#!/usr/bin/env bash
# README command (2): install (idempotent) and run the whole test suite: unit, integration, slow,
# and the gpu tier (which skips itself without CUDA). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest tests "$@"
