#!/usr/bin/env bash
# README command (2): install (idempotent) and run the whole test suite: unit, integration, slow,
# and the gpu tier (which skips itself without CUDA). Extra arguments go to pytest; paths among them
# replace `tests`.
#
#   RLFT_TEST_WORKERS  pytest-xdist workers (default 2; 0 runs in this process). Each worker runs
#                      whole test modules (--dist loadscope) in the order tests/conftest.py sets,
#                      with its own local Ray; the slow tier's SFT checkpoint is built once.
#
# At the end pytest prints the 30 slowest tests and each tier's time (tests/conftest.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
# The run-report test renders the report in headless Chromium (Debian's package); install it once.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q chromium >/dev/null; }
fi
paths=(tests)
for arg in "$@"; do
    if [[ "$arg" != -* && -e "${arg%%::*}" ]]; then paths=(); break; fi
done
workers="${RLFT_TEST_WORKERS:-2}"
parallel=()
if [[ "$workers" != 0 ]]; then
    parallel=(-n "$workers" --dist loadscope --no-loadscope-reorder)
fi
exec .venv/bin/python -m pytest "${paths[@]}" "${parallel[@]}" --durations=30 "$@"
