#!/usr/bin/env bash
# The default recipe on one CUDA GPU, fitted to a wall-clock budget: SimCLR pretraining at 128 px on every
# training image (batch 256), then joint-loss fine-tuning at 160 px from the pretrained trunk (30 epochs,
# label smoothing 0.1, batch 128), then calibration on the validation split (done by the trainer).
#
# Short probes (3 epochs of each stage) time an epoch of each stage on this machine; the
# pretraining epochs are then as many as fit BUDGET_S (capped at MAX_PRETRAIN_EPOCHS), since SimCLR keeps
# improving with epochs. A watchdog writes each stage's STOP file if it overruns, so the run always ends
# with weights: a stopped fine-tuning run keeps its best-on-validation epoch.
#
# Usage: BUDGET_S=480 scripts/train_default_gpu.sh [RUNS_DIR]      (CPU recipe: scripts/train_default.sh)
set -euo pipefail
RUNS=${1:-runs}
PY=${PY:-python3}
DATA=${DERMAI_DATA:-../shared/data/ham10000}
BUDGET_S=${BUDGET_S:-480}
MAX_PRETRAIN_EPOCHS=${MAX_PRETRAIN_EPOCHS:-500}
PRE_SIZE=${PRE_SIZE:-128}
FT_SIZE=${FT_SIZE:-160}
FT_EPOCHS=${FT_EPOCHS:-30}
START=$(date +%s)
# shellcheck disable=SC2206  # EXTRA_ARGS (e.g. "--limit 300" for a smoke test) is split on purpose
COMMON=(--data "$DATA" --seed 0 --quiet ${EXTRA_ARGS:-})
PRE_ARGS=(--image-size $PRE_SIZE --batch-size 256)
FT_ARGS=(--image-size $FT_SIZE --batch-size 128 --label-smoothing 0.1)
# A warm-up of WANT epochs, cut to half a stage of EPOCHS at toy scale (the trainer refuses one that fills the stage).
warmup() { $PY -c "print(min($1, $2 / 2))"; }

epoch_seconds() {  # median seconds between consecutive epoch records of a run
  $PY "$(dirname "$0")/../bench/run_throughput.py" --epoch-seconds "$1"
}

mkdir -p "$RUNS"
rm -rf "$RUNS/probe-pretrain" "$RUNS/probe-finetune"
$PY -m dermai pretrain "${COMMON[@]}" "${PRE_ARGS[@]}" --out "$RUNS/probe-pretrain" --pretrain-epochs 3 \
  --warmup-epochs 1
$PY -m dermai finetune "${COMMON[@]}" "${FT_ARGS[@]}" --out "$RUNS/probe-finetune" --finetune-epochs 3 \
  --warmup-epochs 1
PRE_EPOCH_S=$(epoch_seconds "$RUNS/probe-pretrain")
FT_EPOCH_S=$(epoch_seconds "$RUNS/probe-finetune")
ELAPSED=$(( $(date +%s) - START ))
# 60 s for two process starts, the trainer's calibration and writing the weights.
PRE_EPOCHS=$($PY -c "print(max(min(10, $MAX_PRETRAIN_EPOCHS), min($MAX_PRETRAIN_EPOCHS, int(($BUDGET_S - $ELAPSED - 60 - $FT_EPOCHS * $FT_EPOCH_S) / $PRE_EPOCH_S))))")
echo "epoch seconds: pretrain $PRE_EPOCH_S, finetune $FT_EPOCH_S; probes took ${ELAPSED}s; pretraining $PRE_EPOCHS epochs"

FT_DEADLINE=$(( START + BUDGET_S ))
PRE_DEADLINE=$($PY -c "print(int($FT_DEADLINE - 30 - $FT_EPOCHS * $FT_EPOCH_S))")
# shellcheck source=scripts/watchdog.sh
source "$(dirname "$0")/watchdog.sh"
watchdog "$RUNS/default-pretrain" "$PRE_DEADLINE" & WATCH=$!
# Exit 3 = stopped by the watchdog: its weights are still the trunk to fine-tune.
$PY -m dermai pretrain "${COMMON[@]}" "${PRE_ARGS[@]}" --out "$RUNS/default-pretrain" --pretrain-epochs "$PRE_EPOCHS" \
  --warmup-epochs "$(warmup 5 "$PRE_EPOCHS")" || [ $? -eq 3 ]
kill $WATCH 2>/dev/null || true
watchdog "$RUNS/default-finetune" "$FT_DEADLINE" & WATCH=$!
$PY -m dermai finetune "${COMMON[@]}" "${FT_ARGS[@]}" --out "$RUNS/default-finetune" \
  --init-weights "$RUNS/default-pretrain/model.safetensors" --finetune-epochs $FT_EPOCHS \
  --warmup-epochs "$(warmup 1 "$FT_EPOCHS")" || [ $? -eq 3 ]
kill $WATCH 2>/dev/null || true
echo "done in $(( $(date +%s) - START ))s"
