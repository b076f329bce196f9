"""The cross-view head: twin branches into one embedding space, and a search over reference tiles.

    query features (a photo, a tile at any heading)      --query branch-->      unit q
    reference features (a north-up overhead tile)        --reference branch-->  unit r
    similarity = q . r;  P(gallery entry m) = softmax(exp(logit_scale) * q . r_m)

Both branches sit on frozen backbone features (one encoder for both, or ``reference_encoder`` for the
overhead side); ``shared=True`` makes them one module. The **reference gallery** (unit embeddings of
reference tiles and their centres) is data held in buffers, saved with the model: ``set_reference_gallery``
projects backbone features of the tiles, ``set_gallery_embeddings`` takes ready unit embeddings.
``predict`` ranks the gallery for each query; each candidate is refined between neighbours (the
probability-weighted spherical mean of the gallery entries within ``refine_km`` of it), and its
probability is its entry's share of the softmax. A query given as several views (B, R, in_dim), e.g.
rotations of an image of unknown heading, scores each entry by its best view (test-time rotation
pooling). ``same_place`` is the calibrated same-place classifier over a pair of embeddings. With a
``verifier`` (``heads.crossview.verifier``: a dense twin and the reference windows of the gallery's entries), the
best entries are checked on the pixels of the query, re-ranked and placed continuously: ``verify`` does it for
(embeddings, query tiles); ``predict`` does it when the query tiles are given by ``query_pixels`` (as
``Geolocator.locate`` does), and ranks by the global embedding alone otherwise.

Trained on pairs by ``geoscope crossview train`` (``geoscope.crossview.train``), not by ``geoscope train``.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from torch import nn

from geoscope.data.view_augment import centre_view, rotation_views
from geoscope.errors import InputError
from geoscope.geo.sphere import from_unit, haversine_km, to_unit, validate_latlon
from geoscope.heads.base import Head, HeadOutput, as_float_tensor, check_dim, eval_mode
from geoscope.heads.crossview.branch import ViewBranch
from geoscope.heads.crossview.losses import (MAX_LOGIT_SCALE, hardest_negatives, info_nce, same_place_loss,
                                             triplet_loss)
from geoscope.heads.crossview.mining import nearest_positions, same_place_mask
from geoscope.heads.crossview.same_place import SamePlaceClassifier
from geoscope.heads.crossview.verifier import Verifier
from geoscope.heads.registry import register_head

#: neighbours of each gallery entry kept for refinement
GALLERY_NEIGHBOURS = 8


@register_head("crossview")
class CrossViewHead(Head):
    """Twin-branch cross-view matcher over frozen features (see the module docstring).

    Args:
        in_dim: query backbone feature size. ref_dim: reference backbone feature size (default in_dim).
        out_dim, hidden, dropout: the branches' projection. shared: one branch for both views.
        reference_encoder: the encoder of the reference side when it differs from the model's encoder.
        refine_km: neighbours within this distance of a candidate refine it (None: 1.5 x the gallery's
            median spacing, set with the gallery). rotations: query views (turns of 360 / R degrees)
            pooled at test time when the heading is unknown (1: none).
        temperature: initial softmax temperature (learnable).
        consistency: share of an entry's score taken from its gallery neighbours' similarities (0: none). Where
            reference tiles overlap, the true place shows as a patch of similar entries while a chance match
            stands alone; 0.3 over 8 neighbours added 2 points of recall@1 and 5 of recall@10 in the cross-view
            demo (200 queries, within noise for recall@1) and cut the median error from 1,166 to 687 km.
        verifier: the config of a :class:`Verifier` (None: none; ``attach_verifier`` adds a fitted one).
    """

    gallery_emb: torch.Tensor
    gallery_latlon: torch.Tensor
    gallery_knn: torch.Tensor

    trainable = False  # trained over pairs by `geoscope crossview train`
    default_lr = 1e-3

    def __init__(self, in_dim: int, ref_dim: int | None = None, out_dim: int = 256, hidden: int = 512,
                 dropout: float = 0.1, shared: bool = False, reference_encoder: str | None = None,
                 refine_km: float | None = None, rotations: int = 1, temperature: float = 0.07,
                 same_place_hidden: int = 64, consistency: float = 0.0, verifier: dict | None = None):
        super().__init__()
        self.in_dim = int(in_dim)
        self.ref_dim = int(ref_dim if ref_dim is not None else in_dim)
        if shared and self.ref_dim != self.in_dim:
            raise InputError(f"shared branches need one feature size, got {self.in_dim} and {self.ref_dim}")
        self.out_dim, self.hidden, self.dropout, self.shared = int(out_dim), int(hidden), float(dropout), bool(shared)
        self.reference_encoder = reference_encoder
        self.refine_km = None if refine_km is None else float(refine_km)
        self.rotations = max(1, int(rotations))
        self.temperature = float(temperature)
        if not 0.0 <= float(consistency) < 1.0:
            raise InputError(f"consistency is a share in [0, 1), got {consistency}")
        self.consistency = float(consistency)
        self.query = ViewBranch(self.in_dim, self.out_dim, self.hidden, self.dropout)
        self.reference = self.query if self.shared else ViewBranch(self.ref_dim, self.out_dim, self.hidden, self.dropout)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / self.temperature)))
        self.same_place = SamePlaceClassifier(self.out_dim, int(same_place_hidden))
        self.register_buffer("gallery_emb", torch.zeros(0, self.out_dim))
        self.register_buffer("gallery_latlon", torch.zeros(0, 2))
        self.register_buffer("gallery_knn", torch.zeros(0, GALLERY_NEIGHBOURS, dtype=torch.int64))
        self.verifier: Verifier | None = Verifier(**verifier) if verifier else None
        self._pending_pixels: list | None = None

    # --- config ------------------------------------------------------------------------------------

    def config(self) -> dict:
        return {"kind": self.kind, "in_dim": self.in_dim, "ref_dim": self.ref_dim, "out_dim": self.out_dim,
                "hidden": self.hidden, "dropout": self.dropout, "shared": self.shared,
                "reference_encoder": self.reference_encoder, "refine_km": self.refine_km,
                "rotations": self.rotations, "temperature": self.temperature,
                "same_place_hidden": self.same_place.hidden, "consistency": self.consistency,
                "verifier": self.verifier.config() if self.verifier is not None else None}

    @classmethod
    def from_config(cls, config: dict) -> "CrossViewHead":
        return cls(**{k: v for k, v in config.items() if k != "kind"})

    @classmethod
    def create(cls, in_dim: int, cells=None, **options) -> "CrossViewHead":
        return cls(in_dim, **options)

    # --- embeddings --------------------------------------------------------------------------------

    def embed_query(self, feats) -> torch.Tensor:
        x = as_float_tensor(feats)
        check_dim(x, self.in_dim, "crossview (query side)")
        return self.query(x)

    def embed_reference(self, feats) -> torch.Tensor:
        x = as_float_tensor(feats)
        check_dim(x, self.ref_dim, "crossview (reference side)")
        return self.reference(x)

    def fit_stats(self, query_feats: torch.Tensor, ref_feats: torch.Tensor) -> None:
        """Standardisation statistics of both branches from training features (before training)."""
        self.query.fit_stats(query_feats)
        if not self.shared:
            self.reference.fit_stats(ref_feats)

    # --- training ----------------------------------------------------------------------------------

    def pair_loss(self, q_feats: torch.Tensor, r_feats: torch.Tensor, lat, lon, weights: dict | None = None,
                  same_km: float = 1.0, extra_refs: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Loss of a batch of matching (query, reference) feature rows at positions lat / lon.

        ``weights``: ``infonce``, ``triplet``, ``same_place`` (default 1, 0.5, 0.5). Pairs within
        ``same_km`` of each other count as the same place. ``extra_refs``: mined hard-negative reference
        features for InfoNCE. Returns (total, {part: value}).
        """
        w = {"infonce": 1.0, "triplet": 0.5, "same_place": 0.5, **(weights or {})}
        q, r = self.query(q_feats), self.reference(r_feats)
        same = same_place_mask(lat, lon, same_km)
        extra = None if extra_refs is None or len(extra_refs) == 0 else self.reference(extra_refs)
        parts = {"infonce": info_nce(q, r, self.logit_scale, same, extra)}
        if w["triplet"]:
            parts["triplet"] = triplet_loss(q, r, same=same)
        if w["same_place"] and len(q) > 1:
            # negatives: the hardest reference of the batch and a random one (the classifier meets both)
            neg = hardest_negatives((q @ r.T).detach(), same)
            shuffled = torch.roll(torch.arange(len(q)), 1)
            other = ~same[torch.arange(len(q)), shuffled]
            logits = torch.cat([self.same_place.logit(q, r), self.same_place.logit(q, r[neg]),
                                self.same_place.logit(q[other], r[shuffled[other]])])
            labels = torch.cat([torch.ones(len(q)), torch.zeros(len(q) + int(other.sum()))])
            parts["same_place"] = same_place_loss(logits, labels)
        total = sum(w[k] * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}

    # --- the gallery -------------------------------------------------------------------------------

    @torch.no_grad()
    def set_reference_gallery(self, ref_feats, latlon, chunk: int = 4096) -> None:
        """Project reference backbone features (N, ref_dim) into the gallery, at (N, 2) lat / lon."""
        feats = as_float_tensor(ref_feats)
        with eval_mode(self):
            emb = torch.cat([self.embed_reference(feats[s : s + chunk]) for s in range(0, len(feats), chunk)]) \
                if len(feats) else torch.zeros(0, self.out_dim)
        self.set_gallery_embeddings(emb, latlon)

    @torch.no_grad()
    def set_gallery_embeddings(self, emb, latlon) -> None:
        """Use (N, out_dim) unit embeddings at (N, 2) lat / lon as the reference gallery."""
        emb = as_float_tensor(emb)
        arr = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
        if len(arr) != len(emb):
            raise InputError(f"the gallery has {len(emb)} embeddings but {len(arr)} positions")
        check_dim(emb, self.out_dim, "crossview gallery")
        lat, lon = validate_latlon(arr[:, 0], arr[:, 1], "reference gallery positions")
        knn = nearest_positions(lat, lon, GALLERY_NEIGHBOURS) if len(lat) > 1 else np.zeros((len(lat), 0), np.int64)
        if knn.shape[1] < GALLERY_NEIGHBOURS:  # a tiny gallery: pad with the entry itself
            pad = np.repeat(np.arange(len(lat))[:, None], GALLERY_NEIGHBOURS - knn.shape[1], 1)
            knn = np.concatenate([knn, pad], 1)
        self.register_buffer("gallery_emb", torch.nn.functional.normalize(emb, dim=-1).contiguous())
        self.register_buffer("gallery_latlon", torch.from_numpy(np.stack([lat, lon], 1)).float())
        self.register_buffer("gallery_knn", torch.from_numpy(knn).long())
        if len(lat) > 1:
            spacing = float(np.median(haversine_km(lat, lon, lat[knn[:, 0]], lon[knn[:, 0]])))
            self.refine_km = round(1.5 * spacing, 1) if self.refine_km is None else self.refine_km

    # --- inference ---------------------------------------------------------------------------------

    @torch.no_grad()
    def query_similarity(self, feats) -> torch.Tensor:
        """(B, N) cosine similarity of queries to the gallery; (B, R, in_dim) views score by their best."""
        x = as_float_tensor(feats)
        with eval_mode(self):
            if x.dim() == 3 and x.shape[1] > 0 and x.shape[-1] == self.in_dim:
                B, R, _ = x.shape
                q = self.embed_query(x.reshape(B * R, -1)).reshape(B, R, -1)
                return torch.einsum("brd,nd->brn", q, self.gallery_emb).amax(dim=1)
            return self.embed_query(x) @ self.gallery_emb.T

    @torch.no_grad()
    def gallery_scores(self, feats) -> torch.Tensor:
        """(B, N) the score of each gallery entry: its similarity, mixed with its neighbours' (``consistency``)."""
        if len(self.gallery_emb) == 0:
            raise InputError("the crossview model's reference gallery is empty; give it reference tiles "
                             "(geoscope crossview train, or set_reference_gallery) before locating")
        sim = self.query_similarity(feats)
        if self.consistency > 0 and len(self.gallery_emb) > 1:
            sim = (1.0 - self.consistency) * sim + self.consistency * sim[:, self.gallery_knn].mean(dim=2)
        return sim

    def _scale(self) -> float:
        """The learned inverse temperature of the gallery softmax, capped like the loss caps it."""
        return float(self.logit_scale.detach().clamp(max=MAX_LOGIT_SCALE).exp())

    @torch.no_grad()
    def predict(self, emb, top_k: int = 5) -> HeadOutput:
        pixels = self._pending_pixels
        if self.verifier is not None and pixels is not None and len(pixels) == len(emb):
            return self.verify(emb, pixels, top_k)
        sim = self.gallery_scores(emb)
        scale = self._scale()
        probs = torch.softmax(scale * sim.double(), dim=1).numpy()
        k = min(int(top_k), probs.shape[1])
        idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(probs, idx, 1)
        coords = self._refine(idx, probs)
        latlon = self.gallery_latlon.double().numpy()
        return HeadOutput(None, coords, scores, None,
                          {"gallery_index": idx, "similarity": np.take_along_axis(sim.numpy(), idx, 1)},
                          latlon, probs, candidate_support=idx, neighbourhood="gallery entry")

    def _refine(self, idx: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """(B, K, 2): each candidate moved to the probability-weighted mean of its gallery neighbours
        within ``refine_km`` (itself included)."""
        latlon = self.gallery_latlon.double().numpy()
        unit = to_unit(latlon[:, 0], latlon[:, 1])
        knn = self.gallery_knn.numpy()
        near = np.concatenate([idx[..., None], knn[idx]], axis=-1)  # (B, K, 1 + n)
        d = haversine_km(latlon[idx][..., None, 0], latlon[idx][..., None, 1], latlon[near][..., 0], latlon[near][..., 1])
        w = np.take_along_axis(probs[:, None, :].repeat(idx.shape[1], 1), near, axis=2)
        radius = self.refine_km if self.refine_km is not None else 0.0
        w = np.where(d <= radius, w, 0.0)
        w[..., 0] = np.maximum(w[..., 0], 1e-300)  # the entry itself always counts
        mean = (w[..., None] * unit[near]).sum(axis=2)
        lat, lon = from_unit(mean)
        return np.stack([lat, lon], axis=-1)

    # --- verification ------------------------------------------------------------------------------

    def attach_verifier(self, verifier: Verifier) -> None:
        """Use a fitted :class:`Verifier` whose reference windows are this gallery's entries, in order."""
        if len(verifier.windows) != len(self.gallery_latlon):
            raise InputError(f"the verifier holds {len(verifier.windows)} reference windows but the gallery has "
                             f"{len(self.gallery_latlon)} entries; cut one window per gallery entry")
        self.verifier = verifier

    @contextlib.contextmanager
    def query_pixels(self, tiles):
        """Within this context ``predict`` verifies its candidates on these query tiles ((H, W, 3) uint8 each,
        one per embedding row, in order)."""
        self._pending_pixels = list(tiles)
        try:
            yield self
        finally:
            self._pending_pixels = None

    @torch.no_grad()
    def verify(self, emb, tiles, top_k: int = 5) -> HeadOutput:
        """Rank by the global embedding, verify the verifier's ``top_k`` best entries on the query ``tiles``
        ((H, W, 3) uint8 each, covering the verifier's ``query_km``) and return them re-ranked by the verified
        score, each placed where its window's best alignment puts the query. The support of the distribution is
        the verified positions, weighted by a softmax of the verified score at the model's logit scale."""
        if self.verifier is None:
            raise InputError("this crossview model has no verifier; fit one (geoscope crossview demo fits it)")
        sim = self.gallery_scores(emb).numpy()
        if len(tiles) != len(sim):
            raise InputError(f"verification needs one query tile per embedding, got {len(tiles)} for {len(sim)}")
        v = self.verifier
        m = min(v.top_k, sim.shape[1])
        k = min(int(top_k), m)
        latlon = self.gallery_latlon.double().numpy()
        scale = self._scale()
        B = len(sim)
        order_all = np.argsort(-sim, axis=1, kind="stable")[:, :m]
        support = np.zeros((B, m, 2))
        support_probs = np.zeros((B, m))
        entry = np.zeros((B, m), np.int64)
        verified = np.zeros((B, m))
        peak = np.zeros((B, m))
        turn = np.zeros((B, m))
        for b in range(B):
            cand = order_all[b]
            res = v.align(np.asarray(tiles[b]), cand, latlon[cand])
            score = sim[b, cand] + v.weight * res["peak"]
            o = np.argsort(-score, kind="stable")
            entry[b], verified[b], peak[b], turn[b] = cand[o], score[o], res["peak"][o], res["rotation_deg"][o]
            support[b] = np.stack([res["lat"][o], res["lon"][o]], 1)
            z = scale * (score[o] - score[o].max())
            support_probs[b] = np.exp(z) / np.exp(z).sum()
        idx = np.repeat(np.arange(k)[None], B, 0)
        return HeadOutput(None, support[:, :k], support_probs[:, :k], None,
                          {"gallery_index": entry[:, :k], "similarity": np.take_along_axis(sim, entry[:, :k], 1),
                           "verified_score": verified[:, :k], "peak": peak[:, :k], "rotation_deg": turn[:, :k]},
                          support, support_probs, support_refined=np.ones((B, m), bool), candidate_support=idx,
                          neighbourhood="gallery entry")

    @torch.no_grad()
    def same_place_probability(self, q_emb, r_emb, prior: float = 0.5) -> np.ndarray:
        """Calibrated P(same place) for rows of unit query / reference embeddings (as from the branches)."""
        q, r = as_float_tensor(q_emb), as_float_tensor(r_emb)
        if q.shape != r.shape:
            raise InputError(f"same-place pairs need embeddings of one shape, got {tuple(q.shape)} and {tuple(r.shape)}")
        check_dim(q, self.out_dim, "crossview same-place")
        with eval_mode(self):
            return self.same_place.probability(q, r, prior).double().numpy()



    def image_views(self, image) -> list:
        """The views ``Geolocator.locate`` encodes for one query image: the central crop the branches were
        trained on, or ``rotations`` turned crops pooled at test time (the heading is unknown)."""
        return rotation_views(image, self.rotations) if self.rotations > 1 else [centre_view(image)]
