"""Validation AUROC of ensemble members served at other input sizes, to choose `ensemble --image-sizes`.

A member fine-tuned on random crops has seen lesions larger than whole images show them, so it may rank
better at test time a little above its training size (Touvron et al. 2019, "Fixing the train-test resolution
discrepancy"). This scores each member on the validation split with images decoded at each size, then every
combination of one size per member as the ensemble would average them (mean logits, the first member's
training prior, computed from the split for a member never calibrated; no temperature, which barely moves
AUROC; each member alone is scored the same way). Each ranked line also shows the seven-class balanced
accuracy of that combination (argmax of the mean class-balanced logits, the evaluator's decision rule), so a
choice that gains AUROC by trading away diagnosis accuracy is visible. The test split is never read.

Usage: python scripts/member_sizes.py W1 W2 [...] --sizes 96 112 120 128 [--data DIR] [--pairs]
A size may be height x width (e.g. 120x160, HAM10000's 4:3 shape) for members trained with --image-width.
A file that holds an ensemble stands for its members (printed as FILE#1, FILE#2, …), so a new candidate can
be scored beside the shipped model's members:
`python scripts/member_sizes.py weights/model.safetensors NEW --sizes 96 120 --pairs`.
With --pairs, every two-member ensemble of the members given (the 50 MB weights limit holds two fp16 members)
is scored at its best size combination, instead of the ensemble of all of them.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dermai.ensemble import EnsembleError, image_sizes_arg, load_members, parse_image_sizes  # noqa: E402
from dermai.evaluate import weights_dataset  # noqa: E402
from dermai.inference import calibrated_probs, forward_pixels, malignant_probability, normalisation  # noqa: E402
from dermai.pixel_cache import load_pixels  # noqa: E402
from dermai.preprocess import InputSize, meta_input_size, size_label  # noqa: E402
from dermai.serving import training_log_prior  # noqa: E402
from dermai.weights import WeightsError  # noqa: E402


def malignant_auroc(logits: np.ndarray, y: np.ndarray, meta: dict) -> float:
    """AUROC of p_malignant from logits, with the prior (and temperature) in `meta`."""
    return float(roc_auc_score(y, malignant_probability(calibrated_probs(logits, meta), meta["classes"])))


def balanced_accuracy(
    member_logits: Sequence[dict[InputSize, np.ndarray]], sizes: Sequence[InputSize], labels: np.ndarray
) -> float:
    """Seven-class balanced accuracy of the members' mean logits at `sizes` (argmax of class-balanced logits)."""
    logits = np.mean([m[s] for m, s in zip(member_logits, sizes, strict=True)], axis=0)
    return float(balanced_accuracy_score(labels, logits.argmax(axis=1)))


def size_grid(
    member_logits: Sequence[dict[InputSize, np.ndarray]], y: np.ndarray, meta: dict
) -> list[tuple[tuple[InputSize, ...], float]]:
    """Every choice of one size per member with the ensemble's AUROC (mean logits), best first."""
    rows = []
    for sizes in itertools.product(*[list(m) for m in member_logits]):
        logits = np.mean([m[s] for m, s in zip(member_logits, sizes, strict=True)], axis=0)
        rows.append((tuple(sizes), malignant_auroc(logits, y, meta)))
    return sorted(rows, key=lambda row: -row[1])


def pair_grid(
    member_logits: Sequence[dict[InputSize, np.ndarray]], y: np.ndarray, meta: dict
) -> list[tuple[float, tuple[int, int], tuple[InputSize, ...]]]:
    """Every pair of members (indices) with the AUROC of its best size combination, best first."""
    rows = []
    for i, j in itertools.combinations(range(len(member_logits)), 2):
        sizes, auroc = size_grid([member_logits[i], member_logits[j]], y, meta)[0]
        rows.append((auroc, (i, j), sizes))
    return sorted(rows, key=lambda row: -row[0])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "members", nargs="+", help="fine-tuned weights files of one split (an ensemble: each of its members)"
    )
    parser.add_argument(
        "--sizes", nargs="+", required=True, help="input sizes to try, in pixels: a square's side, or HEIGHTxWIDTH"
    )
    parser.add_argument("--data", help="data folder (default: the one in the first member's config)")
    parser.add_argument("--top", type=int, default=5, help="size combinations to print")
    parser.add_argument("--pairs", action="store_true", help="score every pair of members, best first")
    args = parser.parse_args(argv)
    try:
        sizes = parse_image_sizes(",".join(args.sizes))
    except EnsembleError as exc:
        parser.error(f"--sizes: {exc}")

    try:
        # fine-tuned models of one split (an ensemble file stands for its members), or a usage error
        names, loaded = load_members(args.members, unpack=True)
    except (WeightsError, EnsembleError) as exc:
        parser.error(str(exc))
    if args.pairs and len(loaded) < 2:
        parser.error("--pairs needs two or more members")
    dataset = weights_dataset(loaded[0].meta, args.data)
    val = dataset.meta[dataset.meta["split"] == "val"]
    train = dataset.meta[dataset.meta["split"] == "train"]

    def scoring_meta(member: dict) -> dict:
        """A member's JSON for scoring: no temperature, and its training prior even when it was never calibrated
        (a run killed while calibrating has no log_prior; scored without one, a member trained on balanced
        batches ranks below what it serves once calibrated)."""
        prior = member.get("log_prior")
        if prior is None:
            prior = training_log_prior(member, train, len(member["classes"]))
        return {**member, "log_prior": prior, "temperature": 1.0}

    meta = scoring_meta(loaded[0].meta)
    y, labels = val["malignant"].to_numpy(), val["label"].to_numpy()
    member_logits: list[dict[InputSize, np.ndarray]] = [{} for _ in loaded]
    print(f"validation split: {len(val)} images, {int(y.sum())} malignant")
    pixels_by_size = {size: load_pixels(list(val["path"]), size) for size in sizes}  # once, not per member
    print("member | " + " | ".join(f"{size_label(s)} px" for s in sizes))
    for path, item, logits_by_size in zip(names, loaded, member_logits, strict=True):
        cells = []
        for size, pixels in pixels_by_size.items():
            mean, std = normalisation(item.meta)
            logits, _ = forward_pixels(item.model, pixels, mean=mean, std=std)
            logits_by_size[size] = logits.astype(np.float64)
            cells.append(f"{malignant_auroc(logits_by_size[size], y, scoring_meta(item.meta)):.4f}")
        print(f"{path} (trained at {size_label(meta_input_size(item.meta))} px) | " + " | ".join(cells))
    if args.pairs:
        print("pairs of members at their best sizes (mean logits), best first:")
        for auroc, (i, j), sizes in pair_grid(member_logits, y, meta)[: args.top]:
            bacc = balanced_accuracy([member_logits[i], member_logits[j]], sizes, labels)
            print(
                f"  {names[i]} + {names[j]} --image-sizes {image_sizes_arg(sizes)}: "
                f"{auroc:.4f} (balanced accuracy {bacc:.3f})"
            )
        return 0
    print("ensemble, one size per member (mean logits), best first:")
    for sizes, auroc in size_grid(member_logits, y, meta)[: args.top]:
        bacc = balanced_accuracy(member_logits, sizes, labels)
        print(f"  --image-sizes {image_sizes_arg(sizes)}: {auroc:.4f} (balanced accuracy {bacc:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
