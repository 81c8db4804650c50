#!/usr/bin/env bash
# Candidate ensemble members from one borrowed CUDA GPU in one budgeted call (the device tool lends 10 minutes a
# command): two SimCLR trunks side by side (128 px with the default seed, 96 px with training seed 7), then four
# joint-loss fine-tunings side by side, two from each trunk, with the strong augmentation of the CPU recipe's
# second member (crops of 40-100%, any rotation, synthetic hairs and vignetting); PRE_B_SIZE= (empty) gives
# trunk a the GPU alone. Then the best fine-tuned run of each trunk on validation AUROC, and the trunks, are written
# in fp16 to OUT_DIR with every run's config and metrics, so that the CPU machine can pair them with other members
# (scripts/member_sizes.py) or fine-tune more. The test split is never read.
#
# A VARIANTS line may end in more finetune options (e.g. `--mask-weight 4 --temperature 0.2`; the mask loss needs
# the data's masks/, `scripts/device_tree.sh prepare --masks`). FIX_VARIANTS adds a second fine-tuning stage, FIX_S
# seconds at the end: a FixRes step (Touvron et al. 2019) from a first-stage run, at a larger size, lr and epochs
# of its own, `--warmup-epochs 0.5`, the same strong augmentation. Then RETURN_MAX fine-tuned runs come back (the
# best of each trunk's lineage first, then by validation AUROC), and the trunks unless RETURN_TRUNKS=0.
#
# A 3-epoch pretraining probe (full data, 128 px) and a 1-epoch fine-tuning smoke run check every step on the
# device first and time a pretraining epoch; a failure there ends the call within a minute. Watchdogs write each
# run's STOP file at its stage's deadline; a run still busy CALIB_S later is killed, so the packing always starts
# in time (three fine-tunings calibrating and fitting their context models side by side once outlasted a minute on
# the H200, and the call overran). A killed run's weights come back uncalibrated (`python -m dermai calibrate` fits them here).
#
# Usage: DEADLINE_S=540 FT_S=230 scripts/gpu_members.sh RUNS_DIR OUT_DIR     (CPU recipe: scripts/train_default.sh)
# On the device tool: `scripts/device_tree.sh prepare` first (it packs the data into the ignored .gpu_data/ and
# moves the shipped weights aside, or the checkout is over the tool's 64 MiB), carry [".gpu_data"], unpack it and
# set DERMAI_DATA=.gpu_data/ham10000 PYTHONPATH=. in the command, and `scripts/device_tree.sh restore` right after
# (docs/training_runs/h200-2026-11-30/README.md has the call).
set -uo pipefail
RUNS=${1:?usage: gpu_members.sh RUNS_DIR OUT_DIR}
OUT_DIR=${2:?usage: gpu_members.sh RUNS_DIR OUT_DIR}
PY=${PY:-python3}
DEADLINE_S=${DEADLINE_S:-540}   # the whole script, packing included
FT_S=${FT_S:-230}               # the fine-tuning stage's share, calibration included
PACK_S=${PACK_S:-25}
CALIB_S=${CALIB_S:-60}          # after a stage's deadline (its STOP file), the seconds a run gets before it is killed
FIX_S=${FIX_S:-0}                # the FixRes stage's share (FIX_VARIANTS), calibration included
FT_EPOCHS=${FT_EPOCHS:-30}
RETURN_MAX=${RETURN_MAX:-2}
RETURN_TRUNKS=${RETURN_TRUNKS:-1}
PRE_A_SIZE=${PRE_A_SIZE:-128}
PRE_B_SIZE=${PRE_B_SIZE-96}       # empty: no second trunk
SMOKE_SIZE=${SMOKE_SIZE:-64}
SMOKE_ARGS=${SMOKE_ARGS:-}
MAX_PRE_EPOCHS=${MAX_PRE_EPOCHS:-1000}
# The fine-tunings, one per line: run name, trunk (a or b), image size, batch size, learning rate, training seed,
# then any more finetune options.
VARIANTS=${VARIANTS:-"ga128 a 128 128 5e-4 11
ga160 a 160 128 5e-4 12
gb96 b 96 64 1e-3 13
gb128 b 128 128 5e-4 14"}
# FixRes steps, one per line: run name, first-stage run, image size, epochs, learning rate, training seed, options.
FIX_VARIANTS=${FIX_VARIANTS:-}
if [ -n "$FIX_VARIANTS" ] && [ "$FIX_S" -le 0 ]; then echo "gpu_members: FIX_VARIANTS needs FIX_S > 0" >&2; exit 2; fi
CACHE_SIZES=${CACHE_SIZES-$PRE_A_SIZE $PRE_B_SIZE $SMOKE_SIZE 96 128 160}  # decoded up front with 16 workers
# shellcheck disable=SC2206  # EXTRA_ARGS (e.g. "--limit 64" for a toy run) is split on purpose
COMMON=(--seed 0 --quiet ${EXTRA_ARGS:-})
STRONG=(--weight-decay 5e-4 --augment crop_scale=0.4,1.0 --augment rotation_degrees=180
  --augment hair_p=0.2 --augment vignette_p=0.2)
START=$(date +%s)
END=$((START + DEADLINE_S - PACK_S - CALIB_S))
FT_END=$((END - FIX_S))
PRE_END=$((FT_END - FT_S))
mkdir -p "$RUNS" "$OUT_DIR"
log() { echo "[$(($(date +%s) - START))s] $*"; }

# shellcheck source=scripts/watchdog.sh
source "$(dirname "$0")/watchdog.sh"
train() {  # train STAGE RUN_DIR DEADLINE ARGS...: one run under a watchdog; exit 3 (stopped) counts as done
  local stage=$1 dir=$2 deadline=$3; shift 3
  watchdog "$dir" "$deadline" & local watch=$!
  # SIGTERM reads as Ctrl-C to the CLI: the run ends "interrupted", keeping any weights it had written
  local left=$((deadline + CALIB_S - $(date +%s)))
  timeout -k 10 $((left > 1 ? left : 1)) $PY -m dermai "$stage" "${COMMON[@]}" --out "$dir" "$@" \
    > "$dir.log" 2>&1
  local rc=$?
  kill $watch 2>/dev/null
  [ $rc -eq 124 ] && { log "$dir killed ${CALIB_S}s after its deadline"; return 0; }
  [ $rc -eq 0 ] || [ $rc -eq 3 ] || { log "$dir failed (exit $rc):"; tail -20 "$dir.log"; return 1; }
}

log "decoding the pixel caches"
# shellcheck disable=SC2086
$PY - $CACHE_SIZES <<'EOF' || exit 1
import sys
from dermai.config import RunConfig
from dermai.train import prepare_data
cfg = RunConfig()
for size in sorted(set(map(int, sys.argv[1:]))):
    cfg.train.image_size = size
    prepare_data(cfg, workers=16)
EOF
# A warm-up of WANT epochs, cut to half a stage of EPOCHS at toy scale (the trainer refuses one that fills the stage).
warmup() { $PY -c "print(min($1, $2 / 2))"; }
log "probe and smoke runs"
train pretrain "$RUNS/probe-pretrain" "$PRE_END" --image-size "$PRE_A_SIZE" --batch-size 256 --pretrain-epochs 3 || exit 1
# shellcheck disable=SC2086
train finetune "$RUNS/smoke-finetune" "$PRE_END" --image-size "$SMOKE_SIZE" --batch-size 128 --finetune-epochs 1 \
  --init-weights "$RUNS/probe-pretrain/model.safetensors" --reset-classifier --train-seed 1 "${STRONG[@]}" \
  --warmup-epochs 0.5 ${SMOKE_ARGS:-} || exit 1  # SMOKE_ARGS: the variants' own options (the mask loss, say), checked first
EPOCH_S=$($PY bench/run_throughput.py --epoch-seconds "$RUNS/probe-pretrain") || exit 1
# Both trunks share the GPU: a 96 px epoch costs about 0.6 of a 128 px one, so an epoch of both costs ~1.4 (not 1.6:
# one process leaves the GPU partly idle).
# An empty PRE_B_SIZE trains trunk a alone, with every pretraining second.
SHARE=1.4; [ -n "$PRE_B_SIZE" ] || SHARE=1.0
PRE_EPOCHS=$($PY -c "print(min($MAX_PRE_EPOCHS, max(5, int(($PRE_END - $(date +%s) - 20) / ($SHARE * $EPOCH_S)))))")
log "pretraining epoch ${EPOCH_S}s alone; each trunk gets $PRE_EPOCHS epochs, until +$((PRE_END - START))s at most"

train pretrain "$RUNS/trunk-a" "$PRE_END" --image-size "$PRE_A_SIZE" --batch-size 256 \
  --warmup-epochs "$(warmup 5 "$PRE_EPOCHS")" --pretrain-epochs "$PRE_EPOCHS" & A=$!
RB=skipped
if [ -n "$PRE_B_SIZE" ]; then
  train pretrain "$RUNS/trunk-b" "$PRE_END" --image-size "$PRE_B_SIZE" --batch-size 256 \
    --warmup-epochs "$(warmup 5 "$PRE_EPOCHS")" --pretrain-epochs "$PRE_EPOCHS" --train-seed 7 & B=$!
  wait $B; RB=$?
fi
wait $A; RA=$?
log "trunks done (exit $RA, $RB)"
TA="$RUNS/trunk-a/model.safetensors"; TB="$RUNS/trunk-b/model.safetensors"
[ -f "$TA" ] || TA=$TB; [ -f "$TB" ] || TB=$TA
[ -f "$TA" ] || { log "no trunk"; exit 1; }

pids=()
while read -r name trunk size batch lr seed more; do
  [ -n "$name" ] || continue
  init=$TA; [ "$trunk" = b ] && init=$TB
  # shellcheck disable=SC2086  # $more: the line's extra options, split on purpose
  train finetune "$RUNS/$name" "$FT_END" --init-weights "$init" --image-size "$size" --batch-size "$batch" \
    --lr "$lr" --finetune-epochs "$FT_EPOCHS" --train-seed "$seed" "${STRONG[@]}" \
    --warmup-epochs "$(warmup 1 "$FT_EPOCHS")" $more & pids+=($!)
done <<< "$VARIANTS"
for p in "${pids[@]}"; do wait "$p"; done
log "fine-tuning done"

pids=()
while read -r name from size epochs lr seed more; do
  [ -n "$name" ] || continue
  init="$RUNS/$from/model.safetensors"
  [ -f "$init" ] || { log "$name: no weights from $from, skipped"; continue; }
  # shellcheck disable=SC2086
  train finetune "$RUNS/$name" "$END" --init-weights "$init" --image-size "$size" --batch-size 64 --lr "$lr" \
    --finetune-epochs "$epochs" --train-seed "$seed" "${STRONG[@]}" --warmup-epochs 0.5 $more & pids+=($!)
done <<< "$FIX_VARIANTS"
for p in "${pids[@]}"; do wait "$p"; done
[ -z "$FIX_VARIANTS" ] || log "FixRes steps done"

# The best run of each trunk on validation AUROC, in fp16 (~22 MB each), plus every run's config and metrics.
$PY - "$RUNS" "$OUT_DIR" "$RETURN_MAX" "$RETURN_TRUNKS" <<'EOF'
import json, shutil, sys, tarfile
from pathlib import Path
from dermai.weights import load_weights, save_weights
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
return_max, return_trunks = int(sys.argv[3]), sys.argv[4] == "1"
scores = {}
trunk_of = {}


def lineage_trunk(run: Path) -> str:
    """The trunk a run descends from (through FixRes steps), or ""."""
    for _ in range(5):
        config = run / "config.json"
        if not config.exists():
            return ""
        init = Path(json.loads(config.read_text()).get("init_weights") or "")
        if init.parent.name.startswith("trunk-"):
            return init.parent.name
        run = init.parent
    return ""


for run in sorted(p for p in runs.iterdir() if p.is_dir()):
    if not (run / "model.json").exists():
        continue  # failed, or a trunk still being written
    trunk = lineage_trunk(run)
    if trunk and (run / "model.safetensors").exists():
        fitted = json.loads((run / "model.json").read_text()).get("val_metrics")
        if fitted:
            scores[run.name] = fitted["val_auroc"]
        else:  # killed before calibration: its best epoch's validation AUROC, from its metrics
            epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            scores[run.name] = max(r["val_auroc"] for r in epochs if r.get("kind") == "epoch")
            print(f"{run.name}: uncalibrated")
        trunk_of[run.name] = trunk
print("validation AUROC:", json.dumps(scores, indent=1))
chosen = []
for trunk in sorted(set(trunk_of.values())):
    own = {k: v for k, v in scores.items() if trunk_of[k] == trunk}
    chosen.append(max(own, key=own.get))
chosen = chosen[:return_max]
for name in sorted(scores, key=scores.get, reverse=True):
    if len(chosen) < return_max and name not in chosen:
        chosen.append(name)
if return_trunks:
    chosen += [name for name in sorted(set(trunk_of.values())) if (runs / name / "model.safetensors").exists()]
print("returning:", chosen)  # the trunks too, for fine-tuning more members on the CPU
pack = out / "pack"
for run in sorted(p for p in runs.iterdir() if p.is_dir()):
    dest = pack / run.name
    dest.mkdir(parents=True)
    for name in ("config.json", "metrics.jsonl", "model.json"):
        if (run / name).exists():
            shutil.copy(run / name, dest / name)
    if run.name in chosen:
        loaded = load_weights(run / "model.safetensors")
        save_weights(loaded.model, dest / "model.safetensors", loaded.meta, loaded.extra, half=True)
with tarfile.open(out / "runs.tar", "w") as tar:
    tar.add(pack, arcname="gpu-runs")
shutil.rmtree(pack)
EOF
split -b 15m -d "$OUT_DIR/runs.tar" "$OUT_DIR/runs.tar.part" && rm "$OUT_DIR/runs.tar"
cat "$RUNS"/*.log | grep -v "^$" | tail -c 200000 > "$OUT_DIR/logs.txt"
log "done"
