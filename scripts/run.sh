#!/usr/bin/env bash
# README command (1): install (idempotent) and run the main job, `rlft train`, on the embedded default.
# Extra arguments go to the job (a config file and dotted overrides).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
exec .venv/bin/rlft train "$@"
