"""The one safe way an image enters geoscope: size limits first, then decode, then plain RGB.

``load_image(src)`` accepts a path, bytes or a binary file object and returns a fully decoded
``PIL.Image`` in mode RGB with its EXIF orientation applied. Before any pixel is decoded it checks
the file size (``max_bytes``) and the pixel count the header claims (``max_pixels``), so a
decompression bomb costs nothing. Only still-image formats are opened (JPEG, PNG, WebP, TIFF, BMP,
GIF, HEIC/HEIF); animated GIF/WebP and multi-page TIFF give their first frame. Palette, greyscale,
CMYK, 16-bit and alpha images all come out as 8-bit RGB (alpha composited over white).
Every failure is an ``ImageError`` whose one-sentence message names the file and the reason.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
from pathlib import Path
from typing import IO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from geoscope.errors import InputError

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes]]

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif"}
)
# Pillow format names we agree to parse (MPO: the multi-picture JPEG many phones write).
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "TIFF", "BMP", "DIB", "GIF", "HEIF")

DEFAULT_MAX_PIXELS = 100_000_000  # 100 megapixels: more than any camera, far less than a bomb
DEFAULT_MAX_BYTES = 200 * 1024 * 1024  # 200 MiB


class ImageError(InputError):
    """An image could not be read; the message names the file and the reason."""


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the file name has an image suffix geoscope reads (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


_heif_registered = False


def _register_heif() -> None:
    """Teach Pillow HEIC/HEIF on first use. Deferred: importing pillow_heif costs about 8 ms on top of
    Pillow (nearly as much as this module's own imports), and only opening an image needs it."""
    global _heif_registered
    if not _heif_registered:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
        except ImportError:  # pragma: no cover - pillow-heif is a dependency
            pass
        _heif_registered = True


def _allowed_formats() -> list[str]:
    Image.init()
    return [f for f in ALLOWED_FORMATS if f in Image.OPEN]


def source_name(src) -> str:
    """A human-readable name for ``src`` (a path, a file object's name, or '<bytes>')."""
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    name = getattr(src, "name", None)
    return str(name) if isinstance(name, (str, os.PathLike)) else "<bytes>"


def _read_upto(f, limit: int) -> bytes:
    """Read to the end, or stop just past ``limit`` bytes (a negative limit reads everything).

    Reads in chunks: ``f.read(limit + 1)`` would allocate the whole limit up front.
    """
    if limit < 0:
        return f.read()
    chunks, total = [], 0
    while total <= limit:
        chunk = f.read(min(1 << 20, limit + 1 - total))
        if not chunk:
            break
        if not isinstance(chunk, bytes):
            return chunk  # text-mode file: the caller reports it
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def read_limited(src: ImageSource, max_bytes: int | None = DEFAULT_MAX_BYTES, name: str | None = None) -> bytes:
    """The bytes of ``src``, refusing missing, empty or over-large files with an ``ImageError``."""
    name = name or source_name(src)
    limit = max_bytes if max_bytes is not None else -1
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ImageError(f"{name}: file not found")
        except OSError as exc:
            raise ImageError(f"{name}: cannot read file ({exc.strerror or exc})")
        if path.is_dir():
            raise ImageError(f"{name}: is a directory, not an image")
        if max_bytes is not None and size > max_bytes:
            raise ImageError(f"{name}: file is {size:,} bytes, more than the limit of {max_bytes:,} bytes")
        try:
            with open(path, "rb") as f:
                data = _read_upto(f, limit)
        except OSError as exc:
            raise ImageError(f"{name}: cannot read file ({exc.strerror or exc})")
    elif isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    elif hasattr(src, "read"):
        data = _read_upto(src, limit)
        if not isinstance(data, bytes):
            raise ImageError(f"{name}: file object must be opened in binary mode")
    else:
        raise ImageError(f"{name}: expected a path, bytes or a binary file, got {type(src).__name__}")
    if not data:
        raise ImageError(f"{name}: file is empty (0 bytes)")
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageError(f"{name}: image data is more than the limit of {max_bytes:,} bytes")
    return data


def open_header(data: bytes, name: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open ``data`` lazily (header only) and check its claimed size against ``max_pixels``."""
    _register_heif()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=_allowed_formats())
        except Image.DecompressionBombError as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))
            claimed = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
            pillow_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)  # Pillow raises this only when it has a limit
            raise ImageError(
                f"{name}: image claims {claimed}, more than the limit of "
                f"{min(max_pixels or pillow_limit, pillow_limit):,} (possible decompression bomb)"
            )
        except UnidentifiedImageError:
            raise ImageError(f"{name}: not a recognised image (supported: JPEG, PNG, WebP, TIFF, BMP, GIF, HEIC)")
        except (OSError, ValueError, SyntaxError, struct.error, EOFError) as exc:
            raise ImageError(f"{name}: corrupt image header ({exc})")
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageError(f"{name}: image has no pixels ({w} x {h})")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(
            f"{name}: image is {w:,} x {h:,} = {w * h:,} pixels, more than the limit of {max_pixels:,} "
            "(possible decompression bomb; raise max_pixels if the file is trusted)"
        )
    return im


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: alpha over white, 16/32-bit and float rescaled."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("P", "PA"):
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0
        elif mode == "I":
            top = 65535.0 if arr.max(initial=0) > 255 else 255.0
            arr = arr * (255.0 / top)
        else:  # float: 0..1 data is common; otherwise stretch to the data's range
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr = arr * 255.0 if lo >= 0 and hi <= 1 else (arr - lo) * (255.0 / (hi - lo or 1.0))
        grey = Image.fromarray(np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8), "L")
        return grey.convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def load_image(
    src: ImageSource,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    name: str | None = None,
    draft_size: int | None = None,
) -> Image.Image:
    """Read ``src`` (path, bytes or binary file) into a decoded RGB ``PIL.Image``.

    ``draft_size``: the shortest side a model will resize the image to; a large JPEG is then decoded
    at a reduced scale (``data.decode``; None decodes in full).

    ``name`` is used in error messages (defaults to the path or file name). Raises ``ImageError``
    for a missing, empty, over-large, unrecognised, truncated or corrupt image. ``max_pixels``
    above Pillow's own bomb limit (2 x ``PIL.Image.MAX_IMAGE_PIXELS``, about 179 MP) is capped by it.
    """
    name = name or source_name(src)
    data = read_limited(src, max_bytes, name)
    im = open_header(data, name, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                im.seek(0)  # first frame of an animation / first page of a TIFF
            except EOFError:
                pass
            if draft_size:
                from geoscope.data.decode import apply_draft

                apply_draft(im, draft_size)
            im.load()
            try:
                # only a real orientation costs a transposed copy (exif_transpose copies even for "normal")
                if im.getexif().get(0x0112, 1) in (2, 3, 4, 5, 6, 7, 8):
                    im = ImageOps.exif_transpose(im) or im
            except Exception:  # noqa: BLE001 - a malformed orientation tag only costs the rotation
                pass
            out = to_rgb(im)
            out.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: image is too large to decode safely ({exc})")
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, MemoryError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower() or isinstance(exc, EOFError):
            reason = f"truncated image data ({reason})"
        raise ImageError(f"{name}: cannot decode {im.format or 'image'}: {reason}")
    if out is im:
        out = im.copy()  # detach from the file buffer
    out.info.pop("exif", None)
    return out


def image_size(src: ImageSource, max_bytes: int | None = DEFAULT_MAX_BYTES) -> tuple[int, int]:
    """(width, height) from the header alone (before EXIF rotation), without decoding pixels."""
    name = source_name(src)
    return open_header(read_limited(src, max_bytes, name), name, max_pixels=None).size
