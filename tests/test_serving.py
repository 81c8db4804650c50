"""fit_serving: temperature, operating points and OOD statistics fitted on validation data only and stored in
the weights in place. One tiny fine-tuned HAM10000 model (32 px, 1 epoch)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import dermai.context
import dermai.evaluate
from dermai.config import RunConfig
from dermai.context import PatientContext
from dermai.evaluate import evaluate, summary_text
from dermai.serving import calibrate_run, fit_context, fit_context_if_possible, fit_serving, training_log_prior
from dermai.splits import read_manifest
from dermai.train import train
from dermai.weights import load_weights


@pytest.fixture(scope="module")
def fitted(ham_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[str], dict]:
    """(weights, fit_serving's answer, every image path it decoded, model tensors before fitting)."""
    cfg = RunConfig(stage="finetune")
    cfg.data.data_dir, cfg.data.limit = str(ham_root), 150
    cfg.data.cache_dir = str(tmp_path_factory.mktemp("cache"))
    cfg.train.image_size, cfg.train.batch_size, cfg.train.finetune_epochs = 32, 32, 1
    weights = train(cfg, tmp_path_factory.mktemp("run")).weights
    assert weights is not None
    before = {k: v.clone() for k, v in load_weights(weights).model.state_dict().items()}
    seen: list[str] = []
    real_load_pixels = dermai.evaluate.load_pixels

    def recording_load_pixels(paths: list[str], size: int, *rest: object) -> object:
        seen.extend(paths)
        return real_load_pixels(paths, size, *rest)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DERMAI_CACHE", cfg.data.cache_dir)
        mp.setattr(dermai.evaluate, "load_pixels", recording_load_pixels)
        answer = fit_serving(weights, refer_sensitivity=0.95, urgent_specificity=0.90)
    return weights, answer, seen, before


def test_weights_json_gains_temperature_operating_points_and_ood(fitted: tuple) -> None:
    weights, answer, _, before = fitted
    loaded = load_weights(weights)
    meta = loaded.meta
    assert meta["temperature"] == pytest.approx(answer["temperature"]) and meta["temperature"] > 0
    assert set(meta["operating_points"]) == {"refer", "urgent"}
    assert meta["serving"]["fitted_on"] == "val" and "val_nll" in meta["val_metrics"]
    assert meta["val_metrics"]["val_nll"] <= meta["val_metrics"]["val_nll_uncalibrated"] + 1e-9
    assert meta["ood"]["threshold"] > 0 and {"ood_mean", "ood_precision"} <= set(loaded.extra)
    for key, tensor in loaded.model.state_dict().items():  # the network itself is unchanged
        assert torch.equal(tensor, before[key]), key


def test_thresholds_hit_their_targets_on_validation(fitted: tuple) -> None:
    weights, answer, _, _ = fitted
    report, _ = evaluate(weights, split="val", manifest=weights.parent / "manifest.csv", n_boot=0)
    rates = report["binary"]["thresholds"]
    assert rates["refer"]["sensitivity"] >= 0.95
    assert rates["urgent"]["specificity"] >= 0.90
    assert rates["refer"]["threshold"] == pytest.approx(answer["operating_points"]["refer"]["threshold"])


def test_test_split_is_never_looked_at(fitted: tuple) -> None:
    weights, _, seen, _ = fitted
    manifest = read_manifest(weights.parent / "manifest.csv")
    scored = {Path(p).stem for p in seen}
    assert scored.isdisjoint(manifest.index[manifest["split"] == "test"])
    assert set(manifest.index[manifest["split"] == "val"]) <= scored


def test_a_finished_run_records_its_context_fit(fitted: tuple) -> None:
    weights = fitted[0]
    records = [json.loads(line) for line in (weights.parent / "metrics.jsonl").read_text().splitlines()]
    serving = [r for r in records if r.get("kind") == "serving"][-1]
    assert serving["status"] == "fitted" and serving["context"]["status"] == "fitted"
    assert 0 <= serving["context"]["val_auroc"] <= 1


def test_context_fit_is_skipped_with_a_reason_not_raised(
    fitted: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = fitted[0]
    with monkeypatch.context() as mp:  # a folder whose metadata records no age, sex or site
        mp.setattr(dermai.context, "contexts_from_rows", lambda rows: [PatientContext()] * len(rows))
        skipped = fit_context_if_possible(source)
    assert skipped["status"] == "skipped" and "record no age, sex or site" in skipped["reason"]
    shutil.copy(source, tmp_path / "model.safetensors")
    meta = json.loads(source.with_suffix(".json").read_text())
    meta.pop("operating_points")
    (tmp_path / "model.json").write_text(json.dumps(meta))
    skipped = fit_context_if_possible(tmp_path / "model.safetensors")
    assert skipped == {
        "status": "skipped",
        "reason": f"{tmp_path / 'model.safetensors'}: calibrate these weights first (`python -m dermai calibrate`)",
    }


def test_calibrate_run_only_fits_finished_finetunes(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    assert calibrate_run(weights, "stopped", ("pretrain", "finetune"))["status"] == "skipped"
    assert calibrate_run(weights, "finished", ("pretrain",))["status"] == "skipped"
    assert calibrate_run(None, "finished", ("finetune",))["status"] == "skipped"
    failed = calibrate_run(weights, "finished", ("finetune",))  # no weights there: reported, not raised
    assert failed["status"] == "failed" and "not found" in failed["error"]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("CUDA out of memory")])
def test_calibrate_run_reports_a_disk_or_device_failure_instead_of_raising(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """The trainer logs this record and then its status record: an error escaping here left a finished
    run without its final status, and the command exited 2."""
    weights = tmp_path / "model.safetensors"

    def failing(*args: object, **kwargs: object) -> dict:
        raise error

    monkeypatch.setattr("dermai.serving.fit_serving", failing)
    failed = calibrate_run(weights, "finished", ("finetune",))
    assert failed == {"kind": "serving", "status": "failed", "error": str(error)}
    fitted = {"temperature": 1.2, "val_metrics": {"val_auroc": 0.8}}
    monkeypatch.setattr("dermai.serving.fit_serving", lambda *args, **kwargs: fitted)
    monkeypatch.setattr("dermai.serving.fit_context", failing)
    record = calibrate_run(weights, "finished", ("finetune",))  # serving fitted; the context fit failing is noted
    assert record["status"] == "fitted" and record["val_auroc"] == 0.8
    assert record["context"] == {"status": "failed", "reason": str(error)}


def test_calibration_decodes_through_the_runs_own_pixel_cache(
    fitted: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run trained with --cache-dir (say a large disk) is calibrated from that cache, not from the default
    one ($DERMAI_CACHE, here another temporary folder), where its images would be decoded a second time."""
    source = fitted[0]
    for name in ("model.safetensors", "model.json", "manifest.csv"):
        shutil.copy(source.parent / name, tmp_path / name)
    weights = tmp_path / "model.safetensors"
    recorded = load_weights(weights).meta["config"]["data"]["cache_dir"]
    caches: list[object] = []
    real_load_pixels = dermai.evaluate.load_pixels

    def recording_load_pixels(paths: list[str], size: int, cache_dir: object = None, *rest: object) -> object:
        caches.append(cache_dir)
        return real_load_pixels(paths, size, cache_dir, *rest)

    monkeypatch.setattr(dermai.evaluate, "load_pixels", recording_load_pixels)
    answer = fit_serving(weights, manifest=tmp_path / "manifest.csv")
    assert answer["context"]["status"] == "fitted"
    assert caches == [recorded] * 3  # validation and OOD training images, then the context fit's validation
    elsewhere = tmp_path / "other-cache"
    fit_context(weights, manifest=tmp_path / "manifest.csv", cache_dir=elsewhere)  # a cache given wins
    assert caches[-1] == str(elsewhere)


def test_fit_context_uses_train_and_val_only_and_evaluate_reports_it(
    fitted: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The context model is fitted beside the weights (JSON only), from training metadata and validation
    scores; the test split is scored later by `evaluate`, which reports context figures beside the
    image-only ones and the same image-only figures as without it."""
    source, _, _, _ = fitted
    for name in ("model.safetensors", "manifest.csv"):
        shutil.copy(source.parent / name, tmp_path / name)
    meta = json.loads(source.with_suffix(".json").read_text())
    assert "context" in meta  # the trainer fitted one after serving; fitted again here from scratch
    meta.pop("context")
    (tmp_path / "model.json").write_text(json.dumps(meta))
    weights = tmp_path / "model.safetensors"
    tensors_before = weights.read_bytes()
    plain_report, _ = evaluate(weights, split="test", manifest=tmp_path / "manifest.csv", n_boot=0)
    seen: list[str] = []
    real_load_pixels = dermai.evaluate.load_pixels
    monkeypatch.setattr(
        dermai.evaluate,
        "load_pixels",
        lambda paths, size, *rest: seen.extend(paths) or real_load_pixels(paths, size, *rest),
    )
    answer = fit_context(weights, manifest=tmp_path / "manifest.csv")
    manifest = read_manifest(tmp_path / "manifest.csv")
    assert {Path(p).stem for p in seen} == set(manifest.index[manifest["split"] == "val"])
    assert weights.read_bytes() == tensors_before

    block = load_weights(weights).meta["context"]
    assert set(block["fields"]) == {"age", "sex", "site"} and block["temperature"] == answer["temperature"]
    assert all(field["weight"] >= 0 for field in block["fields"].values())
    assert block["operating_points"]["refer"]["sensitivity"] >= 0.95
    assert block["fitted_on"] == {
        "tables": "train",
        "weights": "val",
        "n_train": answer["fitted_on"]["n_train"],
        "tta": False,
    }
    report, predictions = evaluate(weights, split="test", manifest=tmp_path / "manifest.csv", n_boot=0)
    assert report["auroc"] == plain_report["auroc"] and plain_report["context"] is None
    assert report["context"]["n_with_context"] == report["n_images"]  # every HAM image records some context
    assert 0 <= report["context"]["auroc"] <= 1 and set(report["context"]["thresholds"]) == {"refer", "urgent"}
    assert predictions["p_malignant_context"].between(0, 1).all()
    assert set(predictions["tier_context"]) <= {"routine", "refer", "urgent"}
    assert "with patient context" in summary_text(report)


def test_fit_context_needs_calibrated_weights(fitted: tuple, tmp_path: Path) -> None:
    source, _, _, _ = fitted
    shutil.copy(source, tmp_path / "model.safetensors")
    meta = json.loads(source.with_suffix(".json").read_text())
    meta.pop("operating_points")
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="calibrate these weights first"):
        fit_context(tmp_path / "model.safetensors")


def test_recalibrating_refits_the_context_model_with_the_new_targets(fitted: tuple, tmp_path: Path) -> None:
    """A context block kept from before would tier context predictions by the old cut-offs."""
    source = fitted[0]
    for name in ("model.safetensors", "model.json", "manifest.csv"):
        shutil.copy(source.parent / name, tmp_path / name)
    weights = tmp_path / "model.safetensors"
    assert load_weights(weights).meta["context"]["operating_points"]["refer"]["target"] == 0.95
    answer = fit_serving(weights, manifest=tmp_path / "manifest.csv", refer_sensitivity=0.98)
    assert answer["context"]["status"] == "fitted"
    block = load_weights(weights).meta["context"]
    assert block["operating_points"]["refer"]["target"] == 0.98
    assert block["operating_points"]["refer"]["sensitivity"] >= 0.98


def test_recalibrating_weights_with_an_empty_context_block_fits_none(fitted: tuple, tmp_path: Path) -> None:
    """`"context": {}` is no context model (`weights.check_serving_fields`): recalibration fits none that was
    never there, as for weights without the key, and drops the empty block."""
    source = fitted[0]
    for name in ("model.safetensors", "manifest.csv"):
        shutil.copy(source.parent / name, tmp_path / name)
    meta = json.loads(source.with_suffix(".json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**meta, "context": {}}))
    answer = fit_serving(tmp_path / "model.safetensors", manifest=tmp_path / "manifest.csv")
    assert "context" not in answer and "context" not in load_weights(tmp_path / "model.safetensors").meta


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"refer_sensitivity": 95}, r"refer sensitivity must be a fraction in \(0, 1\]"),
        ({"urgent_specificity": 0}, "urgent specificity must be a fraction"),
        ({"ood_percentile": 0.99}, r"OOD percentile must lie in \[50, 100\]"),
    ],
)
def test_bad_targets_are_refused_before_any_scoring(fitted: tuple, setting: dict, message: str) -> None:
    source = fitted[0]
    before = source.with_suffix(".json").read_bytes()
    with pytest.raises(ValueError, match=message):
        fit_serving(source, **setting)
    assert source.with_suffix(".json").read_bytes() == before


@pytest.mark.parametrize("balanced_sampling", [True, False])
def test_training_log_prior_for_balanced_batches_and_for_the_class_weighted_loss(balanced_sampling: bool) -> None:
    """Both fine-tuning settings leave the logits with a uniform prior (balanced batches, or else a loss
    weighted by 1 / class frequency), so both get the labelled training images' log prior back."""
    train = pd.DataFrame({"label": [0, 0, 0, 1, 2, 2, 1, 1], "labelled": [True] * 6 + [False] * 2})
    meta = {"config": {"train": {**vars(RunConfig().train), "balanced_sampling": balanced_sampling}}}
    prior = training_log_prior(meta, train, 4)
    assert prior is not None
    # unlabelled rows left out; an absent class counts as one image
    np.testing.assert_allclose(np.exp(prior), [3 / 6, 1 / 6, 2 / 6, 1 / 6])


def test_training_log_prior_is_none_for_weights_trained_elsewhere() -> None:
    train = pd.DataFrame({"label": [0, 1, 1]})
    assert training_log_prior({"classes": ["a", "b"]}, train, 2) is None
    np.testing.assert_allclose(np.exp(training_log_prior({"config": {"train": {"seed": 0}}}, train, 2)), [1 / 3, 2 / 3])
