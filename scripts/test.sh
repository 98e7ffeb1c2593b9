#!/usr/bin/env bash
# Set up (idempotent), lint, and run the test suite, the real-model tests included
# (leave those out with: scripts/test.sh -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
exec python -m pytest "$@"
