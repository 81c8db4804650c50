"""The documents agree with what they describe: the model card with weights/ (it is generated, so it must be
what `scripts/ship_default.py --card-only` writes), its opening summary, the one part a clinician reads, with
weights/test_report.json; and `python -m dermai … --help` explains every option and its default."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

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


def _commands(text: str) -> list[str]:
    """Each `python -m dermai …` command in a markdown text's code blocks, its continuation lines joined and
    its comments dropped."""
    commands: list[str] = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        for line in block.splitlines():
            code = line.split(" #")[0].rstrip().removesuffix("\\").rstrip()
            if not code.strip() or line.lstrip().startswith("#"):
                continue
            if "-m dermai" in code:
                commands.append(code)
            elif line.startswith(" ") and commands:
                commands[-1] += " " + code.strip()
    return commands


def test_the_commands_the_documents_show_use_options_their_subcommand_has() -> None:
    """A renamed or removed flag leaves README and docs showing a command that fails."""
    subcommands = _subcommands(build_parser())
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), WEIGHTS / "MODEL_CARD.md"]
    checked = 0
    for path in texts:
        for command in _commands(path.read_text()):
            rest = command.split("-m dermai", 1)[1]
            words = rest.split()
            chosen = max((w for w in subcommands if tuple(words[: len(w)]) == w), key=len, default=None)
            assert chosen, f"{path.name}: {command!r} names no subcommand"
            known = {o for action in subcommands[chosen]._actions for o in action.option_strings}
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest):
                assert flag in known, f"{path.name}: {' '.join(chosen)} has no {flag} ({command!r})"
            checked += 1
    assert checked >= 20  # README, label_efficiency.md and the card's recipe


def _flat(path: Path) -> str:
    """A markdown file's text with its line breaks as spaces, so a figure quoted across two lines is found."""
    return " ".join(path.read_text().split())


def test_the_readmes_patient_context_figures_are_the_shipped_models() -> None:
    meta = _json(WEIGHTS / "model.json")
    context, test = meta["context"], meta["test_metrics"]
    weights = {name: field["weight"] for name, field in context["fields"].items()}
    readme = _flat(ROOT / "README.md")
    val = context["val_metrics"]
    assert f"validation AUROC {val['val_auroc_image_only']:.3f} → {val['val_auroc']:.3f}" in readme
    assert f"test {test['auroc']:.3f} → {test['context']['auroc']:.3f}" in readme
    words = f"age got weight {weights['age']:.2f}, site {weights['site']:.2f}, sex {weights['sex']:.2f}"
    assert words.replace("sex 0.00", "sex 0") in readme


def test_the_readmes_weak_subgroups_are_every_group_below_the_test_interval() -> None:
    """The README names, with its AUROC, each group the model ranks below the lower end of its overall test
    interval (the groups `predict` cautions about), and no other."""
    test = _json(WEIGHTS / "model.json")["test_metrics"]
    low, high = test["auroc_ci"]
    readme = _flat(ROOT / "README.md")
    interval = f"test AUROC {test['auroc']:.3f} with interval {low:.3f}–{high:.3f}"
    opening = f"{interval}, every recorded group below {low:.3f}:"
    assert opening in readme
    listed = readme.split(opening, 1)[1].split("`test_metrics.subgroups`", 1)[0]
    below = [g for g in test["subgroups"] if g["auroc"] is not None and g["auroc"] < low]
    assert sorted(re.findall(r"\d\.\d{3}", listed)) == sorted(f"{g['auroc']:.3f}" for g in below)
    for group in below:
        assert group["group"] in listed, group


def test_the_benchmarks_tta_figures_are_the_shipped_models() -> None:
    effect = _json(WEIGHTS / "model.json")["tta_effect"]
    text = _flat(ROOT / "docs" / "benchmarks.md")
    assert f"validation {effect['val_auroc_plain']:.4f} plain → {effect['val_auroc_tta']:.4f} with TTA" in text
    assert f"test {effect['test_auroc_plain']:.4f} plain vs {effect['test_auroc_tta']:.4f} with TTA" in text


def test_the_label_efficiency_table_is_its_summary_csv() -> None:
    text = (ROOT / "docs" / "label_efficiency.md").read_text()
    with (ROOT / "docs" / "label_efficiency" / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    for r in rows:
        n = {k: float(v) for k, v in r.items() if k != "init"}
        line = (
            f"| {n['fraction']:g} | {n['n_labelled']:.0f} | {r['init']} | {n['auroc_mean']:.3f} ± {n['auroc_sd']:.3f}"
            f" | {n['bacc_mean']:.3f} ± {n['bacc_sd']:.3f} | {n['val_auroc_mean']:.3f} | {n['n_seeds']:.0f} |"
        )
        assert line in text, line


def test_run_throughputs_help_is_its_usage_not_a_run_folder_named_help(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/benchmarks.md shows `python bench/run_throughput.py DIR…`; its --help printed an empty table and
    "--help: not a training run"."""
    spec = importlib.util.spec_from_file_location("run_throughput", ROOT / "bench" / "run_throughput.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--help"])
    out, err = capsys.readouterr()
    assert "Usage: python bench/run_throughput.py RUN_DIR" in out and "| run |" not in out and err == ""
