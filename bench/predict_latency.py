"""Median per-image latency of the Predictor on real HAM10000 images, at the weights' input size.

    python bench/predict_latency.py [--weights W] [--data DIR] [--images 20] [--threads N]

Paths, each timed from the file on disk (intake included): predict; predict + Grad-CAM (one intake shared by
both, as the app does); predict with 8-view TTA; and, for weights with a patient-context model, predict with an
age, sex and site given. Goal: predict + Grad-CAM ≤ 150 ms on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from dermai.predict import Predictor  # noqa: E402
from dermai.preprocess import size_label  # noqa: E402
from dermai.weights import WeightsError  # noqa: E402

GOAL_MS = 150.0


def median_ms(run: Callable[[Path], object], images: list[Path], warmup: int = 2) -> float:
    for image in images[:warmup]:
        run(image)
    times = []
    for image in images:
        start = time.perf_counter()
        run(image)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="weights file or folder (default: the shipped weights/model.safetensors)")
    parser.add_argument(
        "--data",
        default=str(REPO.parent / "shared" / "data" / "ham10000"),
        help="HAM10000 copy whose images/ are timed (default: ../shared/data/ham10000 beside the project)",
    )
    parser.add_argument("--images", type=int, default=20, help="images timed, the first by name (default: 20)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    images = sorted((Path(args.data) / "images").glob("ISIC_*.jpg"))[: args.images]
    if not images:
        print(f"skipped: no ISIC_*.jpg images under {Path(args.data) / 'images'}")
        return 0
    try:
        predictor = Predictor.from_weights(args.weights)
    except WeightsError as exc:  # a usage error, named like the CLI names it
        parser.error(str(exc))

    def with_cam(path: Path) -> None:
        # As the Predict page and `predict --cam-out` do it: the CAM explains the top class just shown, so it
        # needs no forward pass of its own to find that class.
        intake = predictor.read(path)
        predictor.explain(intake, method="gradcam", shown=predictor.predict(intake))

    results = {
        "predict": median_ms(predictor.predict, images),
        "predict+gradcam": median_ms(with_cam, images),
        "predict+tta": median_ms(lambda p: predictor.predict(p, tta=True), images),
    }
    if predictor.context_model:
        context = predictor.parse_context(age=60, sex="female", site="back")
        results["predict+context"] = median_ms(lambda p: predictor.predict(p, context=context), images)
    size, threads = size_label(predictor.input_size), torch.get_num_threads()
    print(f"weights {predictor.path} ({size} px), {len(images)} images, {threads} torch threads")
    for name, ms in results.items():
        print(f"  {name:<16} {ms:8.1f} ms/image (median)")
    verdict = "met" if results["predict+gradcam"] <= GOAL_MS else "NOT met"
    print(
        f"predict_latency: {size}px predict {results['predict']:.1f} ms, predict+gradcam "
        f"{results['predict+gradcam']:.1f} ms, predict+tta {results['predict+tta']:.1f} ms "
        f"(goal predict+gradcam <= {GOAL_MS:.0f} ms: {verdict})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
