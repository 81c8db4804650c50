"""How much colour do dermoscopy photos hold? The figure behind `dermai.ood.GREY_SPREAD`.

For each image of a data folder, resized as the shipped model serves it (96 px), the 99th percentile over
pixels of (largest − smallest of R, G, B): `dermai.ood.colour_spread`. A greyscale image scores 0 (a greyscale
photo saved as a colour JPEG too); the gate calls an image colourless below GREY_SPREAD. Prints the lowest
values and the share of images the gate would flag.

With --melanomas N it shows why the gate exists: the first N melanomas (by image id) are scored by the shipped
model in colour and as greyscale copies, and their tiers compared by the malignancy score alone (the tier the
greyscale copy would get without the gate), with the feature gate's distance and cut-off.

HAM10000 (2026-12-07): lowest 21.0 of 10,015 images (1st percentile 38.0), none flagged. With --melanomas 40,
the shipped model's tiers in colour → as greyscale: urgent → routine 18, urgent → refer 8, refer → routine 6,
refer → refer 3, routine → refer 1, routine → routine 4; 20 of the 40 greyscale copies passed the feature gate
(median distance 56.6 against a cut-off of 56.1).

Usage: python scripts/colour_spread.py [--data DIR] [--size 96] [--melanomas 40]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dermai.data import load_dataset  # noqa: E402
from dermai.ood import GREY_SPREAD, colour_spread  # noqa: E402
from dermai.preprocess import resize_input  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="data folder (default: as the CLI finds it)")
    parser.add_argument("--size", type=int, default=96, help="input size in px (the shipped model's first)")
    parser.add_argument("--melanomas", type=int, default=0, help="score this many melanomas in colour and grey")
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    paths = list(dataset.meta["path"])
    spreads = np.array([colour_spread(resize_input(Image.open(p), args.size)) for p in paths])
    order = np.argsort(spreads)
    print(f"{len(paths)} images in {dataset.root} at {args.size} px")
    print(f"lowest colour spread: {spreads.min():.1f}; 1st percentile {np.percentile(spreads, 1):.1f}")
    for i in order[:5]:
        print(f"  {Path(paths[i]).name}: {spreads[i]:.1f}")
    print(f"flagged colourless (below {GREY_SPREAD:g}): {int((spreads < GREY_SPREAD).sum())}")
    if args.melanomas:
        score_greyscale(dataset.meta, args.melanomas)
    return 0


def score_greyscale(meta: pd.DataFrame, count: int) -> None:
    """Tiers of the first `count` melanomas in colour and in greyscale, by score alone (no pixel gate)."""
    from collections import Counter

    from dermai.metrics import assign_tier
    from dermai.predict import Predictor

    predictor = Predictor.from_weights()
    rows = meta[meta["dx"] == "mel"].sort_values("image_id").head(count)
    moves: Counter[str] = Counter()
    distances = []
    for path in rows["path"]:
        colour = Image.open(path).convert("RGB")
        tiers = []
        for image in (colour, colour.convert("L").convert("RGB")):
            p = predictor.predict(image)
            tiers.append(assign_tier(p.p_malignant, predictor.operating_points))
        distances.append(p.ood_score)
        moves[f"{tiers[0]} → {tiers[1]}"] += 1
    threshold = predictor.ood_stats.threshold if predictor.ood_stats else float("nan")
    print(f"{len(rows)} melanomas, tier in colour → as greyscale (by score): {dict(sorted(moves.items()))}")
    passing = sum(d <= threshold for d in distances)
    print(
        f"greyscale copies' feature distance: median {np.median(distances):.1f}, max {max(distances):.1f}; "
        f"cut-off {threshold:.1f}: {passing} of {len(distances)} pass the feature gate alone"
    )


if __name__ == "__main__":
    raise SystemExit(main())
