"""scripts/ship_default.py's shipping rule: a new default model ships only if its validation AUROC beats the
shipped one's, and the card keeps a row for every model shipped before."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ship_default.py"


@pytest.fixture(scope="module")
def ship() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ship_default", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shipped_meta(val_plain: float, val_tta: float, test_auroc: float = 0.8) -> dict:
    return {
        "image_size": 96,
        "tta_effect": {"val_auroc_plain": val_plain, "val_auroc_tta": val_tta},
        "test_metrics": {"auroc": test_auroc, "balanced_accuracy": 0.5},
        "test_operating_points": {"refer": {"sensitivity": 0.92, "specificity": 0.61}},
        "recipe": {"commands": ["python -m dermai pretrain --x"], "notes": [], "training_seconds": {"a": 600}},
    }


def test_ships_only_on_better_validation_auroc(ship: ModuleType) -> None:
    old = shipped_meta(0.90, 0.907)
    assert ship.best_val_auroc(old) == 0.907  # the setting the old model was chosen with
    assert ship.improves(0.91, old)
    assert not ship.improves(0.905, old)
    assert not ship.improves(0.907, old)
    assert ship.improves(0.5, None)  # nothing shipped yet
    assert ship.improves(0.5, {"image_size": 96})  # shipped without a recorded validation AUROC


def test_card_lists_every_shipped_model(ship: ModuleType) -> None:
    first = shipped_meta(0.88, 0.89, test_auroc=0.85)
    second = {**shipped_meta(0.90, 0.907, test_auroc=0.878), "history": [ship.history_entry(first)]}
    current = {**shipped_meta(0.93, 0.94, test_auroc=0.91), "image_size": 128}
    current["history"] = [*second["history"], ship.history_entry(second)]
    table = [line for line in ship.history_lines(current) if line.startswith("| `") or "this model" in line]
    assert len(table) == 3
    assert "0.850" in table[0] and "0.878" in table[1] and "**this model**" in table[2] and "128 px" in table[2]
    assert "0.920 / 0.610" in table[1] and "10 min" in table[0]


def test_card_lists_recipes_tried_and_not_shipped(ship: ModuleType) -> None:
    shipped = shipped_meta(0.90, 0.907, test_auroc=0.878)
    tried = {**ship.history_entry({**shipped_meta(0.88, 0.89), "image_size": 128}), "shipped": False}
    tried.update(test_auroc=None)
    lines = ship.history_lines({**shipped, "not_shipped": [tried]})
    row = next(line for line in lines if line.startswith("| not shipped"))
    assert "128 px" in row and "0.890" in row and "| n/a |" in row
