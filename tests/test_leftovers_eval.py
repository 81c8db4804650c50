"""Gaps in scoring and prediction found in audits: a folder of one class keeps each tier's figure it can have,
`predict` goes on past an unreadable file, and `compare` scores an external folder as `evaluate` does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermai import cli, jobs, metrics
from dermai.evaluate import compare_weights, evaluate, external_text, summary_text
from dermai.ui import evaluation_view
from tests.conftest import HAM, make_folder
from tests.test_app_pages import alerts, app_env, assert_clean, page  # noqa: F401  (app_env is a fixture)
from tests.test_predict import lesion_like
from tests.test_ui_evaluation_view import tiny_weights


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny 32 px HAM10000 weights of tests/test_ui_evaluation_view.py (trained once per session), calibrated."""
    if not (HAM / "HAM10000_metadata.csv").exists():
        pytest.skip(f"HAM10000 copy not found at {HAM}")
    return tiny_weights(tmp_path_factory.getbasetemp())


def one_class_folder(root: Path, dx: list[str]) -> Path:
    """A synthetic external folder whose images all have the diagnoses `dx` (cycled over 10 images)."""
    rows = [{"image_id": f"X{i:02d}", "dx": dx[i % len(dx)]} for i in range(10)]
    return make_folder(root, rows, csv_name="labels.csv")


def test_tier_rates_give_the_rate_a_single_class_defines_and_no_interval_for_the_other() -> None:
    p = np.array([0.1, 0.2, 0.6, 0.9])
    benign = metrics.tier_rates(np.zeros(4, dtype=int), p, {"refer": 0.5})["refer"]
    assert benign["specificity"] == 0.5 and benign["specificity_ci"] == pytest.approx(
        list(metrics.wilson_interval(2, 4))
    )
    assert benign["sensitivity"] is None and benign["sensitivity_ci"] is None
    malignant = metrics.tier_rates(np.ones(4, dtype=int), p, {"refer": 0.5})["refer"]
    assert malignant["sensitivity"] == 0.5 and malignant["sensitivity_ci"] is not None
    assert malignant["specificity"] is None and malignant["specificity_ci"] is None


@pytest.mark.parametrize(
    ("dx", "kept", "missing", "absent"),
    [(["nv", "bkl"], "specificity", "sensitivity", "malignant"), (["mel"], "sensitivity", "specificity", "benign")],
)
def test_a_folder_of_one_class_reports_the_tier_rate_it_has_and_says_why_the_other_is_missing(
    tiny: Path, tmp_path: Path, dx: list[str], kept: str, missing: str, absent: str
) -> None:
    report, predictions = evaluate(tiny, one_class_folder(tmp_path / "one", dx), split="all", n_boot=20)
    assert report["auroc"] is None and report["binary"] is None
    assert set(report["thresholds"]) == {"refer", "urgent"}
    for name, rates in report["thresholds"].items():
        flagged = predictions["tier"].isin(["refer", "urgent"] if name == "refer" else ["urgent"]).to_numpy()
        share = flagged.mean() if kept == "sensitivity" else 1 - flagged.mean()
        assert rates[kept] == pytest.approx(share) and len(rates[f"{kept}_ci"]) == 2
        assert rates[missing] is None and rates[f"{missing}_ci"] is None
    present = "benign" if absent == "malignant" else "malignant"
    note = (
        f"only {present} images, no {absent} one: no AUROC, which needs both; at the cut-offs {kept} is given, but "
        f"no {missing}, which counts {absent} images"
    )
    assert note in report["notes"], report["notes"]
    text = summary_text(report)
    refer = report["thresholds"]["refer"]
    low, high = refer[f"{kept}_ci"]
    assert f"{kept} {refer[kept]:.3f} (95% CI {low:.3f}–{high:.3f})" in text, text
    assert f"{missing} n/a (no {absent} images)" in text, text
    table = evaluation_view.tier_table(report)
    assert list(table.index) == ["refer", "urgent"] and table[kept].notna().all() and table[missing].isna().all()


def test_the_evaluation_page_tables_an_all_benign_folders_specificity(
    app_env: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DERMAI_DATA", str(one_class_folder(tmp_path / "benign", ["nv", "bkl"])))
    at = page("evaluation").run()
    at.button[0].click().run()
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    table = at.table[0].value
    assert list(table.index) == ["refer", "urgent"]
    assert table["specificity"].notna().all() and table["sensitivity"].isna().all()
    captions = [c.value for c in at.caption]
    assert any("no sensitivity, which counts malignant images" in c for c in captions), captions


def test_predict_on_a_folder_goes_on_past_an_unreadable_file_and_exits_1(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "clinic"
    folder.mkdir()
    for i, name in enumerate(["a.png", "c.png", "d.png"]):
        lesion_like(140 + i).save(folder / name)
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")  # sorted among the readable ones
    code = cli.main(["predict", str(folder), "--weights", str(tiny)])
    out, err = capsys.readouterr()
    assert code == 1, err
    rows = [line.split()[0] for line in out.splitlines()[1:-1] if not line.startswith(" ")]  # less header, footer
    assert rows == ["a.png", "c.png", "d.png"], out
    lines = err.strip().splitlines()
    assert [line for line in lines if str(folder / "b.jpg") in line] == [
        next(line for line in lines if line.startswith(f"warning: {folder / 'b.jpg'}: "))
    ]
    assert lines[-1] == "1 of 4 files could not be read (named above)", err
    assert lines[-2].startswith(f"warning: {folder / 'b.jpg'}: ") and lines[-2].endswith("(not scored)")
    assert cli.main(["predict", str(folder), "--weights", str(tiny), "--json"]) == 1
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # stdout stays JSON only
    assert [Path(r["image"]).name for r in records] == ["a.png", "c.png", "d.png"]


def copy_weights(weights: Path, folder: Path) -> Path:
    """A copy of `weights` (both files) in `folder`: other weights of the same split."""
    folder.mkdir(parents=True)
    for suffix in (".safetensors", ".json"):
        shutil.copy(weights.with_suffix(suffix), folder / f"model{suffix}")
    return folder / "model.safetensors"


def external_with_seen_images(weights: Path, root: Path) -> Path:
    """An external folder of 12 new images and 2 that `weights` were trained on."""
    manifest = pd.read_csv(weights.parent / "manifest.csv")
    seen = manifest.loc[manifest["split"] == "train", "image_id"].head(2).tolist()
    rows = [{"image_id": f"E{i:02d}", "dx": dx} for i, dx in enumerate(["mel", "nv", "bcc", "bkl"] * 3)]
    rows += [{"image_id": image_id, "dx": "nv"} for image_id in seen]
    return make_folder(root, rows)


def test_compare_scores_an_external_folder_less_the_images_the_models_saw(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    challenger = copy_weights(tiny, tmp_path / "b")
    folder = external_with_seen_images(tiny, tmp_path / "ext")
    result = compare_weights(tiny, challenger, folder, split="all", n_boot=20)
    assert result["split"] == "all" and result["n_images"] == 12
    assert result["external"]["n_excluded"] == 2 and result["data"] == str(folder.resolve())
    assert result["auroc"]["difference"] == 0  # the same model twice: scored on the same images
    argv = ["compare", str(tiny), str(challenger), "--split", "all", "--n-boot", "20"]
    assert cli.main([*argv, "--data", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("all split, 12 images; ") and lines[1] == external_text(result["external"])
    assert lines[1].startswith("left out 2 images the weights were trained or tuned on")
    assert cli.main(argv) == 2  # no folder named
    assert capsys.readouterr().err == "error: --split all scores an external folder: name it with --data\n"


def test_the_evaluation_page_compares_on_an_external_folder_and_says_what_it_left_out(
    app_env: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    challenger = copy_weights(app_env, Path(jobs.runs_dir()) / "challenger")
    monkeypatch.setenv("DERMAI_DATA", str(external_with_seen_images(app_env, tmp_path / "ext")))
    at = page("evaluation").run()
    assert at.radio(key="cmp_split").options == ["all", "val", "test"]  # "all" chosen
    at.selectbox(key="cmp_other").set_value(str(challenger))
    next(b for b in at.button if b.label == "Compare").click()
    at.run()
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    said = "External folder: 12 images scored; left out 2 images the weights were trained or tuned on."
    assert said in alerts(at), alerts(at)
    assert any("verdict" in d.value.columns for d in at.dataframe)
