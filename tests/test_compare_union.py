"""`compare --split all` of two models trained on different splits: the external folder is scored less the
images either model was trained or tuned on, and the output says how many of each; their val or test splits
are still refused, with what to do instead. The Evaluation page offers the same."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from dermai import cli, jobs
from dermai.data import load_dataset
from dermai.evaluate import EvaluationError, compare_weights, external_text
from dermai.splits import attach_splits, manifest_checksum, manifest_frame
from dermai.ui import weights_menu
from tests.conftest import make_folder
from tests.test_app_pages import alerts, app_env, assert_clean, page  # noqa: F401  (app_env is a fixture)
from tests.test_leftovers_eval import copy_weights, tiny  # noqa: F401  (tiny is a fixture)


def other_split_weights(weights: Path, folder: Path, seed: int = 1) -> Path:
    """A copy of `weights` recorded as trained on another split of the same folder (seed `seed`): its config,
    manifest checksum and manifest.csv are that split's, so its train and validation images are rebuilt from
    them as for weights trained there."""
    copy = copy_weights(weights, folder)
    meta = json.loads(copy.with_suffix(".json").read_text())
    data = meta["config"]["data"]
    data["seed"] = seed
    split = attach_splits(
        load_dataset(data["data_dir"]),
        seed=seed,
        val_fraction=data["val_fraction"],
        test_fraction=data["test_fraction"],
        label_fraction=data["label_fraction"],
        limit=data["limit"],
    )
    meta["manifest_sha256"] = manifest_checksum(split)
    copy.with_suffix(".json").write_text(json.dumps(meta))
    manifest_frame(split).to_csv(folder / "manifest.csv", index=False)
    return copy


def seen(weights: Path) -> set[str]:
    """The ids of the images `weights` were trained or tuned on (their run's manifest)."""
    manifest = pd.read_csv(weights.parent / "manifest.csv")
    return set(manifest.loc[manifest["split"].isin(["train", "val"]), "image_id"])


def external_seen_by_each(a: Path, b: Path, root: Path) -> tuple[Path, dict[str, int]]:
    """An external folder of 12 new images, 2 that only A saw, 3 that only B saw and 1 both saw (when the two
    splits share one), and the counts each model's share of them should be."""
    seen_a, seen_b = seen(a), seen(b)
    only_a, only_b, both = sorted(seen_a - seen_b)[:2], sorted(seen_b - seen_a)[:3], sorted(seen_a & seen_b)[:1]
    rows = [{"image_id": f"E{i:02d}", "dx": dx} for i, dx in enumerate(["mel", "nv", "bcc", "bkl"] * 3)]
    rows += [{"image_id": image_id, "dx": "nv"} for image_id in [*only_a, *only_b, *both]]
    counts = {"A": len(only_a) + len(both), "B": len(only_b) + len(both), "all": len(only_a + only_b + both)}
    return make_folder(root, rows), counts


@pytest.fixture()
def pair(tiny: Path, tmp_path: Path) -> tuple[Path, Path]:  # noqa: F811
    """The tiny weights (A) and a model of another split (B)."""
    b = other_split_weights(tiny, tmp_path / "b")
    assert (
        json.loads(b.with_suffix(".json").read_text())["manifest_sha256"]
        != (json.loads(tiny.with_suffix(".json").read_text())["manifest_sha256"])
    )
    return tiny, b


def test_compare_all_scores_an_external_folder_less_the_images_either_model_saw(
    pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = pair
    folder, counts = external_seen_by_each(a, b, tmp_path / "ext")
    assert counts["A"] >= 2 and counts["B"] >= 3  # each model saw some images the other did not
    result = compare_weights(a, b, folder, split="all", n_boot=20)
    assert result["n_images"] == 12  # the 12 new ones: none either model saw
    external = result["external"]
    assert external["n_excluded"] == counts["all"]
    assert external["n_excluded_each"] == {"A": counts["A"], "B": counts["B"]}
    assert result["auroc"]["difference"] == 0  # the same network twice: scored on the same images
    line = (
        f"left out {counts['all']} images either model was trained or tuned on "
        f"({counts['A']} of A's, {counts['B']} of B's)"
    )
    assert external_text(external) == line
    argv = ["compare", str(a), str(b), "--split", "all", "--n-boot", "20", "--data", str(folder)]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("all split, 12 images; ") and lines[1] == line


def test_compare_of_different_splits_on_their_own_split_is_refused_with_what_to_do(
    pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = pair
    with pytest.raises(EvaluationError, match="trained on another split") as refused:
        compare_weights(a, b, split="test", n_boot=20)
    assert "their test images differ" in str(refused.value)
    assert "Compare them on an external folder instead (--split all --data FOLDER)" in str(refused.value)
    assert cli.main(["compare", str(a), str(b), "--split", "val", "--n-boot", "20"]) == 2
    assert "instead (--split all --data FOLDER)" in capsys.readouterr().err


def test_compare_all_on_the_folder_one_model_was_trained_on_is_refused(pair: tuple[Path, Path]) -> None:
    a, b = pair
    training = json.loads(a.with_suffix(".json").read_text())["config"]["data"]["data_dir"]
    with pytest.raises(
        EvaluationError, match=r"is the folder model A was trained on: .*another \(external\) folder with --split all"
    ):
        compare_weights(a, b, training, split="all", n_boot=20)


def test_compare_choices_offer_other_splits_only_for_all(pair: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = pair
    same = copy_weights(a, tmp_path / "same")
    listed = {str(a): "A", str(b): "other split", str(same): "same split"}
    assert weights_menu.compare_choices(listed, str(a), "all") == {str(b): "other split", str(same): "same split"}
    for split in ("val", "test"):
        assert weights_menu.compare_choices(listed, str(a), split) == {str(same): "same split"}


def test_the_evaluation_page_compares_a_model_of_another_split_on_an_external_folder(
    app_env: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    b = other_split_weights(app_env, Path(jobs.runs_dir()) / "other")
    folder, counts = external_seen_by_each(app_env, b, tmp_path / "ext")
    monkeypatch.setenv("DERMAI_DATA", str(folder))
    at = page("evaluation").run()
    assert at.radio(key="cmp_split").value == "all"
    assert "other (finished)" in at.selectbox(key="cmp_other").options  # B's split differs: offered for "all"
    at.selectbox(key="cmp_other").set_value(str(b))
    next(x for x in at.button if x.label == "Compare").click()
    at.run()
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    said = (
        f"External folder: 12 images scored; left out {counts['all']} images either model was trained or tuned on "
        f"({counts['A']} of A's, {counts['B']} of B's)."
    )
    assert said in alerts(at), alerts(at)
    assert any("verdict" in d.value.columns for d in at.dataframe)
    at.radio(key="cmp_split").set_value("val").run()  # A's own split: B is no longer offered
    assert_clean(at)
    offered = [option for box in at.selectbox if box.key == "cmp_other" for option in box.options]
    assert "other (finished)" not in offered


def test_compare_all_is_refused_when_the_other_splits_training_images_cannot_be_found(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """Scored anyway, A's or B's training images would be among the "external" ones: unfair, so refused."""
    a, b = pair
    meta = json.loads(b.with_suffix(".json").read_text())
    del meta["config"]  # B's split unknown: another than A's, whose images B may have trained on
    b.with_suffix(".json").write_text(json.dumps(meta))
    folder, _ = external_seen_by_each(a, a, tmp_path / "ext")
    with pytest.raises(EvaluationError, match=r"model B's training images cannot be found \(.*no training config"):
        compare_weights(a, b, folder, split="all", n_boot=20)


def test_no_comparison_hint_for_all_does_not_ask_for_the_same_split() -> None:
    """With 'all' chosen, any split is offered as B: the val/test hint ("Only a run on the same split can be
    compared") was wrong there."""
    hint = weights_menu.no_comparison_hint({"config": {"data": {"seed": 0, "limit": None}}}, "all")
    assert hint.startswith("No other weights to compare with") and "split" not in hint
    assert "same split" in weights_menu.no_comparison_hint({"config": {"data": {"seed": 0, "limit": None}}}, "val")
