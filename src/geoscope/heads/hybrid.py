"""Classify, then refine: a geocell classifier whose top cells are refined by nearest neighbours.

The classifier (``ClassifierHead``) proposes its most probable finest cells. Inside each proposed cell
the head looks up the training embeddings of that cell most similar to the query (cosine similarity of
standardised embeddings); cells are ranked by the classifier's probability together with the best
match, and each candidate is refined to a similarity-weighted mean of its closest training locations,
never beyond its cell (see ``HybridHead``). A cell with no training points keeps its centroid. The
candidate's probability is the cell's probability under the hybrid's distribution (classifier and
image match together, the order the candidates are ranked in).

The neighbour bank (training embeddings sorted by cell, their locations, per-cell offsets) is stored
with the head's weights; ``fit_data`` replaces it (e.g. with more data) without retraining.
"""

from __future__ import annotations

from typing import Self

import numpy as np
import torch
import torch.nn.functional as F

from geoscope.geo.cells import as_hierarchy
from geoscope.geo.sphere import from_unit, haversine_km, to_unit
from geoscope.heads.base import HeadOutput, Targets, as_float_tensor, check_dim, eval_mode
from geoscope.heads.classifier import ClassifierHead
from geoscope.heads.registry import register_head
from geoscope.heads.rows import as_rows, chunk_rows


@register_head("hybrid")
class HybridHead(ClassifierHead):
    """``ClassifierHead`` plus neighbour refinement.

    Prediction: the classifier proposes its ``refine_cells`` most probable cells. Each proposed cell is
    scored by ``max_similarity / joint_temperature + prior_weight * log p(cell)``: the classifier's belief
    combined with how closely the image matches a training image of that cell. The best-scoring cells
    become the candidates, best first; each is refined to the similarity-weighted mean of its closest
    training locations (those within ``refine_radius_km`` of the best match), or to the best match
    itself where that mean would fall outside the cell, so a guess never leaves its chosen cell. A
    candidate's probability is its cell's probability under the hybrid's own distribution
    (:meth:`cell_distribution`): the considered cells share the classifier's mass on them in
    proportion to ``exp(score)``, so candidates are in the order of the probabilities they show and a
    cell the image matches closely gains the mass the classifier alone gave its rivals.

    Extra args:
        k_neighbors: neighbours used per chosen cell.
        sim_temperature: softmax temperature on cosine similarities for the refinement weights.
        refine_cells: how many of the classifier's top cells are considered.
        joint_temperature, prior_weight: the cell score above.
        refine_radius_km: neighbours farther than this from the best match are not averaged in.
    """

    _EXTRA = {"k_neighbors": int, "sim_temperature": float, "refine_cells": int, "joint_temperature": float,
              "prior_weight": float, "refine_radius_km": float}
    # buffers (the neighbour bank), declared so that they are typed as tensors
    bank_emb: torch.Tensor  # (n, in_dim) float16 centred, normalised training embeddings, sorted by cell
    bank_latlon: torch.Tensor  # (n, 2) their coordinates
    bank_offsets: torch.Tensor  # (n_cells + 1,) where each cell's rows start in the bank

    def __init__(self, in_dim: int, centroids: list, parents: list | None = None, k_neighbors: int = 8,
                 sim_temperature: float = 0.02, refine_cells: int = 10, joint_temperature: float = 0.02,
                 prior_weight: float = 0.5, refine_radius_km: float = 600.0, **kw):
        super().__init__(in_dim, centroids, parents, **kw)
        self.k_neighbors = int(k_neighbors)
        self.sim_temperature = float(sim_temperature)
        self.refine_cells = int(refine_cells)
        self.joint_temperature = float(joint_temperature)
        self.prior_weight = float(prior_weight)
        self.refine_radius_km = float(refine_radius_km)
        self.register_buffer("bank_emb", torch.zeros(0, self.in_dim, dtype=torch.float16))
        self.register_buffer("bank_latlon", torch.zeros(0, 2, dtype=torch.float32))
        self.register_buffer("bank_offsets", torch.zeros(self.n_cells + 1, dtype=torch.int64))

    def config(self) -> dict:
        return {**super().config(), **{k: getattr(self, k) for k in self._EXTRA}}

    @classmethod
    def from_config(cls, cfg: dict) -> Self:
        head = super().from_config({k: v for k, v in cfg.items() if k not in cls._EXTRA})
        for k, cast in cls._EXTRA.items():
            if k in cfg:
                setattr(head, k, cast(cfg[k]))
        return head

    @classmethod
    def from_cells(cls, in_dim: int, cells, **kw) -> Self:
        head = super().from_cells(in_dim, cells, **kw)
        head.bind_cells(cells)
        return head

    def _bank_vectors(self, emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(emb - self.norm.mean, dim=-1)  # centred: per-dimension scaling hurts matching

    def on_train_start(self, emb, targets: Targets) -> None:
        super().on_train_start(emb, targets)
        self.fit_data(emb, targets)

    @torch.no_grad()
    def fit_data(self, emb, targets: Targets) -> None:
        """Build the neighbour bank from embeddings (a tensor or ``EmbeddingRows``) and targets (finest-level
        cell ids in ``targets.cells[-1]``). The bank is float16, filled a chunk at a time: no float32 copy."""
        fine = targets.cells[-1]
        keep = fine >= 0
        order = torch.argsort(fine[keep], stable=True)
        cell_sorted = fine[keep][order]
        picked = as_rows(emb).take(torch.nonzero(keep).squeeze(1)[order])
        bank = torch.empty(len(picked), self.in_dim, dtype=torch.float16)
        step = chunk_rows(self.in_dim)
        for start, chunk in zip(range(0, len(picked), step), picked.chunks(step)):
            bank[start: start + len(chunk)] = self._bank_vectors(chunk).to(torch.float16)
        self.bank_emb = bank
        self.bank_latlon = torch.stack([targets.lat[keep][order], targets.lon[keep][order]], 1).float()
        counts = torch.bincount(cell_sorted, minlength=self.n_cells)
        self.bank_offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])

    def _matches(self, query: torch.Tensor, cell: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Similarities and (lat, lon) of the ``k_neighbors`` most similar training points of ``cell``."""
        return self._all_matches(query.reshape(1, -1), np.array([[int(cell)]]))[0][0]

    def _all_matches(self, queries: torch.Tensor, cand: np.ndarray, budget: int = 1 << 24) -> list[list]:
        """``_matches`` of every image (``queries`` (B, dim)) with each of its candidate cells (``cand``
        (B, C)), as ``[b][c]``: each cell's float16 bank rows are converted once for all the images that
        consider it, and compared in one product of at most ``budget`` similarities at a time (per image
        and cell, the conversion cost more than the comparison: most of the time of a validation pass)."""
        n_img, n_c = cand.shape
        out: list[list] = [[None] * n_c for _ in range(n_img)]
        flat = np.asarray(cand).reshape(-1)
        for cell in np.unique(flat):
            s, e = int(self.bank_offsets[cell]), int(self.bank_offsets[cell + 1])
            if e <= s:
                continue
            at = np.flatnonzero(flat == cell)
            bank = self.bank_emb[s:e].float()
            latlon = self.bank_latlon[s:e]
            k = min(self.k_neighbors, e - s)
            step = max(1, budget // (e - s))
            for i in range(0, len(at), step):
                part = at[i:i + step]
                top, idx = (queries[torch.as_tensor(part // n_c)] @ bank.T).topk(k, dim=1)
                top_np, pts = top.double().numpy(), latlon[idx].double().numpy()
                for r, pos in enumerate(part):
                    out[pos // n_c][pos % n_c] = (top_np[r], pts[r])
        return out

    def refine(self, query: torch.Tensor, cell: int, matches=None) -> tuple[float, float] | None:
        """The refined location for one query vector inside ``cell``, or None if the cell has no points."""
        matches = self._matches(query, cell) if matches is None else matches
        if matches is None:
            return None
        sims, pts = matches
        best = (float(pts[0, 0]), float(pts[0, 1]))
        near = haversine_km(pts[:, 0], pts[:, 1], best[0], best[1]) <= self.refine_radius_km
        if near.sum() < 2:
            return best
        w = np.exp((sims[near] - sims[near].max()) / self.sim_temperature)
        v = (to_unit(pts[near, 0], pts[near, 1]) * w[:, None]).sum(0)
        lat, lon = from_unit(v)
        if self._assign is None or int(self._assign(np.array([lat]), np.array([lon]))[0]) != cell:
            return best  # the mean left the cell (or cells are unknown): the best real location inside it
        return float(lat), float(lon)

    _assign = None

    def bind_cells(self, cells) -> None:
        """Give the head its cells' geometry (a ``CellHierarchy``), so refined means are
        checked against the cell borders; without it the head answers with real training locations."""
        self._assign = None if cells is None else as_hierarchy(cells).finest.assign

    def cell_distribution(self, cell_probs: np.ndarray, considered: np.ndarray, joint: np.ndarray) -> np.ndarray:
        """The hybrid's distribution over the finest cells for one image: the ``considered`` cells share
        their classifier mass in proportion to ``exp(joint)`` (classifier belief and image match
        together, as they are ranked); every other cell keeps its classifier probability."""
        probs = np.array(cell_probs, dtype=np.float64)
        mass = probs[considered].sum()
        w = np.exp(joint - joint.max())
        probs[considered] = mass * w / w.sum()
        return probs

    @torch.no_grad()
    def predict(self, emb, top_k: int = 5) -> HeadOutput:
        out = super().predict(emb, max(int(top_k), self.refine_cells))
        if out.cells is None or out.cell_probs is None:  # the classifier always gives both
            raise RuntimeError("the classifier's prediction holds no cells to refine")
        out_cells, cell_probs = out.cells, out.cell_probs
        k = min(int(top_k), out_cells.shape[1])
        with eval_mode(self):
            emb = as_float_tensor(emb)
            check_dim(emb, self.in_dim, self.kind)
            queries = self._bank_vectors(emb)
        n_img = out_cells.shape[0]
        coords = np.zeros((n_img, k, 2))
        scores = np.zeros((n_img, k))
        chosen = np.zeros((n_img, k), dtype=np.int64)
        probs = np.array(cell_probs, dtype=np.float64)
        # per image, each considered cell's mass sits around its refined point (for confidence radii)
        support = np.repeat(np.asarray(out.support)[None], n_img, axis=0)
        refined = np.zeros(probs.shape, dtype=bool)
        every = self._all_matches(queries, np.asarray(out_cells))
        for b in range(n_img):
            cand = out_cells[b]
            matches = every[b]
            best_sim = np.array([-1.0 if m is None else m[0][0] for m in matches])
            joint = best_sim / self.joint_temperature + self.prior_weight * np.log(cell_probs[b, cand] + 1e-12)
            probs[b] = self.cell_distribution(cell_probs[b], cand, joint)
            order = np.argsort(-joint, kind="stable")
            for j, o in enumerate(order):
                c = int(cand[o])
                point = self.refine(queries[b], c, matches[o])
                if point is not None:
                    support[b, c] = point
                    refined[b, c] = True
                if j < k:
                    coords[b, j], scores[b, j], chosen[b, j] = support[b, c], probs[b, c], c
        return HeadOutput(probs, coords, scores, chosen, out.extra, support, probs, support_cells=True,
                          support_refined=refined, candidate_support=chosen, neighbourhood="cell")
