#!/usr/bin/env bash
# Set up (idempotent) and run the default test suite: everything but the slow
# real-model tests (run those with: scripts/test.sh -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec python -m pytest "$@"
