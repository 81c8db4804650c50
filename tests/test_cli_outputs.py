"""The command line refuses, before any scoring, an output that would replace another output or one of its own
inputs (the weights' JSON or tensors, an ensemble member, a manifest, a metadata CSV, an image to score)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import dermai.evaluate
from dermai import cli
from dermai.data import DIAGNOSES
from dermai.model import SimCLRResNet18
from dermai.predict import Predictor
from dermai.weights import save_weights


@pytest.fixture
def weights_path(tmp_path: Path) -> Path:
    """An untrained model whose JSON names one ensemble member that exists (nothing here is ever scored)."""
    torch.manual_seed(0)
    member = save_weights(
        SimCLRResNet18(len(DIAGNOSES)), tmp_path / "member" / "model.safetensors", {"classes": list(DIAGNOSES)}
    )
    meta = {
        "classes": list(DIAGNOSES),
        "image_size": 32,
        "ensemble": [{"weights": f"{member}#0"}, {"weights": "gone/model.safetensors"}],
    }
    return save_weights(SimCLRResNet18(len(DIAGNOSES)), tmp_path / "w" / "model.safetensors", meta)


@pytest.fixture
def no_scoring(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("scoring started before the outputs were checked")

    monkeypatch.setattr(dermai.evaluate, "evaluate", never)
    monkeypatch.setattr(dermai.evaluate, "compare_weights", never)
    monkeypatch.setattr(Predictor, "from_weights", never)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def image_and_metadata(folder: Path, csv_text: str) -> tuple[Path, Path]:
    """An image `a.png` to predict and a --metadata CSV holding `csv_text`, in `folder`."""
    image = folder / "a.png"
    Image.new("RGB", (40, 30), (200, 120, 100)).save(image)
    metadata = folder / "meta.csv"
    metadata.write_text(csv_text)
    return image, metadata


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line of a refused command (exit 2)."""
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), (code, err)
    return err


@pytest.mark.usefixtures("no_scoring")
def test_evaluate_refuses_outputs_onto_the_weights_or_each_other(
    weights_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(tmp_path)
    w, json_file = str(weights_path), weights_path.with_suffix(".json")
    p = str(tmp_path / "p.csv")
    err = refused(["evaluate", "--weights", w, "--out", str(json_file), "--predictions", p], capsys)
    assert f"--out {json_file} is a file of the weights" in err
    err = refused(["evaluate", "--weights", str(weights_path.parent), "--out", p, "--predictions", w], capsys)
    assert f"--predictions {w} is a file of the weights" in err  # a folder given as --weights: its files too
    same = ["evaluate", "--weights", w, "--out", str(tmp_path / "x"), "--predictions", f"{tmp_path}/./x"]  # spelt apart
    assert "--out and --predictions both name" in refused(same, capsys)
    member_json = tmp_path / "member" / "model.json"
    err = refused(["evaluate", "--weights", w, "--out", str(member_json), "--predictions", p], capsys)
    assert "is a file of the weights" in err and str(member_json) in err  # an ensemble member's JSON
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("image_id,split\n")
    with_manifest = ["evaluate", "--weights", w, "--manifest", str(manifest), "--out", p]
    err = refused([*with_manifest, "--predictions", str(manifest)], capsys)
    assert f"--predictions {manifest} is the manifest" in err
    assert snapshot(tmp_path) == {**before, str(manifest): b"image_id,split\n"}  # nothing written, nothing lost


@pytest.mark.usefixtures("no_scoring")
def test_evaluate_refuses_a_linked_path_to_the_weights_json(
    weights_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link = tmp_path / "link"
    link.symlink_to(weights_path.parent, target_is_directory=True)
    argv = ["evaluate", "--weights", str(weights_path), "--out", str(link / "model.json")]
    assert "is a file of the weights" in refused([*argv, "--predictions", str(tmp_path / "p.csv")], capsys)
    assert json.loads(weights_path.with_suffix(".json").read_text())["image_size"] == 32


@pytest.mark.usefixtures("no_scoring")
def test_compare_out_may_not_replace_either_models_files(
    weights_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = save_weights(SimCLRResNet18(len(DIAGNOSES)), tmp_path / "b" / "model.safetensors", {"classes": ["a"]})
    for target in (weights_path.with_suffix(".json"), other, other.with_suffix(".json")):
        err = refused(["compare", str(weights_path), str(other), "--out", str(target)], capsys)
        assert f"--out {target} is a file of the weights" in err


@pytest.mark.usefixtures("no_scoring")
def test_predict_csv_may_not_replace_an_input_or_another_output(
    weights_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, metadata = image_and_metadata(tmp_path, "image_id,age\na,40\n")
    before = snapshot(tmp_path)
    predict = ["predict", str(image), "--weights", str(weights_path)]
    json_file = weights_path.with_suffix(".json")
    assert f"--csv {json_file} is a file of the weights" in refused([*predict, "--csv", str(json_file)], capsys)
    assert f"--csv {image} is an image to score" in refused([*predict, "--csv", str(image)], capsys)
    err = refused([*predict, "--metadata", str(metadata), "--csv", str(metadata)], capsys)
    assert f"--csv {metadata} is the --metadata file" in err
    report = tmp_path / "r" / "a_report.html"
    err = refused([*predict, "--report-out", str(report.parent), "--csv", str(report)], capsys)
    assert f"--report-out and --csv both name {report}" in err
    assert snapshot(tmp_path) == before


@pytest.mark.usefixtures("no_scoring")
def test_predict_metadata_with_an_image_on_two_rows_is_refused_before_loading_a_model(
    weights_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, metadata = image_and_metadata(tmp_path, "image_id,age,sex\na,40,female\nb,50,male\na,70,male\n")
    err = refused(["predict", str(image), "--weights", str(weights_path), "--metadata", str(metadata)], capsys)
    assert err == f"error: {metadata}, rows 2 and 4: image 'a' is on both; keep one row per image"
