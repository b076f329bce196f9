"""Synthetic embeddings for the head and training tests."""

from __future__ import annotations

import numpy as np

from geoscope.geo.sphere import to_unit


def location_features(lat, lon, dim=48, seed=0, noise=0.05):
    """Embeddings that are a smooth function of the location (random Fourier features of the unit vector)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(3, dim // 2)) * 2.5
    u = to_unit(lat, lon) @ w
    e = np.concatenate([np.sin(u), np.cos(u)], 1)
    return (e + np.random.default_rng(seed + 1).normal(0, noise, e.shape)).astype(np.float32)
