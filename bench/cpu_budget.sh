#!/usr/bin/env bash
# The shipped recipe (v4) trained on this 2-core CPU alone, editors side by side,
# one thread each, under one wall-clock budget per editor: the same time for all,
# validation included, so a faster step buys more steps. Phase 1 is recipe b of
# the GPU sweep (KL on the locality answers, two same-relation hard negatives),
# and keeps its best checkpoint by mean(rel, gen, loc) as the GPU runs did, since
# it leaves spill-over to phase 2; phase 2 resumes from phase 1's best checkpoint
# with the KL also on the token after each target and, for InstructEdit, the
# plain-prompt row (the current `instructedit train` defaults). Results go to
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
COMMON="--steps 20000 --val-every 400 --val-per-task 30 --patience 6 --c-edit 0.1 --c-loc 5.0 --raw-rephrase-prob 0.3 --hard-negatives 2 --fresh"
IE_P1=0
for name in $RUNS; do case "$name" in ie|ie-rw*) IE_P1=$((IE_P1 + 1)) ;; esac; done
if [ "$IE_P1" -gt 1 ]; then echo "ie and ie-rwW share phase 1: run them in separate calls" >&2; exit 2; fi
mkdir -p runs/cpu
phase() {  # phase NAME FLAGS...
  local name=$1; shift
  if [ -f "runs/cpu/$name/best.safetensors" ] && grep -q "^done" "runs/cpu/$name/train.log" 2>/dev/null; then
    echo "runs/cpu/$name is done; not run again"; return
  fi
  mkdir -p "runs/cpu/$name"
  instructedit train --out "runs/cpu/$name" "$@" $COMMON > "runs/cpu/$name/train.log" 2>&1
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
  phase "$base-p1" $flags --kl-scope answer --no-raw-prompt-row --select-on rel,gen,loc --max-minutes "$P1_MIN"
  phase "$name-p2" $flags --kl-scope after --init-from "runs/cpu/$base-p1/best.safetensors" --max-minutes "$P2_MIN" "${p2[@]}"
}
for name in $RUNS; do run_editor "$name" & done
wait
grep -h "^done\|stopped\|Error" runs/cpu/*/train.log || true
