"""Augmentations for views of unknown heading and unknown source (cross-view training and search).

A reference tile is north-up; a query arrives at any heading and from any sensor. Training shows the
query branch views turned by any angle and pushed through photometric changes a new source brings:
colour, contrast, gamma, blur, noise, JPEG, greyscale and histogram shifts (:func:`photometric`).

Rotation keeps the ground extent fixed: :func:`rotate_view` turns an image about its centre and keeps the
central square of side ``side / sqrt(2)`` (the largest square with no empty corners at any angle), resized
back to the input size. :func:`centre_view` is the same crop without turning, for the north-up side, so both
sides always show the same ground. :func:`rotation_views` gives ``n`` turned views for test-time rotation
pooling. Everything is PIL / numpy, seeded through a ``numpy.random.Generator``.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

#: the share of the side kept by rotate_view / centre_view (no empty corners at any angle)
CROP_SHARE = 1.0 / math.sqrt(2.0)


def _crop_centre(img: Image.Image, share: float, size: tuple[int, int]) -> Image.Image:
    w, h = img.size
    cw, ch = w * share, h * share
    box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
    return img.resize(size, Image.Resampling.BILINEAR, box=box)


def rotate_view(img: Image.Image, degrees: float, out_size: int | None = None) -> Image.Image:
    """``img`` turned clockwise by ``degrees`` about its centre, cropped to the central square of side
    ``CROP_SHARE`` x side and resized to ``out_size`` (default: the input's size)."""
    img = img.convert("RGB")
    size = (out_size, out_size) if out_size else img.size
    turned = img.rotate(-float(degrees), resample=Image.Resampling.BILINEAR, expand=False) if degrees % 360 else img
    return _crop_centre(turned, CROP_SHARE, size)


def centre_view(img: Image.Image, out_size: int | None = None) -> Image.Image:
    """The north-up counterpart of :func:`rotate_view`: the same central crop, not turned."""
    return rotate_view(img, 0.0, out_size)


def rotation_views(img: Image.Image, n: int, out_size: int | None = None, offset: float = 0.0) -> list[Image.Image]:
    """``n`` views of ``img`` turned by ``offset + i * 360 / n`` degrees (test-time rotation pooling)."""
    return [rotate_view(img, offset + i * 360.0 / n, out_size) for i in range(max(1, int(n)))]


def photometric(img: Image.Image, rng: np.random.Generator, strength: float = 1.0) -> Image.Image:
    """Photometric changes of another sensor or season, each applied with some probability.

    At ``strength`` 1: brightness / contrast / saturation x0.6-1.4, gamma 0.6-1.6, per-channel gains
    +-15 %, a histogram shift (+-25 grey levels), greyscale (p 0.2), Gaussian blur up to 1.5 px, noise
    up to 8 grey levels, JPEG quality 30-95. ``strength`` 0 returns the image unchanged.
    """
    if strength <= 0:
        return img
    s = float(strength)
    img = img.convert("RGB")
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        if rng.random() < 0.8:
            img = enhancer(img).enhance(float(np.exp(rng.uniform(-1, 1) * 0.35 * s)))
    a = np.asarray(img, dtype=np.float32) / 255.0
    if rng.random() < 0.7:
        a = a ** float(np.exp(rng.uniform(-1, 1) * 0.48 * s))
    if rng.random() < 0.5:
        a = a * (1.0 + rng.uniform(-0.15, 0.15, 3) * s)
    if rng.random() < 0.5:
        a = a + rng.uniform(-25, 25) * s / 255.0
    if rng.random() < 0.2 * s:
        a = np.repeat(a @ np.array([[0.299], [0.587], [0.114]], dtype=np.float32), 3, axis=2)
    if rng.random() < 0.4:
        a = a + rng.normal(0.0, rng.uniform(0, 8) * s / 255.0, a.shape)
    img = Image.fromarray((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")
    if rng.random() < 0.4:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.5) * s)))
    if rng.random() < 0.7:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(round(95 - rng.uniform(0, 65) * s)))
        buf.seek(0)
        img = Image.open(buf).convert("RGB")
    return img


def augment_view(img: Image.Image, rng: np.random.Generator, rotation: float = 180.0, strength: float = 1.0,
                 base_deg: float = 0.0, out_size: int | None = None) -> Image.Image:
    """A training view: turned by ``base_deg`` plus a uniform angle in +-``rotation`` degrees, cropped like
    :func:`rotate_view`, then :func:`photometric` at ``strength``."""
    deg = base_deg + (float(rng.uniform(-rotation, rotation)) if rotation > 0 else 0.0)
    return photometric(rotate_view(img, deg, out_size), rng, strength)
