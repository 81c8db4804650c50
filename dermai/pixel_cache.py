"""Images and lesion masks decoded once into uint8 memmaps on disk ($DERMAI_CACHE, bounded by $DERMAI_CACHE_GB)
that training and evaluation read instead of JPEGs, and the one reader of lesion-mask files. Apart from `data`,
which only finds a folder's files: decoding, caching and pruning are a job of their own.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dermai.data import DataError, Dataset
from dermai.intake import IntakeError, orientation_transpose, read_image
from dermai.preprocess import InputSize, input_frame, landscape, resize_input
from dermai.safe_write import WRITE_FAILURES, WriteFailure, atomic_leftover, atomic_target, dead_writer


class PreparationStopped(Exception):
    """Raised when the caller's `should_stop` says so while images are decoded into a cache: a run asked to
    stop (its STOP file) before it trained ends then, not only after the minutes a first decode takes."""


StopCheck = Callable[[], bool]


def stop_if_asked(should_stop: StopCheck | None, why: str) -> None:
    """PreparationStopped (saying `why`) when `should_stop` says so: between two images of a decode, or two
    preparation steps of a trainer."""
    if should_stop is not None and should_stop():
        raise PreparationStopped(why)


CACHE_LIMIT_GB = 8.0  # default bound on the pixel cache ($DERMAI_CACHE_GB): a few image sizes of HAM10000

CACHE_FILE_PREFIXES = ("pixels-", "masks-")

# A cache temporary untouched this long was left by a writer killed outright (SIGKILL, out of memory): a live
# decode writes to its file every few seconds and ends within the hour, so a younger one may be in use (unless
# its name says its writer is gone: `dead_writer`).
ABANDONED_TEMPORARY_SECONDS = 24 * 3600


def cache_limit_bytes() -> int:
    """The pixel cache's bound in bytes: $DERMAI_CACHE_GB, else CACHE_LIMIT_GB; a DataError naming the variable
    when it is not a number ≥ 0."""
    text = os.environ.get("DERMAI_CACHE_GB", "").strip()
    try:
        limit = float(text) if text else CACHE_LIMIT_GB
    except ValueError:
        limit = -1.0
    if not limit >= 0:  # also NaN
        raise DataError(f"DERMAI_CACHE_GB={text!r}: give the pixel cache's size bound in GB, a number ≥ 0")
    return int(limit * 1e9)


def prune_cache(folder: Path, keep: Path, limit: int) -> list[Path]:
    """Delete the least recently used cache files in `folder` (never `keep`, the one just used) until the rest
    take at most `limit` bytes, so caches at many image sizes or subsets cannot fill the disk; the deleted
    files. A process still reading a deleted file keeps its memory map (the data goes when it closes it).
    Temporaries abandoned by a killed writer go first, whatever the bound (`abandoned_cache_temporaries`)."""
    removed = []
    for path in abandoned_cache_temporaries(folder):
        with suppress(OSError):  # removed meanwhile, or a read-only cache
            path.unlink()
            removed.append(path)
    files = []
    for path in folder.glob("*.npy"):
        if path.name.startswith(CACHE_FILE_PREFIXES) and path != keep:
            try:
                stat = path.stat()
            except OSError:  # removed meanwhile
                continue
            files.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in files) + (keep.stat().st_size if keep.exists() else 0)
    for _, size, path in sorted(files):  # oldest use first
        if total <= limit:
            break
        try:
            path.unlink()
        except OSError:
            continue
        total -= size
        removed.append(path)
    return removed


def abandoned_cache_temporaries(folder: Path, now: float | None = None) -> list[Path]:
    """The cache's write temporaries (".pixels-….npy.PID@HOST.XXXX.tmp", hundreds of MB each) that a process
    killed outright left behind: no clean-up ran. One another process is writing right now must never be
    deleted: a temporary whose writer is gone from this host (`dead_writer`) is abandoned at once, so a decode
    killed and rerun does not leave it for a day; any other (another host's, an older version's name) only once
    untouched for `ABANDONED_TEMPORARY_SECONDS`."""
    cutoff = (time.time() if now is None else now) - ABANDONED_TEMPORARY_SECONDS
    found = []
    for path in folder.glob(".*.tmp"):
        if not (atomic_leftover(path.name) and path.name[1:].startswith(CACHE_FILE_PREFIXES)):
            continue
        with suppress(OSError):  # removed meanwhile: its writer finished
            if dead_writer(path.name) or path.stat().st_mtime < cutoff:
                found.append(path)
    return found


def default_cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Caches live outside the data folder, which may be read-only."""
    if explicit:
        return Path(explicit)
    if os.environ.get("DERMAI_CACHE"):
        return Path(os.environ["DERMAI_CACHE"])
    return Path.home() / ".cache" / "dermai"


def _size_tag(size: InputSize) -> str:
    """A cache file's size tag: '96' for a square input (the tag every cache had before non-square inputs),
    '120x160' (height x width) for another."""
    height, width = input_frame(size)
    return str(height) if height == width else f"{height}x{width}"


def cache_key(paths: Iterable[str], size: InputSize) -> str:
    """Changes whenever an image is added, removed, reordered or modified, or the size changes."""
    # v2: decoded by intake.read_image; v3: portrait turned; v4: 16-bit/float rescaled by value, ICC to sRGB;
    # v5: an alpha channel that is 0 everywhere read as unused, not as hiding the picture; v6: CMYK through its
    # embedded CMYK profile
    digest = hashlib.sha256(f"v6:{_size_tag(size)}".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"|{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def decode_image(path: str, size: InputSize) -> np.ndarray:
    """One image file → (H, W, 3) uint8 in the input frame `size`, or a DataError naming the file.

    Decoded by `intake.read_image`, as a prediction's upload is (EXIF orientation applied, transparency on
    white, 16-bit scaled, oversized files refused), so training and evaluation see what prediction sees."""
    try:
        return resize_input(read_image(path, name=path).image, size)
    except IntakeError as exc:  # its message starts with the name given, here the path
        raise DataError(f"{path}: unreadable image ({str(exc).removeprefix(f'{path}: ')})") from exc


def _open_cache(target: Path) -> np.ndarray | None:
    """A cache file as a read-only memmap, or None when it cannot be read as one (truncated by a full disk or
    a crash, overwritten, not an array): the file is removed, with a note on stderr naming it, so that the
    caller decodes the images again. The cache is derived data; a damaged file must cost time, never a run."""
    try:
        return np.load(target, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        reason = str(exc).split(". ")[0]  # numpy's advice about allow_pickle does not apply to a cache
        print(f"note: cache file {target} is unreadable ({reason}); decoding the images again", file=sys.stderr)
        with suppress(OSError):  # a read-only cache: the rewrite names the place when it cannot write
            target.unlink()
        return None


def _allocate(path: Path) -> None:
    """Give the (sparse) cache file its disk blocks before it is written through a memory map: a map written
    past the free space kills the process with SIGBUS (no message, its temporary left behind), where this
    fails with ENOSPC. A file system that cannot allocate ahead (EOPNOTSUPP, EINVAL) is written as before."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno in WRITE_FAILURES:
            raise
    finally:
        os.close(fd)


@contextmanager
def _cache_write(target: Path) -> Iterator[Path]:
    """`atomic_target` for a cache file, whose write failure also says where the cache is chosen: the user
    did not name this file, and may not know where it goes."""
    try:
        with atomic_target(target) as tmp:
            yield tmp
    except WriteFailure as exc:
        failure = WriteFailure(f"{exc}; it is the pixel cache, whose folder $DERMAI_CACHE (or --cache-dir) sets")
        failure.errno = exc.errno
        raise failure from None


def _cached_decode(
    paths: Sequence[str],
    shape: tuple[int, ...],
    decode: Callable[[str], np.ndarray],
    target: Path,
    workers: int,
    should_stop: StopCheck | None = None,
) -> np.ndarray:
    """Every file decoded into one read-only (N, *shape) uint8 memmap at `target`, written once (to a temp
    file, then renamed, so an interrupted decode never leaves a half-written cache). A hit marks the file as
    used now; a new file first makes room under the cache's bound (`prune_cache`). The bound is read first, so
    a bad $DERMAI_CACHE_GB is named by every run that uses the cache, not only by one that writes to it.
    `should_stop` is asked before each image is stored: True ends the decode with PreparationStopped, its
    temporary removed."""
    limit = cache_limit_bytes()
    if target.exists():
        cached = _open_cache(target)
        if cached is not None and cached.shape == (len(paths), *shape) and cached.dtype == np.uint8:
            with suppress(OSError):  # a read-only cache still serves; it only cannot record the use
                os.utime(target)
            return cached
    if target.parent.is_dir():
        prune_cache(target.parent, target, max(0, limit - len(paths) * int(np.prod(shape))))
    with _cache_write(target) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), *shape))
        _allocate(tmp)
        pool = ThreadPoolExecutor(max_workers=max(1, workers))
        try:
            for i, pixels in enumerate(pool.map(decode, paths)):
                stop_if_asked(should_stop, f"{target}: stopped after {i} of {len(paths)} images")
                out[i] = pixels
        finally:  # on an error or an interrupt, drop the images not yet decoded rather than wait for them all
            pool.shutdown(wait=True, cancel_futures=True)
        out.flush()
        del out
    return np.load(target, mmap_mode="r")


def load_pixels(
    paths: Sequence[str],
    size: InputSize,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int = 2,
    should_stop: StopCheck | None = None,
) -> np.ndarray:
    """All images as a read-only (N, H, W, 3) uint8 memmap in the input frame `size` (an int: a square),
    decoded once and cached on disk; `should_stop` may end a first decode early (`_cached_decode`).

    The cache file is keyed by the image files and the size, so changed data gets a new key.
    """
    folder = default_cache_dir(cache_dir)
    target = folder / f"pixels-{cache_key(paths, size)}-{_size_tag(size)}px.npy"
    return _cached_decode(paths, (*input_frame(size), 3), lambda p: decode_image(p, size), target, workers, should_stop)


MASK_FOLDER = "masks"  # HAM10000 / ISIC 2018 task 1 layout: <data>/masks/<image_id>_segmentation.png


def lesion_mask_file(root: str | os.PathLike[str], image_id: str) -> Path:
    """Where an image's lesion mask lives (whether or not it exists)."""
    return Path(root) / MASK_FOLDER / f"{image_id}_segmentation.png"


def read_mask(mask: str | os.PathLike[str], image: str | os.PathLike[str]) -> Image.Image:
    """A lesion-mask file as a grey ('L') image in the frame its image is read in, or a DataError naming the file.
    Every reader of masks (training's cache, the Dataset page's overlay, the Augmentation lab, saliency
    plausibility) comes here, so a mask lines up with its image wherever it is used.

    `intake.read_image` applies the image's EXIF orientation (a phone photo stored sideways with orientation 6);
    a mask is a bare pixel map, read as stored. The rule, by size:

    - the image has no EXIF orientation (or 1, as every HAM10000 image): the mask as stored, whatever its size
      (callers resize it onto the image);
    - the mask is the size of the image as stored: it was drawn on the stored pixels and gets the image's turn
      or flip (so does a square image's, or a flipped one's, whose stored and displayed sizes are the same);
    - the mask is the size of the image as displayed (turned a quarter): it is already upright, used as it is;
    - any other size: which way it was drawn cannot be told, so it is refused, naming both files and sizes.
    """
    try:
        with Image.open(mask) as opened:
            grey = opened.convert("L")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{mask}: unreadable lesion mask ({exc})") from exc
    try:
        with Image.open(image) as opened:  # the header: its size and EXIF, as `read_image` reads them
            stored = opened.size
            orientation, transpose = orientation_transpose(opened)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{mask}: its image {image} is unreadable ({exc})") from exc
    if transpose is None or grey.size == stored:
        return grey if transpose is None else grey.transpose(transpose)
    shown = stored[::-1] if orientation >= 5 else stored  # 5-8 turn a quarter, 2-4 flip in place
    if grey.size == shown:
        return grey
    raise DataError(
        f"{mask}: the lesion mask is {_px(grey.size)} but its image {image} is stored {_px(stored)} and shown "
        f"{_px(shown)} (EXIF orientation {orientation}), so which way the mask lies cannot be told: save the mask "
        "at the image's stored or shown size"
    )


def _px(size: tuple[int, int]) -> str:
    return f"{size[0]}×{size[1]} px"


def decode_mask(path: str, image: str, size: InputSize) -> np.ndarray:
    """One lesion-mask file → (H, W) uint8 (255 = lesion) in the input frame `size`, oriented (`read_mask`),
    turned and resized as its image is, or a DataError naming the file."""
    height, width = input_frame(size)
    grey = landscape(read_mask(path, image))
    if grey.size != (width, height):
        grey = grey.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(grey, dtype=np.uint8).copy()


def load_masks(
    dataset: Dataset,
    size: InputSize,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int = 2,
    should_stop: StopCheck | None = None,
) -> np.ndarray:
    """Every image's lesion mask as a read-only (N, H, W) uint8 memmap in `dataset.meta`'s row order,
    cached like the pixels (`should_stop` as there). A missing mask is a DataError naming it (and how many
    more are missing)."""
    paths = [str(lesion_mask_file(dataset.root, i)) for i in dataset.meta["image_id"]]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise DataError(
            f"{missing[0]}: lesion mask not found ({len(missing)} of {len(paths)} images have none; masks are "
            f"read from <data>/{MASK_FOLDER}/<image_id>_segmentation.png)"
        )
    images = dict(zip(paths, map(str, dataset.meta["path"]), strict=True))
    folder = default_cache_dir(cache_dir)
    # keyed by the images too: their EXIF orientation turns the masks (`read_mask`)
    target = folder / f"masks-{cache_key([*paths, *images.values()], size)}-{_size_tag(size)}px.npy"
    return _cached_decode(
        paths, input_frame(size), lambda p: decode_mask(p, images[p], size), target, workers, should_stop
    )
