"""Geocell classification over several partitions at once, combined hierarchically.

One shared hidden layer feeds one logit layer per cell level (coarse to fine). At inference the
probability of a fine cell combines every level, as in the TIB hierarchical model:

    log p(fine) = log p_fine(fine) + sum_l log p_l(ancestor_l(fine)),  renormalised over fine cells.

Training uses PIGEON's haversine label smoothing at every level: the target of cell i for a sample
at x is proportional to exp(-(d(c_i, x) - d(c_true, x)) / tau), with d the great-circle distance in
km from the cell centroid c_i and ``tau_km`` the temperature (the d(c_true, x) term is a per-sample
constant, so this is a softmax of -d/tau). An optional auxiliary head predicts a scene label
(e.g. natural / urban / indoor) when the training store has a ``scene`` column.
"""

from __future__ import annotations

from typing import Any, Self, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geoscope.errors import InputError
from geoscope.geo.cells import as_hierarchy
from geoscope.geo.sphere import to_unit
from geoscope.heads.base import (
    Head,
    HeadOutput,
    Standardize,
    Targets,
    as_float_tensor,
    check_dim,
    chord_to_km,
    eval_mode,
)
from geoscope.heads.registry import register_head
from geoscope.heads.rows import CHUNK_ELEMENTS

#: cells per level kept in the precomputed sparse smoothed targets
SPARSE_TARGETS = 32


def ancestors_from_parents(parents: list[np.ndarray | None], level_sizes: list[int]) -> np.ndarray:
    """(L, n_fine) index of each finest cell's ancestor at every level (the last row is arange)."""
    n_levels = len(level_sizes)
    anc = np.zeros((n_levels, level_sizes[-1]), dtype=np.int64)
    cur = np.arange(level_sizes[-1], dtype=np.int64)
    anc[-1] = cur
    for lvl in range(n_levels - 1, 0, -1):
        par = np.asarray(parents[lvl], dtype=np.int64)
        if par.shape != (level_sizes[lvl],):
            raise InputError(f"cell level {lvl} has {level_sizes[lvl]} cells but {par.shape[0]} parent indices")
        if (par < 0).any() or (par >= level_sizes[lvl - 1]).any():
            raise InputError(f"cell level {lvl} has parent indices outside level {lvl - 1}")
        cur = par[cur]
        anc[lvl - 1] = cur
    return anc


def hierarchy_arrays(cells) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Centroids per level and parent maps from a ``CellHierarchy`` (or a single partition)."""
    cells = as_hierarchy(cells)
    levels = cells.levels
    centroids = [np.asarray(g.centroids, dtype=np.float64) for g in levels]
    parents: list[np.ndarray | None] = [None]
    for lvl in range(1, len(levels)):
        parents.append(np.asarray(cells.parents(lvl), dtype=np.int64))
    return centroids, parents


@register_head("classifier")
class ClassifierHead(Head):
    """Hierarchical geocell classifier.

    Args:
        in_dim: embedding dimension.
        centroids: per level (coarse to fine) an (n_l, 2) array of cell centroids (lat, lon).
        parents: per level an (n_l,) array of parent indices into the previous level (None for level 0).
        hidden: width of the shared hidden layer.
        tau_km: label-smoothing temperature in km (PIGEON uses 75).
        dropout: dropout on the hidden layer.
        scene_labels: names of the auxiliary scene classes (empty: no scene head).
        scene_weight: weight of the scene loss.
    """

    needs_cells = True
    uses_scene_labels = True
    default_lr = 2e-3
    streaming = True  # on_train_start streams the standardisation statistics
    ancestors: torch.Tensor  # a buffer: (n_levels, n_fine) the ancestor of each finest cell at every level

    def __init__(
        self,
        in_dim: int,
        centroids: list,
        parents: list | None = None,
        hidden: int = 256,
        tau_km: float = 75.0,
        dropout: float = 0.1,
        scene_labels: list[str] | tuple = (),
        scene_weight: float = 0.2,
    ):
        super().__init__()
        if not centroids:
            raise InputError("a classifier needs at least one level of geocells")
        if tau_km <= 0:
            raise InputError(f"tau_km must be positive, got {tau_km}")
        sizes = [len(c) for c in centroids]
        if min(sizes) < 1:
            raise InputError("every cell level needs at least one cell")
        parents = list(parents) if parents is not None else [None] * len(sizes)
        self.in_dim, self.hidden, self.tau_km, self.dropout_p = int(in_dim), int(hidden), float(tau_km), float(dropout)
        self.level_sizes = sizes
        self.n_cells = sizes[-1]
        self.scene_labels = list(scene_labels)
        self.scene_weight = float(scene_weight)
        self.norm = Standardize(self.in_dim)
        self.trunk = nn.Sequential(nn.Linear(self.in_dim, self.hidden), nn.GELU(), nn.Dropout(self.dropout_p))
        self.level_heads = nn.ModuleList(nn.Linear(self.hidden, n) for n in sizes)
        self.scene_head = nn.Linear(self.hidden, len(self.scene_labels)) if self.scene_labels else None
        for lvl, c in enumerate(centroids):
            c = np.asarray(c, dtype=np.float64).reshape(-1, 2)
            self.register_buffer(f"centroids_{lvl}", torch.from_numpy(c.copy()))
            self.register_buffer(f"centroid_unit_{lvl}", torch.from_numpy(to_unit(c[:, 0], c[:, 1])).float())
        if len(sizes) > 1 and any(p is None for p in parents[1:]):
            raise InputError("every cell level after the first needs parent indices")
        anc = ancestors_from_parents(parents, sizes) if len(sizes) > 1 else np.arange(sizes[0])[None]
        self.register_buffer("ancestors", torch.from_numpy(anc))

    @classmethod
    def from_cells(cls, in_dim: int, cells, **kw) -> Self:
        centroids, parents = hierarchy_arrays(cells)
        return cls(in_dim, centroids, parents, **kw)

    @classmethod
    def create(cls, in_dim: int, cells=None, **options) -> Self:
        if cells is None:
            raise InputError(f"the {cls.kind} head needs geocells (--cells)")
        return cls.from_cells(in_dim, cells, **options)

    def config(self) -> dict:
        return {
            "kind": self.kind,
            "in_dim": self.in_dim,
            "level_sizes": self.level_sizes,
            "hidden": self.hidden,
            "tau_km": self.tau_km,
            "dropout": self.dropout_p,
            "scene_labels": self.scene_labels,
            "scene_weight": self.scene_weight,
        }

    @classmethod
    def from_config(cls, cfg: dict) -> Self:
        sizes = cfg["level_sizes"]
        centroids = [np.zeros((n, 2)) for n in sizes]
        parents = [None] + [np.zeros(n, dtype=np.int64) for n in sizes[1:]]
        kw = {k: cfg[k] for k in ("hidden", "tau_km", "dropout", "scene_labels", "scene_weight") if k in cfg}
        return cls(cfg["in_dim"], centroids, parents, **kw)

    @property
    def fine_centroids(self) -> torch.Tensor:
        return getattr(self, f"centroids_{len(self.level_sizes) - 1}")

    def on_train_start(self, emb: torch.Tensor, targets: Targets) -> None:
        self.norm.fit(emb)

    def features(self, emb: torch.Tensor) -> torch.Tensor:
        # Standardisation folded into the first layer: W (x - m) * s + b = (W * s) x + (b - (W * s) m),
        # which saves two passes over the batch.
        first = cast(nn.Linear, self.trunk[0])  # built in __init__ as Linear, GELU, Dropout
        w = first.weight * self.norm.inv_std
        h = F.linear(emb, w, first.bias - w @ self.norm.mean)
        for layer in list(self.trunk)[1:]:
            h = layer(h)
        return h

    def forward(self, emb: torch.Tensor) -> list[torch.Tensor]:
        """Logits per level (coarse to fine)."""
        h = self.features(emb)
        return [head(h) for head in self.level_heads]

    def soft_targets(self, level: int, unit: torch.Tensor) -> torch.Tensor:
        """Haversine-smoothed targets (B, n_level) for points given as unit vectors (B, 3)."""
        km = chord_to_km(unit @ getattr(self, f"centroid_unit_{level}").T)
        return torch.softmax(-km / self.tau_km, dim=1)

    @torch.no_grad()
    def prepare_targets(self, targets: Targets, k: int = SPARSE_TARGETS, chunk: int | None = None) -> Targets:
        """Precompute each sample's smoothed targets once, kept sparse: the ``k`` nearest cells per level.

        With the usual temperatures the cells beyond the nearest few dozen get a vanishing share
        (exp(-d/tau)), so the truncated, renormalised targets equal the dense ones to within float
        precision, and an epoch no longer computes a distance to every cell for every sample.
        """
        unit = targets.unit()
        extra = dict(targets.extra)
        for lvl, n in enumerate(self.level_sizes):
            kk = min(k, n)
            idx_parts, w_parts = [], []
            # rows per chunk: the dense (rows x cells) distances and probabilities stay about 16 MB each
            for part in unit.split(chunk or max(256, min(16384, CHUNK_ELEMENTS // max(1, n)))):
                probs = self.soft_targets(lvl, part)
                w, idx = probs.topk(kk, dim=1)
                w_parts.append(w / w.sum(1, keepdim=True))
                idx_parts.append(idx)
            extra[f"soft_idx_{lvl}"] = torch.cat(idx_parts) if idx_parts else torch.zeros(0, kk, dtype=torch.int64)
            extra[f"soft_w_{lvl}"] = torch.cat(w_parts) if w_parts else torch.zeros(0, kk)
        return Targets(targets.lat, targets.lon, targets.cells, targets.scene, extra)

    def loss(self, emb: torch.Tensor, batch: Targets) -> torch.Tensor:
        h = self.features(emb)
        unit = None
        total = emb.new_zeros(())
        for lvl, head in enumerate(self.level_heads):
            logp = F.log_softmax(head(h), dim=1)
            if f"soft_idx_{lvl}" in batch.extra:
                picked = logp.gather(1, batch.extra[f"soft_idx_{lvl}"])
                total = total - (batch.extra[f"soft_w_{lvl}"] * picked).sum(1).mean()
            else:
                unit = batch.unit() if unit is None else unit
                total = total - (self.soft_targets(lvl, unit) * logp).sum(1).mean()
        if self.scene_head is not None and batch.scene is not None:
            known = batch.scene >= 0
            if known.any():
                total = total + self.scene_weight * F.cross_entropy(self.scene_head(h[known]), batch.scene[known])
        return total

    def log_cell_probs(self, emb: torch.Tensor) -> torch.Tensor:
        """Hierarchically combined log probabilities over the finest cells (B, n_fine)."""
        logits = self.forward(emb)
        combined = F.log_softmax(logits[-1], dim=1)
        for lvl in range(len(logits) - 1):
            combined = combined + F.log_softmax(logits[lvl], dim=1)[:, self.ancestors[lvl]]
        return F.log_softmax(combined, dim=1)

    @torch.no_grad()
    def predict(self, emb, top_k: int = 5) -> HeadOutput:
        with eval_mode(self):
            emb = as_float_tensor(emb)
            check_dim(emb, self.in_dim, self.kind)
            probs = self.log_cell_probs(emb).double().exp()
            probs = probs / probs.sum(1, keepdim=True)
            k = min(int(top_k), self.n_cells)
            scores, idx = probs.topk(k, dim=1)
            coords = self.fine_centroids[idx]
            extra: dict[str, Any] = {}
            if self.scene_head is not None:
                extra["scene_probs"] = torch.softmax(self.scene_head(self.features(emb)), dim=1).numpy()
                extra["scene_labels"] = self.scene_labels
        probs_np = probs.numpy()
        return HeadOutput(probs_np, coords.numpy(), scores.numpy(), idx.numpy(), extra,
                          self.fine_centroids.numpy(), probs_np, support_cells=True,
                          candidate_support=idx.numpy(), neighbourhood="cell")
