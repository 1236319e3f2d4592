"""Decoding images into RGB, and finding the ones that cannot be decoded.

:func:`open_image` is the one place where an image item (a file path or a ``uint8``
array) becomes a PIL RGB image.  Every fault (missing or empty file, not an image,
truncated data, decompression bomb, a known placeholder picture) is raised as a one-line
:class:`~transferkit.errors.DataError` naming the item's origin.

``PIL.Image.MAX_IMAGE_PIXELS`` keeps PIL's default; a ``DecompressionBombWarning`` is
turned into the same error as a ``DecompressionBombError`` inside each call only (the
global warning filters are left as they were).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ..errors import DataError
from .samples import Samples

ImageItem = Any  # a path (str / os.PathLike) or a uint8 np.ndarray

#: Size the images are drafted to by :func:`scan_images` (only JPEGs can be drafted).
SCAN_TARGET_SIZE = 256

#: Pictures that image hosts serve in place of a removed photo.  They decode fine but
#: hold no example of any class, so they are treated as bad items.  ``(size in bytes,
#: SHA-256)``; the size is compared first so that only same-sized files are hashed.
KNOWN_PLACEHOLDERS: dict[tuple[int, str], str] = {
    # Flickr's "We're sorry, this image could not be found" GIF (e.g. in hymenoptera).
    (5504, "6b4966252973c581b521f804453c6a0649ea6a2ce7e3e5c7deeb7d80623de231"):
        "a placeholder picture ('this image could not be found'), not a photo",
}
_PLACEHOLDER_SIZES = {size for size, _ in KNOWN_PLACEHOLDERS}

#: what every refusal that ``--skip-bad`` would resolve ends with
SKIP_BAD_HINT = "--skip-bad leaves unreadable images out"

_BOMB_RE = re.compile(r"\((\d+) pixels\)")
_WARNINGS_LOCK = threading.Lock()


# --------------------------------------------------------------------------- helpers

def _bomb_error(origin: str, exc: BaseException) -> DataError:
    match = _BOMB_RE.search(str(exc))
    limit = Image.MAX_IMAGE_PIXELS or 0
    if match:
        pixels = int(match.group(1))
        return DataError(f"{origin}: image has {pixels:,} pixels, over the "
                         f"decompression-bomb limit of {limit:,}")
    return DataError(f"{origin}: image is over the decompression-bomb limit of {limit:,} pixels")


def _placeholder_reason(data: bytes) -> str | None:
    if len(data) not in _PLACEHOLDER_SIZES:
        return None
    return KNOWN_PLACEHOLDERS.get((len(data), hashlib.sha256(data).hexdigest()))


def _read_file(path: str, origin: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise DataError(f"{origin}: image file not found") from None
    except IsADirectoryError:
        raise DataError(f"{origin}: is a folder, not an image file") from None
    except OSError as exc:
        raise DataError(f"{origin}: cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise DataError(f"{origin}: empty file (0 bytes)")
    return data


def _open_checked(source: Any, origin: str) -> Image.Image:
    """``Image.open`` with every opening fault turned into a DataError.

    PIL checks the pixel count (and warns about a decompression bomb) when it opens an
    image, not when it decodes it, so only this call runs with the warning turned into
    an error.  ``warnings.catch_warnings`` saves and restores the process-wide filters,
    which is not safe across threads, hence the lock: filters are always restored.
    """
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # PIL on odd TIFF / EXIF tags
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _bomb_error(origin, exc) from None
    except UnidentifiedImageError:
        raise DataError(f"{origin}: not a readable image (cannot identify image file)") from None
    except DataError:
        raise
    except Exception as exc:  # PIL raises many types on malformed headers
        raise DataError(f"{origin}: truncated or corrupt image: {_describe(exc)}") from None


def _load(image: Image.Image) -> None:
    """Decode the pixels.  PIL warns (on stderr, past the one-line rule) about odd TIFF
    tags while decoding, so TIFFs decode with warnings off; the filters are process-wide,
    hence the lock, which only TIFFs (rare) take, so other formats decode in parallel."""
    if image.format != "TIFF":
        image.load()
        return
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        image.load()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text if text else type(exc).__name__


def _array_to_image(array: np.ndarray, origin: str) -> Image.Image:
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
        dtype = getattr(array, "dtype", type(array).__name__)
        raise DataError(f"{origin}: image array must be uint8, not {dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        mode = "L"
    elif array.ndim == 3 and array.shape[2] == 3:
        mode = "RGB"
    elif array.ndim == 3 and array.shape[2] == 4:
        mode = "RGBA"
    else:
        raise DataError(f"{origin}: image array has shape {tuple(array.shape)}; expected "
                        "(H, W) or (H, W, C) with C in 1, 3, 4")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{origin}: image array is empty (shape {tuple(array.shape)})")
    return Image.fromarray(np.ascontiguousarray(array), mode=mode)


def _over_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _scale_to_uint8(values: np.ndarray, full_scale: float) -> np.ndarray:
    """Map integer or float pixel values to 0..255.

    Values already in ``0..255`` are kept; values in ``0..full_scale`` are divided by
    ``full_scale / 255`` (65535 -> 255 is a division by 257); anything else is stretched
    over its actual range.
    """
    values = values.astype(np.float64, copy=False)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = float(finite.min()), float(finite.max())
    if low >= 0 and high <= full_scale:
        scaled = values / (full_scale / 255.0)
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to ``RGB`` (alpha is composited over white)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("1", "L", "CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB")
    if mode in ("LA", "La", "RGBA", "RGBa", "PA"):
        return _over_white(image)
    if mode == "P":
        if "transparency" in image.info:
            return _over_white(image)
        return image.convert("RGB")
    if mode.startswith("I;16"):
        values = np.asarray(image)
        if values.ndim == 3:
            values = values[..., 0]
        gray = _scale_to_uint8(values, 65535.0)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "I":
        values = np.asarray(image)
        high = values.max() if values.size else 0
        full_scale = 255.0 if high <= 255 else 65535.0
        return Image.fromarray(_scale_to_uint8(values, full_scale), mode="L").convert("RGB")
    if mode == "F":
        values = np.asarray(image)
        finite = values[np.isfinite(values)]
        full_scale = 1.0 if finite.size and finite.min() >= 0 and finite.max() <= 1 else 255.0
        return Image.fromarray(_scale_to_uint8(values, full_scale), mode="L").convert("RGB")
    return image.convert("RGB")


def _apply_orientation(image: Image.Image) -> Image.Image:
    """Rotate / flip as the EXIF orientation tag says (an unreadable tag is ignored)."""
    try:  # a corrupt EXIF block makes PIL warn: it is ignored here, not printed
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        return image
    if orientation not in (2, 3, 4, 5, 6, 7, 8):
        return image
    try:
        transposed = ImageOps.exif_transpose(image)
    except Exception:
        return image
    return transposed if transposed is not None else image


# --------------------------------------------------------------------------- public

def open_image(item: ImageItem, origin: str, *, grayscale: bool = False,
               target_size: int | None = None) -> Image.Image:
    """Decode an image item into a PIL image of mode ``"RGB"``.

    Args:
        item: a file path or a ``uint8`` array ``(H, W)`` / ``(H, W, C)``, C in 1, 3, 4.
        origin: what an error message names (usually the path).
        grayscale: convert to one channel, then back to three identical channels.
        target_size: the smallest size the caller needs on the shorter side.  JPEGs are
            then decoded at a reduced scale (1/2, 1/4 or 1/8) that keeps the shorter
            side at least ``target_size``, which makes big JPEGs several times faster.

    The EXIF orientation is applied; alpha is composited over white; 16-bit and float
    images are scaled to 8 bits.

    Raises:
        DataError: missing or empty file, not an image, truncated or corrupt data, a
            decompression bomb, or a known placeholder picture.
    """
    if isinstance(item, np.ndarray):
        image = _array_to_image(item, origin)
    else:
        data = _read_file(os.fspath(item), origin)
        reason = _placeholder_reason(data)
        if reason:
            raise DataError(f"{origin}: {reason}")
        image = _open_checked(io.BytesIO(data), origin)
        try:
            if target_size and image.format in ("JPEG", "MPO"):
                size = max(1, int(target_size))
                # draft picks the largest reduction (1/2, 1/4, 1/8) that keeps both sides
                # >= size, so the shorter side stays >= target_size.
                image.draft("RGB", (size, size))
            _load(image)
        except Image.DecompressionBombError as exc:
            raise _bomb_error(origin, exc) from None
        except Exception as exc:  # truncated data, broken streams, bad tables, ...
            raise DataError(f"{origin}: truncated or corrupt image: {_describe(exc)}") from None
    try:
        if not isinstance(item, np.ndarray):
            image = _apply_orientation(image)
        image = _to_rgb(image)
        if grayscale:
            image = image.convert("L").convert("RGB")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{origin}: truncated or corrupt image: {_describe(exc)}") from None
    return image


def check_image(item: ImageItem, origin: str) -> None:
    """Cheap check that an item looks like a readable image (header only, no decode).

    Raises the same :class:`DataError` messages as :func:`open_image` for a missing or
    empty file, an unknown format, a decompression bomb, a known placeholder picture, a
    bad array shape or dtype.  Truncated pixel data is only found by a full decode.
    """
    if isinstance(item, np.ndarray):
        _array_to_image(item, origin)
        return
    path = os.fspath(item)
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise DataError(f"{origin}: image file not found") from None
    except OSError as exc:
        raise DataError(f"{origin}: cannot read file ({exc.strerror or exc})") from None
    if os.path.isdir(path):
        raise DataError(f"{origin}: is a folder, not an image file")
    if size == 0:
        raise DataError(f"{origin}: empty file (0 bytes)")
    if size in _PLACEHOLDER_SIZES:
        reason = _placeholder_reason(_read_file(path, origin))
        if reason:
            raise DataError(f"{origin}: {reason}")
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise DataError(f"{origin}: cannot read file ({exc.strerror or exc})") from None
    with handle:
        image = _open_checked(handle, origin)
        with image:
            width, height = image.size
            if width <= 0 or height <= 0 or not image.format:
                raise DataError(f"{origin}: not a readable image (bad size {width}x{height})")


def _scan_one(item: ImageItem, origin: str) -> DataError | None:
    try:
        open_image(item, origin, target_size=SCAN_TARGET_SIZE)
    except DataError as exc:
        return exc
    return None


def scan_images(samples: Samples, *, skip_bad: bool,
                workers: int = 2) -> tuple[Samples, list[tuple[str, str]]]:
    """Fully decode every image item and set the bad ones apart.

    Decoding runs in ``workers`` threads (PIL releases the GIL while decoding); JPEGs are
    drafted to :data:`SCAN_TARGET_SIZE` for speed.

    Returns:
        ``(good samples, [(origin, reason), ...])`` where ``reason`` is the error
        message without the leading ``"<origin>: "``.  Text samples come back as they are.

    Raises:
        DataError: the first bad item's error (in item order) when ``skip_bad`` is false.
    """
    if samples.modality != "image" or len(samples) == 0:
        return samples, []
    pairs = list(zip(samples.items, samples.origins))
    if workers > 1 and len(pairs) > 1 and not all(isinstance(it, np.ndarray) for it, _ in pairs):
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda pair: _scan_one(*pair), pairs))
    else:
        results = [_scan_one(item, origin) for item, origin in pairs]
    bad_positions = [i for i, error in enumerate(results) if error is not None]
    if not bad_positions:
        return samples, []
    if not skip_bad:
        raise results[bad_positions[0]]  # type: ignore[misc]
    bad: list[tuple[str, str]] = []
    for i in bad_positions:
        origin = samples.origins[i]
        message = str(results[i])
        prefix = f"{origin}: "
        bad.append((origin, message[len(prefix):] if message.startswith(prefix) else message))
    bad_set = set(bad_positions)
    keep = [i for i in range(len(samples)) if i not in bad_set]
    return samples.subset(keep), bad


def check_split_images(splits: dict, skip_bad: bool, log) -> dict:
    """Every image split of ``splits`` (name -> :class:`Samples` or ``None``) checked.

    With ``skip_bad`` every image is decoded, the unreadable ones are left out of their split
    and listed through ``log``; without it each item is checked (:func:`check_image`) and the
    first bad one raises its :class:`~transferkit.errors.DataError`.  Text splits and
    ``None`` come back as they are.
    """
    out = {}
    for name, s in splits.items():
        if s is None or s.modality != "image":
            out[name] = s
            continue
        if skip_bad:
            kept, bad = scan_images(s, skip_bad=True)
            _log_skipped(name, bad, log)
            out[name] = kept
        else:
            for item, origin in zip(s.items, s.origins):
                try:
                    check_image(item, origin)
                except DataError as exc:
                    raise DataError(f"{exc}; {SKIP_BAD_HINT}") from None
            out[name] = s
    return out


def _log_skipped(name: str, bad: list[tuple[str, str]], log) -> None:
    if bad:
        log(f"skipped {len(bad)} unreadable file(s) in {name}:")
        for origin, reason in bad:
            log(f"  {origin}: {reason}")


def drop_bad_images(splits: dict, bad: dict[str, list[int]], log) -> dict:
    """:func:`check_split_images` with ``skip_bad`` when the images were decoded already
    (by a feature pass): ``bad`` names the positions, per split, that could not be decoded.
    They are left out and listed through ``log`` with the reasons and in the words of a
    scan; ``splits`` without bad positions come back as they are."""
    out = {}
    for name, s in splits.items():
        gone = sorted(set(bad.get(name, ())))
        if s is None or not gone:
            out[name] = s
            continue
        listed = []
        for i in gone:
            origin = s.origins[i]
            error = _scan_one(s.items[i], origin)
            message = str(error) if error is not None else f"{origin}: could not be decoded"
            prefix = f"{origin}: "
            listed.append((origin, message[len(prefix):] if message.startswith(prefix) else message))
        _log_skipped(name, listed, log)
        drop = set(gone)
        out[name] = s.subset([i for i in range(len(s)) if i not in drop])
    return out
