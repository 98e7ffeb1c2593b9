#!/usr/bin/env bash
# The shipped recipe (v4) trained on this 2-core CPU alone, for InstructEdit and
# its multi-task MEND twin side by side, one thread each, under one wall-clock
# budget per editor: the same time for both, validation included, so the faster
# MEND step buys its twin more steps. Phase 1 is recipe b of the GPU sweep (KL on
# the locality answers, two same-relation hard negatives), and keeps its best
# checkpoint by mean(rel, gen, loc) as the GPU runs did, since it leaves
# spill-over to phase 2; phase 2 resumes from
# phase 1's best checkpoint with the KL also on the token after each target and,
# for InstructEdit, the plain-prompt row (the current `instructedit train`
# defaults). Results go to runs/cpu/; bench/summarize_sweep.py tabulates them.
#   bench/cpu_budget.sh [PHASE1_MINUTES] [PHASE2_MINUTES]
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
P1_MIN=${1:-55}
P2_MIN=${2:-28}
COMMON="--steps 20000 --val-every 400 --val-per-task 30 --patience 6 --c-edit 0.1 --c-loc 5.0 --raw-rephrase-prob 0.3 --hard-negatives 2 --fresh"
mkdir -p runs/cpu
phase() {  # phase NAME FLAGS...
  local name=$1; shift
  mkdir -p "runs/cpu/$name"
  instructedit train --out "runs/cpu/$name" "$@" $COMMON > "runs/cpu/$name/train.log" 2>&1
}
run_editor() {  # run_editor ie|mend
  local kind=$1 flag
  flag=$([ "$kind" = ie ] && echo --instruct || echo --no-instruct)
  phase "$kind-p1" $flag --kl-scope answer --no-raw-prompt-row --select-on rel,gen,loc --max-minutes "$P1_MIN"
  phase "$kind-p2" $flag --kl-scope after --init-from "runs/cpu/$kind-p1/best.safetensors" --max-minutes "$P2_MIN"
}
run_editor ie & run_editor mend & wait
grep -h "^done\|stopped\|Error" runs/cpu/*/train.log || true
