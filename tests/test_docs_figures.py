"""The documents agree with what they describe: the model card with weights/ (it is generated, so it must be
what `scripts/ship_default.py --card-only` writes), its opening summary, the one part a clinician reads, with
weights/test_report.json; and `python -m dermai … --help` explains every option and its default."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from dermai.cli import build_parser
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


def _subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every leaf subcommand of `python -m dermai` by its words, e.g. ("data", "split")."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= _subcommands(sub, (*path, name)) or {(*path, name): sub}
    return found


def test_every_option_of_every_subcommand_has_help_that_shows_its_default() -> None:
    subcommands = _subcommands(build_parser())
    assert ("experiment", "label-efficiency") in subcommands and ("train",) in subcommands
    for words, parser in subcommands.items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            where = f"{' '.join(words)} {action.option_strings[-1]}"
            assert action.help, f"{where} has no help"
            shown = formatter._get_help_string(action)
            if action.default not in (None, False, [], argparse.SUPPRESS):
                assert "default" in shown, f"{where}: its default {action.default!r} is not shown"
            if "default" in shown:
                assert "default:" in shown, f"{where}: write '(default: X)', as the other options do"
