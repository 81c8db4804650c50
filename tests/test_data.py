from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermai import data, pixel_cache, safe_write, splits
from dermai.cli import main
from tests.conftest import ham_rows, make_folder


# ----------------------------------------------------------------------------------------- real data
def test_ham_split_has_no_lesion_leakage_and_is_stratified(ham_root: Path) -> None:
    ds = splits.attach_splits(data.load_dataset(ham_root), seed=0)
    assert ds.mode == "multiclass" and ds.group_key == "lesion_id"
    assert len(ds.meta) == 10015
    assert ds.meta.groupby("lesion_id")["split"].nunique().max() == 1
    shares = pd.crosstab(ds.meta["dx"], ds.meta["split"], normalize="columns") * 100
    assert (shares.max(axis=1) - shares.min(axis=1)).max() <= 3.0
    fractions = ds.meta["split"].value_counts(normalize=True)
    assert abs(fractions["train"] - 0.70) < 0.01 and abs(fractions["test"] - 0.15) < 0.01


def test_ham_labels_come_from_csv(ham_root: Path) -> None:
    ds = data.load_dataset(ham_root)
    counts = ds.meta["dx"].value_counts()
    assert counts["nv"] == 6705 and counts["mel"] == 1113 and counts["df"] == 115
    assert ds.meta["malignant"].sum() == 1954
    assert set(ds.meta.loc[ds.meta["malignant"] == 1, "dx"]) == {"mel", "bcc", "akiec"}


def test_split_is_deterministic_and_seed_dependent(ham_root: Path) -> None:
    base = data.load_dataset(ham_root)
    a = splits.attach_splits(base, seed=3).meta["split"]
    b = splits.attach_splits(base, seed=3).meta["split"]
    c = splits.attach_splits(base, seed=4).meta["split"]
    assert a.equals(b)
    assert not a.equals(c)


def test_limit_keeps_every_class_on_every_side(ham_root: Path) -> None:
    ds = splits.attach_splits(data.load_dataset(ham_root), seed=0, limit=256)
    assert 200 <= len(ds.meta) <= 320
    for split in splits.SPLITS:
        assert set(ds.meta.loc[ds.meta["split"] == split, "dx"]) == set(data.DIAGNOSES)


def test_cli_split_and_summary(ham_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "manifest.csv"
    assert main(["data", "split", "--data", str(ham_root), "--out", str(out), "--seed", "1"]) == 0
    manifest = pd.read_csv(out)
    assert {"image_id", "split"} <= set(manifest.columns) and len(manifest) == 10015
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert main(["data", "summary", "--data", str(ham_root), "--manifest", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "nv" in printed and "total" in printed and "10015" in printed


def test_cli_split_never_writes_over_its_own_manifest_or_metadata(
    ham_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "manifest.csv"
    assert main(["data", "split", "--data", str(ham_root), "--out", str(out), "--limit", "300"]) == 0
    before = out.read_bytes()
    assert main(["data", "split", "--data", str(ham_root), "--manifest", str(out), "--out", str(out)]) == 2
    assert f"--out {out} is the --manifest read" in capsys.readouterr().err and out.read_bytes() == before
    metadata = str(ham_root / "HAM10000_metadata.csv")
    assert main(["data", "split", "--data", str(ham_root), "--out", metadata]) == 2
    assert "is the data folder's metadata CSV" in capsys.readouterr().err


def test_manifest_round_trip(ham_root: Path, tmp_path: Path) -> None:
    ds = splits.attach_splits(data.load_dataset(ham_root), seed=2, limit=300)
    path = splits.write_manifest(ds, tmp_path / "m.csv")
    again = splits.attach_splits(data.load_dataset(ham_root), manifest=path)
    merged = ds.meta.set_index("image_id")["split"].sort_index()
    assert merged.equals(again.meta.set_index("image_id")["split"].sort_index())
    assert splits.manifest_checksum(ds) == splits.manifest_checksum(again)


# ----------------------------------------------------------------------------------- label fraction
def test_label_fraction_is_grouped_and_stratified(ham_root: Path) -> None:
    ds = splits.attach_splits(data.load_dataset(ham_root), seed=0, label_fraction=0.1)
    train = ds.meta[ds.meta["split"] == "train"]
    assert 0.07 < train["labelled"].mean() < 0.13
    assert train.groupby("group")["labelled"].nunique().max() == 1
    assert set(train.loc[train["labelled"], "dx"]) == set(data.DIAGNOSES)
    assert ds.meta.loc[ds.meta["split"] != "train", "labelled"].all()


def test_label_fraction_rejects_out_of_range(ham_root: Path) -> None:
    with pytest.raises(data.DataError, match="label fraction"):
        splits.attach_splits(data.load_dataset(ham_root), label_fraction=0)


# ------------------------------------------------------------------------------------------- dialects
def test_isic2020_dialect_binary_mode_grouped_by_patient(tmp_path: Path) -> None:
    rows = [
        {
            "image_name": f"ISIC_{i:07d}",
            "patient_id": f"P{i // 3}",
            "target": int(i % 5 == 0),
            "sex": "female",
            "age_approx": 40,
            "anatom_site_general_challenge": "torso",
        }
        for i in range(90)
    ]
    root = make_folder(tmp_path, rows, id_column="image_name", csv_name="train.csv", ext=".png")
    ds = splits.attach_splits(data.load_dataset(root), seed=0)
    assert ds.mode == "binary" and ds.classes == ("benign", "malignant") and ds.group_key == "patient_id"
    assert ds.meta["label"].tolist() == ds.meta["malignant"].tolist()
    assert ds.meta.groupby("patient_id")["split"].nunique().max() == 1


def test_plain_csv_with_benign_malignant(tmp_path: Path) -> None:
    rows = [{"image_id": f"img{i}", "benign_malignant": "malignant" if i % 2 else "benign"} for i in range(12)]
    root = make_folder(tmp_path, rows, ext=".bmp")
    ds = data.load_dataset(root)
    assert ds.mode == "binary" and ds.group_key == "image_id"
    assert ds.meta["malignant"].sum() == 6


def test_partly_filled_ids_still_keep_lesions_and_patients_on_one_side(tmp_path: Path) -> None:
    # One blank lesion id used to drop lesion grouping for every row (7 of 10 lesions then spanned sides).
    rows = ham_rows(4, 3)
    rows[0]["lesion_id"] = ""
    ds = splits.attach_splits(data.load_dataset(make_folder(tmp_path / "lesions", rows)), seed=0)
    assert ds.group_key == "lesion_id, else image_id"
    assert ds.meta.groupby("lesion_id")["split"].nunique().max() == 1
    assert ds.meta.loc[0, "group"] == "I_akiec_0_0"  # the image without a lesion is its own group
    # Patient ids on some rows only: a lesion seen on a row with a patient id joins that patient's group.
    rows = ham_rows(8, 3)
    for i, row in enumerate(rows):
        row["patient_id"] = f"P{i // 6}" if i % 3 == 0 else ""
    ds = splits.attach_splits(data.load_dataset(make_folder(tmp_path / "mixed", rows)), seed=0)
    assert ds.group_key == "patient_id, else lesion_id"
    meta = ds.meta
    assert meta.groupby("lesion_id")["split"].nunique().max() == 1
    assert meta.dropna(subset=["patient_id"]).groupby("patient_id")["split"].nunique().max() == 1
    assert set(meta["group"]) == {f"P{k}" for k in range(28)}  # each patient: two lesions of three images


def test_training_decodes_images_as_prediction_does(tmp_path: Path) -> None:
    """EXIF orientation, transparency and 16-bit depth: the pixel cache once ignored all three (an EXIF-rotated
    JPEG differed by 127 grey levels on average from what predict saw; transparency went black, not white)."""
    from PIL import Image

    from dermai.intake import read_image
    from dermai.preprocess import resize_input

    rng = np.random.default_rng(0)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(rotated, exif=exif)
    cutout = tmp_path / "cutout.png"
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)
    rgba[5:15, 5:15] = (200, 40, 40, 255)  # an opaque square on a transparent background
    Image.fromarray(rgba, mode="RGBA").save(cutout)
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((20, 20), 32768, dtype=np.uint16)).save(deep)
    for path in (rotated, cutout, deep):
        expected = resize_input(read_image(path).image, 16)
        assert np.array_equal(pixel_cache.decode_image(str(path), 16), expected), path.name
    assert pixel_cache.decode_image(str(cutout), 20)[0, 0].tolist() == [255, 255, 255]
    assert 120 <= pixel_cache.decode_image(str(deep), 8).mean() <= 135  # half of 16-bit range, scaled not clipped
    with Image.open(rotated) as raw:  # the stored pixels are 40 wide; shown (and now cached) 30 wide, 40 high
        assert raw.size == (40, 30)
    assert np.array_equal(
        pixel_cache.decode_image(str(rotated), 16),
        resize_input(Image.open(rotated).transpose(Image.Transpose.ROTATE_270), 16),
    )


def test_data_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_root = make_folder(tmp_path / "env", ham_rows(1, 1))
    monkeypatch.setenv("DERMAI_DATA", str(env_root))
    assert data.resolve_data_root() == env_root.resolve()
    assert data.resolve_data_root(tmp_path / "env") == env_root.resolve()
    monkeypatch.setenv("DERMAI_DATA", str(tmp_path / "missing"))
    project = tmp_path / "project" / "checkout"
    monkeypatch.setattr(data, "PROJECT_ROOT", project)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(data.DataError, match="tried: .*missing.*data/ham10000"):
        data.resolve_data_root()
    # the defaults are looked for from the project folder too, so a command run elsewhere finds its data
    shared = make_folder(tmp_path / "project" / "shared" / "data" / "ham10000", ham_rows(1, 1))
    project.mkdir()
    assert data.resolve_data_root() == shared.resolve()
    assert data.recorded_folder("../shared/data/ham10000") == project / "../shared/data/ham10000"
    assert data.recorded_folder("nowhere") == Path("nowhere")  # left as recorded: the error will name it


def test_same_file_sees_one_file_however_its_path_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    weights = tmp_path / "run" / "model.safetensors"
    weights.write_bytes(b"w")
    (tmp_path / "link").symlink_to(tmp_path / "run")
    os.link(weights, tmp_path / "hard.safetensors")
    written = ("run/model.safetensors", "run/../run/model.safetensors", "link/model.safetensors", "hard.safetensors")
    for other in written:
        assert data.same_file(weights, other), other
    assert data.same_file("gone/x", tmp_path / "gone" / "x")  # not there (a deleted run's weights) and still one
    (tmp_path / "other.safetensors").write_bytes(b"w")
    assert not data.same_file(weights, "other.safetensors")
    assert not data.same_file(None, None) and not data.same_file(weights, None)


def test_weights_data_folder_reads_only_a_recorded_folder(tmp_path: Path) -> None:
    assert data.weights_data_folder({"config": {"data": {"data_dir": str(tmp_path)}}}) == tmp_path
    for meta in ({}, {"config": "damaged"}, {"config": {"data": None}}, {"config": {"data": {"data_dir": ""}}}):
        assert data.weights_data_folder(meta) is None, meta


# -------------------------------------------------------------------------------------------- errors
def test_missing_image_names_row_and_id(tmp_path: Path) -> None:
    root = make_folder(tmp_path, ham_rows(1, 1))
    os.remove(root / "imgs" / "nested" / "I_mel_0_0.jpg")
    with pytest.raises(data.DataError, match=r"row \d+: image 'I_mel_0_0' not found"):
        data.load_dataset(root)


def test_csv_without_label_columns(tmp_path: Path) -> None:
    root = make_folder(tmp_path, [{"image_id": "a", "age": 3}])
    with pytest.raises(data.DataError, match="no label column"):
        data.load_dataset(root)


def test_csv_without_id_column(tmp_path: Path) -> None:
    root = make_folder(tmp_path, [{"image_id": "a", "dx": "nv"}])
    pd.DataFrame({"name": ["a"], "dx": ["nv"]}).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(data.DataError, match="no image id column"):
        data.load_dataset(root)


def test_unknown_dx_names_row(tmp_path: Path) -> None:
    rows = ham_rows(1, 1)
    rows[3]["dx"] = "wart"
    root = make_folder(tmp_path, rows)
    with pytest.raises(data.DataError, match=r"metadata.csv, row 5: unknown dx value 'wart'"):
        data.load_dataset(root)


@pytest.mark.parametrize("long_row", [0, 3])
def test_a_row_longer_than_the_header_is_named_not_read_into_shifted_columns(tmp_path: Path, long_row: int) -> None:
    # With every row one field long (a trailing comma), pandas made the first column the index and read each
    # age as the diagnosis; with one long row further down it failed as "not a readable CSV" without the row.
    root = make_folder(tmp_path, ham_rows(1, 1))
    csv_path = root / "metadata.csv"
    lines = csv_path.read_text().splitlines()
    rows = range(1, len(lines)) if long_row == 0 else [long_row + 1]
    for i in rows:
        lines[i] += ",extra"
    csv_path.write_text("\n".join(lines) + "\n")
    n = len(lines[0].split(","))
    row = max(2, long_row + 2)
    expected = rf"metadata.csv, row {row}: {n + 1} fields but the header names {n} columns"
    with pytest.raises(data.DataError, match=expected):
        data.load_dataset(root)


def test_class_absent_from_a_split(tmp_path: Path) -> None:
    rows = ham_rows(4, 1)
    rows = [r for r in rows if r["dx"] != "df"] + [r for r in rows if r["dx"] == "df"][:2]
    root = make_folder(tmp_path, rows)
    with pytest.raises(data.DataError, match="class 'df' is absent from the train split"):
        splits.attach_splits(data.load_dataset(root), seed=0)


def test_unreadable_image_names_file(tmp_path: Path) -> None:
    root = make_folder(tmp_path, ham_rows(1, 1))
    bad = root / "imgs" / "nested" / "I_nv_0_0.jpg"
    bad.write_bytes(b"not a jpeg")
    ds = data.load_dataset(root)
    with pytest.raises(data.DataError, match="I_nv_0_0.jpg: unreadable image"):
        pixel_cache.load_pixels(list(ds.meta["path"]), 16)
    assert not [p for p in Path(os.environ["DERMAI_CACHE"]).iterdir()]  # nothing half-written


def test_bad_manifest_split_value(tmp_path: Path, ham_root: Path) -> None:
    path = tmp_path / "m.csv"
    pd.DataFrame({"image_id": ["ISIC_0027419"], "split": ["holdout"]}).to_csv(path, index=False)
    with pytest.raises(data.DataError, match="row 2: split 'holdout'"):
        splits.attach_splits(data.load_dataset(ham_root), manifest=path)


# -------------------------------------------------------------------------------- sampler and cache
def test_class_balanced_weights_equalise_classes() -> None:
    labels = np.array([0] * 90 + [1] * 9 + [2])
    w = splits.class_balanced_weights(labels)
    totals = [w[labels == k].sum() for k in range(3)]
    assert np.allclose(totals, 1.0)


def test_pixel_cache_reused_and_invalidated(tmp_path: Path) -> None:
    root = make_folder(tmp_path, ham_rows(1, 2))
    paths = list(data.load_dataset(root).meta["path"])
    first = pixel_cache.load_pixels(paths, 16)
    assert first.shape == (len(paths), 16, 16, 3) and first.dtype == np.uint8
    cache = Path(os.environ["DERMAI_CACHE"])
    files = sorted(cache.glob("*.npy"))
    assert len(files) == 1
    inode = files[0].stat().st_ino
    again = pixel_cache.load_pixels(paths, 16)
    assert np.array_equal(first, again) and files[0].stat().st_ino == inode  # reused, not rewritten
    # changing an image changes the key: a new cache file with the new pixels
    from PIL import Image

    Image.new("RGB", (40, 30), (255, 0, 0)).save(paths[0])
    changed = pixel_cache.load_pixels(paths, 16)
    assert len(list(cache.glob("*.npy"))) == 2
    assert tuple(changed[0, 8, 8]) == (255, 0, 0) or changed[0, 8, 8, 0] > 240
    assert pixel_cache.load_pixels(paths, 8).shape[1] == 8  # another size, another entry


def test_pixel_cache_stays_under_its_bound_dropping_the_least_recently_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_folder(tmp_path, ham_rows(1, 2))
    paths = list(data.load_dataset(root).meta["path"])
    cache = Path(os.environ["DERMAI_CACHE"])
    per_size = {size: len(paths) * size * size * 3 for size in (16, 20, 24)}  # plus a 128-byte .npy header each
    monkeypatch.setenv("DERMAI_CACHE_GB", str((per_size[16] + per_size[24] + 1000) / 1e9))  # not for all three
    (cache / "notes.npy").write_bytes(b"x" * 10**6)  # not ours: never counted nor deleted
    pixel_cache.load_pixels(paths, 16)
    then = time.time() - 60
    os.utime(next(cache.glob("pixels-*-16px.npy")), (then, then))
    pixel_cache.load_pixels(paths, 20)
    assert {p.name.rsplit("-", 1)[1] for p in cache.glob("pixels-*")} == {"16px.npy", "20px.npy"}
    then = time.time() - 30  # 20 px made before the hit below (file times can tie within a clock tick)
    os.utime(next(cache.glob("pixels-*-20px.npy")), (then, then))
    pixel_cache.load_pixels(paths, 16)  # a hit: 16 px is now the most recently used
    pixel_cache.load_pixels(paths, 24)
    assert {p.name.rsplit("-", 1)[1] for p in cache.glob("pixels-*")} == {"16px.npy", "24px.npy"}  # 20 px went
    assert (cache / "notes.npy").exists()
    monkeypatch.setenv("DERMAI_CACHE_GB", "0")
    assert pixel_cache.load_pixels(paths, 20).shape[1] == 20  # a bound below one file still serves that file
    assert [p.name.rsplit("-", 1)[1] for p in cache.glob("pixels-*")] == ["20px.npy"]


@pytest.mark.parametrize("value", ["lots", "-1", "nan"])
def test_a_bad_cache_bound_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    paths = list(data.load_dataset(make_folder(tmp_path, ham_rows(1, 2))).meta["path"])
    pixel_cache.load_pixels(paths, 16)
    monkeypatch.setenv("DERMAI_CACHE_GB", value)
    with pytest.raises(data.DataError, match=f"DERMAI_CACHE_GB='{value}': give the pixel cache's size bound"):
        pixel_cache.cache_limit_bytes()
    with pytest.raises(data.DataError, match="DERMAI_CACHE_GB"):  # a cache hit names it too, not only a write
        pixel_cache.load_pixels(paths, 16)


def test_pixel_cache_matches_direct_decode(ham_root: Path) -> None:
    ds = data.load_dataset(ham_root)
    paths = list(ds.meta["path"][:5])
    cached = pixel_cache.load_pixels(paths, 32)
    for i, p in enumerate(paths):
        assert np.array_equal(cached[i], pixel_cache.decode_image(p, 32))


def test_top_level_help_prints(capsys: pytest.CaptureFixture[str]) -> None:
    """A bare '%' in a subcommand's help made `python -m dermai --help` a TypeError traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "95% intervals" in capsys.readouterr().out


def test_atomic_write_names_a_folder_or_file_in_the_way(tmp_path: Path) -> None:
    """Errors name the target, not the temporary ('.x.abc.tmp' -> ...) or errno 'File exists' of a parent."""
    folder, blocker = tmp_path / "folder", tmp_path / "afile"
    folder.mkdir()
    blocker.write_text("x")
    with pytest.raises(IsADirectoryError, match=f"cannot write {folder}: it is a folder"):
        safe_write.atomic_write_bytes(folder, b"a")
    with pytest.raises(NotADirectoryError, match=f"{blocker} is a file, not a folder"):
        safe_write.atomic_write_bytes(blocker / "m.csv", b"a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder"]  # no temporary left


def test_cli_split_out_folder_and_bad_limit_are_one_line_errors(
    ham_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "split", "--data", str(ham_root), "--out", str(tmp_path), "--limit", "100"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: cannot write {tmp_path}: it is a folder; name a file\n"
    with pytest.raises(SystemExit) as exit_info:  # --limit 0 silently meant "all", -3 "the minimum"
        main(["data", "split", "--data", str(ham_root), "--out", str(tmp_path / "m.csv"), "--limit", "0"])
    assert exit_info.value.code == 2 and "--limit: must be at least 1" in capsys.readouterr().err
    assert main(["data", "split", "--data", str(ham_root), "--out", str(tmp_path / "m.csv"), "--limit", "5"]) == 0
    written = len(splits.read_manifest(tmp_path / "m.csv"))
    assert capsys.readouterr().err == (
        f"note: --limit 5 gave {written} images: every class keeps at least 3 lesions (or patients), so that each "
        "split holds some\n"
    )


def test_a_negative_split_seed_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """numpy said only "expected non-negative integer", naming no option."""
    root = make_folder(tmp_path / "d", ham_rows(3, 1))
    assert main(["data", "split", "--data", str(root), "--out", str(tmp_path / "m.csv"), "--seed", "-1"]) == 2
    assert capsys.readouterr().err == (
        "error: split seed (--seed, data.seed in a config) must be a whole number ≥ 0, got -1\n"
    )
    assert not (tmp_path / "m.csv").exists()
    with pytest.raises(data.DataError, match="split seed .* got True"):  # not 1
        splits.attach_splits(data.load_dataset(root), seed=True)


def test_non_utf8_manifest_names_file(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    path.write_bytes(b"image_id,split\nISIC_\xd0\xff,train\n")
    with pytest.raises(data.DataError, match=f"{path}: cannot read manifest"):
        splits.read_manifest(path)


@pytest.mark.parametrize("cell", ["", "  "])
def test_a_blank_image_id_in_a_manifest_is_named_by_row(
    tmp_path: Path, cell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A blank id was read as NaN: a TypeError from sorting it beside the ids, or "image nan is not in the
    data folder" with no row to look at."""
    path = tmp_path / "m.csv"
    path.write_text(f"image_id,split\nI_nv_0_0,train\n{cell},val\n")
    with pytest.raises(data.DataError, match="m.csv, row 3: image_id is blank"):
        splits.read_manifest(path)
    root = make_folder(tmp_path / "d", ham_rows(1, 1))
    assert main(["data", "summary", "--data", str(root), "--manifest", str(path)]) == 2
    assert capsys.readouterr().err == f"error: {path}, row 3: image_id is blank\n"


def test_a_manifest_image_missing_from_the_folder_is_named_by_row(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", ham_rows(1, 1))
    path = tmp_path / "m.csv"
    path.write_text("image_id,split\nI_nv_0_0,train\nI_gone,val\nI_bcc_0_0,test\n")
    with pytest.raises(data.DataError, match=f"m.csv, row 3: image 'I_gone' is not in the data folder {root}"):
        splits.attach_splits(data.load_dataset(root), manifest=path)


def test_manifest_labelled_reads_true_false_one_zero_and_blank_off_train(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    rows = "a,train,TRUE\nb,train,false\nc,train,1\nd,train,0\ne,val,\nf,test,\ng,test,True\n"
    path.write_text("image_id,split,labelled\n" + rows)  # 1 beside blanks once read as 1.0, hence False
    labelled = splits.read_manifest(path)["labelled"]
    assert labelled.to_dict() == {"a": True, "b": False, "c": True, "d": False, "e": True, "f": True, "g": True}


@pytest.mark.parametrize(("cell", "shown"), [("maybe", "'maybe'"), ("yes", "'yes'"), ("2", "'2'"), ("", "blank")])
def test_manifest_labelled_values_that_mean_nothing_are_named(
    tmp_path: Path, cell: str, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Anything but true/false/1/0 (or a blank off the train split) silently became False: fewer labels."""
    path = tmp_path / "m.csv"
    path.write_text(f"image_id,split,labelled\na,val,\nb,train,{cell}\n")
    with pytest.raises(data.DataError, match=f"m.csv, row 3: labelled is {shown} \\(expected true/false or 1/0\\)"):
        splits.read_manifest(path)
    root = make_folder(tmp_path / "d", ham_rows(1, 1))
    assert main(["data", "summary", "--data", str(root), "--manifest", str(path)]) == 2
    assert capsys.readouterr().err == f"error: {path}, row 3: labelled is {shown} (expected true/false or 1/0)\n"


def test_label_fraction_above_one_is_refused_with_a_manifest(ham_root: Path, tmp_path: Path) -> None:
    """A manifest's labelled column skipped the range check: --label-fraction 2 trained as 1.0."""
    dataset = splits.attach_splits(data.load_dataset(ham_root), limit=100)
    manifest = splits.write_manifest(dataset, tmp_path / "m.csv")
    with pytest.raises(data.DataError, match=r"label fraction 2 must be in \(0, 1\]"):
        splits.attach_splits(data.load_dataset(ham_root), manifest=manifest, label_fraction=2)


def test_a_portrait_image_and_its_mask_are_turned_together(tmp_path: Path) -> None:
    """Portrait images are cached turned to landscape (as `predict` serves them), and their lesion masks the same
    way, so a mask still covers its lesion in the training frame."""
    from PIL import Image

    pixels = np.zeros((40, 30, 3), dtype=np.uint8)  # 30 wide, 40 high
    pixels[2:12, 3:9] = 255  # a bright "lesion" near the top left
    image, mask = tmp_path / "portrait.png", tmp_path / "portrait_segmentation.png"
    Image.fromarray(pixels).save(image)
    Image.fromarray(pixels[..., 0]).save(mask)
    decoded, decoded_mask = pixel_cache.decode_image(str(image), 16), pixel_cache.decode_mask(str(mask), str(image), 16)
    bright = decoded[..., 0] > 127
    assert bright.any() and np.array_equal(bright, decoded_mask > 127)
    assert bright[:8, 8:].sum() == bright.sum()  # turned clockwise: the top left went to the top right


def test_a_non_square_input_caches_images_and_masks_at_height_by_width(tmp_path: Path) -> None:
    """`--image-width`: the cache holds (N, height, width, 3) pixels under its own key, beside the square one, and
    the lesion masks in the same frame; a portrait image is turned to landscape first, as for a square."""
    from PIL import Image

    root = make_folder(tmp_path, ham_rows(1, 2))
    ds = data.load_dataset(root)
    paths = list(ds.meta["path"])
    square, wide = pixel_cache.load_pixels(paths, 12), pixel_cache.load_pixels(paths, (12, 16))
    assert square.shape == (len(paths), 12, 12, 3) and wide.shape == (len(paths), 12, 16, 3)
    names = sorted(p.name for p in Path(os.environ["DERMAI_CACHE"]).glob("pixels-*.npy"))
    assert sorted(n.rsplit("-", 1)[1] for n in names) == ["12px.npy", "12x16px.npy"]
    assert np.array_equal(pixel_cache.load_pixels(paths, (12, 12)), square)  # 12 by 12 is the square's entry
    assert np.array_equal(wide[0], pixel_cache.decode_image(paths[0], (12, 16)))

    pixels = np.zeros((40, 30, 3), dtype=np.uint8)  # portrait: 30 wide, 40 high
    pixels[2:12, 3:9] = 255
    image, mask = tmp_path / "portrait.png", tmp_path / "portrait_segmentation.png"
    Image.fromarray(pixels).save(image)
    Image.fromarray(pixels[..., 0]).save(mask)
    decoded, decoded_mask = (
        pixel_cache.decode_image(str(image), (15, 20)),
        pixel_cache.decode_mask(str(mask), str(image), (15, 20)),
    )
    assert decoded.shape == (15, 20, 3) and decoded_mask.shape == (15, 20)
    assert np.array_equal(decoded[..., 0] > 127, decoded_mask > 127) and decoded[:7, 10:, 0].max() > 127


def test_linked_folders_are_read_and_a_loop_of_links_ends(tmp_path: Path) -> None:
    rows = ham_rows(1, 1)
    elsewhere = make_folder(tmp_path / "elsewhere", rows)
    root = tmp_path / "data"
    root.mkdir()
    (root / "images").symlink_to(elsewhere / "imgs", target_is_directory=True)
    (root / "metadata.csv").symlink_to(elsewhere / "metadata.csv")
    (elsewhere / "imgs" / "back").symlink_to(elsewhere / "imgs", target_is_directory=True)  # a loop
    index = data.index_images(root)
    assert len(index) == len(rows) and all(str(p).startswith(str(root / "images")) for p in index.values())
    assert data.find_metadata_csv(root) == root / "metadata.csv"
    assert len(data.load_dataset(root).meta) == len(rows)


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty", "another dtype"])
def test_a_damaged_cache_file_is_decoded_again_not_fatal(
    tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = list(data.load_dataset(make_folder(tmp_path, ham_rows(1, 2))).meta["path"])
    expected = np.array(pixel_cache.load_pixels(paths, 16))  # a copy: the file under the memmap is damaged below
    (cache_file,) = Path(os.environ["DERMAI_CACHE"]).glob("pixels-*.npy")
    whole = cache_file.read_bytes()
    damaged = {
        "truncated": whole[: len(whole) // 2],
        "random bytes": np.random.default_rng(0).bytes(len(whole)),
        "empty": b"",
        "another dtype": None,
    }[damage]
    if damaged is None:
        np.save(cache_file, expected.astype(np.float32))  # the right shape, but not what the cache holds
    else:
        cache_file.write_bytes(damaged)
    again = pixel_cache.load_pixels(paths, 16)
    assert np.array_equal(again, expected) and again.dtype == np.uint8
    assert np.array_equal(np.load(cache_file), expected)  # the file is whole again
    err = capsys.readouterr().err
    if damage != "another dtype":  # a readable array of the wrong kind is simply replaced, as a wrong shape is
        assert f"note: cache file {cache_file} is unreadable" in err and len(err.strip().splitlines()) == 1
        assert "allow_pickle" not in err
    assert pixel_cache.load_pixels(paths, 16) is not None and capsys.readouterr().err == ""  # a hit again, quietly


def test_atomic_write_syncs_the_data_before_renaming(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(f"fsync {os.readlink(f'/proc/self/fd/{fd}')}")
        real_fsync(fd)

    def replace(src: str, dst: object) -> None:
        events.append(f"replace {src}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = safe_write.atomic_write_bytes(tmp_path / "out.bin", b"payload")
    assert target.read_bytes() == b"payload"
    (tmp,) = {e.split(" ", 1)[1] for e in events if e.startswith("replace")}
    assert events[:2] == [f"fsync {tmp}", f"replace {tmp}"]  # the temporary's data reach the disk first


def test_manifest_with_limit_is_refused_on_the_command_line_and_the_manifest_wins_in_the_core(
    ham_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--limit dropped some of the manifest's images, then blamed the data folder for lacking them."""
    import dermai.train

    manifest = splits.write_manifest(splits.attach_splits(data.load_dataset(ham_root), limit=300), tmp_path / "m.csv")

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(dermai.train, "train", never)
    expected = f"error: give --manifest or --limit, not both: the manifest {manifest} names the images to use itself\n"
    for argv in (
        ["data", "summary"],
        ["data", "split", "--out", str(tmp_path / "n.csv")],
        ["finetune", "--out", str(tmp_path / "r")],
    ):
        assert main([*argv, "--data", str(ham_root), "--manifest", str(manifest), "--limit", "50"]) == 2
        assert capsys.readouterr().err == expected
    assert not (tmp_path / "n.csv").exists()
    both = splits.attach_splits(data.load_dataset(ham_root), manifest=manifest, limit=50)  # as evaluate rebuilds it
    assert sorted(both.meta["image_id"]) == sorted(splits.read_manifest(manifest).index)
