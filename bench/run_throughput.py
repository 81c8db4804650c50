"""Training speed of finished runs, read from their metrics.jsonl (so a run on a borrowed GPU reports what
it did there).

Usage: python bench/run_throughput.py RUN_DIR [RUN_DIR ...]
       python bench/run_throughput.py --epoch-seconds RUN_DIR   (one number, for scripts/train_default_gpu.sh)
Prints, per run: stage, image size, batch size, median images/s over the steps after the first epoch
(each image is two augmented views), median seconds per epoch (fine-tuning epochs include validation),
epochs run, and wall-clock seconds from the first to the last record.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dermai.preprocess import meta_input_size, size_label  # noqa: E402
from dermai.train import read_metrics  # noqa: E402


class NotATrainingRun(Exception):
    """A folder without a trainer's config.json: an ensemble, a missing path, a folder of notes."""


def summarise(run: Path) -> dict[str, object]:
    try:
        config = json.loads((run / "config.json").read_text())["config"]
    except (OSError, ValueError, KeyError) as exc:
        raise NotATrainingRun(f"{run}: not a training run (no trainer settings in config.json: {exc!r})") from exc
    records = read_metrics(run)
    size = meta_input_size(config["train"])
    steps = [r["images_per_s"] for r in records if r.get("kind") == "step" and r["epoch"] > 0]
    epochs = [r["time"] for r in records if r.get("kind") == "epoch"]
    return {
        "run": run.name,
        "stage": config["stage"],
        "image_size": size if isinstance(size, int) else size_label(size),  # "120×160" with --image-width
        "batch": config["train"]["batch_size"],
        "images_per_s": round(float(np.median(steps))) if steps else None,
        "epoch_s": round(float(np.median(np.diff(epochs))), 2) if len(epochs) > 1 else None,
        "epochs": len(epochs),
        "wall_s": round(records[-1]["time"] - records[0]["time"]) if records else None,
    }


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    if argv[0] in ("-h", "--help"):  # not a run folder named "--help"
        print(__doc__)
        return
    if argv[0] == "--epoch-seconds":  # one number for scripts: median seconds per epoch of one run
        try:
            print(summarise(Path(argv[1]))["epoch_s"])
        except NotATrainingRun as exc:
            sys.exit(f"run_throughput: {exc}")
        return
    print("| run | stage | size | batch | images/s | s/epoch | epochs | wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for arg in argv:  # a glob over a results folder also matches ensembles: those are named and skipped
        try:
            s = summarise(Path(arg))
        except NotATrainingRun as exc:
            print(f"run_throughput: {exc}; skipped", file=sys.stderr)
            continue
        print(
            f"| {s['run']} | {s['stage']} | {s['image_size']} | {s['batch']} | {s['images_per_s']} | "
            f"{s['epoch_s']} | {s['epochs']} | {s['wall_s']} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
