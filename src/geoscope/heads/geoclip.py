"""The published GeoCLIP head, with its GPS-gallery embeddings cached on disk.

GeoCLIP (Vivanco Cepeda et al., NeurIPS 2023, MIT) is a :class:`~geoscope.heads.retrieval.RetrievalHead`:
an image MLP over CLIP ViT-L/14 embeddings, a location encoder, a logit scale and a 100K-point GPS
gallery (``RetrievalHead.from_geoclip``). The reference implementation re-embeds the whole gallery on
every call (most of its ~20 s per image on a laptop CPU). Here the normalised gallery embeddings are
computed once per (weights, gallery) pair and kept in ``cache_dir/geoclip-gallery/<hash>.safetensors``
(written atomically; a damaged or stale file is recomputed), so a prediction is one matrix product.
The reference implementation itself, as a test oracle, is ``geoscope.testing.geoclip``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from geoscope.atomic import atomic_path
from geoscope.heads.retrieval import RetrievalHead

_CACHE_VERSION = b"geoscope-gallery-embeddings-v1"


def gallery_cache_key(head: RetrievalHead) -> str:
    """A hash of everything the gallery embeddings depend on: location-encoder weights and gallery."""
    h = hashlib.sha256(_CACHE_VERSION)
    for name, tensor in sorted(head.location_encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().contiguous().numpy().tobytes())
    h.update(head.gallery.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def gallery_cache_path(head: RetrievalHead, cache_dir: str | Path) -> Path:
    return Path(cache_dir) / "geoclip-gallery" / f"{gallery_cache_key(head)}.safetensors"


def _read_cached(path: Path, shape: tuple[int, int]) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        emb = load_file(str(path))["embeddings"]
    except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, never trusted
        return None
    return emb if tuple(emb.shape) == shape and emb.dtype == torch.float32 else None


def cache_gallery_embeddings(head: RetrievalHead, cache_dir: str | Path | None, progress: bool = True) -> torch.Tensor:
    """Give ``head`` its normalised gallery embeddings, from ``cache_dir`` when there, else computed and saved.

    Returns the (N, out_dim) float32 embeddings the head will use. ``cache_dir=None``: compute only.
    """
    shape = (len(head.gallery), head.out_dim)
    path = gallery_cache_path(head, cache_dir) if cache_dir is not None else None
    emb = _read_cached(path, shape) if path is not None else None
    if emb is None:
        emb = F.normalize(head.location_encoder.encode(head.gallery, progress=progress).float(), dim=1)
        if path is not None:
            try:
                with atomic_path(path) as tmp:
                    save_file({"embeddings": emb.contiguous()}, str(tmp))
            except OSError:
                pass  # a read-only cache costs time, not answers
    # RetrievalHead.gallery_embeddings() keeps what it computed here; it recomputes when the gallery
    # changes length or the head is trained, so handing it the same tensor is safe.
    head._gallery_emb = emb
    return head.gallery_embeddings()


def load_geoclip_head(cache_dir: str | Path | None = None, progress: bool = True, gallery=None) -> RetrievalHead:
    """GeoCLIP's published head from the installed ``geoclip`` package, gallery embeddings ready.

    ``gallery``: (N, 2) lat/lon to search instead of the published 100K points.
    """
    head = RetrievalHead.from_geoclip(gallery=gallery)
    cache_gallery_embeddings(head, cache_dir, progress=progress)
    return head

