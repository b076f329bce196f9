"""Serve test fixtures: tiny models of every kind (built once per test process), a gated encoder, a live server.

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


class GatedEncoder:
    """Wraps an encoder: records every batch size, and (while ``gate`` is cleared) holds each forward pass.

    Keeps the wrapped encoder's ``transform`` / ``encode_pixels`` (the pool's fast path); with
    ``fast=False`` it offers only ``encode_images`` (the fallback path)."""

    def __init__(self, inner, fast: bool = True):
        import threading

        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)
        if fast:
            self.transform = inner.transform
            self.encode_pixels = self._encode_pixels

    def eval(self):
        return self

    def _hold(self, n: int) -> None:
        self.batches.append(n)
        self.entered.release()
        if not self.gate.wait(timeout=60):
            raise RuntimeError("gate never opened")

    def _encode_pixels(self, pixels):
        self._hold(len(pixels))
        return self.inner.encode_pixels(pixels)

    def encode_images(self, images, batch_size=32):
        self._hold(len(images))
        return self.inner.encode_images(images, batch_size=batch_size)


class LiveServer:
    """A real uvicorn server for ``app`` on a free loopback port, in a background thread."""

    def __init__(self, app):
        import socket
        import threading

        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_keep_alive=5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "LiveServer":
        import time

        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
