"""Why the trainer re-estimates a weight average's batch-norm statistics on a class-balanced draw.

Usage: python scripts/swa_batchnorm.py RUN_DIR
RUN_DIR is a fine-tuning run with `--swa-epochs`, still holding its `checkpoints/last.pt`. Prints the
validation AUROC (malignant vs benign, the trainer's per-epoch measure) of the last epoch and of the run's
weight average, with the average's batch-norm statistics taken three ways: re-estimated on the labelled
training images in their natural proportions, re-estimated on a class-balanced draw of them (what the trainer
does, since its batches are drawn that way), and copied from the last epoch's running statistics.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch.optim.swa_utils import AveragedModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dermai.config import run_config_from_dict  # noqa: E402
from dermai.inference import forward_pixels, malignant_probability, softmax_np  # noqa: E402
from dermai.model import SimCLRResNet18  # noqa: E402
from dermai.splits import class_balanced_weights  # noqa: E402
from dermai.train import prepare_data, recompute_batchnorm  # noqa: E402


def main(run: Path) -> None:
    for needed in ("config.json", "checkpoints/last.pt"):
        if not (run / needed).is_file():
            raise SystemExit(f"{run}: no {needed} here (a fine-tuning run folder with its checkpoint is needed)")
    cfg = run_config_from_dict(json.loads((run / "config.json").read_text())["config"])
    dataset, pixels = prepare_data(cfg)
    meta = dataset.meta
    split = meta["split"].to_numpy()
    val = np.flatnonzero(split == "val")
    train = np.flatnonzero((split == "train") & meta["labelled"].to_numpy())
    malignant = meta["malignant"].to_numpy()[val]
    checkpoint = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    if "swa_model" not in checkpoint:
        raise SystemExit(f"{run}: its checkpoint holds no weight average (was it run with --swa-epochs?)")
    last = SimCLRResNet18(len(dataset.classes), cfg.model)
    last.load_state_dict(checkpoint["model"])
    averaged = AveragedModel(last)
    averaged.load_state_dict(checkpoint["swa_model"])

    def val_auroc(model: torch.nn.Module) -> float:
        logits, _ = forward_pixels(model, pixels[val], precision=cfg.train.precision)
        return float(roc_auc_score(malignant, malignant_probability(softmax_np(logits), dataset.classes)))

    labels = meta["label"].to_numpy()[train]
    weights = class_balanced_weights(labels)
    balanced = np.random.default_rng(0).choice(train, size=len(train), replace=True, p=weights / weights.sum())
    print(f"last epoch, its running statistics: {val_auroc(last):.4f}")
    for name, order in (("the natural class mix", train), ("a class-balanced draw", balanced)):
        model = copy.deepcopy(averaged.module)
        recompute_batchnorm(model, pixels, order, cfg.augment, cfg.train.precision)
        print(f"average of {int(averaged.n_averaged)} epochs, statistics on {name}: {val_auroc(model):.4f}")
    model = copy.deepcopy(averaged.module)
    state = model.state_dict()
    state.update({k: v for k, v in checkpoint["model"].items() if "running_" in k or "num_batches" in k})
    model.load_state_dict(state)
    print(f"average, the last epoch's running statistics: {val_auroc(model):.4f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
