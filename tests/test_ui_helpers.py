"""dermai.ui (the app's UI-free helpers), and `tiny_weights`, the small calibrated model the app and
browser tests share."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermai.data import DataError
from dermai.report import diagnosis_legend
from dermai.ui import (
    dataset_view,
    evaluation_view,
    image_display,
    predict_view,
    sidebar_state,
    training_form,
    weights_menu,
    widget_state,
)
from tests.conftest import HAM, ham_rows, make_folder


def tiny_weights(base: Path) -> Path:
    """A finetuned-for-one-epoch 32 px model on 64 HAM images, calibrated (tiers and OOD); built once per
    pytest session under `base`."""
    from dermai.config import RunConfig
    from dermai.serving import fit_context, fit_serving
    from dermai.train import train

    run = base / "tiny_run"
    weights = run / "model.safetensors"
    if weights.exists() and "context" in json.loads(weights.with_suffix(".json").read_text()):
        return weights
    cfg = RunConfig(stage="finetune")
    cfg.data.data_dir, cfg.data.limit = str(HAM), 64
    cfg.train.image_size, cfg.train.batch_size, cfg.train.finetune_epochs = 32, 16, 1
    train(cfg, run, progress=False)
    fit_serving(weights, manifest=run / "manifest.csv")
    fit_context(weights, manifest=run / "manifest.csv")
    return weights


def test_filter_meta_combines_filters() -> None:
    meta = pd.DataFrame(
        {
            "dx": ["mel", "nv", "nv", "bcc"],
            "malignant": [1, 0, 0, 1],
            "split": ["train", "val", "test", "train"],
            "age": [40.0, np.nan, 70.0, 55.0],
            "sex": ["male", "female", "male", "female"],
            "localization": ["back", "face", "back", "face"],
        }
    )
    assert len(dataset_view.filter_meta(meta)) == 4
    assert list(dataset_view.filter_meta(meta, malignant="malignant")["dx"]) == ["mel", "bcc"]
    assert list(dataset_view.filter_meta(meta, dx=["nv"], age=(60, 80), include_unknown_age=False)["age"]) == [70.0]
    assert list(dataset_view.filter_meta(meta, sexes=["female"], sites=["face"], splits=["train"])["dx"]) == ["bcc"]
    # Unknown ages: kept while the range spans every recorded age (no age filter), left out once it is narrowed.
    assert (
        len(dataset_view.filter_meta(meta, age=(40, 70))) == 4 and len(dataset_view.filter_meta(meta, age=(0, 90))) == 4
    )
    assert list(dataset_view.filter_meta(meta, age=(40, 69))["age"]) == [40.0, 55.0]
    assert list(dataset_view.filter_meta(meta, age=(41, 70))["age"]) == [70.0, 55.0]
    assert len(dataset_view.filter_meta(meta, age=(40, 69), include_unknown_age=True)) == 3  # asked for: kept


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


def test_mask_overlay_tints_the_lesion(tmp_path: Path) -> None:
    Image.fromarray(np.full((20, 30, 3), 100, np.uint8)).save(tmp_path / "a.jpg")
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 10:20] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = image_display.mask_overlay(tmp_path / "a.jpg", tmp_path / "m.png")
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    original = np.asarray(Image.open(tmp_path / "a.jpg"))
    assert out[10, 15, 1] > out[10, 15, 0] and tuple(out[0, 0]) == tuple(original[0, 0])
    with pytest.raises(DataError):
        image_display.mask_overlay(tmp_path / "missing.jpg", tmp_path / "m.png")


def test_outline_mask_draws_only_the_boundary_in_green() -> None:
    pixels = np.full((10, 12, 3), 50, np.uint8)
    mask = np.zeros((10, 12), bool)
    mask[2:8, 3:9] = True
    out = image_display.outline_mask(pixels, mask)
    green = (out == (0, 255, 0)).all(axis=-1)
    assert green[2, 3:9].all() and green[7, 3:9].all() and green[2:8, 3].all() and green[2:8, 8].all()
    assert not green[3:7, 4:8].any() and not green[~mask].any()  # inside and outside untouched
    assert (pixels == 50).all()  # a copy
    with pytest.raises(ValueError, match="does not match"):
        image_display.outline_mask(pixels, mask[:5])


def test_browse_dataset_small_folder_gets_split_all(tmp_path: Path) -> None:
    make_folder(tmp_path, ham_rows(n_lesions_per_dx=1, images_per_lesion=1))
    data = dataset_view.browse_dataset(tmp_path)
    assert set(data.meta["split"]) == {"all"} and len(data.meta) == 7


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


def test_prediction_report_and_label_efficiency(tmp_path: Path) -> None:
    report = json.loads(predict_view.prediction_report({"p_malignant": np.float32(0.5)}, "x.jpg", "w"))
    assert report["prediction"]["p_malignant"] == 0.5 and "not a diagnosis" in report["disclaimer"]
    raw = {
        "probabilities": {"akiec": 0.18430744400080962, "nv": np.float32(0.81569255)},
        "p_malignant": 0.23456789,
        "tier": "refer",
        "ood_score": None,
        "elapsed_ms": 627.4686489999795,
        "context_effects": {"age": -0.012345678},
        "warnings": ["x.jpg: too small"],
    }
    text = predict_view.prediction_report(raw, "x.jpg", "w").decode()
    assert '"akiec": 0.1843,' in text and '"elapsed_ms": 627.5,' in text and "0.18430744" not in text
    assert json.loads(text)["prediction"] == {
        **raw,
        "probabilities": {"akiec": 0.1843, "nv": 0.8157},
        "p_malignant": 0.2346,
        "elapsed_ms": 627.5,
        "context_effects": {"age": -0.0123},
    }
    assert evaluation_view.read_label_efficiency(tmp_path) is None
    (tmp_path / "summary.csv").write_text("fraction,init\n0.1,simclr\n")
    with pytest.raises(DataError, match="missing columns"):
        evaluation_view.read_label_efficiency(tmp_path)
    header = "fraction,init,auroc_mean,auroc_sd,bacc_mean,bacc_sd\n"
    (tmp_path / "summary.csv").write_text(header)
    with pytest.raises(DataError, match="summary.csv: no rows"):
        evaluation_view.read_label_efficiency(tmp_path)
    (tmp_path / "summary.csv").write_text(header + "0.1,simclr,0.8,,0.5,0.01\n1,random,high,0.1,0.6,0.02\n")
    with pytest.raises(DataError, match=r"summary.csv, row 3: auroc_mean 'high' is not a number"):
        evaluation_view.read_label_efficiency(tmp_path)
    (tmp_path / "summary.csv").write_text(header + "0.1,simclr,0.8,,0.5,0.01\n")  # one seed: no SD, fine
    assert evaluation_view.read_label_efficiency(tmp_path)["auroc_mean"].tolist() == [0.8]
    assert image_display.png_bytes(np.zeros((4, 4, 3), np.uint8)).startswith(b"\x89PNG")


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


def test_a_camera_size_photo_is_shown_shrunk_and_a_small_one_as_it_is() -> None:
    photo = Image.new("RGB", (4000, 3000), (180, 120, 100))
    shown = image_display.display_image(photo)
    assert shown.shape == (1200, 1600, 3) and shown.dtype == np.uint8  # the long side capped, 4:3 kept
    portrait = image_display.display_image(Image.new("RGB", (900, 4500)))
    assert portrait.shape == (1600, 320, 3)
    small = Image.new("RGB", (200, 150), (10, 20, 30))
    assert np.array_equal(image_display.display_image(small), np.asarray(small))


def test_embedding_map_on_tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> None:
    if not (HAM / "HAM10000_metadata.csv").exists():
        pytest.skip(f"HAM10000 copy not found at {HAM}")
    weights = tiny_weights(tmp_path_factory.getbasetemp())
    points = evaluation_view.embedding_map(weights, None, "test", limit=10, method="pca")
    assert len(points) <= 10 and {"image_id", "path", "dx", "x", "y"} <= set(points.columns)
    assert np.isfinite(points[["x", "y"]].to_numpy()).all()


def test_embedding_map_of_weights_without_a_split_names_their_json(tmp_path_factory: pytest.TempPathFactory) -> None:
    if not (HAM / "HAM10000_metadata.csv").exists():
        pytest.skip(f"HAM10000 copy not found at {HAM}")
    copy = tmp_path_factory.mktemp("no_split")
    for file in tiny_weights(tmp_path_factory.getbasetemp()).parent.glob("model.*"):
        (copy / file.name).write_bytes(file.read_bytes())
    meta = json.loads((copy / "model.json").read_text())
    del meta["manifest_sha256"]
    (copy / "model.json").write_text(json.dumps(meta))
    from dermai.evaluate import EvaluationError

    with pytest.raises(EvaluationError, match=rf"^{copy / 'model.json'}: the weights' JSON has no training config"):
        evaluation_view.embedding_map(copy / "model.safetensors", None, "test", limit=10)


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


def test_weights_mtime_resolves_a_folder_and_follows_both_files(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    weights.with_suffix(".json").write_text("{}")
    os.utime(weights, ns=(1_000, 1_000))
    os.utime(weights.with_suffix(".json"), ns=(2_000, 2_000))
    assert sidebar_state.weights_mtime(str(tmp_path)) == sidebar_state.weights_mtime(str(weights)) == (1_000, 2_000)
    os.utime(weights.with_suffix(".json"), ns=(3_000, 3_000))  # recalibrated: only the JSON is rewritten
    assert sidebar_state.weights_mtime(str(tmp_path)) == (1_000, 3_000)
    assert sidebar_state.weights_mtime(str(tmp_path / "absent.safetensors")) == (0, 0)


def test_metadata_stamp_changes_with_the_csv(tmp_path: Path) -> None:
    make_folder(tmp_path, ham_rows(n_lesions_per_dx=1, images_per_lesion=1))
    csv = tmp_path / "metadata.csv"
    os.utime(csv, ns=(5_000, 5_000))
    assert sidebar_state.metadata_stamp(tmp_path) == (str(csv), 5_000)
    os.utime(csv, ns=(6_000, 6_000))
    assert sidebar_state.metadata_stamp(str(tmp_path)) == (str(csv), 6_000)
    assert sidebar_state.metadata_stamp(tmp_path / "imgs") is None  # no CSV: loading the folder says why


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


def test_kept_uploads_return_after_another_page_until_cleared() -> None:
    state: dict = {}
    first = [("a.jpg", b"1"), ("b.jpg", b"2")]
    assert widget_state.uploads_to_show(state, [], reopened=True) == []  # first visit: nothing kept yet
    assert widget_state.uploads_to_show(state, first, reopened=False) == first
    assert widget_state.uploads_to_show(state, [], reopened=True) == first  # back from another page
    assert state[widget_state.SHOWING_KEPT] is True
    assert widget_state.uploads_to_show(state, [], reopened=False) == first  # later reruns keep showing them
    widget_state.forget_uploads(state)
    assert widget_state.uploads_to_show(state, [], reopened=False) == []
    assert widget_state.uploads_to_show(state, [], reopened=True) == []  # cleared for good
    widget_state.uploads_to_show(state, first, reopened=False)
    assert widget_state.uploads_to_show(state, [], reopened=False) == []  # emptied on the page: forgotten
    assert widget_state.uploads_to_show(state, [], reopened=True) == []
    second = [("c.jpg", b"3")]
    widget_state.uploads_to_show(state, first, reopened=False)
    assert widget_state.uploads_to_show(state, second, reopened=False) == second  # a new upload replaces them
    assert widget_state.uploads_to_show(state, [], reopened=True) == second


def test_kept_camera_shot_returns_after_another_page_apart_from_the_uploads() -> None:
    state: dict = {}
    uploads, shot = [("a.jpg", b"1")], [("camera.jpg", b"2")]
    widget_state.uploads_to_show(state, uploads, reopened=False)
    assert widget_state.uploads_to_show(state, shot, reopened=False, slot=widget_state.CAMERA) == shot
    assert widget_state.uploads_to_show(state, [], reopened=True, slot=widget_state.CAMERA) == shot  # back again
    assert state[widget_state.CAMERA[1]] is True
    assert widget_state.uploads_to_show(state, [], reopened=True) == uploads  # each source keeps its own
    widget_state.forget_uploads(state, widget_state.CAMERA)
    assert widget_state.uploads_to_show(state, [], reopened=True, slot=widget_state.CAMERA) == []
    assert widget_state.uploads_to_show(state, [], reopened=True) == uploads  # clearing the photo keeps uploads


def test_widget_values_are_kept_and_restored_when_still_valid() -> None:
    state: dict = {"pred_age": 70, "pred_site": "face"}
    widget_state.keep_widgets(state, ["pred_age", "pred_sex", "pred_site"])
    fresh: dict = {widget_state.KEPT_WIDGETS: state[widget_state.KEPT_WIDGETS]}  # the widgets' own keys are gone
    widget_state.restore_widgets(fresh, {"pred_age": None, "pred_sex": ["not given"], "pred_site": ["back"]})
    assert fresh["pred_age"] == 70 and "pred_sex" not in fresh and "pred_site" not in fresh  # face: not offered
    fresh["pred_age"] = 40
    widget_state.restore_widgets(fresh, {"pred_age": None})
    assert fresh["pred_age"] == 40  # a widget that has a value keeps it


def test_data_editor_rows_come_back_after_another_page() -> None:
    state: dict = {}
    assert widget_state.editor_rows(state, "sites_ab", [None, None]) == [None, None]  # first draw
    state["sites_ab"] = {"edited_rows": {1: {"site": "face"}}}  # the editor's own (widget) state
    assert widget_state.editor_rows(state, "sites_ab", [None, None]) == [None, None]  # edits apply to these
    widget_state.keep_rows(state, "sites_ab", [None, "face"])
    assert widget_state.editor_rows(state, "sites_ab", [None, None]) == [None, None]  # still, while it has state
    del state["sites_ab"]  # another page was shown
    assert widget_state.editor_rows(state, "sites_ab", [None, None]) == [None, "face"]
    state["sites_ab"] = {"edited_rows": {0: {"site": "back"}}}
    assert widget_state.editor_rows(state, "sites_ab", [None, None]) == [None, "face"]  # the edit's rows
    widget_state.keep_rows(state, "sites_ab", ["back", "face"])
    assert widget_state.editor_rows(state, "sites_abc", ["ear"] * 3) == ["ear"] * 3  # other images: fresh rows
    assert list(state[widget_state.KEPT_ROWS]) == ["sites_abc"]  # only the last editor's rows are kept


def test_dataset_filters_come_back_less_what_the_folder_no_longer_offers() -> None:
    state: dict = {}
    state["ds_dx"], state["ds_age"] = ["mel", "df"], (30, 60)
    widget_state.keep_widgets(state, ["ds_dx", "ds_age"])
    del state["ds_dx"], state["ds_age"]  # another page was shown: Streamlit dropped both
    widget_state.restore_choices(state, {"ds_dx": ["bcc", "mel", "nv"]})  # a folder without df
    assert state["ds_dx"] == ["mel"]
    assert widget_state.restore_range(state, "ds_age", 40, 85) == (40, 60)  # clipped to this folder's ages
    state["ds_age"] = (90, 95)
    assert widget_state.restore_range(state, "ds_age", 0, 85) == (85, 85)
    assert widget_state.restore_range({}, "ds_age", 0, 85) == (0, 85)  # nothing kept: the whole span


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


@pytest.mark.parametrize("preset", list(training_form.TRAIN_PRESETS))
def test_each_training_recipe_fills_a_form_the_trainer_accepts(preset: str) -> None:
    from dermai import jobs
    from dermai.config import check_run_config

    state: dict = {"train_seed": 5, "other": "kept"}
    training_form.apply_train_preset(state, preset)
    defaults = training_form.train_form_defaults()
    assert state["other"] == "kept" and set(state) == {"other", *(f"train_{k}" for k in defaults)}
    for field, default in defaults.items():
        assert type(state[f"train_{field}"]) is type(default), field  # a float field never gets an int
    changes = training_form.TRAIN_PRESETS[preset]
    assert all(state[f"train_{k}"] == v for k, v in changes.items())
    assert state["train_seed"] == defaults["seed"]  # a recipe starts from the defaults, not from the last run
    stage, options = training_form.train_form_options(state)
    check_run_config(jobs.form_config(stage, options))  # raises on a setting the trainer would refuse


def test_training_form_restores_kept_fields_else_defaults() -> None:
    state: dict = {}
    training_form.init_train_form(state)
    assert state["train_image_size"] == 224 and state["train_stage"] == "both"
    state["train_image_size"] = 96
    training_form.keep_train_form(state)
    fresh = {widget_state.KEPT_WIDGETS: state[widget_state.KEPT_WIDGETS]}  # the page was left: widget state dropped
    training_form.init_train_form(fresh)
    assert fresh["train_image_size"] == 96 and fresh["train_lr"] == 1e-3


def test_forget_weights_in_a_deleted_folder_only(tmp_path: Path) -> None:
    state = {sidebar_state.WEIGHTS_KEY: str(tmp_path / "runs" / "a" / "model.safetensors")}
    assert not sidebar_state.forget_weights_in(state, tmp_path / "runs" / "ab")  # a sibling whose name starts alike
    assert sidebar_state.WEIGHTS_KEY in state
    assert sidebar_state.forget_weights_in(state, tmp_path / "runs" / "a")
    assert sidebar_state.WEIGHTS_KEY not in state and not sidebar_state.forget_weights_in(state, tmp_path)


def test_weight_choices_skip_hidden_folders(tmp_path: Path) -> None:
    for name in ("run", ".deleting-run-1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"")
    listed = [p for p in weights_menu.weight_choices(tmp_path) if p.startswith(str(tmp_path))]
    assert listed == [str(tmp_path / "run" / "model.safetensors")]


def test_subgroup_table_shows_one_field_with_its_interval_as_text() -> None:
    subgroups = [
        {"field": "sex", "group": "male", "n": 50, "n_malignant": 9, "auroc": 0.9, "auroc_ci": [0.8, 0.97]},
        {"field": "age", "group": "under 30", "n": 9, "n_malignant": 1, "auroc": None, "auroc_ci": None},
    ]
    subgroups[0] |= {"sensitivity": 0.95, "specificity": 0.6}
    table = evaluation_view.subgroup_table(subgroups, "sex")
    assert table.to_dict("records") == [
        {
            "group": "male",
            "images": 50,
            "malignant": 9,
            "AUROC": "0.900 (0.80–0.97)",
            "refer sens.": "0.950",
            "refer spec.": "0.600",
        }
    ]
    young = evaluation_view.subgroup_table(subgroups, "age").iloc[0]
    assert young["AUROC"] == "too few (< 5 per class)"
    assert pd.isna(young["refer sens."])


def test_the_training_form_width_zero_trains_a_square_and_a_width_reaches_the_trainer(tmp_path: Path) -> None:
    from dermai import jobs
    from dermai.config import train_input_size

    state: dict = {}
    training_form.init_train_form(state)
    assert state["train_image_width"] == 0  # the paper's square by default
    state["train_image_size"], state["train_image_width"] = 120, 160
    stage, options = training_form.train_form_options(state)
    assert train_input_size(jobs.form_config(stage, options).train) == (120, 160)
    command = jobs.build_command(stage, tmp_path / "run", options)
    assert command[command.index("--image-size") + 1] == "120" and command[command.index("--image-width") + 1] == "160"
    state["train_image_width"] = 0
    stage, options = training_form.train_form_options(state)
    assert options["image_width"] is None and train_input_size(jobs.form_config(stage, options).train) == 120
    assert "--image-width" not in jobs.build_command(stage, tmp_path / "run", options)


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        (
            "warmup_epochs (2) must be shorter than pretrain_epochs (2): the learning rate would only rise",
            "“Warm-up epochs” (2) must be shorter than “Pretrain epochs” (2): the learning rate would only rise",
        ),
        (
            "distill_from is set but distill_weight is 0: give --distill-weight (0 < w ≤ 1)",
            "“Teacher” is set but “Teacher's share w” is 0: give “Teacher's share w” (0 < w ≤ 1)",
        ),
        ("lambda_ntxent (--lambda) must be a number ≥ 0 (0 = off), got -1", "“λ (NT-Xent weight)” must be a number"),
        # plain words stay words; a field's name inside a path stays the path
        ("when the stage is both", "when the stage is both"),
        ("data folder: /data/mask_weight/metadata.csv: no such file", "/data/mask_weight/metadata.csv"),
    ],
)
def test_training_form_errors_name_the_forms_fields_not_the_trainers(message: str, shown: str) -> None:
    assert shown in training_form.in_form_words(message)


def test_two_uploads_of_one_name_download_under_distinct_file_names() -> None:
    names = predict_view.unique_names(["x.jpg", "y.png", "x.jpg", "x.jpg", "scan", "a.b.tif"])
    assert names == ["x.jpg", "y.png", "x.jpg (2)", "x.jpg (3)", "scan", "a.b.tif"]
    stems = [predict_view.download_stem(name) for name in names]
    assert stems == ["x", "y", "x_2", "x_3", "scan", "a.b"]
    assert predict_view.download_stem(".hidden") == ".hidden"  # a dot file's name is all stem


def test_the_worklist_shows_its_notes_last_and_drops_empty_optional_columns() -> None:
    from dermai.worklist import COLUMNS

    table = pd.DataFrame(
        [[1, "a.jpg", "refer", 0.4, "mel", 0.5, False, None, None, False, None]]
        + [[2, "b.jpg", "unreadable", None, None, None, None, None, None, None, "b.jpg: HEIC is not supported"]],
        columns=COLUMNS,
    )
    shown = predict_view.worklist_shown(table)
    assert list(shown.columns) == ["rank", "image", "tier", "p_malignant", "top_diagnosis", "p_top_diagnosis"] + [
        "ood",
        "tta",
        "notes",
    ]
    assert shown.loc[1, "notes"] == "b.jpg: HEIC is not supported"
    assert "notes" not in predict_view.worklist_shown(table.iloc[:1]).columns  # no image has a note


def test_the_worklist_on_screen_shows_no_score_for_an_ungradable_image_and_the_csv_keeps_it() -> None:
    from dermai.worklist import COLUMNS, worklist_csv

    table = pd.DataFrame(
        [[1, "a.jpg", "refer", 0.4, "mel", 0.5, False, 0.3, "age 50", False, None]]
        + [[2, "grey.jpg", "ungradable", 0.001, "nv", 0.94, True, 0.002, "age 50", False, "no colour"]],
        columns=COLUMNS,
    )
    shown = predict_view.worklist_shown(table)
    assert shown.loc[1, ["p_malignant", "top_diagnosis", "p_top_diagnosis", "p_malignant_image_only"]].isna().all()
    assert shown.loc[0, "p_malignant"] == 0.4 and shown.loc[0, "top_diagnosis"] == "mel"  # a graded row as it was
    assert list(shown["image"]) == ["a.jpg", "grey.jpg"] and shown["p_malignant"].dtype == float
    assert table.loc[1, "p_malignant"] == 0.001  # the table itself is not changed
    assert "grey.jpg,ungradable,0.0010,nv,0.9400" in worklist_csv(table).decode()  # the CLI's CSV keeps them


def test_dataset_detail_shows_an_unrecorded_age_as_a_dash() -> None:
    row = pd.Series({"image_id": "ISIC_1", "age": np.nan, "sex": "unknown", "malignant": 0, "dx": None})
    assert dataset_view.detail_values(row, ["image_id", "age", "sex", "malignant", "dx"]).to_dict() == {
        "image_id": "ISIC_1",
        "age": "—",
        "sex": "unknown",
        "malignant": "0",
        "dx": "—",
    }
    assert dataset_view.detail_values(pd.Series({"age": 45.0}), ["age"])["age"] == "45"
    assert dataset_view.detail_values(pd.Series({"age": 89.5}), ["age"])["age"] == "89.5"


def test_a_data_folder_that_cannot_be_read_is_named_in_the_apps_words(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    assert sidebar_state.data_folder_problem(tmp_path / "nope") == f"{tmp_path / 'nope'}: no such folder"
    assert sidebar_state.data_folder_problem(tmp_path / "file.txt") == f"{tmp_path / 'file.txt'}: not a folder"
    assert sidebar_state.data_folder_problem(tmp_path / "empty") == f"{tmp_path / 'empty'}: no metadata CSV found"
    make_folder(tmp_path / "ok", ham_rows(n_lesions_per_dx=1, images_per_lesion=1))
    assert sidebar_state.data_folder_problem(tmp_path / "ok") is None
    with pytest.raises(DataError) as info:
        dataset_view.browse_dataset(str(tmp_path / "nope"))
    assert str(info.value) == f"{tmp_path / 'nope'}: no such folder (enter another data folder in the sidebar)"
    cli = "no data folder found; tried: /x (pass --data DIR or set DERMAI_DATA)"
    assert (
        sidebar_state.sidebar_words(cli) == "no data folder found; tried: /x (enter another data folder in the sidebar)"
    )


def test_the_failure_gallery_says_when_it_shows_only_some_and_which() -> None:
    assert (
        evaluation_view.gallery_note("missed", 12, 12) is None
        and evaluation_view.gallery_note("confusion", 3, 12) is None
    )
    assert evaluation_view.gallery_note("missed", 23, 12) == (
        "Showing 12 of 23 (the most confidently missed: lowest p(malignant) first). The per-image predictions CSV "
        "below lists every image with its tier and scores."
    )
    from dermai.review import REVIEW_KINDS

    assert set(evaluation_view.GALLERY_ORDER) == set(REVIEW_KINDS)  # an order said for every kind the page shows


def test_the_feature_gate_is_named_only_when_the_distance_passed_its_cut_off() -> None:
    from types import SimpleNamespace

    def prediction(ood: bool | None, score: float | None, threshold: float | None) -> SimpleNamespace:
        return SimpleNamespace(ood=ood, ood_score=score, ood_threshold=threshold)

    assert predict_view.feature_gate_flagged(prediction(True, 60.0, 56.1))
    # flagged from its pixels (greyscale, blank, noise) at a distance inside the cut-off: not "60 > 56"
    assert not predict_view.feature_gate_flagged(prediction(True, 27.5, 56.1))
    assert not predict_view.feature_gate_flagged(prediction(False, 20.0, 56.1))
    assert not predict_view.feature_gate_flagged(prediction(None, None, None))  # weights without a gate


def test_diagnosis_legend_spells_out_the_codes_and_what_the_malignancy_score_adds() -> None:
    legend = diagnosis_legend(["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"])
    assert legend is not None and legend.startswith("akiec: actinic keratosis / Bowen's disease; bcc: basal cell")
    assert "nv: melanocytic naevus; vasc: vascular lesion. p(malignant) = akiec + bcc + mel." in legend
    assert diagnosis_legend(["nv", "mel"]) == "nv: melanocytic naevus; mel: melanoma. p(malignant) = mel."
    assert diagnosis_legend(["benign", "malignant"]) is None  # a binary model's classes say it already
