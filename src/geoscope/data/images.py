"""The one safe way an image enters geoscope: size limits first, then decode, then plain RGB.

``load_image(src)`` accepts a path, bytes or a binary file object and returns a fully decoded
``PIL.Image`` in mode RGB with its EXIF orientation applied. Before any pixel is decoded it checks
the file size (``max_bytes``) and the pixel count the header claims (``max_pixels``), so a
decompression bomb costs nothing; and where a format bounds how far it can compress (PNG's DEFLATE,
JPEG's Huffman codes, GIF's LZW) it checks that the file holds enough data for the pixels it
claims, so a small file that claims a big picture is refused before it is decoded
(``check_data_budget``). Progressive JPEGs with more than ``MAX_JPEG_SCANS`` scans are refused
(each scan is a pass over every block: thousands of them are a known denial of service), and so are
RLE-compressed BMPs over ``MAX_RLE_BMP_PIXELS`` (Pillow decodes them in Python, pixel by pixel). Only
still-image formats are opened (JPEG, PNG, WebP, TIFF, BMP, GIF, HEIC/HEIF); animated GIF/WebP and
multi-page TIFF give their first frame. Palette, greyscale, CMYK, 16-bit and alpha images all come
out as 8-bit RGB (alpha composited over white).
Every failure is an ``ImageError`` whose one-sentence message names the file and the reason.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from geoscope.errors import InputError

ImageSource = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes]

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif"}
)
# Pillow format names we agree to parse (MPO: the multi-picture JPEG many phones write).
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "TIFF", "BMP", "DIB", "GIF", "HEIF")

DEFAULT_MAX_PIXELS = 100_000_000  # 100 megapixels: more than any camera, far less than a bomb
DEFAULT_MAX_BYTES = 200 * 1024 * 1024  # 200 MiB
#: progressive JPEGs from cameras and encoders have about 10 scans (libjpeg's default script has 10);
#: each scan costs a pass over every block, so thousands of tiny scans make a tiny file decode for minutes
MAX_JPEG_SCANS = 100
#: the most a format's coding can shrink its pixel data: DEFLATE (PNG) emits at most 258 bytes per
#: 2 bits (1032:1); a Huffman-coded JPEG spends at least 1 bit on every 8 x 8 block's DC coefficient;
#: a GIF LZW code of 12 bits stands for at most 4096 pixels
DEFLATE_MAX_RATIO = 1032
GIF_MAX_PIXELS_PER_BYTE = 4096 * 8 // 12 + 1
#: Pillow decodes RLE-compressed BMPs in pure Python, filling end-of-line gaps and RLE4 runs one pixel
#: at a time: a 1 KB file can ask for minutes of it, so RLE BMPs above this size are refused
MAX_RLE_BMP_PIXELS = 4_000_000
# formats and the first bytes of their files, to name a file Pillow could not parse
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "BigTIFF"), (b"MM\x00+", "BigTIFF"),
               (b"BM", "BMP"))


class ImageError(InputError):
    """An image could not be read; the message names the file and the reason."""


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the file name has an image suffix geoscope reads (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


_heif_registered = False


def _register_heif() -> None:
    """Teach Pillow HEIC/HEIF on first use. Deferred: importing pillow_heif costs 8-55 ms on top of
    Pillow (measured on two machines), and only an image that is not a JPEG, PNG, GIF or BMP needs it."""
    global _heif_registered
    if not _heif_registered:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
        except ImportError:  # pragma: no cover - pillow-heif is a dependency
            pass
        _heif_registered = True


#: Formats Pillow's ``preinit`` registers, by the signature ``sniff_format`` finds: a JPEG or PNG is
#: opened without importing Pillow's forty other plugins (``Image.init``, ~0.2 s of a cold start).
_PREINIT_FORMATS = {"JPEG": ["JPEG"], "PNG": ["PNG"], "GIF": ["GIF"], "BMP": ["BMP"]}


def _allowed_formats(data: bytes = b"") -> list[str]:
    """The formats Pillow may try for ``data``: the one its signature names when Pillow's core plugins
    know it (pillow_heif not imported), else every allowed format (HEIF included)."""
    quick = _PREINIT_FORMATS.get(sniff_format(data) or "")
    if quick is not None:
        Image.preinit()
        if all(f in Image.OPEN for f in quick):
            return quick
    _register_heif()
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
        except FileNotFoundError as exc:
            raise ImageError(f"{name}: file not found") from exc
        except OSError as exc:
            raise ImageError(f"{name}: cannot read file ({exc.strerror or exc})") from exc
        if path.is_dir():
            raise ImageError(f"{name}: is a directory, not an image")
        if max_bytes is not None and size > max_bytes:
            raise ImageError(f"{name}: file is {size:,} bytes, more than the limit of {max_bytes:,} bytes")
        try:
            with open(path, "rb") as f:
                data = _read_upto(f, limit)
        except OSError as exc:
            raise ImageError(f"{name}: cannot read file ({exc.strerror or exc})") from exc
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


def open_header(data: bytes, name: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageFile.ImageFile:
    """Open ``data`` lazily (header only) and check its claimed size against ``max_pixels``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data), formats=_allowed_formats(data))
        except Image.DecompressionBombError as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))
            claimed = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
            pillow_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)  # Pillow raises this only when it has a limit
            raise ImageError(
                f"{name}: image claims {claimed}, more than the limit of "
                f"{min(max_pixels or pillow_limit, pillow_limit):,} (possible decompression bomb)"
            ) from exc
        except UnidentifiedImageError as exc:
            kind = sniff_format(data)
            if kind is not None:
                raise ImageError(f"{name}: not a recognised image: it starts like a {kind} file but its header "
                                 f"cannot be parsed (a corrupt {kind} file)") from exc
            raise ImageError(f"{name}: not a recognised image (supported: JPEG, PNG, WebP, TIFF, BMP, GIF, HEIC)") from exc
        except (OSError, ValueError, SyntaxError, struct.error, EOFError, RuntimeError) as exc:
            # RuntimeError: libheif's errors (pillow-heif), e.g. its own size limits
            raise ImageError(f"{name}: corrupt image header ({_one_line(exc)})") from exc
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageError(f"{name}: image has no pixels ({w} x {h})")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(
            f"{name}: image is {w:,} x {h:,} = {w * h:,} pixels, more than the limit of {max_pixels:,} "
            "(possible decompression bomb; raise max_pixels if the file is trusted)"
        )
    return im


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (decoders' messages can hold newlines)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def sniff_format(data: bytes) -> str | None:
    """The image format ``data`` starts like (by its signature), or None."""
    for magic, kind in _SIGNATURES:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis", b"hevc"):
        return "HEIF"
    return None


def _png_data_bytes(data: bytes) -> int:
    """Bytes of compressed pixel data (IDAT and APNG fdAT chunks) actually present in a PNG."""
    total, i, n = 0, 8, len(data)
    while i + 8 <= n:
        length = int.from_bytes(data[i:i + 4], "big")
        kind = data[i + 4:i + 8]
        if kind in (b"IDAT", b"fdAT"):
            total += max(0, min(length, n - i - 8))
        if kind == b"IEND":
            break
        i += 12 + length
    return total


#: the next real marker inside entropy-coded data: 0xFF followed by neither stuffing (0x00), a restart
#: marker (0xD0-0xD7) nor fill (0xFF). One regex scan in C instead of a Python loop over every 0xFF byte:
#: on a 2.2 MB 3000 x 2000 photo load_image(draft_size=224) went from 26.8 to 26.2 ms of CPU.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # "\xff+..." would defeat the literal-prefix search: 17x slower


def _jpeg_layout(data: bytes) -> tuple[bool, int]:
    """(Huffman-coded, number of scans) of a JPEG, from its markers (stops at the first problem)."""
    huffman, scans, i, n = True, 0, 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:  # entropy-coded data: skip to the next marker that is not a restart or stuffing
            m = _NEXT_MARKER.search(data, i)
            if m is None:
                break
            i = m.start()  # on the marker's last 0xFF (fill bytes before it are skipped)
            continue
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker == 0xD9:
            break
        if 0xC9 <= marker <= 0xCF and marker != 0xCC:  # arithmetic-coded frames (SOF9..SOF15)
            huffman = False
        if marker == 0xDA:
            scans += 1
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return huffman, scans


def check_data_budget(data: bytes, im: ImageFile.ImageFile, name: str) -> None:
    """Refuse a file whose format cannot hold its claimed pixels in so few bytes (truncated, or a
    decompression bomb), or a JPEG with more than ``MAX_JPEG_SCANS`` scans, before decoding it."""
    w, h = im.size
    fmt = im.format
    need = 0
    if fmt == "PNG":
        raw = (w * h * _png_bits_per_pixel(data, 1) + 7) // 8
        need, have, why = raw // DEFLATE_MAX_RATIO, _png_data_bytes(data), "DEFLATE cannot compress more than 1032:1"
    elif fmt in ("JPEG", "MPO"):
        huffman, scans = _jpeg_layout(data)
        if scans > MAX_JPEG_SCANS:
            raise ImageError(f"{name}: JPEG has {scans:,} scans, more than the limit of {MAX_JPEG_SCANS} "
                             "(possible decompression bomb: every scan is a pass over the whole image)")
        if huffman:
            need = ((w + 7) // 8) * ((h + 7) // 8) // 8
            have, why = len(data), "a JPEG spends at least one bit on every 8 x 8 block"
    elif fmt == "GIF":
        need, have = w * h // GIF_MAX_PIXELS_PER_BYTE, len(data)
        why = "a GIF's LZW codes stand for at most 4096 pixels each"
    elif fmt in ("BMP", "DIB") and w * h > MAX_RLE_BMP_PIXELS and any(t[0] == "bmp_rle" for t in im.tile):
        raise ImageError(f"{name}: RLE-compressed BMP of {w:,} x {h:,} pixels, more than the limit of "
                         f"{MAX_RLE_BMP_PIXELS:,} for this compression (possible decompression bomb: its end-of-line "
                         "codes fill whole rows for two bytes, and they are decoded one pixel at a time)")
    if need and have < need:
        raise ImageError(f"{name}: {fmt} claims {w:,} x {h:,} pixels but holds only {have:,} bytes of image data, "
                         f"too few for that ({why}): truncated, or a decompression bomb")


def _png_bits_per_pixel(data: bytes, fallback: int) -> int:
    """Bits per pixel from the IHDR (bit depth x channels)."""
    if len(data) >= 26 and data[12:16] == b"IHDR":
        depth, ctype = data[24], data[25]
        channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(ctype)
        if channels and depth in (1, 2, 4, 8, 16):
            return depth * channels
    return fallback


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: alpha over white, 16/32-bit and float rescaled."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("P", "PA"):
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        # pasted over white through its own alpha: one RGB copy, not three RGBA ones (a 100 MP
        # RGBA image costs 0.7 GB here instead of 1.6 GB)
        rgba = im if mode == "RGBA" else im.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, (0, 0), rgba)
        return out
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
    header = open_header(data, name, max_pixels)
    check_data_budget(data, header, name)
    im: Image.Image = header
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
        raise ImageError(f"{name}: image is too large to decode safely ({exc})") from exc
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, MemoryError, RuntimeError,
            struct.error) as exc:
        reason = _one_line(exc)
        if "truncated" in reason.lower() or isinstance(exc, EOFError):
            reason = f"truncated image data ({reason})"
        raise ImageError(f"{name}: cannot decode {im.format or 'image'}: {reason}") from exc
    if out is im:
        out = im.copy()  # detach from the file buffer
    out.info.pop("exif", None)
    return out


def image_size(src: ImageSource, max_bytes: int | None = DEFAULT_MAX_BYTES) -> tuple[int, int]:
    """(width, height) from the header alone (before EXIF rotation), without decoding pixels."""
    name = source_name(src)
    return open_header(read_limited(src, max_bytes, name), name, max_pixels=None).size
