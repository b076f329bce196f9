"""``CrossViewModel``: a trained cross-view model as the small API that search code programs against.

    model = CrossViewModel.from_pretrained("runs/xview/model")
    q = model.embed_queries(images, headings=None)      # (N, D) unit rows; unknown heading: rotation pooling
    r = model.embed_references(tiles)                   # (N, D) unit rows, north-up overhead tiles
    p = model.same_place_probability(q, r)              # (N,) calibrated P(same place) per row pair
    preds = model.locate(images)                        # list[Prediction] over the model's reference gallery

The reference side's backbone features of a gallery are cached in an embedding store keyed by the encoder
(:meth:`CrossViewModel.build_gallery`); a store made with another encoder is refused. ``Geolocator`` stays the
object that saves and loads the model folder (``model.geolocator``); ``Geolocator.locate`` on the same folder
gives the same predictions as :meth:`locate` without headings.
"""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import torch

from geoscope.crossview.gallery import embed_views, store_features
from geoscope.data.view_augment import centre_view, rotate_view, rotation_views
from geoscope.encoders import create_encoder
from geoscope.errors import InputError
from geoscope.geolocator import Geolocator
from geoscope.heads.base import eval_mode
from geoscope.heads.crossview.head import CrossViewHead
from geoscope.prediction import Prediction


class CrossViewModel:
    """A Geolocator whose head is a :class:`CrossViewHead`, with the embedding API of both views."""

    def __init__(self, geolocator: Geolocator, reference_encoder=None):
        if not isinstance(geolocator.head, CrossViewHead):
            raise InputError(f"model {geolocator.name!r} has a {geolocator.head.kind} head, not a crossview head; "
                             "train one with geoscope crossview train")
        self.geolocator = geolocator
        self.head: CrossViewHead = geolocator.head
        self._reference_encoder = reference_encoder

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kw) -> "CrossViewModel":
        """Load a model folder written by ``geoscope crossview train`` (keywords as ``Geolocator.from_pretrained``)."""
        return cls(Geolocator.from_pretrained(path, **kw))

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        return self.geolocator.save_pretrained(path)

    # --- encoders ----------------------------------------------------------------------------------

    @property
    def encoder(self):
        """The query side's backbone."""
        return self.geolocator.encoder

    @property
    def reference_encoder(self):
        """The reference side's backbone (the query's unless the model was trained with its own)."""
        if self._reference_encoder is None:
            name = self.head.reference_encoder
            self._reference_encoder = self.encoder if not name or name == self.geolocator.encoder_name else \
                create_encoder(name, runtime="auto")
        return self._reference_encoder

    @property
    def dim(self) -> int:
        return self.head.out_dim

    # --- the protocol ------------------------------------------------------------------------------

    def query_features(self, images: Sequence, headings: Sequence[float | None] | None = None,
                       batch_size: int = 32) -> np.ndarray:
        """Backbone features of the query views: (N, R, in_dim), R = 1 where the heading is known."""
        images = list(images)
        if headings is not None and len(headings) != len(images):
            raise InputError(f"{len(headings)} headings for {len(images)} images: give one per image (None if unknown)")
        R = self.head.rotations
        groups = []
        for i, im in enumerate(images):
            h = None if headings is None else headings[i]
            if h is not None and np.isfinite(h):
                groups.append([rotate_view(im, float(h))] * R)  # known heading: turned back to north up
            else:
                groups.append(rotation_views(im, R) if R > 1 else [centre_view(im)])
        flat = [v for g in groups for v in g]
        if not flat:
            return np.zeros((0, R, self.head.in_dim), np.float32)
        return self.encoder.encode_images(flat, batch_size=batch_size).reshape(len(images), R, -1)

    def embed_queries(self, images: Sequence, headings: Sequence[float | None] | None = None,
                      batch_size: int = 32) -> np.ndarray:
        """(N, D) unit embeddings of query images. ``headings`` (degrees clockwise from north that each image's
        top faces; None / NaN = unknown): known ones are turned back to north up; unknown ones are embedded at
        the model's ``rotations`` turns and the unit embeddings averaged (test-time rotation pooling)."""
        feats = self.query_features(images, headings, batch_size)
        if len(feats) == 0:
            return np.zeros((0, self.dim), np.float32)
        B, R, _ = feats.shape
        with eval_mode(self.head), torch.no_grad():
            q = self.head.embed_query(feats.reshape(B * R, -1)).reshape(B, R, -1).mean(1)
            q = torch.nn.functional.normalize(q, dim=-1)
        return q.numpy().astype(np.float32)

    def reference_features(self, images: Sequence, batch_size: int = 32) -> np.ndarray:
        views = [centre_view(im) for im in images]
        if not views:
            return np.zeros((0, self.head.ref_dim), np.float32)
        return self.reference_encoder.encode_images(views, batch_size=batch_size)

    def embed_references(self, images: Sequence, batch_size: int = 32) -> np.ndarray:
        """(N, D) unit embeddings of north-up overhead tiles (their central view, as in training)."""
        feats = self.reference_features(images, batch_size)
        if len(feats) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.project_references(feats)

    def project_references(self, feats: np.ndarray) -> np.ndarray:
        """(N, D) unit embeddings from reference backbone features (N, ref_dim), e.g. read from a store."""
        with eval_mode(self.head), torch.no_grad():
            return self.head.embed_reference(feats).numpy().astype(np.float32)

    def same_place_probability(self, q_emb: np.ndarray, r_emb: np.ndarray, prior: float = 0.5) -> np.ndarray:
        """(N,) calibrated probability that query row i and reference row i show the same place."""
        return self.head.same_place_probability(q_emb, r_emb, prior)

    # --- the gallery and locating ------------------------------------------------------------------

    def build_gallery(self, items, store_dir: str | os.PathLike, progress: bool = True) -> int:
        """Make the model's gallery from reference tiles: ``items`` are (id, make_image, lat, lon) (or a function
        returning them). Their backbone features are cached in the embedding store ``store_dir`` (reused when
        finished; refused when made by another encoder). Returns the gallery's size."""
        from geoscope.store import EmbeddingStore  # noqa: F401  (the store type embed_views returns)

        def views():
            for pid, make, lat, lon in (items() if callable(items) else items):
                yield pid, (lambda make=make: centre_view(make())), lat, lon

        store = embed_views(views, self.reference_encoder, store_dir, "reference gallery", progress=progress)
        ids = [str(i) for i in store.ids]
        feats, _ = store_features(store, ids, "reference gallery")
        self.head.set_reference_gallery(feats, np.stack([np.asarray(store.lat), np.asarray(store.lon)], 1))
        return len(ids)

    def locate(self, images: Sequence, headings: Sequence[float | None] | None = None, top_k: int = 5,
               sources: Sequence[str] | None = None) -> list[Prediction]:
        """Predictions over the reference gallery: candidates are the best-matching reference positions, refined
        between neighbours (or, with a verifier, verified on the pixels and placed where the best alignment puts
        the query), with the model's confidence and place names."""
        images = list(images)
        feats = self.query_features(images, headings)
        names = list(sources) if sources is not None else [f"image {i}" for i in range(len(feats))]
        if getattr(self.head, "verifier", None) is None:
            return self.geolocator.locate_embeddings(feats, top_k=top_k, sources=names)
        # the verifier aligns the pixels over every heading itself: the images go in as they are
        with self.head.query_pixels([np.asarray(im.convert("RGB")) for im in images]):
            return self.geolocator.locate_embeddings(feats, top_k=top_k, sources=names)
