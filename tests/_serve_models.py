"""Tiny models of every kind for the serve tests, built once per test process.

A tiny random CLIP (32 px, saved like a real model, so it is a valid encoder name) embeds synthetic
pictures of a toy world (``_imagefixtures.synthetic_image``); each trainable head (classifier,
regressor, retrieval, hybrid) is trained for a couple of epochs through ``train.train_from_store`` and
saved with ``save_pretrained``; the named pretrained ``geoclip`` model is loaded through its real
loading code with a tiny 224 px backbone (``--weights``) and a small gallery. Answers are not meant to
be good, only real.

``serve_models(tmp_path_factory)`` caches the result in the process, so every test module (and every
session-scoped fixture) shares one set.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from _imagefixtures import random_points, synthetic_image

KINDS = ("classifier", "regressor", "retrieval", "hybrid")
_OPTIONS = {
    "classifier": {"hidden": 32},
    "hybrid": {"hidden": 32},
    "regressor": {"d_model": 16, "n_heads": 2},
    "retrieval": {"queue_size": 64, "hidden_dims": [32]},
}
_CACHE: dict[str, dict] = {}


def _build(root: Path) -> dict:
    from geoscope.encoders import create_encoder
    from geoscope.encoders.testing import save_tiny_clip
    from geoscope.geo.cells import CellHierarchy
    from geoscope.store import EmbeddingStore
    from geoscope.train import TrainConfig, train_from_store

    clip = save_tiny_clip(root / "tiny-clip", projection_dim=16, hidden_size=32)
    encoder = create_encoder(str(clip))
    pts = np.array(random_points(240, seed=3))
    emb = encoder.encode_images([synthetic_image(a, o, size=(32, 32)) for a, o in pts], batch_size=240)
    store = EmbeddingStore.from_arrays(root / "store", range(len(pts)), emb, pts[:, 0], pts[:, 1], encoder=str(clip))
    cells = CellHierarchy.adaptive(pts[:, 0], pts[:, 1], 5, [60, 20])
    dirs = {}
    for kind in KINDS:
        train_from_store(store, kind, root / kind, cells=cells, config=TrainConfig(epochs=2, batch_size=128),
                         head_options=_OPTIONS[kind], progress=False)
        dirs[kind] = root / kind
    return {"root": root, "clip": clip, "dirs": dirs, "cells": cells}


def serve_models(tmp_path_factory) -> dict:
    """{"root", "clip", "dirs": {kind: model dir}, "cells"} built once per process."""
    if "models" not in _CACHE:
        _CACHE["models"] = _build(tmp_path_factory.mktemp("serve-models"))
    return _CACHE["models"]


def load_model(models: dict, kind: str):
    """A Geolocator of ``kind`` (one of KINDS, or "geoclip" for the named pretrained model)."""
    from geoscope.geolocator import Geolocator

    if kind == "geoclip":
        return load_geoclip(models)
    return Geolocator.from_pretrained(models["dirs"][kind])


def load_geoclip(models: dict):
    """The named pretrained ``geoclip`` through its real loader, with a tiny backbone and a 200-point gallery."""
    from _tiny_geoclip_backbone import save_tiny_geoclip_backbone
    from geoscope.geolocator import Geolocator

    root = models["root"]
    clip = root / "tiny-geoclip"
    if not clip.exists():
        save_tiny_geoclip_backbone(clip)
    gallery = np.array(random_points(200, seed=9))
    return Geolocator.from_pretrained("geoclip", weights=clip, precision="fp32", gallery=gallery, progress=False,
                                      cache=root / "cache")


def image_bytes(lat: float = 48.85, lon: float = 2.35, fmt: str = "JPEG", size=(48, 40), mode: str = "RGB",
                **save_kw) -> bytes:
    """A synthetic picture of (lat, lon) encoded as ``fmt`` in ``mode``."""
    im = synthetic_image(lat, lon, size=size)
    if mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save_kw)
    return buf.getvalue()
