"""The batch worklist: urgency order, unreadable files kept as rows, folder expansion, CSV round trip."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd
import pytest

from dermai.intake import IntakeError
from dermai.predict import Prediction
from dermai.worklist import (
    COLUMNS,
    WorklistEntry,
    distinct_names,
    image_files,
    tier_counts,
    worklist,
    worklist_csv,
)


def prediction(tier: str, p_mal: float, ood: bool | None = False, warnings: list[str] | None = None) -> Prediction:
    probs = {"mel": p_mal, "nv": 1.0 - p_mal}
    return Prediction(probs, p_mal, tier, "meaning", 0.95, 0.6, ood, 1.0, 2.0, warnings or [])


def test_order_is_tier_then_score_then_name_and_keeps_every_file() -> None:
    entries = [
        WorklistEntry("a.jpg", prediction("routine", 0.02)),
        WorklistEntry("broken.jpg", error="broken.jpg: damaged or incomplete image"),
        WorklistEntry("b.jpg", prediction("refer", 0.15)),
        WorklistEntry("c.jpg", prediction("urgent", 0.40)),
        WorklistEntry("d.jpg", prediction("refer", 0.30, ood=True, warnings=["looks unlike dermoscopy"])),
        WorklistEntry("e.jpg", prediction("unavailable", 0.90)),
        WorklistEntry("f.jpg", prediction("refer", 0.15)),
        WorklistEntry("g.jpg", prediction("urgent", 0.80)),
        WorklistEntry("h.jpg", prediction("ungradable", 0.01, ood=True, warnings=["random noise"])),
    ]
    table = worklist(entries)
    assert list(table.columns) == COLUMNS
    # the ungradable image still needs a person: above the routine one, however low its (unreliable) score
    order = ["g.jpg", "c.jpg", "d.jpg", "b.jpg", "f.jpg", "h.jpg", "a.jpg", "e.jpg", "broken.jpg"]
    assert list(table["image"]) == order
    assert list(table["rank"]) == list(range(1, 10))
    ood_row = table.set_index("image").loc["d.jpg"]
    assert ood_row["ood"] is True and ood_row["notes"] == "looks unlike dermoscopy" and ood_row["tier"] == "refer"
    broken = table.set_index("image").loc["broken.jpg"]
    assert broken["tier"] == "unreadable" and "damaged" in broken["notes"] and pd.isna(broken["p_malignant"])
    assert tier_counts(table) == {
        "urgent": 2,
        "refer": 3,
        "ungradable": 1,
        "routine": 1,
        "unavailable": 1,
        "unreadable": 1,
    }


def test_top_diagnosis_and_context_columns() -> None:
    p = prediction("refer", 0.7)
    p.context, p.p_malignant_image_only = {"age": 70, "site": "back"}, 0.5
    row = worklist([WorklistEntry("x.png", p)]).iloc[0]
    assert row["top_diagnosis"] == "mel" and row["p_top_diagnosis"] == pytest.approx(0.7)
    assert row["context"] == "age 70, site back" and row["p_malignant_image_only"] == pytest.approx(0.5)


def test_empty_batch_and_csv_round_trip() -> None:
    assert list(worklist([]).columns) == COLUMNS and tier_counts(worklist([])) == {}
    table = worklist([WorklistEntry("a.jpg", prediction("refer", 0.123456)), WorklistEntry("z.jpg", error="bad")])
    back = pd.read_csv(io.BytesIO(worklist_csv(table)))
    assert list(back.columns) == COLUMNS and list(back["image"]) == ["a.jpg", "z.jpg"]
    assert back.loc[0, "p_malignant"] == pytest.approx(0.1235) and back.loc[1, "tier"] == "unreadable"
    assert back.loc[0, "tta"] == False and pd.isna(back.loc[1, "tta"])  # noqa: E712 (how it was scored; unread)


def test_image_files_expands_folders_and_names_bad_paths(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ["b.JPG", "a.png", "sub/c.webp", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    single = tmp_path / "a.png"
    assert image_files([tmp_path, single]) == [
        str(tmp_path / "a.png"),
        str(tmp_path / "b.JPG"),
        str(tmp_path / "sub" / "c.webp"),
        str(single),
    ]
    with pytest.raises(ValueError, match=r"nope\.jpg: no such file"):
        image_files([tmp_path / "nope.jpg"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty: no image files"):
        image_files([empty])


def test_csv_export_defuses_formula_cells_but_the_table_keeps_real_names() -> None:
    names = ['=HYPERLINK("http://x","y").jpg', "+1.jpg", "-2.jpg", "@cmd.jpg", "\tt.jpg", "\rr.jpg", "plain.jpg"]
    entries = [WorklistEntry(name, prediction("refer", 0.1 * (i + 1))) for i, name in enumerate(names)]
    entries.append(WorklistEntry("zz.jpg", error="=cmd|' /C calc'!A0"))
    table = worklist(entries)
    assert set(table["image"]) == {*names, "zz.jpg"}  # on screen: the real names
    back = pd.read_csv(io.BytesIO(worklist_csv(table)), keep_default_na=False)
    assert set(back["image"]) == {*("'" + n for n in names[:-1]), "plain.jpg", "zz.jpg"}
    assert back.set_index("image").loc["zz.jpg", "notes"] == "'=cmd|' /C calc'!A0"
    assert back["p_malignant"].iloc[0] == "0.7000"  # numbers are not text: untouched


def test_distinct_names_tell_images_sharing_a_name_apart() -> None:
    images = ["in/p1/lesion.jpg", "in/p2/lesion.jpg", "in/good.jpg", "in/good.png", "in/solo.png"]
    assert distinct_names(images) == [
        (os.path.join("p1", "lesion.jpg"), "p1_lesion_jpg"),
        (os.path.join("p2", "lesion.jpg"), "p2_lesion_jpg"),
        ("good.jpg", "good_jpg"),
        ("good.png", "good_png"),
        ("solo.png", "solo"),
    ]
    # a stem that happens to equal another image's made-up one is still not written over
    assert [stem for _, stem in distinct_names(["x/a.jpg", "y/a.jpg", "x_a_jpg.png"])] == [
        "x_a_jpg",
        "y_a_jpg",
        "x_a_jpg-2",
    ]
    assert distinct_names(["one.png"]) == [("one.png", "one")] and distinct_names([]) == []


class FakePredictor:
    """Reads b"bad" as a damaged file and scores everything else; `broken` makes the model itself fail."""

    def __init__(self, broken: bool = False) -> None:
        self.broken, self.calls = broken, []

    def read(self, source: bytes, name: str) -> str:
        if source == b"bad":
            raise IntakeError(f"{name}: damaged or incomplete image")
        return name

    def predict(self, intake: str, tta: bool | None = None, context: object = None) -> Prediction:
        if self.broken:
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
        self.calls.append((intake, tta, context))
        return prediction("refer", 0.5)


def test_score_images_lists_only_unreadable_files_as_rows_and_raises_anything_else() -> None:
    from dermai.worklist import score_images

    images = [("a.jpg", b"ok"), ("b.jpg", b"bad"), ("c.jpg", b"ok")]
    fake = FakePredictor()
    scored = list(score_images(fake, images, tta=True, context=lambda name: name.upper()))
    assert [(e.image, e.error) for e, _ in scored] == [
        ("a.jpg", None),
        ("b.jpg", "b.jpg: damaged or incomplete image"),
        ("c.jpg", None),
    ]
    assert [intake for _, intake in scored] == ["a.jpg", None, "c.jpg"]
    assert fake.calls == [("a.jpg", True, "A.JPG"), ("c.jpg", True, "C.JPG")]
    with pytest.raises(IntakeError, match="b.jpg: damaged"):  # the CLI without --csv: stop at the bad file
        list(score_images(FakePredictor(), images, keep_going=False))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):  # not the files' fault: not a row
        list(score_images(FakePredictor(broken=True), images))
