#!/usr/bin/env bash
# The recipe sweep on a lent GPU machine: three training recipes, each for
# InstructEdit and for its multi-task MEND twin, six runs side by side with the
# same budget (at most 6000 steps, or MINUTES of wall time), chosen afterwards on
# the validation splits only (bench/gpu/pack.py). Expects /tmp/dev made by
# bench/gpu/stage.sh; writes its results to $OUT.
#   bench/gpu/sweep.sh MINUTES
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 INSTRUCTEDIT_DATA_DIR=/tmp/dev/data INSTRUCTEDIT_CACHE=/tmp/dev/cache PYTHONPATH=/tmp/site
MIN=${1:-6}
COMMON="--steps 6000 --val-every 400 --val-per-task 30 --patience 6 --c-edit 0.1 --c-loc 5.0 --raw-rephrase-prob 0.3 --no-raw-prompt-row --max-minutes $MIN --fresh"
declare -A RECIPE=(
  [a]="--kl-scope answer --hard-negatives 0"                      # v1's recipe
  [b]="--kl-scope answer --hard-negatives 2"                      # + same-relation neighbours as locality rows
  [c]="--kl-scope after --hard-negatives 2 --cross-locality"      # + the token after the target, + another task's probe
)
mkdir -p runs/gpu
for k in a b c; do
  for kind in ie mend; do
    flag=$([ $kind = ie ] && echo --instruct || echo --no-instruct)
    mkdir -p runs/gpu/$kind-$k
    python -m editor_core.cli train --out runs/gpu/$kind-$k $flag ${RECIPE[$k]} $COMMON > runs/gpu/$kind-$k/train.log 2>&1 &
  done
done
wait
grep -h "^step\|^done\|Error" runs/gpu/*/train.log | tail -40
python bench/gpu/pack.py runs/gpu "$OUT"
