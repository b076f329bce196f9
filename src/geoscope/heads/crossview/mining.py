"""Hard negatives for cross-view training (Sample4Geo): by GPS proximity and by similarity.

- :func:`nearest_positions`: each position's ``k`` nearest other positions (great-circle), leaving out those
  closer than ``min_km`` (views of the same place are not negatives).
- :func:`proximity_batches`: an epoch's batches in which each anchor brings its nearest neighbours along,
  so the in-batch negatives of InfoNCE are the places easiest to confuse with the true one.
- :func:`similarity_negatives`: for each query, the references most similar to it that are not its own
  place (mined over the whole reference set, e.g. once per epoch).
- :func:`same_place_mask`: which pairs of a batch are the same place (within ``min_km``).
"""

from __future__ import annotations

import numpy as np
import torch

from geoscope.geo.sphere import EARTH_RADIUS_KM, to_unit


def _unit(lat, lon) -> np.ndarray:
    return np.asarray(to_unit(np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)), dtype=np.float64)


def nearest_positions(lat, lon, k: int, min_km: float = 0.0, chunk: int = 2048) -> np.ndarray:
    """(N, k) indices of each position's nearest other positions, nearest first, skipping those within
    ``min_km`` (and the position itself). Fewer than ``k`` candidates: the row is padded with its last one."""
    u = _unit(lat, lon)
    n = len(u)
    k = max(1, min(int(k), n - 1)) if n > 1 else 0
    out = np.zeros((n, k), dtype=np.int64)
    if k == 0:
        return out
    cos_min = np.cos(min_km / EARTH_RADIUS_KM) if min_km > 0 else None
    for s in range(0, n, chunk):
        dots = u[s : s + chunk] @ u.T
        dots[np.arange(len(dots)), np.arange(s, s + len(dots))] = -np.inf
        if cos_min is not None:
            dots[dots > cos_min] = -np.inf
        idx = np.argpartition(-dots, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(dots, idx, 1), axis=1, kind="stable")
        out[s : s + chunk] = np.take_along_axis(idx, order, 1)
    return out


def same_place_mask(lat, lon, min_km: float) -> torch.Tensor:
    """(B, B) bool: pairs of rows within ``min_km`` of each other (the diagonal included)."""
    u = torch.as_tensor(_unit(lat, lon))
    return (u @ u.T) >= float(np.cos(max(min_km, 1e-6) / EARTH_RADIUS_KM))


def proximity_batches(lat, lon, batch_size: int, seed: int, neighbours: int = 4,
                      knn: np.ndarray | None = None, min_km: float = 0.0) -> list[np.ndarray]:
    """One epoch's batches (index arrays covering every row once) built Sample4Geo's way.

    Anchors are taken in a seeded random order; each anchor brings up to ``neighbours`` of its nearest
    positions not yet used this epoch (``knn`` from :func:`nearest_positions`, computed when None), so each
    batch holds groups of nearby places: in-batch negatives that are hard. ``neighbours=0`` gives plain
    random batches.
    """
    n = len(lat)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    if neighbours <= 0 or n < 3:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if knn is None:
        knn = nearest_positions(lat, lon, neighbours * 2, min_km=min_km)
    used = np.zeros(n, dtype=bool)
    flat: list[int] = []
    for a in order:
        if used[a]:
            continue
        used[a] = True
        flat.append(int(a))
        took = 0
        for b in knn[a]:
            if took >= neighbours:
                break
            if not used[b]:
                used[b] = True
                flat.append(int(b))
                took += 1
    arr = np.asarray(flat, dtype=np.int64)
    return [arr[i : i + batch_size] for i in range(0, n, batch_size)]


def similarity_negatives(q: torch.Tensor, r: torch.Tensor, k: int, same: torch.Tensor | None = None,
                         chunk: int = 4096) -> torch.Tensor:
    """(B, k) indices into ``r`` (M, D) of the references most similar to each query (B, D) that are not
    its own place: ``same`` (B, M) bool marks each query's own place (default: column i for row i)."""
    out = []
    k = min(int(k), len(r) - 1)
    for s in range(0, len(q), chunk):
        sim = q[s : s + chunk] @ r.T
        if same is None:
            rows = torch.arange(len(sim))
            sim[rows, rows + s] = float("-inf")
        else:
            sim = sim.masked_fill(same[s : s + chunk], float("-inf"))
        out.append(sim.topk(k, dim=1).indices)
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.long)
