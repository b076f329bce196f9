"""Small fixtures for the cross-view tests: a cheap deterministic encoder (two names, so a gallery made by
one can be refused by the other) and synthetic "places" seen by two sources."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from geoscope.encoders.base import Encoder
from geoscope.encoders.preprocess import ImageTransform
from geoscope.encoders.registry import register_encoder

SIZE = 16


class ThumbEncoder(Encoder):
    """Features = a fixed random projection (tanh) of a 16 px thumbnail's pixels and its 4x4 grey blocks."""

    has_tokens = False

    def __init__(self, name: str = "test-thumbs", dim: int = 48, seed: int = 0):
        super().__init__()
        self.name, self.dim = name, dim
        self.transform = ImageTransform(resize=SIZE, crop=(SIZE, SIZE), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                                        resample="bilinear")
        g = torch.Generator().manual_seed(seed)
        self.proj = torch.nn.Parameter(torch.randn(3 * 4 * 4, dim, generator=g) / 4.0, requires_grad=False)
        self.calls = 0
        self.eval()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        self.calls += len(pixels)
        x = torch.nn.functional.adaptive_avg_pool2d(pixels.float(), 4).flatten(1)
        return torch.tanh(x @ self.proj)


@register_encoder("test-thumbs", family="test", dim=48, input_size=SIZE, source="tests/_crossviewfixtures.py",
                  licence="Apache-2.0 (geoscope's tests)", description="a fixed random projection of 4x4 blocks "
                  "(cross-view tests)", available=lambda: True)
def _thumbs(precision=None, **kw):
    return ThumbEncoder("test-thumbs", seed=0)


@register_encoder("test-thumbs-b", family="test", dim=48, input_size=SIZE, source="tests/_crossviewfixtures.py",
                  licence="Apache-2.0 (geoscope's tests)", description="test-thumbs with another projection "
                  "(cross-view tests: a second encoder)", available=lambda: True)
def _thumbs_b(precision=None, **kw):
    return ThumbEncoder("test-thumbs-b", seed=1)


def place_image(seed: int, size: int = 48, source: str = "a") -> Image.Image:
    """A synthetic place: a few coloured blobs on a field; source "b" is the same layout in other colours
    (a second sensor), so matching needs what both share: where the blobs are."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    field = np.zeros((size, size))
    for _ in range(4):
        cy, cx, r = rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85), rng.uniform(0.08, 0.2)
        field += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    field /= field.max()
    if source == "a":
        rgb = np.stack([field, 0.6 * field + 0.2, 1 - field], -1)
    else:
        rgb = np.stack([0.3 + 0.5 * field, 0.3 + 0.5 * field, 0.3 + 0.4 * field], -1)
    return Image.fromarray((rgb * 255).astype(np.uint8), "RGB")


def synthetic_pairs(n: int, seed: int = 0):
    """``Pairs`` of n synthetic places spread over the globe: query = source b, reference = source a."""
    from geoscope.crossview.pairs import Pairs

    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-0.9, 0.9, n)))
    lon = rng.uniform(-180, 180, n)
    ids = [f"s{i:04d}" for i in range(n)]
    return Pairs(ids, lat, lon, lambda i: place_image(1000 + i, source="b"), lambda i: place_image(1000 + i, source="a"),
                 {"kind": "synthetic", "n": n, "seed": seed})
