"""Unusual but real image files, as users hand them to intake (`dermai.intake.read_image`, which the CLI, the
Predictor, the Predict page, the Augmentation lab and the data loader all decode through): each becomes the
image a viewer shows, or one plain message naming the file."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermai import data, pixel_cache
from dermai.intake import IntakeError, read_image
from dermai.predict import Predictor
from dermai.ui import image_display
from dermai.ui.dataset_view import images_by_id
from dermai.worklist import image_files
from tests import test_app_pages
from tests.conftest import ham_rows, make_folder
from tests.test_app_pages import assert_clean, page
from tests.test_predict import lesion_like

app_env = test_app_pages.app_env  # the pages' fixture: data, tiny weights and an empty runs folder


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_a_float_tiff_with_nan_or_infinite_pixels_keeps_its_picture() -> None:
    values = np.linspace(0.0, 1.0, 1600, dtype=np.float32).reshape(40, 40)  # float data in 0-1, as usual
    values[0, 0], values[0, 1], values[0, 2] = np.nan, np.inf, -np.inf  # a masked-out pixel, an overflow
    out = np.asarray(read_image(encode(Image.fromarray(values, mode="F"), "TIFF"), "scan.tif").image)
    expected = np.rint(np.linspace(0.0, 1.0, 1600).reshape(40, 40) * 255)
    assert np.array_equal(out[1:, :, 0], expected[1:])  # read as the 0-1 data it is, not blacked out
    assert out[0, :3, 0].tolist() == [0, 255, 0]  # no number: the darkest; +inf the brightest, -inf the darkest


def two_frames() -> list[Image.Image]:
    """Two different frames: the first red on the left, the second red on the right."""
    first = np.zeros((40, 48, 3), np.uint8)
    first[:, :24, 0] = 255
    return [Image.fromarray(first), Image.fromarray(first[:, ::-1].copy())]


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "PNG", "WEBP"])  # an animation, a multi-page scan, an APNG
def test_a_file_of_several_frames_says_only_the_first_was_read(fmt: str) -> None:
    first, second = two_frames()
    result = read_image(encode(first, fmt, save_all=True, append_images=[second], lossless=True), "stack")
    assert np.asarray(result.image)[20, 5, 0] > 200 and np.asarray(result.image)[20, 40, 0] < 50  # the first
    assert result.warnings == [
        "stack: holds 2 frames or pages and only the first was read: upload each image as a file of its own"
    ]
    assert read_image(encode(first, fmt, lossless=True), "one").warnings == []  # one frame: nothing to say


def test_a_phone_jpeg_with_a_second_picture_inside_reads_without_a_note() -> None:
    # A multi-picture JPEG (MPO: an HDR photo's gain map, a depth map, a stereo view): its first picture is the
    # photo by the format's own definition, and phones write them routinely, so a note would only alarm.
    first, second = two_frames()
    result = read_image(encode(first, "MPO", save_all=True, append_images=[second]), "IMG_1.jpg")
    assert result.format == "MPO" and result.warnings == []
    assert np.asarray(result.image)[20, 5, 0] > 200


@pytest.mark.parametrize("ext", [".tif", ".TIFF", ".webp", ".JPG", ".PNG"])
def test_a_data_folder_of_any_format_intake_reads_is_loaded(tmp_path: Path, ext: str) -> None:
    # A data set exported as TIFF or WebP was "image 'I_akiec_0_0' not found" though the file was there: the
    # loader looked for fewer extensions than intake reads and than a worklist folder lists.
    root = make_folder(tmp_path, ham_rows(1, 1), ext=ext)
    dataset = data.load_dataset(root)
    assert [Path(p).suffix for p in dataset.meta["path"]] == [ext] * len(dataset.meta)
    assert pixel_cache.decode_image(dataset.meta["path"][0], 16).shape == (16, 16, 3)
    assert image_files([root]) == sorted(dataset.meta["path"])  # a worklist of the folder lists the same files
    first = dataset.meta["image_id"][0]
    rows, missing = images_by_id(dataset.meta, f"{first}{ext}")  # the Augmentation lab's pasted file name
    assert list(rows["image_id"]) == [first] and missing == []


def float_colour_tiff() -> bytes:
    """A minimal valid TIFF of 32-bit floating-point RGB (as scientific and microscopy software write), which
    Pillow cannot decode: 2×2 pixels in one strip, little-endian. Laid out as header, directory, the two
    three-SHORT arrays it points to (bits per sample, sample format), then the pixels."""
    pixels = np.full((2, 2, 3), 0.5, np.float32).tobytes()
    arrays = 8 + 2 + 11 * 12 + 4  # header, entry count, 11 entries, next-directory offset
    entries = [  # (tag, type: 3 SHORT or 4 LONG, count, value or offset)
        (256, 3, 1, 2),  # width
        (257, 3, 1, 2),  # height
        (258, 3, 3, arrays),  # bits per sample: 32, 32, 32
        (259, 3, 1, 1),  # no compression
        (262, 3, 1, 2),  # RGB
        (273, 4, 1, arrays + 12),  # strip offset: the pixels
        (277, 3, 1, 3),  # samples per pixel
        (278, 3, 1, 2),  # rows per strip
        (279, 4, 1, len(pixels)),  # strip byte count
        (284, 3, 1, 1),  # chunky
        (339, 3, 3, arrays + 6),  # sample format: 3 (IEEE float) each
    ]
    packed = [
        struct.pack("<HHIHH", tag, kind, count, value, 0)
        if kind == 3 and count == 1
        else struct.pack("<HHII", tag, kind, count, value)
        for tag, kind, count, value in entries
    ]
    header = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    return header + b"".join(packed) + struct.pack("<I3H3H", 0, 32, 32, 32, 3, 3, 3) + pixels


def test_a_tiff_of_a_kind_pillow_cannot_decode_is_not_called_not_an_image() -> None:
    # It was "not an image file this app can read (it reads JPEG, PNG, BMP, TIFF or WEBP)": of a TIFF.
    with pytest.raises(IntakeError) as info:
        read_image(float_colour_tiff(), "stain.tif")
    assert str(info.value) == (
        "stain.tif: damaged or incomplete TIFF file, or a kind of TIFF this app cannot decode (such as "
        "floating-point colour): save it again as an 8-bit JPEG or PNG"
    )
    with pytest.raises(IntakeError, match=r"^notes\.txt: not an image file this app can read"):
        read_image(b"just some text", "notes.txt")  # a file that claims no format: as before


def test_a_worklist_folder_lists_every_photo_a_user_would_expect_scored_or_named(tmp_path: Path, capsys) -> None:
    # A folder's GIF and an iPhone's HEIC photos were skipped without a word (a GIF named on its own is
    # scored; a HEIC named on its own is refused with what to do): now each is scored or is a row saying why.
    from dermai import cli

    folder = tmp_path / "clinic"
    folder.mkdir()
    lesion = lesion_like(0)
    lesion.save(folder / "a.jpg")
    lesion.save(folder / "b.gif")
    (folder / "IMG_0042.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    (folder / "notes.txt").write_text("not a photo")
    assert [Path(p).name for p in image_files([folder])] == ["IMG_0042.HEIC", "a.jpg", "b.gif"]
    out = tmp_path / "worklist.csv"
    assert cli.main(["predict", str(folder), "--csv", str(out)]) == 1  # one file could not be read
    table = pd.read_csv(out).set_index("image")
    heic = table.loc[str(folder / "IMG_0042.HEIC")]
    assert heic["tier"] == "unreadable" and heic["notes"].endswith("HEIC is not supported; export it as JPEG or PNG")
    assert table.loc[str(folder / "b.gif"), "tier"] != "unreadable"
    assert "IMG_0042.HEIC: HEIC is not supported" in capsys.readouterr().err


def test_a_few_see_through_pixels_are_not_called_0_percent() -> None:
    rgba = np.full((100, 100, 4), 200, np.uint8)
    rgba[..., 3] = 255
    rgba[0, :3, 3] = 0  # three pixels of 10 000: a cut-out's stray edge
    (note,) = read_image(encode(Image.fromarray(rgba), "PNG"), "edge.png").warnings
    assert note.startswith("edge.png: under 1% of the image is transparent or see-through and was put on white")
    rgba[:50, :, 3] = 0  # half: said as a share, as before
    (note,) = read_image(encode(Image.fromarray(rgba), "PNG"), "half.png").warnings
    assert note.startswith("half.png: 50% of the image is transparent")


def test_a_jpeg_over_the_pixel_limit_is_read_at_a_fraction_of_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 108 MP phone photo (12000×9000) was refused as a decompression bomb; a JPEG decodes at 1/2, 1/4 or 1/8
    # of its size without the full-size pixels ever being in memory, and the model looks at ~120 px anyway.
    from dermai import intake

    monkeypatch.setattr(intake, "MAX_PIXELS", 80 * 60)  # a 320×240 JPEG stands for one over 50 MP
    photo = lesion_like(1, (320, 240))
    result = read_image(encode(photo, "JPEG", quality=95), "phone.jpg")
    assert result.image.size == (80, 60) and result.warnings == []  # the first scale under the limit: 1/4
    shrunk = np.asarray(photo.resize((80, 60), Image.Resampling.BOX), dtype=int)
    assert np.abs(np.asarray(result.image, dtype=int) - shrunk).mean() < 10  # the same picture
    with pytest.raises(IntakeError, match=r"^photo\.png: 320×240 pixels \(0 MP\) is more than"):
        read_image(encode(photo, "PNG"), "photo.png")  # no smaller decode exists: refused, as before
    monkeypatch.setattr(intake, "MAX_PIXELS", 10)  # 1/8 is 40×30: still over, refused naming its size
    with pytest.raises(IntakeError, match=r"^phone\.jpg: 320×240 pixels .* save a smaller copy"):
        read_image(encode(photo, "JPEG"), "phone.jpg")


def test_an_image_over_pillows_bomb_warning_is_refused_naming_its_size() -> None:
    # A 95 MP PNG tripped Pillow's warning first: "too many pixels to decode safely", without the size.
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", 10000, 9500)  # the header claims 10000×9500 (CRC fixed below)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    with pytest.raises(IntakeError) as info:
        read_image(bytes(data), "scan.png")
    assert str(info.value).startswith("scan.png: 10000×9500 pixels (95 MP) is more than the 50 MP this app reads")


def bmp_with_zero_alpha(width: int = 40, height: int = 36) -> bytes:
    """A 32-bit BMP (V4 header, bit fields with an alpha mask) whose alpha bytes are all 0, as Windows software
    writes when the fourth byte is unused: every pixel (B, G, R) = (50, 100, 200)."""
    pixels = np.zeros((height, width, 4), np.uint8)
    pixels[..., :3] = (50, 100, 200)
    body = pixels.tobytes()
    header = struct.pack("<IiiHHIIiiII", 108, width, height, 1, 32, 3, len(body), 2835, 2835, 0, 0)
    masks = struct.pack("<4I", 0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000)
    dib = header + masks + b"BGRs" + b"\x00" * 48  # sRGB; no end points or gamma
    return b"BM" + struct.pack("<IHHI", 14 + len(dib) + len(body), 0, 0, 14 + len(dib)) + dib + body


def test_an_alpha_channel_that_is_zero_everywhere_is_read_as_unused(tmp_path: Path) -> None:
    # It hid the whole picture: composited on white, the lesion became a blank white image, "a single flat
    # colour". Browsers read such a BMP as opaque; an alpha that hides every pixel carries no cut-out.
    result = read_image(bmp_with_zero_alpha(), "scope.bmp")
    assert (np.asarray(result.image) == (200, 100, 50)).all()
    assert result.warnings == [
        "scope.bmp: its alpha (transparency) channel is 0 everywhere, which would hide the whole picture: read as "
        "opaque, as a channel its software left unused"
    ]
    (tmp_path / "scope.bmp").write_bytes(bmp_with_zero_alpha())  # in a data folder: trained on as predicted
    assert (pixel_cache.decode_image(str(tmp_path / "scope.bmp"), 16) == (200, 100, 50)).all()
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 1] = 180
    grey_alpha = read_image(encode(Image.fromarray(rgba[..., 1:3].copy(), mode="LA"), "PNG"), "la.png")
    assert (np.asarray(grey_alpha.image) == 180).all() and len(grey_alpha.warnings) == 1
    rgba[0, 0, 3] = 255  # one visible pixel: a real cut-out, composited on white as before
    out = read_image(encode(Image.fromarray(rgba), "PNG"), "cut.png")
    assert np.asarray(out.image)[5, 5].tolist() == [255, 255, 255] and "put on white" in out.warnings[0]


def test_the_predict_page_scores_odd_files_and_names_the_unreadable_one(app_env: Path) -> None:
    # The Predict page decodes through intake as the CLI does: an animation scored on its first frame and said
    # so, a BMP with an unused alpha scored as its picture, a TIFF it cannot decode one row saying why.
    _, second = two_frames()
    photo = lesion_like(2)
    files = [
        ("clip.gif", encode(photo, "GIF", save_all=True, append_images=[second.resize(photo.size)]), "image/gif"),
        ("scope.bmp", bmp_with_zero_alpha(), "image/bmp"),
        ("stain.tif", float_colour_tiff(), "image/tiff"),
    ]
    at = page("predict").run()
    at.file_uploader[0].set_value(files).run()
    assert_clean(at)
    table = at.dataframe[0].value.set_index("image")
    assert table.loc["stain.tif", "tier"] == "unreadable"
    assert table.loc["stain.tif", "notes"].startswith("stain.tif: damaged or incomplete TIFF file, or a kind of TIFF")
    assert table.loc["clip.gif", "notes"].startswith("clip.gif: holds 2 frames or pages and only the first was read")
    assert "alpha (transparency) channel is 0 everywhere" in table.loc["scope.bmp", "notes"]


def test_the_dataset_page_shows_a_folder_of_16_bit_and_float_tiffs(app_env: Path, tmp_path: Path) -> None:
    # The loader trains on them, but the gallery handed the files to the browser: "not a readable image
    # (OSError)" for every 16-bit or float TIFF, and a lesion mask overlaid on a clipped, all-white picture.
    root = make_folder(tmp_path / "tiffs", ham_rows(1, 1), size=(64, 48), ext=".tif")
    folder = root / "imgs" / "nested"
    ramp = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64)
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(folder / "I_akiec_0_0.tif")  # 16-bit grey
    Image.fromarray(ramp, mode="F").save(folder / "I_bcc_0_0.tif")  # float 0-1
    (root / "masks").mkdir()
    Image.new("L", (64, 48), 255).save(root / "masks" / "I_akiec_0_0_segmentation.png")
    at = page("dataset")
    at.session_state["data_dir"] = str(root)
    at.run()
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    at.selectbox(key="ds_detail").set_value("I_akiec_0_0").run()
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    overlay = image_display.mask_overlay(folder / "I_akiec_0_0.tif", root / "masks" / "I_akiec_0_0_segmentation.png")
    column = overlay[1:47, 32, 0].astype(int)  # inside the outline: the tinted ramp, dark at the top
    assert column.max() - column.min() > 100


@pytest.fixture(scope="module")
def shipped() -> Predictor:
    return Predictor.from_weights()


def test_an_image_far_from_the_trained_shape_is_said_to_be_distorted(shipped: Predictor) -> None:
    # A 5:1 strip cropped around a long lesion was squashed into the model's input without a word: a strip of
    # a real lesion scored 0.75 where its whole 4:3 photo scored 0.49.
    note = (
        "the image is 5.0:1, far from the 4:3 of the dermoscopy photos the model learned from: squashed into its "
        "input, the lesion's shape is distorted and the score is less reliable; crop around the lesion nearer 4:3"
    )
    assert note in shipped.predict(lesion_like(0, (600, 120))).warnings
    assert note in shipped.predict(lesion_like(0, (120, 600))).warnings  # portrait: the same, turned
    for ordinary in [(200, 150), (320, 180), (300, 150)]:  # 4:3, a phone's 16:9, 2:1
        assert not [w for w in shipped.predict(lesion_like(0, ordinary)).warnings if "far from the 4:3" in w]


def jpeg_with_damaged_exif() -> bytes:
    """A JPEG whose EXIF block claims five entries and holds half of one, as a crashed phone app leaves it."""
    payload = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00\x12\x01"
    plain = encode(lesion_like(3), "JPEG")
    return plain[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + plain[2:]


def test_damaged_metadata_is_a_note_not_a_python_warning_on_the_terminal() -> None:
    # Pillow's "UserWarning: Corrupt EXIF data…" went to stderr with its source line, in the CLI's output.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning that escapes intake fails the test
        result = read_image(jpeg_with_damaged_exif(), "IMG_7.jpg")
    assert result.image.size == (200, 150)
    assert result.warnings == [
        "IMG_7.jpg: part of its metadata is damaged and was skipped (Corrupt EXIF data. Expecting to read 12 "
        "bytes but only got 2.); the picture was read, but if it looks rotated, save it again from a photo viewer"
    ]


def test_decoding_in_threads_leaves_the_warning_filters_as_they_were_and_notes_every_image() -> None:
    # The pixel cache decodes in several threads: overlapping catch_warnings blocks left the process's filters
    # changed (Pillow's warnings on "always" for the rest of a run) and lost some images' notes.
    before = list(warnings.filters)
    damaged = jpeg_with_damaged_exif()
    with ThreadPoolExecutor(8) as pool:
        notes = list(pool.map(lambda i: read_image(damaged, f"IMG_{i}.jpg").warnings, range(400)))
    assert warnings.filters == before
    assert all(len(n) == 1 and "metadata is damaged" in n[0] for n in notes)
