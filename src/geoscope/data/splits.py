"""Deterministic train / val / test splits of a dataset: random, or spatially separated with a buffer."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import numpy as np

from geoscope.data.dataset import Dataset, open_dataset
from geoscope.errors import InputError
from geoscope.geo.sphere import EARTH_RADIUS_KM, to_unit


def _unit_hash(seed: int, keys: Iterable[str]) -> np.ndarray:
    """A reproducible number in [0, 1) per key (independent of order, platform and PYTHONHASHSEED)."""
    out = [int.from_bytes(hashlib.blake2b(f"{seed}:{k}".encode(), digest_size=8).digest(), "big") / 2**64 for k in keys]
    return np.asarray(out, dtype=np.float64)


def spatial_groups(lat, lon, cell_km: float) -> np.ndarray:
    """A cell key per point on a near-equal-area grid of about ``cell_km`` x ``cell_km``.

    Rows are latitude bands ``cell_km`` tall; each band is cut into as many columns as fit
    ``cell_km`` wide at the band's middle latitude.
    """
    if not cell_km > 0:
        raise InputError(f"cell_km must be positive, got {cell_km}")
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    km_per_deg = math.pi * EARTH_RADIUS_KM / 180.0
    dlat = cell_km / km_per_deg
    n_rows = max(1, int(math.ceil(180.0 / dlat)))
    row = np.clip(np.floor((lat + 90.0) / dlat).astype(np.int64), 0, n_rows - 1)
    mid = np.clip(-90.0 + (row + 0.5) * dlat, -90.0, 90.0)
    n_cols = np.maximum(1, np.floor(360.0 * km_per_deg * np.cos(np.radians(mid)) / cell_km)).astype(np.int64)
    col = np.floor(((lon + 180.0) % 360.0) / 360.0 * n_cols).astype(np.int64) % n_cols
    return row * 10_000_000 + col


def _normalise_fractions(fractions) -> dict[str, float]:
    if isinstance(fractions, dict):
        names, values = list(fractions), list(fractions.values())
    else:
        values = list(fractions)
        default = {1: ["train"], 2: ["train", "test"], 3: ["train", "val", "test"]}.get(len(values))
        if default is None:
            raise InputError(f"give 1 to 3 split fractions or a dict of them, got {len(values)}")
        names = default
    values = [float(v) for v in values]
    if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise InputError(f"split fractions must be non-negative and not all zero, got {values}")
    total = sum(values)
    return {n: v / total for n, v in zip(names, values)}


def _assign_by_weight(order: np.ndarray, weights: np.ndarray, fractions: dict[str, float]) -> np.ndarray:
    """Walk items in ``order`` and give each the split whose share of the total weight it falls in."""
    bounds = np.cumsum(list(fractions.values()))
    w = weights[order].astype(np.float64)
    mid = (np.cumsum(w) - w / 2) / w.sum()
    which = np.minimum(np.searchsorted(bounds, mid, side="right"), len(bounds) - 1)
    out = np.empty(len(order), dtype=np.int64)
    out[order] = which
    return out


class DatasetSplits(dict):
    """name -> Dataset. ``dropped``: training samples removed by the buffer; ``unlocated``: samples
    without coordinates, left out of a spatial split; ``min_distance_km``: the smallest distance
    between a kept training sample and a held-out one (NaN if not computed)."""

    dropped: Dataset
    unlocated: Dataset
    min_distance_km: float

    def summary(self) -> dict:
        return {"splits": {k: len(v) for k, v in self.items()}, "dropped_by_buffer": len(self.dropped),
                "unlocated": len(self.unlocated),
                "min_train_heldout_km": None if math.isnan(self.min_distance_km) else round(self.min_distance_km, 3)}


def split_dataset(ds, fractions=(0.8, 0.1, 0.1), method: str = "random", seed: int = 0, cell_km: float = 25.0,
                  buffer_km: float = 0.0, train: str = "train") -> DatasetSplits:
    """Deterministic splits of ``ds`` (same input and seed -> same splits, whatever the row order).

    ``method="random"``: samples ordered by a seeded hash of their id and cut by ``fractions``.
    ``method="spatial"``: samples grouped into cells of about ``cell_km`` (``spatial_groups``),
    whole cells go to one split (sized by samples), then training samples closer than ``buffer_km``
    to any held-out sample are dropped, so no test photo shares a spot with a training photo.
    ``fractions``: (train, val, test), (train, test) or a dict name -> fraction.
    """
    ds = open_dataset(ds, progress=False)
    fr = _normalise_fractions(fractions)
    n = len(ds)
    if method not in ("random", "spatial"):
        raise InputError(f"split method must be 'random' or 'spatial', got {method!r}")
    if not buffer_km >= 0:
        raise InputError(f"buffer_km must be zero or positive, got {buffer_km}")
    lat, lon = ds.lat, ds.lon
    located = np.isfinite(lat) & np.isfinite(lon)
    spatial = method == "spatial" or buffer_km > 0
    if spatial and not located.all():  # unlocated samples cannot be placed: set them aside
        unlocated = np.flatnonzero(~located)
        base = ds
        ds = ds.subset(np.flatnonzero(located), name=ds.name)
        n, lat, lon = len(ds), lat[located], lon[located]
    else:
        unlocated, base = np.zeros(0, dtype=np.int64), ds
    if method == "random":
        u = _unit_hash(seed, ds.ids)
        which = _assign_by_weight(np.argsort(u, kind="stable"), np.ones(n), fr)
    else:
        groups = spatial_groups(lat, lon, cell_km)
        keys, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
        u = _unit_hash(seed, (str(k) for k in keys))
        group_split = _assign_by_weight(np.argsort(u, kind="stable"), counts, fr)
        which = group_split[inverse]
    names = list(fr)
    train_i = names.index(train) if train in names else 0
    dropped = np.zeros(n, dtype=bool)
    min_km = float("nan")
    held = which != train_i
    if held.any() and (~held).any() and (buffer_km > 0 or method == "spatial"):
        # deferred: scipy.spatial takes ~240 ms to import (measured on top of pandas) and only this needs it
        from scipy.spatial import cKDTree

        xyz = to_unit(lat, lon)
        tree = cKDTree(xyz[held])
        train_idx = np.flatnonzero(~held)
        chord, _ = tree.query(xyz[train_idx], k=1)
        dist_km = 2.0 * EARTH_RADIUS_KM * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0))
        too_close = dist_km < buffer_km
        dropped[train_idx[too_close]] = True
        if (~too_close).any():
            min_km = float(dist_km[~too_close].min())
    out = DatasetSplits()
    for i, name in enumerate(names):
        out[name] = ds.subset(np.flatnonzero((which == i) & ~dropped), name=name)
    out.dropped = ds.subset(np.flatnonzero(dropped), name="dropped")
    out.unlocated = base.subset(unlocated, name="unlocated")
    out.min_distance_km = min_km
    return out
