"""data/images and data/exif: every format in, RGB out; hostile files refused with their reason."""

from __future__ import annotations

import io
import time
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from _imagefixtures import (
    gps_exif,
    huge_png,
    jpeg_with_raw_exif,
    make_geotagged_jpeg,
    raw_exif,
    truncated_jpeg,
)
from geoscope.data.exif import ExifFindings, read_exif
from geoscope.data.images import IMAGE_SUFFIXES, ImageError, image_size, is_image_path, load_image
from geoscope.errors import InputError


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _gradient(w: int = 48, h: int = 32) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)], -1)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


REF = _gradient()  # smooth, so lossy formats stay close to it


def _close(a: Image.Image, b: Image.Image, tol: float) -> bool:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean()) < tol


@pytest.mark.parametrize("fmt,kw,tol", [
    ("JPEG", {"quality": 95}, 6.0),
    ("PNG", {}, 0.01),
    ("WEBP", {"lossless": True}, 0.01),
    ("TIFF", {}, 0.01),
    ("BMP", {}, 0.01),
    ("GIF", {}, 40.0),  # palette quantisation
    ("HEIF", {"quality": 95}, 8.0),
])
def test_each_format_loads_as_rgb_with_the_right_pixels(fmt, kw, tol):
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    data = _encode(REF, fmt, **kw)
    im = load_image(data)
    assert im.mode == "RGB" and im.size == REF.size
    assert _close(im, REF, tol)


def test_paths_and_file_objects_are_accepted(tmp_path):
    p = tmp_path / "a.png"
    REF.save(p)
    assert _close(load_image(p), REF, 0.01)
    assert _close(load_image(str(p)), REF, 0.01)
    with open(p, "rb") as f:
        assert _close(load_image(f), REF, 0.01)


def test_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert load_image(data).getpixel((4, 4)) == (255, 0, 0)


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 10, 20))  # white on the left
    data = _encode(im, "JPEG", quality=95, exif=gps_exif(orientation=6))  # 6: rotate 90 clockwise to view
    out = load_image(data)
    assert out.size == (20, 40)
    top = np.asarray(out)[:10].mean()
    bottom = np.asarray(out)[-10:].mean()
    assert top > 200 and bottom < 50  # the left side ends up on top


@pytest.mark.parametrize("mode,expect", [
    ("CMYK", None), ("P", None), ("L", None), ("1", None), ("RGBA", None), ("LA", None),
])
def test_modes_become_rgb(mode, expect):
    src = REF.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = load_image(_encode(src, fmt))
    assert out.mode == "RGB" and out.size == REF.size
    assert _close(out, src.convert("RGB"), 8.0)


def test_alpha_is_composited_over_white():
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    assert load_image(_encode(im, "PNG")).getpixel((0, 0)) == (255, 255, 255)
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    assert load_image(_encode(im, "PNG")).getpixel((0, 0)) == (255, 0, 0)


def test_16_bit_greyscale_is_scaled_not_clipped():
    arr = np.array([[0, 32768, 65535, 1000]], dtype=np.uint16)
    data = _encode(Image.fromarray(arr), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = np.asarray(load_image(data))[0, :, 0]
    assert out[0] == 0 and abs(int(out[1]) - 128) <= 1 and out[2] == 255 and out[3] <= 4


def test_float_tiff_is_scaled():
    arr = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    out = np.asarray(load_image(_encode(Image.fromarray(arr, "F"), "TIFF")))[..., 0]
    assert out.min() == 0 and out.max() == 255


def test_suffixes():
    assert {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic"} <= IMAGE_SUFFIXES
    assert is_image_path("a/B.JPG") and is_image_path("x.heic")
    assert not is_image_path("notes.txt") and not is_image_path("archive.tar")


# --- hostile input ------------------------------------------------------------------------------

def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    bomb = huge_png(tmp_path / "bomb.png")  # 30,000 x 30,000, ~110 KB on disk
    assert bomb.stat().st_size < 500_000
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ImageError) as info:
        load_image(bomb)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    msg = str(info.value)
    assert "bomb.png" in msg and "900,000,000 pixels" in msg
    assert elapsed < 1.0 and peak < 20_000_000  # nothing was decoded


def test_pixel_limit_is_ours_and_configurable(tmp_path):
    p = huge_png(tmp_path / "wide.png", 12_000, 10_000, header_only=True)  # under Pillow's own limit
    with pytest.raises(ImageError, match=r"wide.png: image is 12,000 x 10,000 = 120,000,000 pixels"):
        load_image(p)
    small = tmp_path / "small.png"
    REF.save(small)
    with pytest.raises(ImageError, match="more than the limit of 1,000"):
        load_image(small, max_pixels=1000)
    assert image_size(p) == (12_000, 10_000)


def test_byte_limit(tmp_path):
    p = tmp_path / "a.png"
    REF.save(p)
    with pytest.raises(ImageError, match=r"a.png: file is \d[\d,]* bytes, more than the limit of 100 bytes"):
        load_image(p, max_bytes=100)
    with pytest.raises(ImageError, match="more than the limit"):
        load_image(io.BytesIO(p.read_bytes()), max_bytes=100)


def test_truncated_jpeg(tmp_path):
    p = truncated_jpeg(tmp_path / "cut.jpg")
    with pytest.raises(ImageError, match=r"cut.jpg: cannot decode JPEG: truncated"):
        load_image(p)


@pytest.mark.parametrize("content,reason", [
    (b"", "file is empty"),
    (b"this is not an image at all", "not a recognised image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "x.jpg"),
])
def test_empty_and_garbage_files(tmp_path, content, reason):
    p = tmp_path / "x.jpg"
    p.write_bytes(content)
    with pytest.raises(ImageError, match=reason) as info:
        load_image(p)
    assert isinstance(info.value, InputError) and str(p) in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="nope.jpg: file not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="expected a path, bytes or a binary file"):
        load_image(12)


def test_formats_outside_the_list_are_refused():
    data = _encode(REF, "PPM")  # Pillow reads it, geoscope does not take it
    with pytest.raises(ImageError, match="not a recognised image"):
        load_image(data)


# --- EXIF ---------------------------------------------------------------------------------------

def test_read_exif_round_trip(tmp_path):
    p = make_geotagged_jpeg(tmp_path / "g.jpg", -33.8568, 151.2153, altitude=-12.5,
                            time="2021:04:29 16:05:09", make="Canon\x00", model=" EOS R5 ")
    found = read_exif(p)
    assert found.lat == pytest.approx(-33.8568, abs=1e-6) and found.lon == pytest.approx(151.2153, abs=1e-6)
    assert found.altitude_m == pytest.approx(-12.5)
    assert found.time == "2021-04-29T16:05:09"
    assert (found.make, found.model) == ("Canon", "EOS R5")
    assert found.has_gps
    assert read_exif(p.read_bytes()) == found
    with Image.open(p) as im:
        assert read_exif(im) == found


@pytest.mark.parametrize("lat,lon", [(48.8584, 2.2945), (-0.5, -78.1), (64.1466, -21.9426), (-54.8, -68.3)])
def test_read_exif_hemispheres(tmp_path, lat, lon):
    found = read_exif(make_geotagged_jpeg(tmp_path / "h.jpg", lat, lon))
    assert (found.lat, found.lon) == (pytest.approx(lat, abs=1e-6), pytest.approx(lon, abs=1e-6))


def test_read_exif_from_webp_png_heic():
    import pillow_heif

    pillow_heif.register_heif_opener()
    for fmt in ("WEBP", "PNG", "HEIF"):
        data = _encode(REF, fmt, exif=gps_exif(35.0, 139.5, make="X"))
        found = read_exif(data)
        assert (found.lat, found.lon, found.make) == (pytest.approx(35.0), pytest.approx(139.5), "X"), fmt


RAT = 5  # EXIF type RATIONAL
ASCII = 2


@pytest.mark.parametrize("gps,why", [
    ([(1, ASCII, "N"), (2, RAT, [(123, 1), (0, 1), (0, 1)]), (3, ASCII, "E"), (4, RAT, [(10, 1), (0, 1), (0, 1)])],
     "latitude 123 degrees"),
    ([(1, ASCII, "N"), (2, RAT, [(45, 0), (0, 1), (0, 1)]), (3, ASCII, "E"), (4, RAT, [(10, 1), (0, 1), (0, 1)])],
     "zero denominator in degrees"),
    ([(1, ASCII, "N"), (2, ASCII, "45.5"), (3, ASCII, "E"), (4, RAT, [(10, 1), (0, 1), (0, 1)])],
     "latitude as text"),
    ([(1, ASCII, "Q"), (2, RAT, [(45, 1), (0, 1), (0, 1)]), (3, ASCII, "E"), (4, RAT, [(10, 1), (0, 1), (0, 1)])],
     "unknown hemisphere"),
    ([(1, ASCII, "N"), (2, RAT, [(45, 1), (75, 1), (0, 1)]), (3, ASCII, "E"), (4, RAT, [(10, 1), (0, 1), (0, 1)])],
     "75 minutes"),
    ([(1, ASCII, "N"), (2, RAT, [(45, 1)] * 5), (3, ASCII, "E"), (4, RAT, [(10, 1), (0, 1), (0, 1)])],
     "five components"),
    ([(1, ASCII, "N"), (2, RAT, [(45, 1), (0, 1), (0, 1)]), (3, ASCII, "E"), (4, RAT, [(190, 1), (0, 1), (0, 1)])],
     "longitude 190"),
    ([(1, ASCII, "N"), (2, RAT, [(0, 1), (0, 1), (0, 1)]), (3, ASCII, "E"), (4, RAT, [(0, 1), (0, 1), (0, 1)])],
     "0,0 placeholder"),
    ([(1, ASCII, "N"), (2, RAT, [(45, 1), (0, 1), (0, 1)]), (3, ASCII, "E"), (4, RAT, [(10, 1), (0, 1), (0, 1)]),
      (9, ASCII, "V")], "void measurement"),
])
def test_garbage_gps_becomes_none(tmp_path, gps, why):
    p = jpeg_with_raw_exif(tmp_path / "bad.jpg", raw_exif(gps, [(0x010F, ASCII, "Make")]))
    found = read_exif(p)
    assert (found.lat, found.lon) == (None, None), why
    assert found.make == "Make"  # the rest of the metadata survives
    load_image(p)  # and the pixels are still fine


def test_zero_over_zero_seconds_and_bad_altitude_are_tolerated(tmp_path):
    gps = [(1, ASCII, "S"), (2, RAT, [(12, 1), (30, 1), (0, 0)]), (3, ASCII, "W"), (4, RAT, [(10, 1), (15, 1), (0, 1)]),
           (5, 1, b"\x01"), (6, RAT, [(10, 0)])]
    found = read_exif(jpeg_with_raw_exif(tmp_path / "z.jpg", raw_exif(gps)))
    assert (found.lat, found.lon) == (-12.5, -10.25)
    assert found.altitude_m is None


def test_garbage_time_and_types(tmp_path):
    ifd0 = [(0x010F, 3, [7]), (0x0110, ASCII, ""), (0x0132, ASCII, "2021:13:45 99:00:00")]
    found = read_exif(jpeg_with_raw_exif(tmp_path / "t.jpg", raw_exif([], ifd0)))
    assert found == ExifFindings()


def test_read_exif_never_raises_on_non_images_but_reports_missing_files(tmp_path):
    assert read_exif(b"not an image") == ExifFindings()
    assert read_exif(truncated_jpeg(tmp_path / "t.jpg")).lat is None
    (tmp_path / "e.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="file is empty"):
        read_exif(tmp_path / "e.jpg")
    with pytest.raises(ImageError, match="file not found"):
        read_exif(tmp_path / "missing.jpg")


def test_a_jpeg_or_png_is_opened_by_its_own_plugin_and_others_by_any_allowed():
    from geoscope.data.images import ALLOWED_FORMATS, _allowed_formats

    img = Image.new("RGB", (8, 8), (10, 200, 30))
    assert _allowed_formats(_encode(img, "JPEG")) == ["JPEG"]
    assert _allowed_formats(_encode(img, "PNG")) == ["PNG"]
    wide = _allowed_formats(_encode(img, "WEBP"))
    assert "WEBP" in wide and set(wide) <= set(ALLOWED_FORMATS)
    assert _allowed_formats(b"not an image") == wide  # unknown: every allowed format may try
