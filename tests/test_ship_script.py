"""scripts/ship_default.py's shipping rule: a new default model ships only if its validation AUROC beats the
shipped one's without losing validation balanced accuracy, and the card keeps a row for every model shipped
before."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ship_default.py"
SHIPPED = SCRIPT.parent.parent / "weights"


def shipped_records(tmp_path: Path) -> Path:
    """A weights folder holding copies of the shipped model.json and test_report.json (no tensors)."""
    out = tmp_path / "weights"
    out.mkdir()
    for name in ("model.json", "test_report.json"):
        shutil.copy(SHIPPED / name, out / name)
    return out


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
    assert ship.reasons_not_to_ship(0.91, None, old) == []
    assert ship.reasons_not_to_ship(0.905, None, old) == [
        "validation AUROC 0.9050 does not beat the shipped model's 0.9070"
    ]
    assert ship.reasons_not_to_ship(0.907, None, old)  # a tie does not ship
    assert ship.reasons_not_to_ship(0.5, 0.1, None) == []  # nothing shipped yet
    assert ship.reasons_not_to_ship(0.5, 0.1, {"image_size": 96}) == []  # shipped without recorded figures


def test_a_costlier_candidate_must_beat_the_shipped_auroc_by_a_margin(ship: ModuleType) -> None:
    old = {**shipped_meta(0.912, 0.9141), "tta_recommended": False, "model": {"member_image_sizes": [96, 120]}}
    assert ship.prediction_cost(old) == 96**2 + 120**2
    assert ship.prediction_cost(old, tta=True) == 8 * (96**2 + 120**2)
    assert ship.prediction_cost({"image_size": 144}) == 144**2  # a single model
    pair_144_120 = 144**2 + 120**2
    assert ship.reasons_not_to_ship(0.9144, None, old, pair_144_120) == [
        "validation AUROC 0.9144 beats the shipped model's 0.9141 by less than the 0.002 a model with 1.49× its "
        "compute per image must show"
    ]
    assert ship.reasons_not_to_ship(0.9162, None, old, pair_144_120) == []  # a gain worth the compute
    assert ship.reasons_not_to_ship(0.9144, None, old, 144**2) == []  # cheaper: any gain ships
    assert ship.reasons_not_to_ship(0.9144, None, old) == []  # cost unknown: the plain rule
    assert ship.reasons_not_to_ship(0.9100, None, old, pair_144_120) == [  # no gain: one reason, the plain one
        "validation AUROC 0.9100 does not beat the shipped model's 0.9141"
    ]


def test_a_better_auroc_that_loses_balanced_accuracy_does_not_ship(ship: ModuleType) -> None:
    plain = {**shipped_meta(0.912, 0.913), "tta_recommended": False}
    plain["tta_effect"].update(val_balanced_accuracy_plain=0.68, val_balanced_accuracy_tta=0.60)
    assert ship.best_val_balanced_accuracy(plain) == 0.68  # the setting it serves in (plain), not TTA's
    assert ship.reasons_not_to_ship(0.914, 0.671, plain) == []  # within the 0.01 tolerance
    assert ship.reasons_not_to_ship(0.914, 0.667, plain) == [
        "validation balanced accuracy 0.667 is more than 0.01 below the shipped model's 0.680"
    ]
    assert len(ship.reasons_not_to_ship(0.910, 0.60, plain)) == 2  # both reasons named
    tta = {**plain, "tta_recommended": True}
    assert ship.best_val_balanced_accuracy(tta) == 0.60
    assert ship.reasons_not_to_ship(0.914, 0.61, tta) == []
    # models shipped before the figure was recorded: the serving fit's plain figure, only if served plain
    legacy = {**shipped_meta(0.912, 0.913), "val_metrics": {"val_bacc": 0.682}, "tta_recommended": False}
    assert ship.best_val_balanced_accuracy(legacy) == 0.682
    assert ship.best_val_balanced_accuracy({**legacy, "tta_recommended": True}) is None
    assert ship.reasons_not_to_ship(0.9139, 0.667, legacy) != []  # last session's ens-ga160-192 case


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
    header = next(line for line in lines if line.startswith("| recipe"))
    assert header.count("|") == row.count("|") and "val bal. acc." in header


def _shipped_file(root: Path) -> Path:
    """An empty `weights/model.safetensors` under `root`: where the shipped model lives, for recipe tests."""
    weights = root / "weights" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"")
    return weights


def _run_folder(root: Path, name: str, command: str, init_weights: str | None, times: list[float]) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"command": command, "init_weights": init_weights}))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"time": t}) + "\n" for t in times))
    return run


def test_a_run_continuing_the_shipped_model_carries_its_recipe(ship: ModuleType, tmp_path: Path) -> None:
    weights = _shipped_file(tmp_path)
    shipped = shipped_meta(0.90, 0.907)
    shipped["recipe"]["notes"] = ["pretraining cut short"]
    swa = _run_folder(tmp_path, "swa", "python -m dermai finetune --swa-epochs 15", str(weights), [0.0, 60.0, 120.0])
    recipe = ship.build_recipe([swa], weights, shipped)
    assert recipe["commands"] == ["python -m dermai pretrain --x", "python -m dermai finetune --swa-epochs 15"]
    assert recipe["training_seconds"] == {"a": 600, "swa": 120}
    assert recipe["notes"][0] == "pretraining cut short" and "swa fine-tuned the default model" in recipe["notes"][1]
    # A run from some other weights is its own recipe.
    other = _run_folder(tmp_path, "other", "python -m dermai finetune", str(tmp_path / "x.safetensors"), [0.0, 30.0])
    pre = _run_folder(tmp_path, "pre", "python -m dermai pretrain", None, [0.0, 300.0, 1000.0, 1300.0])  # a resume
    recipe = ship.build_recipe([pre, other], weights, shipped)
    assert recipe["commands"] == ["python -m dermai pretrain", "python -m dermai finetune"]
    assert recipe["training_seconds"] == {"pre": 600, "other": 30} and recipe["notes"] == []


def test_a_run_started_from_another_runs_weights_carries_that_runs_recipe_once(
    ship: ModuleType, tmp_path: Path
) -> None:
    weights = _shipped_file(tmp_path)
    pre = _run_folder(tmp_path, "pre", "python -m dermai pretrain", None, [0.0, 500.0])
    first = _run_folder(tmp_path, "first", "python -m dermai finetune A", str(pre / "model.safetensors"), [0.0, 200.0])
    member = _run_folder(
        tmp_path, "member", "python -m dermai finetune B", str(first / "checkpoints" / "best.safetensors"), [0.0, 90.0]
    )
    expected = ["python -m dermai pretrain", "python -m dermai finetune A", "python -m dermai finetune B"]
    recipe = ship.build_recipe([member], weights, shipped_meta(0.90, 0.907))
    assert recipe["commands"] == expected
    assert recipe["training_seconds"] == {"pre": 500, "first": 200, "member": 90}
    assert ship.build_recipe([pre, member], weights, None)["commands"] == expected  # --pretrain-run: still once


def test_an_ensemble_carries_every_members_recipe_once(ship: ModuleType, tmp_path: Path) -> None:
    weights = _shipped_file(tmp_path)
    shipped = shipped_meta(0.90, 0.907)
    member = _run_folder(tmp_path, "member", "python -m dermai finetune --train-seed 1", str(weights), [0.0, 90.0])
    other = _run_folder(tmp_path, "other", "python -m dermai finetune --lr 3e-4", None, [0.0, 40.0])
    ensemble = tmp_path / "ens"
    ensemble.mkdir()
    members = [str(weights), str(member / "model.safetensors"), str(other / "checkpoints" / "best.safetensors")]
    (ensemble / "config.json").write_text(
        json.dumps({"command": "python -m dermai ensemble A B C", "members": members, "init_weights": None})
    )
    recipe = ship.build_recipe([ensemble], weights, shipped)
    assert recipe["commands"] == [
        "python -m dermai pretrain --x",  # the shipped model's recipe, once although two members start there
        "python -m dermai finetune --train-seed 1",
        "python -m dermai finetune --lr 3e-4",
        "python -m dermai ensemble A B C",
    ]
    assert recipe["training_seconds"] == {"a": 600, "member": 90, "other": 40}
    assert "ens's member" in recipe["notes"][0] and "member fine-tuned the default model" in recipe["notes"][1]


def test_a_member_of_the_shipped_ensemble_named_by_reference_carries_its_recipe(
    ship: ModuleType, tmp_path: Path
) -> None:
    weights = _shipped_file(tmp_path)
    new = _run_folder(tmp_path, "new", "python -m dermai finetune --mixup-alpha 0.2", None, [0.0, 50.0])
    ensemble = tmp_path / "ens"
    ensemble.mkdir()
    members = [f"{weights}#2", str(new / "model.safetensors")]  # `python -m dermai ensemble FILE#2 NEW`
    (ensemble / "config.json").write_text(
        json.dumps({"command": "python -m dermai ensemble A#2 B", "members": members})
    )
    recipe = ship.build_recipe([ensemble], weights, shipped_meta(0.90, 0.907))
    assert recipe["commands"] == [
        "python -m dermai pretrain --x",  # the shipped ensemble's recipe, which holds its member 2's
        "python -m dermai finetune --mixup-alpha 0.2",
        "python -m dermai ensemble A#2 B",
    ]
    assert recipe["training_seconds"] == {"a": 600, "new": 50}
    assert f"ens's member {weights}#2 is member 2 of the default model shipped before it" in recipe["notes"][0]


def test_an_earlier_default_model_restored_from_history_is_known_by_its_content(
    ship: ModuleType, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    weights = repo / "weights" / "model.safetensors"
    weights.parent.mkdir(parents=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    commits = []
    for content in (b"first model", b"second model"):
        weights.write_bytes(content)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", "ship"], check=True)
        log = subprocess.run([*git, "log", "-1", "--format=%h"], capture_output=True, text=True, check=True)
        commits.append(log.stdout.strip())
    restored = tmp_path / "restored" / "model.safetensors"  # `git show <first>:weights/model.safetensors`
    restored.parent.mkdir()
    restored.write_bytes(b"first model")
    first_recipe = {"commands": ["python -m dermai finetune --first"], "notes": [], "training_seconds": {"f": 60}}
    restored.with_suffix(".json").write_text(json.dumps({"recipe": first_recipe}))
    assert ship.shipped_commit(restored, weights) == commits[0]
    assert ship.shipped_commit(weights, weights) == commits[1]
    assert ship.shipped_commit(tmp_path / "absent.safetensors", weights) is None

    member = _run_folder(tmp_path, "member", "python -m dermai finetune --train-seed 2", str(restored), [0.0, 90.0])
    ensemble = tmp_path / "ens"
    ensemble.mkdir()
    members = [str(restored), str(member / "model.safetensors")]
    (ensemble / "config.json").write_text(json.dumps({"command": "python -m dermai ensemble A B", "members": members}))
    recipe = ship.build_recipe([ensemble], weights, shipped_meta(0.90, 0.907))
    assert recipe["commands"] == [  # the first model's own recipe, not the shipped (second) one's
        "python -m dermai finetune --first",
        "python -m dermai finetune --train-seed 2",
        "python -m dermai ensemble A B",
    ]
    assert f"the default model of commit {commits[0]}" in recipe["notes"][0]
    assert f"member fine-tuned the default model of commit {commits[0]}" in recipe["notes"][1]


def test_refresh_ood_rewrites_the_gate_figures_and_nothing_else(
    ship: ModuleType, ham_root: Path, tmp_path: Path
) -> None:
    shipped = SCRIPT.parent.parent / "weights"
    out = tmp_path / "weights"
    shutil.copytree(shipped, out)
    before = json.loads((out / "model.json").read_text())
    ship.refresh_ood(out, str(ham_root))
    after = json.loads((out / "model.json").read_text())
    ood = after["ood_acceptance"]
    assert all(ood["per_image"][name] for name in ("flat_0", "flat_255", "noise_uniform", "noise_gaussian"))
    assert ood["test_lesions_passing"] > 0.95
    assert {k: v for k, v in after.items() if k != "ood_acceptance"} == {
        k: v for k, v in before.items() if k != "ood_acceptance"
    }
    assert json.loads((out / "test_report.json").read_text())["ood_acceptance"] == ood
    card = (out / "MODEL_CARD.md").read_text()
    assert f"flagged: {ood['non_dermoscopy_flagged']} of {ood['non_dermoscopy_total']}" in card
    assert (out / "model.safetensors").read_bytes() == (shipped / "model.safetensors").read_bytes()


def test_refresh_saliency_rewrites_the_saliency_figures_and_nothing_else(
    ship: ModuleType, ham_root: Path, tmp_path: Path
) -> None:
    shipped = SCRIPT.parent.parent / "weights"
    out = tmp_path / "weights"
    shutil.copytree(shipped, out)
    (out / "test_report.json").write_text(
        json.dumps({**json.loads((shipped / "test_report.json").read_text()), "saliency": {"n_images": -1}})
    )
    before_meta = json.loads((out / "model.json").read_text())
    before = json.loads((out / "test_report.json").read_text())
    ship.refresh_saliency(out, str(ham_root), limit=12)
    report = json.loads((out / "test_report.json").read_text())
    saliency = report["saliency"]
    assert saliency["n_images"] == 12 and 0.0 <= saliency["mean_cam_mass_in_mask"] <= 1.0
    assert {k: v for k, v in report.items() if k != "saliency"} == {k: v for k, v in before.items() if k != "saliency"}
    assert json.loads((out / "model.json").read_text()) == before_meta
    card = (out / "MODEL_CARD.md").read_text()
    assert f"Mean share of CAM mass inside the lesion mask: {saliency['mean_cam_mass_in_mask']:.3f}" in card
    assert "n = 12." in card
    assert (out / "model.safetensors").read_bytes() == (shipped / "model.safetensors").read_bytes()


def test_card_only_regenerates_the_card_from_the_recorded_figures(ship: ModuleType, tmp_path: Path) -> None:
    shipped, out = SHIPPED, shipped_records(tmp_path)
    ship.rewrite_card(out)
    meta = json.loads((out / "model.json").read_text())
    assert meta == json.loads((shipped / "model.json").read_text())  # the figures are kept as recorded
    card = (out / "MODEL_CARD.md").read_text()
    assert f"{meta['test_metrics']['auroc']:.3f}" in card and "| val bal. acc. |" in card
    assert f"{meta['val_metrics']['val_bacc']:.3f}" in card  # the shipped model's row shows its val figure
    (out / "test_report.json").unlink()
    with pytest.raises(SystemExit, match="test_report.json: not found"):
        ship.rewrite_card(out)


def test_card_describes_an_ensembles_members_and_nothing_for_one_model(ship: ModuleType) -> None:
    members = [
        {"weights": "weights/model.safetensors as of commit 01908a1", "command": "finetune A", "val_auroc": 0.9036},
        {"weights": "runs/m/model.safetensors", "command": "finetune B", "val_auroc": None, "image_size": 128},
    ]
    lines = ship.ensemble_lines({"ensemble": members})
    assert "ensemble of 2" in lines[0]
    assert lines[1] == "1. `weights/model.safetensors as of commit 01908a1`, val AUROC 0.904: `finetune A`"
    assert lines[2] == "2. `runs/m/model.safetensors`, 128 px: `finetune B`"
    assert ship.ensemble_lines({"image_size": 96}) == []
    served_larger = [members[0], {**members[1], "image_size": 120, "trained_image_size": 96}]
    assert ship.ensemble_lines({"ensemble": served_larger})[2] == (
        "2. `runs/m/model.safetensors`, 120 px (trained at 96 px; the size chosen on validation): `finetune B`"
    )
    scored_larger = [members[0], {**served_larger[1], "val_auroc": 0.9019}]
    assert ship.ensemble_lines({"ensemble": scored_larger})[2] == (  # its own figure is at its training size
        "2. `runs/m/model.safetensors`, 120 px (trained at 96 px; the size chosen on validation), val AUROC 0.902"
        " at its 96 px training size: `finetune B`"
    )
    # a mixed-size ensemble's history row names both sizes; rows from older JSON hold a plain number
    mixed = {**shipped_meta(0.9, 0.91), "image_size": 128, "model": {"member_image_sizes": [96, 128]}}
    assert ship.history_entry(mixed)["image_size"] == "96 and 128 px"
    assert ship._size_cell(96) == "96 px" and ship._size_cell("96 and 128 px") == "96 and 128 px"


def assert_same_figures(actual: object, expected: object, where: str) -> None:
    """`actual` has `expected`'s structure, strings and integers exactly, and its floats to a relative 1e-5:
    the same sums run in another order (AVX-512 or AVX2 kernels) differ in the last digits, a changed figure
    by far more."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), where
        for key, value in expected.items():
            assert_same_figures(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for i, (got, want) in enumerate(zip(actual, expected, strict=True)):
            assert_same_figures(got, want, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert isinstance(actual, (int, float)) and actual == pytest.approx(expected, rel=1e-5, abs=1e-9), where
    else:
        assert actual == expected, where


def test_figures_compare_to_rounding_and_no_further() -> None:
    assert_same_figures({"a": [1, 0.33728413455152123, "x"]}, {"a": [1, 0.33728425305793847, "x"]}, "$")
    for changed in ({"a": [1, 0.3373, "x"]}, {"a": [2, 0.33728425305793847, "x"]}, {"a": [1, 0.337284253, "y"]}):
        with pytest.raises(AssertionError):
            assert_same_figures(changed, {"a": [1, 0.33728425305793847, "x"]}, "$")
    with pytest.raises(AssertionError):
        assert_same_figures({"a": 1.0, "b": 2.0}, {"a": 1.0}, "$")


def test_add_context_reproduces_the_shipped_context_figures(
    ship: ModuleType, ham_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the shipped files without their context model, `--add-context` fits it (train and validation) and
    scores the test split to the committed JSON (to float rounding, which differs between CPUs' kernels); the
    tensors and image-only figures stay as they were."""
    shipped = SCRIPT.parent.parent / "weights"
    out = tmp_path / "weights"
    shutil.copytree(shipped, out)
    meta = json.loads((out / "model.json").read_text())
    report = json.loads((out / "test_report.json").read_text())
    meta.pop("context"), meta["test_metrics"].pop("context"), report.pop("context")
    assert (
        meta["recipe"]["commands"].pop()
        == "python scripts/ship_default.py --add-context --data ../shared/data/ham10000"
    )
    (out / "model.json").write_text(json.dumps(meta))
    (out / "test_report.json").write_text(json.dumps(report))
    monkeypatch.chdir(SCRIPT.parent.parent)  # the data folder as the recorded command names it
    assert Path("../shared/data/ham10000").resolve() == ham_root.resolve()
    ship.add_context(out, "../shared/data/ham10000")
    for name in ("model.json", "test_report.json"):
        assert_same_figures(json.loads((out / name).read_text()), json.loads((shipped / name).read_text()), name)
    assert (out / "MODEL_CARD.md").read_text() == (shipped / "MODEL_CARD.md").read_text()
    assert (out / "model.safetensors").read_bytes() == (shipped / "model.safetensors").read_bytes()
    with pytest.raises(SystemExit, match="already has a context model"):
        ship.add_context(out, "../shared/data/ham10000")


def test_quality_bars_show_context_figures_beside_image_only_ones(ship: ModuleType) -> None:
    refer = {"refer": {"sensitivity": 0.96, "specificity": 0.61}}
    report = {
        "auroc": 0.92,
        "balanced_accuracy": 0.71,
        "binary": {"thresholds": {"refer": {"sensitivity": 0.93, "specificity": 0.7}}},
        "calibration": {"ece_malignant": 0.02},
        "context": {"auroc": 0.935, "balanced_accuracy": None, "thresholds": refer, "ece_malignant": 0.06},
    }
    bars = ship.quality_bars(report)
    assert [image for _, image, _ in bars] == [
        ("0.920", False),
        ("0.710", True),
        ("sens 0.930, spec 0.700", False),
        ("0.020", True),
    ]
    assert [context for _, _, context in bars] == [
        ("0.935", True),
        ("n/a", None),
        ("sens 0.960, spec 0.610", True),
        ("0.060", False),
    ]
    assert [context for _, _, context in ship.quality_bars({**report, "context": None})] == [("n/a", None)] * 4


def test_refresh_subgroups_adds_the_subgroup_figures_only_when_the_headline_repeats(
    ship: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped, out = SHIPPED, shipped_records(tmp_path)
    recorded = {k: v for k, v in json.loads((out / "test_report.json").read_text()).items() if k != "subgroups"}
    (out / "test_report.json").write_text(json.dumps(recorded))
    assert ship.subgroup_lines(recorded) == [] and ship.weakest_groups_lines(recorded) == []
    groups = [
        {"field": "site", "group": "face", "n": 121, "n_malignant": 48, "auroc": 0.758, "auroc_ci": [0.64, 0.87]},
        {
            "field": "age",
            "group": "70 and over",
            "n": 322,
            "n_malignant": 130,
            "auroc": 0.825,
            "auroc_ci": [0.77, 0.88],
        },
        {"field": "site", "group": "ear", "n": 11, "n_malignant": 4, "auroc": None, "auroc_ci": None},
    ]
    for row, (sens, spec) in zip(groups, ((0.938, 0.219), (0.962, 0.385), (0.75, 0.143)), strict=True):
        row.update(sensitivity=sens, specificity=spec)
    calls = []

    def fake_evaluate(weights, data, split, tta, precision):  # noqa: ANN001, ANN202
        calls.append((split, precision))
        return {**recorded, "auroc": recorded["auroc"] + drift, "subgroups": groups}, None

    monkeypatch.setattr(ship, "evaluate", fake_evaluate)
    drift = 0.01  # the weights no longer give their recorded figures: refused, nothing written
    with pytest.raises(SystemExit, match="the test AUROC came out .* not the recorded"):
        ship.refresh_subgroups(out, None)
    assert "subgroups" not in json.loads((out / "test_report.json").read_text())
    drift = 0.0
    ship.refresh_subgroups(out, None)
    assert calls == [("test", "fp32")] * 2
    report = json.loads((out / "test_report.json").read_text())
    assert report["subgroups"] == groups and {k: v for k, v in report.items() if k != "subgroups"} == recorded
    meta, before = json.loads((out / "model.json").read_text()), json.loads((shipped / "model.json").read_text())
    assert meta["test_metrics"].pop("subgroups") == groups
    before["test_metrics"].pop("subgroups", None)
    assert meta == before  # nothing else changed
    card = (out / "MODEL_CARD.md").read_text()
    assert "| site | face | 121 | 48 | 0.758 (0.640–0.870) | 0.938 | 0.219 |" in card
    assert "| site | ear |" not in card  # under 20 test images: in the JSON only
    assert "ranks worst for site face (AUROC 0.758 against" in card
    assert "lowest for site face (AUROC 0.758) and age 70 and over (AUROC 0.825)" in card


def test_weakest_groups_line_names_large_groups_then_smaller_ones_below_them(ship: ModuleType) -> None:
    def group(name: str, n: int, auroc: float | None) -> dict:
        return {"field": "site", "group": name, "n": n, "auroc": auroc, "auroc_ci": auroc and [auroc - 0.1, 1.0]}

    rows = [group("face", 121, 0.758), group("back", 290, 0.857), group("trunk", 220, 0.97)]
    rows += [group("scalp", 20, 0.773), group("neck", 26, 0.792), group("foot", 43, 0.922), group("ear", 11, 0.5)]
    (line,) = ship.weakest_groups_lines({"auroc": 0.894, "subgroups": rows})
    assert "among groups of 100 or more test images, lowest for site face (AUROC 0.758) and site back" in line
    assert line.endswith(
        "Smaller groups also below 0.857: site scalp (AUROC 0.773, 95% CI 0.673–1.000; 20 images); site neck"
        " (AUROC 0.792, 95% CI 0.692–1.000; 26 images)."
    )  # foot scores above the large groups named, ear is under the card's 20 images
    (line,) = ship.weakest_groups_lines({"auroc": 0.894, "subgroups": rows[:3]})
    assert "Smaller groups" not in line


def test_refresh_intervals_replaces_only_the_intervals_when_every_point_figure_repeats(
    ship: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped, out = SHIPPED, shipped_records(tmp_path)
    recorded = json.loads((out / "test_report.json").read_text())
    fresh = json.loads(json.dumps(recorded))  # a deep copy, whose intervals the fake scoring widens
    for block in (fresh["binary"]["thresholds"], fresh["context"]["thresholds"]):
        for rates in block.values():
            rates["sensitivity_ci"] = [rates["sensitivity_ci"][0] - 0.01, rates["sensitivity_ci"][1] + 0.01]
    for row in fresh["subgroups"]:
        row["specificity_ci"] = [0.1, 0.9]
    moved = {"by": 0.0}

    def fake_evaluate(weights, data, split, tta, precision):  # noqa: ANN001, ANN202
        assert (split, precision) == ("test", "fp32")
        scored = json.loads(json.dumps(fresh))
        scored["binary"]["thresholds"]["refer"]["sensitivity"] += moved["by"]
        return scored, None

    monkeypatch.setattr(ship, "evaluate", fake_evaluate)
    moved["by"] = 0.01  # a point figure that does not repeat: the weights or split changed, nothing written
    with pytest.raises(SystemExit, match="not the recorded"):
        ship.refresh_intervals(out, None)
    assert json.loads((out / "test_report.json").read_text()) == recorded
    moved["by"] = 0.0
    ship.refresh_intervals(out, None)
    report = json.loads((out / "test_report.json").read_text())
    assert report == fresh  # intervals replaced, every other figure as recorded
    meta, before = json.loads((out / "model.json").read_text()), json.loads((shipped / "model.json").read_text())
    assert meta["test_metrics"].pop("subgroups") == fresh["subgroups"]
    before["test_metrics"].pop("subgroups")
    assert meta == before
    refer = fresh["binary"]["thresholds"]["refer"]
    low, high = refer["sensitivity_ci"]
    assert f"{refer['sensitivity']:.3f} ({low:.3f}–{high:.3f})" in (out / "MODEL_CARD.md").read_text()
