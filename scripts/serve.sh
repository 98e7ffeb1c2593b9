#!/usr/bin/env bash
# Set up (idempotent), convert the default model once, and serve it with the
# shipped InstructEdit editor on http://127.0.0.1:8000 (embedded queue; set
# REDIS_URL=redis://127.0.0.1:6379/0 to use Redis Streams).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
instructedit models pull smollm2-135m
exec instructedit serve "$@"
