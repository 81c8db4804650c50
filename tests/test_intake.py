"""Image intake: every format and mode becomes RGB, orientation is applied, and anything unusable — however
damaged — comes out as one IntakeError with a plain message."""

from __future__ import annotations

import io
import struct
import tomllib
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dermai.intake import MAX_BYTES, MIN_SIDE, IntakeError, IntakeResult, read_image, to_rgb


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def gradient(width: int = 48, height: int = 40) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=-1))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "TIFF", "WEBP"])
def test_common_formats_decode_to_rgb(fmt: str) -> None:
    result = read_image(encode(gradient(), fmt), "upload")
    assert isinstance(result, IntakeResult)
    assert result.image.mode == "RGB"
    assert result.image.size == result.original_size == (48, 40)
    assert result.format == fmt
    assert result.warnings == []
    # lossy formats drift a little, but the content survives
    assert np.abs(np.asarray(result.image, dtype=int) - np.asarray(gradient(), dtype=int)).mean() < 8


def test_rgba_and_la_are_composited_on_white() -> None:
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere
    rgba[:, :20, 3] = 0  # left half fully transparent
    rgba[:, 20:, 3] = 255  # right half opaque
    result = read_image(encode(Image.fromarray(rgba), "PNG"), "cut.png")
    out = np.asarray(result.image)
    assert (out[:, :20] == 255).all()  # white background shows through
    assert (out[:, 20:] == [255, 0, 0]).all()
    assert result.warnings == [  # said, since it changes the colours the model sees
        "cut.png: 50% of the image is transparent or see-through and was put on white, which changes its colours "
        "and the score: upload the photo without transparency if there is one"
    ]
    rgba[..., 3] = 255  # an alpha channel that hides nothing: nothing to say
    assert read_image(encode(Image.fromarray(rgba), "PNG")).warnings == []
    la = Image.fromarray(np.dstack([np.zeros((40, 40), np.uint8), np.full((40, 40), 128, np.uint8)]), mode="LA")
    grey = np.asarray(read_image(encode(la, "PNG")).image)
    assert np.allclose(grey, 127, atol=2)  # black at 50% alpha over white


def test_palette_with_and_without_transparency() -> None:
    palette_image = gradient().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    out = read_image(encode(palette_image, "PNG")).image
    assert out.mode == "RGB"
    assert np.array_equal(np.asarray(out), np.asarray(palette_image.convert("RGB")))
    transparent = Image.new("P", (40, 40), 0)
    transparent.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    out = np.asarray(read_image(encode(transparent, "PNG", transparency=0)).image)
    assert (out == 255).all()


def test_cmyk_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (40, 40), (0, 255, 255, 0))  # pure red in CMYK
    for fmt in ("JPEG", "TIFF"):
        out = np.asarray(read_image(encode(cmyk, fmt)).image, dtype=int)
        assert np.allclose(out[20, 20], [255, 0, 0], atol=12), fmt


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16).repeat(40, 0).repeat(10, 1)
    out = np.asarray(read_image(encode(Image.fromarray(values), "PNG")).image)
    assert out.shape == (40, 40, 3)
    assert out[0, ::10, 0].tolist() == [0, 64, 128, 255]
    assert (out[..., 0] == out[..., 2]).all()
    tiff = np.asarray(read_image(encode(Image.fromarray(values), "TIFF")).image)
    assert tiff[0, ::10, 1].tolist() == [0, 64, 128, 255]


def test_32_bit_integer_and_float_modes() -> None:
    sixteen_bit_data = Image.fromarray(np.full((40, 40), 65535, np.int32), mode="I")
    assert np.asarray(to_rgb(sixteen_bit_data)).min() == 255
    eight_bit_data = Image.fromarray(np.full((40, 40), 100, np.int32), mode="I")
    assert (np.asarray(to_rgb(eight_bit_data)) == 100).all()
    floats = Image.fromarray(np.linspace(-1.0, 1.0, 1600, dtype=np.float32).reshape(40, 40), mode="F")
    out = np.asarray(read_image(encode(floats, "TIFF")).image)
    assert out.min() == 0 and out.max() == 255


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grayscale_becomes_three_equal_channels(mode: str) -> None:
    image = gradient().convert(mode)
    out = np.asarray(read_image(encode(image, "PNG")).image)
    assert out.shape == (40, 48, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert np.array_equal(out[..., 0], np.asarray(image.convert("L")))


def test_exif_orientation_is_applied() -> None:
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = [255, 0, 0]  # left half red
    pixels[:, 20:] = [0, 0, 255]  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    result = read_image(encode(Image.fromarray(pixels), "JPEG", exif=exif.tobytes(), quality=95))
    assert result.original_size == result.image.size == (20, 40)
    out = np.asarray(result.image, dtype=int)
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 60  # the left (red) half is now on top
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 60


def test_small_image_is_accepted_with_a_warning() -> None:
    result = read_image(encode(gradient(16, 12), "PNG"), "tiny.png")
    assert result.image.size == (16, 12)
    assert len(result.warnings) == 1 and "tiny.png" in result.warnings[0] and "small" in result.warnings[0]
    assert read_image(encode(gradient(MIN_SIDE, MIN_SIDE), "PNG")).warnings == []


def png_claiming(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims another size (CRC fixed): a decompression-bomb stand-in."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize("side", [8000, 40000])  # above our 50 MP limit; above Pillow's own bomb error
def test_decompression_bomb_is_refused(side: int) -> None:
    with pytest.raises(IntakeError, match=r"bomb\.png: .*decompression bombs\): save a smaller copy"):
        read_image(png_claiming(side, side), "bomb.png")


def test_oversized_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(IntakeError, match="big.jpg: file is larger than 25 MB"):
        read_image(b"\xff" * (MAX_BYTES + 1), "big.jpg")
    sparse = tmp_path / "huge.png"
    with open(sparse, "wb") as handle:
        handle.truncate(MAX_BYTES + 1)  # sparse: refused from its size, never read
    with pytest.raises(IntakeError, match="larger than"):
        read_image(sparse, str(sparse))


def test_the_uploaders_limit_is_intakes() -> None:
    config = tomllib.loads((Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] * 2**20 == MAX_BYTES  # Streamlit's MB are MiB, as intake's are


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "file is empty"),
        (b"just some text, not an image", "not an image file"),
        (encode(gradient(), "JPEG")[:300], "damaged or incomplete"),
        (encode(gradient(), "PNG")[:60], "damaged or incomplete|not an image file"),
        (encode(gradient(), "PNG")[:40] + b"\x00" * 200, "damaged or incomplete|not an image file"),
    ],
)
def test_unusable_bytes_raise_intake_error_naming_the_upload(payload: bytes, match: str) -> None:
    with pytest.raises(IntakeError, match=match) as info:
        read_image(payload, "lesion-7.jpg")
    message = str(info.value)
    assert message.startswith("lesion-7.jpg: ") and "\n" not in message


HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64  # an iPhone photo's first bytes


@pytest.mark.parametrize(
    ("payload", "name", "message"),
    [
        (HEIC, "IMG_0042.HEIC", "IMG_0042.HEIC: HEIC is not supported; export it as JPEG or PNG"),
        (HEIC, "renamed.jpg", "renamed.jpg: HEIC is not supported; export it as JPEG or PNG"),  # bytes, not name
        (b"garbled heif body", "photo.heif", "photo.heif: HEIC is not supported; export it as JPEG or PNG"),
        (b"%PDF-1.7\n%...", "letter.pdf", "letter.pdf: PDF is not supported; export it as JPEG or PNG"),
        (b"\x00" * 128 + b"DICM" + b"\x00" * 64, "scan", "scan: DICOM is not supported; export it as JPEG or PNG"),
        (
            b"just some text",
            "notes.txt",
            "notes.txt: not an image file this app can read (it reads JPEG, PNG, BMP, TIFF or WEBP)",
        ),
    ],
)
def test_formats_this_app_does_not_read_are_named_with_what_to_do(payload: bytes, name: str, message: str) -> None:
    with pytest.raises(IntakeError) as info:
        read_image(payload, name)
    assert str(info.value) == message


def test_paths_file_objects_and_pil_images(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(encode(gradient(), "PNG"))
    for source in (path, str(path), io.BytesIO(path.read_bytes()), Image.open(path)):
        assert read_image(source).image.size == (48, 40)
    with pytest.raises(IntakeError, match="missing.png: file not found"):
        read_image(tmp_path / "missing.png", "missing.png")
    with pytest.raises(IntakeError, match="cannot be read"):
        read_image(tmp_path, "folder")
    assert IntakeError.__mro__[1] is ValueError  # the CLI maps ValueError to one `error:` line


VALID = [encode(gradient(24, 20), "PNG"), encode(gradient(24, 20), "JPEG"), encode(gradient(24, 20), "WEBP")]


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2048), mutated_images()))
def test_fuzzed_bytes_give_an_rgb_image_or_intake_error(payload: bytes) -> None:
    try:
        result = read_image(payload, "fuzz")
    except IntakeError as exc:
        assert str(exc).startswith("fuzz: ")
    else:
        assert result.image.mode == "RGB"
        assert result.image.size == result.original_size
        np.asarray(result.image)  # pixels really are there


def test_a_float_tiff_in_0_1_is_scaled_by_255_not_rounded_to_black(tmp_path: Path) -> None:
    """Float images in [0, 1] came out as {0, 1}: a black picture."""
    ramp = np.linspace(0.0, 1.0, 64, dtype=np.float32)[None, :].repeat(40, 0)
    path = tmp_path / "ramp.tif"
    Image.fromarray(ramp, mode="F").save(path)
    assert Image.open(path).mode == "F"
    out = np.asarray(read_image(path, "ramp.tif").image)
    assert out[0, :, 0].tolist() == np.rint(ramp[0] * 255).astype(int).tolist()
    assert out.max() == 255 and len(np.unique(out)) == 64


def test_16_bit_png_ramps_follow_one_rule_whatever_the_mode(tmp_path: Path) -> None:
    """A 16-bit PNG (mode I;16) was always divided by 257, even when every value fit 8 bits, while the same
    values in mode I were kept."""
    wide = np.linspace(0, 65535, 64).astype(np.uint16)[None, :].repeat(40, 0)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert Image.open(tmp_path / "wide.png").mode == "I;16"
    out = np.asarray(read_image(tmp_path / "wide.png").image)[0, :, 0]
    assert out.tolist() == np.rint(wide[0] / 257).astype(int).tolist()

    narrow = np.arange(0, 256, 4, dtype=np.uint16)[None, :].repeat(40, 0)  # 16-bit file, 8-bit values
    Image.fromarray(narrow).save(tmp_path / "narrow.png")
    assert Image.open(tmp_path / "narrow.png").mode == "I;16"
    out16 = np.asarray(read_image(tmp_path / "narrow.png").image)
    assert out16[0, :, 0].tolist() == narrow[0].tolist()
    as_i = np.asarray(read_image(Image.fromarray(narrow.astype(np.int32), mode="I")).image)
    assert np.array_equal(out16, as_i)


def _xyz_tag(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(struct.pack(">i", round(v * 65536)) for v in (x, y, z))


def linear_rgb_profile() -> bytes:
    """An ICC v2 RGB profile other than sRGB: sRGB's primaries with a linear tone curve (gamma 1), so that
    mid-gray 128 in it is sRGB's 188. Pillow can only create sRGB, LAB and XYZ profiles itself."""
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0100) + b"\0\0"  # one u8Fixed8 entry: gamma 1.0
    d50 = (0.9642, 1.0, 0.8249)
    tags = [
        (b"wtpt", _xyz_tag(*d50)),
        (b"rXYZ", _xyz_tag(0.4361, 0.2225, 0.0139)),
        (b"gXYZ", _xyz_tag(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", _xyz_tag(0.1431, 0.0606, 0.7141)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    start = 128 + 4 + 12 * len(tags)  # header, tag count, tag table
    table, data = b"", b""
    for signature, body in tags:
        table += signature + struct.pack(">II", start + len(data), len(body))
        data += body + b"\0" * (-len(body) % 4)
    header = struct.pack(">I4sI4s4s4s", start + len(data), b"none", 0x02100000, b"mntr", b"RGB ", b"XYZ ")
    header += b"\0" * 12 + b"acsp" + b"\0" * 28 + _xyz_tag(*d50)[8:] + b"\0" * 48
    return header + struct.pack(">I", len(tags)) + table + data


def test_an_image_with_a_non_srgb_profile_is_converted_to_srgb(tmp_path: Path) -> None:
    """Embedded ICC profiles were ignored: a wide-gamut or linear upload was read as if it were sRGB."""
    pixels = np.full((40, 40, 4), [128, 128, 128, 255], np.uint8)
    pixels[:, 20:, 3] = 0  # right half transparent
    Image.fromarray(pixels[..., :3]).save(tmp_path / "tagged.png", icc_profile=linear_rgb_profile())
    Image.fromarray(pixels).save(tmp_path / "tagged_alpha.png", icc_profile=linear_rgb_profile())
    Image.fromarray(pixels[..., :3]).save(tmp_path / "plain.png")

    tagged = read_image(tmp_path / "tagged.png")
    assert np.abs(np.asarray(tagged.image, int) - 188).max() <= 1 and tagged.warnings == []
    with_alpha = np.asarray(read_image(tmp_path / "tagged_alpha.png").image, int)
    assert np.abs(with_alpha[:, :20] - 188).max() <= 1 and (with_alpha[:, 20:] == 255).all()
    assert (np.asarray(read_image(tmp_path / "plain.png").image) == 128).all()  # untagged: untouched


def test_a_damaged_colour_profile_is_ignored_with_a_note(tmp_path: Path) -> None:
    Image.new("RGB", (40, 40), (128, 64, 32)).save(tmp_path / "odd.png", icc_profile=b"not a profile")
    result = read_image(tmp_path / "odd.png", "odd.png")
    assert (np.asarray(result.image)[0, 0] == [128, 64, 32]).all()
    assert len(result.warnings) == 1 and result.warnings[0].startswith("odd.png: its embedded colour profile")
