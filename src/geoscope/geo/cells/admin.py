"""Admin cells: first-level administrative regions (Natural Earth, through :mod:`geoscope.geo.borders`),
small ones merged within their country, big ones split with the adaptive quadtree, as in PIGEON's
semantic geocells (the rule is in :meth:`AdminCells.build`).

A point's key carries its region group in the bits above the quadtree key, so one
``np.searchsorted`` finds both the region and the quadtree leaf inside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from pyproj import Geod
from shapely.geometry.base import BaseGeometry

from geoscope.errors import InputError
from geoscope.geo import borders as geo_borders
from geoscope.geo.cells.adaptive import QuadtreeCells
from geoscope.geo.cells.base import check_bounds, group_sum_xyz
from geoscope.geo.cells.merge import merge_small
from geoscope.geo.cells.quadtree import KEY_BITS, node_region, quadtree_keys, sort_points
from geoscope.geo.sphere import to_unit, validate_latlon

_GEOD = Geod(ellps="WGS84")


class AdminCells(QuadtreeCells):
    """Cells that follow country and first-level administrative borders. ``params["regions"]`` lists,
    per region group (quadtree root), the admin-1 codes merged into it. A point in no region (sea,
    coast) always goes to the cell with the nearest centroid."""

    kind = "admin"
    always_nearest = True
    _layout_cache = ("leaves", "borders", "region_map", "geoms_by_code", "shapes")

    @classmethod
    def build(cls, lat, lon, min_points: int, max_points: int,
              borders: geo_borders.BorderSet | None = None) -> "AdminCells":
        """Cells that follow country and first-level administrative borders (Natural Earth).

        The rule: each training point is placed in its admin-1 region (``geo.borders.admin1()``).
        Regions holding fewer than ``min_points`` are merged, smallest first, into the nearest region
        (by centre of its points) of the same country that has room (the adaptive merge rule, never
        across a country border; a country with fewer than ``min_points`` points in all becomes one
        cell). Regions (or merged regions) holding more than ``max_points`` are split with the
        adaptive quadtree restricted to them. Points in no polygon (coast, sea) -- at build time and
        in :meth:`assign` -- go to the cell with the nearest centroid, and count there.
        ``borders`` is an admin-1 ``BorderSet`` (default: ``geo.borders.admin1()``).
        """
        lat, lon = validate_latlon(np.ravel(lat), np.ravel(lon), "admin cells: training points")
        check_bounds(min_points, max_points, "admin cells")
        if lat.size == 0:
            raise InputError("admin cells: no training points given")
        borders = geo_borders.admin1() if borders is None else borders
        region = np.asarray(borders.locate(lat, lon), dtype=np.int64)
        inside = region >= 0
        if not inside.any():
            raise InputError("admin cells: none of the training points lies inside an admin-1 region")
        # regions are keyed by code (a code may name several polygons)
        code_of = np.asarray([str(c) for c in borders.codes], dtype=object)
        country_of = {str(c): str(p) for c, p in zip(borders.codes, borders.parent_codes)}
        used, inv = np.unique(code_of[region[inside]].astype(str), return_inverse=True)
        n_used = np.bincount(inv, minlength=len(used))
        sums = group_sum_xyz(inv, to_unit(lat[inside], lon[inside]), len(used))
        centre = sums / np.linalg.norm(sums, axis=1, keepdims=True).clip(1e-300)
        _, country_id = np.unique([country_of[c] or c for c in used], return_inverse=True)
        group = merge_small(centre, n_used, min_points, max_points, country_id)
        regions = [[str(c) for c in used[group == g]] for g in range(int(group.max()) + 1)]
        keys = (group[inv] << KEY_BITS) | quadtree_keys(lat[inside], lon[inside])
        roots = np.arange(len(regions), dtype=np.int64)
        cells, _ = cls._from_sorted(sort_points(keys, lat[inside], lon[inside]), roots, min_points,
                                    max_points, {"regions": regions}, merge_within_roots=True)
        cells._cache["borders"] = borders
        if not inside.all():  # sea / coast points count in their nearest cell
            cells.counts = np.bincount(cells.assign(lat, lon), minlength=len(cells)).astype(np.int64)
        return cells

    @classmethod
    def _check_params(cls, params: dict[str, Any], n: int) -> None:
        super()._check_params(params, n)
        if not isinstance(params.get("regions"), list):
            raise ValueError("admin cells need their list of regions")

    # ---------------------------------------------------------------------------------- borders
    def _borders(self) -> geo_borders.BorderSet:
        if "borders" not in self._cache:
            self._cache["borders"] = geo_borders.admin1()
        return self._cache["borders"]

    def _region_of_admin1(self) -> np.ndarray:
        """Region-group number per admin-1 polygon of the borders in use, then a trailing -1 (so that
        polygon index -1, "in no polygon", reads -1)."""
        if "region_map" not in self._cache:
            index = {c: g for g, codes in enumerate(self.params["regions"]) for c in codes}
            codes = self._borders().codes
            self._cache["region_map"] = np.array([index.get(str(c), -1) for c in codes] + [-1], dtype=np.int64)
        return self._cache["region_map"]

    def _keys(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        region = np.asarray(self._borders().locate(lat, lon), dtype=np.int64)
        group = self._region_of_admin1()[region]
        return np.where(group >= 0, (group << KEY_BITS) | quadtree_keys(lat, lon), -1)

    # ---------------------------------------------------------------------------------- geometry
    def geometry(self, i: int) -> BaseGeometry:
        """The cell's regions, clipped to its quadtree leaves when the region group was split (cached:
        unions of detailed borders are slow)."""
        i = int(i)
        shapes = self._cache.setdefault("shapes", {})
        if i not in shapes:
            level, prefix, cell = self._leaf_arrays()
            mine = np.flatnonzero(cell == i)
            if "geoms_by_code" not in self._cache:
                by_code: dict[str, list] = {}
                borders = self._borders()
                for c, g in zip(borders.codes, borders.geometries):
                    by_code.setdefault(str(c), []).append(g)
                self._cache["geoms_by_code"] = by_code
            group = int(node_region(level[mine[0]], prefix[mine[0]]))
            region = shapely.union_all([g for c in self.params["regions"][group]
                                        for g in self._cache["geoms_by_code"].get(c, [])])
            whole = mine.size == 1 and level[mine[0]] == 0
            shapes[i] = region if whole else shapely.intersection(region, self._leaf_union(mine))
        return shapes[i]

    def geometric_centres(self) -> np.ndarray:
        """Centre of each cell's (clipped) region polygons."""
        pts = [self.geometry(i).centroid for i in range(len(self))]
        return np.array([[p.y, p.x] for p in pts], dtype=np.float64).reshape(-1, 2)

    def areas_km2(self) -> np.ndarray:
        """Area of each cell's (clipped) region polygons on the WGS84 ellipsoid."""
        return np.array([abs(_GEOD.geometry_area_perimeter(self.geometry(i))[0]) / 1e6 for i in range(len(self))])
