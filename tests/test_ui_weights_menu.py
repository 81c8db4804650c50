"""dermai.ui.weights_menu: the weights offered (and how they are labelled), the model card, and the serving and
patient-context summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dermai.ui import weights_menu


def test_context_summary_prefers_test_figures() -> None:
    block = {"fields": {"age": {"weight": 0.9}, "sex": {"weight": 0.0}}, "val_metrics": {"val_auroc": 0.92}}
    block["val_metrics"]["val_auroc_image_only"] = 0.91
    assert weights_menu.context_summary({}) is None
    assert weights_menu.context_summary({"context": block}) == {
        "weights": {"age": 0.9, "sex": 0.0},
        "auroc": 0.92,
        "auroc_image_only": 0.91,
        "split": "val",
        "n": None,
    }
    meta = {"context": block, "test_metrics": {"auroc": 0.89, "context": {"auroc": 0.9}}}
    assert weights_menu.context_summary(meta)["auroc"] == 0.9
    assert weights_menu.context_summary(meta)["auroc_image_only"] == 0.89
    assert weights_menu.context_summary(meta)["split"] == "test"


def test_model_card_prefers_test_metrics_and_lists_tiers() -> None:
    meta = {
        "val_metrics": {"val_auroc": 0.8},
        "test_metrics": {"auroc": 0.85, "auroc_ci": [0.8, 0.9]},
        "operating_points": {"refer": {"threshold": 0.2, "sensitivity": 0.95, "specificity": 0.5}},
        "image_size": 224,
    }
    card = weights_menu.model_card(meta)
    assert (card["auroc"], card["auroc_ci"], card["auroc_split"]) == (0.85, [0.8, 0.9], "test")
    assert card["tiers"][0]["tier"] == "refer" and card["tiers"][0]["sensitivity"] == 0.95
    assert "test_sensitivity" not in card["tiers"][0]  # no test figures recorded: none shown
    tested = {**meta, "test_operating_points": {"refer": {"sensitivity": 0.92, "specificity": 0.65}}}
    assert weights_menu.model_card(tested)["tiers"][0] == {
        **card["tiers"][0],
        "test_sensitivity": 0.92,
        "test_specificity": 0.65,
    }
    assert card["input_sizes"] == "224 px"
    mixed = {**meta, "model": {"members": 2, "member_image_sizes": [128, 96]}}
    assert weights_menu.model_card(mixed)["input_sizes"] == "96 and 128 px"
    assert weights_menu.model_card({**meta, "image_width": 160})["input_sizes"] == "224×160 px"  # --image-width
    assert weights_menu.model_card({"val_metrics": {"val_auroc": 0.7}})["auroc_split"] == "val"
    assert weights_menu.model_card({})["auroc"] is None


def test_weight_choices_lists_runs_and_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DERMAI_WEIGHTS", raising=False)
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "model.safetensors").write_bytes(b"x")
    (run / "model.json").write_text(json.dumps({"status": "finished"}))
    choices = weights_menu.weight_choices(tmp_path / "runs", "/elsewhere/m.safetensors")
    assert list(choices)[1:] == [str(run / "model.safetensors"), "/elsewhere/m.safetensors"]
    assert choices[str(run / "model.safetensors")] == "r1 (finished)"
    from dermai.weights import DEFAULT_WEIGHTS

    shipped = choices[str(DEFAULT_WEIGHTS)]
    assert shipped == ("shipped model" if DEFAULT_WEIGHTS.exists() else "shipped model (missing)")
    assert len(shipped) <= 24  # fits the sidebar's box, which cut "shipped weights/model.safetensors" off


def test_weight_choices_leave_out_a_run_still_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trainer saves model.safetensors ("finished" in its JSON) minutes before it calibrates them, and an
    ensemble job before it fits them: while the run is running its weights are not offered for prediction,
    and when they are the session's choice already they say "(running)"."""
    from dermai.train import run_lock

    monkeypatch.delenv("DERMAI_WEIGHTS", raising=False)
    runs = tmp_path / "runs"
    for name in ("done", "calibrating"):
        (runs / name).mkdir(parents=True)
        (runs / name / "model.safetensors").write_bytes(b"x")
        (runs / name / "model.json").write_text(json.dumps({"status": "finished"}))
    calibrating = str(runs / "calibrating" / "model.safetensors")
    with run_lock(runs / "calibrating"):  # its trainer still holds the folder
        choices = weights_menu.weight_choices(runs)
        assert choices[str(runs / "done" / "model.safetensors")] == "done (finished)"
        assert calibrating not in choices
        assert weights_menu.weight_choices(runs, calibrating)[calibrating] == "calibrating (running)"
    assert weights_menu.weight_choices(runs)[calibrating] == "calibrating (finished)"  # its trainer has ended


def test_comparison_offers_only_weights_of_the_same_split(tmp_path: Path) -> None:
    def weights(name: str, meta: str) -> str:
        path = tmp_path / name / "model.safetensors"
        path.parent.mkdir()
        path.write_bytes(b"")
        path.with_suffix(".json").write_text(meta)
        return str(path)

    a, same = weights("a", '{"manifest_sha256": "x"}'), weights("b", '{"manifest_sha256": "x"}')
    other = weights("c", '{"manifest_sha256": "y"}')
    unknown, broken = weights("d", "{}"), weights("e", "{not json")
    choices = {p: p.split("/")[-2] for p in (a, same, other, unknown, broken)}
    assert weights_menu.same_split_choices(choices, a) == {same: "b", unknown: "d", broken: "e"}
    assert set(weights_menu.same_split_choices(choices, broken)) == {a, same, other, unknown}  # its split unknown


def test_weight_choices_label_unreadable_and_untrained_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DERMAI_WEIGHTS", raising=False)
    runs = tmp_path / "runs"
    metas: dict[str, bytes] = {
        "garbled": b"\xff\xfe not utf-8",
        "list": b"[]",
        "pretrain": json.dumps({"status": "finished", "stages": ["pretrain"]}).encode(),
        "stopped": json.dumps({"status": "stopped", "stages": ["pretrain", "finetune"], "val_metrics": {}}).encode(),
        "tuned": json.dumps(
            {"status": "stopped", "stages": ["pretrain", "finetune"], "val_metrics": {"stage": "finetune"}}
        ).encode(),
    }
    for name, text in metas.items():
        (runs / name).mkdir(parents=True)
        (runs / name / "model.safetensors").write_bytes(b"x")
        (runs / name / "model.json").write_bytes(text)
    outside = tmp_path / "elsewhere" / "model.safetensors"
    outside.parent.mkdir()
    outside.write_bytes(b"x")
    outside.with_suffix(".json").write_bytes(metas["pretrain"])
    labels = weights_menu.weight_choices(runs, str(outside))
    assert labels[str(runs / "garbled" / "model.safetensors")] == "garbled (unreadable JSON)"
    assert labels[str(runs / "list" / "model.safetensors")] == "list (unreadable JSON)"
    pretrain = labels[str(runs / "pretrain" / "model.safetensors")]
    assert pretrain == "pretrain (finished, pretrain only — no trained classifier)"
    assert labels[str(runs / "stopped" / "model.safetensors")] == (
        "stopped (stopped, stopped before fine-tuning finished an epoch — no trained classifier)"
    )
    assert labels[str(runs / "tuned" / "model.safetensors")] == "tuned (stopped)"
    assert labels[str(outside)] == "elsewhere/model.safetensors (pretrain only — no trained classifier)"
    assert "Fine-tune them first" in weights_menu.untrained_advice("pretrain only — no trained classifier")


def test_model_card_names_odd_blocks_instead_of_failing() -> None:
    meta = {
        "test_metrics": [0.9],
        "val_metrics": {"val_auroc": "high", "auroc_ci": [0.1]},
        "operating_points": {"refer": "0.2", "urgent": {"threshold": "x", "sensitivity": 0.9}},
        "test_operating_points": {"urgent": [0.9]},
        "classes": 7,
        "model": {"member_image_sizes": 96},
        "image_size": 96,
        "context": {"fields": {"age": {"weight": "heavy"}}},
        "stages": ["pretrain"],
    }
    card = weights_menu.model_card(meta)
    assert card["auroc"] is None and card["classes"] == [] and card["context"] is None
    assert card["tiers"] == [{"tier": "urgent", "threshold": None, "sensitivity": 0.9, "specificity": None}]
    assert card["input_sizes"] == "? px"
    assert card["untrained"] == "pretrain only — no trained classifier"
    assert card["problems"] == [
        "field 'test_metrics' is not an object: ignored",
        "field 'val_metrics.val_auroc' is not a number: ignored",
        "field 'operating_points.refer' is not an object: ignored",
        "field 'operating_points.urgent.threshold' is not a number: ignored",
        "field 'test_operating_points.urgent' is not an object: ignored",
        "field 'classes' is not a list: ignored",
        "field 'context.fields.age.weight' is missing or not a number: the patient-context model is not described",
    ]
    assert weights_menu.model_card({"val_metrics": {"val_auroc": 0.8}})["problems"] == []


def test_context_summary_rejects_odd_blocks_and_misses_figures() -> None:
    with pytest.raises(ValueError, match=r"'context\.fields' is missing"):
        weights_menu.context_summary({"context": {"val_metrics": {}}})
    with pytest.raises(ValueError, match=r"'context\.fields' is missing"):
        weights_menu.context_summary({"context": "yes"})
    block = {"fields": {"age": {"weight": 0.5}}}
    # A test block without the image-only AUROC falls back to validation, which recorded nothing here.
    summary = weights_menu.context_summary({"context": block, "test_metrics": {"context": {"auroc": 0.9}}})
    assert summary == {"weights": {"age": 0.5}, "auroc": None, "auroc_image_only": None, "split": "val", "n": None}


def test_serving_summary_is_the_last_calibration_a_run_fitted() -> None:
    step = {"kind": "epoch", "epoch": 0, "val_auroc": 0.88}
    fitted = {
        "kind": "serving",
        "status": "fitted",
        "temperature": 1.2,
        "val_auroc": 0.90,
        "val_bacc": 0.65,
        "val_ece_malignant_uncalibrated": 0.16,
        "val_ece_malignant": 0.03,
        "n_val": 1501,
    }
    assert weights_menu.serving_summary([step]) is None
    assert weights_menu.serving_summary([step, {"kind": "serving", "status": "skipped"}]) is None  # pretraining
    summary = weights_menu.serving_summary([step, {**fitted, "val_auroc": 0.5}, fitted])
    assert summary["status"] == "fitted" and summary["complete"] and summary["error"] is None
    assert (summary["val_auroc"], summary["temperature"], summary["n_val"]) == (0.90, 1.2, 1501)
    older = {k: v for k, v in fitted.items() if k != "val_bacc"}  # a record from before val_bacc was logged
    assert not weights_menu.serving_summary([older])["complete"]
    failed = weights_menu.serving_summary([{"kind": "serving", "status": "failed", "error": "no validation images"}])
    assert failed["status"] == "failed" and failed["error"] == "no validation images" and not failed["complete"]


def test_weight_choices_skip_hidden_folders(tmp_path: Path) -> None:
    for name in ("run", ".deleting-run-1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"")
    listed = [p for p in weights_menu.weight_choices(tmp_path) if p.startswith(str(tmp_path))]
    assert listed == [str(tmp_path / "run" / "model.safetensors")]
