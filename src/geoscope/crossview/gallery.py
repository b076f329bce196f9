"""Backbone features of views, cached in the embedding store: computed once, reused, refused when stale.

A reference gallery over an area or the planet is the expensive part of cross-view search, so the
frozen backbone's features of the reference tiles live in an embedding store (``geoscope.store``), which
records the encoder that made them. :func:`embed_views` fills such a store (resumable, like every store)
or returns the finished one; a store made by another encoder is refused with one sentence
(:func:`check_store_encoder`). :func:`store_features` reads a store back in the order of given ids.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from collections.abc import Callable, Iterable

import numpy as np

from geoscope.errors import InputError
from geoscope.store import EmbeddingStore, embed_dataset

STATE = "store.json"


def check_store_encoder(path: str | os.PathLike, encoder_name: str, what: str = "reference gallery") -> None:
    """Refuse a store (finished or not) whose features come from another encoder than ``encoder_name``."""
    state_file = Path(path) / STATE
    if not state_file.is_file():
        return
    try:
        made_by = json.loads(state_file.read_text(encoding="utf-8")).get("encoder")
    except (OSError, ValueError):
        return  # not ours to judge: the store itself reports a damaged manifest
    if made_by != encoder_name:
        raise InputError(f"the {what} cached in {path} was embedded with encoder {made_by!r} but the model uses "
                         f"{encoder_name!r}; delete that folder or give another one so it is embedded again")


def embed_views(items: Iterable[tuple[str, Callable, float, float]] | Callable[[], Iterable], encoder,
                out_dir: str | os.PathLike, what: str = "reference gallery", batch_size: int = 32,
                progress: bool = True) -> EmbeddingStore:
    """The store of ``encoder`` features of views in ``out_dir``: returned as it is when finished (nothing is
    made or embedded again), else filled (resuming: views already stored are made but not embedded again).
    ``items``: (id, make_image, lat, lon) tuples, or a function returning them."""
    check_store_encoder(out_dir, encoder.name, what)
    state_file = Path(out_dir) / STATE
    if state_file.is_file():
        try:
            if json.loads(state_file.read_text(encoding="utf-8")).get("complete"):
                return EmbeddingStore.open(out_dir)
        except ValueError:
            pass
    source = items() if callable(items) else items

    def rows():
        for pid, make, lat, lon in source:
            yield pid, make(), float(lat), float(lon)

    return embed_dataset(rows(), encoder, out_dir, batch_size=batch_size, workers=0, progress=progress)


def store_features(store: EmbeddingStore, ids: list[str], what: str) -> tuple[np.ndarray, np.ndarray]:
    """(features (len(ids), dim) float32 with NaN rows where missing, present mask) in the order of ``ids``."""
    if len(store) == 0:
        raise InputError(f"the {what} store {getattr(store, 'path', '')} is empty: no view could be embedded")
    where = {str(k): i for i, k in enumerate(store.ids)}
    rows = np.array([where.get(i, -1) for i in ids], dtype=np.int64)
    present = rows >= 0
    feats = np.full((len(ids), store.dim), np.nan, dtype=np.float32)
    if present.any():
        feats[present] = store.read_rows(rows[present]) if hasattr(store, "read_rows") else \
            np.asarray(store.embeddings[rows[present]], dtype=np.float32)
    return feats, present
