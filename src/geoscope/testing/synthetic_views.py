"""Synthetic ground-level-ish views with a known answer, cut from real overhead imagery.

No geotagged ground photos install with geoscope, so cross-view search is tested and measured on
views made from the area's own imagery: a square of ground centred on a random point, turned to a
random heading (row 0 faces it, as a photo facing that way shows the ground ahead at the top), with
photometric changes (brightness, contrast, gamma, colour cast, blur, noise) and a mild perspective
warp, so a matcher has to recognise the ground rather than the pixels. For tests and benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from geoscope.data.tile_grid import tile_grid
from geoscope.geo.sphere import destination


@dataclass
class View:
    image: Image.Image
    lat: float
    lon: float
    heading_deg: float


def _perspective_coeffs(src: list[tuple[float, float]], dst: list[tuple[float, float]]) -> list[float]:
    """PIL PERSPECTIVE coefficients mapping output points ``dst`` to input points ``src``."""
    a = []
    b = []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b.extend([u, v])
    return list(np.linalg.solve(np.asarray(a, float), np.asarray(b, float)))


def photometric(image: Image.Image, rng: np.random.Generator, strength: float = 1.0, perspective: float = 0.12) -> Image.Image:
    """``image`` with random brightness, contrast, gamma, colour cast, blur, noise and a keystone warp."""
    arr = np.asarray(image, np.float32) / 255.0
    s = float(strength)
    gamma = float(np.exp(rng.uniform(-0.25, 0.25) * s))
    arr = np.clip(arr, 0, 1) ** gamma
    mean = arr.mean(axis=(0, 1), keepdims=True)
    arr = (arr - mean) * rng.uniform(1 - 0.3 * s, 1 + 0.3 * s) + mean
    arr = arr * rng.uniform(1 - 0.25 * s, 1 + 0.25 * s) * rng.uniform(1 - 0.08 * s, 1 + 0.08 * s, size=(1, 1, 3))
    arr = arr + rng.normal(0, 0.015 * s, size=arr.shape)
    out = Image.fromarray((np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")
    if s > 0:
        out = out.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0, 1.0 * s))))
    if perspective > 0:
        w, h = out.size
        k = float(rng.uniform(0.5, 1.0)) * perspective * w
        # the far (top) edge of the picture spans more ground than the near edge: a keystone
        src = [(0 - 0.0, 0.0), (w, 0.0), (w - k, h), (k, h)]
        dst = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)]
        out = out.transform((w, h), Image.Transform.PERSPECTIVE, _perspective_coeffs(src, dst), Image.Resampling.BICUBIC)
    return out


def synthetic_view(raster, lat: float, lon: float, heading_deg: float, size_m: float, px: int,
                   rng: np.random.Generator, strength: float = 1.0, perspective: float = 0.12) -> View:
    """A view of the ground centred on (lat, lon), facing ``heading_deg``, ``size_m`` across."""
    tile = raster.read_tile(tile_grid(lat, lon, size_m / 1000.0, px, "auto", heading_deg))
    return View(photometric(tile.image(), rng, strength, perspective), float(lat), float(lon), float(heading_deg))


def random_points(box: tuple[float, float, float, float], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` (lat, lon) points uniform in ``box`` (south, west, north, east)."""
    s, w, no, e = box
    return np.stack([rng.uniform(s, no, n), rng.uniform(w, e, n)], axis=1)


def random_route(box: tuple[float, float, float, float], n: int, spacing_m: float, rng: np.random.Generator,
                 turn_deg: float = 30.0, tries: int = 1000) -> np.ndarray:
    """(n, 2) lat/lon of a route of ``n`` positions ``spacing_m`` apart inside ``box`` (a random start,
    a random direction turning by up to ``turn_deg`` at each step)."""
    s, w, no, e = box
    for _ in range(tries):
        lat, lon = rng.uniform(s, no), rng.uniform(w, e)
        bearing = rng.uniform(0, 360)
        pts = [(lat, lon)]
        for _ in range(n - 1):
            bearing += rng.uniform(-turn_deg, turn_deg)
            next_lat, next_lon = destination(lat, lon, bearing, spacing_m / 1000.0)
            lat, lon = float(next_lat), float(next_lon)
            pts.append((lat, lon))
        arr = np.asarray(pts)
        if (arr[:, 0] > s).all() and (arr[:, 0] < no).all() and (arr[:, 1] > w).all() and (arr[:, 1] < e).all():
            return arr
    raise ValueError("no route of that length fits in the box")
