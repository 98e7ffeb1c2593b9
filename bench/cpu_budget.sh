#!/usr/bin/env bash
# The shipped recipe (v4) trained on a CPU alone, editors side by side, one
# thread each, under one wall-clock budget per editor and phase (validation
# included, so a faster step buys more steps): phase 1 is recipe cpu-p1, phase 2
# is cpu-p2 from phase 1's best checkpoint (editor_core/recipes/). Runs go to
# runs/cpu/; bench/summarize_sweep.py tabulates them.
#   [RUNS="ie mend"] bench/cpu_budget.sh [PHASE1_MINUTES] [PHASE2_MINUTES]
# RUNS names the editors (one process each, so at most one per core):
#   ie           InstructEdit
#   mend         multi-task MEND, no instructions (ie's twin)
#   mend-single  single-task MEND on CounterFact
#   ie-rwW       InstructEdit whose phase 2 weighs the plain-prompt row W
#                (ie-rw0.3: 0.3); phase 1 is ie's, shared and run once
# A phase whose folder already holds a finished run (best.safetensors and a
# train.log that says done) is not run again.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
P1_MIN=${1:-55}
P2_MIN=${2:-28}
RUNS=${RUNS:-ie mend}
IE_P1=0
for name in $RUNS; do case "$name" in ie|ie-rw*) IE_P1=$((IE_P1 + 1)) ;; esac; done
if [ "$IE_P1" -gt 1 ]; then echo "ie and ie-rwW share phase 1: run them in separate calls" >&2; exit 2; fi
mkdir -p runs/cpu
phase() {  # phase NAME OPTIONS...
  local name=$1; shift
  if [ -f "runs/cpu/$name/best.safetensors" ] && grep -q "^done" "runs/cpu/$name/train.log" 2>/dev/null; then
    echo "runs/cpu/$name is done; not run again"; return
  fi
  mkdir -p "runs/cpu/$name"
  instructedit train --out "runs/cpu/$name" --fresh "$@" > "runs/cpu/$name/train.log" 2>&1
}
run_editor() {  # run_editor NAME
  local name=$1 base flags p2=()
  case "$name" in
    ie) base=ie; flags="--instruct" ;;
    mend) base=mend; flags="--no-instruct" ;;
    mend-single) base=mend-single; flags="--no-instruct --tasks counterfact" ;;
    ie-rw*) base=ie; flags="--instruct"; p2=(--raw-row-weight "${name#ie-rw}") ;;
    *) echo "unknown run $name" >&2; return 2 ;;
  esac
  phase "$base-p1" --recipe cpu-p1 $flags --max-minutes "$P1_MIN"
  phase "$name-p2" --recipe cpu-p2 $flags --init-from "runs/cpu/$base-p1/best.safetensors" --max-minutes "$P2_MIN" "${p2[@]}"
}
for name in $RUNS; do run_editor "$name" & done
wait
grep -h "^done\|stopped\|Error" runs/cpu/*/train.log || true
