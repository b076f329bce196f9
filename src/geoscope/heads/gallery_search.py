"""Retrieval over a GPS gallery in numpy: the search and softmax of ``RetrievalHead``, and the whole
head served without torch.

``GallerySearch`` holds a gallery's coordinates and normalised embeddings and turns normalised image
features into a ``HeadOutput`` (top-k coordinates with their probabilities, the whole distribution as
support). Up to ``heads.ann.ann_threshold()`` entries it is exact: one matrix product and a softmax
over every entry (GeoCLIP's 100K gallery: ~20 ms per image on 2 cores). Above it the candidates come
from an HNSW index (``heads.ann``, built once and cached) and the softmax runs over the
:data:`ANN_SUPPORT` nearest entries, computed exactly: the rest of the gallery, with lower logits, is
left out of the normaliser (probabilities are slightly overstated). ``search="exact"`` always computes
the full softmax.

``ServedRetrievalHead`` is a trained ``RetrievalHead`` as plain arrays (standardisation, MLP, logit
scale, gallery and its embeddings), saved as one safetensors file: a named model such as ``geoclip``
answers from it without importing torch (``RetrievalHead.served()`` makes one; ``pretrained``
caches it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geoscope.errors import InputError
from geoscope.heads.ann import AnnIndex, ann_threshold, cached_index
from geoscope.heads.output import HeadOutput

#: entries whose exact logits make the softmax when an HNSW index finds the candidates
ANN_SUPPORT = 256
SEARCHES = ("auto", "exact", "ann")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
                       "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def map_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file as read-only arrays mapped from it (the format: an 8-byte
    little-endian header length, a JSON header of dtype / shape / byte offsets, the data). A file
    that does not add up is a ValueError."""
    import json

    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if not 2 <= n <= min(size - 8, 100_000_000):
            raise ValueError(f"{path}: not a safetensors file")
        header = json.loads(f.read(n))
    base = 8 + n
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
        shape = tuple(int(d) for d in info["shape"])
        start, end = (int(v) for v in info["data_offsets"])
        count = int(np.prod(shape, dtype=np.int64))
        if not 0 <= start <= end <= size - base or end - start != count * dtype.itemsize:
            raise ValueError(f"{path}: tensor {name} does not fit the file")
        out[name] = (np.memmap(path, dtype=dtype, mode="r", offset=base + start, shape=shape) if count
                     else np.zeros(shape, dtype))
    return out


class GallerySearch:
    """A gallery ((N, 2) lat/lon and (N, D) unit embeddings) searched by unit image features.

    ``logit_scale``: the multiplier of the cosines (``exp`` of a head's log scale). ``index_path``:
    where the HNSW index is kept for galleries above the threshold (None: built in memory, not kept).
    """

    def __init__(self, gallery: np.ndarray, embeddings: np.ndarray, logit_scale: float,
                 index_path: str | Path | None = None, search: str = "auto"):
        if search not in SEARCHES:
            raise InputError(f"search must be one of {', '.join(SEARCHES)}, got {search!r}")
        self.gallery = np.asarray(gallery)
        self.embeddings = np.asarray(embeddings, dtype=np.float32)
        if len(self.gallery) == 0:
            raise InputError("the retrieval head has an empty GPS gallery; set one with set_gallery()")
        self.logit_scale = float(logit_scale)
        self.index_path = None if index_path is None else Path(index_path)
        self.search = search
        self._index: AnnIndex | None = None

    def uses_index(self) -> bool:
        return self.search == "ann" or (self.search == "auto" and len(self.embeddings) >= ann_threshold())

    def index(self) -> AnnIndex:
        """The HNSW index over the gallery embeddings (read from ``index_path`` or built once)."""
        if self._index is None:
            what = f"{len(self.embeddings):,}-entry gallery"
            self._index = (cached_index(self.embeddings, self.index_path, what) if self.index_path is not None
                           else AnnIndex.build(self.embeddings, what=what))
        return self._index

    def predict_features(self, feats: np.ndarray, top_k: int) -> HeadOutput:
        """``HeadOutput`` for (B, D) unit image features."""
        feats = np.atleast_2d(np.asarray(feats, dtype=np.float32))
        k = min(int(top_k), len(self.gallery))
        coords = self.gallery.astype(np.float64)
        if not self.uses_index():
            probs = softmax(self.logit_scale * (feats @ self.embeddings.T))
            idx = np.argpartition(-probs, k - 1, axis=1)[:, :k] if k < probs.shape[1] else np.tile(np.arange(k), (len(probs), 1))
            order = np.argsort(-np.take_along_axis(probs, idx, 1), axis=1, kind="stable")
            idx = np.take_along_axis(idx, order, 1)
            scores = np.take_along_axis(probs, idx, 1)
            return HeadOutput(None, coords[idx], scores.astype(np.float64), None, {"gallery_index": idx},
                              coords, probs, candidate_support=idx, neighbourhood="gallery entry")
        m = min(max(k, ANN_SUPPORT), len(self.gallery))
        _, cand = self.index().search(feats, m)
        cand = np.where(cand < 0, cand.max(axis=1, keepdims=True), cand)  # fewer found than asked: repeat one
        logits = self.logit_scale * np.einsum("bd,bmd->bm", feats, self.embeddings[cand])
        probs = softmax(logits)
        order = np.argsort(-probs, axis=1, kind="stable")
        cand, probs = np.take_along_axis(cand, order, 1), np.take_along_axis(probs, order, 1)
        return HeadOutput(None, coords[cand[:, :k]], probs[:, :k].astype(np.float64), None,
                          {"gallery_index": cand[:, :k]}, coords[cand], probs,
                          candidate_support=np.broadcast_to(np.arange(k), (len(cand), k)).copy(),
                          neighbourhood="gallery entry")


class ServedRetrievalHead:
    """A trained retrieval head as numpy arrays: standardise -> MLP (ReLU between layers) -> normalise,
    then :class:`GallerySearch`. Same ``predict`` as ``RetrievalHead``; no torch."""

    kind = "retrieval"
    n_cells = 0
    uses_gallery = True
    training = False

    def __init__(self, mean: np.ndarray, inv_std: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]],
                 search: GallerySearch):
        self.mean = np.asarray(mean, np.float32)
        self.inv_std = np.asarray(inv_std, np.float32)
        self.layers = [(np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in layers]
        self.search = search
        self.in_dim = int(self.mean.shape[0])

    def eval(self) -> "ServedRetrievalHead":
        return self

    def image_features(self, emb) -> np.ndarray:
        x = (np.atleast_2d(np.asarray(emb, dtype=np.float32)) - self.mean) * self.inv_std
        for i, (w, b) in enumerate(self.layers):
            x = x @ w.T + b
            if i < len(self.layers) - 1:
                np.maximum(x, 0, out=x)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    def predict(self, emb, top_k: int = 5) -> HeadOutput:
        emb = np.atleast_2d(np.asarray(emb, dtype=np.float32))
        if emb.shape[-1] != self.in_dim:
            raise InputError(
                f"the retrieval head expects {self.in_dim}-dimensional embeddings but got {emb.shape[-1]}; "
                "the embeddings come from a different encoder than the one the head was trained on"
            )
        return self.search.predict_features(self.image_features(emb), top_k)

    # --- one file -------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write every array to one safetensors file, atomically."""
        from safetensors.numpy import save_file

        from geoscope.atomic import atomic_path

        tensors = {"mean": self.mean, "inv_std": self.inv_std, "gallery": self.search.gallery.astype(np.float64),
                   "gallery_embeddings": self.search.embeddings,
                   "logit_scale": np.array([self.search.logit_scale], np.float64)}
        for i, (w, b) in enumerate(self.layers):
            tensors[f"layers.{i}.weight"], tensors[f"layers.{i}.bias"] = w, b
        path = Path(path)
        with atomic_path(path) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp),
                      metadata={"format": "geoscope-served-retrieval", "layers": str(len(self.layers))})
        return path

    @classmethod
    def load(cls, path: str | Path, index_path: str | Path | None = None) -> "ServedRetrievalHead | None":
        """The head saved at ``path``, or None when the file is missing or unreadable. The arrays are
        mapped from the file, not read: a cold start does not copy a 200 MB gallery it touches once."""
        from safetensors import SafetensorError

        try:
            t = map_safetensors(path)
            n = sum(1 for k in t if k.startswith("layers.") and k.endswith(".weight"))
            layers = [(t[f"layers.{i}.weight"], t[f"layers.{i}.bias"]) for i in range(n)]
            search = GallerySearch(t["gallery"], t["gallery_embeddings"], float(t["logit_scale"][0]), index_path)
            return cls(t["mean"], t["inv_std"], layers, search)
        except (OSError, KeyError, ValueError, SafetensorError):
            return None
