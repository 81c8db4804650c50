"""evaluate: the scored split is exactly the weights' own, reports carry intervals and baselines, an
external folder is scored whole, and the CLI writes both files. One tiny HAM10000 model (32 px, 1+1 epochs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dermai import calibration
from dermai.cli import main
from dermai.config import RunConfig
from dermai.context import age_band_order
from dermai.data import DIAGNOSES
from dermai.evaluate import EvaluationError, age_band, compare_weights, evaluate, subgroup_fields, summary_text
from dermai.inference import malignant_probability
from dermai.predict import Predictor
from dermai.serving import fit_serving
from dermai.splits import read_manifest
from dermai.train import train
from dermai.weights import load_weights, read_meta, save_weights
from tests.conftest import make_folder

CLASSES = list(DIAGNOSES)
PREDICTION_COLUMNS = [
    "image_id",
    "split",
    "p_malignant",
    *CLASSES,
    "dx",
    "malignant",
    "tier",
    "predicted",
    "path",
    "p_malignant_context",
    "tier_context",
]


@pytest.fixture(scope="module")
def weights(ham_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run with validated operating points (pixel caches kept in temp folders)."""
    cfg = RunConfig()
    cfg.data.data_dir, cfg.data.limit = str(ham_root), 150
    cfg.data.cache_dir = str(tmp_path_factory.mktemp("cache"))
    cfg.train.image_size, cfg.train.batch_size = 32, 32
    cfg.train.pretrain_epochs = cfg.train.finetune_epochs = 1
    result = train(cfg, tmp_path_factory.mktemp("run"))
    assert result.weights is not None
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DERMAI_CACHE", cfg.data.cache_dir)
        if "operating_points" not in read_meta(result.weights):
            fit_serving(result.weights)
    return result.weights


@pytest.fixture(scope="module")
def test_scored(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, pd.DataFrame]:
    """The test split rebuilt from the weights' config (no manifest given)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DERMAI_CACHE", str(tmp_path_factory.mktemp("cache")))
        return evaluate(weights, n_boot=200)


def test_scores_exactly_the_manifest_test_split(weights: Path, test_scored: tuple[dict, pd.DataFrame]) -> None:
    report, predictions = test_scored
    manifest = read_manifest(weights.parent / "manifest.csv")
    expected = manifest.index[manifest["split"] == "test"]
    assert sorted(predictions["image_id"]) == sorted(expected)
    assert (predictions["split"] == "test").all() and report["split"] == "test"
    assert report["manifest_sha256"] == read_meta(weights)["manifest_sha256"]


def test_report_has_headline_figures_intervals_and_baseline(test_scored: tuple[dict, pd.DataFrame]) -> None:
    report, predictions = test_scored
    assert report["n_images"] == len(predictions)
    lo, hi = report["auroc_ci"]
    assert 0 <= lo <= report["auroc"] <= hi <= 1
    assert 0 <= report["balanced_accuracy"] <= 1
    assert report["baseline_all_benign"]["accuracy"] == pytest.approx(1 - predictions["malignant"].mean())
    assert set(report["operating_points"]) == {"refer", "urgent"}
    assert set(report["binary"]["thresholds"]) == {"refer", "urgent"}
    assert report["multiclass"]["classes"] == CLASSES
    assert {"ece_malignant", "ece_multiclass", "brier_malignant", "reliability_malignant"} <= set(report["calibration"])
    json.dumps(report)  # JSON-ready


def test_report_scores_each_sex_age_band_and_site(test_scored: tuple[dict, pd.DataFrame]) -> None:
    report, predictions = test_scored
    rows = report["subgroups"]
    assert {r["field"] for r in rows} == {"sex", "age", "site"}
    for field in ("sex", "age", "site"):
        assert sum(r["n"] for r in rows if r["field"] == field) == len(predictions)  # every image in one group
        assert sum(r["n_malignant"] for r in rows if r["field"] == field) == predictions["malignant"].sum()
    assert all("sensitivity" in r for r in rows)  # at the weights' refer cut-off
    bands = [r["group"] for r in rows if r["field"] == "age"]
    assert bands == sorted(bands, key=age_band_order) and len(bands) > 1  # age order, not largest first
    assert "by subgroup (n, malignant" in summary_text(report)


def test_subgroup_fields_band_ages_and_name_blanks_unknown() -> None:
    assert [age_band(a) for a in (0, 29.5, 30, 49.9, 50, 69, 70, 95, float("nan"), None)] == [
        *("under 30", "under 30", "30-49", "30-49", "50-69", "50-69", "70 and over", "70 and over"),
        *("unknown", "unknown"),
    ]
    rows = pd.DataFrame({"sex": ["male", None, " "], "localization": ["back", "face", None], "age": [40, None, 80]})
    assert subgroup_fields(rows) == {
        "sex": ["male", "unknown", "unknown"],
        "site": ["back", "face", "unknown"],
        "age": ["30-49", "unknown", "70 and over"],
    }
    assert subgroup_fields(pd.DataFrame({"dx": ["mel"]})) == {}  # a plain CSV without them: no subgroups


def test_predictions_columns_probabilities_and_tiers(weights: Path, test_scored: tuple[dict, pd.DataFrame]) -> None:
    _, predictions = test_scored
    assert list(predictions.columns) == PREDICTION_COLUMNS
    assert np.allclose(predictions[CLASSES].sum(axis=1), 1.0)
    malignant = predictions[["akiec", "bcc", "mel"]].sum(axis=1)
    assert np.allclose(predictions["p_malignant"], malignant)
    assert set(predictions["tier"]) <= {"urgent", "refer", "routine"}
    prior = np.exp(np.asarray(read_meta(weights)["log_prior"]))
    balanced = (predictions[CLASSES].to_numpy() / prior).argmax(axis=1)  # the balanced rule: argmax p / prior
    assert list(predictions["predicted"]) == [CLASSES[i] for i in balanced]
    paths = [Path(p) for p in predictions["path"]]
    assert all(p.is_file() for p in paths) and [p.stem for p in paths] == list(predictions["image_id"])


def test_split_all_scores_every_image_of_an_external_binary_folder(weights: Path, tmp_path: Path) -> None:
    rows = [
        {
            "isic_id": f"ISIC_{i:07d}",
            "benign_malignant": "malignant" if i % 3 == 0 else "benign",
            "patient_id": f"P{i // 2}",
        }
        for i in range(24)
    ]
    folder = make_folder(tmp_path / "isic", rows, size=(90, 60), id_column="isic_id")
    report, predictions = evaluate(weights, folder, split="all", n_boot=50)
    assert sorted(predictions["image_id"]) == sorted(r["isic_id"] for r in rows)
    assert report["n_images"] == 24 and report["manifest_sha256"] is None
    assert 0 <= report["auroc"] <= 1 and report["binary"]["n_positive"] == 8
    assert report["multiclass"] is None and report["balanced_accuracy"] is None  # binary labels only
    predictor = Predictor.from_weights(weights)  # the app's path gives the same scores and tiers
    for row in predictions.head(3).itertuples():
        single = predictor.predict(next((folder / "imgs").rglob(f"{row.image_id}.jpg")))
        assert single.p_malignant == pytest.approx(row.p_malignant, abs=1e-3) and single.tier == row.tier


def test_split_all_leaves_out_images_the_weights_were_trained_or_tuned_on(
    weights: Path, ham_root: Path, tmp_path: Path
) -> None:
    """An external set sharing images with the training data (ISIC 2019 holds HAM10000) must not score them."""
    manifest = pd.read_csv(weights.parent / "manifest.csv")
    seen = [
        *manifest.loc[manifest["split"] == "train", "image_id"][:3],
        *manifest.loc[manifest["split"] == "val", "image_id"][:1],
    ]
    unseen = manifest.loc[manifest["split"] == "test", "image_id"].iloc[0]
    rows = [
        {"isic_id": f"ISIC_{i:07d}", "benign_malignant": "malignant" if i % 3 == 0 else "benign"} for i in range(12)
    ]
    folder = make_folder(tmp_path / "isic", rows, size=(90, 60), id_column="isic_id")
    for image_id in [*seen, unseen]:
        shutil.copy(next(ham_root.rglob(f"{image_id}.jpg")), folder / "imgs" / f"{image_id}.jpg")
        rows.append({"isic_id": image_id, "benign_malignant": "benign"})
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    report, predictions = evaluate(weights, folder, split="all", n_boot=0)
    assert set(predictions["image_id"]) == {r["isic_id"] for r in rows} - set(seen)
    assert report["external"] == {
        "overlap_checked": True,
        "training_data": str(ham_root.resolve()),
        "n_excluded": 4,
        "n_own_test": 1,  # `unseen`: scored, and said to be the weights' own test image
    }
    assert "left out 4 images the weights were trained or tuned on" in summary_text(report)
    with pytest.raises(EvaluationError, match="is the folder these weights were trained on"):
        evaluate(weights, ham_root, split="all", n_boot=0)
    with pytest.raises(EvaluationError, match="name it with --data"):
        evaluate(weights, split="all", n_boot=0)


def test_manifest_that_is_not_the_weights_split_is_refused(weights: Path, tmp_path: Path) -> None:
    manifest = pd.read_csv(weights.parent / "manifest.csv")
    naevus_lesion = manifest.loc[(manifest["split"] == "test") & (manifest["dx"] == "nv"), "group"].iloc[0]
    manifest.loc[manifest["group"] == naevus_lesion, "split"] = "train"  # a whole lesion, so still a valid split
    manifest.to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(EvaluationError, match="split mismatch"):
        evaluate(weights, split="test", manifest=tmp_path / "other.csv")


def test_compare_reads_the_runs_manifest_when_given(weights: Path, tmp_path: Path) -> None:
    """`compare --manifest` scores the manifest's split, as `evaluate --manifest` does (the advice a split that
    cannot be rebuilt gives): the run's own manifest compares, another split's is refused."""
    manifest = pd.read_csv(weights.parent / "manifest.csv")
    naevus_lesion = manifest.loc[(manifest["split"] == "val") & (manifest["dx"] == "nv"), "group"].iloc[0]
    manifest.loc[manifest["group"] == naevus_lesion, "split"] = "train"
    manifest.to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(EvaluationError, match="split mismatch"):
        compare_weights(weights, weights, n_boot=20, manifest=tmp_path / "other.csv")
    args = ["compare", str(weights), str(weights), "--manifest", str(weights.parent / "manifest.csv")]
    assert main([*args, "--n-boot", "20", "--out", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["auroc"]["difference"] == 0


def test_cli_evaluate_writes_report_and_predictions(
    weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, preds = tmp_path / "report.json", tmp_path / "preds.csv"
    code = main(
        [
            "evaluate",
            "--weights",
            str(weights),
            "--manifest",
            str(weights.parent / "manifest.csv"),
            "--split",
            "val",
            "--tta",
            "--n-boot",
            "50",
            "--saliency",
            "--saliency-limit",
            "3",
            "--precision",
            "fp32",
            "--out",
            str(out),
            "--predictions",
            str(preds),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["split"] == "val" and report["tta"] is True
    assert report["saliency"]["n_images"] == 3 and 0 <= report["saliency"]["mean_cam_mass_in_mask"] <= 1
    table = pd.read_csv(preds)
    assert list(table.columns) == PREDICTION_COLUMNS and len(table) == report["n_images"]
    _, fp32 = evaluate(
        weights, split="val", manifest=weights.parent / "manifest.csv", tta=True, n_boot=0, precision="fp32"
    )
    np.testing.assert_allclose(table["p_malignant"], fp32["p_malignant"], rtol=1e-9)
    printed = capsys.readouterr().out
    assert "AUROC" in printed and "all-benign baseline" in printed and "refer:" in printed
    assert "with patient context" in printed  # a finished run gets a context model after serving


def test_cli_evaluate_missing_weights_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "evaluate",
            "--weights",
            str(tmp_path / "missing.safetensors"),
            "--out",
            str(tmp_path / "r.json"),
            "--predictions",
            str(tmp_path / "p.csv"),
        ]
    )
    assert code == 2 and capsys.readouterr().err.startswith("error:")


@pytest.fixture(scope="module")
def challenger(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its classifier perturbed: same split, different scores."""
    loaded = load_weights(weights)
    torch.manual_seed(1)
    with torch.no_grad():
        loaded.model.classifier.weight.add_(0.5 * torch.randn_like(loaded.model.classifier.weight))
    path = tmp_path_factory.mktemp("challenger") / "model.safetensors"
    meta = {k: v for k, v in loaded.meta.items() if k != "format"}
    save_weights(loaded.model, path, meta, extra=dict(loaded.extra))
    return path


def test_compare_weights_pairs_the_same_images(weights: Path, challenger: Path) -> None:
    result = compare_weights(weights, challenger, split="val", n_boot=200)
    alone = {name: evaluate(path, split="val", n_boot=0)[0] for name, path in (("a", weights), ("b", challenger))}
    auroc = result["auroc"]
    assert auroc["a"] == pytest.approx(alone["a"]["auroc"]) and auroc["b"] == pytest.approx(alone["b"]["auroc"])
    assert auroc["difference"] == pytest.approx(auroc["b"] - auroc["a"]) and auroc["difference"] != 0
    lo, hi = auroc["difference_ci"]
    assert lo <= auroc["difference"] <= hi and 0 <= auroc["p_value"] <= 1 and auroc["resamples"] > 150
    bacc = result["balanced_accuracy"]
    assert bacc["a"] == pytest.approx(alone["a"]["balanced_accuracy"])
    assert bacc["b"] == pytest.approx(alone["b"]["balanced_accuracy"])
    assert result["n_images"] == alone["a"]["n_images"] and result["split"] == "val"

    same = compare_weights(weights, weights, split="val", n_boot=50)["auroc"]
    assert same["difference"] == 0 and same["difference_ci"] == [0.0, 0.0] and same["p_value"] == 1.0


def test_compare_refuses_models_of_another_split_and_the_train_split(weights: Path, tmp_path: Path) -> None:
    loaded = load_weights(weights)
    other = tmp_path / "other.safetensors"
    meta = {k: v for k, v in loaded.meta.items() if k != "format"} | {"manifest_sha256": "f" * 64}
    save_weights(loaded.model, other, meta)
    with pytest.raises(EvaluationError, match="trained on another split"):
        compare_weights(weights, other)
    with pytest.raises(EvaluationError, match="val or test split, not 'train'"):
        compare_weights(weights, weights, split="train")


def test_cli_compare_prints_and_writes_the_differences(weights: Path, challenger: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "compare.json"
    code = main(["compare", str(weights), str(challenger), "--n-boot", "100", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "AUROC malignant: A " in printed and "B − A " in printed
    saved = json.loads(out.read_text())
    assert saved["split"] == "val" and set(saved["auroc"]) >= {"a", "b", "difference", "difference_ci", "p_value"}


def test_precision_reaches_the_model(weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fp32 scoring repeats exactly and bf16 scoring differs slightly from it, on CPUs with and without native
    bf16: the choice reaches the model rather than the CPU's default."""
    monkeypatch.setenv("DERMAI_CACHE", str(tmp_path))
    _, fp32 = evaluate(weights, split="val", n_boot=0, precision="fp32")
    _, again = evaluate(weights, split="val", n_boot=0, precision="fp32")
    _, bf16 = evaluate(weights, split="val", n_boot=0, precision="bf16")
    np.testing.assert_array_equal(fp32["p_malignant"].to_numpy(), again["p_malignant"].to_numpy())
    difference = np.abs(fp32["p_malignant"].to_numpy() - bf16["p_malignant"].to_numpy())
    assert 0 < difference.max() < 0.1


def test_malignant_probability_never_rounds_past_one() -> None:
    # Softmax columns can each be an ulp high, and three of them summed in float64 then give 1.0000000000000002,
    # which ECE and Brier refuse. (Which logits do it depends on the CPU's exp: built here from the sums.)
    mel = np.nextafter(np.nextafter(np.nextafter(0.25, 1.0), 1.0), 1.0)  # 0.25 and three ulps
    probs = np.array([[0.5, 0.25, 0.0, 0.0, mel, 0.0, 0.0]])
    p_mal = malignant_probability(probs, ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"))
    assert probs[:, [0, 1, 4]].sum(axis=1)[0] > 1.0  # the unclipped sum
    assert p_mal[0] == 1.0
    assert calibration.expected_calibration_error(np.array([1]), p_mal) == 0.0


def test_write_outputs_leaves_neither_file_when_one_place_is_unwritable(tmp_path: Path) -> None:
    """The report used to be written before the predictions CSV failed: one output without the other."""
    from dermai.evaluate import write_outputs

    (tmp_path / "afile").write_text("x")
    report = tmp_path / "report.json"
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        write_outputs({"n": 1}, pd.DataFrame({"a": [1]}), report, tmp_path / "afile" / "p.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize("flag", ["--n-boot", "--saliency-limit"])
def test_a_negative_count_is_a_usage_error(flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A negative resample count used to act as 0 (no interval) without a word."""
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--out", str(tmp_path / "r.json"), "--predictions", str(tmp_path / "p.csv"), flag, "-5"])
    assert exit_info.value.code == 2 and f"{flag}: must be at least 0, got -5" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_the_shipped_weights_find_their_training_data_from_any_folder(
    ham_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped config records its data folder as typed in the project folder (../shared/data/ham10000):
    run from elsewhere, the split is still rebuilt there, and the folder it trained on is still refused as
    an external set, not scored with its own training images."""
    from dermai.data import load_dataset
    from dermai.evaluate import unseen_rows, weights_dataset

    shipped = Path(__file__).resolve().parent.parent / "weights" / "model.safetensors"
    meta = read_meta(shipped)
    assert meta["config"]["data"]["data_dir"] == "../shared/data/ham10000"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DERMAI_DATA", raising=False)
    assert weights_dataset(meta).root == ham_root.resolve()
    with pytest.raises(EvaluationError, match="is the folder these weights were trained on"):
        unseen_rows(meta, load_dataset(ham_root))


def test_a_damaged_training_config_in_the_weights_json_is_named() -> None:
    from dermai.evaluate import weights_dataset

    shipped = read_meta(Path(__file__).resolve().parent.parent / "weights" / "model.safetensors")
    config = json.loads(json.dumps(shipped["config"]))
    config["data"]["seed"] = "x"
    with pytest.raises(
        EvaluationError, match=r"describes no usable split \(config field data.seed must be a whole number"
    ):
        weights_dataset({**shipped, "config": config})
    config["data"] = {"seed": 0, "colour": "red"}
    with pytest.raises(EvaluationError, match=r"field 'config' describes no usable split \(.*colour"):
        weights_dataset({**shipped, "config": config})


def test_a_null_temperature_scores_as_uncalibrated(weights: Path, tmp_path: Path) -> None:
    """`"temperature": null` loads (load_weights accepts it) and is read as 1, as predict reads it, not a crash."""
    scored = {}
    for name, temperature in (("null", None), ("one", 1.0)):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(weights, folder / "model.safetensors")
        meta = read_meta(weights)  # same pair id: the tensors are copied unchanged
        (folder / "model.json").write_text(json.dumps({**meta, "temperature": temperature}))
        scored[name] = evaluate(folder / "model.safetensors", split="val", n_boot=0, precision="fp32")
    assert read_meta(weights)["temperature"] != 1.0  # else the comparison below proves nothing
    (report, predictions), (_, expected) = scored["null"], scored["one"]
    assert report["calibration"]["temperature"] == 1.0
    np.testing.assert_allclose(predictions["p_malignant"], expected["p_malignant"], rtol=1e-12)


def test_weights_without_mean_and_std_score_with_imagenets_as_predict_does(weights: Path, tmp_path: Path) -> None:
    """A JSON without "mean"/"std" loads (the network is built with ImageNet's) and predicts; evaluate and its
    saliency check used to stop there with a KeyError traceback."""
    from dermai.config import IMAGENET_MEAN, IMAGENET_STD

    meta = read_meta(weights)
    assert tuple(meta["mean"]) == IMAGENET_MEAN and tuple(meta["std"]) == IMAGENET_STD  # else nothing to compare
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(weights, bare / "model.safetensors")
    (bare / "model.json").write_text(json.dumps({k: v for k, v in meta.items() if k not in ("mean", "std")}))
    report, predictions = evaluate(
        bare / "model.safetensors", split="val", n_boot=0, precision="fp32", saliency=True, saliency_limit=2
    )
    _, expected = evaluate(weights, split="val", n_boot=0, precision="fp32")
    np.testing.assert_allclose(predictions["p_malignant"], expected["p_malignant"], rtol=1e-12)
    assert report["saliency"]["n_images"] == 2


def test_cli_evaluate_scores_as_the_cut_offs_were_validated_and_warns_when_told_otherwise(
    weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tiers fitted with `calibrate --tta` are re-checked on TTA scores by default; --no-tta is said once on stderr
    before scoring (time to stop it) and once as a note in the stdout summary beside the figures it qualifies."""
    meta = read_meta(weights)
    assert meta["serving"]["tta"] is False  # the fixture's own calibration: else the copy below proves nothing
    folder = tmp_path / "tta"
    folder.mkdir()
    shutil.copy(weights, folder / "model.safetensors")
    (folder / "model.json").write_text(json.dumps({**meta, "serving": {**meta["serving"], "tta": True}}))
    copy = str(folder / "model.safetensors")
    common = ["--split", "val", "--n-boot", "0", "--precision", "fp32", "--predictions", str(tmp_path / "p.csv")]
    assert main(["evaluate", "--weights", copy, *common, "--out", str(tmp_path / "default.json")]) == 0
    assert capsys.readouterr().err == ""
    default = json.loads((tmp_path / "default.json").read_text())
    assert default["tta"] is True and default["tta_validated"] is True
    _, expected = evaluate(weights, split="val", tta=True, n_boot=0, precision="fp32")
    np.testing.assert_allclose(pd.read_csv(tmp_path / "p.csv")["p_malignant"], expected["p_malignant"], rtol=1e-9)
    assert main(["evaluate", "--weights", copy, *common, "--no-tta", "--out", str(tmp_path / "plain.json")]) == 0
    captured = capsys.readouterr()
    plain = json.loads((tmp_path / "plain.json").read_text())
    warning = "test-time augmentation is off, but these weights' tier cut-offs were validated with it on"
    assert plain["tta"] is False and any(note.startswith(warning) for note in plain["notes"])
    assert captured.err.startswith(f"warning: {copy}: {warning}") and f"note: {warning}" in captured.out
    assert captured.err.count(warning) == 1 and captured.out.count(warning) == 1
