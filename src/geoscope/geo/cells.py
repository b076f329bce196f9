"""Geocells: partitions of the Earth into classes for classification heads.

Three builders make a :class:`Geocells` (one partition):

* **grid** -- ``rows x cols`` equal steps of latitude and longitude over a bounding box (every cell is
  kept, empty or not).
* **adaptive** -- an equal-area quadtree split until no cell holds more than ``max_points`` training
  points, then small cells merged (the rule is in :meth:`Geocells.adaptive`).
* **admin** -- first-level administrative regions (Natural Earth, through :mod:`geoscope.geo.borders`),
  small ones merged within their country, big ones split with the same quadtree
  (:meth:`Geocells.admin`), as in PIGEON's semantic geocells.

Several adaptive partitions of one training set make a :class:`CellHierarchy` (coarse -> fine).

The quadtree lives in the cylindrical equal-area plane ``u = (lon + 180) / 360``,
``v = (sin(lat) + 1) / 2``: the four children of a node cover equal areas on the sphere. A point's leaf
is found with integer arithmetic: its Morton (Z-order) key at the deepest level, then one
``np.searchsorted`` over the sorted leaf ranges, so lookup is vectorised and fast (millions of points
per second). For admin cells the region number is put in the high bits of the key, so one lookup
covers both the region and the quadtree inside it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from geoscope.atomic import write_json
from geoscope.errors import InputError
from geoscope.geo.bbox import BBox
from geoscope.geo.sphere import EARTH_RADIUS_KM, from_unit, to_unit, validate_latlon

#: Deepest quadtree level: a level-24 cell is about 2.4 m wide at the equator.
MAX_LEVEL = 24
_KEY_BITS = 2 * MAX_LEVEL
FORMAT = "geoscope-cells"
FORMAT_VERSION = 1
EARTH_AREA_KM2 = 4.0 * math.pi * EARTH_RADIUS_KM**2


# --------------------------------------------------------------------------------------------------
# quadtree keys


def _spread_bits(x: np.ndarray) -> np.ndarray:
    """Insert a zero bit between each of the low 32 bits of ``x`` (uint64)."""
    x = x & np.uint64(0x00000000FFFFFFFF)
    x = (x | (x << np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    x = (x | (x << np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    x = (x | (x << np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    x = (x | (x << np.uint64(2))) & np.uint64(0x3333333333333333)
    x = (x | (x << np.uint64(1))) & np.uint64(0x5555555555555555)
    return x


def _compact_bits(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_spread_bits`: gather the even bits of ``x``."""
    x = x & np.uint64(0x5555555555555555)
    x = (x | (x >> np.uint64(1))) & np.uint64(0x3333333333333333)
    x = (x | (x >> np.uint64(2))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    x = (x | (x >> np.uint64(4))) & np.uint64(0x00FF00FF00FF00FF)
    x = (x | (x >> np.uint64(8))) & np.uint64(0x0000FFFF0000FFFF)
    x = (x | (x >> np.uint64(16))) & np.uint64(0x00000000FFFFFFFF)
    return x


def quadtree_keys(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Morton keys (int64) of points at :data:`MAX_LEVEL` in the equal-area (u, v) plane.

    ``lat``/``lon`` must already be valid (``validate_latlon``); longitudes in [-180, 180).
    """
    side = 1 << MAX_LEVEL
    u = (np.asarray(lon, dtype=np.float64) + 180.0) * (side / 360.0)
    v = (np.sin(np.radians(np.asarray(lat, dtype=np.float64))) + 1.0) * (side / 2.0)
    ix = np.clip(u, 0, side - 1).astype(np.uint64)
    iy = np.clip(v, 0, side - 1).astype(np.uint64)
    return (_spread_bits(ix) | (_spread_bits(iy) << np.uint64(1))).astype(np.int64)


def _leaf_bounds(level: np.ndarray, prefix: np.ndarray) -> tuple[np.ndarray, ...]:
    """(min_lat, min_lon, max_lat, max_lon) of quadtree nodes (region bits ignored)."""
    level = np.asarray(level, dtype=np.int64)
    local = np.asarray(prefix, dtype=np.int64) & ((np.int64(1) << (2 * level)) - 1)
    local = local.astype(np.uint64)
    ix = _compact_bits(local).astype(np.float64)
    iy = _compact_bits(local >> np.uint64(1)).astype(np.float64)
    side = np.ldexp(1.0, level)
    lon0 = ix / side * 360.0 - 180.0
    lon1 = (ix + 1) / side * 360.0 - 180.0
    lat0 = np.degrees(np.arcsin(np.clip(iy / side * 2.0 - 1.0, -1, 1)))
    lat1 = np.degrees(np.arcsin(np.clip((iy + 1) / side * 2.0 - 1.0, -1, 1)))
    return lat0, lon0, lat1, lon1


def _split_quadtree(keys: np.ndarray, roots: np.ndarray, max_points: int) -> tuple[np.ndarray, ...]:
    """Split nodes holding more than ``max_points`` of the sorted ``keys`` into quadrants.

    ``roots`` are level-0 prefixes (region numbers; 0 for a global tree). Returns the non-empty leaves
    as (level, prefix, lo, hi) arrays, where ``keys[lo:hi]`` are the leaf's points. A node whose points
    all share one key at the deepest level cannot be split and stays a leaf above ``max_points``.
    """
    out: list[tuple[np.ndarray, ...]] = []
    level = 0
    prefix = np.asarray(roots, dtype=np.int64)
    while prefix.size:
        shift = np.int64(_KEY_BITS - 2 * level)
        lo = np.searchsorted(keys, prefix << shift, side="left")
        hi = np.searchsorted(keys, (prefix + 1) << shift, side="left")
        n = hi - lo
        split = (n > max_points) & (level < MAX_LEVEL)
        leaf = (n > 0) & ~split
        out.append((np.full(int(leaf.sum()), level, dtype=np.int64), prefix[leaf], lo[leaf], hi[leaf]))
        prefix = (prefix[split][:, None] * 4 + np.arange(4, dtype=np.int64)[None, :]).ravel()
        level += 1
    level_a, prefix_a, lo_a, hi_a = (np.concatenate(parts) for parts in zip(*out))
    order = np.argsort(lo_a, kind="stable")
    return level_a[order], prefix_a[order], lo_a[order], hi_a[order]


# --------------------------------------------------------------------------------------------------
# merging small cells


class _UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        p = self.parent
        root = i
        while p[root] != root:
            root = p[root]
        while p[i] != root:
            p[i], i = root, p[i]
        return int(root)


def _merge_small(xyz: np.ndarray, counts: np.ndarray, min_points: int, max_points: int,
                 groups: np.ndarray | None = None) -> np.ndarray:
    """Merge items with fewer than ``min_points`` into nearby items; return a label per item.

    Items are visited from the smallest count up. An item whose merged cell still holds fewer than
    ``min_points`` joins the cell of the nearest other item (by centre, ``xyz`` unit vectors) whose
    cell can take it without going over ``max_points``; if no cell has room, the nearest cell takes
    it anyway. With ``groups``, items only merge within their group (country); a group whose total is
    below ``min_points`` ends as one cell. Labels are 0..k-1, in order of first item.
    """
    from scipy.spatial import cKDTree

    n = len(counts)
    uf = _UnionFind(n)
    total = counts.astype(np.int64).copy()  # valid at roots
    groups = np.zeros(n, dtype=np.int64) if groups is None else np.asarray(groups)
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        if len(members) < 2 or counts[members].min() >= min_points:
            continue
        tree = cKDTree(xyz[members])
        for local in np.argsort(counts[members], kind="stable"):
            item = int(members[local])
            root = uf.find(item)
            if total[root] >= min_points:
                continue
            k = min(len(members), 16)
            while True:
                _, nbr = tree.query(xyz[item], k=k)
                nbr = np.atleast_1d(nbr)
                roots = [uf.find(int(members[j])) for j in nbr]
                others = [r for r in roots if r != root]
                fits = [r for r in others if total[r] + total[root] <= max_points]
                if fits or k >= len(members):
                    break
                k = min(len(members), k * 4)
            if not others:  # everything in the group is already one cell
                break
            target = fits[0] if fits else others[0]
            uf.parent[root] = target
            total[target] += total[root]
    roots = np.array([uf.find(i) for i in range(n)], dtype=np.int64)
    _, first, labels = np.unique(roots, return_index=True, return_inverse=True)
    # relabel in order of first appearance, so labels follow the input order
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[labels]


def _sort_points(keys: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keys sorted, and the running sum of the points' unit vectors in that order (n + 1, 3), so the
    sum over any key range is one subtraction."""
    order = np.argsort(keys, kind="stable")
    csum = np.zeros((len(keys) + 1, 3))
    np.cumsum(to_unit(lat[order], lon[order]), axis=0, out=csum[1:])
    return keys[order], csum


def _group_mean_xyz(ids: np.ndarray, xyz: np.ndarray, n: int) -> np.ndarray:
    """Sum of unit vectors per group id (ids < 0 ignored), shape (n, 3)."""
    ok = ids >= 0
    ids = ids[ok]
    return np.stack([np.bincount(ids, weights=xyz[ok, c], minlength=n) for c in range(3)], axis=1)


def _normalise_or(sums: np.ndarray, fallback) -> np.ndarray:
    """Lat/lon of normalised ``sums``; rows with no direction take ``fallback()`` (n, 2), called only
    when some row needs it."""
    norm = np.linalg.norm(sums, axis=1)
    lat, lon = from_unit(sums)
    out = np.stack([lat, lon], axis=1)
    empty = norm < 1e-12
    if empty.any():
        out[empty] = np.asarray(fallback())[empty]
    return out


def _check_bounds(min_points: int, max_points: int, what: str = "cells") -> None:
    if int(min_points) < 1:
        raise InputError(f"{what}: min points per cell must be at least 1, got {min_points}")
    if int(max_points) < int(min_points):
        raise InputError(f"{what}: max points per cell ({max_points}) is below min ({min_points})")


def _rect(lat0: float, lon0: float, lat1: float, lon1: float) -> list[list[float]]:
    return [[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]


def _rect_area_km2(lat0, lon0, lat1, lon1) -> np.ndarray:
    """Area of latitude/longitude rectangles on the sphere."""
    return (EARTH_RADIUS_KM**2 * np.radians(np.asarray(lon1) - np.asarray(lon0))
            * (np.sin(np.radians(lat1)) - np.sin(np.radians(lat0))))


# --------------------------------------------------------------------------------------------------
# Geocells


@dataclass(eq=False, repr=False)
class Geocells:
    """One partition of (part of) the Earth into cells.

    ``centroids`` (n, 2) lat/lon: the spherical mean of each cell's training points, or its geometric
    centre where it has none. ``counts`` (n,): training points per cell. ``params`` holds what the
    builder needs to locate points again (and is what :meth:`to_dict` saves).
    """

    kind: str
    centroids: np.ndarray
    counts: np.ndarray
    params: dict[str, Any]
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.centroids = np.asarray(self.centroids, dtype=np.float64).reshape(-1, 2)
        self.counts = np.asarray(self.counts, dtype=np.int64).ravel()
        if len(self.counts) != len(self.centroids):
            raise InputError(f"cells: {len(self.centroids)} centroids but {len(self.counts)} counts")
        if self.kind not in ("grid", "adaptive", "admin"):
            raise InputError(f"cells: unknown kind {self.kind!r} (expected grid, adaptive or admin)")

    def __len__(self) -> int:
        return len(self.centroids)

    def __repr__(self) -> str:
        return f"Geocells({self.kind!r}, {len(self)} cells, {int(self.counts.sum())} training points)"

    # ---------------------------------------------------------------------------------- builders
    @classmethod
    def grid(cls, bbox: BBox | Sequence[float], rows: int, cols: int) -> "Geocells":
        """``rows x cols`` cells of equal latitude and longitude steps over ``bbox``.

        ``bbox``: a ``geo.bbox.BBox`` or ``(min_lat, min_lon, max_lat, max_lon)``. Cell ``r * cols + c``
        is row ``r`` from the south, column ``c`` from the west. Every cell is kept; centroids start at
        the cell centres. A box across the antimeridian is refused.
        """
        if isinstance(bbox, BBox):
            if bbox.crosses_antimeridian:
                raise InputError(f"grid: bbox {bbox} crosses the antimeridian, which grid cells do not support")
            bbox = bbox.to_latlon()
        if len(bbox) != 4:
            raise InputError(f"grid: bbox needs 4 numbers MIN_LAT,MIN_LON,MAX_LAT,MAX_LON, got {len(bbox)}")
        min_lat, min_lon, max_lat, max_lon = (float(b) for b in bbox)
        if not all(math.isfinite(b) for b in (min_lat, min_lon, max_lat, max_lon)):
            raise InputError(f"grid: bbox {tuple(bbox)} has a value that is not a finite number")
        if not (-90 <= min_lat <= 90 and -90 <= max_lat <= 90):
            raise InputError(f"grid: bbox latitudes {min_lat}, {max_lat} must be within [-90, 90]")
        if not (-180 <= min_lon <= 180 and -180 <= max_lon <= 180):
            raise InputError(f"grid: bbox longitudes {min_lon}, {max_lon} must be within [-180, 180]")
        if min_lat >= max_lat:
            raise InputError(f"grid: bbox min latitude {min_lat} is not below max latitude {max_lat}")
        if min_lon >= max_lon:
            raise InputError(f"grid: bbox min longitude {min_lon} is not below max longitude {max_lon}")
        if int(rows) != rows or int(cols) != cols or rows < 1 or cols < 1:
            raise InputError(f"grid: rows and cols must be positive integers, got {rows} x {cols}")
        rows, cols = int(rows), int(cols)
        params = {"bbox": [min_lat, min_lon, max_lat, max_lon], "rows": rows, "cols": cols}
        cells = cls("grid", np.zeros((rows * cols, 2)), np.zeros(rows * cols, dtype=np.int64), params)
        cells.centroids = cells.geometric_centres()
        return cells

    @classmethod
    def adaptive(cls, lat, lon, min_points: int, max_points: int) -> "Geocells":
        """Cells that each hold between ``min_points`` and ``max_points`` training points.

        The rule:

        1. An equal-area quadtree over the globe splits every node holding more than ``max_points``
           points into its four quadrants; empty quadrants are dropped (points there get cell -1).
        2. Leaves holding fewer than ``min_points`` are merged, smallest first, into the cell of the
           nearest leaf (by centre of its points) that can take them without going over
           ``max_points`` -- usually a sibling. A cell is thus a union of quadtree leaves.

        So every training point is in exactly one cell, and every cell holds ``min_points`` to
        ``max_points`` points, with these stated exceptions: fewer than ``min_points`` points in all
        gives one cell; more than ``max_points`` points at one spot (within ~2 m) cannot be split;
        and a small leaf with no neighbour that has room joins its nearest cell anyway.
        """
        lat, lon = validate_latlon(np.ravel(lat), np.ravel(lon), "adaptive cells: training points")
        _check_bounds(min_points, max_points, "adaptive cells")
        if lat.size == 0:
            raise InputError("adaptive cells: no training points given")
        return cls._from_sorted(_sort_points(quadtree_keys(lat, lon), lat, lon), np.zeros(1, dtype=np.int64),
                                int(min_points), int(max_points), "adaptive", {})[0]

    @classmethod
    def _from_sorted(cls, points, roots, min_points, max_points, kind, params,
                     groups_of_root=None) -> tuple["Geocells", np.ndarray]:
        """Build from ``_sort_points`` output: split the quadtree under ``roots``, merge small leaves.

        Also returns the cell of every point in sorted-key order (the leaves tile the sorted points)."""
        skeys, csum = points
        level, prefix, lo, hi = _split_quadtree(skeys, roots, max_points)
        leaf_sum = csum[hi] - csum[lo]
        leaf_n = hi - lo
        leaf_xyz = leaf_sum / np.linalg.norm(leaf_sum, axis=1, keepdims=True).clip(1e-300)
        groups = None
        if groups_of_root is not None:  # merge only within the same region
            groups = prefix >> (2 * level)
        leaf_cell = _merge_small(leaf_xyz, leaf_n, min_points, max_points, groups)
        n = int(leaf_cell.max()) + 1
        shift = _KEY_BITS - 2 * level
        params = dict(params)
        params.update({
            "min_points": int(min_points), "max_points": int(max_points),
            "leaf_level": level.tolist(), "leaf_prefix": prefix.tolist(), "leaf_cell": leaf_cell.tolist(),
        })
        cells = cls(kind, np.zeros((n, 2)), np.zeros(n, dtype=np.int64), params)
        cells._cache["leaves"] = (prefix << shift, (prefix + 1) << shift, leaf_cell)
        sums = np.zeros((n, 3))
        np.add.at(sums, leaf_cell, leaf_sum)
        cells.counts = np.bincount(leaf_cell, weights=leaf_n, minlength=n).astype(np.int64)
        cells.centroids = _normalise_or(sums, cells.geometric_centres)
        return cells, np.repeat(leaf_cell, leaf_n)

    @classmethod
    def admin(cls, lat, lon, min_points: int, max_points: int, borders=None) -> "Geocells":
        """Cells that follow country and first-level administrative borders (Natural Earth).

        The rule: each training point is placed in its admin-1 region (``geo.borders.admin1()``).
        Regions holding fewer than ``min_points`` are merged, smallest first, into the nearest region
        (by centre of its points) of the same country that has room (the :meth:`adaptive` merge rule,
        never across a country border; a country with fewer than ``min_points`` points in all becomes
        one cell). Regions (or merged regions) holding more than ``max_points`` are split with the
        adaptive quadtree restricted to them. Points in no polygon (coast, sea) -- at build time and
        in :meth:`assign` -- go to the cell with the nearest centroid, and count there.
        ``borders`` is an admin-1 ``BorderSet`` (default: ``geo.borders.admin1()``).
        """
        lat, lon = validate_latlon(np.ravel(lat), np.ravel(lon), "admin cells: training points")
        _check_bounds(min_points, max_points, "admin cells")
        if lat.size == 0:
            raise InputError("admin cells: no training points given")
        borders = _admin1() if borders is None else borders
        region = np.asarray(borders.locate(lat, lon), dtype=np.int64)
        inside = region >= 0
        if not inside.any():
            raise InputError("admin cells: none of the training points lies inside an admin-1 region")
        # regions are keyed by code (a code may name several polygons)
        code_of = np.asarray([str(c) for c in borders.codes], dtype=object)
        country_of = {str(c): str(p) for c, p in zip(borders.codes, borders.parent_codes)}
        used, inv = np.unique(code_of[region[inside]].astype(str), return_inverse=True)
        n_used = np.bincount(inv, minlength=len(used))
        sums = _group_mean_xyz(inv, to_unit(lat[inside], lon[inside]), len(used))
        centre = sums / np.linalg.norm(sums, axis=1, keepdims=True).clip(1e-300)
        _, country_id = np.unique([country_of[c] or c for c in used], return_inverse=True)
        group = _merge_small(centre, n_used, min_points, max_points, country_id)
        regions = [[str(c) for c in used[group == g]] for g in range(int(group.max()) + 1)]
        keys = (group[inv] << _KEY_BITS) | quadtree_keys(lat[inside], lon[inside])
        roots = np.arange(len(regions), dtype=np.int64)
        cells, _ = cls._from_sorted(_sort_points(keys, lat[inside], lon[inside]), roots, min_points, max_points,
                                    "admin", {"regions": regions}, groups_of_root=True)
        cells._cache["borders"] = borders
        if not inside.all():  # sea / coast points count in their nearest cell
            cells.counts = np.bincount(cells.assign(lat, lon), minlength=len(cells)).astype(np.int64)
        return cells

    # ---------------------------------------------------------------------------------- lookup
    def _leaves(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if "leaves" not in self._cache:
            level = np.asarray(self.params["leaf_level"], dtype=np.int64)
            prefix = np.asarray(self.params["leaf_prefix"], dtype=np.int64)
            cell = np.asarray(self.params["leaf_cell"], dtype=np.int64)
            shift = _KEY_BITS - 2 * level
            start, end = prefix << shift, (prefix + 1) << shift
            order = np.argsort(start, kind="stable")
            self._cache["leaves"] = (start[order], end[order], cell[order])
        return self._cache["leaves"]

    def _borders(self):
        if "borders" not in self._cache:
            self._cache["borders"] = _admin1()
        return self._cache["borders"]

    def _region_of_admin1(self) -> np.ndarray:
        """Region-group number per admin-1 polygon of the borders in use (-1: not in any cell)."""
        if "region_map" not in self._cache:
            borders = self._borders()
            index = {c: g for g, codes in enumerate(self.params["regions"]) for c in codes}
            self._cache["region_map"] = np.array([index.get(str(c), -1) for c in borders.codes] + [-1],
                                                 dtype=np.int64)
        return self._cache["region_map"]

    def assign(self, lat, lon, nearest: bool = False) -> np.ndarray:
        """Cell index (int64) of each point; -1 where a point is in no cell.

        With ``nearest=True`` such points go to the cell with the nearest centroid instead. Admin
        cells always do this (a point at sea or on a coast goes to the nearest cell).
        """
        lat, lon = validate_latlon(lat, lon, "assign")
        shape = lat.shape
        lat, lon = lat.ravel(), lon.ravel()
        if self.kind == "grid":
            out = self._assign_grid(lat, lon)
        else:
            keys = quadtree_keys(lat, lon)
            if self.kind == "admin":
                region = np.asarray(self._borders().locate(lat, lon), dtype=np.int64)
                group = self._region_of_admin1()[region]  # -1 indexes the trailing -1
                keys = np.where(group >= 0, (group << _KEY_BITS) | keys, -1)
            start, end, cell = self._leaves()
            i = np.searchsorted(start, keys, side="right") - 1
            ok = (i >= 0) & (keys >= 0)
            i = np.clip(i, 0, None)
            ok &= keys < end[i]
            out = np.where(ok, cell[i], -1)
            nearest = nearest or self.kind == "admin"
        if nearest and len(self) and (out < 0).any():
            miss = out < 0
            out[miss] = self.nearest(lat[miss], lon[miss])
        return out.reshape(shape)

    def _assign_grid(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        min_lat, min_lon, max_lat, max_lon = self.params["bbox"]
        rows, cols = self.params["rows"], self.params["cols"]
        r = np.floor((lat - min_lat) * (rows / (max_lat - min_lat))).astype(np.int64)
        c = np.floor((lon - min_lon) * (cols / (max_lon - min_lon))).astype(np.int64)
        r = np.where(lat == max_lat, rows - 1, r)  # the northern and eastern edges belong to the grid
        c = np.where(lon == max_lon, cols - 1, c)
        ok = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
        return np.where(ok, r * cols + c, -1)

    def nearest(self, lat, lon) -> np.ndarray:
        """Index of the cell whose centroid is nearest to each point (great-circle)."""
        from scipy.spatial import cKDTree

        if "tree" not in self._cache:
            self._cache["tree"] = cKDTree(to_unit(self.centroids[:, 0], self.centroids[:, 1]))
        _, idx = self._cache["tree"].query(to_unit(lat, lon))
        return np.asarray(idx, dtype=np.int64)

    # ---------------------------------------------------------------------------------- centroids
    def fit_centroids(self, lat, lon) -> "Geocells":
        """A copy whose centroids are the spherical mean of the training points in each cell (the
        geometric centre where a cell has none) and whose counts are those points."""
        lat, lon = validate_latlon(np.ravel(lat), np.ravel(lon), "fit_centroids: training points")
        ids = self.assign(lat, lon)
        n = len(self)
        sums = _group_mean_xyz(ids, to_unit(lat, lon), n)
        counts = np.bincount(ids[ids >= 0], minlength=n).astype(np.int64)
        out = Geocells(self.kind, _normalise_or(sums, self.geometric_centres), counts, dict(self.params))
        out._cache.update({k: v for k, v in self._cache.items() if k in ("leaves", "borders", "region_map")})
        return out

    def geometric_centres(self) -> np.ndarray:
        """(n, 2) lat/lon centre of each cell's area."""
        if self.kind == "grid":
            min_lat, min_lon, max_lat, max_lon = self.params["bbox"]
            rows, cols = self.params["rows"], self.params["cols"]
            lat = min_lat + (np.arange(rows) + 0.5) * (max_lat - min_lat) / rows
            lon = min_lon + (np.arange(cols) + 0.5) * (max_lon - min_lon) / cols
            la, lo = np.meshgrid(lat, lon, indexing="ij")
            return np.stack([la.ravel(), lo.ravel()], axis=1)
        if self.kind == "admin":  # centre of the region's (clipped) polygons
            pts = [self._shape(i).centroid for i in range(len(self))]
            return np.array([[p.y, p.x] for p in pts], dtype=np.float64).reshape(-1, 2)
        level = np.asarray(self.params["leaf_level"], dtype=np.int64)
        prefix = np.asarray(self.params["leaf_prefix"], dtype=np.int64)
        cell = np.asarray(self.params["leaf_cell"], dtype=np.int64)
        lat0, lon0, lat1, lon1 = _leaf_bounds(level, prefix)
        v = to_unit((lat0 + lat1) / 2, (lon0 + lon1) / 2) * _rect_area_km2(lat0, lon0, lat1, lon1)[:, None]
        sums = _group_mean_xyz(cell, v, len(self))
        return _normalise_or(sums, lambda: np.zeros((len(self), 2)))

    # ---------------------------------------------------------------------------------- geometry
    def areas_km2(self) -> np.ndarray:
        """Area of each cell (for admin cells split by the quadtree, the area of the quadtree
        leaves clipped to nothing: the leaf rectangles, which can reach beyond the coast)."""
        if self.kind == "grid":
            min_lat, min_lon, max_lat, max_lon = self.params["bbox"]
            rows, cols = self.params["rows"], self.params["cols"]
            lat = np.linspace(min_lat, max_lat, rows + 1)
            row_area = _rect_area_km2(lat[:-1], 0.0, lat[1:], (max_lon - min_lon) / cols)
            return np.repeat(row_area, cols)
        level = np.asarray(self.params["leaf_level"], dtype=np.int64)
        cell = np.asarray(self.params["leaf_cell"], dtype=np.int64)
        if self.kind == "adaptive":
            return np.bincount(cell, weights=EARTH_AREA_KM2 / 4.0**level, minlength=len(self))
        from pyproj import Geod

        geod = Geod(ellps="WGS84")
        return np.array([abs(geod.geometry_area_perimeter(self._shape(i))[0]) / 1e6 for i in range(len(self))])

    def _shape(self, i: int):
        """The shapely geometry of cell ``i`` (cached for admin cells, whose unions are slow)."""
        i = int(i)
        import shapely
        from shapely.geometry import box

        if self.kind == "grid":
            min_lat, min_lon, max_lat, max_lon = self.params["bbox"]
            rows, cols = self.params["rows"], self.params["cols"]
            r, c = divmod(int(i), cols)
            dlat, dlon = (max_lat - min_lat) / rows, (max_lon - min_lon) / cols
            return box(min_lon + c * dlon, min_lat + r * dlat, min_lon + (c + 1) * dlon, min_lat + (r + 1) * dlat)
        level = np.asarray(self.params["leaf_level"], dtype=np.int64)
        prefix = np.asarray(self.params["leaf_prefix"], dtype=np.int64)
        mine = np.flatnonzero(np.asarray(self.params["leaf_cell"]) == i)
        lat0, lon0, lat1, lon1 = _leaf_bounds(level[mine], prefix[mine])
        rects = shapely.union_all(shapely.box(lon0, lat0, lon1, lat1))
        if self.kind == "adaptive":
            return rects
        borders = self._borders()
        wanted = set(self.params["regions"][int(prefix[mine[0]] >> (2 * level[mine[0]]))])
        if "geoms_by_code" not in self._cache:
            by_code: dict[str, list] = {}
            for c, g in zip(borders.codes, borders.geometries):
                by_code.setdefault(str(c), []).append(g)
            self._cache["geoms_by_code"] = by_code
        shapes = self._cache.setdefault("shapes", {})
        if i not in shapes:
            region = shapely.union_all([g for c in wanted for g in self._cache["geoms_by_code"].get(c, [])])
            whole = mine.size == 1 and level[mine[0]] == 0
            shapes[i] = region if whole else shapely.intersection(region, rects)
        return shapes[i]

    def polygon(self, i: int) -> dict:
        """GeoJSON geometry (Polygon or MultiPolygon, [lon, lat] order) of cell ``i``."""
        import shapely

        if not 0 <= int(i) < len(self):
            raise InputError(f"cells: no cell {i} (there are {len(self)})")
        return json.loads(shapely.to_geojson(self._shape(int(i))))

    def to_geojson(self, probs=None) -> dict:
        """A FeatureCollection of all cells with id, count, centroid (and probability if given)."""
        if probs is not None:
            probs = np.asarray(probs, dtype=np.float64).ravel()
            if probs.shape != (len(self),):
                raise InputError(f"to_geojson: {probs.size} probabilities for {len(self)} cells")
        features = []
        for i in range(len(self)):
            props = {"cell": i, "count": int(self.counts[i]),
                     "centroid_lat": float(self.centroids[i, 0]), "centroid_lon": float(self.centroids[i, 1])}
            if probs is not None:
                props["probability"] = float(probs[i])
            features.append({"type": "Feature", "geometry": self.polygon(i), "properties": props})
        return {"type": "FeatureCollection", "features": features}

    # ---------------------------------------------------------------------------------- save / load
    def to_dict(self) -> dict:
        return {"kind": self.kind, "centroids": self.centroids.tolist(), "counts": self.counts.tolist(),
                "params": self.params}

    @classmethod
    def from_dict(cls, d: dict, where: str = "cells") -> "Geocells":
        try:
            kind, params = d["kind"], dict(d["params"])
            cells = cls(kind, np.asarray(d["centroids"], dtype=np.float64), np.asarray(d["counts"]), params)
            if kind == "grid":
                cells._assign_grid(np.zeros(1), np.zeros(1))
                if params["rows"] * params["cols"] != len(cells):
                    raise ValueError("grid size does not match the number of cells")
            else:
                leaf_cell = np.asarray(params["leaf_cell"], dtype=np.int64)
                if len(params["leaf_level"]) != len(leaf_cell) or len(params["leaf_prefix"]) != len(leaf_cell):
                    raise ValueError("leaf arrays have different lengths")
                if leaf_cell.size and (leaf_cell.min() < 0 or leaf_cell.max() >= len(cells)):
                    raise ValueError("a leaf points to a cell that does not exist")
                if kind == "admin" and not isinstance(params.get("regions"), list):
                    raise ValueError("admin cells need their list of regions")
        except InputError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise InputError(f"{where}: not a valid geocells description ({type(exc).__name__}: {exc})")
        return cells

    def summary(self) -> dict:
        """Count, sizes and coverage, for ``geoscope cells info``."""
        areas = self.areas_km2()
        c = self.counts
        out = {
            "kind": self.kind, "cells": len(self), "training_points": int(c.sum()),
            "empty_cells": int((c == 0).sum()),
            "points_per_cell": {"min": int(c.min()), "median": float(np.median(c)), "max": int(c.max())}
            if len(c) else None,
            "area_km2": {"min": float(areas.min()), "median": float(np.median(areas)),
                         "max": float(areas.max()), "total": float(areas.sum())} if len(c) else None,
            "coverage_of_earth": float(areas.sum() / EARTH_AREA_KM2),
        }
        if self.kind == "grid":
            out["bbox"], out["rows"], out["cols"] = self.params["bbox"], self.params["rows"], self.params["cols"]
        else:
            out["min_points"], out["max_points"] = self.params["min_points"], self.params["max_points"]
            out["below_min"] = int((c < self.params["min_points"]).sum())
            out["above_max"] = int((c > self.params["max_points"]).sum())
        return out


def _admin1():
    try:
        from geoscope.geo.borders import admin1
    except ImportError as exc:
        raise InputError(f"admin cells need geoscope.geo.borders, which cannot be imported ({exc})")
    return admin1()


# --------------------------------------------------------------------------------------------------
# hierarchy


class CellHierarchy:
    """Partitions of one area from coarse to fine, with each fine cell's parent in the level above.

    A fine cell's parent is the coarser cell holding most of its training points (the cell holding
    its centroid when it has none). Adaptive levels built from one training set nest exactly at the
    quadtree level; merging small cells can make a fine cell straddle two coarse ones, hence the
    majority rule.
    """

    def __init__(self, levels: Sequence[Geocells], parents: Sequence[np.ndarray] | None = None):
        if not levels:
            raise InputError("cell hierarchy: no levels given")
        self.levels = list(levels)
        if parents is None:
            parents = [self._parents_by_centroid(l) for l in range(1, len(self.levels))]
        self._parents = [np.asarray(p, dtype=np.int64) for p in parents]
        if len(self._parents) != len(self.levels) - 1:
            raise InputError(f"cell hierarchy: {len(self._parents)} parent maps for {len(self.levels)} levels")
        for l, p in enumerate(self._parents, start=1):
            if p.shape != (len(self.levels[l]),) or (p.size and (p.min() < 0 or p.max() >= len(self.levels[l - 1]))):
                raise InputError(f"cell hierarchy: the parent map of level {l} does not fit its levels")

    def __len__(self) -> int:
        return len(self.levels)

    @property
    def finest(self) -> Geocells:
        return self.levels[-1]

    def parents(self, level: int) -> np.ndarray:
        """For each cell of ``level`` (>= 1), the index of its parent cell in ``level - 1``."""
        if not 1 <= level < len(self.levels):
            raise InputError(f"cell hierarchy: level {level} has no parents (levels 1..{len(self.levels) - 1} do)")
        return self._parents[level - 1]

    def children(self, level: int, cell: int) -> np.ndarray:
        """Cells of ``level + 1`` whose parent is ``cell`` of ``level``."""
        return np.flatnonzero(self.parents(level + 1) == cell)

    def _parents_by_centroid(self, level: int) -> np.ndarray:
        fine, coarse = self.levels[level], self.levels[level - 1]
        return coarse.assign(fine.centroids[:, 0], fine.centroids[:, 1], nearest=True)

    @classmethod
    def adaptive(cls, lat, lon, min_points: int, max_points_list: Sequence[int]) -> "CellHierarchy":
        """One adaptive level per entry of ``max_points_list`` (ordered coarse -> fine by their max)."""
        lat, lon = validate_latlon(np.ravel(lat), np.ravel(lon), "adaptive cells: training points")
        maxes = sorted({int(m) for m in max_points_list}, reverse=True)
        if not maxes:
            raise InputError("adaptive cells: no max points per cell given")
        _check_bounds(min_points, maxes[-1], "adaptive cells")
        if lat.size == 0:
            raise InputError("adaptive cells: no training points given")
        points = _sort_points(quadtree_keys(lat, lon), lat, lon)  # shared by all levels
        root = np.zeros(1, dtype=np.int64)
        built = [Geocells._from_sorted(points, root, int(min_points), m, "adaptive", {}) for m in maxes]
        # the points' cells (in sorted-key order) come straight from the build: no second lookup
        return cls.from_training([b[0] for b in built], lat, lon, [b[1] for b in built])

    @classmethod
    def from_training(cls, levels: Sequence[Geocells], lat, lon, assigned=None) -> "CellHierarchy":
        """A hierarchy whose parent maps follow the training points (majority rule).

        ``assigned``: the cell of every training point per level, when already known (any common
        order of the points)."""
        if assigned is None:
            assigned = [lv.assign(lat, lon, nearest=True) for lv in levels]
        parents = []
        for l in range(1, len(levels)):
            fine, coarse = assigned[l], assigned[l - 1]
            n_c = len(levels[l - 1])
            pair = np.unique(fine * n_c + coarse, return_counts=True)
            f, c, k = pair[0] // n_c, pair[0] % n_c, pair[1]
            order = np.lexsort((-k, f))  # per fine cell, the most frequent coarse cell first
            f, c = f[order], c[order]
            first = np.r_[True, f[1:] != f[:-1]]
            p = levels[l - 1].assign(levels[l].centroids[:, 0], levels[l].centroids[:, 1], nearest=True)
            p[f[first]] = c[first]
            parents.append(p)
        return cls(levels, parents)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": FORMAT_VERSION, "levels": [lv.to_dict() for lv in self.levels],
                "parents": [p.tolist() for p in self._parents]}

    @classmethod
    def from_dict(cls, d: dict, where: str = "cells") -> "CellHierarchy":
        if not isinstance(d, dict):
            raise InputError(f"{where}: not a geocells file (expected a JSON object)")
        if "levels" not in d:  # a single partition
            return cls([Geocells.from_dict(d, where)])
        if d.get("format") != FORMAT or int(d.get("version", 0)) > FORMAT_VERSION:
            raise InputError(f"{where}: not a geocells file of version <= {FORMAT_VERSION}")
        levels = [Geocells.from_dict(lv, f"{where} level {i}") for i, lv in enumerate(d["levels"])]
        return cls(levels, d.get("parents"))

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_dict(), indent=None)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CellHierarchy":
        return load_cells(path)


def load_cells(path: str | os.PathLike) -> CellHierarchy:
    """Read any geocells file (a single partition is a hierarchy of one level)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: geocells file not found")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the geocells file ({exc})")
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})")
    return CellHierarchy.from_dict(d, str(path))


def save_cells(cells: Geocells | CellHierarchy, path: str | os.PathLike) -> None:
    """Write one partition or a hierarchy atomically as JSON."""
    (cells if isinstance(cells, CellHierarchy) else CellHierarchy([cells])).save(path)
