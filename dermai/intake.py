"""Robust image intake: whatever a user uploads becomes an RGB PIL image (in sRGB, when it carries a colour
profile), or one `IntakeError` with a plain message. Pillow raises many exception types on damaged or hostile
input, so decoding is wrapped broadly here and nowhere else has to.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, NamedTuple

import numpy as np
from PIL import Image, ImageCms, ImageOps

MAX_BYTES = 25 * 1024 * 1024  # larger uploads are refused before decoding
MAX_PIXELS = 50_000_000  # decompression-bomb guard, checked from the header before decoding (a JPEG: `_reduce`)
MIN_SIDE = 32  # smaller images are read, but graded as ungradable (`dermai.predict`): upscaling leaves no detail
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))  # what uploads are converted to (`to_srgb`)
READ_FORMATS = "JPEG, PNG, BMP, TIFF or WEBP"  # what this app reads, as said to a user (Pillow reads a few more)
# The file names of those formats (compared lower-cased): what a data folder is indexed by and a worklist folder
# lists, one list so that neither skips a file the other, or an upload, would read.
READ_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
# ISO-BMFF brands (bytes 8-12 after "ftyp") of HEIF photos: an iPhone's default format, which Pillow cannot decode.
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
# Formats people upload by mistake, known by their extension when their bytes say nothing (see `_known_format`).
_EXTENSIONS = {".heic": "HEIC", ".heif": "HEIC", ".pdf": "PDF", ".dcm": "DICOM", ".dicom": "DICOM"}


# EXIF orientation (tag 0x0112) → the transpose that shows the stored pixels upright, as ImageOps.exif_transpose
# applies it in `read_image`; lesion masks drawn on the stored pixels get the same one (`pixel_cache.read_mask`).
EXIF_ORIENTATION = 0x0112
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def orientation_transpose(image: Image.Image) -> tuple[int, Image.Transpose | None]:
    """An opened image's EXIF orientation and the transpose `read_image` gives its pixels for it (None for 1,
    a missing tag or a value outside 1-8, which `read_image` leaves as stored too)."""
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    return orientation, _ORIENTATION_TRANSPOSE.get(orientation)


class IntakeError(ValueError):
    """An upload that cannot be used; the message names it and says why in plain words."""


@dataclass
class IntakeResult:
    """The decoded RGB image (EXIF orientation applied) and what was noticed on the way."""

    image: Image.Image
    warnings: list[str] = field(default_factory=list)
    original_size: tuple[int, int] = (0, 0)  # (width, height) as displayed, after EXIF orientation
    format: str | None = None


def _read_bytes(source: bytes | str | os.PathLike[str] | BinaryIO, name: str) -> bytes:
    """The upload's bytes, refusing oversized files without reading them whole."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, str | os.PathLike):
        try:
            if os.path.getsize(source) > MAX_BYTES:
                raise IntakeError(f"{name}: file is larger than {MAX_BYTES // 2**20} MB")
            with open(source, "rb") as handle:
                data = handle.read()
        except IntakeError:
            raise
        except FileNotFoundError as exc:
            raise IntakeError(f"{name}: file not found") from exc
        except OSError as exc:
            raise IntakeError(f"{name}: cannot be read ({exc.strerror or exc})") from exc
    else:
        data = source.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise IntakeError(f"{name}: file is larger than {MAX_BYTES // 2**20} MB")
    if not data:
        raise IntakeError(f"{name}: file is empty")
    return data


def _known_format(data: bytes, name: str) -> str | None:
    """The name of a format people upload that this app does not read (an iPhone's HEIC photo, a PDF, a DICOM
    file, a video), from its first bytes or else its name's extension; None when it is not one of those. A
    plain "not an image" would leave an iPhone user wondering what is wrong with their photo."""
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        return "HEIC" if brand in _HEIF_BRANDS else "AVIF" if brand in (b"avif", b"avis") else "a video (MP4, MOV)"
    if data.startswith(b"%PDF"):
        return "PDF"
    if data[128:132] == b"DICM":
        return "DICOM"
    return _EXTENSIONS.get(os.path.splitext(name)[1].lower())


# The first bytes of formats this app reads (`READ_FORMATS`) whose variants Pillow may not decode.
_SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


def _claimed_format(data: bytes) -> str | None:
    """The format of `READ_FORMATS` the bytes start as, or None. A file that starts as one and still cannot
    be opened is a damaged copy or a variant Pillow does not decode (a TIFF of floating-point colour), and
    "not an image file this app can read (it reads … TIFF …)" would contradict itself."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for signature, fmt in _SIGNATURES.items() if data.startswith(signature)), None)


def _unreadable(data: bytes | None, name: str) -> IntakeError:
    """The error for bytes Pillow cannot identify: the format named when known, and what to do instead."""
    claimed = _claimed_format(data or b"")
    if claimed is not None:
        return IntakeError(
            f"{name}: damaged or incomplete {claimed} file, or a kind of {claimed} this app cannot decode (such as "
            "floating-point colour): save it again as an 8-bit JPEG or PNG"
        )
    fmt = _known_format(data or b"", name)
    if fmt is None:
        return IntakeError(f"{name}: not an image file this app can read (it reads {READ_FORMATS})")
    return IntakeError(f"{name}: {fmt} is not supported; export it as JPEG or PNG")


def _finite(pixels: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The pixels with NaN and -inf set to the smallest finite value and +inf to the largest, and those two
    values. Left in, one NaN makes the minimum and maximum NaN and the whole image black."""
    finite = np.isfinite(pixels)
    if not finite.any():
        return np.zeros_like(pixels), 0.0, 0.0
    lo, hi = float(pixels[finite].min()), float(pixels[finite].max())
    return np.where(finite, pixels, np.where(pixels > 0, hi, lo)), lo, hi


def _scale_to_uint8(image: Image.Image) -> Image.Image:
    """Grayscale wider than 8 bits ('I;16*', 'I', 'F') → 8-bit 'L', scaled rather than clipped as Pillow's
    convert would. One rule whatever the container, from the values alone:

    - integer data (every 'I' mode) within 0-255 is kept (8-bit data stored wide); within 0-65535 it is
      16-bit data, divided by 257;
    - float data ('F') within 0-1 is multiplied by 255 (the usual float convention); within 0-255 kept;
    - anything else (negative values, beyond 16 bits) is stretched from its own minimum and maximum.

    Float data may hold NaN (a masked-out pixel) or ±inf (`_finite`): the rule reads the finite values only.
    """
    pixels, lo, hi = _finite(np.asarray(image, dtype=np.float64))
    if image.mode == "F" and lo >= 0 and hi <= 1:
        pixels = pixels * 255.0
    elif image.mode != "F" and lo >= 0 and 255 < hi <= 65535:
        pixels = pixels / 257.0
    elif not (lo >= 0 and hi <= 255):
        pixels = (pixels - lo) / (hi - lo or 1.0) * 255.0
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")


def to_srgb(image: Image.Image, name: str = "image") -> tuple[Image.Image, str | None]:
    """An RGB image tagged with an embedded ICC profile (a phone's Display P3, a camera's Adobe RGB) converted
    to sRGB, and a note when its profile cannot be applied. The model learned on untagged images read as sRGB
    (none of HAM10000's 10015 carries a profile; training decodes through `read_image` too), so a tagged photo
    read as raw numbers would show the model other colours than the user sees. A CMYK image (a JPEG from a
    print workflow) with its CMYK profile becomes RGB through that profile (`_cmyk_to_srgb`): Pillow's plain
    CMYK→RGB ignores the inks' real colours. Untagged images, and profiles of other colour spaces (gray), are
    left untouched; RGBA keeps its alpha, a palette image becomes RGB or RGBA first."""
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "RGBA", "P", "CMYK"):
        return image, None
    if image.mode == "CMYK":
        return _cmyk_to_srgb(image, icc, name)
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if source.profile.xcolor_space.strip() != "RGB":
            return image, None
        if image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        converted = ImageCms.profileToProfile(image, source, _SRGB, outputMode=image.mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        detail = " ".join(str(exc).split())
        return image, f"{name}: its embedded colour profile cannot be used ({detail}); its colours were read as sRGB"
    return converted, None


def _cmyk_to_srgb(image: Image.Image, icc: bytes, name: str) -> tuple[Image.Image, str | None]:
    """A CMYK image converted to sRGB through its embedded CMYK profile; when that profile cannot be used (damaged,
    or of another colour space), Pillow's plain conversion, which takes the inks as ideal, and a note saying so."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = source.profile.xcolor_space.strip()
        if space != "CMYK":
            raise ValueError(f"it is a {space} profile on CMYK pixels")
        return ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB"), None
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        detail = " ".join(str(exc).split())
        return image.convert("RGB"), (
            f"{name}: its embedded CMYK colour profile cannot be used ({detail}); its colours were converted from "
            "CMYK without it and may be off: save it as an RGB JPEG or PNG"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode → RGB; transparency is composited on white (how an uploaded cut-out is seen)."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _scale_to_uint8(image)
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _unused_alpha(image: Image.Image) -> Image.Image | None:
    """The image without its alpha channel when that is 0 everywhere, else None. Such an alpha hides every pixel,
    so it carries no cut-out: it is a channel the writing software left unused (a 32-bit BMP's fourth byte), and
    browsers read such a BMP as opaque. Composited on white it would turn the lesion into a blank image."""
    if image.mode not in ("RGBA", "LA") or image.getchannel("A").getextrema() != (0, 0):
        return None
    return image.convert(image.mode[:-1])


def _transparent_share(image: Image.Image) -> float:
    """The share of pixels that are not fully opaque (0 for an image without transparency)."""
    if not (image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)):
        return 0.0
    alpha = np.asarray(image.convert("RGBA").getchannel("A"))
    return float((alpha < 255).mean())


def _share(fraction: float) -> str:
    """A share as a user reads it: "under 1%" for a few pixels, which "0%" would deny."""
    return "under 1%" if 0 < fraction < 0.005 else f"{fraction:.0%}"


def _reduce(image: Image.Image) -> None:
    """Have a JPEG over MAX_PIXELS (a 108 MP phone photo) decode at the first of 1/2, 1/4 or 1/8 of its size
    that is within it: libjpeg scales while decoding, so the full-size pixels are never in memory, and the
    model looks at about 120 px anyway. Other formats, and an already decoded image, are left as they are."""
    width, height = image.size
    if width * height <= MAX_PIXELS or image.format not in ("JPEG", "MPO"):
        return
    scale = next((k for k in (2, 4, 8) if math.ceil(width / k) * math.ceil(height / k) <= MAX_PIXELS), 8)
    image.draft(image.mode, (math.ceil(width / scale), math.ceil(height / scale)))


def _too_many_pixels(name: str, width: int, height: int) -> IntakeError:
    """The refusal of an image over MAX_PIXELS, naming its size in pixels and megapixels."""
    return IntakeError(
        f"{name}: {width}×{height} pixels ({width * height / 1e6:.0f} MP) is more than the "
        f"{MAX_PIXELS // 10**6} MP this app reads (a guard against decompression bombs): save a smaller "
        "copy; the model looks at about 120 px anyway"
    )


def _header_size(data: bytes | None) -> tuple[int, int] | None:
    """The (width, height) a file's header claims, read by the format's own Pillow plugin, as Image.open does
    but without its decompression-bomb check: over about 179 MP that check refuses the file before its size
    is known, and the refusal should still say how big it is. None when no plugin reads the header."""
    if not data:
        return None
    Image.init()
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        if accept is not None and not accept(data[:16]):
            continue
        try:
            with factory(io.BytesIO(data)) as image:  # the header only: no pixel is decoded
                return image.size
        except Exception:  # not this format (each plugin raises its own kind): try the next
            continue
    return None


class _Decoded(NamedTuple):
    image: Image.Image
    format: str | None
    frames: int  # how many frames or pages the file holds (the first is read)
    damaged: str | None  # what Pillow warned of while decoding (damaged EXIF, skipped tags), in one line


def _from_pillow(caught: warnings.WarningMessage) -> bool:
    """Whether a warning recorded while decoding is Pillow's own, about the file (another thread's, caught by
    the same process-wide recorder, is not this image's)."""
    return issubclass(caught.category, UserWarning) and f"{os.sep}PIL{os.sep}" in caught.filename


_WARNINGS_LOCK = threading.Lock()  # warnings.catch_warnings swaps process-wide state: one thread at a time


@contextlib.contextmanager
def _pillow_warnings(found: list[str]) -> Iterator[None]:
    """Pillow's warnings inside the block added to `found`, one line each, rather than printed: on a terminal
    they read as a traceback's lines. catch_warnings swaps process-wide state, and the pixel cache decodes in
    several threads (overlapping blocks left the filters changed and lost the notes), so one block at a time:
    `_decode` keeps them to header parsing and orientation, and decodes the pixels outside."""
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Pillow's warning (above ~89 MP) comes before the size is known; MAX_PIXELS, lower, refuses naming it.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            yield
        finally:
            found += [" ".join(str(w.message).split()) for w in caught if _from_pillow(w)]


def _decode(data: bytes | None, image: Image.Image | None, name: str) -> _Decoded:
    """Open (header only), check the pixel count, then force a full decode (of the first frame) and orient,
    with Pillow's warnings (damaged EXIF, skipped tags) kept for a note (`_pillow_warnings`)."""
    found: list[str] = []
    with _pillow_warnings(found):
        if image is None:
            image = Image.open(io.BytesIO(data))
        width, height = image.size
        _reduce(image)
        if image.size[0] * image.size[1] > MAX_PIXELS:
            raise _too_many_pixels(name, width, height)
        fmt, frames = image.format, int(getattr(image, "n_frames", 1))
    image.load()  # the slow part, in parallel where the caller decodes in threads
    with _pillow_warnings(found):
        image = ImageOps.exif_transpose(image)
    return _Decoded(image, fmt, frames, found[0] if found else None)


def read_image(source: bytes | str | os.PathLike[str] | BinaryIO | Image.Image, name: str = "image") -> IntakeResult:
    """Decode an upload (bytes, path, binary file object, or an already opened PIL image) to RGB.

    Raises IntakeError — and only IntakeError — for anything that is not a usable image.
    """
    data = None if isinstance(source, Image.Image) else _read_bytes(source, name)
    try:
        image, fmt, frames, damaged = _decode(data, source if isinstance(source, Image.Image) else None, name)
        if min(image.size) < 1:
            raise IntakeError(f"{name}: image has no pixels")
        opaque = _unused_alpha(image)
        image = image if opaque is None else opaque
        see_through = _transparent_share(image)
        image, profile_note = to_srgb(image, name)
        rgb = to_rgb(image)
    except IntakeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if size := _header_size(data):
            raise _too_many_pixels(name, *size) from exc
        raise IntakeError(
            f"{name}: too many pixels to decode safely (a guard against decompression bombs): save a smaller copy"
        ) from exc
    except Image.UnidentifiedImageError as exc:
        raise _unreadable(data, name) from exc
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, struct.error, …
        detail = " ".join(str(exc).split())  # one line, whatever the decoder said
        raise IntakeError(f"{name}: damaged or incomplete image ({type(exc).__name__}: {detail})") from exc
    notes = [profile_note] if profile_note else []
    if damaged:
        notes.append(
            f"{name}: part of its metadata is damaged and was skipped ({damaged}); the picture was read, but if it "
            "looks rotated, save it again from a photo viewer"
        )
    if opaque is not None:
        notes.append(
            f"{name}: its alpha (transparency) channel is 0 everywhere, which would hide the whole picture: read as "
            "opaque, as a channel its software left unused"
        )
    if frames > 1 and fmt != "MPO":  # an animation, a multi-page scan: the others would go unseen without a word
        notes.append(
            f"{name}: holds {frames} frames or pages and only the first was read: upload each image as a file "
            "of its own"
        )
    if see_through > 0:
        notes.append(
            f"{name}: {_share(see_through)} of the image is transparent or see-through and was put on white, which "
            "changes its colours and the score: upload the photo without transparency if there is one"
        )
    if min(rgb.size) < MIN_SIDE:
        notes.append(
            f"{name}: too small to grade ({rgb.size[0]}×{rgb.size[1]} px, under {MIN_SIDE} px on a side): "
            "upscaled, it holds no detail to assess"
        )
    return IntakeResult(rgb, notes, rgb.size, fmt)
