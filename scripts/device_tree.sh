#!/usr/bin/env bash
# Fit the checkout into the `device` tool's 64 MiB working tree for a GPU call, and put it back afterwards.
#
# A call sends tracked files and the folders named in `carry`, and counts each file with a tar header and padding
# (about 0.7 KB more a file, so the 20,030 small images and masks cost ~15 MB more than their bytes; a call that
# sent 59 MiB of bytes as files was refused). The shipped weights alone are 49 MB, so a call that trains on
# HAM10000 leaves the weights behind and carries the data as one gzipped tar:
#   prepare  packs the data's images and metadata (the masks too with --masks, for the mask loss) into
#            .gpu_data/ham10000.tgz (45 MB with the masks), makes git ignore .gpu_data/ and .device_aside/
#            (.git/info/exclude), moves weights/model.safetensors to .device_aside/, and prints what the call will
#            send. Then call the tool with carry [".gpu_data"] and a command that begins
#            `mkdir -p .gpu_data/ham10000 && tar xzf .gpu_data/ham10000.tgz -C .gpu_data/ham10000` and sets
#            DERMAI_DATA=.gpu_data/ham10000 PYTHONPATH=. (docs/training_runs/h200-2026-11-30/README.md has a call).
#   restore  moves the weights back. Run it right after the call: until then `git status` shows them deleted.
#
# Usage: scripts/device_tree.sh prepare [--masks] | restore
# (DERMAI_DATA: the data folder, default ../shared/data/ham10000)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DERMAI_DATA:-../shared/data/ham10000}
WEIGHTS=weights/model.safetensors
ASIDE=.device_aside
LIMIT=$((64 * 1024 * 1024))

ignore() {  # ignore() PATTERN: add it to .git/info/exclude once
  mkdir -p .git/info
  grep -qxF "$1" .git/info/exclude 2>/dev/null || echo "$1" >> .git/info/exclude
}

sent_bytes() {  # what a call sends: tracked and untracked-not-ignored files that exist, plus .gpu_data, each
  # counted as in a tar: a 512-byte header and its bytes rounded up to 512
  { git ls-files -z --cached --others --exclude-standard; find .gpu_data -type f -print0 2>/dev/null; } |
    { xargs -0 -r stat -c %s 2>/dev/null || true; } |  # a moved file: no size
    awk '{s += 512 + int(($1 + 511) / 512) * 512} END {print s + 0}'
}

case "${1:-}" in
  prepare)
    case "${2:-}" in
      "") MASKS= ;;
      --masks) MASKS="$DATA/masks" ;;
      *) echo "device_tree: prepare takes --masks or nothing, not '$2'" >&2; exit 2 ;;
    esac
    [ -f "$DATA/HAM10000_metadata.csv" ] && [ -d "$DATA/images" ] ||
      { echo "device_tree: $DATA: no HAM10000_metadata.csv and images/ there (set DERMAI_DATA)" >&2; exit 2; }
    if [ -e "$ASIDE/model.safetensors" ]; then
      echo "device_tree: $ASIDE/model.safetensors exists: an earlier prepare was not restored (run restore)" >&2
      exit 2
    fi
    ignore ".gpu_data/"
    ignore "$ASIDE/"
    [ -z "$MASKS" ] || [ -d "$MASKS" ] || { echo "device_tree: $DATA: no masks/ there" >&2; exit 2; }
    rm -rf .gpu_data/ham10000 .gpu_data/ham10000.tgz  # nothing left over from an earlier prepare
    mkdir -p .gpu_data "$ASIDE"
    members=(images HAM10000_metadata.csv)
    [ -z "$MASKS" ] || members+=(masks)
    [ ! -f "$DATA/README.md" ] || members+=(README.md)
    tar czf .gpu_data/ham10000.tgz.part -C "$DATA" "${members[@]}"  # then renamed: never a half-written archive
    mv .gpu_data/ham10000.tgz.part .gpu_data/ham10000.tgz
    [ ! -f "$WEIGHTS" ] || mv "$WEIGHTS" "$ASIDE/model.safetensors"
    sent=$(sent_bytes)
    echo "device_tree: the call will send $((sent / 1024 / 1024)) MiB of $((LIMIT / 1024 / 1024)) (carry .gpu_data);" \
      "weights moved to $ASIDE until 'scripts/device_tree.sh restore'"
    [ "$sent" -le "$LIMIT" ] || { echo "device_tree: over the limit: leave out more" >&2; exit 1; }
    ;;
  restore)
    if [ ! -e "$ASIDE/model.safetensors" ]; then
      echo "device_tree: nothing to restore ($ASIDE/model.safetensors is absent)"
      exit 0
    fi
    if [ -e "$WEIGHTS" ]; then
      echo "device_tree: $WEIGHTS exists again; the copy in $ASIDE is left for you to compare" >&2
      exit 2
    fi
    mv "$ASIDE/model.safetensors" "$WEIGHTS"
    echo "device_tree: $WEIGHTS restored"
    ;;
  *)
    echo "usage: scripts/device_tree.sh prepare [--masks] | restore" >&2
    exit 2
    ;;
esac
