"""Adaptive cells: an equal-area quadtree split until no cell holds more than ``max_points`` training
points, then small cells merged (the rule is in :meth:`AdaptiveCells.build`).

:class:`QuadtreeCells` is what adaptive and admin cells share: a cell is a union of quadtree leaves,
saved as three parallel lists (``leaf_level``, ``leaf_prefix``, ``leaf_cell``), and a point finds its
cell with one ``np.searchsorted`` over the sorted leaf key ranges.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from geoscope.errors import InputError
from geoscope.geo.cells.base import Partition, check_bounds, group_sum_xyz, normalise_or, rect_area_km2
from geoscope.geo.cells.merge import merge_small
from geoscope.geo.cells.quadtree import (
    EARTH_AREA_KM2,
    lookup_leaves,
    node_bounds,
    node_ranges,
    node_region,
    quadtree_keys,
    sort_points,
    split_leaves,
)
from geoscope.geo.sphere import to_unit, validate_latlon


class QuadtreeCells(Partition):
    """Cells made of quadtree leaves, built to hold ``min_points`` to ``max_points`` training points."""

    _layout_cache: ClassVar[tuple[str, ...]] = ("leaves",)

    @classmethod
    def _from_sorted(cls, points: tuple[np.ndarray, np.ndarray], roots: np.ndarray, min_points: int,
                     max_points: int, params: dict[str, Any], merge_within_roots: bool = False):
        """Build from ``sort_points`` output: split the trees under ``roots``, merge small leaves
        (only within one root when ``merge_within_roots``).

        Returns the cells and the cell of every point in sorted-key order (the leaves tile the sorted
        points)."""
        skeys, csum = points
        level, prefix, lo, hi = split_leaves(skeys, roots, max_points)
        leaf_sum = csum[hi] - csum[lo]
        leaf_n = hi - lo
        leaf_xyz = leaf_sum / np.linalg.norm(leaf_sum, axis=1, keepdims=True).clip(1e-300)
        groups = node_region(level, prefix) if merge_within_roots else None
        leaf_cell = merge_small(leaf_xyz, leaf_n, min_points, max_points, groups)
        n = int(leaf_cell.max()) + 1
        params = dict(params)
        params.update({
            "min_points": int(min_points), "max_points": int(max_points),
            "leaf_level": level.tolist(), "leaf_prefix": prefix.tolist(), "leaf_cell": leaf_cell.tolist(),
        })
        sums = np.zeros((n, 3))
        np.add.at(sums, leaf_cell, leaf_sum)
        counts = np.bincount(leaf_cell, weights=leaf_n, minlength=n).astype(np.int64)
        cells = cls(np.zeros((n, 2)), counts, params)
        cells._cache["leaves"] = (*node_ranges(level, prefix), leaf_cell)  # sorted by start already
        cells.centroids = normalise_or(sums, cells.geometric_centres)
        return cells, np.repeat(leaf_cell, leaf_n)

    def _leaf_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(level, prefix, cell) of every leaf, as saved."""
        return (np.asarray(self.params["leaf_level"], dtype=np.int64),
                np.asarray(self.params["leaf_prefix"], dtype=np.int64),
                np.asarray(self.params["leaf_cell"], dtype=np.int64))

    def _leaves(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Key range start, end and cell of every leaf, sorted by start (cached)."""
        if "leaves" not in self._cache:
            level, prefix, cell = self._leaf_arrays()
            start, end = node_ranges(level, prefix)
            order = np.argsort(start, kind="stable")
            self._cache["leaves"] = (start[order], end[order], cell[order])
        return self._cache["leaves"]

    def _keys(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """The key each point is looked up by (-1: in no tree)."""
        return quadtree_keys(lat, lon)

    def _lookup(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        return lookup_leaves(self._keys(lat, lon), *self._leaves())

    def _leaf_union(self, mine: np.ndarray) -> BaseGeometry:
        """The union of the rectangles of the leaves ``mine`` (indices into the leaf arrays)."""
        level, prefix, _ = self._leaf_arrays()
        lat0, lon0, lat1, lon1 = node_bounds(level[mine], prefix[mine])
        return shapely.union_all(shapely.box(lon0, lat0, lon1, lat1))

    @classmethod
    def _check_params(cls, params: dict[str, Any], n: int) -> None:
        leaf_cell = np.asarray(params["leaf_cell"], dtype=np.int64)
        if len(params["leaf_level"]) != len(leaf_cell) or len(params["leaf_prefix"]) != len(leaf_cell):
            raise ValueError("leaf arrays have different lengths")
        if leaf_cell.size and (leaf_cell.min() < 0 or leaf_cell.max() >= n):
            raise ValueError("a leaf points to a cell that does not exist")

    def _summary_params(self) -> dict[str, Any]:
        lo, hi = self.params["min_points"], self.params["max_points"]
        return {"min_points": lo, "max_points": hi,
                "below_min": int((self.counts < lo).sum()), "above_max": int((self.counts > hi).sum())}


class AdaptiveCells(QuadtreeCells):
    """Cells that each hold between ``min_points`` and ``max_points`` training points (see :meth:`build`).
    Areas with no training points are in no cell."""

    kind = "adaptive"

    @classmethod
    def build(cls, lat, lon, min_points: int, max_points: int) -> "AdaptiveCells":
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
        return cls.build_levels(lat, lon, min_points, [max_points])[0][0]

    @classmethod
    def build_levels(cls, lat, lon, min_points: int, max_points: list[int]) -> list[tuple["AdaptiveCells", np.ndarray]]:
        """One partition per entry of ``max_points`` (in that order) over the same training points,
        each with the cell of every point (in one common order), sharing one sort of the points."""
        lat, lon = validate_latlon(np.ravel(lat), np.ravel(lon), "adaptive cells: training points")
        if not max_points:
            raise InputError("adaptive cells: no max points per cell given")
        check_bounds(min_points, min(int(m) for m in max_points), "adaptive cells")
        if lat.size == 0:
            raise InputError("adaptive cells: no training points given")
        points = sort_points(quadtree_keys(lat, lon), lat, lon)
        root = np.zeros(1, dtype=np.int64)
        return [cls._from_sorted(points, root, int(min_points), int(m), {}) for m in max_points]

    def geometric_centres(self) -> np.ndarray:
        level, prefix, cell = self._leaf_arrays()
        lat0, lon0, lat1, lon1 = node_bounds(level, prefix)
        v = to_unit((lat0 + lat1) / 2, (lon0 + lon1) / 2) * rect_area_km2(lat0, lon0, lat1, lon1)[:, None]
        sums = group_sum_xyz(cell, v, len(self))
        return normalise_or(sums, lambda: np.zeros((len(self), 2)))

    def areas_km2(self) -> np.ndarray:
        level, _, cell = self._leaf_arrays()
        return np.bincount(cell, weights=EARTH_AREA_KM2 / 4.0**level, minlength=len(self))

    def geometry(self, i: int) -> BaseGeometry:
        return self._leaf_union(np.flatnonzero(self._leaf_arrays()[2] == int(i)))
