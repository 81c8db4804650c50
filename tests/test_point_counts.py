"""scripts/record_point_counts.py: the counts behind each tier's validation figures, so Predict, Home and the
report can give their intervals for weights calibrated before the counts were recorded (the shipped model)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dermai.predict import point_counts, validation_figures
from dermai.weights import DEFAULT_WEIGHTS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from record_point_counts import add_counts  # noqa: E402


def points(sensitivity: float, specificity: float) -> dict[str, object]:
    return {"operating_points": {"refer": {"threshold": 0.1, "sensitivity": sensitivity, "specificity": specificity}}}


def test_counts_are_written_only_where_the_rates_are_whole_numbers_of_them() -> None:
    meta = points(280 / 294, 830 / 1207)
    assert add_counts(meta, 294, 1207) == ["operating_points.refer"]
    assert point_counts(meta["operating_points"]["refer"]) == {"malignant": 294, "benign": 1207}
    with pytest.raises(ValueError, match="not whole numbers of 300 malignant and 1207 benign"):
        add_counts(points(280 / 294, 830 / 1207), 300, 1207)  # another split's counts


def test_the_shipped_model_records_the_counts_its_tier_figures_rest_on() -> None:
    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    for block in (meta["operating_points"], meta["context"]["operating_points"]):
        for point in block.values():
            counts = point_counts(point)
            assert counts is not None, point
            text = validation_figures(point["sensitivity"], point["specificity"], counts)
            assert "95% CI" in text and f"of {counts['malignant']} malignant" in text
