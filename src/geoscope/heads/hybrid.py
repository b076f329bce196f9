"""Classify, then refine: a geocell classifier whose top cells are refined by nearest neighbours.

The classifier (``ClassifierHead``) picks the most probable finest cells. Inside each chosen cell the
head looks up the training embeddings of that cell most similar to the query (cosine similarity of
standardised embeddings) and answers with the similarity-weighted medoid of their locations: a real
training location inside the chosen cell, so refinement never moves a guess beyond its cell. A cell
with no training points keeps its centroid. The candidate's probability is the cell's probability.

The neighbour bank (training embeddings sorted by cell, their locations, per-cell offsets) is stored
with the head's weights; ``fit_data`` replaces it (e.g. with more data) without retraining.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from geoscope.geo.sphere import pairwise_km
from geoscope.heads.base import HeadOutput, Targets, as_float_tensor, check_dim, eval_mode
from geoscope.heads.classifier import ClassifierHead


class HybridHead(ClassifierHead):
    """``ClassifierHead`` plus neighbour refinement.

    Extra args:
        k_neighbors: neighbours used per chosen cell.
        sim_temperature: softmax temperature on cosine similarities for the medoid weights.
    """

    kind = "hybrid"

    def __init__(self, in_dim: int, centroids: list, parents: list | None = None, k_neighbors: int = 8,
                 sim_temperature: float = 0.05, **kw):
        super().__init__(in_dim, centroids, parents, **kw)
        self.k_neighbors = int(k_neighbors)
        self.sim_temperature = float(sim_temperature)
        self.register_buffer("bank_emb", torch.zeros(0, self.in_dim, dtype=torch.float16))
        self.register_buffer("bank_latlon", torch.zeros(0, 2, dtype=torch.float32))
        self.register_buffer("bank_offsets", torch.zeros(self.n_cells + 1, dtype=torch.int64))

    def config(self) -> dict:
        return {**super().config(), "k_neighbors": self.k_neighbors, "sim_temperature": self.sim_temperature}

    @classmethod
    def from_config(cls, cfg: dict) -> "HybridHead":
        head = super().from_config({k: v for k, v in cfg.items() if k not in ("k_neighbors", "sim_temperature")})
        head.k_neighbors = int(cfg.get("k_neighbors", head.k_neighbors))
        head.sim_temperature = float(cfg.get("sim_temperature", head.sim_temperature))
        return head

    def _bank_vectors(self, emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.norm(emb), dim=-1)

    def on_train_start(self, emb: torch.Tensor, targets: Targets) -> None:
        super().on_train_start(emb, targets)
        self.fit_data(emb, targets)

    @torch.no_grad()
    def fit_data(self, emb: torch.Tensor, targets: Targets) -> None:
        """Build the neighbour bank from embeddings and targets (finest-level cell ids in ``targets.cells[-1]``)."""
        fine = targets.cells[-1]
        keep = fine >= 0
        order = torch.argsort(fine[keep], stable=True)
        cell_sorted = fine[keep][order]
        vectors = torch.cat([self._bank_vectors(as_float_tensor(chunk)) for chunk in emb[keep][order].split(65536)]) \
            if int(keep.sum()) else torch.zeros(0, self.in_dim)
        self.bank_emb = vectors.to(torch.float16)
        self.bank_latlon = torch.stack([targets.lat[keep][order], targets.lon[keep][order]], 1).float()
        counts = torch.bincount(cell_sorted, minlength=self.n_cells)
        self.bank_offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])

    def refine(self, query: torch.Tensor, cell: int) -> tuple[float, float] | None:
        """The refined location for one query vector inside ``cell``, or None if the cell has no points."""
        s, e = int(self.bank_offsets[cell]), int(self.bank_offsets[cell + 1])
        if e <= s:
            return None
        sims = self.bank_emb[s:e].float() @ query
        k = min(self.k_neighbors, e - s)
        top, idx = sims.topk(k)
        weights = torch.softmax(top / self.sim_temperature, 0).double().numpy()
        pts = self.bank_latlon[s:e][idx].double().numpy()
        if k == 1:
            return float(pts[0, 0]), float(pts[0, 1])
        cost = pairwise_km(pts[:, 0], pts[:, 1], pts[:, 0], pts[:, 1]) @ weights
        best = int(np.argmin(cost))
        return float(pts[best, 0]), float(pts[best, 1])

    @torch.no_grad()
    def predict(self, emb, top_k: int = 5) -> HeadOutput:
        out = super().predict(emb, top_k)
        with eval_mode(self):
            emb = as_float_tensor(emb)
            check_dim(emb, self.in_dim, self.kind)
            queries = self._bank_vectors(emb)
            coords = out.coords.copy()
            # per image, each chosen cell's mass sits at its refined point (for confidence radii)
            support = np.repeat(np.asarray(out.support)[None], coords.shape[0], axis=0)
            for b in range(coords.shape[0]):
                for j in range(coords.shape[1]):
                    refined = self.refine(queries[b], int(out.cells[b, j]))
                    if refined is not None:
                        coords[b, j] = refined
                        support[b, out.cells[b, j]] = refined
        return HeadOutput(out.cell_probs, coords, out.scores, out.cells, out.extra, support, out.support_probs)
