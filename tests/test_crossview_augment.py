"""Augmentations for unknown heading and unknown source (data/view_augment.py)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from geoscope.data.view_augment import augment_view, centre_view, photometric, rotate_view, rotation_views


def _arrow(size: int = 64) -> Image.Image:
    """A white block in the upper half of the central region, on black: its position shows the turn."""
    a = np.zeros((size, size, 3), np.uint8)
    a[20:30, 28:36] = 255
    return Image.fromarray(a)


def _centroid(img: Image.Image) -> tuple[float, float]:
    g = np.asarray(img.convert("L"), dtype=float)
    ys, xs = np.nonzero(g > 128)
    return ys.mean(), xs.mean()


def test_rotate_view_turns_clockwise_and_keeps_the_ground_extent():
    img = _arrow()
    north = centre_view(img)
    assert north.size == img.size
    y0, x0 = _centroid(north)
    assert y0 < 32 and abs(x0 - 32) < 2  # above the centre
    east = rotate_view(img, 90)  # turned clockwise: the block moves to the right of the centre
    y1, x1 = _centroid(east)
    assert x1 > 40 and abs(y1 - 32) < 3
    # the crop is the central square of side / sqrt(2): the block (from 20 px) sits at the same distance
    assert abs((32 - y0) - (x1 - 32)) < 1.5
    # a turn and its inverse bring the view back (up to interpolation)
    back = rotate_view(img.rotate(-90), -90)  # PIL turns counter-clockwise: -90 is clockwise
    assert np.abs(np.asarray(back, float) - np.asarray(north, float)).mean() < 3
    assert rotate_view(img, 30, out_size=24).size == (24, 24)


def test_rotation_views_cover_the_circle():
    views = rotation_views(_arrow(), 4)
    assert len(views) == 4
    cents = [_centroid(v) for v in views]
    # north, east, south, west of the centre in turn
    assert cents[0][0] < 28 and cents[1][1] > 36 and cents[2][0] > 36 and cents[3][1] < 28


def test_photometric_is_seeded_changes_pixels_and_is_off_at_zero():
    rng_img = np.random.default_rng(0)
    img = Image.fromarray((rng_img.uniform(40, 200, (48, 48, 3))).astype(np.uint8))
    a = photometric(img, np.random.default_rng(3))
    b = photometric(img, np.random.default_rng(3))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    diffs = [np.abs(np.asarray(photometric(img, np.random.default_rng(s)), float) - np.asarray(img, float)).mean()
             for s in range(12)]
    assert np.mean(diffs) > 5 and len({round(d, 3) for d in diffs}) > 6  # different changes per seed
    assert photometric(img, np.random.default_rng(0), strength=0) is img
    # some seeds turn the view grey (a sensor without colour)
    greys = 0
    for s in range(40):
        arr = np.asarray(photometric(img, np.random.default_rng(s)), float)
        greys += np.abs(arr[..., 0] - arr[..., 1]).mean() < 2.5 and np.abs(arr[..., 1] - arr[..., 2]).mean() < 2.5
    assert 1 <= greys <= 20


def test_augment_view_rotation_range():
    img = _arrow()
    rng = np.random.default_rng(0)
    # no rotation and no photometric change: exactly the north-up view
    assert np.array_equal(np.asarray(augment_view(img, rng, rotation=0, strength=0)), np.asarray(centre_view(img)))
    ys = [_centroid(augment_view(img, np.random.default_rng(s), rotation=180, strength=0))[0] for s in range(20)]
    assert max(ys) > 36 and min(ys) < 28  # any heading
