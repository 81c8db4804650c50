"""The figures the documents quote agree with the files they come from: the model card with weights/ (it is
generated, so it must be what `scripts/ship_default.py --card-only` writes), and its opening summary, the one
part a clinician reads, with weights/test_report.json."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

from tests.test_ship_script import ship  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights"


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _section(text: str, title: str) -> str:
    """The body of one `## title` section of a markdown file."""
    body = text.split(f"\n## {title}\n", 1)[1]
    return body.split("\n## ", 1)[0]


def test_the_model_card_is_what_its_generator_writes_from_the_shipped_json(ship: ModuleType) -> None:  # noqa: F811
    """A hand edit of MODEL_CARD.md (or a generator change without `--card-only`) would leave figures that no
    file backs."""
    meta, report = _json(WEIGHTS / "model.json"), _json(WEIGHTS / "test_report.json")
    assert (WEIGHTS / "MODEL_CARD.md").read_text() == ship.model_card(meta, report, meta["ood_acceptance"])


def test_the_card_opens_with_a_short_summary_of_the_test_reports_figures() -> None:
    card = (WEIGHTS / "MODEL_CARD.md").read_text()
    report = _json(WEIGHTS / "test_report.json")
    headings = [line for line in card.splitlines() if line.startswith("## ")]
    assert headings[:3] == ["## Summary", "## Intended use", "## Model"]
    summary = _section(card, "Summary")
    assert len(summary.strip().splitlines()) <= 12
    low, high = report["binary"]["auroc_ci"]
    assert f"{report['n_images']} images" in summary
    assert f"AUROC {report['binary']['auroc']:.3f} (95% CI {low:.3f}–{high:.3f})" in summary
    for name in ("refer", "urgent"):
        rates = report["binary"]["thresholds"][name]
        for key in ("sensitivity", "specificity"):
            low, high = rates[f"{key}_ci"]
            assert f"{key} {rates[key]:.3f} (95% CI {low:.3f}–{high:.3f})" in summary, (name, key)
    for words in ("not a diagnosis", "CC BY-NC-SA 4.0", "Tschandl", "dermoscopy", "seven diagnoses", "skin types"):
        assert words in summary, words
