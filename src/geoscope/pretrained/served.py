"""GeoCLIP's head served without torch: its arrays (image MLP, logit scale, GPS gallery and the
gallery's normalised embeddings) in one safetensors file under ``<cache>/geoclip-served/``, keyed by
the SHA-256 of the ``geoclip`` package's weight files and of the gallery. The first load builds it from
the torch head (``heads.geoclip.load_geoclip_head``, which computes the gallery embeddings once); every
later load reads the file with numpy (``heads.gallery_search.ServedRetrievalHead``), which is what
lets ``geoscope locate --model geoclip`` answer without importing torch or transformers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from geoscope.encoders.export import file_digest
from geoscope.heads.gallery_search import ServedRetrievalHead
from geoscope.heads.geoclip_files import GALLERY_FILE, WEIGHT_FILES, geoclip_file

_VERSION = b"geoscope-served-geoclip-v1"


def served_key(gallery=None) -> str:
    h = hashlib.sha256(_VERSION)
    for rel in WEIGHT_FILES:
        h.update(file_digest(geoclip_file(rel)).encode())
    if gallery is None:
        h.update(file_digest(geoclip_file(GALLERY_FILE)).encode())
    else:
        h.update(np.ascontiguousarray(np.asarray(gallery, dtype=np.float64)).tobytes())
    return h.hexdigest()[:24]


def served_path(cache: str | Path, gallery=None) -> Path:
    return Path(cache) / "geoclip-served" / f"{served_key(gallery)}.safetensors"


def served_geoclip_head(cache: str | Path, progress: bool = True, gallery=None) -> ServedRetrievalHead:
    """GeoCLIP's published head as numpy arrays, from the cache when there, else built (with torch) and kept."""
    path = served_path(cache, gallery)
    head = ServedRetrievalHead.load(path) if path.is_file() else None
    if head is not None:
        return head
    from geoscope.heads.geoclip import load_geoclip_head  # torch: only to build the file once

    served = load_geoclip_head(cache, progress=progress, gallery=gallery).served()
    try:
        served.save(path)
    except OSError:
        pass  # a read-only cache costs time, not answers
    return served
