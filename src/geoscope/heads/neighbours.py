"""Nearest neighbours with voting: a reference gallery of embeddings at known places, searched directly.

The head keeps a bank of unit-length embeddings with their (lat, lon) (``fit_data``; no training).
A query's ``k_neighbors`` most cosine-similar bank entries each cast a vote ``exp((s - s_best) / T)``;
an entry's *support* is the sum of the votes of every top entry within ``vote_radius_km`` of it, so a
region matched by many entries outvotes a single lookalike far away (the catastrophic errors of
plain nearest neighbour). Candidates are taken greedily: the entry with the most support, refined to
the vote-weighted mean of the top entries within the radius, whose votes are then removed; then the
next. A candidate's probability is its share of all the votes, and the candidates (all of them, not
only the ``top_k`` shown) are the support of the head's distribution for calibration.

Used by ``geoscope demo`` over a gallery of overhead tiles (``encoders.overhead``), where the bank is a
lattice of reference tiles over land.
"""

from __future__ import annotations

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
    """

    trainable = False

    def __init__(self, in_dim: int, k_neighbors: int = 64, sim_temperature: float = 0.04,
                 vote_radius_km: float = 150.0):
        super().__init__()
        if k_neighbors < 1 or sim_temperature <= 0 or vote_radius_km <= 0:
            raise InputError("the neighbours head needs k_neighbors >= 1 and a positive temperature and radius")
        self.in_dim = int(in_dim)
        self.k_neighbors = int(k_neighbors)
        self.sim_temperature = float(sim_temperature)
        self.vote_radius_km = float(vote_radius_km)
        self.register_buffer("bank_emb", torch.zeros(0, self.in_dim, dtype=torch.float16))
        self.register_buffer("bank_latlon", torch.zeros(0, 2))

    def config(self) -> dict:
        return {"kind": self.kind, "in_dim": self.in_dim, "k_neighbors": self.k_neighbors,
                "sim_temperature": self.sim_temperature, "vote_radius_km": self.vote_radius_km}

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
        kk = min(int(top_k), n)
        coords = support[:, :kk].copy()
        scores = probs[:, :kk].copy()
        order = np.tile(np.arange(kk), (B, 1))
        return HeadOutput(None, coords, scores, None, {}, support, probs, support_cells=False,
                          support_refined=probs > 0, candidate_support=order, neighbourhood="gallery entry")
