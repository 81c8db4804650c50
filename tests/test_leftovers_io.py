"""Leftovers in reading images and metadata: lesion masks oriented as their EXIF-rotated images, CMYK JPEGs
through their embedded profile, each weights JSON and metadata CSV read once per Training-page render, and
a decompression bomb's message."""

from __future__ import annotations

import io
import os
import re
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageCms
from streamlit.testing.v1 import AppTest

from dermai import data, jobs, pixel_cache, run_table
from dermai.intake import read_image
from dermai.ui import image_display
from tests import test_app_pages
from tests.conftest import HAM, ham_rows, make_folder
from tests.test_app_pages import REPO, TIMEOUT, assert_clean, copy_tiny_run, page
from tests.test_ui_evaluation_view import tiny_weights

app_env = test_app_pages.app_env  # the fixture: data, tiny weights and an empty runs folder

# A stored 60×40 (landscape) picture with a bright block near its top left: under EXIF orientation 6 it is shown
# turned a quarter clockwise, 40×60 (portrait), with the block near its top right.
STORED = (60, 40)


def _lesion(size: tuple[int, int]) -> np.ndarray:
    """(height, width) uint8: 255 on a block near the top left that is not symmetric under any flip or turn."""
    width, height = size
    pixels = np.zeros((height, width), np.uint8)
    pixels[2:12, 4:24] = 255
    return pixels


def _exif_image(path: Path, orientation: int, size: tuple[int, int] = STORED) -> Path:
    """A JPEG whose stored pixels are `_lesion` in all three channels, tagged with an EXIF orientation."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.repeat(_lesion(size)[..., None], 3, axis=2)).save(path, exif=exif, quality=95)
    return path


def _shown_lesion(image: Path) -> np.ndarray:
    """Where the image's lesion is, as `intake.read_image` shows the image."""
    return np.asarray(read_image(image).image)[..., 0] > 127


@pytest.mark.parametrize("orientation", [2, 3, 6, 8])
def test_a_mask_drawn_on_the_stored_pixels_gets_its_images_exif_turn(tmp_path: Path, orientation: int) -> None:
    image = _exif_image(tmp_path / "phone.jpg", orientation)
    mask = tmp_path / "phone_segmentation.png"
    Image.fromarray(_lesion(STORED)).save(mask)
    shown = _shown_lesion(image)
    read = np.asarray(pixel_cache.read_mask(mask, image)) > 127
    assert read.shape == shown.shape and np.array_equal(read, shown)
    # Training's frame (turned to landscape, resized) and the Dataset page's overlay line up the same way.
    decoded = pixel_cache.decode_image(str(image), 16)[..., 0] > 127
    assert np.array_equal(pixel_cache.decode_mask(str(mask), str(image), 16) > 127, decoded)
    overlay = image_display.mask_overlay(image, mask)
    tinted = (overlay[..., 1] > overlay[..., 0] + 20) | (
        (overlay[..., 1] == 255) & (overlay[..., 0] == 0)  # the green outline
    )
    assert np.array_equal(tinted, shown)


def test_a_mask_already_upright_is_used_as_it_is(tmp_path: Path) -> None:
    image = _exif_image(tmp_path / "phone.jpg", 6)
    shown = _shown_lesion(image)
    mask = tmp_path / "phone_segmentation.png"
    Image.fromarray(shown.astype(np.uint8) * 255).save(mask)  # 40×60: drawn on the picture as shown
    assert np.array_equal(np.asarray(pixel_cache.read_mask(mask, image)) > 127, shown)


def test_a_mask_whose_orientation_cannot_be_told_is_refused_naming_it(tmp_path: Path) -> None:
    image = _exif_image(tmp_path / "phone.jpg", 6)
    mask = tmp_path / "phone_segmentation.png"
    Image.fromarray(_lesion((30, 20))).save(mask)  # half the size: stored or shown frame?
    with pytest.raises(data.DataError, match=r"phone_segmentation\.png: the lesion mask is 30×20 px .* stored "):
        pixel_cache.read_mask(mask, image)
    with pytest.raises(data.DataError, match=r"phone_segmentation\.png"):
        image_display.mask_overlay(image, mask)
    # Without an orientation, a mask of another size is resized onto its image as before.
    plain = tmp_path / "plain.jpg"
    Image.fromarray(np.repeat(_lesion(STORED)[..., None], 3, axis=2)).save(plain)
    assert pixel_cache.read_mask(mask, plain).size == (30, 20)
    assert image_display.mask_overlay(plain, mask).shape == (40, 60, 3)


def test_trainings_mask_cache_turns_the_masks_of_rotated_images(tmp_path: Path) -> None:
    rows = ham_rows(n_lesions_per_dx=1, images_per_lesion=1)
    root = make_folder(tmp_path / "data", rows)
    (root / "masks").mkdir()
    for row in rows:
        _exif_image(root / "imgs" / "nested" / f"{row['image_id']}.jpg", 6)
        Image.fromarray(_lesion(STORED)).save(root / "masks" / f"{row['image_id']}_segmentation.png")
    dataset = data.load_dataset(root)
    masks = pixel_cache.load_masks(dataset, 16)
    pixels = pixel_cache.load_pixels(list(dataset.meta["path"]), 16)
    assert np.array_equal(masks > 127, pixels[..., 0] > 127)


def test_saliency_plausibility_leaves_out_a_mask_it_cannot_orient_and_names_it(tmp_path: Path) -> None:
    from dermai.evaluate import saliency_plausibility
    from dermai.model import SimCLRResNet18
    from dermai.weights import LoadedWeights

    root = tmp_path / "data"
    (root / "masks").mkdir(parents=True)
    rows = []
    for image_id, mask_size in (("upright", STORED), ("halved", (30, 20))):
        rows.append({"image_id": image_id, "path": str(_exif_image(root / f"{image_id}.jpg", 6))})
        Image.fromarray(_lesion(mask_size)).save(root / "masks" / f"{image_id}_segmentation.png")
    loaded = LoadedWeights(SimCLRResNet18(2).eval(), {"classes": ["benign", "malignant"], "image_size": 32})
    result = saliency_plausibility(loaded, pd.DataFrame(rows), root, limit=0)
    assert result["n_images"] == 1
    assert (
        len(result["masks_left_out"]) == 1
        and "halved_segmentation.png: the lesion mask is 30×20" in (result["masks_left_out"][0])
    )


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _cmyk_profile(lab: Callable[[tuple[int, int, int, int]], tuple[float, float, float]]) -> bytes:
    """A minimal ICC v2 printer profile, CMYK → Lab by one 2⁴-node lut8 (A2B0): `lab` gives each corner (each
    ink 0 or 1) its L*a*b*, interpolated between. No such profile ships with the system or Pillow."""
    clut = b"".join(
        bytes([round(L * 255 / 100), round(a + 128), round(b + 128)])
        for L, a, b in (lab((c, m, y, k)) for c in (0, 1) for m in (0, 1) for y in (0, 1) for k in (0, 1))
    )
    identity = b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    ramp = bytes(range(256))
    a2b0 = b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + identity + ramp * 4 + clut + ramp * 3
    text = b"synthetic CMYK\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8 + 3 + 67)
    d50 = _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    tags = [
        (b"desc", desc),
        (b"wtpt", b"XYZ " + bytes(4) + d50),
        (b"cprt", b"text" + bytes(4) + b"none\0"),
        (b"A2B0", a2b0),
    ]
    start = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, payload in tags:
        body += bytes(-(start + len(body)) % 4)  # each tag on a 4-byte boundary
        table += signature + struct.pack(">II", start + len(body), len(payload))
        body += payload
    header = struct.pack(">I", start + len(body)) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"prtrCMYKLab "
    header += bytes(12) + b"acsp" + bytes(28) + d50 + bytes(48)
    return header + struct.pack(">I", len(tags)) + table + body


def _inks(node: tuple[int, int, int, int]) -> tuple[float, float, float]:
    """Rough printing inks: cyan L*55 a*-37 b*-50, not the (0, 255, 255) of an ideal ink."""
    c, m, y, k = node
    if k:
        return 15.0, 0.0, 0.0
    a, b = np.clip([-37 * c + 74 * m - 5 * y, -50 * c - 3 * m + 93 * y], -120, 120)
    return max(5.0, 100 - 45 * c - 52 * m - 11 * y), float(a), float(b)


def _lab_in_srgb(lab: tuple[float, float, float]) -> np.ndarray:
    """One L*a*b* colour in sRGB, by Pillow's built-in Lab profile (not the profile under test)."""
    L, a, b = lab
    pixel = Image.new("LAB", (1, 1), (round(L * 255 / 100), round(a + 128), round(b + 128)))
    srgb = ImageCms.createProfile("sRGB")
    return np.asarray(ImageCms.profileToProfile(pixel, ImageCms.createProfile("LAB"), srgb, outputMode="RGB"))[0, 0]


def test_a_cmyk_jpeg_is_read_through_its_embedded_cmyk_profile() -> None:
    cyan = Image.new("CMYK", (40, 40), (255, 0, 0, 0))
    buffer = io.BytesIO()
    cyan.save(buffer, "JPEG", icc_profile=_cmyk_profile(_inks), quality=95)
    read = read_image(buffer.getvalue(), "print.jpg")
    assert read.warnings == []
    pixel = np.asarray(read.image, dtype=int)[20, 20]
    expected = _lab_in_srgb(_inks((1, 0, 0, 0))).astype(int)
    assert np.abs(pixel - expected).max() <= 8, (pixel, expected)  # the plain conversion gives (0, 255, 255)


@pytest.mark.parametrize("profile", [b"not a profile at all", "srgb"])
def test_a_cmyk_jpeg_with_an_unusable_profile_is_converted_plainly_with_a_note(profile: bytes | str) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes() if profile == "srgb" else profile
    cyan = Image.new("CMYK", (40, 40), (255, 0, 0, 0))
    buffer = io.BytesIO()
    cyan.save(buffer, "JPEG", icc_profile=icc, quality=95)
    read = read_image(buffer.getvalue(), "print.jpg")
    pixel = np.asarray(read.image, dtype=int)[20, 20]
    assert np.abs(pixel - np.asarray(cyan.convert("RGB"))[20, 20]).max() <= 8
    assert len(read.warnings) == 1 and read.warnings[0].startswith("print.jpg: its embedded CMYK colour profile")


# -------------------------------------------------------------------- each file read once per Training render
def _count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, key: Callable[..., str]) -> Counter:
    """Calls of `owner.name`, counted by `key` of their arguments (the file each one reads)."""
    counts: Counter = Counter()
    real = getattr(owner, name)

    def counted(*args: object, **kwargs: object) -> object:
        counts[key(*args, **kwargs)] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return counts


def test_the_training_page_lists_the_runs_once(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The start-from, teacher and ensemble lists and the Runs table each listed the runs folder afresh: every
    run's config, metrics and log read four times per render."""
    runs = Path(os.environ["DERMAI_RUNS"])
    for name in ("a", "b"):
        copy_tiny_run(app_env, runs / name)
    rows = _count_calls(monkeypatch, run_table, "run_row", lambda run, *_: Path(run).name)
    at = page("training").run()
    assert_clean(at)
    assert rows == {"a": 1, "b": 1}
    assert {"a (finetune", "b (finetune"} <= {o.split(",")[0] for o in at.selectbox(key="start_from").options}


def test_the_weights_lists_read_each_runs_json_once(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sidebar's Weights list and the Evaluation page's comparison list (`weight_choices`, then
    `same_split_choices`) each read every run's weights JSON: now once, through the pages' cache."""
    runs = Path(os.environ["DERMAI_RUNS"])
    for name in ("a", "b"):
        copy_tiny_run(app_env, runs / name)
    reads = _count_calls(monkeypatch, Path, "read_bytes", lambda path: str(path))
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/evaluation.py").run()
    assert_clean(at)
    assert {p: n for p, n in reads.items() if p.startswith(str(runs))} == {
        str(runs / "a" / "model.json"): 1,
        str(runs / "b" / "model.json"): 1,
    }
    assert set(at.selectbox(key="cmp_other").options) >= {"a (finished)", "b (finished)"}


def test_starting_from_weights_reads_the_metadata_csv_once(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data folder's check and the start-from weights' split check each read the metadata CSV."""
    if not (HAM / "HAM10000_metadata.csv").exists():
        pytest.skip(f"HAM10000 copy not found at {HAM}")
    weights = tiny_weights(tmp_path_factory.getbasetemp())  # fine-tuned on HAM's first 64 images, default seed
    reads = _count_calls(monkeypatch, pd, "read_csv", lambda path, *_, **__: str(path))
    monkeypatch.setattr(jobs, "_launch", lambda stage, run_dir, command, runs: (command, runs))  # checked only
    options = {"data": str(HAM), "limit": 64, "init_weights": str(weights)}
    command, runs = jobs.start_job("finetune", options, tmp_path / "runs")
    assert str(weights) in command and runs == tmp_path / "runs"
    assert reads == {str(HAM / "HAM10000_metadata.csv"): 1}


# ------------------------------------------------------------------------------------ a decompression bomb
def _jpeg_claiming(width: int, height: int) -> bytes:
    """A tiny valid JPEG whose frame header (SOF0) claims another size: over Pillow's own bomb limit (about
    179 MP), Image.open refuses it before anything else reads its size."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 80, 60)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")  # marker, length, precision, then height and width
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


SAID = "huge.jpg: 20000×10000 pixels (200 MP) is more than the 50 MP this app reads"


def test_a_jpeg_over_pillows_bomb_limit_is_refused_naming_its_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dermai.cli import main
    from dermai.intake import IntakeError

    with pytest.raises(IntakeError, match=f"^{re.escape(SAID)}"):
        read_image(_jpeg_claiming(20000, 10000), "huge.jpg")
    huge = tmp_path / "huge.jpg"
    huge.write_bytes(_jpeg_claiming(20000, 10000))
    assert main(["predict", str(huge)]) != 0
    assert f"error: {tmp_path}/{SAID}" in capsys.readouterr().err


def test_the_predict_page_names_a_bombs_size(app_env: Path) -> None:
    at = page("predict").run()
    at.file_uploader[0].upload("huge.jpg", _jpeg_claiming(20000, 10000), "image/jpeg")
    at.run()
    assert_clean(at)
    assert [e.value for e in at.error][0].startswith(f"Cannot analyse this file: {SAID}")
