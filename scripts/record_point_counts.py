"""Record in a weights JSON how many validation images each operating point's figures rest on.

Weights calibrated before `metrics.choose_operating_points` recorded `n_malignant` and `n_benign` (the shipped
default model among them) quote each tier's validation sensitivity and specificity with no interval on the
Predict page, Home and the report (`predict.validation_figures`). This rebuilds the weights' validation split
(checked against their manifest checksum, as `evaluate` does), counts its malignant and benign images, checks
that every recorded rate is a whole number of them (so the figures were measured on this split), and writes
the counts beside the rates of the image model's and the patient-context model's operating points, in the
weights' JSON and in the test report beside it (which copies them). Nothing else changes; the tensors are not
touched.

Usage: python scripts/record_point_counts.py [--weights weights/model.safetensors] [--data ../shared/data/ham10000]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dermai.evaluate import weights_dataset  # noqa: E402
from dermai.safe_write import atomic_write_bytes  # noqa: E402
from dermai.weights import DEFAULT_WEIGHTS  # noqa: E402


def operating_points(meta: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, point) for each tier's cut-off of the image model and, when fitted, the patient-context model."""
    for where, points in (
        ("operating_points", meta.get("operating_points")),
        ("context.operating_points", (meta.get("context") or {}).get("operating_points")),
    ):
        for tier, point in (points or {}).items():
            yield f"{where}.{tier}", point


def whole(rate: float, n: int) -> bool:
    """Whether `rate` is k/n for a whole k (to float precision)."""
    return abs(rate * n - round(rate * n)) < 1e-6


def add_counts(meta: dict[str, Any], n_malignant: int, n_benign: int) -> list[str]:
    """Write the counts into every operating point of `meta`; refuse (ValueError) one whose recorded rates are
    not whole numbers of these counts. Returns what was updated."""
    done = []
    for where, point in operating_points(meta):
        if not (whole(point["sensitivity"], n_malignant) and whole(point["specificity"], n_benign)):
            raise ValueError(
                f"{where}: sensitivity {point['sensitivity']} and specificity {point['specificity']} are not whole "
                f"numbers of {n_malignant} malignant and {n_benign} benign images: not measured on this split"
            )
        point["n_malignant"], point["n_benign"] = n_malignant, n_benign
        done.append(where)
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="weights file whose JSON gets the counts")
    parser.add_argument("--data", default=None, help="data folder the weights were trained on (default: recorded)")
    args = parser.parse_args(argv)
    json_path = Path(args.weights).with_suffix(".json")
    meta = json.loads(json_path.read_text())
    dataset = weights_dataset(meta, args.data, None, json_path)
    val = dataset.meta[dataset.meta["split"] == "val"]
    n_malignant = int(val["malignant"].sum())
    n_benign = len(val) - n_malignant
    # the test report beside the weights holds copies of the same operating points (`evaluate` copies them)
    files = [path for path in (json_path, json_path.parent / "test_report.json") if path.is_file()]
    updated = []
    for path in files:
        text = path.read_text()
        payload = json.loads(text)
        try:
            done = add_counts(payload, n_malignant, n_benign)
        except ValueError as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 2
        updated.append((path, (json.dumps(payload, indent=2) + ("\n" if text.endswith("\n") else "")).encode(), done))
    for path, payload, done in updated:  # every file checked before any is written
        atomic_write_bytes(path, payload)
        print(f"{path}: {n_malignant} malignant, {n_benign} benign validation images recorded in {', '.join(done)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
