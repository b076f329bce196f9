"""JPEG draft-mode decoding for models that see photos small: faster, and the pixels the model sees stay close."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from geoscope.data.decode import DRAFT_MARGIN, FULL_SIZE_KEY, draft_request, load_image_for
from geoscope.data.images import load_image
from geoscope.encoders.preprocess import clip_transform


def _photo(w, h, seed=0, fmt="JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([np.sin(x / 37) * 60 + 120, np.cos(y / 23) * 60 + 110, (x + y) / (w + h) * 200], -1)
    img[h // 3 : h // 2, w // 4 : w // 2] = [250, 20, 20]  # sharp edges
    img += rng.normal(0, 8, img.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format=fmt, quality=90)
    return buf.getvalue()


def test_draft_request_keeps_the_margin_over_the_target():
    w, h = draft_request((4000, 3000), 224)
    assert h >= DRAFT_MARGIN * 224 and w <= 600 and abs(w / h - 4 / 3) < 0.01
    assert draft_request((800, 600), 224) is None  # a 1/2 reduction would go under the margin
    assert draft_request((3000, 4000), 256)[0] >= DRAFT_MARGIN * 256


@pytest.mark.parametrize("size", [(3000, 2001), (2001, 3000), (2600, 2600)])
def test_drafted_photo_gives_the_model_nearly_the_same_pixels(size):
    data = _photo(*size)
    t = clip_transform(224)
    full, drafted = load_image(data), load_image_for(data, t.resize)
    assert full.size == size and max(drafted.size) <= max(size) // 2  # decoded at a reduced scale
    assert drafted.info[FULL_SIZE_KEY] == size
    a, b = t.to_uint8(full).astype(float), t.to_uint8(drafted).astype(float)
    assert a.shape == b.shape == (224, 224, 3)
    assert np.abs(a - b).mean() <= 2.0  # grey levels of 255, on average


def test_small_photos_and_other_formats_decode_in_full():
    small = _photo(600, 400)
    assert load_image_for(small, 224).size == (600, 400)
    png = _photo(1800, 1200, fmt="PNG")
    im = load_image_for(png, 224)
    assert im.size == (1800, 1200) and FULL_SIZE_KEY not in im.info


def test_exif_rotation_is_applied_to_a_drafted_photo():
    im = Image.open(io.BytesIO(_photo(3000, 2000)))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes(), quality=90)
    drafted = load_image_for(buf.getvalue(), 224)
    full = load_image(buf.getvalue())
    assert full.size == (2000, 3000) and drafted.size[0] < drafted.size[1]  # portrait, like the full decode
    t = clip_transform(224)
    assert np.abs(t.to_uint8(full).astype(float) - t.to_uint8(drafted).astype(float)).mean() <= 2.0


def test_embed_pipeline_decodes_large_jpegs_in_draft_mode(tmp_path):
    """The store's decoding step asks loaders for the encoder's resize: big JPEGs decode reduced, the
    pixels the model gets stay within the same tolerance, and a user's loader without the keyword works."""
    from geoscope.store.decode import DraftLoader, _load_payload

    path = tmp_path / "big.jpg"
    path.write_bytes(_photo(3000, 2001))
    t = clip_transform(224)
    loader = DraftLoader(_load_payload, t.resize)
    assert loader.draft_size == t.resize
    drafted = loader(str(path))
    assert max(drafted.size) <= 1500 and drafted.info[FULL_SIZE_KEY] == (3000, 2001)
    full = load_image(str(path))
    assert np.abs(t.to_uint8(full).astype(float) - t.to_uint8(drafted).astype(float)).mean() <= 2.0

    plain = DraftLoader(lambda payload: load_image(payload), t.resize)  # no draft_size keyword
    assert plain.draft_size is None and plain(str(path)).size == (3000, 2001)


def test_drafted_photo_gives_nearly_the_same_embedding():
    """What the model computes from a drafted decode: cosine >= 0.999 to the full decode's embedding."""
    from geoscope.encoders import create_encoder

    enc = create_encoder("efficientnet-lite0", runtime="torch")
    for size in [(3000, 2001), (2600, 2600)]:
        data = _photo(*size, seed=size[0])
        full, drafted = load_image(data), load_image_for(data, enc.transform.resize)
        assert drafted.size[0] < size[0]
        a, b = enc.encode_images([full, drafted], batch_size=2)
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.999
