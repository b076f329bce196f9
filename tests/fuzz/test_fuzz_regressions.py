"""Inputs the fuzz corpus found defects with (tests/data/fuzz_regressions/README.md): each is now
refused with a clean one-line ImageError that names the file, before any pixel is decoded."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import fuzz_corpus
from geoscope.data.exif import read_exif
from geoscope.data.images import MAX_JPEG_SCANS, ImageError, check_data_budget, load_image, open_header

HERE = Path(__file__).resolve().parent.parent / "data" / "fuzz_regressions"

REFUSED = {
    "heic-ispe-100000x100000.heic": r"HEIF",
    "heic-rgb-ispe-width-4294967295.heic": r"HEIF|corrupt",
    "gif-screen-20000x5000.gif": r"GIF claims 20,000 x 5,000 pixels but holds only 4,125 bytes .*decompression bomb",
    "jpeg-claims-12000x8000.jpg": r"JPEG claims 12,000 x 8,000 pixels but holds only 1,825 bytes .*decompression bomb",
    "jpeg-progressive-claims-12000x8000.jpg": r"JPEG claims 12,000 x 8,000 pixels .*decompression bomb",
    "png-rgba-10000x10000-16-rows.png": r"PNG claims 10,000 x 10,000 pixels but holds only 643 bytes .*1032:1",
    "jpeg-icc-header-only.jpg": r"starts like a JPEG file .*corrupt JPEG file",
    "bmp-rle8-262184x30-eol-rows.bmp": r"RLE-compressed BMP of 262,184 x 30 pixels, more than the limit",
}


@pytest.mark.parametrize("fname", sorted(REFUSED))
def test_fuzz_regression_is_refused_cleanly(fname):
    path = HERE / fname
    assert path.exists(), f"missing regression input {path}"
    start = time.process_time()
    with pytest.raises(ImageError, match=REFUSED[fname]) as err:
        load_image(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    # refused from the header and the file's size: no decoding (these took 5-11 s of decoding before)
    assert time.process_time() - start < 1.0
    read_exif(path)  # never raises on a non-empty file


def test_regression_folder_holds_only_documented_inputs():
    listed = set(REFUSED) | {"README.md"}
    assert {p.name for p in HERE.iterdir()} == listed


def test_progressive_jpeg_with_thousands_of_scans_is_refused_before_decoding():
    data = fuzz_corpus._many_scans(300)  # the corpus's small progressive seed with 300 more scans
    with pytest.raises(ImageError, match=rf"has 3\d\d scans, more than the limit of {MAX_JPEG_SCANS}"):
        load_image(data, name="scans.jpg")
    # the seed itself (10 scans) loads
    assert load_image(fuzz_corpus.seeds()["jpeg-progressive"][0]).size == (80, 56)


@pytest.mark.parametrize("make", [lambda: fuzz_corpus._bmp_rle_rows(10000, 10000),
                                  lambda: fuzz_corpus._bmp_rle4_runs(4000, 4000)])
def test_big_rle_bmps_are_refused_before_pillow_decodes_them_pixel_by_pixel(make):
    with pytest.raises(ImageError, match="RLE-compressed BMP"):
        load_image(make(), name="rle.bmp")
    small = fuzz_corpus._bmp_rle_rows(300, 200)  # the same construction under the limit still loads
    assert load_image(small, name="small.bmp").size == (300, 200)


def test_data_budgets_accept_every_valid_seed_and_refuse_a_short_stream():
    for name, (data, _) in fuzz_corpus.seeds().items():
        check_data_budget(data, open_header(data, name), name)  # raises if a valid file were refused
    tiny = fuzz_corpus.png_raw(4000, 4000, 8, 2, b"\0" * (1 + 3 * 4000))  # 16 MP claimed, one row of data
    with pytest.raises(ImageError, match="holds only"):
        check_data_budget(tiny, open_header(tiny, "tiny.png"), "tiny.png")


def test_flat_images_at_the_edge_of_the_budgets_still_load():
    from PIL import Image

    import io

    # the most compressible legitimate files: flat colour, as big as the test can afford
    for fmt, kw in (("PNG", {"optimize": True}), ("JPEG", {"quality": 1, "optimize": True}), ("GIF", {})):
        im = Image.new("RGB", (2000, 1500), (10, 200, 30))
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        out = load_image(buf.getvalue(), name=f"flat.{fmt.lower()}")
        assert out.size == (2000, 1500)


def test_scan_count_skips_stuffing_restart_markers_and_fill_bytes():
    import io

    import numpy as np
    from PIL import Image

    from geoscope.data.images import _jpeg_layout

    noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG", quality=95, progressive=True, restart_marker_blocks=4)
    data = buf.getvalue()
    # the entropy-coded data holds stuffed 0xFF 0x00 bytes and restart markers the scan must step over
    assert data.count(b"\xff\x00") > 10 and data.count(b"\xff\xd0") > 10
    sos = data.count(b"\xff\xda")  # a marker never occurs inside entropy-coded data (0xFF is stuffed)
    assert sos > 1 and _jpeg_layout(data) == (True, sos)
    filled = data.replace(b"\xff\xda", b"\xff\xff\xff\xda")  # fill bytes before a marker are legal
    assert _jpeg_layout(filled) == (True, sos)
    assert load_image(filled, name="filled.jpg").size == (160, 120)
    assert _jpeg_layout(data[: len(data) // 2])[1] < sos  # a truncated file stops at its last whole marker
