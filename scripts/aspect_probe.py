"""Does the shape of an upload matter? The shipped model's validation AUROC when the same lesions arrive framed
otherwise than HAM10000's 4:3 landscape images.

Every image is resized to the model's input (`dermai.preprocess.resize_input`). A square input squashes it, so a
model trained on 4:3 images has only ever seen lesions narrowed to 3/4 of their width, and a square photo, or a
portrait one, is squashed differently: the lesion reaches the model wider than any training lesion, or narrowed
along the other axis. This scores the validation split as stored and as the same images re-framed: turned to
portrait, cut to a centred square, that square cut again to a centred 4:3, and the square padded with black to
4:3, each then served exactly as `predict` serves an upload; and zoomed: the centred 90%, 80% and 70% of each
side, so the lesion reaches the model with more pixels at no extra compute. The test split is never read.

Zooming does not help the shipped pair: 0.9124, 0.9105 and 0.9039 validation AUROC at 90%, 80% and 70%, against
0.9133 as stored (2026-12-06).

Its first run (2026-11-30) found portrait images served as they were costing 0.003 AUROC and 0.07 seven-class
balanced accuracy (0.9106 and 0.615 against 0.9134 and 0.684), and padding costing far more; `resize_input` has
turned portrait images to landscape since, so that row now matches the first.

With --views it also scores each of test-time augmentation's eight views of the stored images alone (the four
quarter turns, each also mirrored), and the mean logits of all eight against those of the four that keep the
squashed axis where training had it (no turn or a half turn).

Usage: python scripts/aspect_probe.py [--weights W] [--data DIR] [--views]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dermai.data import DataError  # noqa: E402
from dermai.evaluate import EvaluationError, weights_dataset  # noqa: E402
from dermai.inference import calibrated_probs, forward_pixels, malignant_probability, normalisation  # noqa: E402
from dermai.preprocess import meta_input_size, resize_input  # noqa: E402
from dermai.weights import WeightsError, load_weights  # noqa: E402


def centre_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def square(image: Image.Image) -> Image.Image:
    side = min(image.size)
    return centre_crop(image, side, side)


def square_then_landscape(image: Image.Image) -> Image.Image:
    side = min(image.size)
    return centre_crop(square(image), side, round(side * 3 / 4))


def square_padded(image: Image.Image) -> Image.Image:
    cut = square(image)
    canvas = Image.new("RGB", (round(cut.height * 4 / 3), cut.height))
    canvas.paste(cut, ((canvas.width - cut.width) // 2, 0))
    return canvas


def zoom(fraction: float) -> Callable[[Image.Image], Image.Image]:
    """The centred `fraction` of each side (0.8: the middle 80% of the width and of the height)."""
    return lambda image: centre_crop(image, round(image.width * fraction), round(image.height * fraction))


FRAMINGS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "as stored (4:3 landscape)": lambda image: image,
    "portrait (turned 90°, 3:4)": lambda image: image.transpose(Image.Transpose.ROTATE_90),
    "centred square (1:1)": square,
    "centred square, then its centred 4:3": square_then_landscape,
    "centred square, padded with black to 4:3": square_padded,
    "zoomed: centred 90% of each side": zoom(0.9),
    "zoomed: centred 80% of each side": zoom(0.8),
    "zoomed: centred 70% of each side": zoom(0.7),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="default: the shipped weights/model.safetensors")
    parser.add_argument("--data", help="the weights' data folder (default: the one in their config)")
    parser.add_argument("--views", action="store_true", help="also score each test-time augmentation view")
    args = parser.parse_args(argv)
    try:  # a bad weights file or data folder is a usage error that names it, not a traceback
        loaded = load_weights(args.weights)
        rows = weights_dataset(loaded.meta, args.data).meta
    except (WeightsError, EvaluationError, DataError) as exc:
        parser.error(str(exc))
    meta, classes = loaded.meta, list(loaded.meta["classes"])
    val = rows[rows["split"] == "val"]
    images = [Image.open(path).convert("RGB") for path in val["path"]]
    y_mal, labels = val["malignant"].to_numpy().astype(int), val["label"].to_numpy()
    size = meta_input_size(meta)
    mean, std = normalisation(meta)
    print(f"validation split: {len(val)} images, {int(y_mal.sum())} malignant; {args.weights or 'shipped weights'}")
    print("| framing | size | malignant AUROC | 7-class balanced accuracy |")
    print("| --- | --- | --- | --- |")

    def scores(logits: np.ndarray) -> str:
        auroc = roc_auc_score(y_mal, malignant_probability(calibrated_probs(logits, meta), classes))
        return f"{auroc:.4f} | {balanced_accuracy_score(labels, logits.argmax(axis=1)):.3f}"

    stored = None
    for name, frame in FRAMINGS.items():
        framed = [frame(image) for image in images]
        pixels = np.stack([resize_input(image, size) for image in framed])
        stored = pixels if stored is None else stored
        logits, _ = forward_pixels(loaded.model, pixels, mean=mean, std=std)
        print(f"| {name} | {framed[0].width}×{framed[0].height} | {scores(logits.astype(np.float64))} |", flush=True)
    if args.views:
        print("\n| test-time augmentation view of the stored images | malignant AUROC | 7-class balanced accuracy |")
        print("| --- | --- | --- |")
        views = {}
        for turns in range(4):  # as dermai.inference.dihedral_views: quarter turns, then each mirrored
            for mirrored in (False, True):
                view = np.rot90(stored, turns, axes=(1, 2))
                view = np.ascontiguousarray(view[:, :, ::-1] if mirrored else view)
                logits, _ = forward_pixels(loaded.model, view, mean=mean, std=std)
                views[turns, mirrored] = logits.astype(np.float64)
                label = f"{90 * turns}° turn{', mirrored' if mirrored else ''}"
                print(f"| {label} | {scores(views[turns, mirrored])} |", flush=True)
        print(f"| mean of all 8 (`--tta`) | {scores(np.mean(list(views.values()), axis=0))} |")
        kept = [v for (turns, _), v in views.items() if turns % 2 == 0]
        print(f"| mean of the 4 with no or a half turn | {scores(np.mean(kept, axis=0))} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
