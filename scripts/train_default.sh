#!/usr/bin/env bash
# The default model's recipe: SimCLR pretraining at 64 px on every training image, then joint-loss
# fine-tuning at 96 px from the pretrained trunk (calibrated on the validation split), then a second member
# fine-tuned from that model's trunk with its own training seed, a fresh classifier, stronger augmentation
# (larger crops, any rotation, synthetic hairs and vignetting), NT-Xent τ 0.2 (chosen on validation among
# 0.5 and 0.2; λ stayed 0.5 after 0 and 1 did no better) and the lesion-mask loss at weight 4 (chosen on
# validation among 0, 1 and 4; needs the data's masks/ folder), then both served as one ensemble (calibrated
# again), the second member at 120 px: trained on random crops, it ranks better above its 96 px training size
# (chosen on validation with scripts/member_sizes.py). Usage: scripts/train_default.sh [RUNS_DIR]
# Active time on a 2-core CPU with bf16: 50 + 29 min for the first two steps, about 18 min for the member
# at the speed of docs/training_runs/cpu-lambda-tau-2026-11-29 (it took 29 min on a slower day:
# docs/training_runs/cpu-mask-2026-11-29) — 97 to 108 min in all.
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
if [ ! -f "$RUNS/member-mask4/model.safetensors" ]; then
  RESUME=""; [ -f "$RUNS/member-mask4/checkpoints/last.pt" ] && RESUME="--resume"
  $PY -m dermai finetune --data "$DATA" --out "$RUNS/member-mask4" --seed 0 --train-seed 3 --image-size 96 \
    --init-weights "$RUNS/default-finetune/model.safetensors" --reset-classifier --finetune-epochs 15 \
    --warmup-epochs 1 --weight-decay 5e-4 --augment crop_scale=0.4,1.0 --augment rotation_degrees=180 \
    --augment hair_p=0.2 --augment vignette_p=0.2 --temperature 0.2 --mask-weight 4 --quiet $RESUME
fi
[ -f "$RUNS/default-ensemble/model.safetensors" ] || $PY -m dermai ensemble --data "$DATA" \
  "$RUNS/default-finetune/model.safetensors" "$RUNS/member-mask4/model.safetensors" --image-sizes 96,120 \
  --out "$RUNS/default-ensemble"
