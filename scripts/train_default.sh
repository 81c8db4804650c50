#!/usr/bin/env bash
# The default model's recipe: SimCLR pretraining at 64 px on every training image, then joint-loss
# fine-tuning at 96 px from the pretrained trunk, then calibration on the validation split.
# Usage: scripts/train_default.sh [RUNS_DIR]   (about 70-90 min on a 2-core bf16 CPU)
set -euo pipefail
RUNS=${1:-runs}
PY=${PY:-.venv/bin/python}
DATA=${DERMAI_DATA:-../shared/data/ham10000}
if [ ! -f "$RUNS/default-pretrain/model.safetensors" ] || grep -q '"status": "stopped"' "$RUNS/default-pretrain/model.json"; then
  RESUME=""; [ -f "$RUNS/default-pretrain/checkpoints/last.pt" ] && RESUME="--resume"
  $PY -m dermai pretrain --data "$DATA" --out "$RUNS/default-pretrain" --seed 0 --image-size 64 \
    --pretrain-epochs 40 --warmup-epochs 1 --quiet $RESUME
fi
RESUME=""; [ -f "$RUNS/default-finetune/checkpoints/last.pt" ] && RESUME="--resume"
$PY -m dermai finetune --data "$DATA" --out "$RUNS/default-finetune" --seed 0 --image-size 96 \
  --init-weights "$RUNS/default-pretrain/model.safetensors" --finetune-epochs 30 --warmup-epochs 1 --quiet $RESUME
