"""Test fixtures for images: synthetic geotagged photos, EXIF writing, hostile files, shards.

Import from any test (``from _imagefixtures import make_geotagged_folder``; the tests folder is on
``sys.path`` under pytest). Everything is built on the fly with Pillow and numpy, offline and fast:

- ``synthetic_image(lat, lon, size)``: an RGB picture whose content is a smooth function of the
  location (colour from latitude / longitude, stripe frequency and angle from the position), so
  nearby places look alike and far-apart places differ: a learnable toy geolocation problem.
- ``gps_exif(lat, lon, ...)``: a ``PIL.Image.Exif`` with a GPS IFD (and time / make / model / orientation).
- ``make_geotagged_jpeg(path, lat, lon, ...)`` and ``make_geotagged_folder(root, points)``.
- ``random_points(n, seed, bbox)``: reproducible coordinates.
- ``raw_exif(gps_entries, ifd0_entries)``: hand-built EXIF bytes for malformed tags (zero
  denominators, wrong types, out-of-range degrees) that Pillow itself refuses to write.
- ``huge_png(path, w, h)``: a small, valid PNG claiming a huge size (decompression bomb).
- ``truncated_jpeg(path)``, ``make_webdataset_shard(path, samples)``.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib
from pathlib import Path
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

__all__ = [
    "synthetic_image", "gps_exif", "make_geotagged_jpeg", "make_geotagged_folder", "random_points",
    "raw_exif", "jpeg_with_raw_exif", "huge_png", "truncated_jpeg", "make_webdataset_shard",
    "dms",
]


def random_points(n: int, seed: int = 0, bbox=(-60.0, -180.0, 70.0, 180.0)) -> list[tuple[float, float]]:
    """``n`` reproducible (lat, lon) points, uniform in ``bbox=(min_lat, min_lon, max_lat, max_lon)``."""
    rng = np.random.default_rng(seed)
    lat = rng.uniform(bbox[0], bbox[2], n)
    lon = rng.uniform(bbox[1], bbox[3], n)
    return [(round(float(a), 6), round(float(o), 6)) for a, o in zip(lat, lon)]


def synthetic_image(lat: float, lon: float, size=(64, 48), noise: float = 0.0, seed: int = 0) -> Image.Image:
    """An RGB image whose pixels are a smooth function of (lat, lon), plus optional noise."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = x / max(w - 1, 1), y / max(h - 1, 1)
    a = (lat + 90.0) / 180.0  # 0..1
    b = (lon + 180.0) / 360.0  # 0..1
    freq = 2.0 + 10.0 * a
    angle = 2 * np.pi * b
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (u * np.cos(angle) + v * np.sin(angle)))
    r = 0.6 * a + 0.4 * stripes
    g = 0.6 * b + 0.4 * (1 - stripes)
    bl = 0.5 * (1 - v) * (0.5 + 0.5 * np.cos(np.radians(lat))) + 0.5 * stripes * a * b
    img = np.stack([r, g, bl], axis=-1)
    if noise:
        img = img + np.random.default_rng(seed).normal(0, noise, img.shape)
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), "RGB")


def dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    """Absolute decimal degrees as EXIF (degrees, minutes, seconds) rationals."""
    tenth_ms = int(round(abs(float(value)) * 3600 * 10000))  # in 1/10000 s of arc
    d, rest = divmod(tenth_ms, 3600 * 10000)
    m, s = divmod(rest, 60 * 10000)
    return IFDRational(d, 1), IFDRational(m, 1), IFDRational(s, 10000)


def gps_exif(
    lat: float | None = None,
    lon: float | None = None,
    altitude: float | None = None,
    time: str | None = None,
    make: str | None = None,
    model: str | None = None,
    orientation: int | None = None,
) -> Image.Exif:
    """A Pillow ``Exif`` with a GPS IFD for (lat, lon[, altitude]); ``time`` as 'YYYY:MM:DD HH:MM:SS'."""
    exif = Image.Exif()
    if make is not None:
        exif[ExifTags.Base.Make] = make
    if model is not None:
        exif[ExifTags.Base.Model] = model
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    if time is not None:
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = time
    if lat is not None and lon is not None:
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        gps[ExifTags.GPS.GPSVersionID] = b"\x02\x03\x00\x00"
        gps[ExifTags.GPS.GPSLatitudeRef] = "N" if lat >= 0 else "S"
        gps[ExifTags.GPS.GPSLatitude] = dms(lat)
        gps[ExifTags.GPS.GPSLongitudeRef] = "E" if lon >= 0 else "W"
        gps[ExifTags.GPS.GPSLongitude] = dms(lon)
        if altitude is not None:
            gps[ExifTags.GPS.GPSAltitudeRef] = b"\x00" if altitude >= 0 else b"\x01"
            gps[ExifTags.GPS.GPSAltitude] = IFDRational(int(round(abs(altitude) * 100)), 100)
    return exif


def make_geotagged_jpeg(
    path, lat: float | None, lon: float | None, size=(64, 48), quality: int = 90,
    image: Image.Image | None = None, **exif_kw,
) -> Path:
    """Write a synthetic JPEG for (lat, lon) with the position in its EXIF GPS; returns the path.

    ``lat``/``lon`` None writes no GPS. ``exif_kw``: altitude, time, make, model, orientation.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if image is None:
        image = synthetic_image(lat if lat is not None else 0.0, lon if lon is not None else 0.0, size)
    image.save(path, "JPEG", quality=quality, exif=gps_exif(lat, lon, **exif_kw))
    return path


def make_geotagged_folder(
    root, points: Sequence[tuple[float, float]] | int = 8, seed: int = 0, size=(64, 48),
    sidecar: str | None = None, gps_in_exif: bool = True, subdirs: bool = False,
) -> list[tuple[Path, float, float]]:
    """A folder of geotagged synthetic JPEGs, one per point; returns [(path, lat, lon)].

    ``points`` may be a count (random points from ``seed``). ``sidecar`` writes a CSV of that name
    in ``root`` with columns ``filename,lat,lon`` (path relative to root). ``gps_in_exif=False``
    leaves the EXIF without GPS. ``subdirs`` spreads files over two sub-folders.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if isinstance(points, int):
        points = random_points(points, seed)
    out = []
    for i, (lat, lon) in enumerate(points):
        rel = Path(f"d{i % 2}") / f"img_{i:04d}.jpg" if subdirs else Path(f"img_{i:04d}.jpg")
        p = make_geotagged_jpeg(root / rel, lat if gps_in_exif else None, lon if gps_in_exif else None,
                                size=size, image=synthetic_image(lat, lon, size),
                                time=f"2020:01:{1 + i % 28:02d} 12:00:00", make="Synth", model="Cam 1")
        out.append((p, float(lat), float(lon)))
    if sidecar:
        lines = ["filename,lat,lon"] + [f"{p.relative_to(root).as_posix()},{a},{o}" for p, a, o in out]
        (root / sidecar).write_text("\n".join(lines) + "\n")
    return out


# --- hand-built EXIF for malformed tags ---------------------------------------------------------

_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 9: 4, 10: 8, 12: 8}


def _pack_value(typ: int, value) -> bytes:
    if typ == 2:  # ASCII
        b = value.encode() if isinstance(value, str) else bytes(value)
        return b if b.endswith(b"\0") else b + b"\0"
    if typ in (1, 7):
        return bytes(value)
    if typ == 3:
        return b"".join(struct.pack("<H", v) for v in value)
    if typ == 4:
        return b"".join(struct.pack("<I", v) for v in value)
    if typ in (5, 10):  # (numerator, denominator) pairs, denominators may be 0
        fmt = "<II" if typ == 5 else "<ii"
        return b"".join(struct.pack(fmt, n, d) for n, d in value)
    if typ == 12:
        return b"".join(struct.pack("<d", v) for v in value)
    raise ValueError(typ)


def _ifd(entries: list[tuple[int, int, object]], start: int, extra_pointer: tuple[int, int] | None = None):
    """Pack one little-endian IFD beginning at ``start``; returns (bytes, offset of a sub-IFD slot)."""
    entries = sorted(entries, key=lambda e: e[0])
    n = len(entries) + (1 if extra_pointer else 0)
    header_len = 2 + 12 * n + 4
    data = b""
    body = struct.pack("<H", n)
    items = [(tag, typ, _pack_value(typ, val)) for tag, typ, val in entries]
    if extra_pointer:
        items.append((extra_pointer[0], 4, struct.pack("<I", extra_pointer[1])))
        items.sort(key=lambda e: e[0])
    for tag, typ, payload in items:
        count = len(payload) // _TYPE_SIZE[typ]
        if len(payload) <= 4:
            body += struct.pack("<HHI", tag, typ, count) + payload.ljust(4, b"\0")
        else:
            body += struct.pack("<HHII", tag, typ, count, start + header_len + len(data))
            data += payload + (b"\0" if len(payload) % 2 else b"")
    body += struct.pack("<I", 0)
    return body + data


def raw_exif(gps_entries: list[tuple[int, int, object]], ifd0_entries: list | None = None) -> bytes:
    """EXIF bytes (with the ``Exif\\0\\0`` header) from raw (tag, type, value) entries.

    Types: 2 ASCII (str), 3 SHORT, 4 LONG (list of ints), 5 RATIONAL / 10 SRATIONAL (list of
    (num, den) pairs, den may be 0), 7 UNDEFINED (bytes), 12 DOUBLE. Lets tests write tags Pillow
    would refuse: ``[(2, 5, [(123, 1), (0, 0), (5, 0)])]`` is latitude 123 deg with zero denominators.
    """
    ifd0_entries = list(ifd0_entries or [])
    # layout: TIFF header (8) | IFD0 | GPS IFD
    ifd0_probe = _ifd(ifd0_entries, 8, (0x8825, 0))
    gps_start = 8 + len(ifd0_probe)
    ifd0 = _ifd(ifd0_entries, 8, (0x8825, gps_start))
    gps = _ifd(gps_entries, gps_start)
    return b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + ifd0 + gps


def jpeg_with_raw_exif(path, exif_bytes: bytes, size=(32, 24)) -> Path:
    """A JPEG whose APP1 segment is ``exif_bytes`` exactly as given."""
    path = Path(path)
    buf = io.BytesIO()
    synthetic_image(10.0, 20.0, size).save(buf, "JPEG", quality=85)
    jpg = buf.getvalue()
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif_bytes) + 2) + exif_bytes
    path.write_bytes(jpg[:2] + app1 + jpg[2:])
    return path


# --- hostile files ------------------------------------------------------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png(path, width: int = 30_000, height: int = 30_000, header_only: bool = False) -> Path:
    """A valid 1-bit greyscale PNG of ``width`` x ``height`` that is only ~100 KB on disk.

    The pixel data is a zlib stream of zeros (it compresses ~1000:1); ``header_only`` leaves the
    data out altogether (the header still claims the size). A loader must refuse it before decoding.
    """
    path = Path(path)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    parts = [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", ihdr)]
    if not header_only:
        row = b"\0" * (1 + (width + 7) // 8)
        comp = zlib.compressobj(9)
        chunks = []
        block = row * 256
        for start in range(0, height, 256):
            chunks.append(comp.compress(block if height - start >= 256 else row * (height - start)))
        chunks.append(comp.flush())
        parts.append(_png_chunk(b"IDAT", b"".join(chunks)))
    parts.append(_png_chunk(b"IEND", b""))
    path.write_bytes(b"".join(parts))
    return path


def truncated_jpeg(path, keep: float = 0.5, size=(128, 96)) -> Path:
    """A JPEG cut after ``keep`` of its bytes (the header is intact, the scan data is not)."""
    path = Path(path)
    buf = io.BytesIO()
    synthetic_image(1.0, 2.0, size, noise=0.2).save(buf, "JPEG", quality=95)
    data = buf.getvalue()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def make_webdataset_shard(path, samples: Iterable[tuple[str, bytes | None, dict | bytes | None]],
                          image_ext: str = "jpg") -> Path:
    """A WebDataset tar: for each (key, image_bytes, meta) the members ``key.jpg`` and ``key.json``.

    ``image_bytes`` None leaves the image out; ``meta`` may be raw bytes (to write broken JSON) or None.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, img, meta in samples:
            members = []
            if img is not None:
                members.append((f"{key}.{image_ext}", img))
            if meta is not None:
                members.append((f"{key}.json", meta if isinstance(meta, bytes) else json.dumps(meta).encode()))
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def jpeg_bytes(lat: float, lon: float, size=(64, 48), **exif_kw) -> bytes:
    """The bytes of a synthetic JPEG for (lat, lon) (EXIF GPS set when ``exif_kw`` asks: gps=True)."""
    buf = io.BytesIO()
    gps = exif_kw.pop("gps", False)
    exif = gps_exif(lat if gps else None, lon if gps else None, **exif_kw)
    synthetic_image(lat, lon, size).save(buf, "JPEG", quality=90, exif=exif)
    return buf.getvalue()


__all__.append("jpeg_bytes")
