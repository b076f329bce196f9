"""Nearest neighbours with voting: a reference gallery of embeddings at known places, searched directly.

The head keeps a bank of unit-length embeddings with their (lat, lon) (``fit_data``; no training).
A query's ``k_neighbors`` most cosine-similar bank entries each cast a vote ``exp((s - s_best) / T)``;
an entry's *support* is the sum of the votes of every top entry within ``vote_radius_km`` of it, so a
region matched by many entries outvotes a single lookalike far away (the catastrophic errors of
plain nearest neighbour). Candidates are taken greedily: the entry with the most support, refined to
the vote-weighted mean of the top entries within the radius, whose votes are then removed; then the
next. A candidate's probability is its share of all the votes, and the candidates (all of them, not
only the ``top_k`` shown) are the support of the head's distribution for calibration.

**Re-scoring** (``rescore_candidates`` > 0; off by default): the votes of an embedding made of parts
(``parts``: their sizes, e.g. a CNN view and a descriptor view, each unit length within the embedding)
follow the most similar entries of the combined cosine, so a region one part matches strongly can lose
to a lookalike the other part favours. The first ``rescore_candidates`` candidates are looked at again:
each gets ``log(share) + sum_p w_p max_cos_p / rescore_temperature``, where ``max_cos_p`` is part p's
best cosine over the bank entries within ``rescore_radius_km`` of the candidate and ``w_p`` the
``rescore_weights``; their probabilities become the softmax of those scores times their joint share (so a
re-score that adds nothing leaves them as they were), and the candidates are sorted again. Measured on
the demo's overhead gallery (3,500 extra held-out land tiles; CNN weight 0.7, descriptors 0.3, 8
candidates, 250 km): misses beyond 750 km 65 -> 41 (the CNN view every 300 km), 43 -> 30 (every 250 km).
It costs a second pass of cosines over the bank, part by part (about twice the votes' time).

Used by ``geoscope demo`` over a gallery of overhead tiles (``encoders.overhead``), where the bank is a
lattice of reference tiles over land.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from geoscope.errors import InputError
from geoscope.geo.sphere import EARTH_RADIUS_KM, from_unit, to_unit
from geoscope.heads.base import Head, HeadOutput, Targets, as_float_tensor, check_dim
from geoscope.heads.registry import register_head


@register_head("neighbours")
class NeighboursHead(Head):
    """Vote among the ``k_neighbors`` nearest bank entries (see the module docstring).

    Args:
        in_dim: embedding size.
        k_neighbors: bank entries that vote for each query.
        sim_temperature: T of the votes ``exp((s - s_best) / T)`` (cosine similarities).
        vote_radius_km: entries this close support each other, and are averaged into a candidate.
        parts: sizes of the embedding's parts (summing to ``in_dim``) for the re-score; None: one part.
        rescore_weights: each part's weight in the re-score (None: equal).
        rescore_candidates: candidates re-scored (0: none, the votes alone rank them).
        rescore_radius_km: a candidate's bank entries for the re-score lie within this distance of it.
        rescore_temperature: the re-score's cosine scale.
    """

    trainable = False

    def __init__(self, in_dim: int, k_neighbors: int = 64, sim_temperature: float = 0.04,
                 vote_radius_km: float = 150.0, parts: Sequence[int] | None = None,
                 rescore_weights: Sequence[float] | None = None, rescore_candidates: int = 0,
                 rescore_radius_km: float = 250.0, rescore_temperature: float = 0.04):
        super().__init__()
        if k_neighbors < 1 or sim_temperature <= 0 or vote_radius_km <= 0:
            raise InputError("the neighbours head needs k_neighbors >= 1 and a positive temperature and radius")
        self.in_dim = int(in_dim)
        self.k_neighbors = int(k_neighbors)
        self.sim_temperature = float(sim_temperature)
        self.vote_radius_km = float(vote_radius_km)
        self.parts = [int(p) for p in parts] if parts is not None else [self.in_dim]
        if sum(self.parts) != self.in_dim or min(self.parts) < 1:
            raise InputError(f"the neighbours head's parts {self.parts} must be positive sizes summing to its "
                             f"embedding size {self.in_dim}")
        weights = [1.0] * len(self.parts) if rescore_weights is None else [float(w) for w in rescore_weights]
        if len(weights) != len(self.parts) or min(weights) < 0:
            raise InputError(f"rescore_weights {weights} must give one non-negative weight per part ({len(self.parts)})")
        self.rescore_weights = weights
        self.rescore_candidates = int(rescore_candidates)
        self.rescore_radius_km = float(rescore_radius_km)
        self.rescore_temperature = float(rescore_temperature)
        if self.rescore_candidates < 0 or self.rescore_radius_km <= 0 or self.rescore_temperature <= 0:
            raise InputError("the neighbours head's re-score needs rescore_candidates >= 0 and a positive "
                             "radius and temperature")
        self._tree: tuple | None = None  # (bank key, cKDTree of the bank's places), built when first needed
        self.register_buffer("bank_emb", torch.zeros(0, self.in_dim, dtype=torch.float16))
        self.register_buffer("bank_latlon", torch.zeros(0, 2))

    def config(self) -> dict:
        cfg = {"kind": self.kind, "in_dim": self.in_dim, "k_neighbors": self.k_neighbors,
               "sim_temperature": self.sim_temperature, "vote_radius_km": self.vote_radius_km}
        if self.rescore_candidates:  # a head without re-score writes the config it always wrote
            cfg |= {"parts": list(self.parts), "rescore_weights": list(self.rescore_weights),
                    "rescore_candidates": self.rescore_candidates, "rescore_radius_km": self.rescore_radius_km,
                    "rescore_temperature": self.rescore_temperature}
        return cfg

    @classmethod
    def from_config(cls, cfg: dict) -> "NeighboursHead":
        return cls(**{k: v for k, v in cfg.items() if k != "kind"})

    def fit_data(self, emb, targets: Targets) -> None:
        """Make ``emb`` (N, in_dim) at ``targets.lat`` / ``targets.lon`` the bank."""
        emb = as_float_tensor(emb)
        check_dim(emb, self.in_dim, self.kind)
        if len(emb) != len(targets):
            raise InputError(f"the neighbours head got {len(emb)} embeddings for {len(targets)} locations")
        self.bank_emb = F.normalize(emb, dim=-1).to(torch.float16)
        self.bank_latlon = torch.stack([targets.lat.float(), targets.lon.float()], 1)

    def __len__(self) -> int:
        return int(self.bank_emb.shape[0])

    @torch.no_grad()
    def similarities(self, emb, k: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(B, k) cosine similarities of each query's ``k`` nearest bank entries, best first, and their indices."""
        emb = F.normalize(as_float_tensor(emb), dim=-1)
        bank = self.bank_emb.float()
        sims, idx = [], []
        for s in range(0, len(emb), chunk):
            top = (emb[s:s + chunk] @ bank.T).topk(k, dim=1)
            sims.append(top.values.double().numpy())
            idx.append(top.indices.numpy())
        return np.concatenate(sims), np.concatenate(idx)

    @torch.no_grad()
    def predict(self, emb, top_k: int = 5) -> HeadOutput:
        emb = as_float_tensor(emb)
        if emb.ndim == 1:
            emb = emb[None]
        check_dim(emb, self.in_dim, self.kind)
        if len(self) == 0:
            raise InputError("the neighbours head has an empty gallery; give it reference embeddings (fit_data) first")
        k = min(self.k_neighbors, len(self))
        sims, idx = self.similarities(emb, k)
        latlon = self.bank_latlon.double().numpy()
        xyz = to_unit(latlon[:, 0], latlon[:, 1])
        cos_r = np.cos(self.vote_radius_km / EARTH_RADIUS_KM)
        B = len(emb)
        support = np.zeros((B, k, 2))
        probs = np.zeros((B, k))
        for b in range(B):
            votes = np.exp((sims[b] - sims[b, 0]) / self.sim_temperature)
            pts = xyz[idx[b]]
            near = (pts @ pts.T) >= cos_r  # (k, k) within the vote radius of each other
            left = votes.copy()
            total = votes.sum()
            for j in range(k):
                mass = near @ left
                best = int(np.argmax(mass))
                if mass[best] <= 0:
                    break
                members = near[best] * left
                v = (pts * members[:, None]).sum(0)
                lat, lon = from_unit(v[None])
                support[b, j] = (float(lat[0]), float(lon[0]))
                probs[b, j] = mass[best] / total
                left = left * ~near[best]
        n = int(max(1, (probs > 0).sum(1).max()))
        support, probs = support[:, :n], probs[:, :n]
        if self.rescore_candidates:
            support, probs = self._rescore(emb, support, probs)
        kk = min(int(top_k), n)
        coords = support[:, :kk].copy()
        scores = probs[:, :kk].copy()
        order = np.tile(np.arange(kk), (B, 1))
        return HeadOutput(None, coords, scores, None, {}, support, probs, support_cells=False,
                          support_refined=probs > 0, candidate_support=order, neighbourhood="gallery entry")

    def _bank_tree(self):
        """A cKDTree of the bank's places (unit vectors), rebuilt when the bank changes (``fit_data``, a
        loaded state)."""
        from scipy.spatial import cKDTree

        key = (self.bank_latlon.data_ptr(), tuple(self.bank_latlon.shape))
        if self._tree is None or self._tree[0] != key:
            latlon = self.bank_latlon.double().numpy()
            self._tree = (key, cKDTree(to_unit(latlon[:, 0], latlon[:, 1])))
        return self._tree[1]

    def _rescore(self, emb: torch.Tensor, support: np.ndarray, probs: np.ndarray,
                 chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """The first ``rescore_candidates`` candidates re-scored by each part's best cosine near them (see the
        module docstring); every row sorted again by probability."""
        tree = self._bank_tree()
        B, n = probs.shape
        m = min(self.rescore_candidates, n)
        chord = 2.0 * np.sin(self.rescore_radius_km / EARTH_RADIUS_KM / 2.0)
        pts = to_unit(support[:, :m, 0].ravel(), support[:, :m, 1].ravel())
        balls = tree.query_ball_point(pts, chord)
        _, nearest = tree.query(pts)
        width = max(1, max(len(r) for r in balls))
        rows = np.full((B * m, width), -1, dtype=np.int64)  # each candidate's bank entries, padded with -1
        for i, r in enumerate(balls):
            if len(r):
                rows[i, :len(r)] = r
            else:  # a candidate farther than the radius from every entry: its nearest one
                rows[i, 0] = nearest[i]
        rows = rows.reshape(B, m, width)
        bank = self.bank_emb.float()
        ends = np.cumsum(self.parts)
        best = np.full((B, m, len(self.parts)), -np.inf)
        for p, (lo, hi) in enumerate(zip(ends - self.parts, ends)):
            g = F.normalize(bank[:, lo:hi], dim=1)
            for s in range(0, B, chunk):
                cos = (F.normalize(emb[s:s + chunk, lo:hi], dim=1) @ g.T).double().numpy()  # (c, bank)
                r = rows[s:s + chunk]
                got = np.take_along_axis(cos, np.maximum(r, 0).reshape(len(r), -1), 1).reshape(r.shape)
                best[s:s + chunk, :, p] = np.where(r >= 0, got, -np.inf).max(2)
        live = probs[:, :m] > 0
        score = np.where(live, np.log(np.where(live, probs[:, :m], 1.0)) + best @ np.asarray(self.rescore_weights)
                         / self.rescore_temperature, -np.inf)
        score = np.exp(score - score.max(1, keepdims=True))
        probs, support = probs.copy(), support.copy()
        probs[:, :m] = np.where(live, probs[:, :m], 0).sum(1, keepdims=True) * score / score.sum(1, keepdims=True)
        order = np.argsort(-probs, axis=1, kind="stable")
        return np.take_along_axis(support, order[..., None], 1), np.take_along_axis(probs, order, 1)
