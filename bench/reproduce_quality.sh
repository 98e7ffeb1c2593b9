#!/usr/bin/env bash
# Reproduce docs/RESULTS.md on SmolLM2-135M (CPU). Each editor gets the same
# budget: at most 2000 steps or 40 minutes of training, whichever comes first,
# hyperparameters chosen on the validation splits only. The two multi-task
# editors train side by side with one thread each; single-task MEND alone.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
COMMON="--steps 2000 --val-every 150 --val-per-task 20 --patience 6 --c-edit 0.1 --c-loc 5.0 --max-minutes 40"
OMP_NUM_THREADS=1 instructedit train --out runs/instructedit --instruct $COMMON &
OMP_NUM_THREADS=1 instructedit train --out runs/mend-multitask --no-instruct $COMMON &
wait
OMP_NUM_THREADS=1 instructedit train --out runs/mend-single --no-instruct --tasks counterfact $COMMON
python bench/train_speed.py --steps 30
instructedit evaluate --n 50 \
  --editor instructedit=runs/instructedit/best.safetensors \
  --editor mend-multitask=runs/mend-multitask/best.safetensors \
  --editor mend-single=runs/mend-single/best.safetensors \
  --editor ft-l --editor none --out bench/results/quality.json
instructedit analyze --n 40 --editor instructedit=runs/instructedit/best.safetensors \
  --editor mend-multitask=runs/mend-multitask/best.safetensors --out docs/figures/gradient_pca.png
