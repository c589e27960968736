#!/usr/bin/env bash
# README command (2): install (idempotent) and run the whole test suite: unit, integration, slow,
# and the gpu tier (which skips itself without CUDA). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
# The run-report test renders the report in headless Chromium (Debian's package); install it once.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q chromium >/dev/null; }
fi
exec .venv/bin/python -m pytest tests "$@"
