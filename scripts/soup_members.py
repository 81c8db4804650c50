"""Validation scores of a greedy weight soup of fine-tunes that started from one model.

Averaging the weights of models fine-tuned from one start (Wortsman et al. 2022, "Model soups") can give a
single model that scores like their ensemble, which would free a slot under the 50 MB weights limit (two fp16
members). This averages ingredients greedily, best single model first, keeping each only if the soup's
validation AUROC rises; every soup's batch-norm statistics are re-estimated on a class-balanced draw of the
training images, as the trainer does after SWA. The test split is never read.

Usage: python scripts/soup_members.py W1 W2 [...] [--size PX] [--data DIR]
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dermai.config import AugmentConfig  # noqa: E402
from dermai.ensemble import EnsembleError, load_members  # noqa: E402
from dermai.evaluate import weights_dataset  # noqa: E402
from dermai.inference import calibrated_probs, forward_pixels, malignant_probability, normalisation  # noqa: E402
from dermai.pixel_cache import load_pixels  # noqa: E402
from dermai.splits import class_balanced_weights  # noqa: E402
from dermai.train import recompute_batchnorm  # noqa: E402
from dermai.weights import WeightsError  # noqa: E402


def average_weights(models: Sequence[torch.nn.Module]) -> torch.nn.Module:
    """A copy of the first model holding the mean of every floating-point tensor of `models` (batch-norm
    running statistics included; re-estimate them before use)."""
    soup = copy.deepcopy(models[0])
    states = [m.state_dict() for m in models]
    averaged = {
        key: torch.stack([s[key].float() for s in states]).mean(0).to(value.dtype)
        if value.is_floating_point()
        else value
        for key, value in states[0].items()
    }
    soup.load_state_dict(averaged)
    return soup


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("members", nargs="+", help="fine-tuned weights files that started from one model")
    parser.add_argument("--size", type=int, help="input size in pixels (default: the first member's)")
    parser.add_argument("--data", help="data folder (default: the one in the first member's config)")
    args = parser.parse_args(argv)
    if len(args.members) < 2:
        parser.error("a soup needs two or more members")
    try:
        _, loaded = load_members(args.members)  # fine-tuned single models of one split, or a usage error
    except (WeightsError, EnsembleError) as exc:
        parser.error(str(exc))

    meta = {**loaded[0].meta, "temperature": 1.0}
    size = args.size or int(meta["image_size"])
    rows = weights_dataset(meta, args.data).meta
    val = np.flatnonzero(rows["split"].to_numpy() == "val")
    train = np.flatnonzero((rows["split"].to_numpy() == "train") & rows["labelled"].to_numpy())
    labels, y = rows["label"].to_numpy(), rows["malignant"].to_numpy()
    weights = class_balanced_weights(labels[train])
    balanced = np.random.default_rng(0).choice(train, size=len(train), replace=True, p=weights / weights.sum())
    pixels = load_pixels(list(rows["path"]), size)
    mean, std = normalisation(meta)
    input_norm = AugmentConfig(mean=mean, std=std)  # all batch-norm needs

    def scores(model: torch.nn.Module, prior_meta: dict) -> tuple[float, float]:
        """Validation AUROC (with `prior_meta`'s training prior) and balanced accuracy of one model."""
        logits, _ = forward_pixels(model, pixels[val], mean=mean, std=std)
        p_mal = malignant_probability(calibrated_probs(logits, {**prior_meta, "temperature": 1.0}), meta["classes"])
        return float(roc_auc_score(y[val], p_mal)), float(balanced_accuracy_score(labels[val], logits.argmax(1)))

    print(f"validation split: {len(val)} images at {size} px; AUROC / seven-class balanced accuracy")
    singles = [scores(item.model, item.meta) for item in loaded]  # each with its own prior
    for path, (auroc, bacc) in zip(args.members, singles, strict=True):
        print(f"{path}: {auroc:.4f} / {bacc:.3f}")
    order = sorted(range(len(loaded)), key=lambda i: -singles[i][0])
    ingredients, best = [order[0]], singles[order[0]][0]
    for i in order[1:]:
        soup = average_weights([loaded[j].model for j in [*ingredients, i]])
        recompute_batchnorm(soup, pixels, balanced, input_norm)
        auroc, bacc = scores(soup, loaded[ingredients[0]].meta)  # the best ingredient's prior
        kept = auroc > best
        print(
            f"soup of {len(ingredients) + 1} (+ {args.members[i]}): {auroc:.4f} / {bacc:.3f}{' kept' if kept else ''}"
        )
        if kept:
            ingredients, best = [*ingredients, i], auroc
    print(f"greedy soup: {len(ingredients)} of {len(loaded)} members, validation AUROC {best:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
