#!/usr/bin/env bash
# Stage what the GPU machine cannot fetch, from a carried folder into /tmp/dev:
# the gguf wheel, the data sets, and the SmolLM2 GGUF in pieces (the tool
# carries at most 64 MiB a call). Run once per carried folder; the last call
# (with `build`) joins the pieces and converts the model.
#   bench/gpu/stage.sh CARRIED_DIR [build EXPECTED_SHA]
set -euo pipefail
cd "$(dirname "$0")/../.."
src=$1
mkdir -p /tmp/dev/pieces /tmp/site
cp "$src"/* /tmp/dev/pieces/
if ls /tmp/dev/pieces/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/dev/pieces/*.whl
fi
if [ -f /tmp/dev/pieces/data.tar.gz ] && [ ! -d /tmp/dev/data ]; then
  mkdir -p /tmp/dev/data && tar -xzf /tmp/dev/pieces/data.tar.gz -C /tmp/dev/data
fi
if [ "${2:-}" = build ]; then
  cat /tmp/dev/pieces/gguf.part.* > /tmp/dev/model.gguf
  mkdir -p /tmp/dev/tok && tar -xzf /tmp/dev/pieces/tok.tar.gz -C /tmp/dev/tok
  PYTHONPATH=/tmp/site INSTRUCTEDIT_CACHE=/tmp/dev/cache python3 bench/gpu/prep.py --gguf /tmp/dev/model.gguf --tokenizer-dir /tmp/dev/tok --expect "$3"
fi
